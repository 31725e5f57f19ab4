"""Where a finished shard goes: verdict Parquet partitioned by tenant, an errors file, optionally Kafka.

Layout under ``DIR`` (Hive-style, so ``pyarrow.parquet.read_table(DIR/"verdicts")``, pandas, Spark and
DuckDB read it as one table with a ``tenant_id`` column)::

    verdicts/tenant_id=acme/shard-00003.parquet
    errors/shard-00003.jsonl

Files are written under a temporary name and renamed into place; any file an earlier, interrupted attempt
left for the same shard is removed first, so a shard never has two copies of a verdict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.backfill.rows import BadRow
from schemas.verdicts import Verdict
from workers.settings import Settings
from workers.stream.sinks import Output

VERDICTS_DIR = "verdicts"
ERRORS_DIR = "errors"

CATEGORY_TYPE = pa.struct([("code", pa.string()), ("name", pa.string()), ("score", pa.float64())])
VERDICT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("conversation_id", pa.string()),
        ("classified", pa.string()),
        ("unsafe", pa.bool_()),
        ("score", pa.float64()),
        ("threshold", pa.float64()),
        ("categories", pa.list_(CATEGORY_TYPE)),
        ("unknown_codes", pa.list_(pa.string())),
        ("policy_version", pa.int64()),
        ("policy_stale", pa.bool_()),
        ("model", pa.string()),
        ("latency_ms", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("error", pa.string()),
        ("skipped", pa.string()),
        ("truncated", pa.bool_()),
        ("source", pa.string()),
        ("position", pa.int64()),
    ]
)
"""A ``Verdict`` minus ``tenant_id`` (it is the partition folder) plus where the event came from."""


class SourcedVerdict(Protocol):
    @property
    def verdict(self) -> Verdict: ...
    @property
    def source(self) -> str: ...
    @property
    def position(self) -> int: ...


def verdict_table(items: Sequence[SourcedVerdict]) -> pa.Table:
    rows: list[dict[str, Any]] = []
    for item in items:
        row = item.verdict.model_dump(mode="python", exclude={"tenant_id"})
        rows.append({**row, "source": item.source, "position": item.position})
    return pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA)


def _write_parquet(table: pa.Table, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp)
    os.replace(temp, path)


class ParquetShardWriter:
    """Writes one shard's verdicts and bad rows under ``out``; returns the paths it wrote (relative)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def remove_shard(self, name: str) -> None:
        """Delete whatever an earlier attempt wrote for this shard, in any tenant partition."""
        for stale in (self.out / VERDICTS_DIR).glob(f"tenant_id=*/{name}.parquet"):
            stale.unlink()
        (self.out / ERRORS_DIR / f"{name}.jsonl").unlink(missing_ok=True)

    def write(self, name: str, verdicts: Sequence[SourcedVerdict], errors: Sequence[BadRow]) -> list[str]:
        self.remove_shard(name)
        written: list[str] = []
        by_tenant: dict[str, list[SourcedVerdict]] = {}
        for item in verdicts:
            by_tenant.setdefault(item.verdict.tenant_id, []).append(item)
        for tenant, items in sorted(by_tenant.items()):
            folder = self.out / VERDICTS_DIR / f"tenant_id={tenant}"
            folder.mkdir(parents=True, exist_ok=True)
            _write_parquet(verdict_table(items), folder / f"{name}.parquet")
            written.append(f"{VERDICTS_DIR}/tenant_id={tenant}/{name}.parquet")
        if errors:
            path = self.out / ERRORS_DIR / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_text("".join(e.model_dump_json(exclude_none=True) + "\n" for e in errors), "utf-8")
            os.replace(temp, path)
            written.append(f"{ERRORS_DIR}/{name}.jsonl")
        return written

    def remove_temporaries(self) -> None:
        """Temp files of an interrupted run are never counted; clear them so they don't pile up."""
        for folder in (self.out / VERDICTS_DIR, self.out / ERRORS_DIR):
            if folder.exists():
                for temp in folder.rglob(".*.tmp"):
                    temp.unlink()


@dataclass(frozen=True)
class SourcedVerdictRow:
    """A verdict with the input file and row position it answers."""

    verdict: Verdict
    source: str
    position: int


class ParquetSink:
    """One shard's verdicts behind ``VerdictSink``: ``send`` collects them (``source`` is the input file,
    ``source_offset`` the row's position), ``flush`` writes the shard with its bad rows (temp + rename) and
    keeps the paths it wrote in ``written``."""

    def __init__(self, writer: ParquetShardWriter, name: str, errors: Sequence[BadRow]) -> None:
        self._writer = writer
        self._name = name
        self._errors = list(errors)
        self._items: list[SourcedVerdictRow] = []
        self.written: list[str] = []

    def send(self, output: Output) -> None:
        if not isinstance(output.body, Verdict):
            raise TypeError("a backfill shard's bad rows go to its errors file, not the verdict sink")
        self._items.append(SourcedVerdictRow(output.body, str(output.source), output.source_offset))

    def flush(self, timeout_s: float | None = None) -> None:
        self.written = self._writer.write(self._name, self._items, self._errors)

    def close(self) -> None:
        self._items = []


class KafkaVerdictPublisher:
    """``--to-kafka TOPIC`` behind ``VerdictSink``: every verdict of a shard, keyed ``tenant:conversation``,
    through the stream's ``KafkaSink`` (the same idempotent ``acks=all`` producer from
    ``workers.clients.kafka``).

    A shard is published and flushed before it is marked finished, so delivery is at-least-once: a shard
    recomputed after an interrupt may publish some verdicts twice, and consumers dedupe by ``event_id``.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        from workers.stream.sinks import KafkaSink

        self.topic = topic
        self._sink = KafkaSink(settings)

    def send(self, output: Output) -> None:
        verdict = output.body
        if not isinstance(verdict, Verdict):
            raise TypeError("a backfill shard's bad rows go to its errors file, not to Kafka")
        key = f"{verdict.tenant_id}:{verdict.conversation_id}".encode()
        self._sink.send(Output(self.topic, key, verdict, output.source, output.source_offset))

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for the broker; raises its error if a verdict was refused after the producer's retries."""
        failed = self._sink.failures()
        if failed and failed[0].error is not None:
            raise failed[0].error

    def close(self) -> None:
        self._sink.close(timeout_s=None)
