"""Outputs always fit the producer's request size: dead letters cut their payload, verdicts free text."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from schemas.verdicts import DeadLetter, DeadLetterCode, OutputTooLarge, Verdict

LIMIT = 1_000_000


def letter(raw: bytes) -> DeadLetter:
    payload, encoding = DeadLetter.encode_payload(raw)
    return DeadLetter(
        error_code=DeadLetterCode.TOO_LARGE, reason="too big", raw_payload=payload, payload_encoding=encoding
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": "' + b"\\u0000" * 150_000 + b'"}',  # 900 KB that JSON-escapes to ~1.05 MB
        b'"\x01' * 450_000,  # raw control characters grow 6x when escaped
        bytes(range(256)) * 3_500,  # 896 KB of binary: base64 grows it by a third
    ],
)
def test_oversized_dead_letter_is_cut_to_fit_with_hash_of_the_whole(raw: bytes) -> None:
    dl = letter(raw)
    assert len(dl.model_dump_json().encode()) > LIMIT
    data = dl.to_bytes(LIMIT)
    assert len(data) <= LIMIT
    sent = DeadLetter.model_validate_json(data)
    assert sent.payload_truncated and sent.payload_bytes == len(raw)
    assert sent.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert raw.startswith(sent.payload()) and len(data) > LIMIT * 0.99  # cut no more than needed


def test_letter_that_fits_is_sent_unchanged() -> None:
    dl = letter(b"\xff\xfe small")
    assert dl.to_bytes(LIMIT) == dl.model_dump_json().encode()
    assert base64.b64decode(json.loads(dl.to_bytes(LIMIT))["raw_payload"]) == b"\xff\xfe small"


def test_letter_whose_reason_alone_overflows_is_refused() -> None:
    with pytest.raises(OutputTooLarge):
        letter(b"x").to_bytes(100)


def test_verdict_free_text_is_cut_and_decision_kept() -> None:
    verdict = Verdict(
        event_id="e-1",
        tenant_id="acme",
        conversation_id="c-1",
        classified="prompt",
        unsafe=True,
        threshold=0.5,
        error="boom " * 100_000,
        unknown_codes=[f"X{i}" for i in range(1000)],
    )
    data = verdict.to_bytes(50_000)
    sent = Verdict.model_validate_json(data)
    assert len(data) <= 50_000 and sent.unsafe and sent.error and len(sent.error) <= 2_000
    assert len(sent.unknown_codes) == 32
