"""``guardstream moderate``: score conversation events from a file or stdin and print one verdict each.

The same path as the stream, without Kafka or Ray: event -> tenant policy -> ``build_request`` ->
``LocalEngine`` -> ``workers.decision.event_outcome``. An event whose outcome is a dead letter (scoring
failed under ``on_error: dead-letter``) gets an ``error:`` line on stderr instead of a verdict, and the
command exits 1 once every event is answered.

The policy is, in order: ``--policy FILE`` (repeatable; a single policy applies to every event, several are
looked up by ``tenant_id`` and unknown tenants get the model's default taxonomy), ``--taxonomy FILE`` (a
Taxonomy JSON), or the loaded model's own default taxonomy; ``--threshold`` overrides the policy's
threshold. Input is one JSON event, a JSON list of events, or JSONL (one event per line, blank lines
skipped).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from pipelines.errors import one_line, user_errors
from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.taxonomy import Generation, Taxonomy
from schemas.verdicts import Verdict
from workers.decision import DeadLetterReason
from workers.errors import InputError
from workers.settings import ModelSpec, Settings, get_settings

CHUNK = 256
"""Events scored per engine call: big enough to share prefixes, small enough to print as we go."""


def parse_events(text: str, source: str) -> list[ConversationEvent]:
    """Events from one JSON value (object or list) or JSONL; errors name the source and line."""
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{source}: no events")
    try:
        value: Any = json.loads(stripped)
        items = value if isinstance(value, list) else [value]
        lines = [0] * len(items)
    except json.JSONDecodeError:
        items, lines = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{source} line {number}: invalid JSON ({exc.msg})") from None
            lines.append(number)
    events = []
    for item, number in zip(items, lines, strict=True):
        try:
            events.append(ConversationEvent.model_validate(item))
        except ValidationError as exc:
            where = f"{source} line {number}" if number else source
            raise InputError(f"{where}: {one_line(exc)}") from None
    return events


class PolicyChoice:
    """Which policy each event is judged under (module docstring)."""

    def __init__(
        self,
        policies: Sequence[TenantPolicy],
        taxonomy: Taxonomy | None,
        threshold: float | None,
        generation: Generation,
    ) -> None:
        self.policies = {p.tenant_id: p for p in policies}
        self.taxonomy = taxonomy or Taxonomy(generation=generation)
        self.threshold = threshold

    def for_event(self, event: ConversationEvent) -> TenantPolicy:
        if len(self.policies) == 1:
            policy = next(iter(self.policies.values()))
        else:
            policy = self.policies.get(event.tenant_id) or TenantPolicy(
                tenant_id=event.tenant_id, taxonomy=self.taxonomy
            )
        if self.threshold is not None:
            policy = policy.model_copy(update={"threshold": self.threshold})
        return policy


def load_policies(
    policy_files: Sequence[Path], taxonomy: Path | None
) -> tuple[list[TenantPolicy], Taxonomy | None]:
    if policy_files and taxonomy is not None:
        raise InputError("give --policy or --taxonomy, not both")
    if taxonomy is not None:
        try:
            data = json.loads(taxonomy.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"taxonomy file {taxonomy}: {exc}") from None
        try:
            return [], Taxonomy.model_validate(data)
        except ValidationError as exc:
            raise InputError(f"taxonomy file {taxonomy}: {one_line(exc)}") from None
    from workers.policies.file_store import policies_in, read_policy_file

    return [p for path in policy_files for p in policies_in(read_policy_file(path), path)], None


def moderate_events(
    events: Sequence[ConversationEvent], choice: PolicyChoice, engine: Any
) -> list[Verdict | DeadLetterReason]:
    """Each event's outcome in order (a verdict or a dead-letter reason), scored in chunks by ``engine``.

    A chunk the engine cannot score at all is each event's policy's ``on_error``, as on the stream.
    """
    from workers.decision import build_request, event_outcome, side_skipped
    from workers.errors import ScoringError
    from workers.policies.base import PolicyLookup

    outcomes: list[Verdict | DeadLetterReason] = []
    for start in range(0, len(events), CHUNK):
        chunk = events[start : start + CHUNK]
        lookups = [PolicyLookup(policy=choice.for_event(e)) for e in chunk]
        todo = [
            i for i, (e, lk) in enumerate(zip(chunk, lookups, strict=True)) if not side_skipped(e, lk.policy)
        ]
        began = time.perf_counter()
        scored: list[Any]
        try:
            scored = engine.score([build_request(chunk[i], lookups[i].policy) for i in todo])
        except ScoringError as exc:
            scored = [str(exc)] * len(todo)
        latency_ms = (time.perf_counter() - began) * 1000
        by_index = dict(zip(todo, scored, strict=True))
        for i, (event, lookup) in enumerate(zip(chunk, lookups, strict=True)):
            outcome = event_outcome(
                event, lookup, by_index.get(i), model=engine.model_name, latency_ms=latency_ms
            )
            outcomes.append(outcome)
    return outcomes


def print_table(verdicts: Sequence[Verdict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("event", "tenant", "side", "verdict", "score", "categories")
    for v in verdicts:
        label = "skipped" if v.skipped else "UNSAFE" if v.unsafe else "safe"
        score = "-" if v.score is None else f"{v.score:.3f}"
        codes = ", ".join(f"{c.code} {c.name}" for c in v.categories)
        table.add_row(v.event_id, v.tenant_id, v.classified, label, score, codes)
    Console().print(table)


def _spec(
    settings: Settings, model: Path | None, prompt_format: str | None, adapter: Path | None
) -> ModelSpec:
    base = settings.models.get("default", ModelSpec())
    update: dict[str, Any] = {}
    if model is not None:
        update = {"path": model, "prompt_format": None, "adapter": None}
    if prompt_format is not None:
        try:
            update["prompt_format"] = Generation(prompt_format)
        except ValueError:
            known = ", ".join(g.value for g in Generation)
            raise InputError(f"unknown --prompt-format {prompt_format!r} (known: {known})") from None
    if adapter is not None:
        update["adapter"] = adapter
    return base.model_copy(update=update)


def register(app: typer.Typer) -> None:
    @app.command("moderate")
    def moderate(
        file: Path | None = typer.Option(None, "--file", "-f", help="JSON or JSONL events; default stdin."),
        model: Path | None = typer.Option(None, help="HF checkpoint dir or .gguf; default: shipped model."),
        prompt_format: str | None = typer.Option(None, help="e.g. llama-guard-3; default: from checkpoint."),
        adapter: Path | None = typer.Option(None, help="peft LoRA adapter dir applied on top of --model."),
        taxonomy: Path | None = typer.Option(None, help="Taxonomy JSON applied to every event."),
        policy: list[Path] = typer.Option(
            [], help="TenantPolicy JSON (one, a list, or {'policies': [...]}); repeatable."
        ),
        threshold: float | None = typer.Option(None, min=0.0, max=1.0, help="Override the policy threshold."),
        table: bool = typer.Option(False, "--table", help="Print a table for people instead of JSON lines."),
    ) -> None:
        """Score conversation events and print one Verdict JSON per event."""
        from workers.logging import configure_logging

        settings = get_settings()
        configure_logging("console", "warning")
        with user_errors():
            spec = _spec(settings, model, prompt_format, adapter)
            policies, tax = load_policies(policy, taxonomy)
            source = str(file) if file else "stdin"
            text = file.read_text("utf-8") if file else sys.stdin.read()
            events = parse_events(text, source)
            from workers.serving.local_engine import LocalEngine

            engine = LocalEngine(spec, settings)
            choice = PolicyChoice(policies, tax, threshold, engine.guard.prompt_format.generation)
            outcomes = moderate_events(events, choice, engine)
        verdicts = [o for o in outcomes if isinstance(o, Verdict)]
        if table:
            print_table(verdicts)
        else:
            for verdict in verdicts:
                typer.echo(verdict.model_dump_json())
        dead = [(e, o) for e, o in zip(events, outcomes, strict=True) if isinstance(o, DeadLetterReason)]
        for event, reason in dead:
            typer.echo(
                f"error: event {event.event_id} ({event.tenant_id}): {reason.code.value}: {reason.reason}",
                err=True,
            )
        if dead:
            raise typer.Exit(code=1)
