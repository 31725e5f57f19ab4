"""Fault suite on the real Kafka, Redis and Ray: every record answered while records, policies and processes
go bad. Part of the traffic comes from librdkafka (confluent-kafka), compressed with every codec, so our
consumer is not only tested against our own producer.

Each test is bounded (``pytest.mark.timeout``) and stops by itself; the outputs are matched to inputs by
``event_id`` (verdicts) or source partition/offset (dead letters), as the chaos script does.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.fault_records import Record, oversized, poison, produce, valid
from tests.helpers.ray_procs import actor_pids
from tests.integration.stream_support import (
    Outputs,
    committed,
    end_offsets,
    reading,
    streaming,
    wait_until,
)
from workers.policies.redis_store import CHANNEL, TENANTS_KEY, RedisPolicyStore, policy_key
from workers.serving.pool import ModelPools
from workers.settings import Settings

pytestmark = pytest.mark.integration

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


class Expected:
    """Input records by identity, and how many answers each got."""

    def __init__(self) -> None:
        self.by_id: dict[str, int] = {}
        self.by_pos: dict[tuple[int, int], int] = {}
        self.count = 0

    def add(self, records: list[Record], placed: list[tuple[int, int]]) -> None:
        for record, pos in zip(records, placed, strict=True):
            if record.event_id is not None:
                self.by_id[record.event_id] = self.count
            self.by_pos[pos] = self.count
            self.count += 1

    def answers(self, outputs: Outputs, settings: Settings) -> Counter[int]:
        found: Counter[int] = Counter()
        for topic, _, _, value in outputs.records:
            if topic == settings.dlq_topic:
                index = self.by_pos.get((value["source_partition"], value["source_offset"]))
            else:
                index = self.by_id.get(value.get("event_id", ""))
            if index is not None:
                found[index] += 1
        return found


def _run_and_check(
    settings: Settings, pools: ModelPools, batches: list[tuple[str, list[Record]]], **kwargs: Any
) -> tuple[Outputs, Any]:
    """Produce, stream until every record is answered, drain; assert none lost, offsets all committed."""
    expected = Expected()
    topics = [settings.verdict_topic, settings.dlq_topic]
    with reading(settings, topics, read_committed=settings.exactly_once) as reader:
        for via, records in batches:
            expected.add(records, produce(settings, records, via))
        with streaming(settings, pools, **kwargs) as running:
            reader.until(
                lambda out: len(expected.answers(out, settings)) == expected.count,
                timeout_s=120,
                what=f"answers to all {expected.count} records",
            )
            report = running.stop()
        outputs = reader.read()
    answers = expected.answers(outputs, settings)
    assert len(answers) == expected.count
    if settings.exactly_once:
        assert max(answers.values()) == 1, "exactly-once mode answered a record twice"
    assert committed(settings) == end_offsets(settings)
    return outputs, report


@pytest.mark.timeout(240)
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_librdkafka_codecs_poison_and_oversized_records_are_all_answered(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools, exactly_once: bool
) -> None:
    settings = fault_isolate(exactly_once=exactly_once, stream_workers=1)
    batches = [(f"librdkafka:{codec}", valid("faults", 6, prefix=codec)) for codec in CODECS]
    batches += [("librdkafka:lz4", poison()), ("kafka-python", oversized())]
    outputs, report = _run_and_check(settings, fault_pools, batches)
    letters = outputs.on(settings.dlq_topic)
    assert len(outputs.on(settings.verdict_topic)) >= 6 * len(CODECS)
    assert {"too_deep", "invalid_json", "invalid_utf8", "schema_violation", "too_large"} <= {
        letter["error_code"] for letter in letters
    }
    cut = [letter for letter in letters if letter["payload_truncated"]]
    sizes = [len(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()) for d in cut]
    assert len(cut) == 2 and max(sizes) <= settings.max_output_bytes
    assert report.scoring_errors == 0


def _store_raw(settings: Settings, tenant: str, doc: str) -> None:
    import redis

    with redis.Redis.from_url(settings.redis_url) as client:
        client.set(policy_key(tenant), doc)
        client.sadd(TENANTS_KEY, tenant)
        client.publish(CHANNEL, json.dumps({"tenant_id": tenant, "version": None}))


@pytest.mark.timeout(180)
def test_corrupt_and_newer_version_policies_do_not_stop_the_stream(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools
) -> None:
    settings = fault_isolate(stream_workers=1)
    run = uuid.uuid4().hex[:6]
    newer, corrupt = f"newer-{run}", f"corrupt-{run}"
    _store_raw(settings, newer, json.dumps({"tenant_id": newer, "threshold": 0.4, "priority": 2}))
    _store_raw(settings, corrupt, '{"tenant_id": "' + corrupt + '", "thresh')
    try:
        batches = [("librdkafka:zstd", [*valid(newer, 4), *valid(corrupt, 4)])]
        outputs, _ = _run_and_check(settings, fault_pools, batches)
    finally:
        with RedisPolicyStore(settings) as store:
            store.delete(newer)
            store.delete(corrupt)
    verdicts = outputs.on(settings.verdict_topic)
    assert {v["tenant_id"] for v in verdicts} == {newer} and {v["threshold"] for v in verdicts} == {0.4}
    letters = outputs.on(settings.dlq_topic)
    assert {(d["tenant_id"], d["error_code"]) for d in letters} == {(corrupt, "policy_invalid")}


def _stream_worker_pids() -> list[int]:
    return actor_pids("StreamWorkerImpl")


@pytest.mark.timeout(240)
def test_killed_stream_worker_is_restarted_and_the_stream_keeps_running(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools
) -> None:
    settings = fault_isolate(stream_workers=2, topic_partitions=2)
    expected = Expected()
    first, later = valid("kill", 20), valid("kill", 20, prefix="later")
    with reading(settings, [settings.verdict_topic, settings.dlq_topic]) as reader:
        expected.add(first, produce(settings, first, "librdkafka:snappy"))
        with streaming(settings, fault_pools) as running:
            reader.until(
                lambda out: len(expected.answers(out, settings)) >= 10, timeout_s=120, what="10 answers"
            )
            pids = _stream_worker_pids()
            assert len(pids) == 2
            os.kill(pids[0], signal.SIGKILL)
            expected.add(later, produce(settings, later, "kafka-python"))
            reader.until(
                lambda out: len(expected.answers(out, settings)) == expected.count,
                timeout_s=150,
                what="answers to every record after the kill",
            )
            wait_until(lambda: len(_stream_worker_pids()) == 2, timeout_s=60, what="the worker restarted")
            assert running.thread.is_alive(), "the stream stopped when a worker died"
            # The dead worker's answers may have outrun its commits: its partition is re-read (after the
            # session timeout) and committed by whoever owns it next, before the stop.
            wait_until(
                lambda: committed(settings) == end_offsets(settings),
                timeout_s=90,
                what="commits to reach the end offsets",
            )
            report = running.stop()
    assert report.worker_restarts >= 1
    assert committed(settings) == end_offsets(settings)


def _small_topic(settings: Settings, name: str, max_bytes: int) -> None:
    """Create ``name`` with a record size limit our outputs exceed: the broker refuses them for good."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="guardstream-tests")
    try:
        config = {"max.message.bytes": str(max_bytes)}
        admin.create_topics([NewTopic(name, 2, 1, topic_configs=config)], wait_for_metadata=True)
    finally:
        admin.close()


@pytest.mark.timeout(200)
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_verdict_the_broker_refuses_becomes_a_produce_failed_dead_letter(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools, exactly_once: bool
) -> None:
    # Exactly-once: the refusal arrives after the transaction's sends, beside dead letters the broker takes
    # (the malformed records); the transaction must abort, not commit the offsets without the verdicts
    # (kafka-python 3.0.12 did once a commit was queued), and the retry carries one dead letter per record.
    settings = fault_isolate(exactly_once=exactly_once, stream_workers=1)
    _small_topic(settings, settings.verdict_topic, 200)
    records = valid("refused", 6)
    malformed = [Record(None, b"{not json %d" % i, None) for i in range(3)]
    batches = [("kafka-python", [*records[:3], *malformed, *records[3:]])]
    outputs, _ = _run_and_check(settings, fault_pools, batches)
    letters = outputs.on(settings.dlq_topic)
    refused = [d for d in letters if d["error_code"] == "produce_failed"]
    assert Counter(d["event_id"] for d in refused) == Counter(r.event_id for r in records)
    assert all(settings.verdict_topic in d["reason"] for d in refused)
    assert Counter(d["error_code"] for d in letters if d not in refused) == {"invalid_json": 3}
    assert outputs.on(settings.verdict_topic) == []


@pytest.mark.timeout(200)
def test_dead_letter_the_broker_refuses_stops_the_stream_without_committing_past_it(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools
) -> None:
    settings = fault_isolate(stream_workers=1, topic_partitions=1)
    _small_topic(settings, settings.dlq_topic, 200)
    sent = produce(
        settings, [*valid("stuck", 2), Record(None, b"{not json" + b" " * 400, None)], "kafka-python"
    )
    with streaming(settings, fault_pools) as running:
        running.thread.join(150)
        assert not running.thread.is_alive(), "the stream kept running with an unwritable dead letter"
        report = running.stop()
    assert report.stopped_by == "worker-failed" and report.error and "could not be produced" in report.error
    poison_partition, poison_offset = sent[-1]
    assert committed(settings).get(poison_partition, 0) <= poison_offset
