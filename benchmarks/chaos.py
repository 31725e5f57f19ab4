"""Chaos table: does every input record get exactly one answer while things go wrong?

    set -a; . ./wt.env; set +a
    .venv/bin/python benchmarks/chaos.py [--only codecs,poison] [--modes alo,eos] [--timeout 90]

Each scenario runs the real stream (``run_stream``: Ray stream workers, the tiny random guard on one
replica, the local Kafka and Redis from ``infra.local``) on topics and a consumer group of its own, in
at-least-once (``alo``) and exactly-once (``eos``) mode. Part of the traffic comes from librdkafka
(``confluent-kafka``), with every compression codec, so our consumer is not only tested against our own
producer. Per scenario and mode it prints one row:

    scenario | mode | records | answered | lost | duplicated | longest stall (s) | committed = end offset?

*answered*: records with at least one verdict or dead letter (verdicts matched by ``event_id``, dead
letters by source partition/offset); *duplicated*: answers beyond the first (0 expected in ``eos``, read
``read_committed``); *longest stall*: the longest wait for the next new answer while some were missing,
from the moment the stream answered its first (canary) record; *committed*: the group's committed offsets
equal the input's end offsets after the drain. Writes ``benchmarks/results/<device>-<date>-chaos.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from chaos_scenarios import SCENARIOS, Scenario  # noqa: E402

from pipelines.stream.run import run_stream  # noqa: E402
from tests.helpers.fault_records import Record, produce, valid  # noqa: E402
from tests.integration.stream_support import (  # noqa: E402
    TopicReader,
    committed,
    delete_topics_of,
    end_offsets,
    isolated,
)
from workers.clients.kafka import ensure_topics  # noqa: E402
from workers.settings import Settings  # noqa: E402

COLUMNS = ("scenario", "mode", "records", "answered", "lost", "duplicated", "longest stall (s)", "committed")


class Answers:
    """Outputs read so far, matched to the records they answer."""

    def __init__(self, reader: TopicReader, settings: Settings) -> None:
        self._reader = reader
        self._settings = settings
        self._seen = 0
        self.counts: dict[int, int] = {}  # record index -> answers
        self.first_at: dict[int, float] = {}
        self._by_id: dict[str, int] = {}
        self._by_pos: dict[tuple[int, int], int] = {}

    def expect(self, index: int, record: Record, position: tuple[int, int]) -> None:
        if record.event_id is not None:
            self._by_id[record.event_id] = index
        self._by_pos[position] = index
        self.counts.setdefault(index, 0)

    def read(self) -> None:
        records = self._reader.read().records
        for topic, _, _, value in records[self._seen :]:
            if topic == self._settings.dlq_topic:
                index = self._by_pos.get((value.get("source_partition"), value.get("source_offset")))  # type: ignore[arg-type]
            else:
                index = self._by_id.get(value.get("event_id", ""))
            if index is None:
                continue
            self.counts[index] = self.counts.get(index, 0) + 1
            self.first_at.setdefault(index, time.monotonic())
        self._seen = len(records)

    def answered(self) -> int:
        return sum(1 for n in self.counts.values() if n > 0)


def run_scenario(
    base: Settings, pools: Any, scenario: Scenario, mode: str, timeout_s: float
) -> dict[str, Any]:
    settings = isolated(base, exactly_once=mode == "eos", stream_workers=2, topic_partitions=2)
    context = {**scenario.setup(settings), "pools": pools}  # first: it may create a topic of its own
    ensure_topics(settings, [settings.input_topic, settings.verdict_topic, settings.dlq_topic])
    reader = TopicReader(settings, [settings.verdict_topic, settings.dlq_topic], read_committed=mode == "eos")
    answers = Answers(reader, settings)
    stop = threading.Event()
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(_guarded(lambda: run_stream(settings, stop=stop, pools=pools))),
        daemon=True,
    )
    thread.start()
    try:
        canary = valid("chaos-canary", 1)
        for index, (record, pos) in enumerate(
            zip(canary, produce(settings, canary, "kafka-python"), strict=True)
        ):
            answers.expect(index, record, pos)
        _wait(lambda: (answers.read(), answers.answered() == 1)[1], 180)
        started = time.monotonic()

        def send(via: str, records: list[Record]) -> None:
            for record, pos in zip(records, produce(settings, records, via), strict=True):
                answers.expect(len(answers.counts), record, pos)

        for via, records in scenario.traffic(context):
            send(via, records)
        scenario.during(settings, context, send)
        total = len(answers.counts)
        _wait(lambda: (answers.read(), answers.answered() == total)[1], timeout_s)
        ended = time.monotonic()
    finally:
        stop.set()
        thread.join(240)
        scenario.teardown(settings, context)
    time.sleep(1.0)
    answers.read()
    reader.close()
    done = committed(settings) == end_offsets(settings)
    delete_topics_of(settings)
    arrivals = sorted(t for i, t in answers.first_at.items() if i >= len(canary))
    marks = [started, *arrivals] + ([] if answers.answered() == total else [ended])
    stall = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
    crashed = outcome and isinstance(outcome[0], BaseException)
    return {
        "scenario": scenario.name,
        "mode": mode,
        "records": total - len(canary),
        "answered": answers.answered() - (1 if answers.counts.get(0) else 0),
        "lost": total - answers.answered(),
        "duplicated": sum(max(0, n - 1) for n in answers.counts.values()),
        "longest stall (s)": round(stall, 1),
        "committed": "yes" if done else "no",
        "fault (s)": context.get("fault_s"),
        "stream_error": repr(outcome[0])[:300] if crashed else None,
        "worker_restarts": None if crashed or not outcome else outcome[0].worker_restarts,
        "watchdog_rebuilds": None if crashed or not outcome else outcome[0].watchdog_rebuilds,
    }


def _guarded(call: Any) -> Any:
    try:
        return call()
    except BaseException as exc:
        return exc


def _wait(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def merged(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The day's earlier rows with this run's replacing those of the same scenario and mode (``--only``
    re-runs keep the rest of the table), in scenario order."""
    earlier = json.loads(path.read_text())["rows"] if path.exists() else []
    fresh = {(r["scenario"], r["mode"]) for r in rows}
    kept = [r for r in earlier if (r["scenario"], r["mode"]) not in fresh] + rows
    order = {s.name: i for i, s in enumerate(SCENARIOS)}
    return sorted(kept, key=lambda r: (order.get(r["scenario"], len(order)), r["mode"]))


def print_table(rows: list[dict[str, Any]]) -> None:
    lines = [COLUMNS, *[tuple(str(row[c]) for c in COLUMNS) for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--modes", default="alo,eos", help="alo (at-least-once), eos (exactly-once)")
    parser.add_argument("--timeout", type=float, default=90.0, help="max wait for all answers per run (s)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # inherited by the Ray workers
    from infra.local import up
    from infra.ray_runtime import init_ray, shutdown_ray
    from tests.helpers.tiny_guard import build_tiny_guard
    from workers.logging import configure_logging
    from workers.serving.pool import ModelPools
    from workers.settings import ModelSpec

    wanted = [s for s in SCENARIOS if not args.only or s.name in args.only.split(",")]
    configure_logging("console", "error")
    up(Settings())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"default": ModelSpec(path=build_tiny_guard(Path(tmp) / "tiny"), replicas=1, num_cpus=0.25)}
        base = Settings().model_copy(
            update={"models": models, "device": "cpu", "worker_num_cpus": 0.1, "log_level": "error"}
        )
        init_ray(base, num_cpus=2)
        pools = ModelPools.start(base, ready_timeout_s=300)
        try:
            for scenario in wanted:
                for mode in args.modes.split(","):
                    if mode in scenario.modes:
                        rows.append(run_scenario(base, pools, scenario, mode, args.timeout))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            pools.shutdown()
            shutdown_ray()
    out = ROOT / "benchmarks" / "results" / f"cpu{os.cpu_count()}-{datetime.now(UTC):%Y-%m-%d}-chaos.json"
    rows = merged(out, rows)
    print_table(rows)
    meta = {"command": " ".join(["benchmarks/chaos.py", *sys.argv[1:]]), "at": datetime.now(UTC).isoformat()}
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
