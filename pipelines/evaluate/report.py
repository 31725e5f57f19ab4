"""What ``guardstream eval`` shows and writes: the terminal table, the JSON report, the PR-curve PNGs.

The JSON keeps the overall figures at the top level (``auprc``, ``precision``, ``rows``…) and the rest under
``per_category``, so a script can read ``report["auprc"]`` without knowing the layout of categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from pipelines.evaluate.metrics import BinaryMetrics, PRCurve


class ScorerReport(BinaryMetrics):
    """Every figure for one scorer (a guard model or a baseline) on one dataset: overall ones inherited."""

    name: str
    per_category: dict[str, BinaryMetrics] = Field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def build(
        cls, name: str, overall: BinaryMetrics, per_category: dict[str, BinaryMetrics], seconds: float
    ) -> ScorerReport:
        return cls(name=name, per_category=per_category, seconds=round(seconds, 1), **overall.model_dump())


class EvalReport(ScorerReport):
    """The model's report plus what it was run on and any baseline beside it."""

    data: str
    side: str
    taxonomy: dict[str, object]
    category_map: str
    baselines: list[ScorerReport] = Field(default_factory=list)


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def table(reports: Sequence[ScorerReport]) -> str:
    """A plain-text table: one row per scorer overall, then per category (AUPRC only)."""
    lines = [f"{'scorer':<44} {'AUPRC':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'rows':>6} {'pos%':>6}"]
    for r in reports:
        lines.append(
            f"{r.name[:44]:<44} {_fmt(r.auprc)} {_fmt(r.precision)} {_fmt(r.recall)} {_fmt(r.f1)} "
            f"{r.rows:>6} {100 * r.positive_rate:>5.1f}%"
        )
    codes = list(dict.fromkeys(code for r in reports for code in r.per_category))
    if codes:
        lines.append("")
        lines.append(f"{'per-category AUPRC (1-vs-all)':<30} " + " ".join(f"{c:>6}" for c in codes))
        lines.append(
            f"{'positives':<30} "
            + " ".join(
                f"{next(r.per_category[c].positives for r in reports if c in r.per_category):>6}"
                for c in codes
            )
        )
        for r in reports:
            cells = " ".join(_fmt(r.per_category[c].auprc if c in r.per_category else None) for c in codes)
            lines.append(f"{r.name[:30]:<30} {cells}")
    return "\n".join(lines)


def write_plots(directory: Path, title: str, curves: dict[str, dict[str, PRCurve | None]]) -> list[Path]:
    """One PNG per figure: ``overall.png`` and ``<code>.png``, each with a curve per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for figure, by_scorer in curves.items():
        fig, ax = plt.subplots(figsize=(5, 4))
        for scorer, curve in by_scorer.items():
            if curve is not None:
                ax.step(curve.recall, curve.precision, where="post", label=scorer[:40])
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{title}: {figure}")
        ax.legend(loc="lower left", fontsize=7)
        path = directory / f"{figure}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
