"""``guardstream stream``: run the moderation stream until told to stop, then drain and exit 0.

Startup: Ray (local, or ``ray_address``), the topics, the model pools (waits until every replica has loaded
its model), then ``stream_workers`` consumer actors in one group. Shutdown on SIGINT/SIGTERM, ``--max-events``
or ``--idle-exit``: every worker stops polling, finishes its in-flight batches, produces, commits and leaves
the group; then the actors are removed. A restart resumes from the committed offsets.

``run_stream`` is the same thing as a function, for the demo and the end-to-end tests (which pass a ``stop``
event and read ``progress``).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from pipelines.errors import user_errors
from pipelines.stream.tally import WorkerTally
from workers.logging import configure_logging, get_logger
from workers.settings import Settings, get_settings

log = get_logger(__name__)

STATS_INTERVAL_S = 0.25


class StreamReport(BaseModel):
    """Totals over all workers; ``workers`` holds each one's final ``WorkerStats`` as a dict."""

    consumed: int = 0
    verdicts: int = 0
    dead_letters: int = 0
    scoring_errors: int = 0
    batches: int = 0
    in_flight: int = 0
    worker_restarts: int = 0
    watchdog_rebuilds: int = 0
    error: str | None = None
    """Why a worker stopped for good (``stopped_by: worker-failed``): its output could not be produced."""
    stopped_by: str = ""
    seconds: float = 0.0
    workers: list[dict[str, Any]] = []

    @classmethod
    def of(cls, stats: list[dict[str, Any]], **extra: Any) -> StreamReport:
        keys = (
            "consumed",
            "verdicts",
            "dead_letters",
            "scoring_errors",
            "batches",
            "in_flight",
            "watchdog_rebuilds",
        )
        totals = {k: sum(int(s.get(k, 0)) for s in stats) for k in keys}
        return cls(workers=stats, **totals, **extra)


class StreamHandle:
    """A started stream (pools + workers) that can report progress and drain."""

    def __init__(
        self, settings: Settings, pools: Any, workers: list[Any], *, owns_pools: bool, telemetry: Any = None
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.workers = workers
        self._owns_pools = owns_pools
        self.tally = WorkerTally(workers)
        self.telemetry = telemetry

    def stats(self) -> list[dict[str, Any]]:
        """Every worker's counters; a worker that died and is being restarted never fails the stream."""
        return self.tally.stats()

    def drain(self) -> list[dict[str, Any]]:
        """Drain every worker concurrently (each: stop polling, finish, produce, commit, leave)."""
        import ray

        if self.telemetry is not None:
            self.telemetry.stopping()
        final = self.tally.drain(self.settings.score_timeout_s + 90)
        if self.telemetry is not None:
            self.telemetry.finish()  # the drained workers' final counts, before the actors go
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        if self._owns_pools:
            self.pools.shutdown()
        return final


def start_stream(settings: Settings, *, pools: Any = None, telemetry: Any = None) -> StreamHandle:
    """Ensure topics, start the model pools (unless given) and the worker actors; Ray must be initialised.

    ``telemetry`` (a ``pipelines.telemetry.collect.Telemetry``) is told about the pools and workers as they
    come up, so ``/readyz`` turns 200 only once they answer.
    """
    import ray

    from pipelines.stream.topics import ensure_stream_topics
    from workers.serving.pool import ModelPools
    from workers.stream.worker import start_stream_workers

    ensure_stream_topics(settings)
    owns_pools = pools is None
    pools = pools or ModelPools.start(settings)
    if telemetry is not None:
        telemetry.attach(pools=pools)
    workers = start_stream_workers(settings, pools)
    ids = ray.get([w.ping.remote() for w in workers], timeout=120)
    if telemetry is not None:
        telemetry.attach(workers=dict(zip(ids, workers, strict=True)))
    log.info("stream_started", workers=len(workers), pools=list(pools.models), group=settings.consumer_group)
    return StreamHandle(settings, pools, workers, owns_pools=owns_pools, telemetry=telemetry)


def run_stream(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    max_events: int | None = None,
    idle_exit_s: float | None = None,
    progress: Callable[[StreamReport], None] | None = None,
    pools: Any = None,
) -> StreamReport:
    """Start the stream and run it until ``stop`` is set or an exit condition holds; then drain.

    ``max_events``: stop once this many records were consumed and answered (all workers together).
    ``idle_exit_s``: stop once no worker has received a record for this long and nothing is in flight.
    ``pools``: already-started ``ModelPools`` to use (and leave running); default: start and stop our own.
    """
    from pipelines.telemetry.collect import Telemetry

    stop = stop or threading.Event()
    started = time.monotonic()
    telemetry = Telemetry(settings) if settings.metrics_port else None
    try:
        handle = start_stream(settings, pools=pools, telemetry=telemetry)
    except BaseException:
        if telemetry is not None:
            telemetry.close()
        raise
    reason = "stop"
    try:
        while not stop.wait(STATS_INTERVAL_S):
            stats = handle.stats()
            report = StreamReport.of(stats)
            if progress is not None:
                progress(report)
            reason = _exit_reason(report, stats, max_events, idle_exit_s)
            if reason:
                break
        else:
            reason = "signal"
    finally:
        final = handle.drain()
        if telemetry is not None:
            telemetry.close()
    seconds = round(time.monotonic() - started, 3)
    error = next((s["fatal"] for s in final if s.get("fatal")), None)
    report = StreamReport.of(
        final, stopped_by=reason, seconds=seconds, worker_restarts=handle.tally.restarts, error=error
    )
    log.info("stream_stopped", **report.model_dump(exclude={"workers"}))
    return report


def _exit_reason(
    report: StreamReport, stats: list[dict[str, Any]], max_events: int | None, idle_exit_s: float | None
) -> str:
    if any(s.get("fatal") for s in stats):
        return "worker-failed"
    answered = report.verdicts + report.dead_letters
    if max_events is not None and report.consumed >= max_events and answered >= max_events:
        return "max-events"
    idle = idle_exit_s is not None and all(s["idle_s"] >= idle_exit_s for s in stats)
    if idle and report.in_flight == 0:
        return "idle"
    return ""


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (drain) instead of killing the process; restored afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: Any) -> None:
        log.info("stream_signal", signal=signal.Signals(signum).name)
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stream_command(
    workers: Annotated[int | None, typer.Option(help="Stream-worker actors; default: settings.")] = None,
    max_events: Annotated[
        int | None, typer.Option(help="Drain and exit after this many records were answered.")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Drain and exit after this many seconds without records.")
    ] = None,
) -> None:
    """Consume conversation events, score them on the model pools, produce verdicts and dead letters."""
    from infra.ray_runtime import init_ray, shutdown_ray

    settings = get_settings()
    if workers is not None:
        settings = settings.model_copy(update={"stream_workers": workers})
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    with user_errors():
        # Ray installs its own SIGTERM handler in ray.init (exit at once); ours goes on top of it so that a
        # container stop drains instead of dropping in-flight work.
        init_ray(settings)
        try:
            with stop_on_signals(stop):
                report = run_stream(settings, stop=stop, max_events=max_events, idle_exit_s=idle_exit)
        finally:
            shutdown_ray()
    typer.echo(report.model_dump_json(exclude={"workers"}))
    if report.error:
        typer.echo(f"error: a stream worker stopped: {report.error}", err=True)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("stream")(stream_command)
