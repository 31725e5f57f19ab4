"""What guardstream emits: verdicts on the verdict topics and dead letters on the DLQ."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Side

MAX_TEXT_CHARS = 2_000
"""Free-text fields (``reason``, ``error``, ``skipped``) over this are cut when an output must shrink."""

MAX_UNKNOWN_CODES = 32
"""At most this many model-written unknown codes are kept when a verdict must shrink."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class OutputTooLarge(ValueError):
    """An output cannot be made to fit the byte bound even with every shrinkable field cut."""


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT_CHARS:
        return text
    return text[: MAX_TEXT_CHARS - 1] + "…"


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
        default=False,
        description="True if the policy came from cache: Redis was down, or the stored policy is invalid.",
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
    truncated: bool = Field(
        default=False,
        description="Part of the conversation was not scored: oldest turns dropped or the last message's "
        "middle cut to fit the model's prompt budget (its start and end are always scored).",
    )

    def to_bytes(self, max_bytes: int) -> bytes:
        """The verdict as UTF-8 JSON of at most ``max_bytes``: free text cut, unknown codes capped.

        A verdict is small unless a model or an exception wrote a lot; cutting those keeps the decision
        (``unsafe``, ``score``, ``categories``) intact. Raises ``OutputTooLarge`` if even that is too big.
        """
        data = self.model_dump_json().encode("utf-8")
        if len(data) <= max_bytes:
            return data
        smaller = self.model_copy(
            update={
                "error": _cut(self.error),
                "skipped": _cut(self.skipped),
                "unknown_codes": self.unknown_codes[:MAX_UNKNOWN_CODES],
            }
        )
        data = smaller.model_dump_json().encode("utf-8")
        if len(data) > max_bytes:
            raise OutputTooLarge(f"verdict for {self.event_id!r} is {len(data)} bytes, over {max_bytes}")
        return data


class DeadLetterCode(StrEnum):
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"
    TOO_MANY_TURNS = "too_many_turns"
    UNKNOWN_TENANT = "unknown_tenant"
    SCORING_FAILED = "scoring_failed"
    TOO_DEEP = "too_deep"
    POLICY_INVALID = "policy_invalid"
    UNDECODABLE_BATCH = "undecodable_batch"
    PRODUCE_FAILED = "produce_failed"
    TENANT_MISMATCH = "tenant_mismatch"


class DeadLetter(BaseModel):
    """An input guardstream could not turn into a verdict, with everything needed to replay it.

    A dead letter always fits the producer's request size (``to_bytes``): a payload too big to carry whole
    is cut, ``payload_truncated`` says so, and ``payload_sha256``/``payload_bytes`` identify the full record,
    which stays readable at ``source_topic``/``source_partition``/``source_offset`` until retention ends.
    """

    model_config = ConfigDict(frozen=True)

    error_code: DeadLetterCode
    reason: str
    raw_payload: str
    payload_encoding: str = Field(pattern=r"^(utf-8|base64)$")
    payload_truncated: bool = Field(
        default=False, description="True if raw_payload holds only the start of the record's value."
    )
    payload_bytes: int | None = Field(default=None, ge=0, description="Size of the full record value.")
    payload_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the full record value."
    )
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_last_offset: int | None = Field(
        default=None,
        description="undecodable_batch: last offset of the skipped batch (first: source_offset)",
    )
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

    def payload(self) -> bytes:
        """The (possibly truncated) record value as bytes again."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.raw_payload)
        return self.raw_payload.encode("utf-8")

    def to_bytes(self, max_bytes: int) -> bytes:
        """The dead letter as UTF-8 JSON of at most ``max_bytes``, cutting ``raw_payload`` if it must.

        Raises ``OutputTooLarge`` only if the letter without any payload is already over the bound.
        """
        data = self.model_dump_json().encode("utf-8")
        if len(data) <= max_bytes:
            return data
        raw = self.payload()
        empty = self.model_copy(
            update={
                "raw_payload": "",
                "reason": _cut(self.reason),
                "payload_truncated": True,
                "payload_bytes": self.payload_bytes if self.payload_bytes is not None else len(raw),
                "payload_sha256": self.payload_sha256 or hashlib.sha256(raw).hexdigest(),
            }
        )
        room = max_bytes - len(empty.model_dump_json().encode("utf-8"))
        if room < 0:
            raise OutputTooLarge(f"dead letter without payload is {max_bytes - room} bytes, over {max_bytes}")
        if self.payload_encoding == "base64":
            cut = base64.b64encode(raw[: room // 4 * 3]).decode("ascii")
        else:
            cut = self.raw_payload[:room]
            # JSON escapes can grow a character up to 6 bytes: shrink until the escaped text fits.
            while (size := len(json.dumps(cut, ensure_ascii=False).encode("utf-8")) - 2) > room:
                cut = cut[: max(0, len(cut) * room // size - 1)]
        for _ in range(4):
            update = {"raw_payload": cut, "payload_truncated": cut != self.raw_payload}
            data = empty.model_copy(update=update).model_dump_json().encode("utf-8")
            if len(data) <= max_bytes:
                return data
            cut = cut[: max(0, len(cut) - (len(data) - max_bytes) - 4)]
        raise OutputTooLarge(f"dead letter is {len(data)} bytes after truncation, over {max_bytes}")
