"""The metrics endpoint over real HTTP on a real port: /metrics, /healthz, /readyz, unknown paths."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pipelines.telemetry.collect import Telemetry
from pipelines.telemetry.server import MetricsServer, Readiness
from tests.helpers.http import http_get
from workers.metrics.aggregate import Aggregator
from workers.metrics.catalog import CATALOG
from workers.metrics.stream import StreamMetrics
from workers.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    answer = http_get(url)
    assert answer is not None, f"nothing answers at {url}"
    return answer


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Telemetry before the pools start, as ``stream`` creates it; refresh slow enough not to run here."""
    settings = Settings(metrics_port=free_port(), metrics_refresh_s=60)
    started = Telemetry(settings)
    yield started
    started.close()


def test_probes_while_the_stream_starts(telemetry: Telemetry) -> None:
    assert telemetry.server is not None
    status, body = get(telemetry.server.url("/healthz"))
    assert (status, json.loads(body)) == (200, {"alive": True})
    status, body = get(telemetry.server.url("/readyz"))
    assert status == 503
    reasons = json.loads(body)["reasons"]
    assert "model pools are starting (loading their models)" in reasons
    assert "stream workers are not started" in reasons


def test_metrics_lists_every_family_and_the_actors_counts(telemetry: Telemetry) -> None:
    assert telemetry.server is not None
    worker = StreamMetrics("w0", max_tenants=5)
    for offset in range(3):
        worker.polled(("in", 1), offset)
    telemetry.aggregator.ingest(worker.snapshot(in_flight=3, running=True))
    status, text = get(telemetry.server.url("/metrics"))
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {spec.family for spec in CATALOG}
    consumed = families["guardstream_records_consumed"].samples
    assert [(s.labels, s.value) for s in consumed] == [({"topic": "in", "partition": "1"}, 3.0)]


def test_readyz_is_200_when_ready_and_unknown_paths_404() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Aggregator(max_tenants=1))
    server = MetricsServer("127.0.0.1", free_port(), registry, lambda: Readiness(ready=True))
    try:
        status, body = get(server.url("/readyz"))
        assert (status, json.loads(body)) == (200, {"ready": True, "reasons": []})
        status, body = get(server.url("/nope"))
        assert status == 404
        assert "/metrics" in json.loads(body)["error"]
    finally:
        server.close()


def test_a_port_in_use_is_a_clear_error() -> None:
    registry = CollectorRegistry(auto_describe=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with pytest.raises(
            OSError, match=f"cannot serve metrics on 127.0.0.1:{port}.*GUARDSTREAM_METRICS_PORT"
        ):
            MetricsServer("127.0.0.1", port, registry, lambda: Readiness(ready=True))
