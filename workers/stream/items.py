"""What a stream loop works with: the pools it submits to, the events it holds, the counters it reports."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka.structs import TopicPartition
from pydantic import BaseModel

from schemas.events import ConversationEvent
from workers.engine import ScoreRequest, ScoreResult
from workers.intake.records import Source
from workers.policies.base import PolicyLookup


class Pools(Protocol):
    """What the loop needs from ``workers.serving.pool.ModelPools``: partition, submit, collect, label."""

    def partition(
        self, model: str, requests: Sequence[ScoreRequest]
    ) -> list[tuple[int | None, list[int]]]: ...

    def submit(self, model: str, requests: Sequence[ScoreRequest], replica: int | None = None) -> Any: ...

    def result(self, pending: Any, timeout_s: float | None = None) -> list[ScoreResult]: ...

    def poll(self, pending: Any) -> list[ScoreResult] | Any: ...

    def model_label(self, model: str) -> str: ...


@dataclass
class Item:
    """A valid event waiting for its score, with what is needed to answer and commit it."""

    event: ConversationEvent
    lookup: PolicyLookup
    tp: TopicPartition
    offset: int
    key: bytes | None
    raw: bytes
    received_at: float = field(default_factory=time.monotonic)

    def source(self) -> Source:
        key = self.key.decode("utf-8", "replace") if self.key is not None else None
        return Source(self.tp.topic, self.tp.partition, self.offset, key)


class WorkerStats(BaseModel):
    """Counters for operators, the ``stream`` command's exit conditions and tests."""

    worker_id: str
    consumed: int = 0
    verdicts: int = 0
    dead_letters: int = 0
    scoring_errors: int = 0
    batches: int = 0
    watchdog_rebuilds: int = 0
    """Consumers rebuilt because a rejoin never finished (``Rebalance.check_rejoin``): watchdog firings."""
    in_flight: int = 0
    idle_s: float = 0.0
    committed: dict[str, int] = {}
    running: bool = False
