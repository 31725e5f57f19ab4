"""Whether the policy store's Redis is reachable, and when to try it again.

Shared by the store's lookups and its pub/sub listener: while Redis is down, lookups skip it until the
jittered exponential backoff says to try again, so an outage costs each event a cache read, not a timeout.
"""

from __future__ import annotations

import threading
import time

from redis.backoff import ExponentialWithJitterBackoff


class Outage:
    """Whether Redis is reachable, and when to try again; lookups skip Redis until then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backoff = ExponentialWithJitterBackoff(cap=5.0, base=0.1)
        self._failures = 0
        self._retry_at = 0.0
        self._warned: set[str] = set()

    @property
    def down(self) -> bool:
        return self._failures > 0

    def failed(self) -> bool:
        """Record a failure; True when it starts a new outage."""
        with self._lock:
            self._failures += 1
            self._retry_at = time.monotonic() + self._backoff.compute(self._failures)
            return self._failures == 1

    def recovered(self) -> bool:
        """Record a success; True when it ends an outage."""
        with self._lock:
            was_down, self._failures = self._failures > 0, 0
            self._warned.clear()
            return was_down

    def should_try(self) -> bool:
        return self._failures == 0 or time.monotonic() >= self._retry_at

    def backoff_s(self) -> float:
        return self._backoff.compute(max(self._failures, 1))

    def first_warning(self, tenant_id: str) -> bool:
        with self._lock:
            if tenant_id in self._warned:
                return False
            self._warned.add(tenant_id)
            return True
