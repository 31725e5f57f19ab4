"""Output topics are created off the caller's thread: a send meanwhile gets a retriable ``TopicPending``,
a topic that cannot be created fails its outputs at once until it is tried again."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest
from kafka.errors import InvalidTopicError

from workers.settings import Settings
from workers.stream import topics
from workers.stream.retries import is_retriable
from workers.stream.topics import OutputTopics, TopicPending


class GatedCreate:
    """Creates topics only once ``release`` is set; records what it was asked for."""

    def __init__(self, error: Exception | None = None) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []
        self.error = error

    def __call__(self, _settings: Settings, names: Iterable[str]) -> None:
        self.calls += list(names)
        assert self.release.wait(10)
        if self.error is not None:
            raise self.error


def test_a_new_topic_is_pending_then_ready_and_created_once() -> None:
    create = GatedCreate()
    known = OutputTopics(Settings(), create)
    pending = known.check("guard.verdicts.new")
    assert isinstance(pending, TopicPending) and is_retriable(pending)
    known.prepare("guard.verdicts.new")  # already under way: no second creation
    create.release.set()
    assert known.wait("guard.verdicts.new", 10) is None
    assert known.check("guard.verdicts.new") is None and not known.pending("guard.verdicts.new")
    assert create.calls == ["guard.verdicts.new"]


def test_a_topic_that_cannot_be_created_fails_at_once_until_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    create = GatedCreate(InvalidTopicError("bad name"))
    create.release.set()
    known = OutputTopics(Settings(), create)
    error = known.wait("..", 10)
    assert isinstance(error, InvalidTopicError) and not is_retriable(error)
    assert known.check("..") is error and create.calls == [".."]
    monkeypatch.setattr(topics, "BAD_TOPIC_RETRY_S", 0.0)
    known.wait("..", 10)
    assert len(create.calls) > 1  # tried again once the window passed
