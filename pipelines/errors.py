"""Turning user mistakes into one-line errors with a non-zero exit, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from kafka.errors import KafkaError
from pydantic import ValidationError

from workers.errors import GuardstreamError


def one_line(exc: BaseException) -> str:
    """A readable single line for a pydantic error or any guardstream error."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "<root>"
            parts.append(f"{loc}: {err['msg']}")
        return f"{exc.title}: " + "; ".join(parts)
    return str(exc).replace("\n", " ")


@contextmanager
def user_errors() -> Iterator[None]:
    """Exit 2 with ``error: ...`` on stderr for input errors and unreachable services, not a traceback."""
    try:
        yield
    except (GuardstreamError, ValidationError, ValueError, OSError, KafkaError) as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        raise typer.Exit(code=2) from None
