"""``guardstream produce FILE.jsonl``: send conversation events from a file to the input topic.

Each non-empty line is sent as-is, byte for byte, keyed ``tenant_id:conversation_id`` when the line is a
JSON object naming both (same conversation → same partition → verdicts in order). Lines that are not
valid events are sent too, without a key, so the dead-letter path can be demonstrated and tested: the stream,
not the producer, is what decides a record is bad.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from pipelines.errors import user_errors
from workers.errors import InputError
from workers.settings import Settings, get_settings


class ProduceReport(BaseModel):
    """What ``produce_file`` sent: all lines, and how many had no usable key (likely dead letters)."""

    topic: str
    sent: int
    keyless: int


def event_key(line: bytes) -> bytes | None:
    """``tenant_id:conversation_id`` of a JSON event line, None when the line doesn't name both."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    tenant, conversation = data.get("tenant_id"), data.get("conversation_id")
    if isinstance(tenant, str) and isinstance(conversation, str):
        return f"{tenant}:{conversation}".encode()
    return None


def read_records(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per non-empty line of a JSONL file, values as raw bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    for line in data.split(b"\n"):
        value = line.rstrip(b"\r")
        if value.strip():
            yield event_key(value), value


def produce_records(
    settings: Settings, records: Iterator[tuple[bytes | None, bytes]], *, topic: str | None = None
) -> ProduceReport:
    """Send records with acks=all and wait until the broker has them all."""
    from workers.clients import kafka as kafka_clients

    target = topic or settings.input_topic
    kafka_clients.ensure_topics(settings, [target])
    producer = kafka_clients.producer(settings, client_id="guardstream-produce")
    sent = keyless = 0
    try:
        futures = []
        for key, value in records:
            futures.append(producer.send(target, key=key, value=value))
            sent += 1
            keyless += key is None
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
    return ProduceReport(topic=target, sent=sent, keyless=keyless)


def produce_file(settings: Settings, path: Path, *, topic: str | None = None) -> ProduceReport:
    return produce_records(settings, read_records(path), topic=topic)


def produce_command(
    files: Annotated[list[Path], typer.Argument(help="JSONL files, one event per line.")],
    topic: Annotated[str | None, typer.Option(help="Topic to send to; default: the input topic.")] = None,
) -> None:
    """Send conversation events (and, verbatim, any malformed lines) from JSONL files."""
    settings = get_settings()
    with user_errors():
        for path in files:
            report = produce_file(settings, path, topic=topic)
            typer.echo(f"{path}: sent {report.sent} records to {report.topic} ({report.keyless} without key)")


def register(app: typer.Typer) -> None:
    app.command("produce")(produce_command)
