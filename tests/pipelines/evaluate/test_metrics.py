"""The paper's figures against cases worked out by hand."""

import pytest

from pipelines.evaluate.metrics import binary_metrics, pr_curve

# Ranked by score: + - + + - -. Average precision = (1/1 + 2/3 + 3/4) / 3 = 29/36.
LABELS = [1, 0, 1, 1, 0, 0]
SCORES = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]


def test_six_row_example_matches_hand_computation() -> None:
    m = binary_metrics(LABELS, SCORES, threshold=0.5)
    assert m.auprc == pytest.approx(29 / 36)
    # score >= 0.5 flags the top three rows: 2 true positives, 1 false positive, 1 missed positive.
    assert (m.precision, m.recall, m.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (m.rows, m.positives, m.positive_rate) == (6, 3, 0.5)


def test_perfect_ranking_has_auprc_one_whatever_the_threshold() -> None:
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    assert m.auprc == pytest.approx(1.0)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)


def test_threshold_is_inclusive() -> None:
    m = binary_metrics([1, 0], [0.5, 0.2], threshold=0.5)
    assert (m.precision, m.recall) == (1.0, 1.0)


def test_no_positives_has_no_auprc_and_no_curve() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.5, 0.9], threshold=0.5)
    assert m.auprc is None
    assert m.precision == 0.0
    assert pr_curve([0, 0, 0], [0.1, 0.5, 0.9]) is None


def test_pr_curve_ends_at_full_precision_zero_recall() -> None:
    curve = pr_curve(LABELS, SCORES)
    assert curve is not None
    assert curve.recall[0] == 1.0
    assert (curve.precision[-1], curve.recall[-1]) == (1.0, 0.0)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        binary_metrics([1, 0], [0.5], threshold=0.5)
