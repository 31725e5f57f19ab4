"""The catalogue holds the names issue 13 asks for, and the README documents every one of them."""

from __future__ import annotations

from pathlib import Path

from workers.metrics.catalog import BY_NAME, CATALOG

README = Path(__file__).resolve().parents[3] / "README.md"

REQUIRED = {
    "guardstream_records_consumed_total": ("topic", "partition"),
    "guardstream_verdicts_total": ("tenant", "side", "unsafe"),
    "guardstream_dead_letters_total": ("code",),
    "guardstream_scoring_errors_total": ("pool", "kind"),
    "guardstream_verdict_latency_seconds": (),
    "guardstream_score_batch_seconds": ("pool",),
    "guardstream_batch_size": ("pool",),
    "guardstream_consumer_lag": ("topic", "partition"),
    "guardstream_in_flight": ("worker",),
    "guardstream_prefix_cache_hits_total": (),
    "guardstream_prefix_cache_misses_total": (),
    "guardstream_prefix_cache_bytes": ("replica",),
    "guardstream_policy_stale_total": ("tenant",),
    "guardstream_policy_reloads_total": (),
    "guardstream_rebalances_total": (),
    "guardstream_consumer_rebuilds_total": (),
    "guardstream_produce_retries_total": (),
    "guardstream_replicas_ready": ("pool",),
}


def test_the_required_names_exist_with_at_least_their_labels() -> None:
    for name, labels in REQUIRED.items():
        assert name in BY_NAME, name
        assert set(labels) <= set(BY_NAME[name].labels), name
    assert BY_NAME["guardstream_verdict_latency_seconds"].kind == "histogram"


def test_counters_end_in_total_and_histograms_have_buckets() -> None:
    for spec in CATALOG:
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert bool(spec.buckets) == (spec.kind == "histogram"), spec.name


def test_the_readme_lists_every_metric() -> None:
    text = README.read_text()
    missing = [spec.name for spec in CATALOG if f"| `{spec.name}` |" not in text]
    assert not missing, missing
