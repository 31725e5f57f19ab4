"""Attention keys/values of token prefixes, kept in a radix tree so each request pays only for new tokens.

A guard prompt is ``head + conversation + tail``: the head depends on (format, taxonomy, side), the
conversation grows by a turn (or a streamed chunk) per event, and the tail (instructions, generation cue)
is fixed text that attends to the conversation, so it is recomputed every time. The keys/values of a
token sequence depend only on that sequence, so any cached token prefix of a request's ids is exactly
what a full forward would compute there. The tree is keyed by token ids — never by text — so a BPE
merge that differs at a chunk boundary only costs recomputing from the first id that differs.

Trees are separate per ``root_key`` (model, cache scope, rendered policy head, side): two tenants never
read each other's entries, not even the keys/values of an identical conversation, and a policy change
starts a new tree while the old one ages out.

Memory is bounded by tensor bytes (``Settings.kv_cache_mb``), least recently used *node* first. A lookup
touches its path from the leaf up, so a node is always at least as recent as all of its descendants and
the oldest node is always a leaf: eviction never orphans a subtree. Tensors are never modified in place;
a ``Match`` holds references to what it read, so evicting a node a running batch uses only delays the
freeing of its memory until that batch ends.

Every public method takes the tree's lock, so concurrent callers can't corrupt it; the scorer also runs
one call at a time (the replica runs the model on a single executor thread).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per layer (keys, values), each ``[1, kv_heads, tokens, head_dim]``."""


def root_key(model_name: str, scope: str, head_text: str, side: str) -> str:
    """The tree a request reads and writes: one per model, cache scope (tenant), policy head and side."""
    return hashlib.sha256(f"{model_name}\x00{scope}\x00{side}\x00{head_text}".encode()).hexdigest()


def _nbytes(layers: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


def _slice(layers: KV, start: int, stop: int | None = None) -> KV:
    return tuple((k[:, :, start:stop], v[:, :, start:stop]) for k, v in layers)


def _own(layers: KV) -> KV:
    """A compact copy, so a stored node never keeps a larger tensor (a batch, a split node) alive."""
    return tuple((k.clone(), v.clone()) for k, v in layers)


class _Node:
    __slots__ = ("children", "ids", "layers", "nbytes", "parent", "tick")

    def __init__(self, ids: tuple[int, ...], layers: KV, parent: _Node | None) -> None:
        self.ids = ids
        self.layers = layers
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.nbytes = _nbytes(layers)
        self.tick = 0


@dataclass(frozen=True)
class Match:
    """The cached keys/values of a request's longest cached token prefix (``length`` ids)."""

    length: int
    segments: tuple[KV, ...]
    path: tuple[tuple[int, int], ...]
    """``(id(node), tokens taken)`` per segment: equal paths mean equal keys/values."""

    def layers(self) -> KV | None:
        """Per layer, the segments concatenated (None when nothing matched)."""
        if not self.segments:
            return None
        if len(self.segments) == 1:
            return self.segments[0]
        count = len(self.segments[0])
        return tuple(
            (
                torch.cat([s[i][0] for s in self.segments], dim=2),
                torch.cat([s[i][1] for s in self.segments], dim=2),
            )
            for i in range(count)
        )


NO_MATCH = Match(0, (), ())


class KVTree:
    """Radix trees of token ids → keys/values, one per root key, LRU over nodes, bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._roots: dict[str, _Node] = {}
        self._bytes = 0
        self._nodes = 0
        self._clock = itertools.count(1)
        self._lock = threading.Lock()
        self.peak_bytes = 0
        self.lookup_tokens = 0
        """Tokens of every ``match`` query; with ``hit_tokens``, the token hit ratio."""
        self.hit_tokens = 0
        self.evicted_nodes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        """Nodes holding keys/values."""
        return self._nodes

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0

    def _walk(self, key: str, ids: Sequence[int]) -> tuple[list[tuple[_Node, int]], int]:
        """Nodes on the longest cached prefix of ``ids`` with the tokens taken from each, and its length."""
        node = self._roots.get(key)
        path: list[tuple[_Node, int]] = []
        done = 0
        while node is not None and done < len(ids):
            child = node.children.get(ids[done])
            if child is None:
                break
            seg = child.ids
            take = 1
            limit = min(len(seg), len(ids) - done)
            while take < limit and seg[take] == ids[done + take]:
                take += 1
            path.append((child, take))
            done += take
            node = child if take == len(seg) else None
        return path, done

    def _touch(self, path: list[tuple[_Node, int]]) -> None:
        for node, _ in reversed(path):
            node.tick = next(self._clock)

    def match(self, key: str, ids: Sequence[int], limit: int | None = None) -> Match:
        """The longest cached prefix of ``ids[:limit]`` under ``key`` (marked recently used)."""
        wanted = ids if limit is None else ids[:limit]
        with self._lock:
            path, length = self._walk(key, wanted)
            self.lookup_tokens += len(ids)
            self.hit_tokens += length
            if not path:
                return NO_MATCH
            self._touch(path)
            return Match(
                length,
                tuple(_slice(node.layers, 0, take) for node, take in path),
                tuple((id(node), take) for node, take in path),
            )

    def cached_length(self, key: str, ids: Sequence[int]) -> int:
        """How many leading ids are cached, without counting a lookup or touching anything."""
        with self._lock:
            return self._walk(key, ids)[1]

    def insert(self, key: str, ids: Sequence[int], start: int, layers: KV) -> None:
        """Store ``ids`` whose keys/values from position ``start`` on are ``layers``.

        What is already cached is kept; only the part past the longest cached prefix is added, and only if
        that prefix reaches ``start`` (an eviction since the caller's lookup may have cut it shorter).
        """
        ids = tuple(ids)
        with self._lock:
            path, done = self._walk(key, ids)
            if done < start or done >= len(ids):
                self._touch(path)
                return
            if path and path[-1][1] < len(path[-1][0].ids):
                parent = self._split(*path[-1])
                path[-1] = (parent, len(parent.ids))
            parent = path[-1][0] if path else self._roots.setdefault(key, _Node((), (), None))
            node = _Node(ids[done:], _own(_slice(layers, done - start)), parent)
            parent.children[ids[done]] = node
            self._bytes += node.nbytes
            self._nodes += 1
            path.append((node, len(node.ids)))
            self._touch(path)
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self._evict(keep=node)

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node`` after ``at`` ids into a new parent (the shared part) and itself (the rest)."""
        parent = node.parent
        assert parent is not None
        head = _Node(node.ids[:at], _own(_slice(node.layers, 0, at)), parent)
        head.tick = node.tick
        parent.children[node.ids[0]] = head
        before = node.nbytes
        node.ids, node.layers, node.parent = node.ids[at:], _own(_slice(node.layers, at)), head
        node.nbytes = _nbytes(node.layers)
        head.children[node.ids[0]] = node
        self._bytes += head.nbytes + node.nbytes - before
        self._nodes += 1
        return head

    def _leaves(self) -> list[_Node]:
        out: list[_Node] = []
        stack = [child for root in self._roots.values() for child in root.children.values()]
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            else:
                out.append(node)
        return out

    def _evict(self, keep: _Node) -> None:
        """Drop least recently used leaves until under the bound; ``keep`` (just stored) goes last."""
        while self._bytes > self.max_bytes:
            leaves = sorted(self._leaves(), key=lambda n: (n is keep, n.tick))
            if not leaves:
                return
            for leaf in leaves:
                if self._bytes <= self.max_bytes:
                    return
                self._remove(leaf)

    def _remove(self, node: _Node) -> None:
        parent = node.parent
        assert parent is not None
        del parent.children[node.ids[0]]
        self._bytes -= node.nbytes
        self._nodes -= 1
        self.evicted_nodes += 1
        if parent.parent is None and not parent.children:
            self._roots = {k: r for k, r in self._roots.items() if r is not parent}

    def clear(self) -> None:
        with self._lock:
            self._roots.clear()
            self._bytes = 0
            self._nodes = 0
