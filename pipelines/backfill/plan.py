"""Options of one backfill and the manifest they lead to: a fresh plan, a resumable one, or a refusal."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.backfill.manifest import BackfillManifest, load_manifest, save_manifest
from pipelines.backfill.sinks import ERRORS_DIR, VERDICTS_DIR
from pipelines.backfill.sources import discover, plan_shards
from schemas.events import TENANT_PATTERN
from workers.errors import InputError
from workers.policies.file_store import FilePolicyStore

REPORT_FILES = ("report.md", "report.html", "score_histogram.png", "categories.png", "summary.json")


class BackfillOptions(BaseModel):
    """Everything ``guardstream backfill`` was asked to do; the Ray and model settings live in Settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: tuple[str, ...] = Field(min_length=1, description="Files, folders or fsspec URLs.")
    out: Path = Field(description="Local output folder: manifest, verdicts/, errors/, report.")
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN, description="For rows without one.")
    replicas: int = Field(default=1, ge=1, le=256)
    batch_size: int = Field(default=16, ge=1, le=4096)
    num_gpus_per_replica: float = Field(default=0.0, ge=0.0, le=8.0)
    num_cpus_per_replica: float = Field(default=0.5, gt=0.0, le=64.0)
    read_num_cpus: float = Field(default=0.25, gt=0.0, le=8.0, description="CPUs per shard-reading task.")
    shard_rows: int = Field(default=2000, ge=1, description="Records per shard: the unit of resume.")
    group_conversations: Literal["shard", "archive"] = Field(
        default="shard",
        description="Where a conversation's turns are brought together, earliest first, so each turn "
        "reuses the last one's cached keys/values: within each shard as it is read (streaming, memory "
        "bounded by the shards in flight), or across the whole archive (a Ray Data shuffle by "
        "tenant:conversation: every row is read before any is scored, and shards complete near the end).",
    )
    force: bool = Field(default=False, description="Discard earlier outputs and recompute every shard.")
    to_kafka: str | None = Field(default=None, description="Also publish verdicts to this topic.")
    stop_after_shards: int | None = Field(
        default=None, ge=1, description="Stop cleanly after this many shards (tests, rehearsals)."
    )
    progress: bool = True


def policy_fingerprint(policies: FilePolicyStore | None) -> str:
    """Changing the policies must not silently mix old and new verdicts in one output folder."""
    if policies is None:
        return "redis"
    text = "\n".join(p.model_dump_json() for p in policies.policies())
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def clear_outputs(out: Path) -> None:
    """``--force``: remove what earlier runs wrote (and only that) before planning again."""
    for folder in (VERDICTS_DIR, ERRORS_DIR):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in (*REPORT_FILES, "manifest.json"):
        (out / name).unlink(missing_ok=True)


def prepare_manifest(options: BackfillOptions, policies: FilePolicyStore | None) -> BackfillManifest:
    """The manifest to run: the existing one when this is the same backfill resumed, else a new plan."""
    files = tuple(discover(options.inputs))
    fingerprint = policy_fingerprint(policies)
    options.out.mkdir(parents=True, exist_ok=True)
    if options.force:
        clear_outputs(options.out)
    existing = load_manifest(options.out)
    if existing is not None:
        why = existing.mismatch(options.inputs, options.tenant, fingerprint, options.shard_rows, files)
        if why is None:
            return existing
        raise InputError(
            f"{options.out} holds another backfill: {why}. Re-run with --force to start over there, "
            "or choose another --out."
        )
    manifest = BackfillManifest(
        inputs=options.inputs,
        tenant=options.tenant,
        policy_fingerprint=fingerprint,
        shard_rows=options.shard_rows,
        files=files,
        shards=tuple(plan_shards(files, options.shard_rows)),
    )
    save_manifest(manifest, options.out)
    return manifest
