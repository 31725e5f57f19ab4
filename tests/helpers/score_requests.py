"""Scoring requests and parity checks shared by the replica and pool tests (and anyone scoring remotely).

Remote scoring (replica actors, pools) must give the same scores as the in-process engine: batching and
transport may reorder work but never change a number beyond float noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.events import Message
from schemas.taxonomy import Category, Generation, Taxonomy
from workers.engine import ScoreRequest, ScoreResult
from workers.settings import ModelSpec, Settings

CUSTOM = Taxonomy(categories=(Category(code="C1", name="Spam"), Category(code="C2", name="Scams")))


def make_requests(n: int, prefix: str = "r") -> list[ScoreRequest]:
    """Prompt and response requests under a built-in and a custom taxonomy."""
    requests = []
    for i in range(n):
        messages = [Message(role="user", content=f"question {i}: how do I bake bread?")]
        if i % 2:
            messages.append(Message(role="assistant", content=f"answer {i}: flour, water, salt."))
        requests.append(
            ScoreRequest(
                request_id=f"{prefix}{i}",
                messages=tuple(messages),
                side="response" if i % 2 else "prompt",
                taxonomy=CUSTOM if i % 3 == 0 else Taxonomy(generation=Generation.LG3),
                decode_categories_at=None,
            )
        )
    return requests


def cpu_settings(model_path: Path, **overrides: Any) -> tuple[ModelSpec, Settings]:
    """One light CPU replica spec for ``model_path`` and settings naming it the default pool."""
    spec = ModelSpec(path=model_path, num_cpus=0.25)
    return spec, Settings(models={"default": spec}, device="cpu", **overrides)


def in_process_scores(model_path: Path, requests: list[ScoreRequest]) -> dict[str, float]:
    """Scores from ``LocalEngine`` in this process: the reference remote scoring must match."""
    from workers.serving.local_engine import LocalEngine

    spec, settings = cpu_settings(model_path)
    return {r.request_id: r.score for r in LocalEngine(spec, settings).score(requests)}


def assert_same_scores(results: list[ScoreResult], expected: dict[str, float]) -> None:
    for result in results:
        assert result.score == pytest.approx(expected[result.request_id], abs=1e-4), result.request_id
