"""What the default guard trains on: held-out requests removed, duplicates merged, classes weighted per side.

The adapter shipped until 2026-12 ranked harm below chance (EVALUATION.md, "What was wrong"). Its data,
measured under the one configuration the scorer reads (default taxonomy, prompt side), was 77 % ``unsafe``,
and 272 of its 351 ``safe`` examples carried a harmful request (refusal rewrites, drop-violated copies):
harmful wording was labelled ``safe`` more often than ``unsafe``. The mix here keeps each label honest:

- ``exclude``: every request of a held-out file is dropped from training, whatever set it came from (a
  BeaverTails prompt that also sits in Aegis), so nothing evaluated is trained on;
- duplicates (same side, same conversation) are merged, first label wins;
- per side, each class gets the same total weight, so neither verdict is the cheap answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
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


def class_weights(examples: Sequence[TrainingExample]) -> list[float]:
    """Per example ``n_side / (2 * n_side_label)``: each (side, label) carries half its side's weight."""
    counts = Counter((ex.side, ex.unsafe) for ex in examples)
    per_side = Counter(ex.side for ex in examples)
    weights = []
    for ex in examples:
        classes = sum(1 for (side, _), n in counts.items() if side == ex.side and n)
        weights.append(per_side[ex.side] / (classes * counts[(ex.side, ex.unsafe)]))
    return weights


def describe(examples: Sequence[TrainingExample]) -> dict[str, int]:
    """Counts by side and label, for the marker file and the log."""
    return {f"{side}/{'unsafe' if unsafe else 'safe'}": n for (side, unsafe), n in
            sorted(Counter((ex.side, ex.unsafe) for ex in examples).items())}  # fmt: skip
