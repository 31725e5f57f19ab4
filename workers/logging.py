"""structlog set-up: JSON lines in production, key=value in a terminal.

Every line about an event carries ``event_id`` and ``tenant_id``: bind them with ``log.bind(...)``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """A logger on whatever ``sys.stderr`` is *now*, looked up each time a logger is made.

    Binding the stream at configure time breaks as soon as someone swaps ``sys.stderr`` and closes the old
    one (test and CLI runners capturing output): every later line would raise ``I/O operation on closed
    file`` inside the code that logged it.
    """
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Route structlog to stderr; stdout is reserved for command output (verdicts, prompts, tables)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
