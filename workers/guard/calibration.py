"""Platt scaling of a guard's score: ``p' = sigmoid(slope * logit(p) + intercept)``.

Why: the shipped default (bare SmolLM2-135M-Instruct) ranks harm usefully but never puts 0.5 on
`` unsafe``, so every tenant threshold calls everything safe. A logistic map of the score's log-odds is
strictly increasing for ``slope > 0``, so every ranking (and every AUPRC) is unchanged while a threshold of
0.5 comes to mean "more likely unsafe than not" on the data it was fitted on.

Why ``logit(P(unsafe))`` and not ``log P(unsafe) - log P(safe)``: the scorer's score is the full-vocabulary
softmax read at `` unsafe``; a map of its own logit is monotone in that score, so the calibrated score ranks
rows exactly as the uncalibrated one. The unsafe-vs-safe margin would also ignore the mass on other tokens
and could reorder rows, which is a different scorer, not a calibration.

The values are data of a checkpoint (a ``calibration`` block in its ``guardstream.json`` marker, written by
``guardstream eval calibrate``), never code constants; a checkpoint without one gets ``IDENTITY``, which
returns the score untouched (a real Llama Guard needs no calibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EPS = 1e-12
"""Scores are clamped to [EPS, 1 - EPS] before the logit, so 0 and 1 stay finite."""


@dataclass(frozen=True)
class Calibration:
    """A fitted ``slope``/``intercept`` on ``logit(P(unsafe))``; the rest says where they came from."""

    slope: float = 1.0
    intercept: float = 0.0
    fitted_on: str = ""
    command: str = ""

    @property
    def is_identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    def apply(self, score: float) -> float:
        """The calibrated score; exactly ``score`` under identity (uncalibrated models stay bit-identical)."""
        if self.is_identity:
            return score
        p = min(max(score, EPS), 1.0 - EPS)
        z = self.slope * (math.log(p) - math.log1p(-p)) + self.intercept
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def to_json(self) -> dict[str, Any]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "fitted_on": self.fitted_on,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, data: object) -> Calibration:
        """Parse a marker's ``calibration`` block; a missing block is identity, a broken one an error."""
        if data is None:
            return IDENTITY
        if not isinstance(data, dict):
            raise ValueError(f"calibration must be an object, got {data!r}")
        slope, intercept = float(data["slope"]), float(data["intercept"])
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope <= 0:
            raise ValueError(f"calibration slope must be finite and > 0 (ranking kept), got {slope}")
        return cls(slope, intercept, str(data.get("fitted_on", "")), str(data.get("command", "")))


IDENTITY = Calibration()
