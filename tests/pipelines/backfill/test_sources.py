"""File discovery and shard planning: stable ranges that cover every record exactly once."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.backfill.rows import ROW_SCHEMA, RowLimits, by_conversation, read_shard, validate_line
from pipelines.backfill.sources import discover, plan_shards
from tests.pipelines.backfill.archive import GeneratedArchive
from workers.errors import InputError

LIMITS = RowLimits(max_event_bytes=2048, max_turns=64)


def test_discover_finds_supported_files_recursively_and_skips_markers(archive: GeneratedArchive) -> None:
    files = discover([str(archive.root)])
    assert [Path(f.url).name for f in files] == ["part-000.jsonl", "part-001.jsonl.gz", "part-002.parquet"]
    assert [f.format for f in files] == ["jsonl", "jsonl.gz", "parquet"]
    assert all(f.size > 0 for f in files)


def test_discover_deduplicates_a_file_named_twice(archive: GeneratedArchive) -> None:
    one = str(archive.root / "2026-10" / "part-000.jsonl")
    assert len(discover([one, str(archive.root / "2026-10")])) == 2


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.jsonl", "no such file"), ("notes.txt", "not a .jsonl")],
)
def test_discover_rejects_what_it_cannot_read(tmp_path: Path, name: str, message: str) -> None:
    if name.endswith(".txt"):
        (tmp_path / name).write_text("hello")
    with pytest.raises(InputError, match=message):
        discover([str(tmp_path / name)])


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no \.jsonl"):
        discover([str(tmp_path)])


def test_a_url_without_its_filesystem_package_names_the_package() -> None:
    with pytest.raises(InputError, match="s3fs"):
        discover(["s3://archive-bucket/2026-10/"])


def test_shards_cover_every_record_once(archive: GeneratedArchive) -> None:
    shards = plan_shards(discover([str(archive.root)]), shard_rows=30)
    assert [s.shard_id for s in shards] == list(range(len(shards)))
    assert all(1 <= s.rows <= 30 for s in shards)
    assert sum(s.rows for s in shards) == len(archive.valid) + len(archive.bad)
    records = [r for s in shards for r in read_shard(s, LIMITS).to_pylist()]
    assert len(records) == sum(s.rows for s in shards)
    valid = sorted(r["event_id"] for r in records if r["event"] is not None)
    assert valid == sorted(e["event_id"] for e in archive.valid)


def test_bad_rows_carry_their_file_and_line_or_row(archive: GeneratedArchive) -> None:
    from pipelines.backfill.rows import bad_row

    shards = plan_shards(discover([str(archive.root)]), shard_rows=25)
    found = set()
    for shard in shards:
        for record in read_shard(shard, LIMITS).to_pylist():
            if record["event"] is None:
                bad = bad_row(shard, record)
                where = ("line", bad.line) if bad.line is not None else ("row", bad.row)
                found.add((bad.source, *where, bad.error_code.value))
    assert found == set(archive.bad)


def test_gzip_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    messages = '[{"role": "user", "content": "hi"}]'
    event = f'{{"event_id": "e1", "tenant_id": "t", "conversation_id": "c", "messages": {messages}}}'
    with gzip.open(path, "wt") as fh:
        fh.write(f"\n{event}\n\n{event.replace('e1', 'e2')}\n")
    shard_a, shard_b = plan_shards(discover([str(path)]), shard_rows=1)
    assert (shard_a.start, shard_a.rows, shard_b.start, shard_b.rows) == (0, 1, 3, 1)
    rows = read_shard(shard_b, LIMITS).to_pylist()
    assert [(r["position"], r["event_id"]) for r in rows] == [(4, "e2")]


def test_tenant_option_fills_rows_without_one(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"event_id": "e1", "conversation_id": "c", "messages": [{"role": "user", "content": "hi"}]}\n'
    )
    (shard,) = plan_shards(discover([str(path)]), shard_rows=10)
    assert read_shard(shard, LIMITS).to_pylist()[0]["error_code"] == "schema_violation"
    filled = read_shard(shard, LIMITS.model_copy(update={"tenant": "acme"})).to_pylist()[0]
    assert (filled["tenant_id"], filled["error_code"]) == ("acme", None)


def test_a_shards_conversations_are_grouped_turn_by_turn() -> None:
    """Interleaved conversations come out together, earliest turn first; bad rows keep their place."""

    def event(conv: str, turns: int) -> str:
        messages = [{"role": "user", "content": f"turn {i}"} for i in range(turns)]
        return json.dumps(
            {"event_id": f"{conv}{turns}", "tenant_id": "t", "conversation_id": conv, "messages": messages}
        )

    events = [event("a", 2), event("b", 1), "{", event("a", 1), event("b", 3), event("a", 3)]
    table = pa.Table.from_pylist(
        [{"shard_id": 0, "position": i, **validate_line(e.encode(), LIMITS)} for i, e in enumerate(events)],
        schema=ROW_SCHEMA,
    )
    grouped = by_conversation(table).to_pylist()
    assert [r["position"] for r in grouped] == [3, 0, 5, 1, 4, 2]
    assert sorted(r["position"] for r in grouped) == list(range(6))
