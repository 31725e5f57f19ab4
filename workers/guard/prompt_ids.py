"""The token ids the scorer feeds for one request: rendered, tokenized safely, fitted to the token budget.

Tokenization: ``GuardTokens.encode_rendered`` (template specials parsed, content never). Fitting, when
prompt + answer would exceed ``Settings.max_prompt_tokens``: the oldest turns are dropped first (at least
the last message is kept); if the last message alone is still too long, its **middle** is cut and replaced
by :data:`CUT_MARK`, keeping its first and last halves. Cutting the end instead (the old behaviour) let
anyone hide a harmful request behind a long harmless preamble; a request at the end, or a preamble at
the start, stays in view either way. Any of this sets ``PromptIds.truncated``, which reaches the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import Message, Side
from schemas.taxonomy import Taxonomy
from workers.errors import ScoringError
from workers.guard.formats import PromptFormat, RenderedPrompt
from workers.guard.tokens import GuardTokens

CUT_MARK = " [...] "
"""Stands where the middle of an over-long message was cut."""


@dataclass(frozen=True)
class PromptIds:
    """A request's prompt as the scorer feeds it (before ``verdict_prefix``)."""

    rendered: RenderedPrompt
    ids: list[int]
    truncated: bool
    """Turns were dropped or the last message was cut to fit ``max_prompt_tokens``."""

    @property
    def prefix(self) -> str:
        return self.rendered.prefix


def keep_ends(tokens: GuardTokens, content: str, keep: int) -> str:
    """``content`` cut to about ``keep`` tokens: its first and last halves around :data:`CUT_MARK`."""
    ids = tokens.encode_content(content)
    if keep >= len(ids):
        return content
    head, tail = ids[: keep - keep // 2], ids[len(ids) - keep // 2 :] if keep // 2 else []
    return tokens.decode(head) + CUT_MARK + tokens.decode(tail)


def fit_prompt(
    prompt_format: PromptFormat,
    tokens: GuardTokens,
    taxonomy: Taxonomy,
    messages: Sequence[Message],
    side: Side,
    budget: int,
) -> PromptIds:
    """Render and tokenize ``messages``, dropping oldest turns, then cutting the last one's middle, until
    the ids fit ``budget``; :class:`ScoringError` if even the prompt around one short message doesn't."""
    msgs = list(messages)
    truncated = False
    for _ in range(len(messages) + 6):
        rendered = prompt_format.render(taxonomy, msgs, side)
        ids = tokens.encode_rendered(rendered)
        over = len(ids) - budget
        if over <= 0:
            return PromptIds(rendered, ids, truncated)
        truncated = True
        if len(msgs) > 1:
            msgs.pop(0)
            continue
        length = len(tokens.encode_content(msgs[0].content))
        keep = length - over - 8
        if keep <= 0:
            break
        msgs = [Message(role=msgs[0].role, content=keep_ends(tokens, msgs[0].content, keep))]
    raise ScoringError(f"prompt can't fit max_prompt_tokens (a budget of {budget} prompt tokens)")
