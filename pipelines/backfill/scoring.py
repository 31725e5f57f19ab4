"""The stateful Ray Data worker that turns validated rows into verdicts: one instance per replica.

Ray Data constructs ``ScorerWorker`` once per actor (``concurrency=--replicas``), so the model is loaded once
and reused for every batch. Verdicts come from ``workers.decision`` (``build_request``, ``decide``,
``skipped_verdict``, ``error_verdict``), as for the stream and ``guardstream moderate``, so a backfilled
verdict equals the live one for the same event and policy. Policies resolve through
``workers.intake.resolve_policy``: unknown tenants and a policy-store outage are handled as on the stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from pipelines.backfill.rows import FILE_SOURCE, ROW_SCHEMA
from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.verdicts import DeadLetter, DeadLetterCode, Verdict
from workers.decision import build_request, decide, error_verdict, side_skipped, skipped_verdict
from workers.engine import Engine
from workers.errors import GuardstreamError, ScoringError
from workers.intake import resolve_policy
from workers.logging import configure_logging, get_logger
from workers.policies.base import PolicyLookup, PolicyStore
from workers.settings import ModelSpec, Settings

log = get_logger(__name__)

EngineFactory = Callable[[ModelSpec, Settings], Engine]

SCORED_SCHEMA = pa.schema(
    [field for field in ROW_SCHEMA if field.name != "event"] + [pa.field("verdict", pa.string())]
)
"""What the scoring stage returns: every input row, now carrying a verdict (JSON) or a bad-row reason."""


def local_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """The default engine: the in-process transformers scorer, imported only inside the Ray worker."""
    from workers.serving.local_engine import LocalEngine

    return LocalEngine(spec, settings)


def make_store(settings: Settings, policies: dict[str, TenantPolicy] | None) -> PolicyStore:
    """The policies given on the command line, or the live Redis store when ``policies`` is None."""
    if policies is not None:
        from workers.policies.file_store import FilePolicyStore

        return FilePolicyStore(policies)
    from workers.policies.redis_store import RedisPolicyStore

    return RedisPolicyStore(settings)


class ScorerWorker:
    """Ray Data callable class: ``pyarrow.Table`` of rows in ``ROW_SCHEMA`` → table in ``SCORED_SCHEMA``."""

    def __init__(
        self,
        settings: Settings,
        policies: dict[str, TenantPolicy] | None,
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
                pool = lookup.policy.route.model
                verdict = skipped_verdict(event, lookup.policy, model=pool, policy_stale=lookup.stale)
                out.append({**row, "verdict": verdict.model_dump_json()})
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
        try:
            engine = self._engine(pool)
            results = engine.score([build_request(event, lookup.policy) for _, event, lookup in items])
        except (GuardstreamError, RuntimeError) as exc:
            if isinstance(exc, GuardstreamError) and not isinstance(exc, ScoringError):
                raise
            return [_failed(row, event, lookup, pool, str(exc)) for row, event, lookup in items]
        latency_ms = (time.perf_counter() - started) * 1000.0
        scored = []
        for (row, event, lookup), result in zip(items, results, strict=True):
            if result.error is not None:
                scored.append(_failed(row, event, lookup, pool, result.error))
                continue
            verdict = decide(
                event,
                lookup.policy,
                result,
                model=engine.model_name,
                latency_ms=latency_ms,
                policy_stale=lookup.stale,
            )
            scored.append({**row, "verdict": verdict.model_dump_json()})
        return scored


def _error_row(row: dict[str, Any], code: DeadLetterCode, reason: str, raw: str) -> dict[str, Any]:
    return {
        **row,
        "error_code": code.value,
        "reason": reason,
        "raw": raw,
        "encoding": "utf-8",
        "verdict": None,
    }


def _failed(
    row: dict[str, Any], event: ConversationEvent, lookup: PolicyLookup, pool: str, error: str
) -> dict[str, Any]:
    """Scoring was impossible: dead-letter the row, or a fail-open/closed verdict with ``error`` set."""
    log.warning(
        "scoring_failed",
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        pool=pool,
        on_error=lookup.policy.on_error,
        error=error,
    )
    if lookup.policy.on_error == "dead-letter":
        reason = f"scoring failed on model pool {pool!r}: {error}"
        return _error_row(row, DeadLetterCode.SCORING_FAILED, reason, event.model_dump_json())
    verdict: Verdict = error_verdict(event, lookup.policy, model=pool, error=error, policy_stale=lookup.stale)
    return {**row, "verdict": verdict.model_dump_json()}
