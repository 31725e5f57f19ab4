"""``/metrics`` and ``/readyz`` of a running stream, on the real Kafka, Redis and Ray (issue 13).

While the stream moderates a known set of events, the served counts must equal what reached the output
topics, every input partition's lag must return to 0, and readiness must go 503 → 200 as it starts.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from schemas.policy import TenantPolicy
from tests.helpers.http import http_get
from tests.integration.stream_support import (
    delete_topics_of,
    event,
    isolated,
    keyed,
    produce,
    reading,
    streaming,
    wait_until,
)
from workers.metrics.lag import LagReader
from workers.policies.redis_store import RedisPolicyStore
from workers.serving.pool import ModelPools
from workers.settings import ModelSpec, Settings

pytestmark = pytest.mark.integration

EVENTS_PER_TENANT = 8
BAD = [b'{"event_id": "x", "messages": [unterminated', b"\xff\xfe not text", b"[1, 2]"]


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Series by name, parsed with prometheus_client's reference parser."""
    answer = http_get(url)
    assert answer is not None and answer[0] == 200
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer[1]):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((sample.labels, sample.value))
    return series


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items()))


@pytest.fixture(scope="module")
def mine(settings: Settings, tiny_guard_path: Path) -> Iterator[Settings]:
    models = {"default": ModelSpec(path=tiny_guard_path, replicas=2, num_cpus=0.25)}
    made = isolated(
        settings,
        models=models,
        device="cpu",
        worker_num_cpus=0.1,
        metrics_port=settings.metrics_port,  # GUARDSTREAM_METRICS_PORT: the port this worktree may use
        metrics_host="127.0.0.1",
        metrics_refresh_s=0.5,
        metrics_max_tenants=2,
    )
    yield made
    delete_topics_of(made)


@pytest.fixture(scope="module")
def pools(ray_local: Any, mine: Settings) -> Iterator[ModelPools]:
    started = ModelPools.start(mine, ready_timeout_s=300)
    yield started
    started.shutdown()


class ReadyzWatcher:
    """Polls ``/readyz`` from before the stream starts, keeping every status it answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.reasons: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readyz-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            answer = http_get(self.url)
            if answer is not None:
                self.statuses.append(answer[0])
                self.reasons.append(json.loads(answer[1])["reasons"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def test_metrics_count_what_the_stream_produced_and_readiness_follows_start_up(
    mine: Settings, pools: ModelPools
) -> None:
    tenants = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    with RedisPolicyStore(mine) as store:
        for tenant in tenants:
            store.put(TenantPolicy(tenant_id=tenant))
    valid = [
        keyed(t, f"c{i % 2}", event(t, f"c{i % 2}", f"{t}-{i}", f"hello {i}"))
        for t in tenants
        for i in range(EVENTS_PER_TENANT)
    ]
    sent = produce(mine, [*valid, *[(None, raw) for raw in BAD]])
    lag_reader = LagReader(mine)
    try:  # a new group has committed nothing: every produced record is lag
        assert sum(lag_reader.read().values()) == len(sent)
    finally:
        lag_reader.close()
    base = f"http://127.0.0.1:{mine.metrics_port}"
    watcher = ReadyzWatcher(f"{base}/readyz")
    try:
        topics = [mine.verdict_topic, mine.dlq_topic]
        with reading(mine, topics) as reader, streaming(mine, pools):
            out = reader.until(lambda o: len(o.records) >= len(sent), timeout_s=180, what="every output")
            wait_until(lambda: watcher.statuses[-1:] == [200], timeout_s=60, what="/readyz to answer 200")

            def caught_up() -> bool:
                samples, seen = scrape(f"{base}/metrics"), reader.read()
                lag = samples.get("guardstream_consumer_lag", [])
                return (
                    total(samples, "guardstream_verdicts_total") == len(seen.on(mine.verdict_topic))
                    and total(samples, "guardstream_dead_letters_total") == len(seen.on(mine.dlq_topic))
                    and len(lag) == mine.topic_partitions
                    and all(value == 0 for _, value in lag)
                    and total(samples, "guardstream_in_flight") == 0
                )

            wait_until(caught_up, timeout_s=60, what="metrics to match the outputs and lag to reach 0")
            samples = scrape(f"{base}/metrics")
    finally:
        watcher.stop()

    # Counts equal what reached the topics; each event answered (at least) once.
    assert {v["event_id"] for v in out.on(mine.verdict_topic)} == {
        f"{t}-{i}" for t in tenants for i in range(8)
    }
    assert len(out.on(mine.dlq_topic)) >= len(BAD)
    assert total(samples, "guardstream_dead_letters_total", code="invalid_json") >= 1
    assert total(samples, "guardstream_dead_letters_total", code="invalid_utf8") >= 1
    per_partition: dict[str, int] = {}
    for record in sent:
        per_partition[str(record.partition)] = per_partition.get(str(record.partition), 0) + 1
    for partition, count in per_partition.items():
        consumed = total(
            samples, "guardstream_records_consumed_total", topic=mine.input_topic, partition=partition
        )
        assert consumed >= count  # more only if a rebuilt consumer re-read uncommitted records
    answered = len(out.on(mine.verdict_topic)) + len(out.on(mine.dlq_topic))
    assert total(samples, "guardstream_verdict_latency_seconds_count") == answered

    # Tenant labels capped at 2 plus "other"; replicas and their batches are visible.
    tenant_labels = {lbl["tenant"] for lbl, _ in samples["guardstream_verdicts_total"]}
    assert len(tenant_labels) == 3 and "other" in tenant_labels
    assert total(samples, "guardstream_replicas_ready", pool="default") == 2
    assert total(samples, "guardstream_batch_size_sum", pool="default") >= len(valid)
    assert (
        total(samples, "guardstream_prefix_cache_hits_total")
        + total(samples, "guardstream_prefix_cache_misses_total")
        > 0
    )
    assert total(samples, "guardstream_rebalances_total") >= mine.stream_workers

    # Ready only after start-up: 503 (with its reasons) first, 200 once workers joined.
    assert watcher.statuses[0] == 503 and watcher.reasons[0]
    assert 200 in watcher.statuses
    assert watcher.statuses.index(200) > 0


def test_a_restarted_replica_keeps_the_served_counters_monotonic(mine: Settings, pools: ModelPools) -> None:
    """Ray restarts a killed replica with fresh counters; ``/metrics`` keeps the old ones on top."""
    from pipelines.telemetry.collect import Telemetry
    from tests.helpers.score_requests import make_requests

    telemetry = Telemetry(mine.model_copy(update={"metrics_refresh_s": 60.0}), serve=False)
    try:
        telemetry.attach(pools=pools)
        victim = pools.replicas("default")[0]
        ray.get(victim.score.remote(make_requests(6, "before")), timeout=120)  # counts that must survive
        telemetry.collect()
        before = telemetry.aggregator.totals()
        batch_sum = ("guardstream_batch_size_sum", (("pool", "default"),))
        snapshot = ray.get(victim.metrics.remote("default-0"), timeout=60)
        assert sum(s.value for s in snapshot.samples if s.name == batch_sum[0]) >= 6
        old = snapshot.instance
        ray.kill(victim, no_restart=False)
        wait_until(
            lambda: _instance(victim) not in (None, old), timeout_s=120, what="Ray to restart the replica"
        )
        for i in range(4):  # the pool routes by load: some of these reach the restarted replica
            pools.score("default", make_requests(3, f"after{i}"))
        telemetry.collect()
        after = telemetry.aggregator.totals()
        assert after[batch_sum] == before[batch_sum] + 12
        assert after[("guardstream_replicas_ready", (("pool", "default"),))] == 2
    finally:
        telemetry.close()


def _instance(replica: Any) -> str | None:
    try:
        return str(ray.get(replica.metrics.remote("default-0"), timeout=5).instance)
    except Exception:  # still restarting
        return None
