"""The chaos scenarios: what each one sends, sets up beforehand and breaks while the stream runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.helpers.fault_records import Record, oversized, poison, valid
from workers.settings import Settings

Traffic = list[tuple[str, list[Record]]]
Send = Callable[[str, list[Record]], None]
"""Produce records (``kafka-python`` or ``librdkafka:<codec>``) and expect an answer for each."""
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def _nothing(_settings: Settings, _context: dict[str, Any]) -> None:
    return None


def _quiet(_settings: Settings, _context: dict[str, Any], _send: Send) -> None:
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    traffic: Callable[[dict[str, Any]], Traffic]
    setup: Callable[[Settings], dict[str, Any]] = lambda _settings: {}
    during: Callable[[Settings, dict[str, Any], Send], None] = _quiet
    teardown: Callable[[Settings, dict[str, Any]], None] = _nothing
    modes: tuple[str, ...] = field(default=("alo", "eos"))


def _codecs(_context: dict[str, Any]) -> Traffic:
    return [(f"librdkafka:{codec}", valid("chaos-codec", 20, prefix=codec)) for codec in CODECS]


def _poison(_context: dict[str, Any]) -> Traffic:
    records = poison()
    mixed = [r for pair in zip(records, valid("chaos-poison", len(records)), strict=True) for r in pair]
    half = len(mixed) // 2
    return [("kafka-python", mixed[:half]), ("librdkafka:lz4", mixed[half:])]


def _oversized(_context: dict[str, Any]) -> Traffic:
    return [("kafka-python", [*oversized(), *valid("chaos-big", 10)])]


# --- policies ------------------------------------------------------------------------------------------
def _raw_policy(settings: Settings, tenant: str, doc: str) -> None:
    import redis

    from workers.policies.redis_store import CHANNEL, TENANTS_KEY, policy_key

    with redis.Redis.from_url(settings.redis_url) as client:
        client.set(policy_key(tenant), doc)
        client.sadd(TENANTS_KEY, tenant)
        client.publish(CHANNEL, json.dumps({"tenant_id": tenant, "version": None}))


def _policies_setup(settings: Settings) -> dict[str, Any]:
    """Three tenants: one written by a 'newer version', one corrupt from the start, one valid for now."""
    from schemas.policy import TenantPolicy
    from workers.policies.redis_store import RedisPolicyStore

    run = uuid.uuid4().hex[:6]
    tenants = {
        "newer": f"chaos-newer-{run}",
        "corrupt": f"chaos-corrupt-{run}",
        "later": f"chaos-later-{run}",
    }
    newer = {"tenant_id": tenants["newer"], "threshold": 0.4, "priority": 2, "route": {"region": "eu"}}
    _raw_policy(settings, tenants["newer"], json.dumps(newer))
    _raw_policy(settings, tenants["corrupt"], '{"tenant_id": "' + tenants["corrupt"] + '", "thresh')
    with RedisPolicyStore(settings) as store:
        store.put(TenantPolicy(tenant_id=tenants["later"], threshold=0.3))
    return {"tenants": tenants}


def _policies_traffic(context: dict[str, Any]) -> Traffic:
    tenants = context["tenants"]
    first = [*valid(tenants["newer"], 10), *valid(tenants["corrupt"], 10), *valid(tenants["later"], 5)]
    return [("librdkafka:zstd", first)]


def _policies_during(settings: Settings, context: dict[str, Any], send: Send) -> None:
    """The valid policy turns invalid mid-stream; the tenant's later events must still be answered."""
    import time

    time.sleep(2.0)
    tenant = context["tenants"]["later"]
    _raw_policy(settings, tenant, json.dumps({"tenant_id": tenant, "threshold": 9}))
    send("kafka-python", valid(tenant, 5, prefix="after"))


def _policies_teardown(settings: Settings, context: dict[str, Any]) -> None:
    from workers.policies.redis_store import RedisPolicyStore

    with RedisPolicyStore(settings) as store:
        for tenant in context["tenants"].values():
            store.delete(tenant)


SCENARIOS: list[Scenario] = [
    Scenario("codecs", _codecs),
    Scenario("poison", _poison),
    Scenario("oversized-dead-letter", _oversized),
    Scenario(
        "bad-policy",
        _policies_traffic,
        setup=_policies_setup,
        during=_policies_during,
        teardown=_policies_teardown,
    ),
]


# --- dying processes ------------------------------------------------------------------------------------
def _steady(_context: dict[str, Any]) -> Traffic:
    return [("librdkafka:lz4", valid("chaos-steady", 30))]


def _kill_actor(class_name: str) -> None:
    import os
    import signal

    from tests.helpers.ray_procs import actor_pids

    pids = actor_pids(class_name)
    if not pids:
        raise RuntimeError(f"no live {class_name} to kill")
    os.kill(pids[0], signal.SIGKILL)


def _kill_then_send(kill: Callable[[], None]) -> Callable[[Settings, dict[str, Any], Send], None]:
    def during(_settings: Settings, context: dict[str, Any], send: Send) -> None:
        import time

        time.sleep(1.0)
        started = time.monotonic()
        kill()
        context["fault_s"] = round(time.monotonic() - started, 1)  # a restart: until the service is ready
        send("kafka-python", valid("chaos-after", 30, prefix="after"))

    return during


def _restart_service(kind: str) -> Callable[[], None]:
    def restart() -> None:
        import os
        import signal
        import time

        from infra.kafka_local import KafkaService
        from infra.redis_local import RedisService

        service = (KafkaService if kind == "kafka" else RedisService)(Settings())
        pid = service.pid()
        if pid is None:
            raise RuntimeError(f"{kind} is not ours to kill")
        os.kill(pid, signal.SIGKILL)
        time.sleep(3.0)
        service.wait_ready(service.start(), 120)

    return restart


def _rebalance(settings: Settings, context: dict[str, Any], send: Send) -> None:
    """A third worker joins under load, stays 8 s, and leaves (two rebalances)."""
    import threading
    import time

    from pipelines.stream.run import run_stream

    stop = threading.Event()
    extra = settings.model_copy(update={"stream_workers": 1})
    kwargs = {"stop": stop, "pools": context["pools"]}
    thread = threading.Thread(target=run_stream, args=(extra,), kwargs=kwargs, daemon=True)
    thread.start()
    for i in range(8):
        send("kafka-python", valid("chaos-rebalance", 5, prefix=f"r{i}"))
        time.sleep(1.0)
    stop.set()
    thread.join(120)
    send("librdkafka:zstd", valid("chaos-rebalance", 10, prefix="left"))


# --- refused outputs ------------------------------------------------------------------------------------
def _small_verdict_topic(settings: Settings) -> dict[str, Any]:
    """The verdict topic refuses records over 200 bytes: every verdict is refused for good."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="guardstream-chaos")
    try:
        topic = NewTopic(settings.verdict_topic, 2, 1, topic_configs={"max.message.bytes": "200"})
        admin.create_topics([topic], wait_for_metadata=True)
    finally:
        admin.close()
    return {}


def _bad_topic_setup(settings: Settings) -> dict[str, Any]:
    """One tenant routes its verdicts to a topic Kafka cannot create; another tenant is fine."""
    tenant = f"chaos-badtopic-{uuid.uuid4().hex[:6]}"
    doc = {"tenant_id": tenant, "route": {"model": "default", "verdict_topic": ".."}}
    _raw_policy(settings, tenant, json.dumps(doc))
    return {"tenants": {"bad": tenant}}


def _bad_topic_traffic(context: dict[str, Any]) -> Traffic:
    return [("kafka-python", [*valid(context["tenants"]["bad"], 10), *valid("chaos-fine", 10)])]


SCENARIOS += [
    Scenario(
        "refused-verdict",
        lambda _c: [("kafka-python", valid("chaos-refused", 10))],
        setup=_small_verdict_topic,
    ),
    Scenario(
        "invalid-verdict-topic", _bad_topic_traffic, setup=_bad_topic_setup, teardown=_policies_teardown
    ),
    Scenario("stream-worker-kill", _steady, during=_kill_then_send(lambda: _kill_actor("StreamWorkerImpl"))),
    Scenario("replica-kill", _steady, during=_kill_then_send(lambda: _kill_actor("GuardReplicaImpl"))),
    Scenario("broker-kill-restart", _steady, during=_kill_then_send(_restart_service("kafka"))),
    Scenario("redis-kill-restart", _steady, during=_kill_then_send(_restart_service("redis"))),
    Scenario("rebalance-join-leave", _steady, during=_rebalance),
]
