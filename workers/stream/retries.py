"""What to do with an output the broker refused: retry it later, or answer its record another way.

kafka-python already retries retriable errors inside the producer until ``delivery_timeout_ms``; an error
that reaches us is final for that attempt. A retriable one (leader moved, broker timed out) is sent again a
bounded number of times with exponential backoff, scheduled rather than slept so the poll thread never
waits; a permanent one (record too large, topic invalid or denied, an output that cannot fit) or one that
exhausted its retries gets a ``produce_failed`` dead letter instead. Only if the dead letter itself cannot
be produced does the worker stop, with ``OutputUnwritable``: committing past the record would lose it, and
retrying it forever would spin.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from kafka.errors import KafkaError

from schemas.verdicts import DeadLetter, DeadLetterCode
from workers.errors import OutputUnwritable
from workers.stream.sinks import Output

MAX_ATTEMPTS = 5
"""Re-sends of one output after a retriable error before it is dead-lettered instead."""

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Wait before each re-send: about 15 s in all, on top of the producer's own retries."""


def is_retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def as_kafka_error(error: BaseException) -> KafkaError:
    """A refused send's error as the ``KafkaError`` that aborts a transaction."""
    return error if isinstance(error, KafkaError) else KafkaError(f"{type(error).__name__}: {error}")


class Retries:
    """Outputs waiting for their next attempt, by the input record they answer."""

    def __init__(self) -> None:
        self._attempts: dict[tuple[Hashable, int], int] = {}
        self._due: list[tuple[float, Output]] = []
        self._doubted: set[tuple[Hashable, int]] = set()

    def permanent(self, output: Output, error: BaseException, *, suspect: bool) -> bool:
        """Whether a refusal is final. A suspect one (a failed producer's error, which kafka-python gives
        every send in flight) may be another output's: a verdict gets one more try, a dead letter as many
        as its retries (or the aborts in a row) allow, since judging it wrongly stops the worker."""
        if is_retriable(error) or (suspect and isinstance(output.body, DeadLetter)):
            return False
        return not (suspect and self.second_chance(output))

    def second_chance(self, output: Output) -> bool:
        """True the first time it is asked for ``output``'s record, False after: a suspect refusal
        (``Delivery.suspect``) is believed only when the record is refused again."""
        key = (output.source, output.source_offset)
        if key in self._doubted:
            return False
        self._doubted.add(key)
        return True

    def schedule(self, output: Output) -> bool:
        """Queue a re-send of ``output``; False when it has had its ``MAX_ATTEMPTS``."""
        key = (output.source, output.source_offset)
        attempt = self._attempts.get(key, 0)
        if attempt >= MAX_ATTEMPTS:
            return False
        self._attempts[key] = attempt + 1
        self._due.append((time.monotonic() + BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], output))
        return True

    def due(self) -> list[Output]:
        """Outputs whose backoff has passed (removed from the queue)."""
        now = time.monotonic()
        ready = [output for at, output in self._due if at <= now]
        self._due = [(at, output) for at, output in self._due if at > now]
        return ready

    def done(self, output: Output) -> None:
        self._attempts.pop((output.source, output.source_offset), None)
        self._doubted.discard((output.source, output.source_offset))

    def forget(self) -> None:
        self._attempts.clear()
        self._due.clear()
        self._doubted.clear()

    def __len__(self) -> int:
        return len(self._due)


def produce_failed_letter(output: Output, error: BaseException, dlq_topic: str) -> Output:
    """A dead letter answering the record whose verdict could not be produced, for the DLQ."""
    body = output.body
    if isinstance(body, DeadLetter):
        raise OutputUnwritable(
            f"dead letter for {output.source}@{output.source_offset} could not be produced to "
            f"{output.topic!r}: {type(error).__name__}: {error}"
        )
    topic, partition = output.source if isinstance(output.source, tuple) else (str(output.source), None)
    letter = DeadLetter(
        error_code=DeadLetterCode.PRODUCE_FAILED,
        reason=f"verdict could not be produced to {output.topic!r}: {type(error).__name__}: {error}"[:2000],
        raw_payload="",
        payload_encoding="utf-8",
        payload_truncated=True,  # the input is at source_topic/partition/offset; the verdict is in reason
        source_topic=str(topic),
        source_partition=partition,
        source_offset=output.source_offset,
        source_key=output.key.decode("utf-8", "replace") if output.key is not None else None,
        event_id=body.event_id,
        tenant_id=body.tenant_id,
    )
    return Output(dlq_topic, output.key, letter, output.source, output.source_offset)
