"""Backfill throughput with 1 and 2 replicas on the default model: rows/s, start-up, scaling per replica.

    .venv/bin/python benchmarks/backfill_bench.py [--rows 384] [--replicas 1,2] [--model PATH]

The archive is the sample conversations repeated to ``--rows`` rows (unique event ids) as JSONL. Each
replica count runs the full backfill (fresh output folder) on one local Ray; both wall-clock rows/s and
steady rows/s (after the first scored batch, i.e. without Ray/actor start-up and model load) are reported.
Every replica gets the same CPU share and one torch thread, so the ratio measures replica scaling, not
thread scaling. Prints a table and writes ``benchmarks/results/backfill-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "pipelines" / "samples"


def write_archive(folder: Path, rows: int) -> Path:
    base = [json.loads(line) for line in (SAMPLES / "conversations.jsonl").read_text().splitlines() if line]
    lines = []
    for index in range(rows):
        event = dict(base[index % len(base)])
        event["event_id"] = f"bench-{index:06d}"
        lines.append(json.dumps(event))
    path = folder / "archive.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-").lower()
    return f"cpu{os.cpu_count()}"


def run_once(archive: Path, replicas: int, args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    from pipelines.backfill.cli import load_policies
    from pipelines.backfill.job import run_backfill
    from pipelines.backfill.plan import BackfillOptions

    policies = load_policies("file", [SAMPLES / "policy-acme.json", SAMPLES / "policy-kidsplay.json"])
    with tempfile.TemporaryDirectory() as out:
        options = BackfillOptions(
            inputs=(str(archive),),
            out=Path(out),
            replicas=replicas,
            batch_size=args.batch_size,
            num_cpus_per_replica=args.cpus_per_replica,
            num_gpus_per_replica=args.gpus_per_replica,
            shard_rows=max(1, args.rows // 16),
            progress=False,
        )
        _, stats = run_backfill(options, settings, policies)
    return {
        "replicas": replicas,
        "rows": stats.rows,
        "wall_s": round(stats.seconds, 2),
        "startup_s": round(stats.first_batch_s, 2),
        "rows_per_s": round(stats.rows_per_s, 2),
        "steady_rows_per_s": round(stats.steady_rows_per_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=384)
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cpus-per-replica", type=float, default=0.75)
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--model", type=Path, default=None, help="Checkpoint; default: the shipped model.")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from infra.ray_runtime import init_ray, shutdown_ray
    from pipelines.backfill.cli import with_model
    from workers.settings import get_settings

    settings = with_model(get_settings(), args.model)
    counts = [int(n) for n in args.replicas.split(",")]
    init_ray(settings)
    results = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            archive = write_archive(Path(folder), args.rows)
            for replicas in counts:
                results.append(run_once(archive, replicas, args, settings))
    finally:
        shutdown_ray()

    base = results[0]["steady_rows_per_s"] / results[0]["replicas"]
    for result in results:
        result["scaling_per_replica"] = round(result["steady_rows_per_s"] / (base * result["replicas"]), 3)
    table = Table("replicas", "rows", "wall s", "start-up s", "rows/s (wall)", "rows/s (steady)", "x linear")
    for r in results:
        table.add_row(
            *(
                str(r[k])
                for k in ("replicas", "rows", "wall_s", "startup_s", "rows_per_s", "steady_rows_per_s")
            ),
            str(r["scaling_per_replica"]),
        )
    Console().print(table)

    device = device_label()
    record = {
        "benchmark": "backfill",
        "device": device,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": str(settings.models["default"].path or "default (SmolLM2-135M-Instruct GGUF)"),
        "batch_size": args.batch_size,
        "cpus_per_replica": args.cpus_per_replica,
        "results": results,
    }
    target = ROOT / "benchmarks" / "results" / f"backfill-{device}-{datetime.now(UTC):%Y-%m-%d}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
