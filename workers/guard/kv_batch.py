"""The tensor mechanics of scoring: one forward per event on top of a shared prefix, then greedy codes.

A batch is a set of token suffixes that all continue the same prefix (whose keys/values are cached). The
suffixes are right-padded, so each real token only ever attends to the prefix and to earlier real tokens
of its own row; pads sit after them and are masked for everything that follows. Positions are explicit
(``prefix_len + t``), so RoPE sees the same positions as a full-prompt forward, and the causal mask comes
from the cache slot order, which matches. Only each row's last real position goes through
``lm_head``: the vocabulary projection is ~25% of a small model's compute per position and we need one per
row.

Greedy decoding continues from the same cache: the pads stay masked, each row's new token gets position
``prefix_len + len(row)``, so the continuation equals ``generate`` on that row's full prompt. The states of
several batches (other prefixes, other lengths) are merged into one, right-padded with masked slots, so a
call decodes in one loop: each step is a pass over every weight however few rows it carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from workers.guard.prefix_cache import PrefixEntry


def _decoder(model: Any) -> Any:
    """The transformer body (hidden states out, no vocabulary projection)."""
    return model.get_decoder()


def compute_prefix(model: Any, ids: Sequence[int], device: torch.device) -> PrefixEntry:
    """Run the prefix once and keep its keys/values, detached from the cache object that produced them."""
    cache = DynamicCache(config=model.config)
    _decoder(model)(input_ids=torch.tensor([list(ids)], device=device), past_key_values=cache, use_cache=True)
    layers = tuple((layer.keys, layer.values) for layer in cache.layers)  # type: ignore[union-attr]
    return PrefixEntry(ids=tuple(ids), layers=layers)  # type: ignore[arg-type]


@dataclass
class BatchState:
    """What a continuation needs after the scoring forward."""

    cache: DynamicCache
    mask: torch.Tensor
    """``[rows, cache_len]``: 1 for each row's prefix and real tokens, 0 for padding slots."""
    next_pos: torch.Tensor
    """``[rows]``: position id of each row's next token (prefix length + real suffix length)."""

    def select(self, rows: torch.Tensor) -> BatchState:
        self.cache.batch_select_indices(rows)
        return BatchState(self.cache, self.mask[rows], self.next_pos[rows])


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
    prefix: PrefixEntry | None,
    suffixes: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, BatchState]:
    """Hidden state at each row's last real token, ``[rows, hidden]``, and the state to continue from.

    Every row continues ``prefix`` (None: no prefix, each suffix is a whole prompt). Its keys/values are
    expanded, not copied, so a bucket pays for the prefix once however many rows it has.
    """
    rows, width = len(suffixes), max(len(s) for s in suffixes)
    prefix_len = len(prefix.ids) if prefix is not None else 0
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
    for i, suffix in enumerate(suffixes):
        input_ids[i, : len(suffix)] = torch.tensor(list(suffix), device=device)
    real = torch.arange(width, device=device)[None, :] < lengths[:, None]
    mask = torch.cat([torch.ones(rows, prefix_len, dtype=torch.long, device=device), real.long()], dim=1)
    positions = (prefix_len + torch.arange(width, device=device))[None, :].expand(rows, width)
    if prefix is None:
        cache = DynamicCache(config=model.config)
    else:
        expanded = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix.layers]
        cache = DynamicCache(ddp_cache_data=expanded, config=model.config)
    out = _decoder(model)(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )
    last = out.last_hidden_state[torch.arange(rows, device=device), lengths - 1]
    return last, BatchState(cache, mask, prefix_len + lengths)


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
        out = _decoder(model)(
            input_ids=current[:, None],
            attention_mask=mask,
            position_ids=pos[:, None],
            past_key_values=state.cache,
            use_cache=True,
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
