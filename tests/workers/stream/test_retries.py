"""Refused outputs: retriable ones come back after a backoff a bounded number of times; others are answered
by a dead letter, and a dead letter that is refused is an error that stops the worker."""

from __future__ import annotations

import pytest
from kafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError
from kafka.structs import TopicPartition

from schemas.verdicts import DeadLetter, DeadLetterCode, Verdict
from workers.errors import OutputUnwritable
from workers.stream import retries
from workers.stream.retries import MAX_ATTEMPTS, Retries, is_retriable, produce_failed_letter
from workers.stream.sinks import Output

TP = TopicPartition("guard.conversations", 3)


def verdict_output() -> Output:
    verdict = Verdict(
        event_id="e-1",
        tenant_id="acme",
        conversation_id="c-1",
        classified="prompt",
        unsafe=False,
        threshold=0.5,
    )
    return Output("guard.verdicts.acme", b"acme:c-1", verdict, TP, 17)


def test_classification_follows_kafka_retriable_flag() -> None:
    assert is_retriable(NotLeaderForPartitionError())
    assert not is_retriable(MessageSizeTooLargeError())
    assert not is_retriable(ValueError("not a Kafka error"))


def test_retries_are_bounded_and_wait_their_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(retries.time, "monotonic", lambda: now[0])
    queue, output = Retries(), verdict_output()
    for attempt in range(MAX_ATTEMPTS):
        assert queue.schedule(output)
        assert queue.due() == []  # not before its backoff
        now[0] += retries.BACKOFF_S[attempt]
        assert queue.due() == [output]
    assert not queue.schedule(output)  # exhausted: the caller dead-letters it
    queue.done(output)
    assert queue.schedule(output)  # a later, separate failure starts counting again


def test_refused_verdict_becomes_a_produce_failed_letter_naming_its_record() -> None:
    letter = produce_failed_letter(verdict_output(), MessageSizeTooLargeError("too big"), "guard.dlq")
    assert letter.topic == "guard.dlq" and (letter.source, letter.source_offset) == (TP, 17)
    body = letter.body
    assert isinstance(body, DeadLetter) and body.error_code is DeadLetterCode.PRODUCE_FAILED
    assert (body.source_topic, body.source_partition, body.source_offset) == ("guard.conversations", 3, 17)
    assert (
        body.event_id == "e-1"
        and "guard.verdicts.acme" in body.reason
        and "MessageSizeTooLarge" in body.reason
    )


def test_refused_dead_letter_stops_the_worker() -> None:
    letter = produce_failed_letter(verdict_output(), MessageSizeTooLargeError(), "guard.dlq")
    with pytest.raises(OutputUnwritable, match="could not be produced"):
        produce_failed_letter(letter, MessageSizeTooLargeError(), "guard.dlq")


def test_a_suspect_refusal_gets_one_second_chance_per_record() -> None:
    queue, output = Retries(), verdict_output()
    other = Output(output.topic, output.key, output.body, TP, 18)
    assert queue.second_chance(output)
    assert not queue.second_chance(output)  # refused again: now it is believed
    assert queue.second_chance(other)  # each record has its own
    queue.done(output)
    assert queue.second_chance(output)  # delivered since: a later refusal is doubted afresh


def test_a_failed_producers_error_is_believed_for_a_verdict_only_the_second_time() -> None:
    queue, output = Retries(), verdict_output()
    refused = MessageSizeTooLargeError()
    assert not queue.permanent(output, NotLeaderForPartitionError(), suspect=False)  # retriable
    assert queue.permanent(output, refused, suspect=False)  # the broker's own answer for this output
    assert not queue.permanent(output, refused, suspect=True)  # maybe another send's refusal
    assert queue.permanent(output, refused, suspect=True)
    letter = produce_failed_letter(output, refused, "guard.dlq")
    assert not any(queue.permanent(letter, refused, suspect=True) for _ in range(3))  # bounded elsewhere
    assert queue.permanent(letter, refused, suspect=False)
