"""``guardstream stream`` as a container runs it: a separate process, stopped by SIGTERM.

A stop must drain (finish, produce, commit, exit 0), not drop: Ray installs its own SIGTERM handler when it
starts, so this checks the command's handler is the one that runs. The process starts its own local Ray,
as the command does in production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.stream_support import (
    committed,
    delete_topics_of,
    end_offsets,
    event,
    isolated,
    keyed,
    produce,
    reading,
)
from workers.settings import Settings

pytestmark = pytest.mark.integration

EVENTS = 12


def _env(settings: Settings, model_path: Path) -> dict[str, str]:
    models = {"default": {"path": str(model_path), "replicas": 1, "num_cpus": 0.25}}
    values = {
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "REDIS_URL": settings.redis_url,
        "INPUT_TOPIC": settings.input_topic,
        "VERDICT_TOPIC": settings.verdict_topic,
        "DLQ_TOPIC": settings.dlq_topic,
        "CONSUMER_GROUP": settings.consumer_group,
        "TOPIC_PARTITIONS": str(settings.topic_partitions),
        "STREAM_WORKERS": "1",
        "WORKER_NUM_CPUS": "0.1",
        "MODELS": json.dumps(models),
        "DEVICE": "cpu",
        "LOG_FORMAT": "console",
        "METRICS_PORT": str(settings.metrics_port),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}
    env.update({f"GUARDSTREAM_{k}": v for k, v in values.items()})
    return env


def test_sigterm_drains_commits_and_exits_zero(settings: Settings, tiny_guard_path: Path) -> None:
    mine = isolated(settings, stream_workers=1)
    try:
        tenant = f"acme-{uuid.uuid4().hex[:8]}"
        records = [
            keyed(tenant, f"c{i % 3}", event(tenant, f"c{i % 3}", f"e{i}", f"hi {i}")) for i in range(EVENTS)
        ]
        produce(mine, records)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "stream"],
            env=_env(mine, tiny_guard_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with reading(mine, [mine.verdict_topic]) as reader:
                reader.until(lambda o: len(o.records) >= EVENTS, timeout_s=240, what="verdicts of the stream")
        except AssertionError:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(
                f"stream produced too few verdicts; its stderr ends:\n{err[-3000:]}"
            ) from None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"exit {proc.returncode}; stderr ends:\n{err[-3000:]}"
        report = json.loads(out.strip().splitlines()[-1])
        assert report["stopped_by"] == "signal"
        assert report["consumed"] == EVENTS and report["verdicts"] == EVENTS and report["in_flight"] == 0
        assert committed(mine) == end_offsets(mine), "a drained stream must have committed all it answered"
    finally:
        delete_topics_of(mine)
