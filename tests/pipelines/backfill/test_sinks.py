"""Shard outputs: a recomputed shard replaces, never duplicates, what an interrupted attempt left."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.backfill.rows import BadRow
from pipelines.backfill.sinks import ParquetShardWriter
from schemas.verdicts import CategoryVerdict, DeadLetterCode, Verdict


@dataclass(frozen=True)
class Item:
    verdict: Verdict
    source: str
    position: int


def _item(event_id: str, tenant: str) -> Item:
    verdict = Verdict(
        event_id=event_id,
        tenant_id=tenant,
        conversation_id="c",
        classified="prompt",
        unsafe=True,
        score=0.9,
        threshold=0.5,
        categories=[CategoryVerdict(code="S1", name="Violent Crimes")],
    )
    return Item(verdict, "a.jsonl", 1)


BAD = BadRow(
    source="a.jsonl",
    line=3,
    error_code=DeadLetterCode.INVALID_JSON,
    reason="payload is not JSON",
    raw_payload="{",
    payload_encoding="utf-8",
)


def test_rewriting_a_shard_replaces_its_files_in_every_partition(tmp_path: Path) -> None:
    writer = ParquetShardWriter(tmp_path)
    first = writer.write("shard-00000", [_item("e1", "acme"), _item("e2", "kidsplay")], [BAD])
    assert first == [
        "verdicts/tenant_id=acme/shard-00000.parquet",
        "verdicts/tenant_id=kidsplay/shard-00000.parquet",
        "errors/shard-00000.jsonl",
    ]
    (tmp_path / "verdicts" / "tenant_id=acme" / ".shard-00001.parquet.tmp").write_bytes(b"half")
    second = writer.write("shard-00000", [_item("e1", "acme")], [])
    writer.remove_temporaries()
    assert second == ["verdicts/tenant_id=acme/shard-00000.parquet"]
    table = pq.read_table(tmp_path / "verdicts")
    assert table.column("event_id").to_pylist() == ["e1"]
    assert table.column("categories").to_pylist() == [
        [{"code": "S1", "name": "Violent Crimes", "score": None}]
    ]
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "errors" / "shard-00000.jsonl").exists()
