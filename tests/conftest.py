"""Test-wide settings: no hub access, quiet tokenizers, deterministic torch threads."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_guard_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random guard checkpoint (LG3 format, real tokenizer), built once per test session."""
    from tests.helpers.tiny_guard import build_tiny_guard

    return build_tiny_guard(tmp_path_factory.mktemp("tiny-guard-0"), seed=0)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray (2 CPUs) for every test that needs it, shut down when the run ends.

    Ray allows one ``ray.init`` per process, so per-module starts would collide with each other; a start
    also costs seconds. Tests that must see a replica die kill actors, never this Ray.
    """
    from infra.ray_runtime import init_ray, shutdown_ray
    from workers.settings import Settings

    init_ray(Settings(), num_cpus=2)
    yield
    shutdown_ray()
