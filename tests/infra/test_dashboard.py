"""The Grafana dashboard graphs only metrics the code exports, and covers what an operator looks at first."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from workers.metrics.catalog import CATALOG, exported_series

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "guardstream-dashboard.json"
METRIC = re.compile(r"\bguardstream_[a-z0-9_]+")


def _queries() -> list[tuple[str, str]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def test_every_query_names_only_exported_metrics() -> None:
    exported = exported_series()
    for title, expr in _queries():
        names = METRIC.findall(expr)
        assert names, f"panel {title!r}: query names no guardstream metric: {expr}"
        unknown = sorted(set(names) - exported)
        assert not unknown, f"panel {title!r} queries {unknown}, which the code does not export"


def test_every_exported_metric_is_graphed() -> None:
    graphed = {name for _, expr in _queries() for name in METRIC.findall(expr)}
    missing = [spec.name for spec in CATALOG if not graphed & set(spec.sample_names)]
    assert not missing, f"not on the dashboard: {missing}"


def test_the_panels_an_operator_needs_are_there() -> None:
    titles = " | ".join(title.lower() for title, _ in _queries())
    needed = ("throughput", "lag", "p50", "p99", "unsafe rate by tenant", "dead letters by code", "ready")
    for topic in needed:
        assert topic in titles, topic
