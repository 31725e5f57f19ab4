"""Rendezvous hashing of conversations over replicas: stable, spread, minimal movement, saturation."""

from __future__ import annotations

from collections import Counter

from workers.serving.routing import owner, partition

KEYS = [f"acme:c{i}" for i in range(400)]


def test_owner_is_stable_and_spreads_keys() -> None:
    replicas = [0, 1, 2, 3]
    owners = [owner(k, replicas) for k in KEYS]
    assert owners == [owner(k, list(reversed(replicas))) for k in KEYS]  # order of replicas is irrelevant
    assert all(60 <= n <= 140 for n in Counter(owners).values())  # ~100 each


def test_a_replica_leaving_moves_only_its_own_keys() -> None:
    before = {k: owner(k, [0, 1, 2, 3]) for k in KEYS}
    after = {k: owner(k, [0, 1, 3]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == 2 for k in moved)


def test_partition_groups_by_owner_and_sends_saturated_or_unkeyed_to_the_least_loaded() -> None:
    keys: list[str | None] = ["acme:a", "acme:b", None, "acme:a"]
    groups = dict(partition(keys, live=[0, 1], load=[0, 0], max_outstanding=2))
    assert sorted(i for indices in groups.values() for i in indices) == [0, 1, 2, 3]
    home = owner("acme:a", [0, 1])
    assert {0, 3} <= set(groups[home]) and 2 in groups[None]
    saturated = [2 if r == home else 0 for r in (0, 1)]
    groups = dict(partition(keys, live=[0, 1], load=saturated, max_outstanding=2))
    assert {0, 3} <= set(groups[None])
    assert dict(partition(keys, live=[], load=[0, 0], max_outstanding=2)) == {None: [0, 1, 2, 3]}
