"""One event set through all three paths — the stream (real Kafka, Redis, Ray), the backfill (Ray Data, with
``--to-kafka``) and ``moderate`` — gives the same outcome per event: the same verdicts, and the same events
dead-lettered. Each tenant exercises another branch of ``workers.decision.event_outcome``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipelines.backfill.job import run_backfill
from pipelines.backfill.plan import BackfillOptions
from pipelines.moderate import PolicyChoice, moderate_events
from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.taxonomy import Category, Generation, Taxonomy
from schemas.verdicts import Verdict
from tests.integration.stream_support import (
    delete_topics_of,
    event,
    isolated,
    keyed,
    produce,
    reading,
    streaming,
)
from workers.decision import DeadLetterReason
from workers.policies.file_store import FilePolicyStore
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.local_engine import LocalEngine
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

pytestmark = pytest.mark.integration

UNSCORABLE = Taxonomy(  # longer than max_prompt_tokens: every event of its tenant fails to score
    categories=tuple(
        Category(code=f"C{i}", name=f"Rule {i}", description="word " * 1900) for i in range(1, 4)
    )
)
COMPARED = ("unsafe", "score", "threshold", "categories", "unknown_codes", "policy_version", "model")
COMPARED += ("error", "skipped", "classified", "tenant_id")


def _policies(run: str) -> list[TenantPolicy]:
    """Version 1: what the Redis store assigns to a tenant's first policy, so all three paths agree."""
    return [
        TenantPolicy(tenant_id=f"plain-{run}", category_thresholds={"S1": 0.0}, version=1),
        TenantPolicy(tenant_id=f"prompts-{run}", sides=("prompt",), threshold=0.2, version=1),
        TenantPolicy(tenant_id=f"closed-{run}", taxonomy=UNSCORABLE, on_error="fail-closed", version=1),
        TenantPolicy(tenant_id=f"open-{run}", taxonomy=UNSCORABLE, on_error="fail-open", version=1),
        TenantPolicy(tenant_id=f"parked-{run}", taxonomy=UNSCORABLE, on_error="dead-letter", version=1),
    ]


def _events(policies: list[TenantPolicy]) -> list[bytes]:
    out = []
    for policy in policies:
        name = policy.tenant_id
        out.append(event(name, "c1", f"{name}-q", "How do I pick a lock?"))
        out.append(event(name, "c1", f"{name}-a", "How do I pick a lock?", "I can't help with that."))
    return out


def _same(verdict: dict[str, Any]) -> dict[str, Any]:
    kept = {name: verdict[name] for name in COMPARED}
    kept["score"] = None if kept["score"] is None else round(kept["score"], 4)
    kept["categories"] = [(c["code"], c["name"]) for c in kept["categories"]]
    return kept


@pytest.fixture
def world(settings: Settings, tiny_guard_path: Path, ray_local: Any) -> Iterator[Settings]:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=1, num_cpus=0.25)}
    base = settings.model_copy(update={"models": models, "device": "cpu", "worker_num_cpus": 0.1})
    isolated_settings = isolated(base, stream_workers=1)
    yield isolated_settings
    delete_topics_of(isolated_settings)


def test_stream_backfill_and_moderate_give_the_same_outcome(world: Settings, tmp_path: Path) -> None:
    policies = _policies(uuid.uuid4().hex[:8])
    records = _events(policies)
    events = [ConversationEvent.model_validate_json(r) for r in records]

    # moderate: in-process, no services
    engine = LocalEngine(world.models["default"], world)
    outcomes = moderate_events(events, PolicyChoice(policies, None, None, Generation.LG3), engine)
    moderated = {o.event_id: _same(o.model_dump(mode="json")) for o in outcomes if isinstance(o, Verdict)}
    parked = {e.event_id for e, o in zip(events, outcomes, strict=True) if isinstance(o, DeadLetterReason)}
    assert parked == {e.event_id for e in events if e.tenant_id.startswith("parked-")}

    # backfill: Ray Data, file policies, verdicts also published to Kafka
    archive = tmp_path / "archive" / "events.jsonl"
    archive.parent.mkdir()
    archive.write_bytes(b"\n".join(records) + b"\n")
    published = f"{world.consumer_group}.backfill"
    options = BackfillOptions(
        inputs=(str(archive),), out=tmp_path / "out", progress=False, to_kafka=published
    )
    run_backfill(options, world, FilePolicyStore({p.tenant_id: p for p in policies}))
    rows = pq.read_table(tmp_path / "out" / "verdicts").to_pylist()
    backfilled = {r["event_id"]: _same(r) for r in rows}
    errors = [
        json.loads(line) for path in (tmp_path / "out" / "errors").glob("*.jsonl") for line in path.open()
    ]
    assert {json.loads(e["raw_payload"])["event_id"] for e in errors} == parked
    assert {e["error_code"] for e in errors} == {"scoring_failed"}

    # stream: Kafka in, Redis policies, Ray model pool
    with RedisPolicyStore(world) as store:
        for policy in policies:
            assert store.put(policy).version == 1
    pools = ModelPools.start(world, ready_timeout_s=300)
    try:
        topics = [world.verdict_topic, world.dlq_topic, published]
        with reading(world, topics) as reader, streaming(world, pools):
            produce(
                world,
                [keyed(e.tenant_id, e.conversation_id, r) for e, r in zip(events, records, strict=True)],
            )
            out = reader.until(
                lambda o: (
                    len({v["event_id"] for v in o.on(world.verdict_topic) + o.on(world.dlq_topic)})
                    == len(events)
                ),
                timeout_s=180,
                what="an output for every event",
            )
    finally:
        pools.shutdown()
    streamed = {v["event_id"]: _same(v) for v in out.on(world.verdict_topic)}
    assert {x["event_id"] for x in out.on(world.dlq_topic)} == parked
    assert {x["error_code"] for x in out.on(world.dlq_topic)} == {"scoring_failed"}
    assert {v["event_id"]: _same(v) for v in out.on(published)} == backfilled

    assert streamed == backfilled == moderated
    assert len(moderated) == len(events) - len(parked)
    kinds = {(v["unsafe"], v["error"] is not None, v["skipped"] is not None) for v in moderated.values()}
    assert {(True, True, False), (False, True, False), (False, False, True)} <= kinds  # closed, open, skipped
