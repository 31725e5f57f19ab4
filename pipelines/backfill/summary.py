"""The numbers of a backfill, computed from the outputs of finished shards only.

Reading the outputs the manifest counts (not in-memory tallies of this run) makes the summary of a resumed
backfill cover all its runs, and keeps it consistent with what a reader of ``verdicts/`` would find.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, computed_field

from pipelines.backfill.manifest import BackfillManifest


class TenantSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str
    verdicts: int
    scored: int = Field(description="Verdicts with a model score (not skipped, not scoring errors).")
    unsafe: int
    skipped: int
    scoring_errors: int
    categories: dict[str, int] = Field(description="Unsafe verdicts listing each category code.")
    category_names: dict[str, str] = Field(default_factory=dict)

    @property
    def unsafe_rate(self) -> float:
        return self.unsafe / self.verdicts if self.verdicts else 0.0


class BackfillSummary(BaseModel):
    """Everything the table, report.md/html and summary.json show."""

    model_config = ConfigDict(frozen=True)

    shards: int
    shards_done: int
    verdicts: int
    bad_rows: int
    bad_rows_by_code: dict[str, int]
    tenants: list[TenantSummary]
    rows_per_s: float | None = Field(default=None, description="Throughput of the last run.")
    steady_rows_per_s: float | None = Field(
        default=None, description="Throughput of the last run once its replicas were up (start-up excluded)."
    )
    rows_this_run: int | None = Field(default=None, description="Input rows the last run scored or rejected.")
    seconds: float | None = None
    cache_hit_ratio: float | None = Field(
        default=None, description="Share of the last run's prompt tokens the KV cache already held."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rows(self) -> int:
        """Input rows answered over all runs: one verdict or one bad-row record each."""
        return self.verdicts + self.bad_rows

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unsafe(self) -> int:
        """Unsafe verdicts over all runs."""
        return sum(t.unsafe for t in self.tenants)


def _verdict_tables(out: Path, manifest: BackfillManifest) -> list[tuple[str, pa.Table]]:
    tables = []
    for shard in manifest.done():
        for rel in manifest.state(shard.shard_id).outputs:
            if rel.startswith("verdicts/"):
                tenant = rel.split("/")[1].removeprefix("tenant_id=")
                tables.append((tenant, pq.read_table(out / rel)))
    return tables


def _bad_row_codes(out: Path, manifest: BackfillManifest) -> Counter[str]:
    codes: Counter[str] = Counter()
    for shard in manifest.done():
        for rel in manifest.state(shard.shard_id).outputs:
            if rel.startswith("errors/"):
                for line in (out / rel).read_text("utf-8").splitlines():
                    codes[json.loads(line)["error_code"]] += 1
    return codes


def _tenant_summary(tenant: str, tables: list[pa.Table]) -> TenantSummary:
    rows = pa.concat_tables(tables).select(["unsafe", "score", "categories", "skipped", "error"]).to_pylist()
    categories: Counter[str] = Counter()
    names: dict[str, str] = {}
    for row in rows:
        if row["unsafe"]:
            for category in row["categories"]:
                categories[category["code"]] += 1
                names[category["code"]] = category["name"]
    return TenantSummary(
        tenant_id=tenant,
        verdicts=len(rows),
        scored=sum(1 for r in rows if r["score"] is not None),
        unsafe=sum(1 for r in rows if r["unsafe"]),
        skipped=sum(1 for r in rows if r["skipped"]),
        scoring_errors=sum(1 for r in rows if r["error"]),
        categories=dict(sorted(categories.items())),
        category_names=names,
    )


def summarize(out: Path, manifest: BackfillManifest) -> BackfillSummary:
    by_tenant: dict[str, list[pa.Table]] = {}
    for tenant, table in _verdict_tables(out, manifest):
        by_tenant.setdefault(tenant, []).append(table)
    tenants = [_tenant_summary(t, tables) for t, tables in sorted(by_tenant.items())]
    codes = _bad_row_codes(out, manifest)
    return BackfillSummary(
        shards=len(manifest.shards),
        shards_done=len(manifest.done()),
        verdicts=sum(t.verdicts for t in tenants),
        bad_rows=sum(codes.values()),
        bad_rows_by_code=dict(sorted(codes.items())),
        tenants=tenants,
    )


def scores_by_tenant(out: Path, manifest: BackfillManifest) -> dict[str, list[float]]:
    """Model scores per tenant, for the histogram."""
    scores: dict[str, list[float]] = {}
    for tenant, table in _verdict_tables(out, manifest):
        scores.setdefault(tenant, []).extend(s for s in table.column("score").to_pylist() if s is not None)
    return scores
