"""Which replica scores a conversation: rendezvous hashing of ``tenant:conversation`` over live replicas.

A replica's KV tree holds the conversations it has scored, so the next event of a conversation is cheap
only on the replica that scored the last one. Rendezvous (highest-random-weight) hashing is consistent
hashing without a ring: each key goes to the replica with the highest hash of (key, replica), so every
pool copy (one per stream worker, in other processes) picks the same owner without talking to the others,
and when a replica leaves only its own conversations move. The hash is blake2b, not ``hash()``, which is
salted per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def owner(key: str, replicas: Sequence[int]) -> int:
    """The replica among ``replicas`` (indices, at least one) that owns ``key``."""
    return max(replicas, key=lambda r: hashlib.blake2b(f"{key}\x00{r}".encode(), digest_size=8).digest())


def partition(
    keys: Sequence[str | None], live: Sequence[int], load: Sequence[int], max_outstanding: int
) -> list[tuple[int | None, list[int]]]:
    """Indices of ``keys`` grouped by the replica they should go to (None: any, the least loaded).

    A key goes to its owner among ``live`` unless that owner already has ``max_outstanding`` calls from
    this copy (saturated): then to whichever replica is least loaded, a cache miss rather than a queue.
    """
    groups: dict[int | None, list[int]] = {}
    for i, key in enumerate(keys):
        target = None
        if key is not None and live:
            first = owner(key, live)
            target = first if load[first] < max_outstanding else None
        groups.setdefault(target, []).append(i)
    return list(groups.items())
