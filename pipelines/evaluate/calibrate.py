"""``guardstream eval calibrate``: fit Platt scaling for a guard on training splits and write it as data.

Why: a guard that ranks harm well but never reaches 0.5 (the shipped bare SmolLM2 default) makes every
tenant threshold meaningless. ``workers.guard.calibration`` explains the map and why it keeps rankings.

Fitting data: a class-balanced, seeded sample of *training splits* only (``--data FILE.train.jsonl``), the
same number of rows per (side, label) cell, so the fitted 0.5 sits between safe and unsafe rather than at
the sample's prior, for prompts and responses alike. Held-out files (``--check``) are only measured:
precision/recall at the threshold before and after, from one scoring pass. Scores are read *uncalibrated*
(any calibration the model already has is switched off first), so a refit never compounds an old fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.errors import user_errors
from pipelines.evaluate.metrics import binary_metrics
from pipelines.evaluate.rows import EvalRow, read_rows
from schemas.taxonomy import Generation, Taxonomy
from workers.errors import InputError
from workers.guard.calibration import EPS, IDENTITY, Calibration


def balanced_sample(rows: list[EvalRow], per_cell: int, seed: int) -> list[EvalRow]:
    """Up to ``per_cell`` rows of each (side, unsafe) cell, seeded; every cell is cut to the smallest's size
    so neither class nor side outweighs another in the fit."""
    cells: dict[tuple[str, int], list[EvalRow]] = defaultdict(list)
    for row in rows:
        cells[(row.side, row.unsafe)].append(row)
    if not cells:
        raise InputError("no rows to calibrate on")
    n = min(per_cell, *(len(c) for c in cells.values()))
    rng = random.Random(seed)
    return [row for key in sorted(cells) for row in rng.sample(cells[key], n)]


def logit(score: float) -> float:
    p = min(max(score, EPS), 1.0 - EPS)
    return math.log(p) - math.log1p(-p)


def fit(scores: list[float], labels: list[int]) -> tuple[float, float]:
    """Slope and intercept of a logistic regression of the label on ``logit(score)`` (unregularised, as
    Platt scaling is: the fit is 2 parameters on hundreds of rows)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000)
    model.fit([[logit(s)] for s in scores], labels)
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    if slope <= 0:
        raise InputError(f"fitted slope {slope:.4f} <= 0: this model ranks harm below chance; won't ship it")
    return slope, intercept


def write_marker(path: Path, calibration: Calibration) -> None:
    """Set the marker's ``calibration`` block, keeping its other keys (e.g. ``prompt_format``)."""
    data: dict[str, Any] = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    data["calibration"] = calibration.to_json()
    path.write_text(json.dumps(data, indent=2) + "\n", "utf-8")


def register_calibrate(group: typer.Typer) -> None:
    """``guardstream eval calibrate --data A.train.jsonl ... [--check B.heldout.jsonl] [--write MARKER]``."""

    @group.command("calibrate")
    def calibrate_command(
        data: Annotated[list[Path], typer.Option(help="Training-split eval-row JSONL (repeat).")],
        check: Annotated[list[Path] | None, typer.Option(help="Held-out file to measure (repeat).")] = None,
        per_cell: Annotated[int, typer.Option(help="Rows per (side, label) cell.")] = 75,
        check_sample: Annotated[int | None, typer.Option(help="Seeded N rows of each --check.")] = None,
        write: Annotated[Path | None, typer.Option(help="guardstream.json marker to write.")] = None,
        model: Annotated[Path | None, typer.Option(help="Checkpoint (default: shipped).")] = None,
        adapter: Annotated[Path | None, typer.Option(help="peft LoRA adapter dir.")] = None,
        prompt_format: Annotated[str | None, typer.Option(help="e.g. llama-guard-3.")] = None,
        threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
        seed: int = 0,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        """Fit p' = sigmoid(a*logit(p) + b) on balanced training rows; print a, b; optionally write them."""
        with user_errors():
            if any(".heldout." in p.name or p.name == "obvious.jsonl" for p in data):
                raise InputError("--data must be training splits, never held-out or obvious.jsonl")
            from pipelines.evaluate.cli import sample_rows

            rows = balanced_sample([r for p in data for r in read_rows(p)], per_cell, seed)
            generation = Generation(prompt_format) if prompt_format else Generation.LG3
            taxonomy = Taxonomy(generation=generation)
            name, engine, score_fn = _engine(model, adapter, prompt_format, taxonomy, batch_size, threads)
            scores = [s for s, _ in score_fn(rows, ())]
            labels = [int(r.unsafe) for r in rows]
            slope, intercept = fit(scores, labels)
            command = "guardstream eval calibrate " + shlex.join(sys.argv[3:] if len(sys.argv) > 3 else [])
            fitted_on = f"{len(rows)} rows ({per_cell}/side-label cell max, seed {seed}) of " + ", ".join(
                p.name for p in data
            )
            calibration = Calibration(slope, intercept, fitted_on, command)
            typer.echo(f"{name}: slope a = {slope:.6f}, intercept b = {intercept:.6f} on {fitted_on}")
            before = binary_metrics(labels, scores, threshold)
            after = binary_metrics(labels, [calibration.apply(s) for s in scores], threshold)
            typer.echo(_line("fit rows", before, after, threshold))
            for path in check or []:
                held = sample_rows(read_rows(path), check_sample, seed)
                raw = [s for s, _ in score_fn(held, ())]
                y = [int(r.unsafe) for r in held]
                b, a = (
                    binary_metrics(y, raw, threshold),
                    binary_metrics(y, [calibration.apply(s) for s in raw], threshold),
                )
                typer.echo(_line(path.name, b, a, threshold))
            if write is not None:
                write_marker(write, calibration)
                typer.echo(f"wrote calibration to {write}")
            del engine


def _line(label: str, before: Any, after: Any, threshold: float) -> str:
    return (
        f"{label} ({before.rows} rows, {before.positives} unsafe): "
        f"AUPRC {before.auprc:.3f} -> {after.auprc:.3f}; "
        f"at {threshold}: P {before.precision:.3f} R {before.recall:.3f} -> P {after.precision:.3f} "
        f"R {after.recall:.3f}"
    )


def _engine(
    model: Path | None,
    adapter: Path | None,
    prompt_format: str | None,
    taxonomy: Taxonomy,
    batch_size: int,
    threads: int | None,
) -> tuple[str, Any, Any]:
    """The eval scoring path (``LocalEngine`` + ``engine_scorer``) with the model's calibration turned off."""
    import torch

    from pipelines.evaluate.cli import engine_scorer
    from workers.serving.local_engine import LocalEngine
    from workers.settings import ModelSpec, get_settings

    if threads is not None:
        torch.set_num_threads(threads)
    spec = ModelSpec(
        path=model, adapter=adapter, prompt_format=Generation(prompt_format) if prompt_format else None
    )
    engine = LocalEngine(spec, get_settings())
    engine.scorer.guard = dataclasses.replace(engine.scorer.guard, calibration=IDENTITY)
    return engine.model_name, engine, engine_scorer(engine, taxonomy, batch_size)
