"""Where verdicts and dead letters go: Kafka topics, produced with ``acks=all`` and idempotence.

The stream worker must not commit an input offset before the output for it is on the broker, so every send
carries the source record's partition and offset, and the broker's answer (ack or final failure) comes back
through a thread-safe queue the worker drains on its own thread. kafka-python runs delivery callbacks on the
producer's I/O thread; touching the worker's offset ledger from there would race.

The producer comes from ``workers.clients.kafka`` (idempotent, ``acks=all``): outputs released in input
order land in that order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from schemas.verdicts import DeadLetter, OutputTooLarge, Verdict
from workers.clients import kafka as kafka_clients
from workers.logging import get_logger
from workers.settings import Settings
from workers.stream.topics import OutputTopics

log = get_logger(__name__)

TOPIC_WAIT_S = 30.0
"""``send`` (the backfill's ``--to-kafka``, no poll loop) waits this long for a new topic to be created."""

TRANSACTION_TIMEOUT_S = 10.0
"""Longest a transaction's commit or abort may block the poll thread; kafka-python's own waits are unbounded
(an abort after a refused batch was seen never to return)."""


@dataclass(frozen=True)
class Output:
    """One record to produce: a verdict or dead letter, where it goes, and the input record it answers."""

    topic: str
    key: bytes | None
    body: Verdict | DeadLetter
    source: Hashable  # the input (topic, partition) whose commit waits for this output
    source_offset: int

    def value(self, max_bytes: int) -> bytes:
        """The body as JSON of at most ``max_bytes`` (a dead letter cuts its payload; ``OutputTooLarge``)."""
        return self.body.to_bytes(max_bytes)


@dataclass(frozen=True)
class Delivery:
    """The broker's answer for one output: ``error`` is None when it was acknowledged.

    ``suspect``: the error came back from a producer in a failed state. kafka-python then fails every send
    in flight with the error of the one send that failed it, so the error may not be this output's own.
    """

    output: Output
    error: BaseException | None = None
    suspect: bool = False


class VerdictSink(Protocol):
    """Where verdicts and dead letters go: ``send`` queues one, ``flush`` returns once all sent are durable.

    ``KafkaSink`` (the stream, transactional or not) and the backfill's ``ParquetSink`` and
    ``KafkaVerdictPublisher`` (``--to-kafka``, a ``KafkaSink`` underneath) implement it.
    """

    def send(self, output: Output) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...

    def close(self) -> None: ...


class KafkaSink:
    """Produces outputs and reports deliveries; optionally transactional (exactly-once mode)."""

    def __init__(self, settings: Settings, *, transactional_id: str | None = None) -> None:
        self._settings = settings
        self._deliveries: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self.topics = OutputTopics(settings)
        self._transactional_id = transactional_id
        self.transactional = transactional_id is not None
        self._producer = self._new_producer()

    def _new_producer(self) -> Any:
        producer = kafka_clients.producer(self._settings, transactional_id=self._transactional_id)
        if self.transactional:
            producer.init_transactions()
        return producer

    def renew_if_failed(self, *, force: bool = False) -> bool:
        """Replace a producer a refused batch left in an error state (or, ``force``, one whose abort did not
        finish); True if it was replaced.

        kafka-python's idempotent producer treats some permanent refusals (a record too large for its
        topic) as fatal: every later send fails with the same error, dead letters included. A fresh
        producer (same transactional id, which fences the old one and aborts its transaction) lets the
        dead letter through.
        """
        manager = getattr(self._producer, "_transaction_manager", None)
        if not (self.failed or force):
            return False
        log.warning("producer_renewed", error=str(manager.last_error) if manager else "", forced=force)
        old, self._producer = self._producer, self._new_producer()
        try:
            old.close(timeout=5)  # its unsent records fail into deliveries() and are handled from there
        except KafkaError as exc:
            log.warning("producer_close_failed", error=str(exc))
        return True

    @property
    def failed(self) -> bool:
        """The producer is in a failed state: it refuses every send until renewed (or, in a transaction,
        until the transaction is aborted)."""
        return _failed(self._producer)

    def send(self, output: Output) -> None:
        """Queue one output; its ``Delivery`` appears in ``deliveries()`` once the broker answers (or at once,
        with the error, if it cannot even be queued)."""
        self.topics.wait(output.topic, TOPIC_WAIT_S)  # no poll loop to come back from here
        error = self.try_send(output)
        if error is not None:
            self._deliveries.put(Delivery(output, error))

    def try_send(self, output: Output) -> BaseException | None:
        """``send``, but never waits for a topic, and returns the error when the output cannot even be
        queued (its topic is being created — ``TopicPending``, retriable — or cannot be created, it is too
        large): the caller decides between a retry and a dead letter, so one tenant's unusable verdict
        topic costs that tenant's verdicts, not the stream.
        """
        topic_error = self.topics.check(output.topic)
        if topic_error is not None:
            return topic_error
        if not self.transactional:
            self.renew_if_failed()  # a failed producer refuses every send: never let it judge this one
        producer = self._producer
        try:
            value = output.value(self._settings.max_output_bytes)
            future = producer.send(output.topic, key=output.key, value=value)
        except (KafkaError, OutputTooLarge) as exc:
            return exc
        future.add_callback(lambda _meta: self._deliveries.put(Delivery(output)))
        future.add_errback(lambda exc: self._deliveries.put(Delivery(output, exc, _failed(producer))))
        return None

    def deliveries(self) -> list[Delivery]:
        """Broker answers received since the last call (never blocks)."""
        out: list[Delivery] = []
        while True:
            try:
                out.append(self._deliveries.get_nowait())
            except queue.Empty:
                return out

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def failures(self) -> list[Delivery]:
        """Wait for every send and return those the broker refused (a caller that resends nothing)."""
        self.flush()
        return [d for d in self.deliveries() if d.error is not None]

    # --- exactly-once -----------------------------------------------------------------------------------
    def begin(self) -> None:
        self._producer.begin_transaction()

    def settle(self, outputs: list[Output], timeout_s: float = TRANSACTION_TIMEOUT_S) -> list[Delivery]:
        """Wait, at most ``timeout_s``, for the broker's answer to each of ``outputs``; return those answers.

        A transaction may be committed only once every send in it is acknowledged. kafka-python 3.0.12's
        ``commit_transaction`` queues its EndTxn before the sends are answered; a refusal arriving after
        that leaves the commit hanging, and aborting then lets the queued EndTxn(commit) out first: the
        broker commits the consumer offsets without the outputs (and the abort crashes the producer's I/O
        thread). Settling first keeps a refused send from ever meeting a commit. Costs nothing extra:
        ``commit_transaction`` waits for the same acknowledgements.
        """
        waiting = {id(output) for output in outputs}
        answers: list[Delivery] = []
        deadline = time.monotonic() + timeout_s  # no flush: it can raise "Future not done" on split batches
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaTimeoutError(f"{len(waiting)} sends not answered within {timeout_s:g}s")
            try:
                delivery = self._deliveries.get(timeout=left)
            except queue.Empty:
                continue
            if id(delivery.output) in waiting:  # anything else answers an earlier, aborted transaction
                waiting.discard(id(delivery.output))
                answers.append(delivery)
        return answers

    def commit(self, positions: dict[Any, int], group_metadata: Any) -> None:
        """Commit the open transaction together with the consumer offsets it answers."""
        offsets = {
            TopicPartition(tp[0], tp[1]): OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()
        }
        producer = self._producer

        def commit() -> None:
            if offsets:
                producer.send_offsets_to_transaction(offsets, group_metadata)
            producer.commit_transaction()

        _bounded(commit, "commit_transaction")

    def abort(self) -> None:
        """Abort the open transaction; raises ``KafkaTimeoutError`` if it does not finish in time."""
        _bounded(self._producer.abort_transaction, "abort_transaction")

    def close(self, timeout_s: float | None = 10.0) -> None:
        self._producer.close(timeout=timeout_s)


def _failed(producer: Any) -> bool:
    """Whether the producer is in kafka-python's fatal or abortable error state (it refuses every send)."""
    manager = getattr(producer, "_transaction_manager", None)
    return manager is not None and bool(manager.has_fatal_error() or manager.has_abortable_error())


def _bounded(call: Callable[[], None], what: str) -> None:
    """Run a blocking producer call for at most ``TRANSACTION_TIMEOUT_S``; re-raise what it raised."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name=f"producer-{what}", daemon=True)
    thread.start()
    thread.join(TRANSACTION_TIMEOUT_S)
    if not outcome:
        raise KafkaTimeoutError(f"{what} did not finish within {TRANSACTION_TIMEOUT_S:g}s")
    if outcome[0] is not None:
        raise outcome[0]
