"""Offset ledger: in-order release per partition, commit only past contiguously acked records."""

from __future__ import annotations

import random

import pytest

from workers.stream.offsets import OffsetLedger

A = ("in", 0)
B = ("in", 1)


def ledger(*offsets: int, tp: tuple[str, int] = A) -> OffsetLedger[tuple[str, int], str]:
    led: OffsetLedger[tuple[str, int], str] = OffsetLedger()
    for offset in offsets:
        led.add(tp, offset)
    return led


def test_release_waits_for_earlier_records() -> None:
    led = ledger(10, 11, 12)
    led.complete(A, 12, "v12")
    led.complete(A, 11, "v11")
    assert led.releasable() == []
    led.complete(A, 10, "v10")
    assert led.releasable() == [(A, 10, "v10"), (A, 11, "v11"), (A, 12, "v12")]
    assert led.releasable() == []


def test_commit_only_past_contiguous_acks() -> None:
    led = ledger(10, 11, 12)
    for offset in (10, 11, 12):
        led.complete(A, offset, "v")
    led.releasable()
    led.ack(A, 12)
    led.ack(A, 11)
    assert led.committable() == {}
    led.ack(A, 10)
    assert led.committable() == {A: 13}
    led.mark_committed({A: 13})
    assert led.committable() == {} and led.in_flight() == 0


def test_ack_before_release_is_ignored() -> None:
    led = ledger(1)
    led.ack(A, 1)
    assert led.committable() == {} and led.in_flight() == 1


def test_partitions_are_independent() -> None:
    led = ledger(5)
    led.add(B, 100)
    led.complete(B, 100, "b")
    assert led.releasable() == [(B, 100, "b")]
    led.ack(B, 100)
    assert led.committable() == {B: 101}
    assert led.in_flight(A) == 1 and led.unreleased() == 1


def test_gaps_in_offsets_commit_after_last_seen() -> None:
    led = ledger(3, 7)
    for offset in (3, 7):
        led.complete(A, offset, "v")
    led.releasable()
    led.ack(A, 7)
    led.ack(A, 3)
    assert led.committable() == {A: 8}


def test_out_of_order_add_rejected() -> None:
    led = ledger(5)
    with pytest.raises(ValueError, match="out of order"):
        led.add(A, 5)


def test_revoked_partition_outputs_are_ignored() -> None:
    led = ledger(1, 2)
    led.revoke([A])
    led.complete(A, 1, "late")
    assert led.releasable() == [] and led.committable() == {} and led.partitions() == []


def test_first_unacked_is_where_a_returning_partition_rereads() -> None:
    led = ledger(10, 11, 12)
    assert led.first_unacked(A) == 10 and led.first_unacked(B) is None
    for offset in (10, 11):
        led.complete(A, offset, "v")
    led.releasable()
    led.ack(A, 10)
    assert led.first_unacked(A) == 11  # 10's verdict is on the broker; 11 and 12 are not
    led.ack(A, 11)
    led.complete(A, 12, "v")
    led.releasable()
    led.ack(A, 12)
    assert led.first_unacked(A) is None


def test_transaction_positions_then_ack_released() -> None:
    led = ledger(1, 2, 3)
    led.complete(A, 1, "a")
    led.complete(A, 2, "b")
    led.releasable()
    assert led.released_positions() == {A: 3}
    led.ack_released()
    assert led.committable() == {A: 3} and led.in_flight() == 1


def test_random_completion_order_never_commits_past_unacked() -> None:
    rng = random.Random(7)
    led = ledger(*range(200))
    order = list(range(200))
    rng.shuffle(order)
    released: list[int] = []
    acked: set[int] = set()
    for offset in order:
        led.complete(A, offset, str(offset))
        released += [o for _, o, _ in led.releasable()]
        assert released == sorted(released)
        for o in rng.sample(released, k=len(released)):
            if o not in acked and rng.random() < 0.5:
                led.ack(A, o)
                acked.add(o)
        position = led.committable().get(A)
        if position is not None:
            assert all(o in acked for o in range(position))
    for o in released:
        led.ack(A, o)
    assert released == list(range(200)) and led.committable() == {A: 200}
