"""What becomes of an event: its tenant policy and its score (or why it has none) → a ``Verdict`` or a
dead-letter reason. Stream, backfill and ``guardstream moderate`` all call ``event_outcome``, so a tenant's
rules give the same answer on every path.

Rule: ``unsafe`` when the overall score reaches the policy threshold, or when any 1-vs-all category score
reaches that category's threshold. Listed categories are the codes the model decoded plus the codes whose
own threshold was reached. A side the policy does not classify gets a ``skipped`` verdict; a scoring failure
gets the policy's ``on_error``: an unsafe (fail-closed) or safe (fail-open) verdict with ``error`` set, or a
``scoring_failed`` dead letter.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.verdicts import CategoryVerdict, DeadLetterCode, Verdict
from workers.engine import ScoreRequest, ScoreResult
from workers.logging import get_logger
from workers.policies.base import PolicyLookup

log = get_logger(__name__)


class DeadLetterReason(BaseModel):
    """An event that gets no verdict: why, for the caller to file with the raw record it holds."""

    model_config = ConfigDict(frozen=True)

    code: DeadLetterCode
    reason: str


Outcome = Verdict | DeadLetterReason


def build_request(event: ConversationEvent, policy: TenantPolicy) -> ScoreRequest:
    """The scoring request for an event under its tenant's policy.

    The tenant is the cache scope (its cached keys/values are its own) and ``tenant:conversation`` the
    affinity, so a pool keeps a conversation on one replica and its next event reuses this one's.
    """
    return ScoreRequest(
        request_id=event.event_id,
        messages=event.conversation_for_side(),
        side=event.side,
        taxonomy=policy.taxonomy,
        decode_categories_at=policy.threshold,
        category_codes=policy.scored_category_codes(),
        cache_scope=event.tenant_id,
        affinity=event.key,
    )


def _identity(event: ConversationEvent) -> dict[str, Any]:
    """The fields every verdict repeats from its event, the streamed-reply markers included: an
    application cuts reply ``response_id`` the moment one of its partial verdicts is unsafe."""
    return {
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "conversation_id": event.conversation_id,
        "classified": event.side,
        "partial": event.partial,
        "response_id": event.response_id,
    }


def side_skipped(event: ConversationEvent, policy: TenantPolicy) -> bool:
    """True when the tenant does not classify this event's side; it gets a verdict with ``skipped``."""
    return event.side not in policy.sides


def event_outcome(
    event: ConversationEvent,
    lookup: PolicyLookup,
    scored: ScoreResult | str | None,
    *,
    model: str,
    latency_ms: float = 0.0,
) -> Outcome:
    """The event's verdict or dead-letter reason.

    ``scored`` is the engine's result, or a string saying why the event's batch could not be scored; it is
    ignored (and may be None) when the policy skips the event's side. ``model`` is the model label verdicts
    name (``Engine.model_name``), the same whether the event was scored, skipped or failed.
    """
    policy, stale = lookup.policy, lookup.stale
    if side_skipped(event, policy):
        return skipped_verdict(event, policy, model=model, policy_stale=stale)
    if scored is None:
        raise ValueError(f"event {event.event_id!r} needs a score or a scoring error")
    error = scored if isinstance(scored, str) else scored.error
    if error is None and isinstance(scored, ScoreResult):
        return decide(event, policy, scored, model=model, latency_ms=latency_ms, policy_stale=stale)
    pool = policy.route.model
    log.warning(
        "scoring_failed",
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        pool=pool,
        on_error=policy.on_error,
        error=error,
    )
    if policy.on_error == "dead-letter":
        reason = f"scoring failed on model pool {pool!r}: {error}"
        return DeadLetterReason(code=DeadLetterCode.SCORING_FAILED, reason=reason)
    return error_verdict(event, policy, model=model, error=str(error), policy_stale=stale)


def decide(
    event: ConversationEvent,
    policy: TenantPolicy,
    result: ScoreResult,
    *,
    model: str,
    latency_ms: float,
    policy_stale: bool = False,
) -> Verdict:
    names = {c.code: c.name for c in policy.taxonomy.resolve()}
    over_category = {
        code
        for code, threshold in policy.category_thresholds.items()
        if result.category_scores.get(code, 0.0) >= threshold
    }
    unsafe = result.score >= policy.threshold or bool(over_category)
    listed = list(result.categories) if result.score >= policy.threshold else []
    listed += sorted(over_category - set(listed), key=list(names).index)
    categories = [
        CategoryVerdict(code=code, name=names[code], score=result.category_scores.get(code))
        for code in listed
    ]
    return Verdict(
        **_identity(event),
        unsafe=unsafe,
        score=result.score,
        threshold=policy.threshold,
        categories=categories,
        unknown_codes=list(result.unknown_codes),
        policy_version=policy.version,
        policy_stale=policy_stale,
        model=model,
        latency_ms=latency_ms,
        truncated=result.truncated,
    )


def skipped_verdict(
    event: ConversationEvent, policy: TenantPolicy, *, model: str, policy_stale: bool
) -> Verdict:
    return Verdict(
        **_identity(event),
        unsafe=False,
        score=None,
        threshold=policy.threshold,
        policy_version=policy.version,
        policy_stale=policy_stale,
        model=model,
        skipped=f"tenant policy does not classify the {event.side} side",
    )


def error_verdict(
    event: ConversationEvent, policy: TenantPolicy, *, model: str, error: str, policy_stale: bool
) -> Verdict:
    """Verdict when scoring was impossible: unsafe under fail-closed, safe under fail-open, error set."""
    return Verdict(
        **_identity(event),
        unsafe=policy.on_error == "fail-closed",
        score=None,
        threshold=policy.threshold,
        policy_version=policy.version,
        policy_stale=policy_stale,
        model=model,
        error=error,
    )
