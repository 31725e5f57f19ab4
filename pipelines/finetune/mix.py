"""What the default guard trains on: held-out requests removed, duplicates merged, classes weighted per side.

The adapter shipped until 2026-12 ranked harm below chance (EVALUATION.md, "What was wrong"). Its data,
measured under the one configuration the scorer reads (default taxonomy, prompt side), was 77 % ``unsafe``,
and 272 of its 351 ``safe`` examples carried a harmful request (refusal rewrites, drop-violated copies):
harmful wording was labelled ``safe`` more often than ``unsafe``. The mix here keeps each label honest:

- ``exclude``: every request of a held-out file is dropped from training, whatever set it came from (a
  BeaverTails prompt that also sits in Aegis), so nothing evaluated is trained on;
- duplicates (same side, same conversation) are merged, first label wins;
- per side, each class gets the same total weight, so neither verdict is the cheap answer;
- optionally (``source_weights``), per source: each dataset's share of its side is its size times its
  multiplier, classes are balanced *within* each dataset, then each side is rebalanced to 50/50. With the
  plain per-side balance, 740 all-unsafe red-teaming requests in one imperative style (HarmBench,
  SimpleSafetyTests) make up 45 % of the prompt-side positives, while Aegis' conversational turns are
  short of weight; that is where the plain recipe lost to the bare base (EVALUATION.md, "Source weights").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipelines.evaluate.rows import EvalRow, read_rows
from pipelines.evaluate.split import request_key
from pipelines.finetune.data import TrainingExample


def heldout_keys(files: Iterable[Path]) -> set[str]:
    """The request keys of every row in ``files``."""
    return {request_key(row) for path in files for row in read_rows(path)}


def without_heldout(rows: Sequence[EvalRow], keys: set[str]) -> list[EvalRow]:
    """``rows`` minus any whose request is held out."""
    return [row for row in rows if request_key(row) not in keys]


def dedupe(examples: Sequence[TrainingExample]) -> list[TrainingExample]:
    """One example per (side, conversation text, taxonomy); the first one seen is kept."""
    seen: set[tuple[str, tuple[str, ...], str]] = set()
    out: list[TrainingExample] = []
    for ex in examples:
        key = (ex.side, tuple(m.content for m in ex.messages), ex.taxonomy.model_dump_json())
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def class_weights(
    examples: Sequence[TrainingExample], source_weights: Mapping[str, float] | None = None
) -> list[float]:
    """Per example weights that sum to the example count on each side, half per label.

    Without ``source_weights``: ``n_side / (2 * n_side_label)``. With them (missing sources count 1.0):
    dataset ``d`` on side ``s`` gets ``n_s * m_d * n_sd / sum_e(m_e * n_se)``, split evenly over the labels
    it has, and each side's labels are then scaled back to half the side each.
    """
    keys = [(ex.side, ex.unsafe) for ex in examples]
    if source_weights is None:
        return balance_labels([1.0] * len(examples), keys)
    cell = Counter((ex.side, ex.source, ex.unsafe) for ex in examples)
    per_source = Counter((ex.side, ex.source) for ex in examples)
    mass: defaultdict[str, float] = defaultdict(float)
    for (side, source), n in per_source.items():
        mass[side] += source_weights.get(source, 1.0) * n
    labels_of = Counter((side, source) for side, source, _ in cell)
    raw = [
        source_weights.get(ex.source, 1.0) * per_source[(ex.side, ex.source)]
        / (mass[ex.side] * labels_of[(ex.side, ex.source)] * cell[(ex.side, ex.source, ex.unsafe)])
        for ex in examples
    ]  # fmt: skip
    return balance_labels(raw, keys)


def balance_labels(weights: Sequence[float], keys: Sequence[tuple[str, bool]]) -> list[float]:
    """``weights`` rescaled per (side, label) so that each label present on a side carries half of that
    side's example count; relative weights within a (side, label) are kept. Also used by the head
    trainer to re-balance a capture stopped early by its budget."""
    label_mass: defaultdict[tuple[str, bool], float] = defaultdict(float)
    for key, w in zip(keys, weights, strict=True):
        label_mass[key] += w
    per_side = Counter(side for side, _ in keys)
    present = Counter(side for side, _ in label_mass)
    return [
        w * per_side[key[0]] / (present[key[0]] * label_mass[key])
        for key, w in zip(keys, weights, strict=True)
    ]


def describe(examples: Sequence[TrainingExample]) -> dict[str, int]:
    """Counts by side and label, for the marker file and the log."""
    return {f"{side}/{'unsafe' if unsafe else 'safe'}": n for (side, unsafe), n in
            sorted(Counter((ex.side, ex.unsafe) for ex in examples).items())}  # fmt: skip
