"""Intake: every bad record becomes exactly one typed dead letter with its source; good ones parse."""

from __future__ import annotations

import base64
import json

import pytest

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.verdicts import DeadLetter, DeadLetterCode
from workers.errors import PolicyInvalid, PolicyStoreUnavailable
from workers.intake.records import Source, parse_record, resolve_policy
from workers.policies import FilePolicyStore, PolicyLookup

SRC = Source(topic="guard.conversations", partition=2, offset=41, key="acme:c-1")
LIMITS = {"max_event_bytes": 2048, "max_turns": 4}


def event_bytes(**overrides: object) -> bytes:
    data: dict[str, object] = {
        "event_id": "e-1",
        "tenant_id": "acme",
        "conversation_id": "c-1",
        "messages": [{"role": "user", "content": "hello"}],
    }
    data.update(overrides)
    return json.dumps(data).encode()


def letter(raw: bytes | None) -> DeadLetter:
    out = parse_record(raw, SRC, **LIMITS)
    assert isinstance(out, DeadLetter), out
    return out


def test_valid_event_parses_and_keeps_unknown_fields() -> None:
    out = parse_record(event_bytes(channel="web"), SRC, **LIMITS)
    assert isinstance(out, ConversationEvent)
    assert out.event_id == "e-1" and out.metadata == {"channel": "web"}


def test_dead_letter_carries_source_and_raw_payload() -> None:
    dl = letter(b"{nope")
    assert dl.error_code is DeadLetterCode.INVALID_JSON
    assert (dl.source_topic, dl.source_partition, dl.source_offset, dl.source_key) == (
        "guard.conversations",
        2,
        41,
        "acme:c-1",
    )
    assert dl.raw_payload == "{nope" and dl.payload_encoding == "utf-8"


def test_invalid_utf8_is_base64_encoded() -> None:
    raw = b'{"event_id": "\xff\xfe"}'
    dl = letter(raw)
    assert dl.error_code is DeadLetterCode.INVALID_UTF8
    assert dl.payload_encoding == "base64" and base64.b64decode(dl.raw_payload) == raw
    assert "position 14" in dl.reason


@pytest.mark.parametrize("raw", [b"", None, b"[1, 2]", b'"text"'])
def test_empty_or_non_object(raw: bytes | None) -> None:
    dl = letter(raw)
    assert dl.error_code in (DeadLetterCode.INVALID_JSON, DeadLetterCode.SCHEMA_VIOLATION)


def test_too_large_checked_before_decoding() -> None:
    dl = letter(b"\xff" * 4096)
    assert dl.error_code is DeadLetterCode.TOO_LARGE
    assert "4096 bytes" in dl.reason and "2048" in dl.reason


def test_too_many_turns_keeps_ids() -> None:
    messages = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    dl = letter(event_bytes(messages=messages))
    assert dl.error_code is DeadLetterCode.TOO_MANY_TURNS
    assert dl.event_id == "e-1" and dl.tenant_id == "acme"
    assert "5 turns" in dl.reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages.0.content"),
        ({"tenant_id": "bad tenant!"}, "tenant_id"),
        ({"event_id": 7}, "event_id"),
    ],
)
def test_schema_violation_names_the_field_in_one_line(overrides: dict[str, object], field: str) -> None:
    dl = letter(event_bytes(**overrides))
    assert dl.error_code is DeadLetterCode.SCHEMA_VIOLATION
    assert dl.reason.startswith(f"{field}:") and "\n" not in dl.reason


def test_missing_field_is_named() -> None:
    raw = json.dumps({"event_id": "e-2", "tenant_id": "acme", "messages": [{"role": "user", "content": "x"}]})
    dl = letter(raw.encode())
    assert dl.reason.startswith("conversation_id:") and dl.event_id == "e-2"


def test_sample_malformed_file_all_dead_letter() -> None:
    from pathlib import Path

    lines = (Path(__file__).parents[3] / "pipelines/samples/malformed.jsonl").read_bytes().splitlines()
    codes = [letter(line).error_code for line in lines if line.strip()]
    assert codes[0] is DeadLetterCode.INVALID_JSON
    assert set(codes[1:]) == {DeadLetterCode.SCHEMA_VIOLATION}


class DownStore:
    def lookup(self, tenant_id: str) -> PolicyLookup | None:
        raise PolicyStoreUnavailable("redis: connection refused")


def parsed() -> ConversationEvent:
    out = parse_record(event_bytes(), SRC, **LIMITS)
    assert isinstance(out, ConversationEvent)
    return out


def test_resolve_known_tenant() -> None:
    store = FilePolicyStore({"acme": TenantPolicy(tenant_id="acme", threshold=0.2)})
    out = resolve_policy(parsed(), store, unknown_tenant="reject", raw=event_bytes(), source=SRC)
    assert isinstance(out, PolicyLookup) and out.policy.threshold == 0.2 and not out.is_default


def test_unknown_tenant_default_or_reject() -> None:
    store = FilePolicyStore({})
    out = resolve_policy(parsed(), store, unknown_tenant="default", raw=event_bytes(), source=SRC)
    assert isinstance(out, PolicyLookup) and out.is_default and out.policy.tenant_id == "acme"
    dl = resolve_policy(parsed(), store, unknown_tenant="reject", raw=event_bytes(), source=SRC)
    assert isinstance(dl, DeadLetter) and dl.error_code is DeadLetterCode.UNKNOWN_TENANT
    assert dl.tenant_id == "acme" and dl.source_offset == 41


def test_store_down_without_cache_dead_letters() -> None:
    dl = resolve_policy(parsed(), DownStore(), unknown_tenant="default", raw=event_bytes(), source=SRC)
    assert isinstance(dl, DeadLetter) and dl.error_code is DeadLetterCode.SCORING_FAILED
    assert "connection refused" in dl.reason


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        (b"[" * 5000, DeadLetterCode.TOO_DEEP, "deeper than the JSON parser's limit"),
        (b'{"m": ' + b"[" * 100 + b"]" * 100 + b"}", DeadLetterCode.TOO_DEEP, "deeper than 64 levels"),
        (b'{"event_id": "a", "event_id": "b"}', DeadLetterCode.INVALID_JSON, "duplicate key 'event_id'"),
        (b'{"x": NaN}', DeadLetterCode.INVALID_JSON, "NaN is not a JSON number"),
        (b'{"x": -Infinity}', DeadLetterCode.INVALID_JSON, "-Infinity is not a JSON number"),
        (b'{"x": 1e999}', DeadLetterCode.INVALID_JSON, "does not fit a double"),
        (b'{"x": ' + b"9" * 5000 + b"}", DeadLetterCode.INVALID_JSON, "4300 digits"),
        (b'{"x": "\\ud800"}', DeadLetterCode.INVALID_JSON, "lone surrogate"),
        (b'{"\\udfff": 1}', DeadLetterCode.INVALID_JSON, "lone surrogate"),
        (b'{"x": "a\x01b"}', DeadLetterCode.INVALID_JSON, "Invalid control character"),
    ],
)
def test_json_that_parsers_disagree_on_is_a_typed_dead_letter(
    raw: bytes, code: DeadLetterCode, says: str
) -> None:
    dl = parse_record(raw, SRC, max_event_bytes=1 << 20, max_turns=4)
    assert isinstance(dl, DeadLetter), dl
    assert dl.error_code is code and says in dl.reason
    assert dl.payload_sha256 is not None and dl.payload_bytes == len(raw)


def test_surrogate_pair_and_escaped_control_characters_are_valid_text() -> None:
    messages = [{"role": "user", "content": "smile \ud83d\ude00 bell \u0007"}]
    raw = json.dumps({**json.loads(event_bytes()), "messages": messages}).encode()
    out = parse_record(raw, SRC, **LIMITS)
    assert isinstance(out, ConversationEvent)
    assert out.messages[0].content == "smile \U0001f600 bell \x07"


def test_metadata_of_the_wrong_type_with_unknown_fields_is_a_schema_violation() -> None:
    dl = letter(event_bytes(metadata=5, channel="web"))
    assert dl.error_code is DeadLetterCode.SCHEMA_VIOLATION and dl.reason.startswith("metadata:")


def test_malformed_ids_are_not_copied_into_the_dead_letter() -> None:
    dl = letter(event_bytes(event_id="x" * 1000, tenant_id="acme", messages=[]))
    assert dl.event_id is None and dl.tenant_id == "acme"


class InvalidStore:
    def lookup(self, tenant_id: str) -> PolicyLookup | None:
        raise PolicyInvalid(f"stored policy for tenant {tenant_id!r} is invalid: threshold: too big")


def test_invalid_policy_without_a_valid_one_dead_letters_as_policy_invalid() -> None:
    dl = resolve_policy(parsed(), InvalidStore(), unknown_tenant="default", raw=event_bytes(), source=SRC)
    assert isinstance(dl, DeadLetter) and dl.error_code is DeadLetterCode.POLICY_INVALID
    assert "threshold" in dl.reason and dl.tenant_id == "acme"
