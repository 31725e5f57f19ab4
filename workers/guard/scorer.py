"""The scorer: requests in, ``P(unsafe)`` and decoded codes out, doing the least work the semantics allow.

For every request (and every 1-vs-all category it asks for) one prompt is rendered and tokenized. Its
tokens are split into a prefix shared by all prompts of the same (format, taxonomy, side), whose
keys/values come from ``PrefixCache``, and a suffix (conversation, instructions, ``verdict_prefix``). Rows
with the same prefix are sorted by length and cut into batches under a padded-token budget, so short and
long conversations don't pad each other. Each batch is one forward. (Mixing prefixes in one forward, with
shorter ones padded, measured ~11% slower on CPU: copying the padded keys/values cost more than the larger
matrices saved.) The score is the softmax over the whole vocabulary at the verdict position, read for the
``unsafe`` token. Rows whose score reaches ``decode_categories_at`` are then decoded greedily from the
same keys/values, starting with ``unsafe`` — all of them in one loop, since each decoding step costs a
pass over every weight however few rows it carries.

Split safety: BPE merges can cross the text boundary ``<BEGIN CONVERSATION>\\n\\n``|``User:`` (SmolLM2
does), so the cached prefix is the tokenization of the prefix text without its trailing whitespace, minus
its last token, and every request checks that its full tokenization starts with exactly those ids. A
request that doesn't is scored on its full prompt, uncached — slower, never different.

Long conversations: when prompt + answer would exceed ``Settings.max_prompt_tokens``, the oldest turns
are dropped (at least the last message is kept); if the last message alone is too long its middle is cut,
keeping its start and end (``prompt_ids``). ``ScoreResult.prompt_tokens`` reports what was actually
scored, ``ScoreResult.truncated`` that something was left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
import torch

from schemas.events import Message, Side
from schemas.taxonomy import Taxonomy
from workers.engine import ScoreRequest, ScoreResult
from workers.errors import ScoringError
from workers.guard.kv_batch import (
    BatchState,
    compute_prefix,
    forward_suffixes,
    greedy_continue,
    merge_states,
    next_token_probs,
)
from workers.guard.loading import LoadedGuard
from workers.guard.parse import DEFAULT_STOPS, parse_output
from workers.guard.prefix_cache import PrefixCache, PrefixEntry, prefix_key
from workers.guard.prompt_ids import PromptIds, fit_prompt
from workers.settings import Settings

log = structlog.get_logger(__name__)

UNCACHED = ""
"""Group key of rows scored on their full prompt (prefix check failed)."""


@dataclass
class _Row:
    """One prompt to score: a request's main prompt (``code`` None) or one 1-vs-all category prompt."""

    request: int
    code: str | None
    decode_at: float | None
    prefix_text: str
    prefix_ids: tuple[int, ...]
    suffix: list[int]
    score: float = 0.0
    generated: list[int] | None = None
    truncated: bool = False


class GuardScorer:
    """Batched, prefix-cached scoring for one loaded guard. Not thread-safe per call; the cache is."""

    def __init__(self, guard: LoadedGuard, settings: Settings) -> None:
        self.guard = guard
        self.settings = settings
        self.tokens = guard.tokens
        self.cache = PrefixCache(settings.prefix_cache_mb * 1024 * 1024)
        self._prefix_ids: dict[str, tuple[int, ...]] = {}
        self.fallbacks = 0
        self._stops = tuple(dict.fromkeys([*guard.prompt_format.stop_strings, *DEFAULT_STOPS]))

    # --- preparing rows ----------------------------------------------------------------------------------
    def _split_ids(self, prefix_text: str) -> tuple[int, ...]:
        """Token ids safe to cache for ``prefix_text`` (module docstring: split safety)."""
        ids = self._prefix_ids.get(prefix_text)
        if ids is None:
            ids = tuple(self.tokens.encode_prompt(prefix_text.rstrip())[:-1])
            self._prefix_ids[prefix_text] = ids
        return ids

    def _fit(self, taxonomy: Taxonomy, messages: Sequence[Message], side: Side) -> PromptIds:
        """Render, tokenize (content never as specials) and fit to ``max_prompt_tokens`` (``prompt_ids``)."""
        budget = self.settings.max_prompt_tokens - len(self.tokens.verdict_prefix_ids) - 1
        budget -= self.settings.max_category_tokens
        try:
            return fit_prompt(self.guard.prompt_format, self.tokens, taxonomy, messages, side, budget)
        except ScoringError:
            raise ScoringError(
                f"prompt can't fit max_prompt_tokens={self.settings.max_prompt_tokens}"
            ) from None

    def _row(self, index: int, request: ScoreRequest, taxonomy: Taxonomy, code: str | None) -> _Row:
        fitted = self._fit(taxonomy, request.messages, request.side)
        prefix_text, ids = fitted.prefix, fitted.ids
        prefix_ids = self._split_ids(prefix_text)
        tail = [*self.tokens.verdict_prefix_ids]
        if prefix_ids and tuple(ids[: len(prefix_ids)]) == prefix_ids:
            suffix = ids[len(prefix_ids) :] + tail
        else:
            self.fallbacks += 1
            log.debug("prefix_split_fallback", request_id=request.request_id)
            prefix_text, prefix_ids, suffix = UNCACHED, (), ids + tail
        decode_at = request.decode_categories_at if code is None else None
        return _Row(index, code, decode_at, prefix_text, prefix_ids, suffix, truncated=fitted.truncated)

    def _rows(self, requests: Sequence[ScoreRequest]) -> tuple[list[_Row], dict[int, str]]:
        """Rows to run, and the requests that can't be (index -> why): one request's impossible prompt
        (a taxonomy too long for ``max_prompt_tokens``, a code it lacks) must not fail the other tenants'
        requests batched with it."""
        rows: list[_Row] = []
        errors: dict[int, str] = {}
        for i, request in enumerate(requests):
            try:
                mine = [self._row(i, request, request.taxonomy, None)]
                for code in request.category_codes:
                    mine.append(self._row(i, request, request.taxonomy.only(code), code))
            except (ScoringError, ValueError) as exc:  # ValueError: Taxonomy.only, a code it lacks
                log.warning("request_unscorable", request_id=request.request_id, error=str(exc))
                errors[i] = str(exc)
                continue
            rows += mine
        return rows, errors

    # --- running batches ---------------------------------------------------------------------------------
    def _prefix_entry(self, text: str, ids: tuple[int, ...]) -> PrefixEntry | None:
        if text == UNCACHED:
            return None
        key = prefix_key(self.guard.name, text)
        return self.cache.get_or_compute(
            key, lambda: compute_prefix(self.guard.model, ids, self.guard.device)
        )

    def _buckets(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows sorted by suffix length, cut so that rows x longest suffix stays under the token budget."""
        budget = self.settings.score_batch_tokens
        buckets: list[list[_Row]] = []
        current: list[_Row] = []
        for row in sorted(rows, key=lambda r: len(r.suffix)):
            if current and (len(current) + 1) * len(row.suffix) > budget:
                buckets.append(current)
                current = []
            current.append(row)
        return [*buckets, current] if current else buckets

    def _run_bucket(
        self, entry: PrefixEntry | None, rows: list[_Row]
    ) -> tuple[list[_Row], BatchState] | None:
        """Score one bucket in one forward; its rows to decode and their state (None if none is)."""
        model, device = self.guard.model, self.guard.device
        hidden, state = forward_suffixes(model, entry, [r.suffix for r in rows], self.tokens.pad_id, device)
        scores = next_token_probs(model, hidden)[:, self.tokens.unsafe_id].tolist()
        for row, score in zip(rows, scores, strict=True):
            row.score = min(max(float(score), 0.0), 1.0)
        chosen = [i for i, r in enumerate(rows) if r.decode_at is not None and r.score >= r.decode_at]
        if not chosen:
            return None
        return [rows[i] for i in chosen], state.select(torch.tensor(chosen, device=device))

    def _decode(self, rows: list[_Row], states: list[BatchState]) -> None:
        """Greedy codes for every over-threshold row of the call, in one loop from the scoring KV."""
        state = merge_states(self.guard.model, states)
        first = torch.full((len(rows),), self.tokens.unsafe_id, dtype=torch.long, device=self.guard.device)
        outputs = greedy_continue(
            self.guard.model, state, first, self.settings.max_category_tokens, self.tokens.stop_ids
        )
        for row, generated in zip(rows, outputs, strict=True):
            row.generated = generated

    # --- results -----------------------------------------------------------------------------------------
    def _result(self, request: ScoreRequest, main: _Row, extra: list[_Row]) -> ScoreResult:
        fields: dict[str, object] = {}
        if main.generated is not None:
            raw = self.tokens.decode([self.tokens.unsafe_id, *main.generated])
            codes = [c.code for c in request.taxonomy.resolve()]
            parsed = parse_output(raw, codes, stop_strings=self._stops)
            fields = {
                "categories": parsed.categories,
                "unknown_codes": parsed.unknown_codes,
                "parse_issues": parsed.issues,
                "raw_output": raw,
            }
        return ScoreResult(
            request_id=request.request_id,
            score=main.score,
            category_scores={r.code: r.score for r in extra if r.code is not None},
            prompt_tokens=len(main.prefix_ids) + len(main.suffix),
            truncated=main.truncated,
            **fields,  # type: ignore[arg-type]
        )

    def positions(self, requests: Sequence[ScoreRequest]) -> tuple[int, int]:
        """(suffix positions, prefix positions) that ``score`` runs for ``requests`` on an empty prefix cache.

        Against the full prompts' token count this is the most the prefix cache can save, whatever the
        hardware: the benchmark prints it so a ratio below target comes with its reason.
        """
        rows, _ = self._rows(requests)
        prefixes = {row.prefix_text: len(row.prefix_ids) for row in rows}
        return sum(len(row.suffix) for row in rows), sum(prefixes.values())

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score a batch; results are in request order."""
        if not requests:
            return []
        with torch.inference_mode():
            rows, errors = self._rows(requests)
            groups: dict[str, list[_Row]] = defaultdict(list)
            for row in rows:
                groups[row.prefix_text].append(row)
            to_decode: list[_Row] = []
            states: list[BatchState] = []
            for text, members in groups.items():
                entry = self._prefix_entry(text, members[0].prefix_ids)
                for bucket in self._buckets(members):
                    over = self._run_bucket(entry, bucket)
                    if over is not None:
                        to_decode += over[0]
                        states.append(over[1])
            if states:
                self._decode(to_decode, states)
        per_request: dict[int, list[_Row]] = defaultdict(list)
        for row in rows:
            per_request[row.request].append(row)
        results = []
        for i, request in enumerate(requests):
            if i in errors:
                results.append(ScoreResult(request_id=request.request_id, score=0.0, error=errors[i]))
                continue
            main, *extra = per_request[i]
            results.append(self._result(request, main, extra))
        return results
