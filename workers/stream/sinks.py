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

log = get_logger(__name__)

BAD_TOPIC_RETRY_S = 30.0
"""A topic that could not be created is tried again after this; until then its outputs fail at once."""

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
    """The broker's answer for one output: ``error`` is None when it was acknowledged."""

    output: Output
    error: BaseException | None = None


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
        self._known_topics: set[str] = set()
        self._bad_topics: dict[str, tuple[float, BaseException]] = {}
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
        failed = manager is not None and (manager.has_fatal_error() or manager.has_abortable_error())
        if not (failed or force):
            return False
        log.warning("producer_renewed", error=str(manager.last_error) if manager else "", forced=force)
        old, self._producer = self._producer, self._new_producer()
        try:
            old.close(timeout=5)  # its unsent records fail into deliveries() and are handled from there
        except KafkaError as exc:
            log.warning("producer_close_failed", error=str(exc))
        return True

    def send(self, output: Output) -> None:
        """Queue one output; its ``Delivery`` appears in ``deliveries()`` once the broker answers (or at once,
        with the error, if it cannot even be queued)."""
        error = self.try_send(output)
        if error is not None:
            self._deliveries.put(Delivery(output, error))

    def try_send(self, output: Output) -> BaseException | None:
        """``send``, but returns the error when the output cannot even be queued (its topic cannot be
        created, it is too large): the caller decides between a retry and a dead letter, so one tenant's
        unusable verdict topic costs that tenant's verdicts, not the stream.
        """
        failed = self._bad_topics.get(output.topic)
        if failed is not None and time.monotonic() - failed[0] < BAD_TOPIC_RETRY_S:
            return failed[1]
        try:
            if output.topic not in self._known_topics:
                kafka_clients.ensure_topics(self._settings, [output.topic])
                self._known_topics.add(output.topic)
                self._bad_topics.pop(output.topic, None)
        except KafkaError as exc:
            self._bad_topics[output.topic] = (time.monotonic(), exc)
            log.error("topic_unavailable", topic=output.topic, error=f"{type(exc).__name__}: {exc}")
            return exc
        try:
            value = output.value(self._settings.max_output_bytes)
            future = self._producer.send(output.topic, key=output.key, value=value)
        except (KafkaError, OutputTooLarge) as exc:
            return exc
        future.add_callback(lambda _meta: self._deliveries.put(Delivery(output)))
        future.add_errback(lambda exc: self._deliveries.put(Delivery(output, exc)))
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
