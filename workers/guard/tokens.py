"""The token ids a guard answers with, resolved once per loaded tokenizer.

Scoring reads ``P(unsafe)`` at one vocabulary index, so that index must be right for *this* tokenizer:
Llama 3 has ``unsafe`` as one token (39257), SmolLM2 splits ``unsafe`` but keeps `` unsafe`` whole. We try
the bare word, then the space-prefixed word, and take the first form in which both ``safe`` and ``unsafe``
are single tokens; if none is, loading fails (a score over half a word would be meaningless).

Prompts are tokenized with special tokens *parsed* and *no extra BOS* (FORMATS.md §2): every format
already writes its BOS text, and tokenizers that add one would double it. Fine-tuning builds its targets
from the same functions (``GuardTokens.target_ids``), so training and scoring see identical token
boundaries: prompt ids, then ``verdict_prefix`` ids, then the verdict id, then the codes line, then a stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from workers.errors import ModelLoadError
from workers.guard.formats import PromptFormat

VERDICT_FORMS: tuple[str, ...] = ("", " ")
"""Prefixes tried, in order, in front of ``safe``/``unsafe`` to find single-token verdict words."""

Verdict = Literal["safe", "unsafe"]


def encode(tokenizer: Any, text: str) -> list[int]:
    """``text`` as token ids, special-token strings parsed, nothing added (no BOS, no EOS)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = encode(tokenizer, text)
    return ids[0] if len(ids) == 1 else None


@dataclass(frozen=True)
class GuardTokens:
    """Token ids of one tokenizer under one prompt format."""

    tokenizer: Any
    safe_id: int
    unsafe_id: int
    verdict_form: str
    """``""`` or ``" "``: what precedes the verdict word in this tokenizer's single-token form."""
    verdict_prefix_ids: tuple[int, ...]
    """Tokens of the format's ``verdict_prefix`` (``\\n\\n`` for LG3/LG4), fed before reading the score."""
    stop_ids: tuple[int, ...]
    """Ids that end an answer: the format's single-token stop strings, then the tokenizer's EOS."""
    pad_id: int

    def encode_prompt(self, text: str) -> list[int]:
        """A rendered prompt's ids, exactly as the scorer feeds them (no extra BOS)."""
        return encode(self.tokenizer, text)

    def verdict_id(self, verdict: Verdict) -> int:
        return self.unsafe_id if verdict == "unsafe" else self.safe_id

    def codes_ids(self, codes: Sequence[str]) -> list[int]:
        """The answer's second line, ``\\n`` + comma-joined codes, as generated after ``unsafe``."""
        return encode(self.tokenizer, "\n" + ",".join(codes)) if codes else []

    def target_ids(self, verdict: Verdict, codes: Sequence[str] = ()) -> list[int]:
        """The answer a guard is trained to give after the prompt: prefix, verdict, codes, stop.

        The verdict position (where the scorer reads ``P(unsafe)``) is index ``len(verdict_prefix_ids)``
        of this list. ``codes`` are ignored for ``safe``.
        """
        ids = [*self.verdict_prefix_ids, self.verdict_id(verdict)]
        if verdict == "unsafe":
            ids += self.codes_ids(codes)
        return [*ids, self.stop_ids[0]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens kept so the parser can see stop strings."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))


def resolve_tokens(tokenizer: Any, prompt_format: PromptFormat) -> GuardTokens:
    """Find this tokenizer's verdict, prefix and stop ids for ``prompt_format``; fail loudly if unusable."""
    for form in VERDICT_FORMS:
        safe_id = _single_token(tokenizer, form + "safe")
        unsafe_id = _single_token(tokenizer, form + "unsafe")
        if safe_id is not None and unsafe_id is not None and safe_id != unsafe_id:
            break
    else:
        tried = ", ".join(repr(f + w) for f in VERDICT_FORMS for w in ("safe", "unsafe"))
        raise ModelLoadError(
            f"tokenizer has no single-token verdict words (tried {tried}); "
            "P(unsafe) cannot be read at one position, so this checkpoint can't be scored as a guard"
        )
    stops = [i for s in prompt_format.stop_strings if (i := _single_token(tokenizer, s)) is not None]
    eos = tokenizer.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    stop_ids = tuple(dict.fromkeys([*stops, *eos_ids]))
    if not stop_ids:
        raise ModelLoadError("tokenizer has no end-of-answer token (no stop string and no eos_token)")
    pad = tokenizer.pad_token_id
    return GuardTokens(
        tokenizer=tokenizer,
        safe_id=safe_id,
        unsafe_id=unsafe_id,
        verdict_form=form,
        verdict_prefix_ids=tuple(encode(tokenizer, prompt_format.verdict_prefix)),
        stop_ids=stop_ids,
        pad_id=pad if pad is not None else stop_ids[0],
    )
