"""``workers.decision.event_outcome``: every branch of what becomes of an event, as stream, backfill and
``moderate`` all apply it."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.events import ConversationEvent
from schemas.policy import Route, TenantPolicy
from schemas.taxonomy import Category, Taxonomy
from schemas.verdicts import DeadLetter, DeadLetterCode, Verdict
from workers.decision import DeadLetterReason, build_request, event_outcome
from workers.engine import ScoreResult
from workers.intake.records import Source, resolve_policy
from workers.policies.base import PolicyLookup
from workers.policies.file_store import FilePolicyStore

MODEL = "llama-guard-3 @ /models/tiny"
TAXONOMY = Taxonomy(
    categories=(
        Category(code="C1", name="Bullying"),
        Category(code="C2", name="Adult Content"),
        Category(code="C3", name="Dangerous Activities"),
    )
)


def _event(**update: Any) -> ConversationEvent:
    body: dict[str, Any] = {
        "event_id": "e-1",
        "tenant_id": "kids",
        "conversation_id": "c-1",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    }
    return ConversationEvent.model_validate({**body, **update})


def _lookup(stale: bool = False, **policy: Any) -> PolicyLookup:
    fields: dict[str, Any] = {"tenant_id": "kids", "taxonomy": TAXONOMY, "version": 3, **policy}
    return PolicyLookup(policy=TenantPolicy(**fields), stale=stale)


def _result(score: float, categories: tuple[str, ...] = (), **update: Any) -> ScoreResult:
    return ScoreResult(request_id="e-1", score=score, categories=categories, **update)


def _verdict(outcome: Verdict | DeadLetterReason) -> Verdict:
    assert isinstance(outcome, Verdict), outcome
    return outcome


def test_score_at_threshold_is_unsafe_with_decoded_categories() -> None:
    verdict = _verdict(event_outcome(_event(), _lookup(threshold=0.4), _result(0.4, ("C2",)), model=MODEL))
    assert (verdict.unsafe, verdict.score, verdict.threshold) == (True, 0.4, 0.4)
    assert [(c.code, c.name) for c in verdict.categories] == [("C2", "Adult Content")]
    assert (verdict.model, verdict.policy_version, verdict.error, verdict.skipped) == (MODEL, 3, None, None)


def test_score_below_threshold_is_safe_and_lists_no_decoded_codes() -> None:
    verdict = _verdict(event_outcome(_event(), _lookup(threshold=0.5), _result(0.49, ("C2",)), model=MODEL))
    assert verdict.unsafe is False
    assert verdict.categories == []


def test_category_threshold_makes_an_event_unsafe_below_the_overall_threshold() -> None:
    lookup = _lookup(threshold=0.9, category_thresholds={"C3": 0.2, "C1": 0.5})
    result = _result(0.1, category_scores={"C1": 0.6, "C3": 0.25})
    verdict = _verdict(event_outcome(_event(), lookup, result, model=MODEL))
    assert verdict.unsafe is True
    assert [(c.code, c.score) for c in verdict.categories] == [("C1", 0.6), ("C3", 0.25)]  # taxonomy order


def test_category_score_under_its_threshold_stays_safe() -> None:
    lookup = _lookup(threshold=0.9, category_thresholds={"C3": 0.5})
    verdict = _verdict(
        event_outcome(_event(), lookup, _result(0.1, category_scores={"C3": 0.49}), model=MODEL)
    )
    assert (verdict.unsafe, verdict.categories) == (False, [])


def test_skipped_side_needs_no_score_and_names_the_model_label() -> None:
    verdict = _verdict(event_outcome(_event(), _lookup(sides=("prompt",)), None, model=MODEL))
    assert verdict.skipped == "tenant policy does not classify the response side"
    assert (verdict.unsafe, verdict.score, verdict.model) == (False, None, MODEL)


def test_an_unscored_event_whose_side_is_classified_is_a_bug() -> None:
    with pytest.raises(ValueError, match="needs a score"):
        event_outcome(_event(), _lookup(), None, model=MODEL)


@pytest.mark.parametrize("on_error, unsafe", [("fail-closed", True), ("fail-open", False)])
@pytest.mark.parametrize("failure", ["batch", "request"])
def test_scoring_error_follows_on_error(on_error: str, unsafe: bool, failure: str) -> None:
    scored: ScoreResult | str = "ScoringError: timed out"
    if failure == "request":
        scored = _result(0.0, error="ScoringError: timed out")
    verdict = _verdict(event_outcome(_event(), _lookup(on_error=on_error), scored, model=MODEL))
    assert (verdict.unsafe, verdict.score, verdict.error) == (unsafe, None, "ScoringError: timed out")
    assert verdict.model == MODEL


@pytest.mark.parametrize("failure", ["batch", "request"])
def test_scoring_error_under_dead_letter_is_a_dead_letter_reason(failure: str) -> None:
    scored: ScoreResult | str = "boom"
    if failure == "request":
        scored = _result(0.0, error="boom")
    lookup = _lookup(on_error="dead-letter", route=Route(model="big"))
    outcome = event_outcome(_event(), lookup, scored, model=MODEL)
    assert outcome == DeadLetterReason(
        code=DeadLetterCode.SCORING_FAILED, reason="scoring failed on model pool 'big': boom"
    )


def test_stale_policy_is_marked_on_every_kind_of_verdict() -> None:
    scored = _verdict(event_outcome(_event(), _lookup(stale=True), _result(0.7), model=MODEL))
    skipped = _verdict(event_outcome(_event(), _lookup(stale=True, sides=("prompt",)), None, model=MODEL))
    failed = _verdict(event_outcome(_event(), _lookup(stale=True), "boom", model=MODEL))
    assert scored.policy_stale and skipped.policy_stale and failed.policy_stale
    assert not _verdict(event_outcome(_event(), _lookup(), _result(0.7), model=MODEL)).policy_stale


def test_unknown_tenant_gets_the_default_policy_or_a_dead_letter() -> None:
    store = FilePolicyStore({})
    source = Source("in", 0, 7)
    event = _event(tenant_id="ghost")
    default = resolve_policy(event, store, unknown_tenant="default", raw=b"{}", source=source)
    assert isinstance(default, PolicyLookup) and default.is_default
    verdict = _verdict(event_outcome(event, default, _result(0.6), model=MODEL))
    assert (verdict.unsafe, verdict.policy_version, verdict.threshold) == (True, 0, 0.5)
    rejected = resolve_policy(event, store, unknown_tenant="reject", raw=b"{}", source=source)
    assert isinstance(rejected, DeadLetter)
    assert rejected.error_code == DeadLetterCode.UNKNOWN_TENANT


def test_request_carries_the_policy_taxonomy_threshold_and_one_vs_all_codes() -> None:
    request = build_request(_event(), _lookup(threshold=0.3, category_thresholds={"C2": 0.1}).policy)
    assert (request.side, request.taxonomy, request.decode_categories_at) == ("response", TAXONOMY, 0.3)
    assert request.category_codes == ("C2",)
