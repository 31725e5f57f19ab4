"""Detached service processes tracked by pid files, so `infra up` in one shell and `infra down` in
another (or a test session and a CLI) agree on what is running.

A process is ours only if its pid file names a live process whose command line still contains the
marker we started it with; a stale pid reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The live pid recorded in ``pid_file`` whose command line contains ``marker``, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0 or _is_zombie(pid) or marker not in _cmdline(pid):
        return None
    return pid


def start_detached(
    argv: Sequence[str], *, pid_file: Path, log_file: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start ``argv`` in its own session (it outlives this Python process and ignores its Ctrl-C),
    stdout+stderr appended to ``log_file``; record the pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def _gone(pid: int, marker: str) -> bool:
    if _is_zombie(pid):
        with contextlib.suppress(ChildProcessError):  # our own child (started by this process): reap it
            os.waitpid(pid, os.WNOHANG)
        return True
    return marker not in _cmdline(pid)


def wait_until(check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll ``check`` until it returns True or ``timeout_s`` passes; whether it became True.

    ``check`` must not raise: probes turn their own connection errors into False.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,
        reraise=False,
    )
    return bool(retrying(check))


def wait_gone(pid: int, marker: str, timeout_s: float) -> bool:
    """Whether the process exited within ``timeout_s``."""
    return wait_until(lambda: _gone(pid, marker), timeout_s=timeout_s, interval_s=0.2)


def stop(pid_file: Path, marker: str, *, grace_s: float) -> bool:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns whether a process was running."""
    pid = read_pid(pid_file, marker)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, marker, grace_s):
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, marker, 10.0)
    pid_file.unlink(missing_ok=True)
    return True


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages; empty if there is no log yet."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
