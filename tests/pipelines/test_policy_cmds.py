"""``guardstream policy`` as a user runs it: a subprocess against a real (private) Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisServer, redis_server

SAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "samples"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server: RedisServer
    with redis_server(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server.url


def guardstream(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GUARDSTREAM_REDIS_URL": redis_url, "GUARDSTREAM_LOG_FORMAT": "console"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "policy", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_set_get_list_delete(redis_url: str, tmp_path: Path) -> None:
    first = guardstream(redis_url, "set", "acme", str(SAMPLES / "policy-acme.json"))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["version"] == 1
    # tenant_id absent from the file: filled in from the argument.
    anonymous = tmp_path / "p.json"
    anonymous.write_text(json.dumps({"threshold": 0.25, "taxonomy": {"generation": "llama-guard-2"}}))
    second = guardstream(redis_url, "set", "acme", str(anonymous))
    assert second.returncode == 0, second.stderr
    stored = json.loads(second.stdout)
    assert (stored["tenant_id"], stored["version"], stored["threshold"]) == ("acme", 2, 0.25)

    got = guardstream(redis_url, "get", "acme")
    assert got.returncode == 0 and json.loads(got.stdout) == stored
    listed = guardstream(redis_url, "list", "--json")
    assert [json.loads(line)["tenant_id"] for line in listed.stdout.splitlines()] == ["acme"]
    assert "acme" in guardstream(redis_url, "list").stdout

    assert guardstream(redis_url, "delete", "acme").returncode == 0
    missing = guardstream(redis_url, "get", "acme")
    assert missing.returncode == 1 and "no policy" in missing.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "policy file"),
        (json.dumps({"tenant_id": "other"}), "is for tenant 'other'"),
        (json.dumps({"threshold": 2}), "threshold"),
        (json.dumps({"taxonomy": {"generation": "llama-guard-3", "codes": ["S99"]}}), "S99"),
    ],
)
def test_invalid_file_is_one_line_exit_2(redis_url: str, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = guardstream(redis_url, "set", "acme", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert guardstream(redis_url, "get", "acme").returncode == 1


def test_unreachable_redis_is_one_line_exit_2(tmp_path: Path) -> None:
    from tests.helpers.redis_server import free_port

    result = guardstream(f"redis://127.0.0.1:{free_port()}/0", "list")
    assert result.returncode == 2 and "unreachable" in result.stderr


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("guard.conversations", "deployment's topic"),
        ("guard.dlq", "deployment's topic"),
        ("__consumer_offsets", "reserved by Kafka"),
        ("acme-verdicts", "tenant topic prefix 'guard.verdicts.'"),
        ("guard.verdicts.kidsplay", "tenant 'kidsplay'"),
    ],
)
def test_set_refuses_verdict_topics_outside_the_tenant_prefix_or_taken(
    redis_url: str, tmp_path: Path, topic: str, reason: str
) -> None:
    kids = guardstream(redis_url, "set", "kidsplay", str(SAMPLES / "policy-kidsplay.json"))
    assert kids.returncode == 0, kids.stderr
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"route": {"verdict_topic": topic}}))
    refused = guardstream(redis_url, "set", "acme-evil", str(policy))
    assert refused.returncode == 2 and refused.stdout == ""
    assert reason in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert guardstream(redis_url, "get", "acme-evil").returncode == 1
