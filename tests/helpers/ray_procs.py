"""Pids of this process's own Ray actors, for fault tests that ``kill -9`` one.

Ray's state API needs the dashboard (guardstream starts Ray without it) and other Ray instances on the
machine make address discovery ambiguous, so actors are found as descendants of this process (a local
``ray.init`` starts raylet and workers under it) whose process title names the actor class.
"""

from __future__ import annotations

import os

import psutil


def actor_pids(class_name: str) -> list[int]:
    """Live worker processes of this process's Ray running an actor of ``class_name``."""
    title = f"ray::{class_name}"
    pids = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if any(title in part for part in child.cmdline()):
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(pids)
