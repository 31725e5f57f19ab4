"""The manifest: resumable only by the same backfill, atomically saved, cleared by --force."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.backfill.job import ShardCollector
from pipelines.backfill.manifest import load_manifest, save_manifest
from pipelines.backfill.plan import BackfillOptions, prepare_manifest
from tests.pipelines.backfill.archive import GeneratedArchive
from workers.errors import InputError
from workers.policies.file_store import FilePolicyStore


def _options(archive: GeneratedArchive, out: Path, **update: object) -> BackfillOptions:
    return BackfillOptions(inputs=(str(archive.root),), out=out, shard_rows=50).model_copy(update=update)


def test_same_backfill_resumes_its_manifest(
    archive: GeneratedArchive, policies: FilePolicyStore, tmp_path: Path
) -> None:
    first = prepare_manifest(_options(archive, tmp_path), policies)
    first.mark_done(0, verdicts=3, errors=1, outputs=["errors/shard-00000.jsonl"])
    save_manifest(first, tmp_path)
    again = prepare_manifest(_options(archive, tmp_path), policies)
    assert again.shards == first.shards
    assert [s.shard_id for s in again.done()] == [0]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"shard_rows": 10}, "--shard-rows 50"),
        ({"tenant": "acme"}, "--tenant None"),
        ({"inputs": ("ARCHIVE/2026-10",)}, "written for inputs"),
    ],
)
def test_another_backfill_in_the_same_folder_is_refused(
    archive: GeneratedArchive,
    policies: FilePolicyStore,
    tmp_path: Path,
    update: dict[str, object],
    reason: str,
) -> None:
    prepare_manifest(_options(archive, tmp_path), policies)
    if "inputs" in update:
        update = {"inputs": (str(archive.root / "2026-10"),)}
    with pytest.raises(InputError, match=reason):
        prepare_manifest(_options(archive, tmp_path, **update), policies)


def test_changed_policies_are_refused_and_force_starts_over(
    archive: GeneratedArchive, policies: FilePolicyStore, tmp_path: Path
) -> None:
    manifest = prepare_manifest(_options(archive, tmp_path), policies)
    manifest.mark_done(0, verdicts=1, errors=0, outputs=[])
    save_manifest(manifest, tmp_path)
    (tmp_path / "verdicts" / "tenant_id=acme").mkdir(parents=True)
    (tmp_path / "verdicts" / "tenant_id=acme" / "shard-00000.parquet").write_bytes(b"old")
    stricter = FilePolicyStore(
        {p.tenant_id: p.model_copy(update={"threshold": 0.1}) for p in policies.policies()}
    )
    with pytest.raises(InputError, match="policies changed"):
        prepare_manifest(_options(archive, tmp_path), stricter)
    fresh = prepare_manifest(_options(archive, tmp_path, force=True), stricter)
    assert fresh.done() == []
    assert not (tmp_path / "verdicts").exists()
    assert load_manifest(tmp_path) == fresh


def test_collector_releases_a_shard_only_when_all_its_rows_are_back(
    archive: GeneratedArchive, policies: FilePolicyStore, tmp_path: Path
) -> None:
    shards = prepare_manifest(_options(archive, tmp_path), policies).shards[:2]
    collector = ShardCollector(list(shards))
    first, second = shards

    def rows(shard_id: int, count: int) -> pa.Table:
        return pa.table({"shard_id": [shard_id] * count, "position": list(range(count))})

    assert list(collector.add(rows(first.shard_id, first.rows - 1))) == []
    done = list(collector.add(rows(second.shard_id, second.rows)))
    assert [s.shard_id for s, _ in done] == [second.shard_id]
    done = list(collector.add(rows(first.shard_id, 1)))
    assert [(s.shard_id, len(r)) for s, r in done] == [(first.shard_id, first.rows)]
    assert collector.incomplete() == []
