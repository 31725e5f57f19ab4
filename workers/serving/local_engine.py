"""The in-process engine: a loaded guard plus its scorer, behind ``workers.engine.Engine``.

This is what a ``GuardReplica`` actor holds, what backfill runs inside Ray Data, and what
``guardstream moderate`` calls directly. Callers see requests and results only.
"""

from __future__ import annotations

from collections.abc import Sequence

from workers.engine import CacheStats, ScoreRequest, ScoreResult
from workers.errors import GuardstreamError, ScoringError
from workers.guard.loading import load_guard
from workers.guard.scorer import GuardScorer
from workers.settings import ModelSpec, Settings


class LocalEngine:
    """Loads ``spec`` once (raises ``ModelLoadError``/``PromptFormatError``) and scores batches in-process."""

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        self.spec = spec
        if spec.torch_threads is not None:
            import torch  # already imported by load_guard; here only to size its thread pool first

            torch.set_num_threads(spec.torch_threads)
        self.guard = load_guard(spec, settings)
        self.scorer = GuardScorer(self.guard, settings)

    @property
    def model_name(self) -> str:
        return self.guard.name

    def cache_stats(self) -> CacheStats:
        """The KV tree's token counters, read by the replica's metrics (no lock: a gauge can lag a call)."""
        cache = self.scorer.cache
        return CacheStats(
            hits=cache.hit_tokens, misses=cache.lookup_tokens - cache.hit_tokens, nbytes=cache.nbytes
        )

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score a batch in request order; model failures surface as ``ScoringError``."""
        try:
            return self.scorer.score(requests)
        except GuardstreamError:
            raise
        except (RuntimeError, ValueError, IndexError) as exc:
            raise ScoringError(f"{self.model_name}: {type(exc).__name__}: {exc}") from exc
