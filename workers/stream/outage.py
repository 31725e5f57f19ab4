"""Riding out a broker the consumer cannot reach, on the same consumer, with one log line each way.

While the broker is down (restart, network cut) ``KafkaConsumer.poll`` raises a retriable error
(``KafkaConnectionError``, ``NodeNotReadyError``, coordinator not available) and the client keeps trying to
reconnect on its own. Rebuilding the loop then, as for an unexpected failure, would throw the group
membership away (a rebalance once the broker is back) and print a multi-kilobyte traceback per rebuild.
Instead the loop treats such a poll as empty, waits a little so it does not spin, and logs
``kafka_unreachable`` once and ``kafka_reachable_again`` (with the outage's length) once. Only an outage
longer than ``GIVE_UP_S`` is handed back to the worker's rebuild path.
"""

from __future__ import annotations

import time

from workers.logging import get_logger
from workers.stream.retries import is_retriable

log = get_logger(__name__)

GIVE_UP_S = 120.0
"""An outage this long is handed to the worker's rebuild (a fresh consumer), in case the client is wedged."""

RETRY_WAIT_S = 0.2
"""Pause after a failed poll: a refused connection fails at once, and the loop must not spin."""


class BrokerOutage:
    """The current outage of one loop's consumer, if any."""

    def __init__(self, worker_id: str) -> None:
        self._worker_id = worker_id
        self._since: float | None = None
        self._failed_polls = 0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def absorb(self, error: BaseException) -> bool:
        """True when ``error`` is a retriable failure of a poll to ride out (the caller treats the poll as
        empty); False when it should propagate (not retriable, or the outage is older than ``GIVE_UP_S``)."""
        if not is_retriable(error):
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
            log.warning("kafka_unreachable", worker=self._worker_id, error=f"{type(error).__name__}: {error}")
        self._failed_polls += 1
        if now - self._since > GIVE_UP_S:
            waited = round(now - self._since, 1)
            log.error("kafka_unreachable_giving_up", worker=self._worker_id, after_s=waited)
            self._since, self._failed_polls = None, 0
            return False
        time.sleep(RETRY_WAIT_S)
        return True

    def polled(self) -> None:
        """A poll returned: the outage, if there was one, is over."""
        if self._since is None:
            return
        log.info(
            "kafka_reachable_again",
            worker=self._worker_id,
            after_s=round(time.monotonic() - self._since, 1),
            failed_polls=self._failed_polls,
        )
        self._since, self._failed_polls = None, 0
