"""What guardstream emits: verdicts on the verdict topics and dead letters on the DLQ."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Side


def utc_now() -> datetime:
    return datetime.now(UTC)


class CategoryVerdict(BaseModel):
    """A violated (or scored) category. ``score`` is set only when the 1-vs-all prompt was run for it."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    score: float | None = Field(default=None, ge=0.0, le=1.0)


class Verdict(BaseModel):
    """The moderation decision for one event; ``event_id`` makes it idempotent downstream."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    tenant_id: str
    conversation_id: str
    classified: Side
    partial: bool = Field(
        default=False, description="Echoes the event: this verdict is on a reply still being streamed."
    )
    response_id: str | None = Field(default=None, description="Echoes the event's response_id.")
    unsafe: bool
    score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="P(first verdict token is 'unsafe'); None if not scored."
    )
    threshold: float = Field(ge=0.0, le=1.0)
    categories: list[CategoryVerdict] = Field(default_factory=list)
    unknown_codes: list[str] = Field(
        default_factory=list, description="Codes the model wrote that the taxonomy does not have."
    )
    policy_version: int = 0
    policy_stale: bool = Field(
        default=False, description="True if the policy came from cache while Redis was down."
    )
    model: str = ""
    latency_ms: float = 0.0
    created_at: datetime = Field(default_factory=utc_now)
    error: str | None = Field(
        default=None, description="Why scoring failed (fail-open/fail-closed verdicts)."
    )
    skipped: str | None = Field(
        default=None, description="Why the event was not scored (e.g. side not classified)."
    )


class DeadLetterCode(StrEnum):
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"
    TOO_MANY_TURNS = "too_many_turns"
    UNKNOWN_TENANT = "unknown_tenant"
    SCORING_FAILED = "scoring_failed"


class DeadLetter(BaseModel):
    """An input guardstream could not turn into a verdict, with everything needed to replay it."""

    model_config = ConfigDict(frozen=True)

    error_code: DeadLetterCode
    reason: str
    raw_payload: str
    payload_encoding: str = Field(pattern=r"^(utf-8|base64)$")
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_key: str | None = None
    event_id: str | None = None
    tenant_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)

    @staticmethod
    def encode_payload(raw: bytes) -> tuple[str, str]:
        """Raw bytes as (text, encoding): UTF-8 text when it decodes, base64 otherwise."""
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii"), "base64"
