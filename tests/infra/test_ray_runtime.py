"""The local Ray that ``init_ray`` starts runs its workers at ``ray_worker_niceness``, not Ray's 15.

At nice 15 a replica yields the CPU to the driver, a local broker and every other job on the node, so on a
small or shared machine the stream scored far below the in-process scorer (BENCHMARKS.md, stream).
"""

from __future__ import annotations

import os

import pytest
import ray

from workers.settings import Settings

pytestmark = pytest.mark.usefixtures("ray_session")


@ray.remote(num_cpus=0.1)
def _niceness() -> int:
    return os.nice(0)


def test_local_ray_workers_run_at_the_drivers_priority_by_default() -> None:
    assert Settings().ray_worker_niceness == 0
    assert ray.get(_niceness.remote(), timeout=120) == os.nice(0)
