"""``guardstream stream`` as a subprocess for benchmarks: own topics and group, readiness, a timed replay.

Used by ``stream_bench.py``: the clock of a replay runs from the first event sent to the last output read
back, and the replica's cache counters come from the stream's own ``/metrics``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import psutil

from schemas.events import ConversationEvent
from workers.clients import kafka as kafka_clients
from workers.settings import ModelSpec, Settings


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _metric(text: str, name: str) -> float:
    """Sum of a metric's samples over all label sets in a Prometheus text exposition."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in {"{", " "}
    )


class StreamRun:
    """``guardstream stream`` in a subprocess on topics and a group of its own."""

    def __init__(self, settings: Settings, run_id: str, spec: ModelSpec) -> None:
        self.settings = settings.model_copy(
            update={
                "input_topic": f"bench.{run_id}.in",
                "verdict_topic": f"bench.{run_id}.verdicts",
                "dlq_topic": f"bench.{run_id}.dlq",
                "consumer_group": f"bench-{run_id}",
            }
        )
        env = {
            **os.environ,
            "GUARDSTREAM_INPUT_TOPIC": self.settings.input_topic,
            "GUARDSTREAM_VERDICT_TOPIC": self.settings.verdict_topic,
            "GUARDSTREAM_DLQ_TOPIC": self.settings.dlq_topic,
            "GUARDSTREAM_CONSUMER_GROUP": self.settings.consumer_group,
            "GUARDSTREAM_MODELS": json.dumps({"default": spec.model_dump(mode="json", exclude_none=True)}),
            "GUARDSTREAM_LOG_LEVEL": "warning",
        }
        self.base = f"http://127.0.0.1:{self.settings.metrics_port}"
        command = [sys.executable, "-c", "from pipelines.cli import main; main()", "stream"]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)

    def wait_ready(self, timeout_s: float) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.process.poll() is not None:
                raise SystemExit(f"guardstream stream exited with {self.process.returncode} before ready")
            if _get(self.base + "/readyz")[0] == 200:
                return time.perf_counter() - start
            time.sleep(0.5)
        raise SystemExit(f"guardstream stream not ready after {timeout_s:.0f}s")

    def replay(self, events: list[ConversationEvent], timeout_s: float) -> dict[str, Any]:
        """Produce every event, read back one output per event; the clock runs send-first to read-last."""
        wanted = {e.event_id for e in events}
        reader = kafka_clients.reader(self.settings, auto_offset_reset="earliest")
        reader.subscribe([self.settings.verdict_topic, self.settings.dlq_topic])
        reader.poll(timeout_ms=1000)  # join: the assignment, before anything is produced
        producer = kafka_clients.producer(self.settings, client_id="stream-bench")
        load = psutil.getloadavg()[0]
        start = time.perf_counter()
        for event in events:
            producer.send(self.settings.input_topic, event.model_dump_json().encode(), key=event.key.encode())
        producer.flush()
        scores: dict[str, float] = {}
        dead = 0
        last = start
        while len(scores) + dead < len(events) and time.perf_counter() - start < timeout_s:
            for records in reader.poll(timeout_ms=200).values():
                for record in records:
                    body = json.loads(record.value)
                    if body.get("event_id") not in wanted:
                        continue  # an earlier round's
                    if record.topic == self.settings.dlq_topic:
                        dead += 1
                    elif body.get("score") is not None:
                        scores[body["event_id"]] = float(body["score"])
                    last = time.perf_counter()
        seconds = last - start
        producer.close()
        reader.close()
        time.sleep(self.settings.metrics_refresh_s + 1)  # the driver's next collection holds the last forward
        text = _get(self.base + "/metrics")[1]
        hits = _metric(text, "guardstream_prefix_cache_hits_total")
        misses = _metric(text, "guardstream_prefix_cache_misses_total")
        return {
            "events": len(events),
            "verdicts": len(scores),
            "dead_letters": dead,
            "seconds": seconds,
            "events_per_s": (len(scores) + dead) / seconds if seconds else 0.0,
            "cache_hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
            "cache_mib_at_end": _metric(text, "guardstream_prefix_cache_bytes") / 2**20,
            "forward_batches": _metric(text, "guardstream_batch_size_count"),
            "mean_forward_batch": _metric(text, "guardstream_batch_size_sum")
            / max(1.0, _metric(text, "guardstream_batch_size_count")),
            "load_average_before": load,
            "scores": scores,
        }

    def stop(self) -> dict[str, Any]:
        """SIGINT: the stream drains and prints its JSON report."""
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=180)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"returncode": self.process.returncode}
