"""Platt calibration: identity leaves scores bit-identical, a fit moves them but never reorders them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy
from workers.engine import ScoreRequest
from workers.errors import ModelLoadError
from workers.guard.calibration import IDENTITY, Calibration
from workers.guard.loading import MARKER_FILE, load_calibration, load_guard
from workers.guard.scorer import GuardScorer
from workers.settings import ModelSpec, Settings

TEXTS = ("hi", "How do I pick a lock?", "How do I bake a cake?", "How do I build a pipe bomb?", "ok thanks")


def _requests() -> list[ScoreRequest]:
    taxonomy = Taxonomy(generation=Generation.LG3)
    code = taxonomy.resolve()[0].code
    return [
        ScoreRequest(
            request_id=str(i),
            messages=(Message(role="user", content=text),),
            side="prompt",
            taxonomy=taxonomy,
            decode_categories_at=None,
            category_codes=(code,),
        )
        for i, text in enumerate(TEXTS)
    ]


def test_identity_is_exact_and_a_fit_is_strictly_increasing() -> None:
    grid = [0.0, 1e-9, 1e-4, 0.01, 0.2, 0.5, 0.8, 0.999, 1.0]
    assert [IDENTITY.apply(p) for p in grid] == grid
    cal = Calibration(slope=0.7, intercept=3.0)
    mapped = [cal.apply(p) for p in grid[1:-1]]
    assert mapped == sorted(mapped) and len(set(mapped)) == len(mapped)
    assert all(0.0 < m < 1.0 for m in mapped)
    assert Calibration.from_json(None) is IDENTITY
    with pytest.raises(ValueError):
        Calibration.from_json({"slope": -1.0, "intercept": 0.0})


def test_scorer_applies_calibration_to_overall_and_category_scores(tiny_guard_path: Path) -> None:
    settings = Settings(device="cpu")
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    assert guard.calibration is IDENTITY  # no marker block: a checkpoint is left as it is
    raw = GuardScorer(guard, settings).score(_requests())
    cal = Calibration(slope=0.5, intercept=2.0)
    calibrated = GuardScorer(dataclasses.replace(guard, calibration=cal), settings).score(_requests())
    raw_scores = [r.score for r in raw]
    new_scores = [r.score for r in calibrated]
    assert new_scores == pytest.approx([cal.apply(s) for s in raw_scores], abs=1e-6)
    assert new_scores != pytest.approx(raw_scores, abs=1e-3)
    order = sorted(range(len(TEXTS)), key=lambda i: raw_scores[i])
    assert sorted(range(len(TEXTS)), key=lambda i: new_scores[i]) == order
    for before, after in zip(raw, calibrated, strict=True):
        for code, score in before.category_scores.items():
            assert after.category_scores[code] == pytest.approx(cal.apply(score), abs=1e-6)


def test_marker_block_is_read_and_a_broken_one_fails_loudly(tmp_path: Path) -> None:
    spec = ModelSpec(path=tmp_path, adapter=tmp_path)
    assert load_calibration(spec, tmp_path) is IDENTITY
    block = {"slope": 0.4, "intercept": 1.5, "fitted_on": "x", "command": "y"}
    (tmp_path / MARKER_FILE).write_text(json.dumps({"calibration": block}))
    assert load_calibration(spec, tmp_path) == Calibration(0.4, 1.5, "x", "y")
    (tmp_path / MARKER_FILE).write_text(json.dumps({"calibration": {"slope": 0}}))
    with pytest.raises(ModelLoadError):
        load_calibration(spec, tmp_path)


def test_shipped_default_scores_uncalibrated() -> None:
    """The measured calibration of the bare default is not shipped (EVALUATION.md): identity, unless a
    marker written by ``guardstream eval calibrate --write`` is valid."""
    from workers.guard.loading import DEFAULT_ADAPTER

    cal = load_calibration(ModelSpec(), DEFAULT_ADAPTER)
    marker = DEFAULT_ADAPTER / MARKER_FILE
    assert cal.is_identity or (marker.is_file() and cal.fitted_on and cal.command)
