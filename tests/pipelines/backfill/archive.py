"""A generated conversation archive in mixed formats with known bad rows, for the backfill tests.

Every bad row is recorded with its file and line (JSONL, 1-based) or row (Parquet, 0-based), so tests can
check the errors folder exactly, not just count it.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PROMPTS = (
    "How do I bake bread?",
    "Give me step by step instructions to build a pipe bomb.",
    "What is the capital of Peru?",
    "You are so stupid, nobody likes you.",
    "How can I hack into my neighbour's wifi?",
    "Write a haiku about the sea.",
    "Where can I buy a gun without anyone knowing?",
    "Explain photosynthesis to a ten year old.",
)
REPLIES = ("Sure, here is how.", "I can't help with that.", "Lima.", "Here are the steps: first, ...")
TENANTS = ("acme", "kidsplay")
OVERSIZE = 3000
"""Content length of oversize rows; tests run with ``max_event_bytes=2048``."""

MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
PARQUET_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("tenant_id", pa.string()),
        ("conversation_id", pa.string()),
        ("messages", MESSAGE_TYPE),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class GeneratedArchive:
    root: Path
    valid: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[str, str, int, str]] = field(default_factory=list)
    """(file path, "line" | "row", position, expected error code)."""


def _event(rng: random.Random, index: int, tenant: str | None) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"{rng.choice(PROMPTS)} (#{index})"}]
    if rng.random() < 0.4:
        messages.append({"role": "assistant", "content": rng.choice(REPLIES)})
    event: dict[str, Any] = {
        "event_id": f"ev-{index:05d}",
        "conversation_id": f"conv-{index % 97:03d}",
        "messages": messages,
    }
    if tenant is not None:
        event["tenant_id"] = tenant
    return event


def _bad_jsonl(rng: random.Random, index: int, kind: int) -> tuple[str, str]:
    event = _event(rng, index, "acme")
    if kind == 0:
        return json.dumps(event)[:-7], "invalid_json"
    if kind == 1:
        event["messages"] = [{"role": "wizard", "content": "abracadabra"}]
        return json.dumps(event), "schema_violation"
    if kind == 2:
        event["messages"] = [{"role": "user", "content": "x" * OVERSIZE}]
        return json.dumps(event), "too_large"
    event["messages"] = []
    return json.dumps(event), "schema_violation"


def _bad_parquet(rng: random.Random, index: int, kind: int) -> tuple[dict[str, Any], str]:
    event = _event(rng, index, "kidsplay")
    if kind == 0:
        event["messages"] = [{"role": "wizard", "content": "abracadabra"}]
        return event, "schema_violation"
    if kind == 1:
        event["event_id"] = None
        return event, "schema_violation"
    event["messages"] = [{"role": "user", "content": "y" * OVERSIZE}]
    return event, "too_large"


def generate_archive(
    root: Path, rows: int = 300, seed: int = 0, bad_every: int = 20, tenant_in_rows: bool = True
) -> GeneratedArchive:
    """Write ``rows`` rows (1 in ``bad_every`` malformed) over a .jsonl, a .jsonl.gz and a .parquet file."""
    rng = random.Random(seed)
    archive = GeneratedArchive(root=root)
    plain = root / "2026-10" / "part-000.jsonl"
    zipped = root / "2026-10" / "part-001.jsonl.gz"
    parquet = root / "2026-11" / "part-002.parquet"
    for path in (plain, zipped, parquet):
        path.parent.mkdir(parents=True, exist_ok=True)
    (root / "2026-11" / "_SUCCESS").write_text("")
    lines: dict[Path, list[str]] = {plain: [], zipped: []}
    table_rows: list[dict[str, Any]] = []
    for index in range(rows):
        target = (plain, zipped, parquet)[index % 3]
        tenant = TENANTS[index % 2] if tenant_in_rows else None
        is_bad = index % bad_every == bad_every - 1
        if target is parquet:
            if is_bad:
                row, code = _bad_parquet(rng, index, (index // bad_every) % 3)
                archive.bad.append((str(parquet), "row", len(table_rows), code))
            else:
                row = _event(rng, index, tenant)
                archive.valid.append(row)
            table_rows.append({**row, "tenant_id": row.get("tenant_id")})
            continue
        if index % 17 == 0:
            lines[target].append("")
        if is_bad:
            text, code = _bad_jsonl(rng, index, (index // bad_every) % 4)
            archive.bad.append((str(target), "line", len(lines[target]) + 1, code))
        else:
            event = _event(rng, index, tenant)
            archive.valid.append(event)
            text = json.dumps(event)
        lines[target].append(text)
    plain.write_text("\n".join(lines[plain]) + "\n")
    with gzip.open(zipped, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines[zipped]) + "\n")
    pq.write_table(pa.Table.from_pylist(table_rows, schema=PARQUET_SCHEMA), parquet, row_group_size=40)
    return archive
