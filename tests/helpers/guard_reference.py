"""What the scorer must equal: a plain forward over the full prompt, and greedy ``generate`` on it."""

from __future__ import annotations

import torch

from schemas.taxonomy import Taxonomy
from workers.engine import ScoreRequest
from workers.guard.loading import LoadedGuard


def reference_score(guard: LoadedGuard, request: ScoreRequest, taxonomy: Taxonomy | None = None) -> float:
    """P(unsafe) from one plain forward over the full prompt, softmax at the last position, then the guard's
    calibration (identity unless its marker has one; the shipped default's does): the scorer's score."""
    rendered = guard.prompt_format.render(taxonomy or request.taxonomy, request.messages, request.side)
    ids = guard.tokens.encode_prompt(rendered.text) + list(guard.tokens.verdict_prefix_ids)
    with torch.inference_mode():
        logits = guard.model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
    return guard.calibration.apply(float(torch.softmax(logits, dim=-1)[guard.tokens.unsafe_id]))


def reference_answer(guard: LoadedGuard, request: ScoreRequest, max_new: int) -> str:
    """Greedy ``generate`` on the full prompt, the answer forced to start with ``unsafe``."""
    rendered = guard.prompt_format.render(request.taxonomy, request.messages, request.side)
    tok = guard.tokens
    ids = [*tok.encode_prompt(rendered.text), *tok.verdict_prefix_ids, tok.unsafe_id]
    with torch.inference_mode():
        out = guard.model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=list(tok.stop_ids),
            pad_token_id=tok.pad_id,
        )
    new = out[0, len(ids) :].tolist()
    stop = next((i for i, t in enumerate(new) if t in tok.stop_ids), len(new))
    return tok.decode([tok.unsafe_id, *new[:stop]])
