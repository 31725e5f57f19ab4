"""Errors of the local services layer: each says which service failed and shows where to look."""

from __future__ import annotations

from workers.errors import GuardstreamError


class InfraError(GuardstreamError):
    """A local service could not be installed, started, reached or stopped."""


class ServiceStartError(InfraError):
    """A service was started but never answered; the message carries the tail of its log."""

    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        tail = f"\n--- last lines of the {service} log ---\n{log_tail}" if log_tail else ""
        super().__init__(f"{service} did not come up: {reason}{tail}")


class InstallError(InfraError):
    """A prerequisite (java, mvn, redis-server) is missing or its installation failed."""
