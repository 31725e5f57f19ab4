"""The stream worker's output side: from a finished record to a committed offset.

Every polled record gets exactly one output — a verdict on its tenant's verdict topic or a dead letter on the
DLQ — and its input offset is committed only after the broker acknowledged that output and the outputs of
every earlier record of the partition (``workers.stream.offsets``). Outputs are released in input order per
partition, so the verdicts of one conversation (one key, one partition) come out in the order it went in.

Two delivery modes:

- at-least-once (default): produce with acks=all, commit acknowledged positions every
  ``commit_interval_ms``; a crash between produce and commit re-delivers, ``event_id`` de-duplicates.
- exactly-once (``settings.exactly_once``): each release is one Kafka transaction holding the outputs and
  the consumer offsets they answer (``send_offsets_to_transaction``); an aborted transaction rewinds the
  consumer to its committed offsets. Downstream consumers read with ``isolation_level=read_committed``.

A refused output is never skipped (``workers.stream.retries``): retriable → re-sent with backoff, permanent
→ a ``produce_failed`` dead letter answers the record instead (in exactly-once mode the transaction aborts
and the re-read record gets the dead letter); a dead letter that cannot be produced stops the worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from schemas.verdicts import DeadLetter, Verdict
from workers.errors import OutputUnwritable
from workers.logging import get_logger
from workers.metrics.stream import StreamMetrics
from workers.settings import Settings
from workers.stream.offsets import OffsetLedger
from workers.stream.retries import Retries, as_kafka_error, is_retriable, produce_failed_letter
from workers.stream.sinks import Delivery, KafkaSink, Output

log = get_logger(__name__)

Body = Verdict | DeadLetter

COMMIT_TIMEOUT_MS = 5_000
"""A commit not answered by then is retried at the next interval (its positions stay committable)."""

MAX_ABORTS = 10
"""Transactions aborted in a row before the worker stops with ``OutputUnwritable`` instead of spinning."""


class OutputStage:
    """Ledger + sink + commits for one consumer; used from the worker loop's thread only."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any,
        *,
        worker_id: str,
        on_abort: Callable[[], None],
        metrics: StreamMetrics | None = None,
    ):
        self._settings = settings
        self._metrics = metrics or StreamMetrics(worker_id, max_tenants=settings.metrics_max_tenants)
        self._consumer = consumer
        self._worker_id = worker_id
        self._on_abort = on_abort
        self.exactly_once = settings.exactly_once
        transactional_id = f"guardstream-{settings.consumer_group}-{worker_id}" if self.exactly_once else None
        self._sink = KafkaSink(settings, transactional_id=transactional_id)
        for topic in (settings.verdict_topic, settings.dlq_topic):  # ready before the first output
            self._sink.topics.prepare(topic)
        self._ledger: OffsetLedger[TopicPartition, Output] = OffsetLedger()
        self._last_commit = 0.0
        self._retries = Retries()
        self._held: list[Output] = []
        """Exactly-once: released outputs waiting for their topic to be created before a transaction."""
        self._replacements: dict[tuple[TopicPartition, int], Output] = {}
        """Exactly-once: dead letters for records whose output aborted a transaction, used on re-read."""
        self._aborts = 0
        self.produce_failures = 0
        self.verdicts = 0
        self.dead_letters = 0
        self.committed: dict[str, int] = {}

    # --- tracking ---------------------------------------------------------------------------------------
    def track(self, tp: TopicPartition, offset: int) -> None:
        """A record was polled; it must get an output before its offset can be committed."""
        self._ledger.add(tp, offset)

    def complete(
        self, tp: TopicPartition, offset: int, key: bytes | None, body: Body, verdict_topic: str | None = None
    ) -> None:
        """The record's output is known; it is produced once every earlier record's is."""
        if isinstance(body, DeadLetter):
            topic = self._settings.dlq_topic
            log.warning(
                "dead_letter",
                event_id=body.event_id,
                tenant_id=body.tenant_id,
                code=body.error_code.value,
                reason=body.reason,
                partition=tp.partition,
                offset=offset,
            )
        else:
            topic = verdict_topic or self._settings.verdict_topic
            log.debug("verdict", event_id=body.event_id, tenant_id=body.tenant_id, unsafe=body.unsafe)
        self._ledger.complete(tp, offset, Output(topic, key, body, tp, offset))

    def prepare_topic(self, topic: str) -> None:
        """A record routed to ``topic`` was read: have the topic created, off this thread, by its output."""
        self._sink.topics.prepare(topic)

    @property
    def in_flight(self) -> int:
        """Records polled whose offsets are not committable yet."""
        return self._ledger.in_flight()

    @property
    def unreleased(self) -> int:
        """Records polled whose outputs are not produced yet (the backpressure measure)."""
        return self._ledger.unreleased()

    # --- producing and committing -----------------------------------------------------------------------
    def pump(self, *, force_commit: bool = False) -> None:
        """Take broker acks, produce what is releasable, commit when due. Never blocks for long."""
        self._take_deliveries()
        ready = [output for _, _, output in self._ledger.releasable()]
        if self.exactly_once:
            # Held, not sent, while a topic they go to is being created: a send would only abort.
            self._held += ready
            topics = {self._settings.dlq_topic, *(output.topic for output in self._held)}
            if self._held and not any(self._sink.topics.pending(topic) for topic in topics):
                held, self._held = self._held, []
                self._release_transaction(held)
        else:
            for output in [*self._retries.due(), *ready]:
                self._send(output)
        self._commit(force=force_commit)

    def _send(self, output: Output) -> None:
        error = self._sink.try_send(output)
        if error is not None:
            self._refused(output, error)

    def _refused(self, output: Output, error: BaseException, *, suspect: bool = False) -> None:
        """At-least-once: retry a retriable (or suspect) refusal later; else answer with a dead letter."""
        self.produce_failures += 1
        what = {"event_id": output.body.event_id, "tenant_id": output.body.tenant_id, "topic": output.topic}
        if not self._retries.permanent(output, error, suspect=suspect) and self._retries.schedule(output):
            log.warning("produce_retry", **what, error=f"{type(error).__name__}: {error}")
            self._metrics.produce_retry()
            return
        log.error("produce_failed_dead_letter", **what, error=f"{type(error).__name__}: {error}")
        self._sink.renew_if_failed()
        self._send(produce_failed_letter(output, error, self._settings.dlq_topic))

    def finish(self) -> None:
        """Wait for the broker to acknowledge everything produced, then commit (drain)."""
        self.pump()
        self._sink.flush(timeout_s=30)
        self._take_deliveries()
        self._commit(force=True)

    def first_unacked(self, tp: TopicPartition) -> int | None:
        """Where this partition must be re-read from if it comes back to this consumer."""
        return self._ledger.first_unacked(tp)

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions left this consumer: forget their records (the next owner re-reads the uncommitted)."""
        lost = set(tps)
        self._ledger.revoke(lost)
        self._held = [output for output in self._held if output.source not in lost]
        self._retries.forget()  # a re-send answering a revoked record would be acked into nothing

    def close(self) -> None:
        self._sink.close()

    def _release_transaction(self, outputs: list[Output]) -> None:
        """One transaction: every output (or its dead letter) and the offsets they answer, or nothing."""
        positions = self._ledger.released_positions()
        sent: list[Output] = []
        learned = 0
        try:
            self._sink.begin()
            for output in outputs:
                # Kept until committed: an aborted transaction must not forget a judged refusal.
                output = self._replacements.get((output.source, output.source_offset), output)  # type: ignore[arg-type]
                error = self._sink.try_send(output)
                if error is not None and self._sink.failed:  # an earlier send's refusal, not this output's
                    raise as_kafka_error(error)
                if error is not None and not is_retriable(error):
                    log.error("produce_failed_dead_letter", event_id=output.body.event_id, error=str(error))
                    output = produce_failed_letter(output, error, self._settings.dlq_topic)
                    error = self._sink.try_send(output)
                if error is not None:
                    raise as_kafka_error(error)
                sent.append(output)
            refused = [d for d in self._sink.settle(sent) if d.error is not None]
            if refused:
                learned = self._note_replacements(refused)
                raise as_kafka_error(refused[0].error or KafkaError("send refused"))
            self._sink.commit(positions, self._consumer.group_metadata())
        except (KafkaError, OutputUnwritable) as exc:
            self._abort(exc, learned=learned)
            return
        self._aborts = 0
        for output in sent:
            self._retries.done(output)
            self._replacements.pop((output.source, output.source_offset), None)  # type: ignore[arg-type]
        self._ledger.ack_released()
        self._mark_committed(self._ledger.committable())
        self._count(sent)

    def _abort(self, exc: BaseException, *, learned: int = 0) -> None:
        """Abort, note dead letters for outputs the broker refused for good, re-read from the commits.

        Only an abort that taught nothing (no refusal newly judged) counts towards ``MAX_ABORTS``: each
        record is judged at most twice, so a run of refusals ends, and one abort per refused record
        (kafka-python refuses every later send of a transaction after the first refusal) is no spin.
        """
        self.produce_failures += 1
        log.error("transaction_aborted", worker=self._worker_id, error=f"{type(exc).__name__}: {exc}")
        try:
            self._sink.abort()
        except KafkaError as abort_error:  # fatal state, or the abort hung: the new producer fences the old
            log.warning("transaction_abort_failed", worker=self._worker_id, error=str(abort_error))
        # Always a fresh producer after an abort: one whose commit or abort timed out may still hold a
        # transaction open (a fresh one with the same id fences it). Aborts are rare; init_transactions
        # costs well under 1 s.
        self._sink.renew_if_failed(force=True)
        learned += self._note_replacements(self._sink.deliveries())
        if not learned:
            self._aborts += 1
        self._metrics.forget(self._ledger.partitions())
        self._ledger.revoke(self._ledger.partitions())
        self._on_abort()
        if isinstance(exc, OutputUnwritable) or self._aborts >= MAX_ABORTS:
            raise OutputUnwritable(f"{self._aborts} transactions aborted in a row; last: {exc}") from exc

    def _note_replacements(self, deliveries: list[Delivery]) -> int:
        """Outputs the broker refused for good get a dead letter, sent in their place once re-read; returns
        how many refusals were newly judged (a suspect verdict doubted, a dead letter noted)."""
        learned = 0
        for delivery in deliveries:
            output, error = delivery.output, delivery.error
            if error is None or is_retriable(error):
                continue
            key = (output.source, output.source_offset)
            if self._retries.permanent(output, error, suspect=delivery.suspect):
                letter = produce_failed_letter(output, error, self._settings.dlq_topic)
                learned += key not in self._replacements
                self._replacements[key] = letter  # type: ignore[index]
            elif not isinstance(output.body, DeadLetter):
                learned += 1  # a suspect verdict's first refusal: believed the next time
        return learned

    def _take_deliveries(self) -> None:
        for delivery in self._sink.deliveries():
            output = delivery.output
            if self.exactly_once:
                continue  # the transaction's commit is the acknowledgement
            if delivery.error is None:
                self._retries.done(output)
                self._ledger.ack(output.source, output.source_offset)  # type: ignore[arg-type]
                self._count([output])
                continue
            self._refused(output, delivery.error, suspect=delivery.suspect)

    def _count(self, outputs: list[Output]) -> None:
        for output in outputs:
            self._metrics.answered(output.source, output.source_offset, output.body)  # type: ignore[arg-type]
            if isinstance(output.body, DeadLetter):
                self.dead_letters += 1
            else:
                self.verdicts += 1

    def _commit(self, *, force: bool) -> None:
        now = time.monotonic()
        if self.exactly_once or (not force and now - self._last_commit < self._settings.commit_interval_s):
            return
        self._last_commit = now
        positions = self._ledger.committable()
        if not positions:
            return
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}
        try:
            # Bounded: a commit waiting on a rebalance must not block the loop whose polls drive it.
            self._consumer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:
            log.warning("commit_failed", worker=self._worker_id, error=str(exc))
            return
        self._mark_committed(positions)

    def _mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        self._ledger.mark_committed(positions)
        for tp, pos in positions.items():
            self.committed[f"{tp.topic}:{tp.partition}"] = pos
