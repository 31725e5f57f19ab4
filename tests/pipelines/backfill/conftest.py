"""Backfill fixtures: a generated mixed-format archive, the sample policies, settings with small limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.backfill.archive import GeneratedArchive, generate_archive
from workers.policies.file_store import FilePolicyStore
from workers.settings import ModelSpec, Settings

SAMPLES = Path(__file__).resolve().parents[3] / "pipelines" / "samples"


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> GeneratedArchive:
    """300 rows over .jsonl, .jsonl.gz and .parquet, two tenants, 1 in 20 malformed."""
    return generate_archive(tmp_path_factory.mktemp("archive"), rows=300)


@pytest.fixture(scope="session")
def policies() -> FilePolicyStore:
    """acme (Llama Guard 3 taxonomy, S1 1-vs-all) and kidsplay (custom taxonomy, threshold 0.3)."""
    return FilePolicyStore.from_files([SAMPLES / "policy-acme.json", SAMPLES / "policy-kidsplay.json"])


@pytest.fixture(scope="session")
def settings(tiny_guard_path: Path) -> Settings:
    """The tiny guard as the default pool, on CPU; 2 KiB rows so the archive's oversize rows are bad."""
    return Settings(models={"default": ModelSpec(path=tiny_guard_path)}, device="cpu", max_event_bytes=2048)


@pytest.fixture(scope="session")
def ray_local(ray_session: None) -> None:
    """The run's local Ray (``ray_session``)."""
