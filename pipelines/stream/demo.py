"""``guardstream demo`` (``make demo``): the whole system on one machine in one command.

It brings up Kafka and Redis (``infra.local.up``, idempotent) and a local Ray, stores the two sample tenant
policies (acme: Llama Guard 3's taxonomy at 0.5; kidsplay: a custom 3-category taxonomy at 0.3 with its own
verdict topic), produces the sample conversations plus a few malformed records, runs the stream, and shows a
live table of verdicts per tenant and the dead letters. When every record is answered the stream drains
(finishes, produces, commits) and the demo exits 0.

Shutdown: the services the demo itself started are stopped again; services that were already running (your
own ``guardstream infra up``, a test run) are left alone. ``--keep-infra`` leaves everything running so you
can keep using ``guardstream produce`` / ``stream`` against it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from pipelines.errors import user_errors
from pipelines.stream.produce import read_records
from schemas.policy import TenantPolicy
from workers.logging import configure_logging, get_logger
from workers.settings import Settings, get_settings

log = get_logger(__name__)

SAMPLES = Path(__file__).parents[1] / "samples"
POLICY_FILES = {"acme": "policy-acme.json", "kidsplay": "policy-kidsplay.json"}
NOT_UTF8 = b"\xff\xfe\x00binary garbage that is not UTF-8"


class DemoResult(BaseModel):
    """What the demo saw: records sent, verdicts per tenant, dead letters, and whether all were answered."""

    sent: int
    verdicts: dict[str, int]
    unsafe: dict[str, int]
    dead_letters: int
    complete: bool
    seconds: float


def demo_records() -> list[tuple[bytes | None, bytes]]:
    """The sample conversations, the malformed samples, and one record that is not even UTF-8."""
    records = list(read_records(SAMPLES / "conversations.jsonl"))
    records += list(read_records(SAMPLES / "malformed.jsonl"))
    return [*records, (None, NOT_UTF8)]


def store_policies(settings: Settings) -> list[TenantPolicy]:
    """Put the sample policies into Redis (each put bumps the version and notifies running workers)."""
    from pipelines.policy_cmds import load_policy_file
    from workers.policies.redis_store import RedisPolicyStore

    with RedisPolicyStore(settings) as store:
        return [store.put(load_policy_file(t, SAMPLES / name)) for t, name in POLICY_FILES.items()]


class Board:
    """Outputs read back from the verdict topics and the DLQ, and the rich tables that show them."""

    def __init__(self, sent_ids: set[str], policies: list[TenantPolicy], settings: Settings) -> None:
        self.sent_ids = sent_ids
        self.policies = {p.tenant_id: p for p in policies}
        self.settings = settings
        self.verdicts: dict[str, list[dict[str, Any]]] = {}
        self.letters: list[dict[str, Any]] = []

    def add(self, topic: str, value: dict[str, Any]) -> None:
        if topic == self.settings.dlq_topic:
            self.letters.append(value)
        elif value.get("event_id") in self.sent_ids:
            self.verdicts.setdefault(value["tenant_id"], []).append(value)

    def answered(self) -> int:
        return sum(len(v) for v in self.verdicts.values()) + len(self.letters)

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        tenants = Table(title="Verdicts per tenant", expand=True)
        for column in (
            "tenant",
            "taxonomy",
            "threshold",
            "verdict topic",
            "verdicts",
            "unsafe",
            "last flagged",
        ):
            tenants.add_column(column)
        for tenant, verdicts in sorted(self.verdicts.items()):
            policy = self.policies.get(tenant)
            unsafe = [v for v in verdicts if v["unsafe"]]
            last = unsafe[-1] if unsafe else None
            flagged = ""
            if last is not None:
                codes = ", ".join(f"{c['code']} {c['name']}" for c in last["categories"]) or "-"
                flagged = f"{last['event_id']}: {codes} ({last['score']:.2f})" if last["score"] else codes
            tenants.add_row(
                tenant,
                _taxonomy(policy),
                f"{verdicts[-1]['threshold']:.2f}",
                (policy.route.verdict_topic if policy else None) or self.settings.verdict_topic,
                str(len(verdicts)),
                str(len(unsafe)),
                flagged,
            )
        letters = Table(title=f"Dead letters on {self.settings.dlq_topic}", expand=True)
        for column in ("source", "code", "event", "reason"):
            letters.add_column(column)
        for letter in self.letters:
            where = f"p{letter['source_partition']}@{letter['source_offset']}"
            letters.add_row(where, letter["error_code"], letter.get("event_id") or "-", letter["reason"][:90])
        return Group(tenants, letters)


def _taxonomy(policy: TenantPolicy | None) -> str:
    if policy is None:
        return "default (llama-guard-3)"
    taxonomy = policy.taxonomy
    if taxonomy.categories:
        return f"custom: {len(taxonomy.categories)} categories"
    return str(taxonomy.generation.value if taxonomy.generation else "default")


def _send(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    from pipelines.stream.produce import produce_records

    report = produce_records(settings, iter(records))
    log.info("demo_produced", sent=report.sent, keyless=report.keyless, topic=report.topic)


def _reader(settings: Settings, topics: list[str]) -> Any:
    """A group-less consumer positioned at the current end of ``topics`` (only this run's outputs)."""
    from kafka.structs import TopicPartition

    from workers.clients import kafka as kafka_clients

    consumer = kafka_clients.reader(settings)
    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    for tp in parts:
        consumer.position(tp)  # resolve the end offsets now, before anything is produced
    return consumer


def run_demo(settings: Settings, *, timeout_s: float, console: Any) -> DemoResult:
    """Policies, records, stream, live table; Kafka/Redis/Ray must be up."""
    from rich.live import Live

    from pipelines.stream.run import run_stream
    from pipelines.stream.topics import ensure_stream_topics

    policies = store_policies(settings)
    ensure_stream_topics(settings)
    topics = sorted(
        {settings.verdict_topic, settings.dlq_topic} | {p.route.verdict_topic or "" for p in policies}
    )
    consumer = _reader(settings, [t for t in topics if t])
    records = demo_records()
    sent_ids = {json.loads(v)["event_id"] for k, v in records if k is not None and _is_event(v)}
    board = Board(sent_ids, policies, settings)
    _send(settings, records)
    console.print(
        f"[bold]produced {len(records)} records[/] to {settings.input_topic}; starting the stream …"
    )
    if settings.metrics_port:
        host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
        base = f"http://{host}:{settings.metrics_port}"
        console.print(f"metrics: [bold]{base}/metrics[/]  (readiness: {base}/readyz)")
    started, stop = time.monotonic(), threading.Event()
    thread = threading.Thread(target=run_stream, args=(settings,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        with Live(board.render(), console=console, refresh_per_second=4) as live:
            while board.answered() < len(records) and time.monotonic() - started < timeout_s:
                for tp, batch in consumer.poll(timeout_ms=250).items():
                    for record in batch:
                        board.add(tp.topic, json.loads(record.value))
                live.update(board.render())
                if not thread.is_alive():
                    break
    finally:
        stop.set()
        thread.join(timeout=settings.score_timeout_s + 120)
        consumer.close()
    return DemoResult(
        sent=len(records),
        verdicts={t: len(v) for t, v in board.verdicts.items()},
        unsafe={t: sum(x["unsafe"] for x in v) for t, v in board.verdicts.items()},
        dead_letters=len(board.letters),
        complete=board.answered() >= len(records),
        seconds=round(time.monotonic() - started, 1),
    )


def _is_event(value: bytes) -> bool:
    try:
        return isinstance(json.loads(value).get("event_id"), str)
    except (ValueError, AttributeError):
        return False


def demo_command(
    keep_infra: Annotated[bool, typer.Option(help="Leave Kafka/Redis running afterwards.")] = False,
    timeout: Annotated[
        float, typer.Option(help="Give up waiting for verdicts after this many seconds.")
    ] = 900,
) -> None:
    """Run the end-to-end demo: infra up, two tenants' policies, sample traffic, live verdict table."""
    from rich.console import Console

    from infra import local
    from infra.ray_runtime import init_ray, shutdown_ray

    # The live table is the demo's output; the actors' lines would scroll it away. Dead letters are in the
    # table, so only errors are logged.
    settings = get_settings().model_copy(update={"log_format": "console", "log_level": "error"})
    configure_logging(settings.log_format, settings.log_level)
    console = Console()
    with user_errors():
        before = {s.name: s.answering for s in local.status(settings).services}
        console.print("[bold]bringing up Kafka and Redis[/] (already running ones are reused) …")
        local.up(settings)
        init_ray(settings)
        try:
            result = run_demo(settings, timeout_s=timeout, console=console)
        finally:
            shutdown_ray()
            if not keep_infra:
                stopped = [s.name for s in local.services(settings) if not before.get(s.name) and s.stop()]
                console.print(f"stopped what the demo started: {', '.join(stopped) or 'nothing'}")
    console.print(result.model_dump_json(indent=2))
    if not result.complete:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
