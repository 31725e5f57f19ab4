"""The paper's figures from labels and scores, computed by scikit-learn (never by hand).

AUPRC is scikit-learn's ``average_precision_score`` (step-wise area, no interpolation), as the Llama Guard
paper and the cookbook's evaluation use. A set with no positives has no defined AUPRC: it is reported as
``None`` rather than 0, so a missing category is never mistaken for a failing one.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field


class BinaryMetrics(BaseModel):
    """Every figure for one score column against one label column."""

    model_config = ConfigDict(frozen=True)

    auprc: float | None = Field(description="Average precision; None when there are no positives.")
    precision: float = Field(description="At the threshold (score >= threshold is unsafe).")
    recall: float
    f1: float
    threshold: float
    rows: int
    positives: int
    positive_rate: float


class PRCurve(BaseModel):
    """Points of the precision/recall curve, for plots."""

    model_config = ConfigDict(frozen=True)

    precision: tuple[float, ...]
    recall: tuple[float, ...]


def binary_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float) -> BinaryMetrics:
    """AUPRC plus precision/recall/F1 at ``threshold`` for the positive (unsafe) class."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    if len(labels) != len(scores):
        raise ValueError("labels and scores differ in length")
    if not labels:
        raise ValueError("no rows to evaluate")
    positives = int(sum(labels))
    auprc = float(average_precision_score(labels, scores)) if positives else None
    predicted = [int(s >= threshold) for s in scores]
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", pos_label=1, zero_division=0
    )
    return BinaryMetrics(
        auprc=auprc,
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        threshold=threshold,
        rows=len(labels),
        positives=positives,
        positive_rate=positives / len(labels),
    )


def pr_curve(labels: Sequence[int], scores: Sequence[float]) -> PRCurve | None:
    """scikit-learn's precision/recall curve; None when there are no positives to recall."""
    from sklearn.metrics import precision_recall_curve

    if not any(labels):
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    return PRCurve(precision=tuple(float(p) for p in precision), recall=tuple(float(r) for r in recall))


def delta_interval(
    labels: Sequence[int], a: Sequence[float], b: Sequence[float], *, rounds: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """95 % paired-bootstrap interval of ``AUPRC(a) - AUPRC(b)`` on the same rows; None if undefined.

    Why: on a few hundred rows one set's AUPRC moves by several hundredths from one seeded sample to the
    next (PKU-SafeRLHF's word list: 0.679 on one 150-row sample, 0.548 on all 2,000 rows), so a verdict
    decided by a delta inside its interval is a coin, not a measurement. Rows are resampled with
    replacement, the same rows for both scorers (paired); a resample holding one class only is skipped.
    """
    import numpy as np
    from sklearn.metrics import average_precision_score

    y, sa, sb = np.asarray(labels), np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(y) == len(sa) == len(sb):
        raise ValueError("labels and scores differ in length")
    if rounds < 1 or y.min(initial=1) == y.max(initial=0):
        return None
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        if y[pick].min() == y[pick].max():
            continue
        deltas.append(average_precision_score(y[pick], sa[pick]) - average_precision_score(y[pick], sb[pick]))
    if not deltas:
        return None
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)
