"""Commands pointed at a Kafka or Redis that isn't there answer with one line and exit 2, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}
    env["GUARDSTREAM_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{free_port()}"
    env["GUARDSTREAM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [("topics",), ("policy", "list")], ids=["kafka-down", "redis-down"])
def test_unreachable_service_is_a_one_line_error(args: tuple[str, ...]) -> None:
    result = _run(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
