"""The token ids a guard answers with, resolved once per loaded tokenizer.

Scoring reads ``P(unsafe)`` at one vocabulary index, so that index must be right for *this* tokenizer:
Llama 3 has ``unsafe`` as one token (39257), SmolLM2 splits ``unsafe`` but keeps `` unsafe`` whole. We try
the bare word, then the space-prefixed word, and take the first form in which both ``safe`` and ``unsafe``
are single tokens; if none is, loading fails (a score over half a word would be meaningless).

Prompts are tokenized with *no extra BOS* (FORMATS.md §2): every format already writes its BOS text, and
tokenizers that add one would double it. Special tokens are parsed in the template's text only:
``encode_rendered`` splits the prompt at the template's special-token strings and encodes every piece in
between, conversation content included, with special-token parsing off. That is exactly how a tokenizer
handles text around special tokens anyway, so ordinary prompts get the same ids as before, while a
``<|eot_id|>`` typed inside a message stays characters and can never become the control token.

Fine-tuning builds its targets from the same functions (``GuardTokens.target_ids``), so training and
scoring see identical token boundaries: prompt ids, then ``verdict_prefix`` ids, then the verdict id,
then the codes line, then a stop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from workers.errors import ModelLoadError
from workers.guard.formats import PromptFormat, RenderedPrompt

VERDICT_FORMS: tuple[str, ...] = ("", " ")
"""Prefixes tried, in order, in front of ``safe``/``unsafe`` to find single-token verdict words."""

Verdict = Literal["safe", "unsafe"]


def encode(tokenizer: Any, text: str) -> list[int]:
    """``text`` as token ids, special-token strings parsed, nothing added (no BOS, no EOS)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """``text`` as token ids with special-token strings *not* parsed: what any untrusted text must use."""
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))


def added_token_ids(tokenizer: Any) -> dict[str, int]:
    """Every added token's text (specials such as ``<|eot_id|>`` among them) → its id."""
    return {str(token.content): int(i) for i, token in tokenizer.added_tokens_decoder.items()}


def special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids a prompt's text may only reach through the template: added tokens and the tokenizer's specials."""
    return frozenset([*added_token_ids(tokenizer).values(), *tokenizer.all_special_ids])


def _single_token(tokenizer: Any, text: str) -> int | None:
    ids = encode(tokenizer, text)
    return ids[0] if len(ids) == 1 else None


_PATTERNS: dict[tuple[str, ...], re.Pattern[str] | None] = {}


def _added_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex matching any added token, longest first (``<|eot|>`` inside ``<|eot_id|>`` never wins)."""
    if tokens not in _PATTERNS:
        ordered = sorted(tokens, key=len, reverse=True)
        _PATTERNS[tokens] = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    return _PATTERNS[tokens]


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
    added: Mapping[str, int] = field(default_factory=dict)
    """Added-token text → id, for :meth:`encode_rendered`."""

    def encode_prompt(self, text: str) -> list[int]:
        """Trusted template text's ids, special-token strings parsed (no extra BOS). Never for content."""
        return encode(self.tokenizer, text)

    def encode_content(self, text: str) -> list[int]:
        """Untrusted text's ids: special-token strings stay plain text."""
        return encode_plain(self.tokenizer, text)

    def encode_rendered(self, rendered: RenderedPrompt) -> list[int]:
        """A rendered prompt's ids, exactly as the scorer feeds them: specials parsed outside
        ``rendered.content_spans`` only (module docstring)."""
        pattern = _added_pattern(tuple(self.added))
        pieces: list[str | int] = [""]
        position = 0
        for start, end in [*rendered.content_spans, (len(rendered.text), len(rendered.text))]:
            template = rendered.text[position:start]
            last = 0
            for match in pattern.finditer(template) if pattern is not None else ():
                pieces[-1] = str(pieces[-1]) + template[last : match.start()]
                pieces += [self.added[match.group()], ""]
                last = match.end()
            pieces[-1] = str(pieces[-1]) + template[last:] + rendered.text[start:end]
            position = end
        ids: list[int] = []
        for piece in pieces:
            ids += [piece] if isinstance(piece, int) else self.encode_content(piece)
        return ids

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
        added=added_token_ids(tokenizer),
        tokenizer=tokenizer,
        safe_id=safe_id,
        unsafe_id=unsafe_id,
        verdict_form=form,
        verdict_prefix_ids=tuple(encode(tokenizer, prompt_format.verdict_prefix)),
        stop_ids=stop_ids,
        pad_id=pad if pad is not None else stop_ids[0],
    )
