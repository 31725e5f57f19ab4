"""End to end on a real local Ray with the tiny guard: counts, bad rows, parity, resume, force.

Each backfill run starts its replica actors (torch import, model load), which dominates test time, so
the resume test carries on into ``--force`` rather than starting another folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipelines.backfill.job import RunStats, run_backfill
from pipelines.backfill.manifest import load_manifest
from pipelines.backfill.plan import BackfillOptions
from schemas.events import ConversationEvent
from schemas.taxonomy import Generation
from schemas.verdicts import Verdict
from tests.pipelines.backfill.archive import GeneratedArchive
from workers.policies.file_store import FilePolicyStore
from workers.settings import Settings

pytestmark = pytest.mark.usefixtures("ray_local")


def _run(archive: GeneratedArchive, out: Path, settings: Settings, policies: Any, **update: Any) -> RunStats:
    options = BackfillOptions(
        inputs=(str(archive.root),), out=out, shard_rows=40, batch_size=16, progress=False
    ).model_copy(update=update)
    return run_backfill(options, settings, policies)[1]


def _verdicts(out: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(out / "verdicts").to_pylist()
    return sorted(rows, key=lambda r: r["event_id"])


def _bad_rows(out: Path) -> set[tuple[str, str, int, str]]:
    found = set()
    for path in sorted((out / "errors").glob("shard-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            where = ("line", row["line"]) if "line" in row else ("row", row["row"])
            found.add((row["source"], *where, row["error_code"]))
    return found


def _key(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool, list[str]]]:
    return [
        (r["event_id"], str(r["tenant_id"]), r["unsafe"], [c["code"] for c in r["categories"]]) for r in rows
    ]


def _same_verdicts(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Same decisions and codes; scores within 1e-5, since a run's KV-tree state (which earlier events it
    reuses) reorders float sums by ~1e-6 in fp32."""
    assert _key(got) == _key(want)
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)


@pytest.fixture(scope="module")
def full_run(
    archive: GeneratedArchive, policies: FilePolicyStore, settings: Settings, tmp_path_factory: Any
) -> Path:
    out = tmp_path_factory.mktemp("backfill-full")
    stats = _run(archive, out, settings, policies)
    assert (stats.shards_skipped, stats.stopped_early) == (0, False)
    return out


def test_one_verdict_per_valid_row_partitioned_by_tenant(full_run: Path, archive: GeneratedArchive) -> None:
    verdicts = _verdicts(full_run)
    assert [v["event_id"] for v in verdicts] == sorted(e["event_id"] for e in archive.valid)
    expected_tenant = {e["event_id"]: e["tenant_id"] for e in archive.valid}
    assert all(str(v["tenant_id"]) == expected_tenant[v["event_id"]] for v in verdicts)
    assert sorted(p.name for p in (full_run / "verdicts").iterdir()) == [
        "tenant_id=acme",
        "tenant_id=kidsplay",
    ]
    assert all(v["score"] is not None and v["model"] for v in verdicts)


def test_every_bad_row_is_filed_with_its_file_and_line(full_run: Path, archive: GeneratedArchive) -> None:
    assert _bad_rows(full_run) == set(archive.bad)
    manifest = load_manifest(full_run)
    assert manifest is not None
    assert sum(manifest.state(s.shard_id).errors for s in manifest.shards) == len(archive.bad)


def test_verdicts_equal_guardstream_moderate_on_the_same_events(
    full_run: Path, archive: GeneratedArchive, policies: FilePolicyStore, settings: Settings
) -> None:
    """``moderate_events`` is what ``guardstream moderate`` runs: LocalEngine + workers.decision, no Ray."""
    from pipelines.moderate import PolicyChoice, moderate_events
    from workers.serving.local_engine import LocalEngine

    engine = LocalEngine(settings.models["default"], settings)
    events = [ConversationEvent.model_validate(e) for e in archive.valid]
    choice = PolicyChoice(policies.policies(), None, None, Generation.LG3)
    expected = {v.event_id: v for v in moderate_events(events, choice, engine) if isinstance(v, Verdict)}
    rows = _verdicts(full_run)
    assert len(rows) == len(expected)
    for row in rows:
        want = expected[row["event_id"]]
        assert row["unsafe"] == want.unsafe, row["event_id"]
        # the KV tree reuses whatever earlier events left, so float sums reorder: equal within 1e-5 (fp32)
        assert row["score"] == pytest.approx(want.score, abs=1e-5), row["event_id"]
        assert [c["code"] for c in row["categories"]] == [c.code for c in want.categories]
        assert row["model"] == want.model


def test_interrupted_backfill_resumes_to_the_same_output_and_force_recomputes(
    full_run: Path,
    archive: GeneratedArchive,
    policies: FilePolicyStore,
    settings: Settings,
    tmp_path: Path,
) -> None:
    stats = _run(archive, tmp_path, settings, policies, stop_after_shards=2)
    assert (stats.shards_done, stats.stopped_early) == (2, True)
    manifest = load_manifest(tmp_path)
    assert manifest is not None and len(manifest.done()) == 2
    partial = _verdicts(tmp_path)
    assert len(partial) == sum(manifest.state(s.shard_id).verdicts for s in manifest.done())

    resumed = _run(archive, tmp_path, settings, policies)
    assert (resumed.shards_skipped, resumed.shards_done) == (2, stats.shards_total - 2)
    final = _verdicts(tmp_path)
    assert len({v["event_id"] for v in final}) == len(final) == len(archive.valid)
    _same_verdicts(final, _verdicts(full_run))
    assert _bad_rows(tmp_path) == set(archive.bad)

    again = _run(archive, tmp_path, settings, policies)
    assert (again.shards_done, again.rows) == (0, 0)

    before = load_manifest(tmp_path)
    forced = _run(archive, tmp_path, settings, policies, force=True)
    assert (forced.shards_skipped, forced.shards_done) == (0, forced.shards_total)
    after = load_manifest(tmp_path)
    assert before is not None and after is not None and after.created_at > before.created_at
    _same_verdicts(_verdicts(tmp_path), final)
