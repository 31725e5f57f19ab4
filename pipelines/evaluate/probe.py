"""``guardstream eval probe``: is what a set labels readable at the verdict position at all?

When every adapter fails one held-out set, the question is whether the recipe or the model falls short. This
command answers it for the position the scorer reads: for each file of a ``replay-capture``, a logistic
regression is trained *on that set's own labels* (stratified 5-fold cross-validation, standardised
features, a few regularisation strengths) on the base model's final hidden state at the verdict position,
the vector its LM head turns into ``P(unsafe)``. Its out-of-fold AUPRC sits beside the base's and the word
list's. A set where even this reader, taught on the very distribution it is scored on, stays near chance
is out of reach of a head adapter taught on other data; a set where it is high is a recipe problem.

A diagnostic, never a selection tool: it reads held-out labels, so nothing it prints may choose a recipe or
a checkpoint. Nor is it a bound: a head adapter's MLP is nonlinear, and deeper adapters read other layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from pipelines.errors import user_errors

STRENGTHS = (0.001, 0.01, 0.1, 1.0)
"""Inverse L2 strengths tried (scikit-learn's ``C``); the best is reported, which flatters the reader."""


class ProbeRow(BaseModel):
    """One file: chance, the base model's and the word list's AUPRC, and the probe's per strength."""

    data: str
    rows: int
    positive_rate: float
    base: float
    words: float
    probe: dict[float, float]
    """``C`` -> out-of-fold AUPRC."""

    @property
    def best(self) -> float:
        return max(self.probe.values())


def probe_auprc(features: Any, labels: Sequence[int], strength: float, folds: int = 5) -> float | None:
    """Out-of-fold AUPRC of a standardised logistic regression; None when a class has under ``folds`` rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    if min(int(y.sum()), int(len(y) - y.sum())) < folds:
        return None
    reader = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=5000))
    split = StratifiedKFold(folds, shuffle=True, random_state=0)
    predicted = cross_val_predict(reader, np.asarray(features), y, cv=split, method="predict_proba")
    return float(average_precision_score(y, predicted[:, 1]))


def probe_table(
    hidden: Any, files: Sequence[str], labels: Sequence[int], base: Sequence[float], words: Sequence[float],
    strengths: Sequence[float] = STRENGTHS,
) -> list[ProbeRow]:  # fmt: skip
    """One ``ProbeRow`` per file that has enough of both classes to cross-validate."""
    from sklearn.metrics import average_precision_score

    table = []
    for name in dict.fromkeys(files):
        idx = [i for i, f in enumerate(files) if f == name]
        y = [labels[i] for i in idx]
        probe = {c: probe_auprc(hidden[idx], y, c) for c in strengths}
        if any(v is None for v in probe.values()):
            continue
        table.append(ProbeRow(
            data=name, rows=len(idx), positive_rate=sum(y) / len(y),
            base=float(average_precision_score(y, [base[i] for i in idx])),
            words=float(average_precision_score(y, [words[i] for i in idx])),
            probe={c: v for c, v in probe.items() if v is not None},
        ))  # fmt: skip
    return table


def format_probe(table: Sequence[ProbeRow]) -> str:
    """One line per file: chance, base, words, the best probe, then each strength's."""
    strengths = list(table[0].probe) if table else []
    head = " ".join(f"{'C=' + format(c, 'g'):>7}" for c in strengths)
    lines = [f"{'data':<34} {'rows':>5} {'chance':>6} {'base':>6} {'words':>6} {'probe':>6}  {head}"]
    for row in table:
        each = " ".join(f"{row.probe[c]:7.3f}" for c in strengths)
        lines.append(
            f"{row.data[:34]:<34} {row.rows:>5} {row.positive_rate:6.3f} {row.base:6.3f} {row.words:6.3f} "
            f"{row.best:6.3f}  {each}"
        )
    lines.append("AUPRC; probe = best out-of-fold AUPRC of a linear reader trained on the set's own labels")
    lines.append("(a diagnostic: it reads held-out labels, so it must never choose a recipe).")
    return "\n".join(lines)


def register_probe(group: typer.Typer) -> None:
    """``guardstream eval probe --features FEATS.pt``."""

    @group.command("probe")
    def probe_command(
        features: Annotated[Path, typer.Option(help="A `replay-capture` file.")],
        model: Annotated[Path | None, typer.Option(help="Base checkpoint (default: shipped).")] = None,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    ) -> None:
        """Per file: can a linear reader of the verdict position, taught on the set itself, tell it apart?"""
        import torch

        from pipelines.evaluate.replay import load_features, load_replay_base, replay_scores
        from pipelines.finetune.head import final_hidden

        with user_errors():
            feats = load_features(features)
            bare, tokens = load_replay_base(model, threads, feats)
            with torch.no_grad():
                hidden = final_hidden(bare, feats.residual, feats.attention).float().numpy()
            base = replay_scores(bare, feats, tokens.unsafe_id)
            typer.echo(format_probe(probe_table(hidden, feats.files, feats.unsafe, base, feats.words)))
