"""Wire-contract rejections: every invalid input fails loudly and the error names the field at fault."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas import Category, ConversationEvent, Generation, Taxonomy, TenantPolicy

EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "tenant_id": "acme",
    "conversation_id": "c-1",
    "messages": [{"role": "user", "content": "hi"}],
}
REPLY = {"role": "assistant", "content": "Sure, here is"}
CATEGORY = {"code": "C1", "name": "Competitors", "description": "No competitor names."}


def _error(model: Any, data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"categories": [CATEGORY, CATEGORY]}, "categories"),
        ({"categories": [{**CATEGORY, "code": "c1"}]}, "code"),
        ({"categories": [{**CATEGORY, "code": "S 1"}]}, "code"),
        ({"categories": [{**CATEGORY, "code": ""}]}, "code"),
        ({"categories": [{**CATEGORY, "name": "two\nlines"}]}, "name"),
        ({"categories": [{**CATEGORY, "name": ""}]}, "name"),
        ({"categories": []}, "categories"),
        ({}, "generation"),
        ({"generation": "llama-guard-3", "categories": [CATEGORY]}, "generation"),
        ({"generation": "llama-guard-3", "codes": []}, "codes"),
        ({"generation": "llama-guard-3", "codes": ["S1", "S1"]}, "codes"),
        ({"generation": "llama-guard-2", "codes": ["S14"]}, "S14"),
        ({"generation": "llama-guard-9"}, "generation"),
        ({"categories": [{**CATEGORY, "severity": "high"}]}, "severity"),
    ],
)
def test_invalid_taxonomy_is_rejected_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert field in _error(Taxonomy, data)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"category_thresholds": {"S1": 2.0}}, "category_thresholds"),
        ({"category_thresholds": {"S99": 0.3}}, "category_thresholds"),
        (
            {
                "taxonomy": {"generation": "llama-guard-3", "codes": ["S1"]},
                "category_thresholds": {"S2": 0.3},
            },
            "S2",
        ),
        ({"taxonomy": {"categories": []}}, "taxonomy"),
        ({"sides": ["prompt", "prompt"]}, "sides"),
        ({"on_error": "ignore"}, "on_error"),
    ],
)
def test_invalid_policy_is_rejected_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert field in _error(TenantPolicy, {"tenant_id": "acme", **data})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": [{"role": "system", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": ""}]}, "content"),
        ({"messages": [{"role": "user", "content": " \n\t"}]}, "content"),
        ({"messages": []}, "messages"),
        ({"classify": "response"}, "classify"),
        ({"classify": "both"}, "classify"),
        ({"tenant_id": "a b"}, "tenant_id"),
        ({"event_id": ""}, "event_id"),
        ({"partial": True, "response_id": "r-1"}, "partial"),
        ({"partial": True, "messages": [*EVENT["messages"], REPLY]}, "response_id"),
        ({"partial": True, "messages": [*EVENT["messages"], REPLY], "classify": "prompt"}, "partial"),
        ({"response_id": "not an id"}, "response_id"),
    ],
)
def test_invalid_event_is_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    assert field in _error(ConversationEvent, {**EVENT, **change})


def test_unknown_event_fields_are_kept_in_metadata() -> None:
    event = ConversationEvent.model_validate(
        {**EVENT, "metadata": {"source": "web"}, "trace_id": "t-9", "locale": {"lang": "de"}}
    )
    assert event.metadata == {"source": "web", "trace_id": "t-9", "locale": {"lang": "de"}}


def test_explicit_metadata_wins_over_a_same_named_extra_field() -> None:
    event = ConversationEvent.model_validate({**EVENT, "metadata": {"trace_id": "a"}, "trace_id": "b"})
    assert event.metadata == {"trace_id": "a"}


def test_side_defaults_from_the_last_message() -> None:
    reply = {**EVENT, "messages": [*EVENT["messages"], {"role": "assistant", "content": "hello"}]}
    assert ConversationEvent.model_validate(reply).side == "response"
    assert ConversationEvent.model_validate(EVENT).side == "prompt"


def test_subset_taxonomy_keeps_or_renumbers_codes() -> None:
    kept = Taxonomy(generation=Generation.LG3, codes=("S2", "S10"))
    renumbered = Taxonomy(generation=Generation.LG3, codes=("S2", "S10"), renumber=True)
    assert [c.code for c in kept.resolve()] == ["S2", "S10"]
    assert [(c.code, c.name) for c in renumbered.resolve()] == [("S1", "Non-Violent Crimes"), ("S2", "Hate")]
    assert not kept.is_builtin_default


def test_categories_may_carry_examples() -> None:
    category = Category.model_validate({**CATEGORY, "examples": ["Acme is better than you."]})
    assert category.examples == ("Acme is better than you.",)
