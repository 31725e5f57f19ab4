"""``guardstream eval`` end to end with a stand-in engine whose scores are known, plus the baseline."""

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipelines.evaluate import cli as evaluate
from pipelines.evaluate.rows import EvalRow, write_rows
from workers.engine import ScoreRequest, ScoreResult

# Overall scores rank + - + + - - (AUPRC 29/36); S1 scores rank its two positives first (AUPRC 1).
ROWS = [
    (EvalRow(text="a", side="prompt", unsafe=1, categories=("S1",)), 0.9, 0.8),
    (EvalRow(text="b", side="prompt", unsafe=0), 0.8, 0.1),
    (EvalRow(text="c", side="prompt", unsafe=1, categories=("S10",)), 0.7, 0.2),
    (EvalRow(text="d", side="prompt", unsafe=1, categories=("S1",)), 0.4, 0.7),
    (EvalRow(text="e", side="prompt", unsafe=0), 0.3, 0.3),
    (EvalRow(text="f", side="prompt", unsafe=0), 0.1, 0.05),
]


class FakeEngine:
    """Scores by message text; records the requests so the protocol can be checked."""

    model_name = "fake"

    def __init__(self) -> None:
        self.requests: list[ScoreRequest] = []
        self.by_text = {row.text: (overall, s1) for row, overall, s1 in ROWS}

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            overall, s1 = self.by_text[r.messages[-1].content]
            per = {code: (s1 if code == "S1" else 0.5) for code in r.category_codes}
            out.append(ScoreResult(request_id=r.request_id, score=overall, category_scores=per))
        return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    write_rows([row for row, _, _ in ROWS], path)
    return path


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine()
    monkeypatch.setattr(evaluate, "_model_scorer", lambda *a: ("fake", evaluate.engine_scorer(fake, a[3], 4)))
    return fake


def _app() -> typer.Typer:
    app = typer.Typer()
    evaluate.register(app)
    return app


def test_eval_reports_paper_metrics_and_one_vs_all(data: Path, engine: FakeEngine, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = [
        "eval",
        "--data",
        str(data),
        "--category-map",
        "none",
        "--json",
        str(out),
        "--plots",
        str(tmp_path / "p"),
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["auprc"] == pytest.approx(29 / 36)
    assert (report["rows"], report["positive_rate"], report["precision"]) == (6, 0.5, pytest.approx(2 / 3))
    assert report["per_category"]["S1"]["auprc"] == pytest.approx(1.0)
    assert report["per_category"]["S1"]["positives"] == 2
    assert set(report["per_category"]) == {"S1", "S10"}
    assert all(r.category_codes == ("S1", "S10") and r.decode_categories_at is None for r in engine.requests)
    assert (tmp_path / "p" / "overall.png").is_file() and (tmp_path / "p" / "S1.png").is_file()
    assert "AUPRC" in result.output


def test_profanity_baseline_row(data: Path, engine: FakeEngine, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["eval", "--data", str(data), "--baseline", "profanity", "--no-per-category", "--json", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["per_category"] == {}
    [base] = report["baselines"]
    assert base["name"].startswith("profanity") and base["rows"] == 6


def test_convert_then_bad_input_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "side": "sideways", "unsafe": 1}\n')
    result = CliRunner().invoke(
        _app(), ["eval", "--data", str(bad), "--skip-model", "--baseline", "profanity"]
    )
    assert result.exit_code == 2
    assert "bad.jsonl:1" in result.output
