"""Records for the fault suite and the chaos script: valid events, poison of every kind, oversized records.

Each record carries the identity its answer will have, so the chaos runner can tell answered from lost
and count duplicates: a valid event is answered by a verdict (or dead letter) with its ``event_id``; a
record intake must refuse is answered by a dead letter naming its partition and offset.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from workers.settings import Settings


@dataclass(frozen=True)
class Record:
    """One input record; ``event_id`` is None for a record whose answer can only name its offset."""

    key: bytes | None
    value: bytes
    event_id: str | None


def valid(tenant: str, n: int, *, prefix: str = "ev") -> list[Record]:
    """``n`` valid events of ``tenant``, two conversations, prompt and response sides alternating."""
    out = []
    run = uuid.uuid4().hex[:6]
    for i in range(n):
        event_id = f"{prefix}-{run}-{i}"
        messages = [{"role": "user", "content": f"How do I bake bread, attempt {i}?"}]
        if i % 2:
            messages.append({"role": "assistant", "content": "Flour, water, salt, yeast, and patience."})
        body = {
            "event_id": event_id,
            "tenant_id": tenant,
            "conversation_id": f"c{i % 2}",
            "messages": messages,
        }
        out.append(Record(f"{tenant}:c{i % 2}".encode(), json.dumps(body).encode(), event_id))
    return out


def poison() -> list[Record]:
    """One record of each kind intake must dead-letter instead of crashing on."""
    event = json.loads(valid("chaos", 1)[0].value)
    kinds = [
        b"[" * 5000,  # deep nesting: RecursionError in json.loads
        b'{"m": ' + b"[" * 100 + b"]" * 100 + b"}",  # deeper than intake's bound
        b'{"event_id": "a", "event_id": "b"}',  # duplicate keys
        b'{"x": NaN}',
        b'{"x": 1e999}',
        b'{"x": ' + b"9" * 5000 + b"}",  # over Python's int-digits limit
        b'{"x": "\\ud800"}',  # escaped lone surrogate
        b'{"x": "a\x01b"}',  # raw control character
        b"[1, 2, 3]",  # non-object root
        b"\xff\xfe\x00binary",  # not UTF-8
        b"",  # empty value
        json.dumps({**event, "metadata": 5, "extra": 1}).encode(),  # metadata of the wrong type
        json.dumps({**event, "tenant_id": "x" * 5000}).encode(),  # 5 KB "tenant id"
        json.dumps({**event, "messages": []}).encode(),
    ]
    return [Record(None, value, None) for value in kinds]


def oversized() -> list[Record]:
    """Valid Kafka records over max_event_bytes whose dead letters would exceed 1 MB uncut."""
    text = b'{"messages": "' + b"\\u0000" * 150_000 + b'"}'  # 900 KB, escapes to ~1.05 MB
    binary = bytes(range(256)) * 3_500  # 896 KB, base64 grows it by a third
    return [Record(None, text, None), Record(None, binary, None)]


def produce(settings: Settings, records: list[Record], via: str) -> list[tuple[int, int]]:
    """Send ``records``; ``via``: ``kafka-python`` or ``librdkafka:<codec>``. Returns (partition, offset)s."""
    from workers.clients.kafka import ensure_topics

    ensure_topics(settings, [settings.input_topic])
    if via == "kafka-python":
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=2)
        futures = [producer.send(settings.input_topic, key=r.key, value=r.value) for r in records]
        producer.flush()
        placed = [(f.get(30).partition, f.get(30).offset) for f in futures]
        producer.close()
        return placed
    from confluent_kafka import Producer

    codec = via.split(":", 1)[1]
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "compression.type": codec, "linger.ms": 20}
    )
    placed: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def delivered(index: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                placed[index] = (msg.partition(), msg.offset())
            else:
                errors.append(str(err))

        return report

    for index, record in enumerate(records):
        producer.produce(settings.input_topic, record.value, record.key, on_delivery=delivered(index))
    producer.flush(30)
    if None in placed:
        raise RuntimeError(f"librdkafka ({codec}) could not deliver every record: {errors[:3]}")
    return [p for p in placed if p is not None]
