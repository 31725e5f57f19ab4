"""Cheap LoRA training on a CPU: frozen lower layers run once, the shared taxonomy prefix once per step.

Every training prompt under the default taxonomy starts with the same ~270-token prefix (task line and
categories) — the same prefix the scorer caches — and the suffix (conversation, instructions, answer) is
only ~100 tokens. With LoRA on the top ``K`` layers only, the lower ``N-K`` layers never change, so:

1. the prefix and each example's suffix go through the lower layers **once** (``no_grad``), and the hidden
   states entering layer ``N-K`` are kept (``cache_lower``);
2. each optimizer step runs the top layers on the prefix **once per side** (with gradient: the prefix's
   keys/values depend on the LoRA weights), and the step's suffixes as one right-padded batch attending to
   those keys/values (``step_loss``). The logits are taken at the answer positions only.

The arithmetic is the full model's: positions are ``prefix_len + t`` as in the scorer's prefix-cached
forward, and each suffix token attends to the whole prefix and to the earlier real tokens of its own row.
``tests/pipelines/finetune/test_cached.py`` pins that the verdict logits equal a plain full-prompt forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workers.guard.tokens import GuardTokens


@dataclass(frozen=True)
class SplitExample:
    """One example's ids split at the scorer's cached-prefix boundary."""

    prefix: tuple[int, ...]
    suffix: list[int]
    """Input ids after the prefix: the rest of the prompt, then the answer without its last token."""
    target: list[int]
    """Answer ids; the loss reads the last ``len(target)`` positions of ``suffix``."""
    side: str
    weight: float = 1.0


def split_example(
    prompt: Sequence[int], target: Sequence[int], prefix_text: str, tokens: GuardTokens, side: str
) -> SplitExample | None:
    """Split like ``GuardScorer._split_ids`` (prefix text without trailing whitespace, minus its last
    token); None when the prompt's ids don't start with those (the scorer would not cache it either)."""
    prefix = tuple(tokens.encode_prompt(prefix_text.rstrip())[:-1])
    if not prefix or tuple(prompt[: len(prefix)]) != prefix:
        return None
    full = [*prompt, *target]
    return SplitExample(prefix, full[len(prefix) : -1], list(target), side)


class _KV:
    """The minimal cache interface a decoder layer calls: prepend the prefix's keys/values, keep new ones."""

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None, rows: int) -> None:
        self.prefix = prefix
        self.rows = rows
        self.new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.new[layer_idx] = (keys, values)
        if self.prefix is None:
            return keys, values
        pk, pv = self.prefix[layer_idx]
        return (
            torch.cat([pk.expand(self.rows, -1, -1, -1), keys], dim=2),
            torch.cat([pv.expand(self.rows, -1, -1, -1), values], dim=2),
        )


def decoder_of(model: Any) -> Any:
    """The ``LlamaModel`` inside a (peft-wrapped) causal LM: embeddings, layers, rotary, final norm."""
    return model.get_decoder()


def run_prefix(model: Any, layers: range, hidden: torch.Tensor) -> tuple[torch.Tensor, dict[int, Any]]:
    """``hidden`` ``[1, P, H]`` through ``layers`` (plain causal); output and each layer's keys/values."""
    dec = decoder_of(model)
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
    rotary = dec.rotary_emb(hidden, position_ids=positions)
    kv = _KV(None, 1)
    for i in layers:
        hidden = dec.layers[i](hidden, position_embeddings=rotary, position_ids=positions, cache=kv)
    return hidden, kv.new


def run_suffixes(
    model: Any, layers: range, hidden: torch.Tensor, lengths: torch.Tensor, prefix_kv: dict[int, Any]
) -> torch.Tensor:
    """Right-padded suffix states ``[B, S, H]`` through ``layers`` on top of the prefix's keys/values."""
    dec = decoder_of(model)
    rows, width = hidden.shape[:2]
    prefix_len = next(iter(prefix_kv.values()))[0].shape[2]
    positions = (prefix_len + torch.arange(width, device=hidden.device))[None, :].expand(rows, width)
    rotary = dec.rotary_emb(hidden, position_ids=positions)
    t = torch.arange(width, device=hidden.device)
    own = (t[None, :] <= t[:, None])[None] & (t[None, None, :] < lengths[:, None, None])
    mask = torch.cat([torch.ones(rows, width, prefix_len, dtype=torch.bool, device=hidden.device), own], 2)
    kv = _KV(prefix_kv, rows)
    for i in layers:
        hidden = dec.layers[i](
            hidden, attention_mask=mask[:, None], position_embeddings=rotary, position_ids=positions, cache=kv
        )
    return hidden


def embed(model: Any, ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded embeddings ``[B, S, H]`` and the real lengths."""
    width = max(len(x) for x in ids)
    tensor = torch.full((len(ids), width), pad_id, dtype=torch.long)
    for i, row in enumerate(ids):
        tensor[i, : len(row)] = torch.tensor(list(row))
    return decoder_of(model).embed_tokens(tensor), torch.tensor([len(x) for x in ids])


def answer_logits(model: Any, hidden: torch.Tensor, lengths: torch.Tensor, counts: Sequence[int]) -> Any:
    """Final norm and LM head at each row's last ``counts[i]`` real positions, concatenated."""
    dec = decoder_of(model)
    picks = [hidden[i, int(lengths[i]) - n : int(lengths[i])] for i, n in enumerate(counts)]
    return model.get_output_embeddings()(dec.norm(torch.cat(picks))).float()
