"""Partial (streamed-reply) events through the decision functions; what a request carries for the cache."""

from __future__ import annotations

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from workers.decision import build_request, decide, error_verdict, skipped_verdict
from workers.engine import ScoreResult

CHUNK = ConversationEvent.model_validate(
    {
        "event_id": "e-7",
        "tenant_id": "acme",
        "conversation_id": "c-1",
        "messages": [
            {"role": "user", "content": "How do I make a cake?"},
            {"role": "assistant", "content": "First, preheat the"},
        ],
        "partial": True,
        "response_id": "reply-3",
    }
)
POLICY = TenantPolicy(tenant_id="acme", threshold=0.4)


def test_request_is_scoped_to_the_tenant_and_keyed_by_conversation() -> None:
    request = build_request(CHUNK, POLICY)
    assert (request.cache_scope, request.affinity, request.side) == ("acme", "acme:c-1", "response")


def test_every_verdict_of_a_partial_event_echoes_it() -> None:
    result = ScoreResult(request_id="e-7", score=0.9)
    verdicts = [
        decide(CHUNK, POLICY, result, model="m", latency_ms=1.0),
        error_verdict(CHUNK, POLICY, model="m", error="timeout", policy_stale=False),
        skipped_verdict(
            CHUNK, POLICY.model_copy(update={"sides": ("prompt",)}), model="m", policy_stale=False
        ),
    ]
    assert [(v.partial, v.response_id) for v in verdicts] == [(True, "reply-3")] * 3
    assert verdicts[0].unsafe  # a partial verdict is an ordinary verdict on the reply so far


def test_final_event_of_a_reply_gets_an_ordinary_verdict() -> None:
    final = CHUNK.model_copy(update={"partial": False})
    verdict = decide(final, POLICY, ScoreResult(request_id="e-7", score=0.1), model="m", latency_ms=1.0)
    assert (verdict.partial, verdict.response_id, verdict.unsafe) == (False, "reply-3", False)
