"""The scorer: requests in, ``P(unsafe)`` and decoded codes out, computing only tokens it has not seen.

Each request (and every 1-vs-all category it asks for) becomes a ``Row`` of token ids (``rows.py``). Each
row looks up the longest cached token prefix of its ids in the ``KVTree`` of its (model, cache scope,
policy head, side) and runs only the rest: for a conversation's next event that is the new turn (or the
new chunk of a streamed reply) plus the fixed tail; for its first event, the conversation plus the tail,
on top of the policy head computed once per tree. After the forward, each row's keys/values up to the end
of its conversation are stored, ready for the next event. Rows are sorted by the length they still have
to run and cut into buckets under a padded-token budget; each bucket is one forward. The score is the
softmax over the whole vocabulary at the verdict position, read for the ``unsafe`` token. Rows whose
score reaches ``decode_categories_at`` are then decoded greedily from the same keys/values, starting with
``unsafe`` — all of them in one loop, since each decoding step costs a pass over every weight however few
rows it carries.

Within one call, requests with the same ``affinity`` (a conversation) run in waves in arrival order, so a
chunk's event reuses the previous chunk's keys/values even when both arrive in one batch.

Exactness: keys/values depend only on the token ids before them, and the tree matches ids, so a reused
prefix is what a full forward computes (up to float reordering, ~1e-6 in fp32).

Concurrency: ``score`` holds a lock for the whole call, so two threads never interleave their use of the
tree; the replica calls it from one executor thread anyway. The tree has its own lock for readers of
its statistics.

Long conversations are fitted by ``rows.RowBuilder.fit`` (``prompt_ids``: oldest turns dropped, then
the last message's middle cut); ``ScoreResult.truncated`` says something was left out.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Sequence

import structlog
import torch

from workers.engine import ScoreRequest, ScoreResult
from workers.errors import ScoringError
from workers.guard.kv_batch import (
    BatchState,
    compute_prefix,
    forward_suffixes,
    greedy_continue,
    merge_states,
    next_token_probs,
    stack_pasts,
)
from workers.guard.kv_tree import KVTree
from workers.guard.loading import LoadedGuard
from workers.guard.parse import DEFAULT_STOPS, parse_output
from workers.guard.rows import Row, RowBuilder
from workers.settings import Settings

log = structlog.get_logger(__name__)


class GuardScorer:
    """Batched, KV-tree-cached scoring for one loaded guard; safe to call from several threads.

    ``reuse_conversations=False`` caches only each policy head (the scorer before the KV tree; kept for
    the incremental benchmark's comparison).
    """

    def __init__(self, guard: LoadedGuard, settings: Settings, *, reuse_conversations: bool = True) -> None:
        self.guard = guard
        self.settings = settings
        self.tokens = guard.tokens
        self.cache = KVTree(settings.kv_cache_mb * 1024 * 1024)
        self.builder = RowBuilder(guard, settings)
        self.reuse_conversations = reuse_conversations
        self.fallbacks = 0
        """Rows whose ids don't start with their policy head's split-safe ids (scored without it)."""
        self.computed_tokens = 0
        """Positions run through the model by ``score`` (heads, suffixes, tails), excluding decoding."""
        self._lock = threading.Lock()
        self._stops = tuple(dict.fromkeys([*guard.prompt_format.stop_strings, *DEFAULT_STOPS]))

    # --- preparing rows ----------------------------------------------------------------------------------
    def _rows(self, requests: Sequence[ScoreRequest]) -> tuple[list[Row], dict[int, str]]:
        """Rows to run, and the requests that can't be (index -> why): one request's impossible prompt
        (a taxonomy too long for ``max_prompt_tokens``, a code it lacks) must not fail the other tenants'
        requests batched with it."""
        rows: list[Row] = []
        errors: dict[int, str] = {}
        seen: Counter[str] = Counter()
        for i, request in enumerate(requests):
            try:
                mine = [
                    self.builder.row(i, request, code, self.reuse_conversations)
                    for code in (None, *request.category_codes)
                ]
            except (ScoringError, ValueError) as exc:  # ValueError: Taxonomy.only, a code it lacks
                log.warning("request_unscorable", request_id=request.request_id, error=str(exc))
                errors[i] = str(exc)
                continue
            if request.affinity is not None:
                wave = seen[request.affinity]
                seen[request.affinity] += 1
                for row in mine:
                    row.wave = wave
            rows += mine
        return rows, errors

    def _seed_heads(self, rows: Sequence[Row]) -> None:
        """Compute each tree's policy head once, so first events share it instead of each running it."""
        for row in rows:
            if not row.starts_with_head:
                self.fallbacks += 1
                log.debug("prefix_split_fallback", request=row.request)
                continue
            if self.cache.cached_length(row.key, row.head_ids) < len(row.head_ids):
                layers = compute_prefix(self.guard.model, row.head_ids, self.guard.device)
                self.computed_tokens += len(row.head_ids)
                self.cache.insert(row.key, row.head_ids, 0, layers)

    # --- running batches ---------------------------------------------------------------------------------
    def _suffix(self, row: Row) -> list[int]:
        return [*row.ids[row.match.length :], *self.tokens.verdict_prefix_ids]

    def _buckets(self, rows: list[Row]) -> list[list[Row]]:
        """Rows sorted by what they still run, cut so rows x longest stays under the token budget (and
        rows x longest past under eight times it: the padded pasts are copied for the forward)."""
        budget = self.settings.score_batch_tokens
        buckets: list[list[Row]] = []
        current: list[Row] = []
        longest_past = 0
        for row in sorted(rows, key=lambda r: (len(r.ids) - r.match.length, r.match.length)):
            width, past, n = len(self._suffix(row)), row.match.length, len(current) + 1
            if current and (n * width > budget or n * max(longest_past, past) > 8 * budget):
                buckets.append(current)
                current, longest_past = [], 0
            current.append(row)
            longest_past = max(longest_past, past)
        return [*buckets, current] if current else buckets

    def _run_bucket(self, rows: list[Row]) -> tuple[list[Row], BatchState] | None:
        """Score one bucket in one forward, store its conversations; its rows to decode and their state."""
        model, device = self.guard.model, self.guard.device
        suffixes = [self._suffix(r) for r in rows]
        past = stack_pasts([r.match for r in rows], device)
        hidden, state = forward_suffixes(model, past, suffixes, self.tokens.pad_id, device)
        self.computed_tokens += sum(len(s) for s in suffixes)
        scores = next_token_probs(model, hidden)[:, self.tokens.unsafe_id].tolist()
        for i, (row, score) in enumerate(zip(rows, scores, strict=True)):
            # The one place a score is made: calibration (identity for most checkpoints) applies to the
            # overall and the 1-vs-all category rows alike, before decode thresholds read it.
            row.score = self.guard.calibration.apply(min(max(float(score), 0.0), 1.0))
            if row.store_upto > row.match.length:
                new = state.new_layers(i, row.store_upto - row.match.length)
                self.cache.insert(row.key, row.ids[: row.store_upto], row.match.length, new)
        chosen = [i for i, r in enumerate(rows) if r.decode_at is not None and r.score >= r.decode_at]
        if not chosen:
            return None
        return [rows[i] for i in chosen], state.select(torch.tensor(chosen, device=device))

    def _decode(self, rows: list[Row], states: list[BatchState]) -> None:
        """Greedy codes for every over-threshold row of the call, in one loop from the scoring KV."""
        state = merge_states(self.guard.model, states)
        first = torch.full((len(rows),), self.tokens.unsafe_id, dtype=torch.long, device=self.guard.device)
        outputs = greedy_continue(
            self.guard.model, state, first, self.settings.max_category_tokens, self.tokens.stop_ids
        )
        for row, generated in zip(rows, outputs, strict=True):
            row.generated = generated

    def _run(self, rows: list[Row]) -> None:
        self._seed_heads(rows)
        to_decode: list[Row] = []
        states: list[BatchState] = []
        by_wave: dict[int, list[Row]] = defaultdict(list)
        for row in rows:
            by_wave[row.wave].append(row)
        for wave in sorted(by_wave):
            members = by_wave[wave]
            for row in members:
                row.match = self.cache.match(row.key, row.ids, limit=len(row.ids) - 1)
            for bucket in self._buckets(members):
                over = self._run_bucket(bucket)
                if over is not None:
                    to_decode += over[0]
                    states.append(over[1])
        if states:
            self._decode(to_decode, states)

    # --- results -----------------------------------------------------------------------------------------
    def _result(self, request: ScoreRequest, main: Row, extra: list[Row]) -> ScoreResult:
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
            prompt_tokens=len(main.ids) + len(self.tokens.verdict_prefix_ids),
            cached_tokens=main.match.length,
            truncated=main.truncated,
            **fields,  # type: ignore[arg-type]
        )

    def positions(self, requests: Sequence[ScoreRequest]) -> tuple[int, int]:
        """(suffix positions, head positions) that ``score`` runs for ``requests`` on an empty cache when
        no request continues another: each row after its policy head, each head once.

        Against the full prompts' token count this is the most a head-only cache can save, whatever the
        hardware: the score benchmark prints it so a ratio below target comes with its reason.
        """
        rows, _ = self._rows(requests)
        heads = {row.key: len(row.head_ids) for row in rows if row.starts_with_head}
        tail = len(self.tokens.verdict_prefix_ids)
        suffix = sum(len(r.ids) + tail - (len(r.head_ids) if r.starts_with_head else 0) for r in rows)
        return suffix, sum(heads.values())

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score a batch; results are in request order."""
        if not requests:
            return []
        with self._lock, torch.inference_mode():
            rows, errors = self._rows(requests)
            self._run(rows)
        per_request: dict[int, list[Row]] = defaultdict(list)
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
