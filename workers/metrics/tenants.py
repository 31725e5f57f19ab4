"""Bounded tenant label values: a flood of tenant ids must not explode the metric store.

Each distinct label value is a time series in Prometheus; a tenant id is data, not configuration, so a
misbehaving producer (or a test) could create thousands. The first ``limit`` tenants seen keep their own
label; every later one is counted under ``other``. First come is deterministic within a process and sticky,
so a tenant's series never moves between its own label and ``other``.
"""

from __future__ import annotations

import threading

OTHER = "other"


class TenantLabels:
    """Maps tenant ids to label values, at most ``limit`` distinct ones plus ``other``. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, tenant_id: str | None) -> str:
        if not tenant_id:
            return OTHER
        if tenant_id in self._known:  # set membership is atomic under the GIL: no lock on the hot path
            return tenant_id
        with self._lock:
            if len(self._known) < self._limit:
                self._known.add(tenant_id)
                return tenant_id
        return OTHER
