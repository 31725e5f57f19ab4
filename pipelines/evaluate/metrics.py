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
