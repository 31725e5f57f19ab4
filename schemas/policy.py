"""Tenant policies: taxonomy, thresholds, route and failure mode, stored in Redis or a policy file."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.events import TENANT_PATTERN, Side
from schemas.taxonomy import Generation, Taxonomy

OnError = Literal["fail-closed", "fail-open", "dead-letter"]


class Route(BaseModel):
    """Where a tenant's events are scored and where its verdicts go.

    A deployment also requires ``verdict_topic`` to start with its tenant topic prefix and to be nobody
    else's topic; ``guardstream policy set`` checks that (``workers.intake.tenancy.verdict_topic_problem``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default="default", pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Model pool name.")
    verdict_topic: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,249}$", description="None: the deployment's verdict topic."
    )

    @field_validator("verdict_topic")
    @classmethod
    def _not_a_reserved_name(cls, value: str | None) -> str | None:
        """Kafka forbids ``.`` and ``..``; ``__`` names its internal topics (offsets, transactions)."""
        if value in {".", ".."} or (value is not None and value.startswith("__")):
            raise ValueError(f"{value!r} is reserved by Kafka")
        return value


class TenantPolicy(BaseModel):
    """How one tenant is moderated. ``version`` is assigned by the policy store on every change.

    ``on_error`` says what happens when scoring is impossible (model error, timeout): ``fail-closed`` emits
    an unsafe verdict with ``error`` set, ``fail-open`` a safe one with ``error`` set, ``dead-letter`` sends
    the event to the DLQ. Never silence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=TENANT_PATTERN)
    taxonomy: Taxonomy = Field(default_factory=lambda: Taxonomy(generation=Generation.LG3))
    sides: tuple[Side, ...] = Field(default=("prompt", "response"), min_length=1)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    category_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-code thresholds; codes listed here are scored 1-vs-all with one-category prompts.",
    )
    per_category_scores: bool = Field(
        default=False, description="Score every category 1-vs-all (one extra forward per category)."
    )
    route: Route = Field(default_factory=Route)
    on_error: OnError = "fail-closed"
    version: int = Field(default=0, ge=0)
    updated_at: datetime | None = None

    @field_validator("category_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for code, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"category_thresholds[{code!r}]={threshold} is outside [0, 1]")
        return value

    @field_validator("sides")
    @classmethod
    def _unique_sides(cls, value: tuple[Side, ...]) -> tuple[Side, ...]:
        if len(set(value)) != len(value):
            raise ValueError("sides has duplicates")
        return value

    @model_validator(mode="after")
    def _category_thresholds_name_known_codes(self) -> TenantPolicy:
        codes = {c.code for c in self.taxonomy.resolve()}
        unknown = sorted(set(self.category_thresholds) - codes)
        if unknown:
            raise ValueError(f"category_thresholds names codes {unknown} that the taxonomy does not have")
        return self

    def scored_category_codes(self) -> tuple[str, ...]:
        """Codes that get a 1-vs-all score, in taxonomy order."""
        if self.per_category_scores:
            return tuple(c.code for c in self.taxonomy.resolve())
        return tuple(c.code for c in self.taxonomy.resolve() if c.code in self.category_thresholds)
