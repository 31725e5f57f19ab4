"""``DIR/manifest.json``: the shard plan and which shards are finished — the backfill's only checkpoint.

A shard counts as finished only once its outputs are in place *and* the manifest saying so has been
atomically replaced (temp file, fsync, rename). An interrupt at any moment therefore leaves either the old
manifest or the new one, never half a shard counted; an unfinished shard is simply recomputed, and because
its output names are fixed the recomputation replaces rather than duplicates.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.backfill.sources import ShardSpec, SourceFile
from workers.errors import InputError

MANIFEST_NAME = "manifest.json"


def _now() -> datetime:
    return datetime.now(UTC)


class ShardState(BaseModel):
    """What a finished shard produced, so the summary needs no re-scan of old runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["pending", "done"] = "pending"
    verdicts: int = 0
    errors: int = 0
    outputs: tuple[str, ...] = Field(default=(), description="Output files relative to DIR.")
    finished_at: datetime | None = None


class BackfillManifest(BaseModel):
    """The plan of one output directory. Re-running with other inputs or options is refused, not merged."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    inputs: tuple[str, ...]
    tenant: str | None = None
    policy_fingerprint: str = Field(description="Hash of the policy file, or 'redis'.")
    shard_rows: int = Field(ge=1)
    files: tuple[SourceFile, ...]
    shards: tuple[ShardSpec, ...]
    states: dict[int, ShardState] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    def state(self, shard_id: int) -> ShardState:
        return self.states.get(shard_id, ShardState())

    def pending(self) -> list[ShardSpec]:
        return [s for s in self.shards if self.state(s.shard_id).status != "done"]

    def done(self) -> list[ShardSpec]:
        return [s for s in self.shards if self.state(s.shard_id).status == "done"]

    def mark_done(self, shard_id: int, *, verdicts: int, errors: int, outputs: list[str]) -> None:
        self.states[shard_id] = ShardState(
            status="done", verdicts=verdicts, errors=errors, outputs=tuple(outputs), finished_at=_now()
        )
        self.updated_at = _now()

    def mismatch(
        self,
        inputs: tuple[str, ...],
        tenant: str | None,
        policy_fingerprint: str,
        shard_rows: int,
        files: tuple[SourceFile, ...],
    ) -> str | None:
        """Why this manifest can't be resumed by a run with these options; None when it can."""
        if inputs != self.inputs:
            return f"it was written for inputs {list(self.inputs)}"
        if tenant != self.tenant:
            return f"it was written with --tenant {self.tenant}"
        if shard_rows != self.shard_rows:
            return f"it was written with --shard-rows {self.shard_rows}"
        if policy_fingerprint != self.policy_fingerprint:
            return "the policies changed since it was written"
        if files != self.files:
            changed = sorted({f.url for f in files} ^ {f.url for f in self.files}) or ["file sizes"]
            return f"the input files changed since it was written ({', '.join(changed[:3])})"
        return None


def manifest_path(out: Path) -> Path:
    return out / MANIFEST_NAME


def load_manifest(out: Path) -> BackfillManifest | None:
    """The manifest in ``out``, or None when there is none yet."""
    path = manifest_path(out)
    if not path.exists():
        return None
    try:
        return BackfillManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise InputError(
            f"{path} is not a backfill manifest ({exc.error_count()} errors); use --force"
        ) from exc


def save_manifest(manifest: BackfillManifest, out: Path) -> None:
    """Atomically replace ``out/manifest.json``: readers and crashes see the old or the new, never a mix."""
    write_atomic(manifest_path(out), manifest.model_dump_json(indent=1).encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync'd, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, path)
