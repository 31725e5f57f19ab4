"""The stream worker's loop: one Kafka consumer turning conversation events into verdicts and dead letters.

One thread owns the consumer, the batches and the output stage, so none of them needs a lock:

    poll → intake (event or dead letter) → policy (Redis cache) → micro-batch per model pool
         → one pool call per batch (polling goes on while it scores) → decide
         → output stage: release in input order per partition → produce (acks=all) → commit

Backpressure: when ``settings.max_in_flight`` records are polled but not yet produced, the loop pauses its
partitions (it keeps calling ``poll``, so the group sees it alive) and resumes below half that.

Failures never stall a partition: a batch that raises or outlives ``score_timeout_s`` gives each of its
events the tenant's ``on_error`` outcome (an error verdict, or a ``scoring_failed`` dead letter).
``workers.stream.worker.StreamWorker`` runs this loop inside a Ray actor.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka.structs import TopicPartition

from schemas.verdicts import DeadLetter
from workers.clients import kafka as kafka_clients
from workers.decision import DeadLetterReason, build_request, event_outcome, side_skipped
from workers.engine import ScoreResult
from workers.errors import UndecodableBatchError
from workers.intake.records import Source, dead_letter, parse_record, resolve_policy
from workers.intake.tenancy import check_tenant
from workers.logging import get_logger
from workers.metrics.stream import StreamMetrics
from workers.policies.base import PolicyStore
from workers.settings import Settings
from workers.stream.items import Item, Pools, WorkerStats
from workers.stream.microbatch import MicroBatcher
from workers.stream.outage import BrokerOutage
from workers.stream.output import Body, OutputStage
from workers.stream.rebalance import Rebalance
from workers.stream.scoring import InFlight, Scoring
from workers.stream.undecodable import BatchFailure, failed_batch

log = get_logger(__name__)


LEAVE_WAIT_S = 60.0
"""Longest a drained loop waits for the driver's word to leave the group (the other workers' drains)."""

REWIND_TIMEOUT_MS = 5_000
"""How long an aborted transaction's rewind waits for the committed offsets before the consumer is rebuilt."""


class StreamLoop:
    """Runs until ``stop`` is set, then drains: finish in-flight work, produce, commit, close."""

    def __init__(
        self,
        settings: Settings,
        pools: Pools,
        store: PolicyStore,
        *,
        worker_id: str,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or StreamMetrics(worker_id, max_tenants=settings.metrics_max_tenants)
        self._metrics.loop_started()
        self._store = store
        self._worker_id = worker_id
        self._batcher: MicroBatcher[Item] = MicroBatcher(
            settings.batch_size, settings.batch_max_wait_ms / 1000
        )
        self._scoring = Scoring(pools, timeout_s=settings.score_timeout_s)
        self._consumer = kafka_clients.stream_consumer(settings, worker_id=worker_id)
        self._out = OutputStage(
            settings, self._consumer, worker_id=worker_id, on_abort=self._rewind, metrics=self._metrics
        )
        self._paused = False
        self._outage = BrokerOutage(worker_id)
        self._rebalance = Rebalance(
            settings,
            self._consumer,
            self._out,
            self._batcher,
            self._metrics,
            worker_id=worker_id,
            on_revoke=self._unpause,
        )
        self._last_record = time.monotonic()
        self._running = False
        self.drained = threading.Event()
        self._counts = {"consumed": 0, "scoring_errors": 0, "batches": 0}

    def run(self, stop: threading.Event, leave: threading.Event | None = None) -> WorkerStats:
        """Consume until ``stop``, drain, then (once ``leave`` is set, if given) leave the group.

        ``drained`` is set between the two (or when the loop fails): the driver lets every worker commit
        before any leaves, since a leaving member starts a rebalance that fails the others' commits.
        """
        self._consumer.subscribe([self._settings.input_topic], listener=self._rebalance)
        self._running = True
        log.info("stream_worker_started", worker=self._worker_id, topic=self._settings.input_topic)
        try:
            while not stop.is_set():
                self._step(poll=True)
            self._drain()
            self.drained.set()
            if leave is not None and not leave.wait(LEAVE_WAIT_S):
                log.warning("stream_worker_leave_timeout", worker=self._worker_id, waited_s=LEAVE_WAIT_S)
        finally:
            self.drained.set()  # nothing more will be committed
            self._running = False
            self._close_consumer()  # before the sink: its revoke callback still needs the sink
            self._out.close()
        stats = self.stats()
        log.info("stream_worker_stopped", **stats.model_dump())
        return stats

    def _close_consumer(self, timeout_s: float = 15.0) -> None:
        """Close the consumer (leave the group), but never wait forever on a client that is wedged."""
        closer = threading.Thread(
            target=self._consumer.close, kwargs={"autocommit": False}, name="consumer-close", daemon=True
        )
        closer.start()
        closer.join(timeout_s)
        if closer.is_alive():
            log.warning("consumer_close_timeout", worker=self._worker_id, timeout_s=timeout_s)

    def stats(self) -> WorkerStats:
        return WorkerStats(
            worker_id=self._worker_id,
            verdicts=self._out.verdicts,
            dead_letters=self._out.dead_letters,
            in_flight=self._out.in_flight,
            idle_s=time.monotonic() - self._last_record,
            committed=dict(self._out.committed),
            running=self._running,
            **self._counts,
        )

    def _step(self, *, poll: bool) -> None:
        for batch, results, error in self._scoring.finished():
            self._answer(batch, results, error)
        self._out.pump()
        for model, items in self._batcher.due(force=not poll):
            self._submit(model, items)
        if poll:
            self._rebalance.check_rejoin()
            self._backpressure()
            busy = self._scoring.pending or self._out.unreleased
            due = self._batcher.next_due_in()
            timeout_s = min(0.01 if busy else 0.1, due if due is not None else 0.1)
            self._poll(max(1, int(timeout_s * 1000)))
        elif self._scoring.pending:
            self._scoring.wait(0.02)
        else:
            time.sleep(0.005)

    def _drain(self) -> None:
        """Stop reading, score what was read, produce and commit it; bounded by ``score_timeout_s``.

        It does not poll: when every worker drains at once, a poll would take part in the rebalance the
        first worker to leave starts, revoking this worker's partitions before it commits them. A drain
        longer than the 25 s ``max_poll_interval`` therefore loses the member (its uncommitted records are
        re-read; nothing is lost).
        """
        if self._consumer.assignment():
            self._consumer.pause(*self._consumer.assignment())
        deadline = time.monotonic() + self._settings.score_timeout_s + 30
        while self._out.in_flight and time.monotonic() < deadline:
            self._step(poll=False)
        self._out.finish()
        if self._out.in_flight:
            log.warning("stream_worker_drain_incomplete", worker=self._worker_id, left=self._out.in_flight)

    # --- intake -----------------------------------------------------------------------------------------
    def _poll(self, timeout_ms: int) -> None:
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms)
        except Exception as exc:
            failure = failed_batch(exc)
            if failure is not None:
                self._skip_batch(failure)
            elif not self._outage.absorb(exc):
                raise
            return
        self._outage.polled()
        for tp, records in polled.items():
            for record in records:
                self._intake(tp, record)

    def _skip_batch(self, failure: BatchFailure) -> None:
        """Answer an undecodable batch with one dead letter and read on after it (or stop, if so set)."""
        log.error("undecodable_batch", worker=self._worker_id, reason=failure.describe())
        if self._settings.undecodable_batch == "stop":
            raise UndecodableBatchError(failure.describe()) from failure.error
        # Tracked at the batch's last offset, so the commit after its dead letter lands past the batch.
        self._out.track(failure.tp, failure.last)
        self._out.complete(failure.tp, failure.last, None, failure.dead_letter())
        self._counts["consumed"] += 1
        self._consumer.seek(failure.tp, failure.last + 1)

    def _intake(self, tp: TopicPartition, record: Any) -> None:
        self._counts["consumed"] += 1
        self._last_record = time.monotonic()
        raw: bytes = record.value if record.value is not None else b""
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        source = Source(topic=tp.topic, partition=tp.partition, offset=record.offset, key=key)
        self._out.track(tp, record.offset)
        self._metrics.polled(tp, record.offset)
        limits = {"max_event_bytes": self._settings.max_event_bytes, "max_turns": self._settings.max_turns}
        event = parse_record(raw, source, **limits)
        if isinstance(event, DeadLetter):
            return self._out.complete(tp, record.offset, record.key, event)
        mismatch = check_tenant(
            event,
            raw,
            source,
            tenant_source=self._settings.tenant_source,
            headers=record.headers or (),
            header=self._settings.tenant_header,
        )
        if mismatch is not None:
            return self._out.complete(tp, record.offset, record.key, mismatch)
        unknown = self._settings.unknown_tenant
        lookup = resolve_policy(event, self._store, unknown_tenant=unknown, raw=raw, source=source)
        if isinstance(lookup, DeadLetter):
            return self._out.complete(tp, record.offset, record.key, lookup)
        item = Item(event, lookup, tp, record.offset, record.key, raw)
        pool = lookup.policy.route.model
        if lookup.policy.route.verdict_topic:
            self._out.prepare_topic(lookup.policy.route.verdict_topic)
        if lookup.stale:
            self._metrics.policy_stale(event.tenant_id)
        if side_skipped(event, lookup.policy):
            return self._complete(item, None, self._scoring.model_name(pool))
        full = self._batcher.add(pool, item)
        if full is not None:
            self._submit(pool, full)

    # --- scoring ----------------------------------------------------------------------------------------
    def _submit(self, model: str, items: list[Item]) -> None:
        self._counts["batches"] += 1
        self._scoring.submit(model, items, [build_request(i.event, i.lookup.policy) for i in items])

    def _answer(self, batch: InFlight, results: list[ScoreResult] | None, error: str | None) -> None:
        model = self._scoring.model_name(batch.model)
        for index, item in enumerate(batch.items):
            self._complete(item, error if results is None else results[index], model)

    def _complete(self, item: Item, scored: ScoreResult | str | None, model: str) -> None:
        """Hand the event's outcome (``workers.decision.event_outcome``) to the output stage."""
        latency = (time.monotonic() - item.received_at) * 1000
        outcome = event_outcome(item.event, item.lookup, scored, model=model, latency_ms=latency)
        body: Body
        if isinstance(outcome, DeadLetterReason):
            event = item.event
            body = dead_letter(
                outcome.code,
                outcome.reason,
                item.raw,
                item.source(),
                event_id=event.event_id,
                tenant_id=event.tenant_id,
            )
        else:
            body = outcome
        if isinstance(outcome, DeadLetterReason) or outcome.error is not None:
            self._counts["scoring_errors"] += 1
            self._metrics.scoring_error(item.lookup.policy.route.model, scored)
        self._out.complete(item.tp, item.offset, item.key, body, item.lookup.policy.route.verdict_topic)

    # --- flow control -----------------------------------------------------------------------------------
    def _backpressure(self) -> None:
        limit = self._settings.max_in_flight
        assigned = self._consumer.assignment()
        if not self._paused and self._out.unreleased >= limit and assigned:
            self._consumer.pause(*assigned)
            self._paused = True
            log.info("backpressure_paused", worker=self._worker_id, unreleased=self._out.unreleased)
        elif self._paused and self._out.unreleased <= limit // 2:
            self._consumer.resume(*assigned)
            self._paused = False

    def _unpause(self) -> None:
        """Partitions were revoked (``Rebalance.on_revoked``): the next assignment arrives unpaused."""
        self._paused = False

    def _rewind(self) -> None:
        """After an aborted transaction: drop all work and re-read every partition from its commit."""
        self._batcher.discard(lambda item: False)
        self._scoring.forget()
        for tp in self._consumer.assignment():
            # Bounded: an unbounded wait here can hang an exactly-once worker; a timeout rebuilds the
            # consumer, which starts from the committed offsets too.
            committed = self._consumer.committed(tp, timeout_ms=REWIND_TIMEOUT_MS)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
