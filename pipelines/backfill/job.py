"""The backfill on Ray Data: read shards → score with stateful replicas → write each shard when complete.

Pipeline::

    from_items(pending shards) ─map_batches(read_shard_batch, 1 shard per task, fractional CPU)─►
    rows (validated event JSON or bad-row reason) ─map_batches(ScorerWorker, concurrency=replicas)─►
    rows with verdicts ─iter_batches─► driver: group by shard; a shard whose every row is back is written
    (Parquet + errors, temp + rename), published to Kafka if asked, then marked done in the manifest.

Rows stream through without ordering, so the driver counts rows per shard against the plan; only a
complete shard is ever written. Memory on the driver is bounded by the shards in flight.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute

from pipelines.backfill.manifest import BackfillManifest, save_manifest
from pipelines.backfill.plan import BackfillOptions, prepare_manifest
from pipelines.backfill.rows import RowLimits, bad_row, by_conversation, read_shard
from pipelines.backfill.scoring import EngineFactory, ScorerWorker
from pipelines.backfill.sinks import (
    VERDICTS_DIR,
    KafkaVerdictPublisher,
    ParquetShardWriter,
    ParquetSink,
    SourcedVerdictRow,
)
from pipelines.backfill.sources import ShardSpec
from schemas.verdicts import Verdict
from workers.errors import GuardstreamError, InputError
from workers.logging import get_logger
from workers.policies.file_store import FilePolicyStore
from workers.settings import Settings
from workers.stream.sinks import Output, VerdictSink

log = get_logger(__name__)


class IncompleteBackfill(GuardstreamError):
    """Some shards never came back whole (an input file changed or vanished while the job ran)."""


@dataclass(frozen=True)
class RunStats:
    """What this invocation did (the report covers every run of the output folder)."""

    shards_total: int
    shards_skipped: int
    shards_done: int
    rows: int
    seconds: float
    stopped_early: bool
    first_batch_s: float = 0.0
    """Start-up until the first scored batch: Ray, actors, model load. Steady throughput excludes it."""
    first_batch_rows: int = 0
    prompt_tokens: int = 0
    """Tokens of the scored prompts (main rows), and how many the KV cache already held."""
    cached_tokens: int = 0

    @property
    def cache_hit_ratio(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rows_per_s(self) -> float:
        """Throughput once the replicas are up: what more rows would be scored at."""
        span = self.seconds - self.first_batch_s
        return (self.rows - self.first_batch_rows) / span if span > 0 else 0.0


def read_shard_batch(batch: pa.Table, limits: RowLimits) -> pa.Table:
    """Ray Data read stage: a batch of shard descriptors → their rows, validated, grouped by conversation."""
    shards = [ShardSpec.model_validate_json(text) for text in batch.column("shard").to_pylist()]
    return pa.concat_tables([by_conversation(read_shard(shard, limits)) for shard in shards])


class ShardCollector:
    """Buffers scored rows per shard and hands out each shard once all its planned rows are back."""

    def __init__(self, shards: list[ShardSpec]) -> None:
        self._shards = {s.shard_id: s for s in shards}
        self._rows: dict[int, list[dict[str, Any]]] = {}

    def add(self, table: pa.Table) -> Iterator[tuple[ShardSpec, list[dict[str, Any]]]]:
        touched = set()
        for row in table.to_pylist():
            self._rows.setdefault(row["shard_id"], []).append(row)
            touched.add(row["shard_id"])
        for shard_id in sorted(touched):
            shard = self._shards[shard_id]
            if len(self._rows[shard_id]) == shard.rows:
                yield shard, self._rows.pop(shard_id)

    def incomplete(self) -> list[int]:
        return sorted(self._rows)


def _start_ray(settings: Settings) -> bool:
    """Join ``GUARDSTREAM_RAY_ADDRESS`` or start a local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    from infra.ray_runtime import init_ray

    init_ray(settings)
    return True


def _check_resources(options: BackfillOptions) -> None:
    """Ray Data would wait forever for replicas the cluster cannot hold; say so instead."""
    import ray

    total = ray.cluster_resources()
    cpus = options.replicas * options.num_cpus_per_replica + options.read_num_cpus
    gpus = options.replicas * options.num_gpus_per_replica
    if cpus > total.get("CPU", 0.0):
        raise InputError(
            f"{options.replicas} replicas x {options.num_cpus_per_replica} CPUs + {options.read_num_cpus} "
            f"for reading need {cpus:g} CPUs; the Ray cluster has {total.get('CPU', 0.0):g}. "
            "Lower --replicas or --num-cpus-per-replica."
        )
    if gpus > total.get("GPU", 0.0):
        raise InputError(
            f"{options.replicas} replicas need {gpus:g} GPUs; the Ray cluster has {total.get('GPU', 0.0):g}"
        )


def _dataset(
    pending: list[ShardSpec],
    options: BackfillOptions,
    settings: Settings,
    policies: FilePolicyStore | None,
    engine_factory: EngineFactory | None,
) -> Any:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    shards = ray.data.from_items(
        [{"shard": s.model_dump_json()} for s in pending], override_num_blocks=len(pending)
    )
    rows = shards.map_batches(
        partial(read_shard_batch, limits=RowLimits.from_settings(settings, options.tenant)),
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=options.read_num_cpus,
    )
    if options.group_conversations == "archive":
        rows = rows.groupby("conversation").map_groups(
            by_conversation, batch_format="pyarrow", num_cpus=options.read_num_cpus
        )
    return rows.map_batches(
        ScorerWorker,
        batch_size=options.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.replicas),
        num_cpus=options.num_cpus_per_replica,
        num_gpus=options.num_gpus_per_replica or None,
        fn_constructor_kwargs={
            "settings": settings,
            "policies": policies,
            "engine_factory": engine_factory,
            "torch_threads": max(1, int(options.num_cpus_per_replica)),
        },
    )


def _finish_shard(
    shard: ShardSpec,
    rows: list[dict[str, Any]],
    manifest: BackfillManifest,
    options: BackfillOptions,
    writer: ParquetShardWriter,
    kafka: KafkaVerdictPublisher | None,
) -> None:
    rows.sort(key=lambda r: r["position"])
    verdicts = [
        SourcedVerdictRow(Verdict.model_validate_json(r["verdict"]), shard.source.url, r["position"])
        for r in rows
        if r["verdict"] is not None
    ]
    errors = [bad_row(shard, r) for r in rows if r["verdict"] is None]
    parquet = ParquetSink(writer, shard.name, errors)
    sinks: list[VerdictSink] = [parquet] if kafka is None else [parquet, kafka]
    for sink in sinks:
        for item in verdicts:
            sink.send(Output(VERDICTS_DIR, None, item.verdict, item.source, item.position))
        sink.flush()
    outputs = parquet.written
    manifest.mark_done(shard.shard_id, verdicts=len(verdicts), errors=len(errors), outputs=outputs)
    save_manifest(manifest, options.out)
    log.debug("shard_done", shard=shard.name, verdicts=len(verdicts), errors=len(errors))


def _unwrap(exc: BaseException) -> BaseException:
    """A guardstream error raised inside a Ray worker, without Ray's wrapping, so the CLI prints one line."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GuardstreamError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return exc


def run_backfill(
    options: BackfillOptions,
    settings: Settings,
    policies: FilePolicyStore | None,
    *,
    engine_factory: EngineFactory | None = None,
) -> tuple[BackfillManifest, RunStats]:
    """Run (or resume) a backfill into ``options.out``; Ray is started here unless already running."""
    from tqdm import tqdm

    manifest = prepare_manifest(options, policies)
    pending = manifest.pending()
    skipped = len(manifest.shards) - len(pending)
    writer = ParquetShardWriter(options.out)
    writer.remove_temporaries()
    started, done, rows_seen, stopped = time.perf_counter(), 0, 0, False
    first_batch_s, first_batch_rows = 0.0, 0
    tokens = [0, 0]
    if pending:
        kafka = KafkaVerdictPublisher(settings, options.to_kafka) if options.to_kafka else None
        collector = ShardCollector(pending)
        bar = tqdm(total=sum(s.rows for s in pending), unit="row", disable=not options.progress)
        owns_ray = _start_ray(settings)
        try:
            _check_resources(options)
            dataset = _dataset(pending, options, settings, policies, engine_factory)
            for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                bar.update(table.num_rows)
                if not rows_seen:
                    first_batch_s, first_batch_rows = time.perf_counter() - started, table.num_rows
                rows_seen += table.num_rows
                tokens[0] += pa.compute.sum(table.column("prompt_tokens")).as_py() or 0
                tokens[1] += pa.compute.sum(table.column("cached_tokens")).as_py() or 0
                for shard, rows in collector.add(table):
                    _finish_shard(shard, rows, manifest, options, writer, kafka)
                    done += 1
                    if options.stop_after_shards and done >= options.stop_after_shards:
                        stopped = True
                        break
                if stopped:
                    break
        except Exception as exc:
            cause = _unwrap(exc)
            if cause is exc:
                raise
            raise cause from None
        finally:
            bar.close()
            if kafka is not None:
                kafka.close()
            if owns_ray:
                import ray

                ray.shutdown()
        if not stopped and len(manifest.pending()):
            raise IncompleteBackfill(
                f"shards {collector.incomplete() or [s.shard_id for s in manifest.pending()]} did not "
                "return all their rows; did an input file change while the job ran? Re-run to retry them."
            )
    stats = RunStats(
        shards_total=len(manifest.shards),
        shards_skipped=skipped,
        shards_done=done,
        rows=rows_seen,
        seconds=time.perf_counter() - started,
        stopped_early=stopped,
        first_batch_s=first_batch_s,
        first_batch_rows=first_batch_rows,
        prompt_tokens=tokens[0],
        cached_tokens=tokens[1],
    )
    return manifest, stats
