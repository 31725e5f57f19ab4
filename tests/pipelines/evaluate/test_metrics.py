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


def test_delta_interval_brackets_a_real_gap_and_collapses_on_equal_scorers() -> None:
    import random

    from pipelines.evaluate.metrics import delta_interval

    rng = random.Random(0)
    labels = [i % 2 for i in range(200)]
    informed = [y + rng.gauss(0, 0.5) for y in labels]  # separates the classes well
    noise = [rng.gauss(0, 1) for _ in labels]
    low, high = delta_interval(labels, informed, noise, rounds=200)  # type: ignore[misc]
    gap = binary_metrics(labels, informed, 0.5).auprc - binary_metrics(labels, noise, 0.5).auprc  # type: ignore[operator]
    assert 0 < low < gap < high  # the point estimate sits inside, and the gap is told apart from 0
    assert delta_interval(labels, informed, informed, rounds=50) == (0.0, 0.0)
    assert delta_interval(labels, informed, noise, rounds=200) == (low, high)  # seeded
    # two scorers equally uninformed: the interval spans 0, so the sample can't tell them apart
    other = [rng.gauss(0, 1) for _ in labels]
    low, high = delta_interval(labels, noise, other, rounds=200)  # type: ignore[misc]
    assert low < 0 < high


def test_delta_interval_is_undefined_without_both_classes() -> None:
    from pipelines.evaluate.metrics import delta_interval

    assert delta_interval([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]) is None
    with pytest.raises(ValueError, match="differ in length"):
        delta_interval([1, 0], [0.1], [0.2, 0.3])
