"""Test-wide settings: no hub access, quiet tokenizers, deterministic torch threads."""

import os
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
