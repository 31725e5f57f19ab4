"""Turning a scoring request into token rows: render, fit ``max_prompt_tokens``, and mark what to cache.

A row is one prompt to score: a request's main prompt, or one 1-vs-all category prompt. Besides its ids it
carries two cut points for the KV tree:

- ``head_ids``: the policy head (everything before the conversation, split-safe: the tokenization of the
  head text without its trailing whitespace, minus its last token, since BPE merges can cross
  ``<BEGIN CONVERSATION>\\n\\n``|``User:``). The scorer computes it once per tree, so a conversation's first
  event pays only for its conversation, as before the KV tree existed.
- ``store_upto``: the end of the conversation (the longest common prefix of the ids of the text up to
  ``CONVERSATION_CLOSE`` and the prompt's ids). Keys/values up to there are stored after the forward:
  the next event of the same conversation and side has head + this conversation as its prefix, while the
  fixed tail after it attends to the conversation and can never be reused.

Both are only hints: the tree matches on the ids themselves, so a wrong cut costs speed, never a score.

Long conversations: when prompt + answer would exceed ``Settings.max_prompt_tokens``, the oldest turns are
dropped (at least the last message is kept); if the last message alone is too long its middle is cut,
keeping its start and end (``prompt_ids.fit_prompt``); the row and the verdict say it was truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.events import Message, Side
from schemas.taxonomy import Taxonomy
from workers.engine import ScoreRequest
from workers.errors import ScoringError
from workers.guard.formats import CONVERSATION_CLOSE
from workers.guard.kv_tree import NO_MATCH, Match, root_key
from workers.guard.loading import LoadedGuard
from workers.guard.prompt_ids import PromptIds, fit_prompt
from workers.settings import Settings


@dataclass
class Row:
    """One prompt to score and where the KV tree may cut it."""

    request: int
    code: str | None
    decode_at: float | None
    key: str
    head_ids: tuple[int, ...]
    ids: list[int]
    store_upto: int
    wave: int = 0
    match: Match = field(default=NO_MATCH)
    score: float = 0.0
    generated: list[int] | None = None
    truncated: bool = False

    @property
    def starts_with_head(self) -> bool:
        return bool(self.head_ids) and tuple(self.ids[: len(self.head_ids)]) == self.head_ids


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RowBuilder:
    """Renders and tokenizes rows for one guard; remembers each policy head's split-safe ids."""

    def __init__(self, guard: LoadedGuard, settings: Settings) -> None:
        self.guard = guard
        self.settings = settings
        self.tokens = guard.tokens
        self.head_ids: dict[str, tuple[int, ...]] = {}

    def split_ids(self, head_text: str) -> tuple[int, ...]:
        """Token ids safe to compute alone for ``head_text`` (module docstring)."""
        ids = self.head_ids.get(head_text)
        if ids is None:
            ids = tuple(self.tokens.encode_prompt(head_text.rstrip())[:-1])
            self.head_ids[head_text] = ids
        return ids

    def fit(self, taxonomy: Taxonomy, messages: Sequence[Message], side: Side) -> PromptIds:
        """The prompt's ids (content never tokenized as specials), fitted to ``max_prompt_tokens``."""
        budget = self.settings.max_prompt_tokens - len(self.tokens.verdict_prefix_ids) - 1
        budget -= self.settings.max_category_tokens
        try:
            return fit_prompt(self.guard.prompt_format, self.tokens, taxonomy, messages, side, budget)
        except ScoringError:
            raise ScoringError(
                f"prompt can't fit max_prompt_tokens={self.settings.max_prompt_tokens}"
            ) from None

    def store_upto(self, text: str, ids: list[int], head: int) -> int:
        """How many leading ids end at the conversation's end (module docstring); at least ``head``."""
        end = text.rfind(CONVERSATION_CLOSE)
        if end < 0:
            return head
        return max(head, common_prefix(self.tokens.encode_prompt(text[:end]), ids))

    def row(self, index: int, request: ScoreRequest, code: str | None, conversations: bool) -> Row:
        """One row of ``request`` (``code``: its 1-vs-all prompt for that category).

        ``conversations`` False stores nothing past the head (the taxonomy-only cache of before).
        """
        taxonomy = request.taxonomy if code is None else request.taxonomy.only(code)
        fitted = self.fit(taxonomy, request.messages, request.side)
        head_text, text, ids = fitted.prefix, fitted.rendered.text, fitted.ids
        key = root_key(self.guard.name, request.cache_scope, head_text, request.side)
        head_ids = self.split_ids(head_text)
        head = common_prefix(head_ids, ids)
        upto = self.store_upto(text, ids, head) if conversations else head
        decode_at = request.decode_categories_at if code is None else None
        return Row(
            index, code, decode_at, key, head_ids, ids, min(upto, len(ids) - 1), truncated=fitted.truncated
        )
