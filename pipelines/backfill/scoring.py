"""The stateful Ray Data worker that turns validated rows into verdicts: one instance per replica.

Ray Data constructs ``ScorerWorker`` once per actor (``concurrency=--replicas``), so the model is loaded once
and reused for every batch. Each row's outcome comes from ``workers.decision.event_outcome``, as for the
stream and ``guardstream moderate``, so a backfilled verdict equals the live one for the same event and
policy. Policies resolve through
``workers.intake.resolve_policy``: unknown tenants and a policy-store outage are handled as on the stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from pipelines.backfill.rows import FILE_SOURCE, ROW_SCHEMA
from schemas.events import ConversationEvent
from schemas.verdicts import DeadLetter, DeadLetterCode
from workers.decision import DeadLetterReason, build_request, event_outcome, side_skipped
from workers.engine import Engine, ScoreResult
from workers.errors import GuardstreamError, ScoringError
from workers.intake.records import resolve_policy
from workers.logging import configure_logging
from workers.policies.base import PolicyLookup, PolicyStore
from workers.policies.file_store import FilePolicyStore
from workers.settings import ModelSpec, Settings

EngineFactory = Callable[[ModelSpec, Settings], Engine]

SCORED_SCHEMA = pa.schema(
    [field for field in ROW_SCHEMA if field.name != "event"]
    + [
        pa.field("verdict", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("cached_tokens", pa.int64()),
    ]
)
"""What the scoring stage returns: every input row, now carrying a verdict (JSON) or a bad-row reason,
and for a scored row its prompt's tokens and how many of them came from the KV cache (the run's hit
ratio: what grouping a conversation's turns saves)."""


def local_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """The default engine: the in-process transformers scorer, imported only inside the Ray worker."""
    from workers.serving.local_engine import LocalEngine

    return LocalEngine(spec, settings)


def make_store(settings: Settings, policies: FilePolicyStore | None) -> PolicyStore:
    """The ``--policy`` files' store, or the live Redis store when ``policies`` is None."""
    if policies is not None:
        return policies
    from workers.policies.redis_store import RedisPolicyStore

    return RedisPolicyStore(settings)


class ScorerWorker:
    """Ray Data callable class: ``pyarrow.Table`` of rows in ``ROW_SCHEMA`` → table in ``SCORED_SCHEMA``."""

    def __init__(
        self,
        settings: Settings,
        policies: FilePolicyStore | None,
        engine_factory: EngineFactory | None = None,
        torch_threads: int | None = None,
    ) -> None:
        configure_logging(settings.log_format, settings.log_level)  # stderr: stdout is the command's
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self._settings = settings
        self._store = make_store(settings, policies)
        self._factory = engine_factory or local_engine
        self._engines: dict[str, Engine] = {}

    def _engine(self, pool: str) -> Engine:
        if pool not in self._engines:
            spec = self._settings.models.get(pool)
            if spec is None:
                raise ScoringError(f"no model pool named {pool!r} in GUARDSTREAM_MODELS")
            self._engines[pool] = self._factory(spec, self._settings)
        return self._engines[pool]

    def _label(self, pool: str) -> str:
        """The model label verdicts name (the loaded engine's), or the pool's name if it can't load."""
        try:
            return self._engine(pool).model_name
        except ScoringError:
            return pool

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out: list[dict[str, Any]] = []
        pools: dict[str, list[tuple[dict[str, Any], ConversationEvent, PolicyLookup]]] = {}
        for row in rows:
            event_json = row.pop("event")
            if event_json is None:
                out.append({**row, "verdict": None})
                continue
            event = ConversationEvent.model_validate_json(event_json)
            lookup = resolve_policy(
                event,
                self._store,
                unknown_tenant=self._settings.unknown_tenant,
                raw=event_json.encode("utf-8"),
                source=FILE_SOURCE,
            )
            if isinstance(lookup, DeadLetter):
                out.append(_error_row(row, lookup.error_code, lookup.reason, event_json))
            elif side_skipped(event, lookup.policy):
                out.append(self._row(row, event, lookup, None, self._label(lookup.policy.route.model), 0.0))
            else:
                pools.setdefault(lookup.policy.route.model, []).append((row, event, lookup))
        for pool, items in pools.items():
            out.extend(self._score(pool, items))
        return pa.Table.from_pylist(out, schema=SCORED_SCHEMA)

    def _score(
        self, pool: str, items: list[tuple[dict[str, Any], ConversationEvent, PolicyLookup]]
    ) -> list[dict[str, Any]]:
        """One engine call for all of a pool's events; a failed call is each event's policy's ``on_error``."""
        started = time.perf_counter()
        results: Sequence[ScoreResult | str]
        try:
            engine = self._engine(pool)
            results = engine.score([build_request(event, lookup.policy) for _, event, lookup in items])
        except (GuardstreamError, RuntimeError) as exc:
            if isinstance(exc, GuardstreamError) and not isinstance(exc, ScoringError):
                raise
            results = [str(exc)] * len(items)
        latency_ms = (time.perf_counter() - started) * 1000.0
        label = self._label(pool)
        return [
            self._row(row, event, lookup, result, label, latency_ms)
            for (row, event, lookup), result in zip(items, results, strict=True)
        ]

    @staticmethod
    def _row(
        row: dict[str, Any],
        event: ConversationEvent,
        lookup: PolicyLookup,
        scored: ScoreResult | str | None,
        model: str,
        latency_ms: float,
    ) -> dict[str, Any]:
        outcome = event_outcome(event, lookup, scored, model=model, latency_ms=latency_ms)
        if isinstance(outcome, DeadLetterReason):
            return _error_row(row, outcome.code, outcome.reason, event.model_dump_json())
        tokens = {}
        if isinstance(scored, ScoreResult) and scored.error is None:
            tokens = {"prompt_tokens": scored.prompt_tokens, "cached_tokens": scored.cached_tokens}
        return {**row, "verdict": outcome.model_dump_json(), **tokens}


def _error_row(row: dict[str, Any], code: DeadLetterCode, reason: str, raw: str) -> dict[str, Any]:
    return {
        **row,
        "error_code": code.value,
        "reason": reason,
        "raw": raw,
        "encoding": "utf-8",
        "verdict": None,
    }
