"""A record batch this process cannot decode: one ``undecodable_batch`` dead letter and read on, or stop.

The batch is real: librdkafka compresses it with snappy, and the consumer's process is made to lack the
codec (``kafka.codec.has_snappy``), as a deployment without python-snappy would. The loop runs in this
process (not a Ray actor) so the codec can be taken away from it alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import kafka.codec
import pytest

from tests.helpers.fault_records import produce, valid
from tests.integration.stream_support import committed, end_offsets, reading
from workers.errors import ConsumerStuckError, UndecodableBatchError
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.pool import ModelPools
from workers.settings import Settings
from workers.stream.loop import StreamLoop

pytestmark = pytest.mark.integration


def _loop_in_thread(settings: Settings, pools: ModelPools) -> tuple[threading.Event, list[Any], Any]:
    """The loop in a thread, rebuilt on ``ConsumerStuckError`` as ``StreamWorkerImpl`` rebuilds it: a group
    joined before the new topic's metadata reached the client rejoins, and kafka-python 3 can leave that
    rejoin unanswered until the watchdog fires (``workers/stream/rebalance.py: check_rejoin``)."""
    store = RedisPolicyStore(settings)
    stop = threading.Event()
    outcome: list[Any] = []

    def target() -> None:
        try:
            for attempt in range(3):
                loop = StreamLoop(settings, pools, store, worker_id="undecodable")
                try:
                    outcome.append(loop.run(stop))
                    return
                except ConsumerStuckError:
                    if attempt == 2:
                        raise
        except BaseException as exc:
            outcome.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return stop, outcome, thread


@pytest.mark.timeout(180)
def test_undecodable_batch_becomes_one_dead_letter_and_the_partition_reads_on(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fault_isolate(stream_workers=1, topic_partitions=1)
    snappy, gzip = valid("codec", 10, prefix="snappy"), valid("codec", 5, prefix="gzip")
    placed = produce(settings, snappy, "librdkafka:snappy")
    produce(settings, gzip, "librdkafka:gzip")
    monkeypatch.setattr(kafka.codec, "has_snappy", lambda: False)
    with reading(settings, [settings.verdict_topic, settings.dlq_topic]) as reader:
        stop, outcome, thread = _loop_in_thread(settings, fault_pools)
        try:
            reader.until(
                lambda out: (
                    {v["event_id"] for v in out.on(settings.verdict_topic)} >= {r.event_id for r in gzip}
                    and len(out.on(settings.dlq_topic)) > 0
                ),
                timeout_s=120,
                what="verdicts for the decodable records and a dead letter for the other batch",
            )
        finally:
            stop.set()
            thread.join(60)
        outputs = reader.read()
    assert not isinstance(outcome[0], BaseException)
    letters = outputs.on(settings.dlq_topic)
    assert {d["error_code"] for d in letters} == {"undecodable_batch"}
    covered = {o for d in letters for o in range(d["source_offset"], d["source_last_offset"] + 1)}
    assert covered == {offset for _, offset in placed}
    assert all("snappy" in d["reason"] for d in letters)
    assert not {v["event_id"] for v in outputs.on(settings.verdict_topic)} & {r.event_id for r in snappy}
    assert committed(settings) == end_offsets(settings)


@pytest.mark.timeout(150)
def test_undecodable_batch_can_stop_the_stream_instead(
    fault_isolate: Callable[..., Settings], fault_pools: ModelPools, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fault_isolate(stream_workers=1, topic_partitions=1, undecodable_batch="stop")
    produce(settings, valid("codec", 3), "librdkafka:snappy")
    monkeypatch.setattr(kafka.codec, "has_snappy", lambda: False)
    _, outcome, thread = _loop_in_thread(settings, fault_pools)
    thread.join(120)  # room for one watchdog rebuild (30 s) before the batch is read
    assert not thread.is_alive() and isinstance(outcome[0], UndecodableBatchError)
    assert "cannot be decoded" in str(outcome[0])
    assert committed(settings) == {0: 0}
