"""The KV tree: longest-prefix matches on token ids, splits, byte bound, LRU over nodes, separate roots."""

from __future__ import annotations

import torch

from workers.guard.kv_tree import KV, KVTree, root_key

BYTES_PER_TOKEN = 8  # one layer, keys + values, one fp32 each


def _kv(ids: list[int]) -> KV:
    """Keys/values whose entries are the token ids themselves, so a slice shows where it came from."""
    keys = torch.tensor(ids, dtype=torch.float32).view(1, 1, len(ids), 1)
    return ((keys, -keys),)


def _stored(tree: KVTree, key: str, ids: list[int]) -> list[int]:
    layers = tree.match(key, ids).layers()
    return [] if layers is None else [int(x) for x in layers[0][0].flatten().tolist()]


def test_longest_prefix_match_returns_its_keys_and_values() -> None:
    tree = KVTree(max_bytes=10_000)
    tree.insert("k", [1, 2, 3, 4], 0, _kv([1, 2, 3, 4]))
    assert _stored(tree, "k", [1, 2, 3, 4, 5, 6]) == [1, 2, 3, 4]
    assert _stored(tree, "k", [1, 2, 9]) == [1, 2]  # partial match inside one node
    assert _stored(tree, "k", [7]) == []
    assert tree.match("k", [1, 2, 3, 4, 5], limit=3).length == 3


def test_a_branch_splits_the_node_and_keeps_both_continuations() -> None:
    tree = KVTree(max_bytes=10_000)
    tree.insert("k", [1, 2, 3, 4], 0, _kv([1, 2, 3, 4]))
    match = tree.match("k", [1, 2, 8, 9])
    tree.insert("k", [1, 2, 8, 9], match.length, _kv([8, 9]))
    assert _stored(tree, "k", [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert _stored(tree, "k", [1, 2, 8, 9]) == [1, 2, 8, 9]
    assert len(tree) == 3 and tree.nbytes == 6 * BYTES_PER_TOKEN


def test_insert_from_a_later_start_only_adds_what_is_new() -> None:
    tree = KVTree(max_bytes=10_000)
    tree.insert("k", [1, 2], 0, _kv([1, 2]))
    tree.insert("k", [1, 2, 3, 4], 1, _kv([2, 3, 4]))  # computed from position 1; 2 was already cached
    assert _stored(tree, "k", [1, 2, 3, 4]) == [1, 2, 3, 4] and tree.nbytes == 4 * BYTES_PER_TOKEN
    tree.insert("k", [5, 6, 7], 2, _kv([7]))  # its start isn't cached (e.g. evicted): nothing stored
    assert _stored(tree, "k", [5, 6, 7]) == []


def test_least_recently_used_leaf_is_evicted_first_and_parents_stay() -> None:
    tree = KVTree(max_bytes=6 * BYTES_PER_TOKEN)
    tree.insert("k", [1, 2, 3], 0, _kv([1, 2, 3]))
    tree.insert("k", [1, 2, 4], 2, _kv([4]))
    tree.insert("k", [1, 2, 5], 2, _kv([5]))
    tree.match("k", [1, 2, 3])  # branch 3 is now more recent than branch 4
    tree.insert("k", [1, 2, 6, 7], 2, _kv([6, 7]))  # 7 tokens > 6: the oldest leaf (4) goes
    assert tree.match("k", [1, 2, 4]).length == 2
    assert [tree.match("k", [1, 2, x]).length for x in (3, 5)] == [3, 3]
    assert tree.nbytes <= tree.max_bytes and tree.evicted_nodes == 1


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    tree = KVTree(max_bytes=2 * BYTES_PER_TOKEN)
    tree.insert("k", [1, 2, 3], 0, _kv([1, 2, 3]))
    assert (len(tree), tree.nbytes, tree.match("k", [1, 2, 3]).length) == (0, 0, 0)


def test_roots_are_separate_per_model_scope_head_and_side() -> None:
    keys = {
        root_key(model, scope, head, side)
        for model in ("m1", "m2")
        for scope in ("acme", "kidsplay")
        for head in ("h1", "h2")
        for side in ("prompt", "response")
    }
    assert len(keys) == 16
    tree = KVTree(max_bytes=10_000)
    tree.insert(root_key("m", "acme", "h", "prompt"), [1, 2, 3], 0, _kv([1, 2, 3]))
    assert tree.match(root_key("m", "kidsplay", "h", "prompt"), [1, 2, 3]).length == 0


def test_hit_ratio_counts_tokens() -> None:
    tree = KVTree(max_bytes=10_000)
    tree.insert("k", [1, 2, 3], 0, _kv([1, 2, 3]))
    tree.match("k", [1, 2, 3, 4])
    tree.match("k", [9, 9, 9, 9])
    assert (tree.hit_tokens, tree.lookup_tokens, tree.hit_ratio) == (3, 8, 3 / 8)
