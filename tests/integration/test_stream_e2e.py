"""The stream end to end on the real Kafka, Redis and Ray, with the tiny guard model; no mocks.

Every test gets its own topics, consumer group and tenant ids, so tests (and the demo) never see each
other's records. The model pools are started once for the module and shared (each test starts and drains
its own stream workers on them).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from pipelines.stream.run import run_stream
from schemas.policy import Route, TenantPolicy
from schemas.taxonomy import Category, Taxonomy
from tests.integration.stream_support import (
    committed,
    delete_topics_of,
    end_offsets,
    event,
    isolated,
    keyed,
    produce,
    reading,
    streaming,
)
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

pytestmark = pytest.mark.integration

KIDS_TAXONOMY = Taxonomy(
    categories=(
        Category(code="C1", name="Bullying", description="Insults or intimidation."),
        Category(code="C2", name="Adult Content", description="Sexual or nude content."),
        Category(code="C3", name="Dangerous Activities", description="Weapons, running away, self-harm."),
    )
)


@pytest.fixture(scope="module")
def stream_base(settings: Settings, tiny_guard_path: Path) -> Settings:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=2, num_cpus=0.25)}
    return settings.model_copy(update={"models": models, "device": "cpu", "worker_num_cpus": 0.1})


@pytest.fixture(scope="module")
def pools(ray_local: Any, stream_base: Settings) -> Iterator[ModelPools]:
    started = ModelPools.start(stream_base, ready_timeout_s=300)
    yield started
    started.shutdown()


@pytest.fixture
def isolate(stream_base: Settings) -> Iterator[Callable[..., Settings]]:
    """Settings with this test's own topics and group (see ``isolated``); its topics are deleted after."""
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        made.append(isolated(stream_base, **overrides))
        return made[-1]

    yield make
    for settings in made:
        delete_topics_of(settings)


@pytest.fixture
def store(stream_base: Settings) -> Iterator[RedisPolicyStore]:
    with RedisPolicyStore(stream_base) as opened:
        yield opened


def tenant(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_two_tenants_every_event_answered_exactly_once(
    isolate: Callable[..., Settings], pools: ModelPools, store: RedisPolicyStore
) -> None:
    # One worker: no rebalance between workers while records are in flight.
    settings = isolate(stream_workers=1, unknown_tenant="reject", max_turns=8, max_event_bytes=4096)
    kids_topic = f"{settings.input_topic}.kids"
    acme, kids = tenant("acme"), tenant("kids")
    store.put(TenantPolicy(tenant_id=acme, threshold=0.5, category_thresholds={"S1": 0.0}))
    store.put(
        TenantPolicy(
            tenant_id=kids,
            taxonomy=KIDS_TAXONOMY,
            threshold=0.3,
            category_thresholds={"C2": 0.0},
            route=Route(verdict_topic=kids_topic),
        )
    )
    valid: list[tuple[bytes, bytes]] = []
    for name in (acme, kids):
        for conv in range(3):
            for turn in range(4):
                reply = "Sure, here you go." if turn % 2 else None
                body = event(name, f"c{conv}", f"{name}-c{conv}-{turn}", f"question {turn}", reply)
                valid.append(keyed(name, f"c{conv}", body))
    long_chat = {"event_id": "long", "messages": [{"role": "user", "content": f"m{i}"} for i in range(9)]}
    bad: dict[str, tuple[bytes | None, bytes]] = {
        "invalid_json": (None, b'{"event_id": "x", "messages": [unterminated'),
        "invalid_utf8": (None, b"\xff\xfe\x00 not text"),
        "schema_violation": keyed(
            acme, "c9", event(acme, "c9", "bad-role", "hi").replace(b"user", b"wizard")
        ),
        "too_many_turns": (None, json.dumps(long_chat).encode()),
        "too_large": (None, event(acme, "c9", "huge", "x" * 5000)),
        "unknown_tenant": keyed("ghost", "c1", event(f"ghost-{acme}", "c1", "ghost-1", "hello")),
    }
    sent = produce(settings, [*valid[:12], *bad.values(), *valid[12:]])
    sources = {(s.partition, s.offset): code for s, code in zip(sent[12 : 12 + len(bad)], bad, strict=True)}

    topics = [settings.verdict_topic, kids_topic, settings.dlq_topic]
    with reading(settings, topics) as reader, streaming(settings, pools) as running:
        reader.until(lambda out: len(out.records) >= len(valid) + len(bad), timeout_s=120, what="all outputs")
        report = running.stop()
        outputs = reader.read()

    # One output per input record, each on the right topic. Delivery is at-least-once: if the consumer is
    # rebuilt (a stuck rejoin, see Rebalance.check_rejoin) uncommitted records are answered again, so
    # an event may repeat its verdict, never change it or miss it.
    assert report.consumed >= len(sent) and report.scoring_errors == 0
    acme_ids, kids_ids = outputs.event_ids(settings.verdict_topic), outputs.event_ids(kids_topic)
    assert set(acme_ids) == {v for v in _ids(valid) if v.startswith(acme)}
    assert set(kids_ids) == {v for v in _ids(valid) if v.startswith(kids)}
    for topic in (settings.verdict_topic, kids_topic):
        answers: dict[str, tuple[bool, float]] = {}
        for verdict in outputs.on(topic):
            answer = (verdict["unsafe"], verdict["score"])
            assert answers.setdefault(verdict["event_id"], answer) == answer, "a repeat changed a verdict"
    # Each tenant's threshold and taxonomy (forced category listed with its own name and a score).
    for verdict in outputs.on(settings.verdict_topic):
        assert verdict["threshold"] == 0.5 and verdict["tenant_id"] == acme and verdict["error"] is None
        assert {"code": "S1", "name": "Violent Crimes"}.items() <= verdict["categories"][0].items()
        assert all(c["code"].startswith("S") for c in verdict["categories"])
    for verdict in outputs.on(kids_topic):
        assert verdict["threshold"] == 0.3 and verdict["tenant_id"] == kids
        assert {c["code"] for c in verdict["categories"]} <= {"C1", "C2", "C3"}
        assert any(c["code"] == "C2" and c["name"] == "Adult Content" for c in verdict["categories"])
        assert verdict["model"] and verdict["policy_version"] >= 1
    # Per-conversation order survives (same key -> same partition -> released in offset order).
    for topic in (settings.verdict_topic, kids_topic):
        for prefix in {i.rsplit("-", 1)[0] for i in outputs.event_ids(topic)}:
            turns = list(dict.fromkeys(i for i in outputs.event_ids(topic) if i.rsplit("-", 1)[0] == prefix))
            assert turns == sorted(turns), turns
    # Every bad record: a dead letter with its code, reason and source offset.
    letters = outputs.on(settings.dlq_topic)
    assert {(x["source_partition"], x["source_offset"]) for x in letters} == set(sources)
    for letter in letters:
        where = (letter["source_partition"], letter["source_offset"])
        assert letter["error_code"] == sources[where], letter
        assert letter["reason"] and letter["source_topic"] == settings.input_topic
    # Drained: everything committed.
    assert committed(settings) == end_offsets(settings)


def test_policy_change_visible_within_two_seconds(
    isolate: Callable[..., Settings], pools: ModelPools, store: RedisPolicyStore
) -> None:
    settings = isolate(stream_workers=1)
    acme = tenant("acme")
    first = store.put(TenantPolicy(tenant_id=acme, threshold=0.5))
    with reading(settings, [settings.verdict_topic]) as reader, streaming(settings, pools):
        produce(settings, [keyed(acme, "warm", event(acme, "warm", "warm-0", "hello"))])
        reader.until(lambda out: len(out.records) == 1, timeout_s=120, what="warm-up verdict")
        changed = store.put(first.model_copy(update={"threshold": 0.2}))
        changed_at = time.monotonic()
        sent_at: dict[str, float] = {}
        for i in range(25):  # probes every 0.1 s for 2.5 s
            probe = f"probe-{i}"
            sent_at[probe] = time.monotonic() - changed_at
            produce(settings, [keyed(acme, "probe", event(acme, "probe", probe, f"hello {i}"))])
            time.sleep(max(0.0, changed_at + 0.1 * (i + 1) - time.monotonic()))
        out = reader.until(lambda o: len(o.records) == 26, timeout_s=60, what="probe verdicts")
    versions = {v["event_id"]: (v["policy_version"], v["threshold"]) for v in out.on(settings.verdict_topic)}
    late = [p for p, at in sent_at.items() if at >= 2.0]
    assert late and all(versions[p] == (changed.version, 0.2) for p in late)
    first_new = min(at for p, at in sent_at.items() if versions[p][0] == changed.version)
    assert first_new < 2.0


def test_killing_a_replica_mid_stream_loses_nothing(
    isolate: Callable[..., Settings], pools: ModelPools, store: RedisPolicyStore
) -> None:
    settings = isolate(batch_size=4)
    acme = tenant("acme")
    store.put(TenantPolicy(tenant_id=acme))
    records = [keyed(acme, f"c{i % 7}", event(acme, f"c{i % 7}", f"e{i}", f"message {i}")) for i in range(80)]
    with reading(settings, [settings.verdict_topic]) as reader, streaming(settings, pools) as running:
        produce(settings, records)
        reader.until(lambda out: len(out.records) >= 8, timeout_s=120, what="first verdicts")
        ray.kill(pools.replicas("default")[0], no_restart=False)
        reader.until(lambda out: len(out.records) >= len(records), timeout_s=180, what="all verdicts")
        report = running.stop()
        out = reader.read()
    ids = out.event_ids(settings.verdict_topic)
    assert sorted(set(ids)) == sorted(f"e{i}" for i in range(80))  # nothing lost (re-deliveries allowed)
    assert all(v["error"] is None for v in out.on(settings.verdict_topic))
    assert report.scoring_errors == 0
    assert committed(settings) == end_offsets(settings)


def test_restart_resumes_from_committed_offsets(
    isolate: Callable[..., Settings], pools: ModelPools, store: RedisPolicyStore
) -> None:
    settings = isolate()
    acme = tenant("acme")
    store.put(TenantPolicy(tenant_id=acme))
    batch = [keyed(acme, f"c{i % 5}", event(acme, f"c{i % 5}", f"e{i:03d}", f"text {i}")) for i in range(40)]
    produce(settings, batch[:20])
    first = run_stream(settings, pools=pools, max_events=20)
    assert first.stopped_by == "max-events" and first.verdicts >= 20
    assert committed(settings) == end_offsets(settings)
    with reading(settings, [settings.verdict_topic]) as reader:
        out = reader.until(
            lambda o: len(set(o.event_ids(settings.verdict_topic))) >= 20, timeout_s=30, what="20"
        )
        before = Counter(partition for _, partition, _, _ in out.records)
    produce(settings, batch[20:])
    second = run_stream(settings, pools=pools, max_events=20)
    assert second.stopped_by == "max-events"
    with reading(settings, [settings.verdict_topic]) as reader:
        out = reader.until(
            lambda o: len(set(o.event_ids(settings.verdict_topic))) >= 40, timeout_s=30, what="40"
        )
    assert set(out.event_ids(settings.verdict_topic)) == {f"e{i:03d}" for i in range(40)}
    seen: Counter[int] = Counter()
    after_restart = []
    for _, partition, _, verdict in out.records:
        seen[partition] += 1
        if seen[partition] > before[partition]:
            after_restart.append(verdict["event_id"])
    assert min(after_restart) == "e020", "a restarted stream re-read records committed before it stopped"


def _ids(records: list[tuple[bytes, bytes]]) -> list[str]:
    return [json.loads(value)["event_id"] for _, value in records]


def test_scoring_failure_follows_each_tenants_on_error(
    isolate: Callable[..., Settings], pools: ModelPools, store: RedisPolicyStore
) -> None:
    settings = isolate(stream_workers=1)
    closed, opened, lettered = tenant("closed"), tenant("open"), tenant("letter")
    nowhere = Route(model="no-such-pool")
    store.put(TenantPolicy(tenant_id=closed, route=nowhere, on_error="fail-closed"))
    store.put(TenantPolicy(tenant_id=opened, route=nowhere, on_error="fail-open"))
    store.put(TenantPolicy(tenant_id=lettered, route=nowhere, on_error="dead-letter"))
    produce(settings, [keyed(t, "c", event(t, "c", f"{t}-1", "hello")) for t in (closed, opened, lettered)])
    topics = [settings.verdict_topic, settings.dlq_topic]
    with reading(settings, topics) as reader, streaming(settings, pools):
        out = reader.until(lambda o: len(o.records) == 3, timeout_s=120, what="three outcomes")
    verdicts = {v["tenant_id"]: v for v in out.on(settings.verdict_topic)}
    assert verdicts[closed]["unsafe"] is True and "no-such-pool" in verdicts[closed]["error"]
    assert verdicts[opened]["unsafe"] is False and verdicts[opened]["error"]
    (letter,) = out.on(settings.dlq_topic)
    assert letter["error_code"] == "scoring_failed" and letter["tenant_id"] == lettered


def test_exactly_once_commits_verdicts_and_offsets_together(
    isolate: Callable[..., Settings], pools: ModelPools, store: RedisPolicyStore
) -> None:
    settings = isolate(exactly_once=True)
    acme = tenant("acme")
    store.put(TenantPolicy(tenant_id=acme))
    records = [keyed(acme, f"c{i % 3}", event(acme, f"c{i % 3}", f"e{i}", f"text {i}")) for i in range(24)]
    produce(settings, [*records, (None, b"not json")])
    report = run_stream(settings, pools=pools, max_events=len(records) + 1)
    assert report.verdicts == len(records) and report.dead_letters == 1
    assert committed(settings) == end_offsets(settings)
    with reading(settings, [settings.verdict_topic, settings.dlq_topic], read_committed=True) as reader:
        out = reader.until(lambda o: len(o.records) >= 25, timeout_s=30, what="committed outputs")
    assert sorted(out.event_ids(settings.verdict_topic)) == sorted(f"e{i}" for i in range(24))
