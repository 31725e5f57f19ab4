"""Attention keys/values of prompt prefixes, computed once and reused by every event that shares them.

Everything before the conversation depends only on (prompt format, taxonomy, side), i.e. on one tenant
policy version and side; with the Llama Guard 3 taxonomy and a short message it is most of the prompt.
Entries are keyed by the model and a hash of the prefix *text*, so a policy change (new taxonomy text)
gets a new entry and the old one ages out. The cache is bounded by bytes (``Settings.prefix_cache_mb``),
least recently used first; an entry larger than the bound is computed but not kept.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer (keys, values), each ``[1, kv_heads, prefix_len, head_dim]``."""


@dataclass(frozen=True)
class PrefixEntry:
    """A prefix's token ids and their attention keys/values (never modified in place)."""

    ids: tuple[int, ...]
    layers: KV

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def prefix_key(model_name: str, prefix_text: str) -> str:
    """Cache key of one rendered prefix under one model."""
    return hashlib.sha256(f"{model_name}\x00{prefix_text}".encode()).hexdigest()


class PrefixCache:
    """A thread-safe LRU of ``PrefixEntry`` bounded by total tensor bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> PrefixEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return entry

    def put(self, key: str, entry: PrefixEntry) -> None:
        size = entry.nbytes
        with self._lock:
            if size > self.max_bytes:
                return
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            while self._entries and self._bytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
            self._entries[key] = entry
            self._bytes += size

    def get_or_compute(self, key: str, compute: Callable[[], PrefixEntry]) -> PrefixEntry:
        """The cached entry for ``key``, computing (and caching, if it fits) on a miss."""
        entry = self.get(key)
        if entry is None:
            with self._lock:
                self.misses += 1
            entry = compute()
            self.put(key, entry)
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
