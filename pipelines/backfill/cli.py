"""``guardstream backfill INPUT... --out DIR``: score conversation archives on Ray Data, resumably.

Heavy imports (ray, torch, matplotlib) happen inside the command so ``guardstream --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from pipelines.errors import user_errors
from workers.errors import InputError
from workers.settings import ModelSpec, Settings, get_settings

if TYPE_CHECKING:
    from workers.policies.file_store import FilePolicyStore


def load_policies(source: Literal["file", "redis"], paths: list[Path]) -> FilePolicyStore | None:
    """The ``--policy`` files as one store (each file may hold several tenants); None: Redis."""
    from workers.policies.file_store import FilePolicyStore

    if source == "redis":
        if paths:
            raise InputError("--policy and --policy-source redis exclude each other")
        return None
    return FilePolicyStore.from_files(paths)


def with_model(settings: Settings, model: Path | None) -> Settings:
    """``--model PATH`` replaces the default pool's checkpoint (as ``moderate --model``: no adapter, format
    from the checkpoint), keeping its replica settings."""
    if model is None:
        return settings
    pool = settings.models.get("default", ModelSpec())
    update = {"path": model, "adapter": None, "prompt_format": None}
    models = {**settings.models, "default": pool.model_copy(update=update)}
    return settings.model_copy(update={"models": models})


def backfill(
    inputs: Annotated[
        list[str], typer.Argument(help="JSONL, JSONL.gz or Parquet files or folders; fsspec URLs (s3://...).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (local).")],
    policy: Annotated[
        list[Path] | None,
        typer.Option("--policy", help="Policy file (one TenantPolicy, a list, or {policies}); repeatable."),
    ] = None,
    policy_source: Annotated[
        str, typer.Option("--policy-source", help="file (--policy; none: default policy) or redis.")
    ] = "file",
    tenant: Annotated[str | None, typer.Option(help="Tenant for rows without tenant_id.")] = None,
    model: Annotated[Path | None, typer.Option(help="Checkpoint for the default model pool.")] = None,
    replicas: Annotated[int, typer.Option(help="Scoring replicas (Ray actors).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Events per model batch.")] = 16,
    num_gpus_per_replica: Annotated[float, typer.Option(help="GPUs per replica (0: CPU).")] = 0.0,
    num_cpus_per_replica: Annotated[float, typer.Option(help="CPUs per replica (fractions allowed).")] = 0.5,
    shard_rows: Annotated[int, typer.Option(help="Rows per shard, the unit of resume.")] = 2000,
    group_conversations: Annotated[
        str,
        typer.Option(
            help="Bring each conversation's turns together within each shard (streaming) or across the "
            "whole archive (a shuffle: nothing is scored before everything is read)."
        ),
    ] = "shard",
    force: Annotated[bool, typer.Option("--force", help="Discard earlier outputs; recompute all.")] = False,
    to_kafka: Annotated[str | None, typer.Option("--to-kafka", help="Also publish verdicts here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    stop_after_shards: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Score archived conversations with each tenant's policy into DIR/verdicts (Parquet) and a report.

    Re-running the same command resumes: finished shards (DIR/manifest.json) are skipped.
    """
    from pipelines.backfill.job import run_backfill
    from pipelines.backfill.plan import BackfillOptions
    from pipelines.backfill.report import print_summary, write_report
    from pipelines.backfill.summary import scores_by_tenant, summarize
    from workers.logging import configure_logging

    with user_errors():
        settings = with_model(get_settings(), model)
        configure_logging(settings.log_format, settings.log_level)
        if policy_source not in ("file", "redis"):
            raise InputError(f"--policy-source must be file or redis, not {policy_source!r}")
        source: Literal["file", "redis"] = "redis" if policy_source == "redis" else "file"
        policies = load_policies(source, policy or [])
        options = BackfillOptions(
            inputs=tuple(inputs),
            out=out,
            tenant=tenant,
            replicas=replicas,
            batch_size=batch_size,
            num_gpus_per_replica=num_gpus_per_replica,
            num_cpus_per_replica=num_cpus_per_replica,
            shard_rows=shard_rows,
            group_conversations=group_conversations,
            force=force,
            to_kafka=to_kafka,
            stop_after_shards=stop_after_shards,
            progress=progress,
        )
        try:
            manifest, stats = run_backfill(options, settings, policies)
        except KeyboardInterrupt:
            typer.echo("interrupted: finished shards are kept; re-run the same command to resume", err=True)
            raise typer.Exit(code=130) from None
        summary = summarize(out, manifest).model_copy(
            update={
                "rows_per_s": stats.rows_per_s,
                "steady_rows_per_s": stats.steady_rows_per_s,
                "rows_this_run": stats.rows,
                "seconds": stats.seconds,
                "cache_hit_ratio": stats.cache_hit_ratio if stats.prompt_tokens else None,
            }
        )
        print_summary(summary)
        report = write_report(out, summary, scores_by_tenant(out, manifest))
    if stats.shards_skipped:
        typer.echo(f"resumed: {stats.shards_skipped} of {stats.shards_total} shards were already done")
    if stats.stopped_early:
        typer.echo(f"stopped after {stats.shards_done} shards; re-run the same command to resume")
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    app.command("backfill")(backfill)
