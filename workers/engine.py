"""The one scoring interface between the Kafka/backfill side and the model side.

A batch of typed ``ScoreRequest`` goes in, a list of ``ScoreResult`` (same order) comes out. Callers never
see tokens, logits or KV caches; the model side never sees Kafka, Redis or tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Message, Side
from schemas.taxonomy import Taxonomy


class ScoreRequest(BaseModel):
    """One conversation to score under one taxonomy, for one side."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    messages: tuple[Message, ...] = Field(min_length=1)
    side: Side
    taxonomy: Taxonomy
    decode_categories_at: float | None = Field(
        default=0.5, ge=0.0, le=1.0, description="Decode violated codes when score >= this; None: never."
    )
    category_codes: tuple[str, ...] = Field(
        default=(), description="Codes to score 1-vs-all with one-category prompts (the paper's protocol)."
    )
    cache_scope: str = Field(
        default="",
        description="Opaque isolation scope (the caller puts the tenant id): cached keys/values are shared "
        "only between requests with the same scope, so one tenant's entries never touch another's scores.",
    )
    affinity: str | None = Field(
        default=None,
        description="Opaque conversation key (``tenant:conversation``): a pool routes equal keys to one "
        "replica, and a scorer runs a call's equal keys in arrival order so later turns reuse earlier ones.",
    )


class ScoreResult(BaseModel):
    """The model's answer for one request."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    score: float = Field(ge=0.0, le=1.0, description="P(first verdict token is 'unsafe').")
    categories: tuple[str, ...] = Field(default=(), description="Valid codes decoded after 'unsafe\\n'.")
    unknown_codes: tuple[str, ...] = ()
    parse_issues: tuple[str, ...] = ()
    raw_output: str | None = Field(default=None, description="Decoded text, when categories were decoded.")
    category_scores: dict[str, float] = Field(default_factory=dict)
    prompt_tokens: int = 0
    truncated: bool = Field(
        default=False, description="Turns were dropped or the last message's middle cut to fit the model."
    )
    cached_tokens: int = Field(
        default=0, description="Of ``prompt_tokens``, how many came from the KV cache (not computed)."
    )
    error: str | None = Field(
        default=None,
        description="Why this request alone could not be scored (its ``score`` is then 0 and meaningless); "
        "the caller applies the tenant's on_error. Other requests of the batch are unaffected.",
    )


@runtime_checkable
class Engine(Protocol):
    """Anything that scores batches: the in-process scorer, a Ray replica handle, a model pool."""

    @property
    def model_name(self) -> str: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...


class CacheStats(BaseModel):
    """An engine's prefix KV cache counters (``LocalEngine.cache_stats``), for the replica's metrics."""

    model_config = ConfigDict(frozen=True)

    hits: int = Field(default=0, ge=0, description="Prefixes found in the cache.")
    misses: int = Field(default=0, ge=0, description="Prefixes computed because they were not cached.")
    nbytes: int = Field(default=0, ge=0, description="Tensor bytes the cache holds now.")
