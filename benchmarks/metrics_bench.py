"""What the metrics cost: the stream worker's hooks per record, a snapshot, and the driver's merge + render.

    .venv/bin/python benchmarks/metrics_bench.py [--records 100000] [--workers 8] [--tenants 100]

``hooks/record`` is ``polled`` + ``answered`` (one counter, one histogram observation, one labelled
verdict counter, the poll-time bookkeeping): the per-record price the poll loop pays. ``snapshot`` is one
worker's answer to the driver's ``metrics`` call; ``scrape`` is the driver merging ``--workers`` such
snapshots and rendering ``/metrics`` text. Prints a table and writes
``benchmarks/results/metrics-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from schemas.verdicts import Verdict  # noqa: E402
from workers.metrics.aggregate import Aggregator  # noqa: E402
from workers.metrics.stream import StreamMetrics  # noqa: E402


def bench(records: int, workers: int, tenants: int) -> dict[str, float]:
    verdicts = [
        Verdict(
            event_id=f"e{i}",
            tenant_id=f"t{i % tenants}",
            conversation_id="c",
            classified="prompt" if i % 2 else "response",
            unsafe=i % 3 == 0,
            threshold=0.5,
        )
        for i in range(1000)
    ]
    metrics = [StreamMetrics(f"w{i}", max_tenants=tenants) for i in range(workers)]
    started = time.perf_counter()
    for i in range(records):
        worker, tp = metrics[i % workers], ("guard.conversations", i % 12)
        worker.polled(tp, i)
        worker.answered(tp, i, verdicts[i % 1000])
    hooks_s = time.perf_counter() - started

    started = time.perf_counter()
    snapshots = [m.snapshot(in_flight=0, running=True) for m in metrics]
    snapshot_s = (time.perf_counter() - started) / workers

    aggregator = Aggregator(max_tenants=tenants)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(aggregator)
    started = time.perf_counter()
    for snapshot in snapshots:
        aggregator.ingest(snapshot)
    text = generate_latest(registry)
    scrape_s = time.perf_counter() - started
    return {
        "hooks_us_per_record": hooks_s / records * 1e6,
        "snapshot_ms": snapshot_s * 1e3,
        "snapshot_samples": float(len(snapshots[0].samples)),
        "scrape_ms": scrape_s * 1e3,
        "scrape_bytes": float(len(text)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tenants", type=int, default=100)
    args = parser.parse_args()
    result = bench(args.records, args.workers, args.tenants)
    print(f"{'measure':<22}{'value':>12}")
    for key, value in result.items():
        print(f"{key:<22}{value:>12.2f}")
    out = ROOT / "benchmarks" / "results" / f"metrics-{datetime.now(UTC):%Y-%m-%d}.json"
    record = {
        "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": result,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
