"""One base class for a service infra/ can start locally: where its files live, how to start it detached,
how to ask it whether it answers, how to stop it. Kafka and Redis differ only in those few hooks.

A service whose configured address is not on this machine, or that already answers without being ours
(the user's own Kafka or Redis), is never started or stopped here, only probed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from infra import process
from infra.errors import ServiceStartError
from workers.logging import get_logger
from workers.settings import Settings

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

log = get_logger(__name__)


class ServiceStatus(BaseModel):
    """What `guardstream infra status` shows for one service."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="kafka, redis or ray.")
    address: str = Field(description="Where clients connect (bootstrap, URL, or Ray address).")
    answering: bool = Field(description="A client request just succeeded.")
    managed: bool = Field(description="Started by infra/ from this state dir (so `infra down` stops it).")
    pid: int | None = Field(default=None, description="Process id when managed and running.")
    detail: str = Field(default="", description="One line for a person: log file, or why it's external.")


class LocalService(ABC):
    """A service process started from ``settings.state_dir/<name>/`` with a pid file and a log file."""

    name: ClassVar[str]
    grace_s: ClassVar[float] = 20.0
    """How long a SIGTERM may take before SIGKILL (Kafka flushes and shuts its controller down)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- hooks ------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def address(self) -> str:
        """The address clients use, as configured in Settings."""

    @property
    @abstractmethod
    def host_port(self) -> tuple[str, int]:
        """Host and port this service listens on, parsed from :attr:`address`."""

    @property
    @abstractmethod
    def marker(self) -> str:
        """A substring of the process's command line that identifies it as this service."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configs / format storage before the first start; idempotent."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line that runs the service in the foreground."""

    @abstractmethod
    def probe(self) -> bool:
        """Whether a real client request succeeds now; never raises."""

    # --- shared behaviour -------------------------------------------------------------------------------
    @property
    def local(self) -> bool:
        return self.host_port[0] in LOOPBACK

    @property
    def home(self) -> Path:
        return self.settings.state_dir.resolve() / self.name

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file, self.marker)

    def start(self) -> int | None:
        """Start the process unless it runs already or something else answers at the address.

        Returns the pid of our process, or None when the service is external.
        """
        pid = self.pid()
        if pid is not None:
            return pid
        if not self.local or self.probe():
            log.info("service_external", service=self.name, address=self.address)
            return None
        self.home.mkdir(parents=True, exist_ok=True)
        self.prepare()
        pid = process.start_detached(
            self.argv(), pid_file=self.pid_file, log_file=self.log_file, cwd=self.home
        )
        log.info("service_started", service=self.name, pid=pid, log=str(self.log_file))
        return pid

    def wait_ready(self, pid: int | None, timeout_s: float) -> None:
        """Block until the service answers; fail fast with the log tail if our process died."""

        def check() -> bool:
            if self.probe():
                return True
            if pid is not None and self.pid() is None:
                raise ServiceStartError(self.name, "the process exited", process.tail(self.log_file))
            return False

        if not process.wait_until(check, timeout_s=timeout_s, interval_s=0.5):
            reason = f"no answer at {self.address} within {timeout_s:.0f}s"
            raise ServiceStartError(self.name, reason, process.tail(self.log_file) if pid else "")
        log.info("service_ready", service=self.name, address=self.address)

    def stop(self) -> bool:
        """Stop our process (SIGTERM, then SIGKILL after :attr:`grace_s`); whether one was running."""
        stopped = process.stop(self.pid_file, self.marker, grace_s=self.grace_s)
        if stopped:
            log.info("service_stopped", service=self.name)
        return stopped

    def status(self) -> ServiceStatus:
        pid = self.pid()
        answering = self.probe()
        if pid is not None:
            detail = f"log: {self.log_file}"
        elif answering:
            detail = "not started by guardstream (left alone by `infra down`)"
        else:
            detail = "not running" if self.local else "remote address; start it yourself"
        return ServiceStatus(
            name=self.name,
            address=self.address,
            answering=answering,
            managed=pid is not None,
            pid=pid,
            detail=detail,
        )
