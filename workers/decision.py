"""Turning an event, its tenant policy and a score into a ``Verdict`` — the same for stream, backfill and CLI.

Rule: ``unsafe`` when the overall score reaches the policy threshold, or when any 1-vs-all category score
reaches that category's threshold. Listed categories are the codes the model decoded plus the codes whose
own threshold was reached.
"""

from __future__ import annotations

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.verdicts import CategoryVerdict, Verdict
from workers.engine import ScoreRequest, ScoreResult


def build_request(event: ConversationEvent, policy: TenantPolicy) -> ScoreRequest:
    """The scoring request for an event under its tenant's policy."""
    return ScoreRequest(
        request_id=event.event_id,
        messages=event.conversation_for_side(),
        side=event.side,
        taxonomy=policy.taxonomy,
        decode_categories_at=policy.threshold,
        category_codes=policy.scored_category_codes(),
    )


def side_skipped(event: ConversationEvent, policy: TenantPolicy) -> bool:
    """True when the tenant does not classify this event's side; it gets a verdict with ``skipped``."""
    return event.side not in policy.sides


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
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        conversation_id=event.conversation_id,
        classified=event.side,
        unsafe=unsafe,
        score=result.score,
        threshold=policy.threshold,
        categories=categories,
        unknown_codes=list(result.unknown_codes),
        policy_version=policy.version,
        policy_stale=policy_stale,
        model=model,
        latency_ms=latency_ms,
    )


def skipped_verdict(
    event: ConversationEvent, policy: TenantPolicy, *, model: str, policy_stale: bool
) -> Verdict:
    return Verdict(
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        conversation_id=event.conversation_id,
        classified=event.side,
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
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        conversation_id=event.conversation_id,
        classified=event.side,
        unsafe=policy.on_error == "fail-closed",
        score=None,
        threshold=policy.threshold,
        policy_version=policy.version,
        policy_stale=policy_stale,
        model=model,
        error=error,
    )
