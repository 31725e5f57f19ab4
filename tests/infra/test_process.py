"""Pid-file supervision: detached start, identity by command-line marker, graceful stop, log tail."""

from __future__ import annotations

import sys
from pathlib import Path

from infra import process


def test_start_find_stop_a_detached_process(tmp_path: Path) -> None:
    marker = f"guardstream-test-{tmp_path.name}"
    pid_file, log_file = tmp_path / "p.pid", tmp_path / "p.log"
    code = f"import time; print('hello', flush=True); time.sleep(60)  # {marker}"
    pid = process.start_detached(
        [sys.executable, "-c", code], pid_file=pid_file, log_file=log_file, cwd=tmp_path
    )
    try:
        assert process.read_pid(pid_file, marker) == pid
        assert process.read_pid(pid_file, "some-other-service") is None
        assert process.wait_until(lambda: "hello" in process.tail(log_file), timeout_s=10)
    finally:
        assert process.stop(pid_file, marker, grace_s=5)
    assert process.read_pid(pid_file, marker) is None
    assert not pid_file.exists()
    assert not process.stop(pid_file, marker, grace_s=1)


def test_stale_or_garbage_pid_files_are_ignored(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    assert process.read_pid(pid_file, "x") is None
    pid_file.write_text("not a pid")
    assert process.read_pid(pid_file, "x") is None
    pid_file.write_text("999999999\n")
    assert process.read_pid(pid_file, "x") is None


def test_wait_until_gives_up() -> None:
    assert not process.wait_until(lambda: False, timeout_s=0.3, interval_s=0.1)


def test_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert process.tail(tmp_path / "none.log") == ""
