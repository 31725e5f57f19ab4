"""The tensor mechanics of scoring: one forward per event on top of its cached past, then greedy codes.

A batch is a set of token suffixes, each continuing its own cached past (keys/values from ``KVTree``).
Pasts are right-padded to a common width and suffixes too, so each real token only ever attends to its
row's past and to earlier real tokens of its own row; pads are masked for everything that follows.
Positions are explicit (``past_len + t``), so RoPE sees the same positions as a full-prompt forward, and
the causal mask comes from the cache slot order, which matches. Only each row's last real position goes
through ``lm_head``: the vocabulary projection is ~25% of a small model's compute per position and we need
one per row.

Greedy decoding continues from the same cache: the pads stay masked, each row's new token gets position
``past_len + len(row)``, so the continuation equals ``generate`` on that row's full prompt. The states of
several batches (other prefixes, other lengths) are merged into one, right-padded with masked slots, so a
call decodes in one loop: each step is a pass over every weight however few rows it carries.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from workers.guard.kv_tree import KV, Match


def _decoder(model: Any) -> Any:
    """The transformer body (hidden states out, no vocabulary projection)."""
    return model.get_decoder()


@functools.cache
def _cache_argument(decoder_class: type[Any]) -> str:
    """The name the decoder takes its cache under: transformers 5.2x renamed ``past_key_values`` to
    ``cache`` and warns on the old name (a FutureWarning in every stream's output); 4.x knows only it."""
    parameters = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _run_decoder(model: Any, cache: DynamicCache, **inputs: Any) -> Any:
    decoder = _decoder(model)
    name = _cache_argument(type(decoder))  # type: ignore[arg-type]  # a class is hashable
    return decoder(**inputs, **{name: cache}, use_cache=True)


def compute_prefix(model: Any, ids: Sequence[int], device: torch.device) -> KV:
    """Run ``ids`` alone and keep their keys/values, detached from the cache object that produced them."""
    cache = DynamicCache(config=model.config)
    _run_decoder(model, cache, input_ids=torch.tensor([list(ids)], device=device))
    return tuple((layer.keys, layer.values) for layer in cache.layers)  # type: ignore[union-attr, misc]


@dataclass(frozen=True)
class Past:
    """Each row's cached keys/values, right-padded to a common width with masked slots."""

    layers: KV
    """Per layer ``[rows or 1, kv_heads, width, head_dim]`` (1: one past shared by every row, expanded)."""
    lengths: list[int]
    """Real cached tokens per row."""


def stack_pasts(matches: Sequence[Match], device: torch.device) -> Past | None:
    """One ``Past`` for a bucket's rows; a past all rows share is expanded, not copied (the common case of
    a cold cache: every row continues the same policy head)."""
    if all(m.length == 0 for m in matches):
        return None
    lengths = [m.length for m in matches]
    if all(m.path == matches[0].path for m in matches):
        shared = matches[0].layers()
        assert shared is not None
        return Past(shared, lengths)
    width = max(lengths)
    template = next(m for m in matches if m.length).segments[0]
    layers = []
    for i, (k0, v0) in enumerate(template):
        keys = k0.new_zeros(len(matches), k0.shape[1], width, k0.shape[3])
        values = v0.new_zeros(len(matches), v0.shape[1], width, v0.shape[3])
        for row, match in enumerate(matches):
            at = 0
            for segment in match.segments:
                n = segment[i][0].shape[2]
                keys[row, :, at : at + n] = segment[i][0][0]
                values[row, :, at : at + n] = segment[i][1][0]
                at += n
        layers.append((keys.to(device), values.to(device)))
    return Past(tuple(layers), lengths)


@dataclass
class BatchState:
    """What a continuation needs after the scoring forward."""

    cache: DynamicCache
    mask: torch.Tensor
    """``[rows, cache_len]``: 1 for each row's prefix and real tokens, 0 for padding slots."""
    next_pos: torch.Tensor
    """``[rows]``: position id of each row's next token (cached length + real suffix length)."""
    new_at: int = 0
    """Cache slot of each row's first new (suffix) token."""

    def new_layers(self, row: int, count: int) -> KV:
        """Keys/values of row ``row``'s first ``count`` suffix tokens (views; the tree copies them)."""
        stop = self.new_at + count
        return tuple(
            (k[row : row + 1, :, self.new_at : stop], v[row : row + 1, :, self.new_at : stop])
            for k, v in _layers(self.cache)
        )

    def select(self, rows: torch.Tensor) -> BatchState:
        self.cache.batch_select_indices(rows)
        return BatchState(self.cache, self.mask[rows], self.next_pos[rows], self.new_at)


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[misc, union-attr]


def merge_states(model: Any, states: Sequence[BatchState]) -> BatchState:
    """One state holding the rows of several, so their greedy decoding runs as one batch.

    Caches of different lengths are right-padded with masked slots: a row's next token still sees exactly
    its own prefix and tokens, at its own positions.
    """
    if len(states) == 1:
        return states[0]
    width = max(s.mask.shape[1] for s in states)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[2]))

    per_state = [_layers(s.cache) for s in states]
    merged = [
        (torch.cat([pad(p[i][0]) for p in per_state]), torch.cat([pad(p[i][1]) for p in per_state]))
        for i in range(len(per_state[0]))
    ]
    mask = torch.cat([torch.nn.functional.pad(s.mask, (0, width - s.mask.shape[1])) for s in states])
    return BatchState(
        DynamicCache(ddp_cache_data=merged, config=model.config),
        mask,
        torch.cat([s.next_pos for s in states]),
    )


def forward_suffixes(
    model: Any,
    past: Past | None,
    suffixes: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, BatchState]:
    """Hidden state at each row's last real token, ``[rows, hidden]``, and the state to continue from.

    Row ``i`` continues its own cached ``past`` (None: no past, each suffix is a whole prompt). The new
    tokens sit in cache slots ``past_width + t`` for every row, at positions ``past_len_i + t``.
    """
    rows, width = len(suffixes), max(len(s) for s in suffixes)
    past_width = past.layers[0][0].shape[2] if past is not None else 0
    past_lengths = torch.tensor(past.lengths if past is not None else [0] * rows, device=device)
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
    for i, suffix in enumerate(suffixes):
        input_ids[i, : len(suffix)] = torch.tensor(list(suffix), device=device)
    real = torch.arange(width, device=device)[None, :] < lengths[:, None]
    cached = torch.arange(past_width, device=device)[None, :] < past_lengths[:, None]
    mask = torch.cat([cached.long(), real.long()], dim=1)
    positions = past_lengths[:, None] + torch.arange(width, device=device)[None, :]
    if past is None:
        cache = DynamicCache(config=model.config)
    else:
        expanded = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in past.layers]
        cache = DynamicCache(ddp_cache_data=expanded, config=model.config)
    out = _run_decoder(model, cache, input_ids=input_ids, attention_mask=mask, position_ids=positions)
    last = out.last_hidden_state[torch.arange(rows, device=device), lengths - 1]
    return last, BatchState(cache, mask, past_lengths + lengths, past_width)


def next_token_probs(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Softmax over the full vocabulary, in float32, for the given hidden states ``[rows, hidden]``."""
    logits = model.get_output_embeddings()(hidden).float()
    return torch.softmax(logits, dim=-1)


def greedy_continue(
    model: Any,
    state: BatchState,
    first_ids: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Sequence[int],
) -> list[list[int]]:
    """Feed ``first_ids`` (one per row) then decode greedily; per row the ids before its first stop id."""
    rows = first_ids.shape[0]
    device = first_ids.device
    stops = torch.tensor(list(stop_ids), device=device)
    current, mask, pos = first_ids, state.mask, state.next_pos
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    generated: list[list[int]] = [[] for _ in range(rows)]
    for _ in range(max_new_tokens):
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=device)], dim=1)
        out = _run_decoder(
            model, state.cache, input_ids=current[:, None], attention_mask=mask, position_ids=pos[:, None]
        )
        logits = model.get_output_embeddings()(out.last_hidden_state[:, -1])
        current = logits.argmax(dim=-1)
        done_now = torch.isin(current, stops)
        for i, token in enumerate(current.tolist()):
            if not done[i] and not done_now[i]:
                generated[i].append(token)
        done |= done_now
        pos = pos + 1
        if bool(done.all()):
            break
    return generated
