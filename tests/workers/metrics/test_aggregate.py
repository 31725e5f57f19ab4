"""Actor recorders → snapshots → the driver's merge, read back through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.verdicts import DeadLetter, DeadLetterCode, Verdict
from workers.engine import CacheStats, ScoreResult
from workers.metrics.aggregate import Aggregator
from workers.metrics.catalog import CATALOG
from workers.metrics.replica import ReplicaMetrics
from workers.metrics.stream import StreamMetrics, error_kind
from workers.metrics.tenants import OTHER, TenantLabels

TP = ("guard.conversations", 0)


def verdict(tenant: str, *, unsafe: bool, side: str = "prompt") -> Verdict:
    return Verdict(
        event_id="e", tenant_id=tenant, conversation_id="c", classified=side, unsafe=unsafe, threshold=0.5
    )


def dead_letter(code: DeadLetterCode) -> DeadLetter:
    return DeadLetter(error_code=code, reason="bad", raw_payload="x", payload_encoding="utf-8")


def scrape(aggregator: Aggregator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a Prometheus server would read from ``/metrics``, parsed by the reference parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(aggregator)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def answer(metrics: StreamMetrics, offset: int, body: Verdict | DeadLetter) -> None:
    metrics.polled(TP, offset)
    metrics.answered(TP, offset, body)


def test_counts_of_two_workers_add_up_per_label() -> None:
    w0, w1 = StreamMetrics("w0", max_tenants=10), StreamMetrics("w1", max_tenants=10)
    answer(w0, 0, verdict("acme", unsafe=True))
    answer(w0, 1, verdict("acme", unsafe=False))
    answer(w1, 0, verdict("acme", unsafe=True))
    answer(w1, 1, dead_letter(DeadLetterCode.INVALID_JSON))
    agg = Aggregator(max_tenants=10)
    agg.ingest(w0.snapshot(in_flight=3, running=True))
    agg.ingest(w1.snapshot(in_flight=0, running=True))
    got = scrape(agg)
    unsafe = (("side", "prompt"), ("tenant", "acme"), ("unsafe", "true"))
    assert got[("guardstream_verdicts_total", unsafe)] == 2
    assert got[("guardstream_dead_letters_total", (("code", "invalid_json"),))] == 1
    consumed = (("partition", "0"), ("topic", "guard.conversations"))
    assert got[("guardstream_records_consumed_total", consumed)] == 4
    assert got[("guardstream_verdict_latency_seconds_count", ())] == 4
    assert got[("guardstream_verdict_latency_seconds_bucket", (("le", "+Inf"),))] == 4
    assert got[("guardstream_in_flight", (("worker", "w0"),))] == 3


def test_a_restarted_actor_does_not_make_counters_go_backwards() -> None:
    agg = Aggregator(max_tenants=10)
    before = StreamMetrics("w0", max_tenants=10)
    for offset in range(5):
        answer(before, offset, verdict("acme", unsafe=False))
    agg.ingest(before.snapshot(in_flight=0, running=True))
    after = StreamMetrics("w0", max_tenants=10)  # Ray restarted the actor: a new process, counts from 0
    answer(after, 5, verdict("acme", unsafe=False))
    agg.ingest(after.snapshot(in_flight=7, running=True))
    got = scrape(agg)
    safe = (("side", "prompt"), ("tenant", "acme"), ("unsafe", "false"))
    assert got[("guardstream_verdicts_total", safe)] == 6
    assert got[("guardstream_verdict_latency_seconds_count", ())] == 6
    assert got[("guardstream_in_flight", (("worker", "w0"),))] == 7  # a gauge is the live process's only


def test_the_same_instance_reporting_again_replaces_rather_than_adds() -> None:
    agg = Aggregator(max_tenants=10)
    worker = StreamMetrics("w0", max_tenants=10)
    answer(worker, 0, dead_letter(DeadLetterCode.TOO_LARGE))
    agg.ingest(worker.snapshot(in_flight=0, running=True))
    agg.ingest(worker.snapshot(in_flight=0, running=True))
    assert scrape(agg)[("guardstream_dead_letters_total", (("code", "too_large"),))] == 1


def test_tenant_labels_are_capped_across_workers() -> None:
    agg = Aggregator(max_tenants=2)
    workers = [StreamMetrics(f"w{i}", max_tenants=2) for i in range(2)]
    for i, tenant in enumerate(["t1", "t2", "t3", "t4"]):  # each worker alone stays within its cap
        answer(workers[i % 2], i, verdict(tenant, unsafe=True))
    for worker in workers:
        agg.ingest(worker.snapshot(in_flight=0, running=True))
    tenants = {
        dict(labels)["tenant"]: value
        for (name, labels), value in scrape(agg).items()
        if name == "guardstream_verdicts_total"
    }
    assert len(tenants) == 3  # two tenants of their own plus "other"
    assert tenants[OTHER] == 2
    assert sum(tenants.values()) == 4


def test_tenant_labels_keep_the_first_ones_seen() -> None:
    labels = TenantLabels(2)
    assert [labels(t) for t in ["a", "b", "c", "a", None]] == ["a", "b", OTHER, "a", OTHER]


def test_every_catalogue_family_is_exported_before_any_sample() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Aggregator(max_tenants=1))
    names = {family.name for family in text_string_to_metric_families(generate_latest(registry).decode())}
    assert names == {spec.family for spec in CATALOG}


def test_replica_snapshot_carries_cache_counters_and_batches() -> None:
    replica = ReplicaMetrics("default")
    replica.forward(requests=12, seconds=0.3)
    agg = Aggregator(max_tenants=1)
    agg.ingest(replica.snapshot("default-0", CacheStats(hits=9, misses=3, nbytes=4096)))
    got = scrape(agg)
    assert got[("guardstream_prefix_cache_hits_total", (("pool", "default"),))] == 9
    assert got[("guardstream_prefix_cache_misses_total", (("pool", "default"),))] == 3
    assert got[("guardstream_prefix_cache_bytes", (("replica", "default-0"),))] == 4096
    assert got[("guardstream_batch_size_bucket", (("le", "16.0"), ("pool", "default")))] == 1
    assert got[("guardstream_batch_size_bucket", (("le", "8.0"), ("pool", "default")))] == 0
    assert got[("guardstream_score_batch_seconds_sum", (("pool", "default"),))] == 0.3


def test_driver_gauges_replace_their_series() -> None:
    agg = Aggregator(max_tenants=1)
    agg.set_gauge("guardstream_consumer_lag", {(("partition", "0"), ("topic", "in")): 5.0})
    agg.set_gauge("guardstream_consumer_lag", {(("partition", "1"), ("topic", "in")): 0.0})
    lag = {k: v for k, v in scrape(agg).items() if k[0] == "guardstream_consumer_lag"}
    assert lag == {("guardstream_consumer_lag", (("partition", "1"), ("topic", "in"))): 0.0}


def test_revoked_partitions_are_not_timed_and_readiness_follows_assignment() -> None:
    worker = StreamMetrics("w0", max_tenants=1)
    worker.loop_started()
    assert worker.snapshot(in_flight=0, running=True).problems == [
        "stream worker w0: waiting for its partition assignment"
    ]
    worker.assigned()
    assert worker.snapshot(in_flight=0, running=True).problems == []
    worker.polled(TP, 0)
    worker.forget([TP])
    worker.answered(TP, 0, verdict("acme", unsafe=False))  # a late ack after revoke: counted, not timed
    agg = Aggregator(max_tenants=1)
    agg.ingest(worker.snapshot(in_flight=0, running=True))
    got = scrape(agg)
    assert got[("guardstream_verdict_latency_seconds_count", ())] == 0
    assert got[("guardstream_rebalances_total", ())] == 1
    worker.consumer_rebuilt()
    assert worker.snapshot(in_flight=0, running=False).problems == [
        "stream worker w0: not consuming (starting or rebuilding)"
    ]


def test_error_kinds_are_a_small_fixed_set() -> None:
    alone = ScoreResult(request_id="r", score=0.0, error="taxonomy too long for the prompt budget")
    assert error_kind(alone) == "request"
    assert error_kind("ScoringError: scoring 8 requests timed out") == "timeout"
    assert error_kind("UnknownModelError: no model pool named 'x'") == "unknown_model"
    assert error_kind("ScoringError: model pool 'd': replica died twice: ...") == "replica_lost"
    assert error_kind("ScoringError: RuntimeError: boom") == "model"
