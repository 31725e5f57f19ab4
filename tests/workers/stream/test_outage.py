"""A broker outage is ridden out on the same consumer, logged once each way, and given up on only late."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from kafka.errors import CommitFailedError, KafkaConnectionError, NodeNotReadyError
from structlog.testing import capture_logs

from workers.logging import configure_logging
from workers.stream import outage
from workers.stream.outage import BrokerOutage


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "RETRY_WAIT_S", 0.0)


@pytest.fixture(autouse=True)
def info_level() -> Iterator[None]:
    """Info lines logged, whatever level an earlier test (the demo logs only errors) left configured."""
    saved = structlog.get_config()
    configure_logging("json", "info")
    yield
    structlog.configure(**saved)


def test_retriable_poll_errors_are_absorbed_and_logged_once_each_way() -> None:
    tracker = BrokerOutage("w1")
    with capture_logs() as logs:
        assert tracker.absorb(KafkaConnectionError("111 ECONNREFUSED"))
        assert tracker.absorb(NodeNotReadyError(1))
        assert tracker.ongoing
        tracker.polled()
        tracker.polled()
    events = [(e["event"], e.get("failed_polls")) for e in logs]
    assert events == [("kafka_unreachable", None), ("kafka_reachable_again", 2)]
    assert "ECONNREFUSED" in logs[0]["error"] and "exc_info" not in logs[0]
    assert not tracker.ongoing


@pytest.mark.parametrize("error", [CommitFailedError("fenced"), ValueError("a bug")])
def test_errors_that_are_not_retriable_propagate(error: Exception) -> None:
    assert not BrokerOutage("w1").absorb(error)


def test_an_outage_longer_than_the_bound_goes_to_the_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 5.0, outage.GIVE_UP_S + 1.0, outage.GIVE_UP_S + 2.0])
    monkeypatch.setattr(outage.time, "monotonic", lambda: next(clock))
    tracker = BrokerOutage("w1")
    with capture_logs() as logs:
        assert tracker.absorb(KafkaConnectionError("down"))
        assert tracker.absorb(KafkaConnectionError("down"))
        assert not tracker.absorb(KafkaConnectionError("still down"))
        assert tracker.absorb(KafkaConnectionError("down again"))  # a fresh outage starts the clock anew
    assert [e["event"] for e in logs] == [
        "kafka_unreachable",
        "kafka_unreachable_giving_up",
        "kafka_unreachable",
    ]
