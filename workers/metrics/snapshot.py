"""What an actor hands the driver: its metric samples at one moment, and why it is not ready (if so).

A snapshot crosses a Ray actor boundary, hence a pydantic model. ``instance`` is drawn once per actor
process: when the driver sees a new one for the same ``source``, the actor was restarted and its counters
began again from zero (``workers.metrics.aggregate`` keeps the totals monotonic).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Sample(BaseModel):
    """One series value, as prometheus_client's ``Metric.samples`` hold it."""

    model_config = ConfigDict(frozen=True)

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class MetricsSnapshot(BaseModel):
    """One actor's samples; ``problems`` lists what keeps it from being ready (empty: ready)."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="Stable actor identity, e.g. 'worker:w0' or 'replica:default-1'.")
    instance: str = Field(description="Random id of this actor process; changes when Ray restarts it.")
    samples: list[Sample] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
