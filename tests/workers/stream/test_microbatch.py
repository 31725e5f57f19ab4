"""Micro-batches flush at batch_size or after max wait, per model pool."""

from __future__ import annotations

from workers.stream.microbatch import MicroBatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_full_batch_flushes_on_add() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(3, 1.0, clock=Clock())
    assert batcher.add("m", 1) is None and batcher.add("m", 2) is None
    assert batcher.add("m", 3) == [1, 2, 3] and len(batcher) == 0


def test_batches_are_per_model_and_due_after_wait() -> None:
    clock = Clock()
    batcher: MicroBatcher[int] = MicroBatcher(10, 0.05, clock=clock)
    batcher.add("a", 1)
    clock.now = 0.03
    batcher.add("b", 2)
    assert batcher.due() == [] and batcher.next_due_in() == 0.05 - 0.03
    clock.now = 0.06
    assert batcher.due() == [("a", [1])]
    assert batcher.due(force=True) == [("b", [2])] and batcher.next_due_in() is None


def test_discard_drops_items() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(10, 1.0, clock=Clock())
    for i in range(4):
        batcher.add("a", i)
    assert batcher.discard(lambda i: i % 2 == 0) == 2
    assert batcher.due(force=True) == [("a", [0, 2])]
