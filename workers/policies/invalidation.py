"""The pub/sub listener that keeps ``RedisPolicyStore``'s cache current.

One daemon thread subscribes to the policy-changed channel and calls ``invalidate`` with the tenant of every
message (``None``: every cached tenant, after a (re)subscribe or an unreadable message). A lost connection
is reported through ``failed`` and retried with the outage's backoff; changes published meanwhile are lost,
so every resubscribe invalidates everything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from workers.logging import get_logger
from workers.policies.outage import Outage

log = get_logger(__name__)


class InvalidationListener:
    """Started on demand (``ensure_started``), stopped by ``close``; never started again after that."""

    def __init__(
        self,
        client: Any,
        channel: str,
        outage: Outage,
        *,
        invalidate: Callable[[str | None], None],
        failed: Callable[[BaseException], None],
        where: Callable[[], str],
    ) -> None:
        self._client = client
        self._channel = channel
        self._outage = outage
        self._invalidate = invalidate
        self._failed = failed
        self._where = where
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._listen, name="guardstream-policy-listener", daemon=True
                )
                self._thread.start()

    def close(self, timeout_s: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _listen(self) -> None:
        """Subscribe, invalidate on every change, and resubscribe with backoff after a connection loss."""
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                # Changes published while we were not subscribed are lost: refetch everything cached.
                self._invalidate(None)
                if self._outage.recovered():
                    log.info("policy_store_reconnected", where=self._where())
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._on_message(message)
            except RedisError as exc:
                self._failed(exc)
                self._stop.wait(self._outage.backoff_s())
            finally:
                pubsub.close()

    def _on_message(self, message: dict[str, Any]) -> None:
        try:
            tenant_id = json.loads(message["data"])["tenant_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("policy_message_unreadable", data=str(message.get("data"))[:200])
            self._invalidate(None)
            return
        self._invalidate(str(tenant_id))
