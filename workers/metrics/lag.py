"""Consumer lag of the stream's group: per input partition, end offset minus committed offset.

Read by the ``stream`` driver with a client of its own, never by the workers: a worker's consumer belongs to
its poll thread (kafka-python clients are not thread-safe) and an offset lookup there would block polling.
Reading the group's committed offsets from outside also keeps the lag of a partition whose worker is dead
or rebalancing visible, which is when it matters most. The end offset is the last stable offset
(``read_committed``, as the workers read), and a partition with no commit yet counts from its first offset.
"""

from __future__ import annotations

from typing import Any

from kafka.structs import TopicPartition

from workers.clients import kafka as kafka_clients
from workers.settings import Settings

LOOKUP_TIMEOUT_MS = 5_000
"""One lag reading gives up after this; the gauge keeps its last value until the next one."""


class LagReader:
    """``read()`` → {(topic, partition): lag}; one client, opened lazily, closed with ``close``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: Any = None

    def read(self) -> dict[tuple[str, int], int]:
        consumer = self._client()
        topic = self._settings.input_topic
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return {}
        ends = consumer.end_offsets(tps, timeout_ms=LOOKUP_TIMEOUT_MS)
        starts = consumer.beginning_offsets(tps, timeout_ms=LOOKUP_TIMEOUT_MS)
        lag = {}
        for tp in tps:
            committed = consumer.committed(tp, timeout_ms=LOOKUP_TIMEOUT_MS)
            position = starts[tp] if committed is None else max(committed, starts[tp])
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - position)
        return lag

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = kafka_clients.lag_consumer(self._settings)
        return self._consumer
