"""The prefix KV cache: LRU by bytes, oversize entries computed but not kept."""

from __future__ import annotations

import torch

from workers.guard.prefix_cache import PrefixCache, PrefixEntry, prefix_key


def _entry(floats: int) -> PrefixEntry:
    """One layer whose keys and values hold ``floats`` fp32 numbers each (8 * floats bytes in all)."""
    tensor = torch.zeros(1, 1, floats, 1)
    return PrefixEntry(ids=(1, 2), layers=((tensor, tensor.clone()),))


def test_entry_size_counts_keys_and_values() -> None:
    assert _entry(10).nbytes == 80


def test_least_recently_used_is_evicted_first() -> None:
    cache = PrefixCache(max_bytes=250)
    for key in "abc":
        cache.put(key, _entry(10))
    assert cache.get("a") is not None  # a is now most recent; b is oldest
    cache.put("d", _entry(10))
    assert cache.get("b") is None
    assert {k for k in "acd" if cache.get(k) is not None} == set("acd")
    assert cache.nbytes == 240 and len(cache) == 3


def test_oversize_entry_is_computed_but_not_kept() -> None:
    cache = PrefixCache(max_bytes=50)
    calls = []
    for _ in range(2):
        entry = cache.get_or_compute("big", lambda: calls.append(1) or _entry(10))
        assert entry.nbytes == 80
    assert len(calls) == 2 and len(cache) == 0 and cache.misses == 2


def test_hits_skip_the_computation() -> None:
    cache = PrefixCache(max_bytes=1000)
    calls = []
    for _ in range(3):
        cache.get_or_compute("k", lambda: calls.append(1) or _entry(1))
    assert (len(calls), cache.hits, cache.misses) == (1, 2, 1)


def test_keys_separate_models_and_prefixes() -> None:
    keys = {prefix_key(m, p) for m in ("m1", "m2") for p in ("p1", "p2")}
    assert len(keys) == 4
