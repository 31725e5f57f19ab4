"""Reading one shard's rows and validating them into events or bad-row records.

Validation is the stream's own (``workers.intake.parse_record``: size, UTF-8, JSON, turn count, schema), so
an archived row and the same bytes on the input topic are judged alike. A bad row is data, never an
exception: it becomes a record with its source file, line (JSONL, 1-based) or row (Parquet, 0-based) and
the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipelines.backfill.sources import ShardSpec, open_binary
from schemas.events import ConversationEvent
from schemas.verdicts import DeadLetter, DeadLetterCode
from workers.intake.records import Source, parse_record
from workers.settings import Settings

ROW_SCHEMA = pa.schema(
    [
        ("shard_id", pa.int64()),
        ("position", pa.int64()),
        ("event", pa.string()),
        ("error_code", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("encoding", pa.string()),
        ("event_id", pa.string()),
        ("tenant_id", pa.string()),
        ("conversation", pa.string()),
        ("progress", pa.int64()),
    ]
)
"""What the read stage hands the scoring stage: a validated event as JSON, or a bad row.

``conversation`` (``tenant:conversation``, the stream's key; empty for a bad row) and ``progress`` (the
characters of conversation the event carries, which grow turn by turn and chunk by chunk) are what the
grouping stages order by, so they never parse the event again."""

FILE_SOURCE = Source(topic="<file>", partition=0, offset=0)
"""Placeholder provenance for ``parse_record``; backfill tracks the file and line itself."""


class RowLimits(BaseModel):
    """The per-row checks, taken from ``Settings`` so backfill and stream reject the same rows."""

    model_config = ConfigDict(frozen=True)

    max_event_bytes: int = Field(ge=1)
    max_turns: int = Field(ge=1)
    tenant: str | None = Field(default=None, description="Fills tenant_id where a row has none.")

    @classmethod
    def from_settings(cls, settings: Settings, tenant: str | None) -> RowLimits:
        return cls(max_event_bytes=settings.max_event_bytes, max_turns=settings.max_turns, tenant=tenant)


class BadRow(BaseModel):
    """One line of ``DIR/errors/shard-NNNNN.jsonl``: enough to find, fix and replay the row."""

    model_config = ConfigDict(frozen=True)

    source: str
    line: int | None = Field(default=None, description="1-based line of a JSONL file.")
    row: int | None = Field(default=None, description="0-based row of a Parquet file.")
    error_code: DeadLetterCode
    reason: str
    raw_payload: str
    payload_encoding: str
    event_id: str | None = None
    tenant_id: str | None = None


def _record(result: ConversationEvent | DeadLetter, raw: bytes) -> dict[str, Any]:
    """The read stage's record; a bad row keeps the bytes as found (oversize rows cut at the limit)."""
    if isinstance(result, ConversationEvent):
        return {
            "event": result.model_dump_json(),
            "event_id": result.event_id,
            "tenant_id": result.tenant_id,
            "conversation": result.key,
            "progress": sum(len(m.content) for m in result.messages),
        }
    payload, encoding = DeadLetter.encode_payload(raw)
    return {
        "error_code": result.error_code.value,
        "reason": result.reason,
        "raw": payload,
        "encoding": encoding,
        "event_id": result.event_id,
        "tenant_id": result.tenant_id,
        "conversation": "",
        "progress": 0,
    }


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _with_tenant(raw: bytes, tenant: str) -> bytes:
    """``raw`` with ``tenant_id`` filled in when it is a JSON object without one; else unchanged."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw
    if not isinstance(data, dict) or data.get("tenant_id") is not None:
        return raw
    return json.dumps({**data, "tenant_id": tenant}, ensure_ascii=False).encode("utf-8")


def validate_line(raw: bytes, limits: RowLimits) -> dict[str, Any]:
    """One JSONL line (without its newline) as an event or bad-row record, judged as the stream would."""
    prepared = (
        _with_tenant(raw, limits.tenant) if limits.tenant and len(raw) <= limits.max_event_bytes else raw
    )
    result = parse_record(
        prepared, FILE_SOURCE, max_event_bytes=limits.max_event_bytes, max_turns=limits.max_turns
    )
    return _record(result, raw[: limits.max_event_bytes])


def validate_row(row: dict[str, Any], limits: RowLimits) -> dict[str, Any]:
    """One Parquet row; nulls count as absent fields, as they would be in the JSON the producer meant."""
    data = {key: value for key, value in row.items() if value is not None}
    if limits.tenant and "tenant_id" not in data:
        data["tenant_id"] = limits.tenant
    raw = json.dumps(data, default=_iso, ensure_ascii=False).encode("utf-8")
    result = parse_record(
        raw, FILE_SOURCE, max_event_bytes=limits.max_event_bytes, max_turns=limits.max_turns
    )
    return _record(result, raw[: limits.max_event_bytes])


def _jsonl_records(shard: ShardSpec, limits: RowLimits) -> Iterator[dict[str, Any]]:
    with open_binary(shard.source) as fh:
        if shard.source.format == "jsonl":
            fh.seek(shard.byte_offset)
            index = shard.start
        else:
            index = 0
        for line in fh:
            if index >= shard.stop:
                break
            if index >= shard.start and line.strip():
                yield {"position": index + 1, **validate_line(line.rstrip(b"\r\n"), limits)}
            index += 1


def _parquet_records(shard: ShardSpec, limits: RowLimits) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    groups: list[pa.Table] = []
    first = skip = 0
    with open_binary(shard.source) as fh:
        parquet = pq.ParquetFile(fh)
        for index in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(index).num_rows
            if first < shard.stop and first + size > shard.start:
                skip = skip if groups else shard.start - first
                groups.append(parquet.read_row_group(index))
            first += size
    table = pa.concat_tables(groups).slice(skip, shard.stop - shard.start)
    for offset, row in enumerate(table.to_pylist()):
        yield {"position": shard.start + offset, **validate_row(row, limits)}


def read_shard(shard: ShardSpec, limits: RowLimits) -> pa.Table:
    """Every record of a shard, in file order, as a table in ``ROW_SCHEMA``."""
    reader = _parquet_records if shard.source.format == "parquet" else _jsonl_records
    records = [{"shard_id": shard.shard_id, **record} for record in reader(shard, limits)]
    return pa.Table.from_pylist(records, schema=ROW_SCHEMA)


def bad_row(shard: ShardSpec, record: dict[str, Any]) -> BadRow:
    """The errors-file entry for a bad-row record of ``shard``."""
    where = "row" if shard.source.format == "parquet" else "line"
    return BadRow(
        source=shard.source.url,
        error_code=DeadLetterCode(record["error_code"]),
        reason=record["reason"],
        raw_payload=record["raw"] or "",
        payload_encoding=record["encoding"] or "utf-8",
        event_id=record.get("event_id"),
        tenant_id=record.get("tenant_id"),
        **{where: int(record["position"])},
    )


def by_conversation(table: pa.Table) -> pa.Table:
    """Rows with each conversation's events together, earliest turn (least ``progress``) first.

    An archive holding one conversation at several turns scores it cheapest turn by turn: the scorer
    reuses the keys/values of the previous turn when the next one comes in the same or a later call of
    the same replica. The read stage applies it to each shard (one shard is one block, read by one
    replica); ``--group-conversations archive`` applies it to each conversation's group after a shuffle
    that brings its rows together from every shard. Conversations keep the order of their first row; bad
    rows stay where they were. Output order does not matter: rows carry their shard and position.
    """
    conversations = table.column("conversation").to_pylist()
    progress = table.column("progress").to_pylist()
    first: dict[str, int] = {}
    keys: list[tuple[int, int, int]] = []
    for index, (conversation, done) in enumerate(zip(conversations, progress, strict=True)):
        if not conversation:
            keys.append((index, 0, index))
        else:
            keys.append((first.setdefault(conversation, index), done, index))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return table.take(pa.array(order, type=pa.int64()))
