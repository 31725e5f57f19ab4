"""Output topics made ready off the poll thread: a tenant's new ``route.verdict_topic`` is created in the
background, never inside a send.

Creating a topic (an admin client, ``CreateTopics``, waiting for its metadata) takes from a fraction of a
second to the admin client's request timeout; on the stream's poll thread that counted against the 25 s
``max_poll_interval``. The loop asks for a tenant's topic as soon as it reads one of the tenant's events
(``prepare``), so it is usually there by the time the verdict is; a send that still finds it being created
gets ``TopicPending``, a retriable error the output stage retries with its backoff (at-least-once) or by
aborting and re-reading (exactly-once). A topic that cannot be created fails its outputs at once for
``BAD_TOPIC_RETRY_S``, then creation is tried again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from kafka.errors import KafkaError

from workers.clients import kafka as kafka_clients
from workers.logging import get_logger
from workers.settings import Settings

log = get_logger(__name__)

BAD_TOPIC_RETRY_S = 30.0
"""A topic that could not be created is tried again after this; until then its outputs fail at once."""


class TopicPending(KafkaError):
    """The output's topic is still being created: send it again later."""

    retriable = True


class OutputTopics:
    """Which output topics exist, which are being created, which failed; thread-safe."""

    def __init__(
        self, settings: Settings, create: Callable[[Settings, Iterable[str]], object] | None = None
    ) -> None:
        self._settings = settings
        self._create = create or kafka_clients.ensure_topics
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        self._pending: dict[str, threading.Thread] = {}
        self._failed: dict[str, tuple[float, BaseException]] = {}

    def prepare(self, topic: str) -> None:
        """Start creating ``topic`` if it is not known to exist (never blocks)."""
        with self._lock:
            if topic in self._ready or topic in self._pending:
                return
            failed = self._failed.get(topic)
            if failed is not None and time.monotonic() - failed[0] < BAD_TOPIC_RETRY_S:
                return
            thread = threading.Thread(target=self._run, args=(topic,), name="topic-create", daemon=True)
            self._pending[topic] = thread
        thread.start()

    def check(self, topic: str) -> BaseException | None:
        """None if ``topic`` exists; else why its outputs cannot be sent now (``TopicPending`` or the
        creation's error). Never blocks."""
        self.prepare(topic)
        with self._lock:
            if topic in self._ready:
                return None
            failed = self._failed.get(topic)
            if failed is not None and topic not in self._pending:
                return failed[1]
        return TopicPending(f"topic {topic!r} is being created")

    def pending(self, topic: str) -> bool:
        """Whether ``topic`` is still being created (starting its creation if it is not known)."""
        return isinstance(self.check(topic), TopicPending)

    def wait(self, topic: str, timeout_s: float | None = None) -> BaseException | None:
        """``check``, after waiting for a creation in progress (for callers without a poll loop)."""
        self.prepare(topic)
        with self._lock:
            thread = self._pending.get(topic)
        if thread is not None:
            thread.join(timeout_s)
        return self.check(topic)

    def _run(self, topic: str) -> None:
        try:
            self._create(self._settings, [topic])
        except KafkaError as exc:
            log.error("topic_unavailable", topic=topic, error=f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._failed[topic] = (time.monotonic(), exc)
                self._pending.pop(topic, None)
            return
        with self._lock:
            self._ready.add(topic)
            self._failed.pop(topic, None)
            self._pending.pop(topic, None)
