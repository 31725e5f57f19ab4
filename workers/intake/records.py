"""Raw Kafka record bytes → a ``ConversationEvent`` or a ``DeadLetter`` that says exactly why not.

Pure functions, no Kafka and no I/O: the stream worker calls them per record, the unit tests call them with
bytes. A bad record must never crash a worker or stall its partition, so every failure mode becomes a typed
dead letter carrying the raw payload and its source topic/partition/offset for replay.

``parse_record`` and ``resolve_policy`` never raise: a property test feeds them arbitrary bytes.

Checks run cheapest-first and the first failure wins: size (before decoding anything), UTF-8, strict JSON
(``strict_json``: I-JSON, nesting depth), object shape, turn count (before the full schema, so a
10 000-turn event is not validated message by message), then the pydantic schema.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from schemas.events import ID_PATTERN, TENANT_PATTERN, ConversationEvent
from schemas.verdicts import DeadLetter, DeadLetterCode
from workers.errors import PolicyInvalid, PolicyStoreUnavailable
from workers.intake import strict_json
from workers.logging import get_logger
from workers.policies.base import PolicyLookup, PolicyStore, default_policy

log = get_logger(__name__)

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted in an event; deeper ones are ``too_deep`` dead letters.

An event needs 3 levels (object → messages → message); the rest is producer metadata. The bound keeps every
later step (validation, serialisation, logging) far from Python's recursion limit.
"""

_ID = re.compile(ID_PATTERN)
_TENANT = re.compile(TENANT_PATTERN)

UnknownTenant = Literal["default", "reject"]


@dataclass(frozen=True)
class Source:
    """Where a record came from: enough to find it again and to commit past it."""

    topic: str
    partition: int
    offset: int
    key: str | None = None


def dead_letter(
    code: DeadLetterCode,
    reason: str,
    raw: bytes,
    source: Source,
    *,
    event_id: str | None = None,
    tenant_id: str | None = None,
) -> DeadLetter:
    """A dead letter for ``raw`` as received (base64 when it is not UTF-8), with its size and SHA-256."""
    payload, encoding = DeadLetter.encode_payload(raw)
    return DeadLetter(
        error_code=code,
        reason=reason,
        raw_payload=payload,
        payload_encoding=encoding,
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        source_key=source.key,
        event_id=event_id,
        tenant_id=tenant_id,
    )


def schema_reason(exc: ValidationError) -> str:
    """One line naming the first offending field, e.g. ``messages.0.role: Input should be 'user' ...``."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<event>"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first['msg']}{more}".replace("\n", " ")


def _ids(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """event_id/tenant_id of a rejected object, when well-formed, so its dead letter is findable.

    Only well-formed ids are copied: a 200 KB or surrogate-laden "id" would make the letter itself unsendable.
    """
    event_id, tenant_id = data.get("event_id"), data.get("tenant_id")
    return (
        event_id if isinstance(event_id, str) and _ID.fullmatch(event_id) else None,
        tenant_id if isinstance(tenant_id, str) and _TENANT.fullmatch(tenant_id) else None,
    )


def parse_record(
    raw: bytes | None, source: Source, *, max_event_bytes: int, max_turns: int
) -> ConversationEvent | DeadLetter:
    """Validate one record's value; never raises (anything unforeseen is a ``schema_violation``)."""
    raw = raw if raw is not None else b""
    try:
        return _parse(raw, source, max_event_bytes=max_event_bytes, max_turns=max_turns)
    except Exception as exc:  # the promise is "never raises": an unforeseen failure is still a dead letter
        log.error("intake_unexpected_error", error_type=type(exc).__name__, offset=source.offset)
        reason = f"intake could not read the record: {type(exc).__name__}: {str(exc)[:200]!r}"
        return dead_letter(DeadLetterCode.SCHEMA_VIOLATION, reason, raw, source)


def _parse(
    raw: bytes, source: Source, *, max_event_bytes: int, max_turns: int
) -> ConversationEvent | DeadLetter:
    if len(raw) > max_event_bytes:
        reason = f"payload is {len(raw)} bytes, over the limit of {max_event_bytes}"
        return dead_letter(DeadLetterCode.TOO_LARGE, reason, raw, source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"payload is not UTF-8: invalid byte at position {exc.start}"
        return dead_letter(DeadLetterCode.INVALID_UTF8, reason, raw, source)
    try:
        data = strict_json.loads(text, raw, max_depth=MAX_DEPTH)
    except strict_json.StrictJsonError as exc:
        return dead_letter(exc.code, exc.reason, raw, source)
    if not isinstance(data, dict):
        reason = f"<event>: expected a JSON object, got {type(data).__name__}"
        return dead_letter(DeadLetterCode.SCHEMA_VIOLATION, reason, raw, source)
    event_id, tenant_id = _ids(data)
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > max_turns:
        reason = f"messages: {len(messages)} turns, over the limit of {max_turns}"
        return dead_letter(
            DeadLetterCode.TOO_MANY_TURNS, reason, raw, source, event_id=event_id, tenant_id=tenant_id
        )
    try:
        return ConversationEvent.model_validate(data)
    except ValidationError as exc:
        return dead_letter(
            DeadLetterCode.SCHEMA_VIOLATION,
            schema_reason(exc),
            raw,
            source,
            event_id=event_id,
            tenant_id=tenant_id,
        )


def resolve_policy(
    event: ConversationEvent,
    store: PolicyStore,
    *,
    unknown_tenant: UnknownTenant,
    raw: bytes,
    source: Source,
) -> PolicyLookup | DeadLetter:
    """The event's tenant policy, the deployment default, or a dead letter; never raises.

    A store that is down with nothing cached for the tenant means the event cannot be scored under its
    tenant's rules. Guessing (the default policy) could apply a looser threshold than the tenant chose, so
    the event goes to the DLQ as ``scoring_failed``, from where it can be replayed once the store is back.
    """
    try:
        lookup = store.lookup(event.tenant_id)
    except PolicyInvalid as exc:
        return dead_letter(
            DeadLetterCode.POLICY_INVALID,
            str(exc).replace("\n", " ")[:500],
            raw,
            source,
            event_id=event.event_id,
            tenant_id=event.tenant_id,
        )
    except PolicyStoreUnavailable as exc:
        reason = f"policy store unavailable and no cached policy for tenant {event.tenant_id!r}: {exc}"
        return dead_letter(
            DeadLetterCode.SCORING_FAILED,
            reason.replace("\n", " "),
            raw,
            source,
            event_id=event.event_id,
            tenant_id=event.tenant_id,
        )
    except Exception as exc:  # a store bug must cost this event, not the worker
        log.error("policy_lookup_failed", tenant_id=event.tenant_id, error_type=type(exc).__name__)
        return dead_letter(
            DeadLetterCode.SCORING_FAILED,
            f"policy lookup failed: {type(exc).__name__}: {str(exc)[:200]!r}",
            raw,
            source,
            event_id=event.event_id,
            tenant_id=event.tenant_id,
        )
    if lookup is not None:
        return lookup
    if unknown_tenant == "default":
        return PolicyLookup(policy=default_policy(event.tenant_id), is_default=True)
    return dead_letter(
        DeadLetterCode.UNKNOWN_TENANT,
        f"tenant_id: no policy for tenant {event.tenant_id!r} and unknown tenants are rejected",
        raw,
        source,
        event_id=event.event_id,
        tenant_id=event.tenant_id,
    )
