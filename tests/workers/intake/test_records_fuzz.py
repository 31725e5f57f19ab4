"""Intake's promise, fuzzed: any bytes give an event or a dead letter, quickly, and the answer can be sent.

The hypothesis ``deadline`` is the time bound of the property (per example, generous for a loaded CI box);
``max_examples`` bounds the test's own run time.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import ConversationEvent
from schemas.verdicts import DeadLetter
from workers.intake.records import Source, parse_record

SRC = Source(topic="guard.conversations", partition=0, offset=7, key=None)
LIMITS = {"max_event_bytes": 64 * 1024, "max_turns": 8}
OUTPUT_BYTES = 16 * 1024

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", ""]), "content": st.text(max_size=60)}
    ),
    max_size=10,
)
near_events = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=12) | st.integers(),
        "tenant_id": st.sampled_from(["acme", "kids-play", "bad tenant", ""]),
        "conversation_id": st.text(min_size=1, max_size=12),
        "messages": messages,
    },
    optional={"classify": st.sampled_from(["prompt", "response", "both"]), "metadata": json_values},
)


def _encoded(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    inner = b"[" * depth + b"]" * depth if opener == b"[" else b'{"a":' * depth + b"1" + closer * depth
    return b'{"metadata": ' + inner + b"}"


records = st.one_of(
    st.binary(max_size=2048),
    st.builds(_encoded, json_values, st.booleans()),
    st.builds(_encoded, near_events, st.booleans()),
    st.builds(_nested, st.integers(1, 3000), st.sampled_from([b"[", b"{"])),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@settings(
    max_examples=300,
    deadline=timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records)
def test_any_bytes_give_an_event_or_a_sendable_dead_letter(raw: bytes) -> None:
    out = parse_record(raw, SRC, **LIMITS)
    if isinstance(out, DeadLetter):
        assert out.source_offset == 7 and out.payload_bytes == len(raw)
        assert len(out.to_bytes(OUTPUT_BYTES)) <= OUTPUT_BYTES
    else:
        assert isinstance(out, ConversationEvent)
        out.model_dump_json().encode("utf-8")  # an accepted event can always be logged and re-serialised
