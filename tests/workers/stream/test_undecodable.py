"""Finding the batch a decoding error came from, from the traceback of kafka-python's batch decoder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from kafka.errors import UnsupportedCodecError
from kafka.structs import TopicPartition

from schemas.verdicts import DeadLetterCode
from workers.stream.undecodable import failed_batch

TP = TopicPartition("guard.conversations", 1)


@dataclass
class FakeBatch:
    base_offset: int
    last_offset: int


class FakePartitionRecords:
    """Stands in for kafka-python's ``Fetcher.PartitionRecords``: same method name and locals."""

    topic_partition = TP

    def _unpack_records(self) -> Iterator[int]:
        batch = FakeBatch(40, 49)
        if batch.base_offset:
            raise UnsupportedCodecError("Libraries for snappy compression codec not found")
        yield 0


def raised(call: object) -> BaseException:
    try:
        list(call())  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_decoding_error_names_partition_and_offset_range() -> None:
    failure = failed_batch(raised(FakePartitionRecords()._unpack_records))
    assert failure is not None and (failure.tp, failure.first, failure.last) == (TP, 40, 49)
    letter = failure.dead_letter()
    assert letter.error_code is DeadLetterCode.UNDECODABLE_BATCH
    assert (letter.source_partition, letter.source_offset, letter.source_last_offset) == (1, 40, 49)
    assert "guard.conversations[1] offsets 40..49" in letter.reason and "snappy" in letter.reason


def test_other_errors_are_not_mistaken_for_a_bad_batch() -> None:
    def unrelated() -> Iterator[int]:
        raise RuntimeError("rebalance callback failed")
        yield 0

    assert failed_batch(raised(unrelated)) is None
