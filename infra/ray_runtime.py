"""Ray for guardstream: a small local Ray by default, or the cluster named by ``GUARDSTREAM_RAY_ADDRESS``.

Every entry point (stream, demo, backfill, tests) calls :func:`init_ray` instead of ``ray.init`` so that
the local defaults suit a small machine and joining a real cluster is one setting away.
"""

from __future__ import annotations

import logging

from workers.logging import get_logger
from workers.settings import Settings

RAY_NAMESPACE = "guardstream"
"""Named actors (replica pools, stream workers) live here, so a second driver can find them."""

DEFAULT_OBJECT_STORE_MB = 200
"""Batches of text and scores are small; a big object store would only take memory from the model."""

log = get_logger(__name__)


def init_ray(
    settings: Settings, *, num_cpus: int | None = None, object_store_mb: int = DEFAULT_OBJECT_STORE_MB
) -> None:
    """Start (or join) Ray once per process; later calls are no-ops.

    ``num_cpus`` and ``object_store_mb`` size a local Ray only: a cluster joined through
    ``settings.ray_address`` keeps the resources it was started with.
    """
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(
            address=settings.ray_address,
            namespace=RAY_NAMESPACE,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        log.info("ray_joined", address=settings.ray_address)
        return
    # Ray turns token auth on for a new local cluster and says so on every start; the choice stays Ray's
    # (RAY_AUTH_MODE), the notice stays out of every command's output.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # "local" (not None): a RAY_ADDRESS left in the environment must not silently redirect a local run.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * 1024 * 1024,
        namespace=RAY_NAMESPACE,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _system_config={"worker_niceness": settings.ray_worker_niceness},
    )
    log.info("ray_started", num_cpus=num_cpus, object_store_mb=object_store_mb)


def shutdown_ray() -> None:
    """Stop the local Ray (or leave the cluster) if this process started one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
