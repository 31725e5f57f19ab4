"""Tenant isolation: the key/header tenant must match the payload's, and a tenant's verdict topic must be
its own, under the prefix, and none of the deployment's or Kafka's topics."""

from __future__ import annotations

import pytest

from schemas.events import ConversationEvent, Message
from schemas.policy import Route, TenantPolicy
from schemas.verdicts import DeadLetterCode
from workers.intake.records import Source
from workers.intake.tenancy import TenantSource, check_tenant, route_problem, verdict_topic_problem
from workers.settings import Settings

EVENT = ConversationEvent(
    event_id="e-1", tenant_id="acme", conversation_id="c-1", messages=(Message(role="user", content="hi"),)
)
RAW = EVENT.model_dump_json().encode()


def source(key: str | None) -> Source:
    return Source(topic="guard.conversations", partition=0, offset=7, key=key)


@pytest.mark.parametrize(
    ("tenant_source", "key", "headers", "mismatch"),
    [
        ("payload", "kidsplay:c-1", (), False),
        ("key", "acme:c-1", (), False),
        ("key", "acme", (), False),
        ("key", "kidsplay:c-1", (), True),
        ("key", None, (), True),
        ("key", "acmex:c-1", (), True),
        ("header", "kidsplay:c-1", (("tenant_id", b"acme"),), False),
        ("header", "acme:c-1", (("tenant_id", b"kidsplay"),), True),
        ("header", "acme:c-1", (("tenant_id", b"acme"), ("tenant_id", b"kidsplay")), True),
        ("header", "acme:c-1", (("other", b"acme"),), True),
    ],
)
def test_tenant_source(
    tenant_source: TenantSource, key: str | None, headers: tuple[tuple[str, bytes], ...], mismatch: bool
) -> None:
    letter = check_tenant(EVENT, RAW, source(key), tenant_source=tenant_source, headers=headers)
    if not mismatch:
        assert letter is None
        return
    assert letter is not None
    assert letter.error_code == DeadLetterCode.TENANT_MISMATCH
    assert (letter.event_id, letter.tenant_id, letter.source_offset) == ("e-1", "acme", 7)
    assert letter.raw_payload == RAW.decode() and "\n" not in letter.reason


def test_mismatch_reason_names_both_tenants() -> None:
    letter = check_tenant(EVENT, RAW, source("kidsplay:c-1"), tenant_source="key")
    assert letter is not None
    assert "'acme'" in letter.reason and "'kidsplay'" in letter.reason


PREFIX = "guard.verdicts."
RESERVED = ("guard.conversations", "guard.dlq", "guard.verdicts")


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("guard.verdicts.acme", None),
        ("guard.verdicts.acme-eu_1", None),
        ("guard.conversations", "deployment's topic"),
        ("guard_dlq", "deployment's topic"),
        ("guard.verdicts", "deployment's topic"),
        ("guard.verdicts.", "must start with"),
        ("acme.verdicts", "must start with"),
        ("__consumer_offsets", "internal"),
        ("__transaction_state", "internal"),
        ("guard.verdicts.kids_eu", "tenant 'kidsplay'"),
        ("guard.verdicts.kids.eu", "tenant 'kidsplay'"),
        ("guard_verdicts_kids", "must start with"),
        ("guard.verdicts.a b", "not a valid Kafka topic"),
        ("guard.verdicts." + "x" * 240, "not a valid Kafka topic"),
        ("..", "not a valid"),
    ],
)
def test_verdict_topic_rules(topic: str, reason: str | None) -> None:
    problem = verdict_topic_problem(
        topic,
        tenant_id="acme",
        prefix=PREFIX,
        reserved=RESERVED,
        others={"kidsplay": "guard.verdicts.kids_eu"},
    )
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem and "\n" not in problem


def test_route_problem_uses_the_deployment_settings_and_allows_the_shared_topic() -> None:
    settings = Settings(tenant_topic_prefix="t.", input_topic="in", dlq_topic="dlq")
    assert route_problem(TenantPolicy(tenant_id="acme"), settings, []) is None
    own = TenantPolicy(tenant_id="acme", route=Route(verdict_topic="t.acme"))
    assert route_problem(own, settings, [own]) is None  # re-setting one's own topic is fine
    thief = TenantPolicy(tenant_id="evil", route=Route(verdict_topic="t.acme"))
    assert "tenant 'acme'" in (route_problem(thief, settings, [own]) or "")
    assert "prefix 'guard.verdicts.'" in (route_problem(own, Settings(), [own]) or "")


@pytest.mark.parametrize("topic", [".", "..", "__consumer_offsets"])
def test_route_schema_refuses_kafka_reserved_names(topic: str) -> None:
    with pytest.raises(ValueError, match="reserved by Kafka"):
        Route(verdict_topic=topic)
