"""Per-partition ledger of in-flight records: in-order release and at-least-once commit positions.

Records of one partition finish scoring out of order (different models, batches, retries), but

- their outputs must reach the verdict topic in input order, so per-conversation order survives (same key →
  same input partition → released in offset order → same output partition, in order), and
- offset ``N + 1`` may be committed only once every record ``<= N`` of that partition has had its output
  acknowledged by the broker; committing further would lose a verdict if the worker died now.

Each tracked record moves ``pending → done(outcome) → released → acked``. The ledger holds no Kafka types:
a partition is any hashable ``(topic, partition)`` tuple (kafka-python's ``TopicPartition`` is one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
TP = TypeVar("TP", bound=Hashable)


@dataclass
class _Slot(Generic[T]):
    offset: int
    outcome: T | None = None
    done: bool = False
    released: bool = False
    acked: bool = False


@dataclass
class _Partition(Generic[T]):
    slots: deque[_Slot[T]] = field(default_factory=deque)
    by_offset: dict[int, _Slot[T]] = field(default_factory=dict)
    next_release: int = 0  # index into ``slots`` of the first unreleased slot
    committed: int | None = None  # last position committed (next offset to read)
    position: int | None = None  # next offset to commit once everything before it is acked


class OffsetLedger(Generic[TP, T]):
    """Tracks records from poll to broker ack; one instance per consumer, used from one thread."""

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition[T]] = {}

    def add(self, tp: TP, offset: int) -> None:
        """Start tracking a polled record; offsets of one partition must be added in increasing order."""
        part = self._parts.setdefault(tp, _Partition())
        if part.slots and offset <= part.slots[-1].offset:
            raise ValueError(f"offset {offset} of {tp} added out of order (last {part.slots[-1].offset})")
        slot: _Slot[T] = _Slot(offset)
        part.slots.append(slot)
        part.by_offset[offset] = slot

    def complete(self, tp: TP, offset: int, outcome: T) -> None:
        """Record the output (verdict or dead letter) of a record; ignored for revoked partitions."""
        slot = self._slot(tp, offset)
        if slot is not None and not slot.done:
            slot.outcome, slot.done = outcome, True

    def releasable(self) -> list[tuple[TP, int, T]]:
        """Outputs ready to produce: per partition, the done records after the last released one, up to the
        first still pending. Marks them released; produce them in the returned order."""
        out: list[tuple[TP, int, T]] = []
        for tp, part in self._parts.items():
            while part.next_release < len(part.slots):
                slot = part.slots[part.next_release]
                if not slot.done:
                    break
                slot.released = True
                part.next_release += 1
                out.append((tp, slot.offset, slot.outcome))  # type: ignore[arg-type]
        return out

    def ack(self, tp: TP, offset: int) -> None:
        """The broker acknowledged the output of this record; advance the commit position if contiguous."""
        slot = self._slot(tp, offset)
        if slot is None or not slot.released:
            return
        slot.acked = True
        part = self._parts[tp]
        while part.slots and part.slots[0].acked:
            head = part.slots.popleft()
            del part.by_offset[head.offset]
            part.next_release -= 1
            part.position = head.offset + 1

    def released_positions(self) -> dict[TP, int]:
        """Commit positions if every released output were acked (for Kafka transactions, where the commit
        of the transaction is the ack)."""
        out: dict[TP, int] = {}
        for tp, part in self._parts.items():
            if part.next_release > 0:
                out[tp] = part.slots[part.next_release - 1].offset + 1
            elif part.position is not None and part.position != part.committed:
                out[tp] = part.position
        return out

    def ack_released(self) -> None:
        """Mark every released output acked (after a Kafka transaction committed)."""
        for tp, part in list(self._parts.items()):
            for slot in list(part.slots)[: part.next_release]:
                self.ack(tp, slot.offset)

    def committable(self) -> dict[TP, int]:
        """Partitions whose commit position moved since the last ``mark_committed``."""
        return {
            tp: part.position
            for tp, part in self._parts.items()
            if part.position is not None and part.position != part.committed
        }

    def mark_committed(self, positions: dict[TP, int]) -> None:
        for tp, position in positions.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = position

    def revoke(self, tps: Iterable[TP]) -> None:
        """Forget partitions this consumer no longer owns; their late outputs are ignored and the new owner
        re-reads them from the committed position (at-least-once)."""
        for tp in tps:
            self._parts.pop(tp, None)

    def first_unacked(self, tp: TP) -> int | None:
        """Offset of the partition's earliest record whose output is not acknowledged (None: all are)."""
        part = self._parts.get(tp)
        return part.slots[0].offset if part is not None and part.slots else None

    def in_flight(self, tp: TP | None = None) -> int:
        """Records tracked but not yet acked, for one partition or all."""
        parts = [self._parts.get(tp)] if tp is not None else list(self._parts.values())
        return sum(len(p.slots) for p in parts if p is not None)

    def unreleased(self) -> int:
        """Records polled whose outputs are not produced yet (the backpressure measure)."""
        return sum(len(p.slots) - p.next_release for p in self._parts.values())

    def partitions(self) -> list[TP]:
        return list(self._parts)

    def _slot(self, tp: TP, offset: int) -> _Slot[T] | None:
        part = self._parts.get(tp)
        return part.by_offset.get(offset) if part is not None else None
