"""`guardstream infra up|down|status`: the local Kafka, Redis and Ray the stream runs on.

infra/ imports kafka-python and redis only inside its probes, so this module stays cheap to import.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.local import InfraStatus, down, status, up
from pipelines.errors import user_errors
from workers.logging import configure_logging
from workers.settings import Settings, get_settings

infra_app = typer.Typer(help="Start, stop and inspect the local Kafka, Redis and Ray.", no_args_is_help=True)


def _print_status(infra: InfraStatus) -> None:
    table = Table(title="guardstream services")
    for column in ("service", "address", "answering", "managed", "pid", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for svc in infra.services:
        table.add_row(
            svc.name,
            svc.address,
            "[green]yes[/green]" if svc.answering else "[red]no[/red]",
            "yes" if svc.managed else "no",
            str(svc.pid or "-"),
            svc.detail,
        )
    Console().print(table)


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(fmt="console", level=settings.log_level)
    return settings


SecureOption = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="The secured stack: SASL_SSL broker, TLS + ACL Redis; writes .state/secure.env "
        "(also GUARDSTREAM_INFRA_SECURE=true).",
    ),
]


def _maybe_secure(settings: Settings, secure: bool) -> Settings:
    return settings.model_copy(update={"infra_secure": True}) if secure else settings


@infra_app.command("up")
def up_cmd(secure: SecureOption = False) -> None:
    """Start Kafka (KRaft) and Redis unless they answer already; wait until both do."""
    with user_errors():
        settings = _maybe_secure(_settings(), secure)
        _print_status(up(settings))
        if settings.infra_secure:
            env = settings.state_dir / "secure.env"
            typer.echo(
                f"clients: set -a; . {env}; set +a   (policy writer: {env.with_name('secure-writer.env')})"
            )


@infra_app.command("down")
def down_cmd(secure: SecureOption = False) -> None:
    """Stop the services `infra up` started from this state dir (others are left alone)."""
    with user_errors():
        stopped = down(_maybe_secure(_settings(), secure))
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing'}")


@infra_app.command("status")
def status_cmd(secure: SecureOption = False) -> None:
    """Show whether each service answers, and whether guardstream manages it."""
    with user_errors():
        _print_status(status(_maybe_secure(_settings(), secure)))


def register(app: typer.Typer) -> None:
    app.add_typer(infra_app, name="infra")
