"""Record batches the consumer cannot decode: found, named and dead-lettered instead of crash-looping.

kafka-python decodes a fetched batch (decompression, CRC checks) inside ``poll``; a batch it cannot decode
(a codec this process lacks, corruption) raises there, without saying which partition, and the consumer's
position stays in front of it, so every later ``poll`` raises again. ``failed_batch`` finds the batch
from the exception's traceback: the fetcher's ``_unpack_records`` frame holds the partition and the batch
(its first and last offsets come from the batch header, which needs no decoding). The loop then answers
the whole range with one ``undecodable_batch`` dead letter and seeks past it — or, with
``GUARDSTREAM_UNDECODABLE_BATCH=stop``, stops with ``UndecodableBatchError``. An exception without such a
frame is not a decoding failure and is re-raised unchanged.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from kafka.structs import TopicPartition

from schemas.verdicts import DeadLetter, DeadLetterCode

UNPACK_FRAME = "_unpack_records"
"""kafka-python's generator that decodes one fetched partition's batches (``Fetcher.PartitionRecords``)."""


@dataclass(frozen=True)
class BatchFailure:
    tp: TopicPartition
    first: int
    last: int
    error: BaseException

    def describe(self) -> str:
        return (
            f"record batch {self.tp.topic}[{self.tp.partition}] offsets {self.first}..{self.last} cannot be "
            f"decoded: {type(self.error).__name__}: {str(self.error)[:300]}"
        )

    def dead_letter(self) -> DeadLetter:
        return DeadLetter(
            error_code=DeadLetterCode.UNDECODABLE_BATCH,
            reason=self.describe(),
            raw_payload="",
            payload_encoding="utf-8",
            payload_truncated=True,  # the batch stays on the input topic until retention removes it
            source_topic=self.tp.topic,
            source_partition=self.tp.partition,
            source_offset=self.first,
            source_last_offset=self.last,
        )


def failed_batch(exc: BaseException) -> BatchFailure | None:
    """The batch whose decoding raised ``exc``, or None if ``exc`` did not come from decoding a batch."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_name != UNPACK_FRAME:
            continue
        part, batch = frame.f_locals.get("self"), frame.f_locals.get("batch")
        tp = getattr(part, "topic_partition", None)
        first = getattr(batch, "base_offset", None)
        if not isinstance(tp, TopicPartition) or not isinstance(first, int):
            return None
        last = getattr(batch, "last_offset", None)
        return BatchFailure(tp, first, last if isinstance(last, int) and last >= first else first, exc)
    return None
