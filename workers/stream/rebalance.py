"""Partition ownership changes for the stream loop: revoke, assign, and the stuck-rejoin watchdog.

kafka-python calls the listener on its IO thread, inside ``poll``; the loop owns the consumer, the output
stage and the batcher, so the callbacks only drop work, set fetch positions and note the rebalance; the
loop asks ``check_rejoin`` before every poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import TopicPartition

from workers.clients import kafka as kafka_clients
from workers.errors import ConsumerStuckError
from workers.logging import get_logger
from workers.metrics.stream import StreamMetrics
from workers.settings import Settings
from workers.stream.items import Item
from workers.stream.microbatch import MicroBatcher
from workers.stream.output import OutputStage

log = get_logger(__name__)

REJOIN_TIMEOUT_S = 3 * kafka_clients.SESSION_TIMEOUT_MS / 1000
"""A rebalance this consumer is in must end within this; else the consumer is rebuilt (``check_rejoin``)."""


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer's rebalance listener; ``on_revoke`` lets the loop reset its own state (backpressure)."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any,
        out: OutputStage,
        batcher: MicroBatcher[Item],
        metrics: StreamMetrics,
        *,
        worker_id: str,
        on_revoke: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._out = out
        self._batcher = batcher
        self._metrics = metrics
        self._worker_id = worker_id
        self._on_revoke = on_revoke
        self._reread_from: dict[TopicPartition, int] = {}
        self._rebalancing_since: float | None = None

    def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            self.on_revoked(list(revoked))
        except Exception:  # raising here would leave the group without a LeaveGroup: a 10 s stall
            log.exception("partitions_revoked_failed", partitions=sorted(map(str, revoked)))

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Not swallowed: a partition that could not be rewound would skip records. poll() raises it, the
        # worker rebuilds its consumer and re-reads from the committed offsets; a stall, never a loss.
        self.on_assigned(list(assigned))

    def check_rejoin(self) -> None:
        """Raise if a rebalance this consumer started never finished.

        Seen with kafka-python 3: right after a first join, a rejoin's answer is never processed; the client
        stops heartbeating and the member sits without partitions forever. Raising makes the worker close
        this consumer and start a fresh one (``StreamWorkerImpl``), which rejoins and re-reads from the
        committed offsets; nothing was committed past an unanswered record, so nothing is lost.
        """
        since = self._rebalancing_since
        if since is not None and time.monotonic() - since > REJOIN_TIMEOUT_S:
            raise ConsumerStuckError(
                f"consumer of {self._settings.input_topic} has been rejoining group "
                f"{self._settings.consumer_group} for over {REJOIN_TIMEOUT_S:g}s; rebuilding it"
            )

    def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Partitions leave: drop what was read from them; the next owner re-reads from the last commit.

        Runs on kafka-python's IO thread, where blocking consumer calls (commit) are not allowed, so
        nothing is finished here: outputs produced but not yet committed are produced again by the next
        owner (at-least-once; ``event_id`` de-duplicates).
        """
        lost = set(revoked)
        self._rebalancing_since = time.monotonic()
        self._reread_from = {tp: off for tp in lost if (off := self._out.first_unacked(tp)) is not None}
        self._out.revoke(lost)
        self._metrics.forget(lost)
        self._batcher.discard(lambda item: item.tp not in lost)
        self._on_revoke()
        log.info("partitions_revoked", worker=self._worker_id, partitions=sorted(map(str, lost)))

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Partitions arrive. One this consumer owned before the rebalance keeps its fetch position
        (kafka-python 3 preserves it), but ``on_revoked`` dropped the records read from it whose outputs
        were not acknowledged: seek back to the first of them, or they would be skipped and lost.

        Also on kafka-python's IO thread; ``seek`` only sets the next fetch position, it never blocks.
        """
        for tp in assigned:
            offset = self._reread_from.get(tp)
            if offset is not None:
                self._consumer.seek(tp, offset)
                log.info("partition_reread", worker=self._worker_id, partition=str(tp), offset=offset)
        self._reread_from = {}
        self._rebalancing_since = None
        self._metrics.assigned()
        log.info("partitions_assigned", worker=self._worker_id, partitions=sorted(map(str, assigned)))
