"""``guardstream backfill`` as a user runs it: the README one-liner on the shipped sample archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipelines.backfill.cli import register

SAMPLES = Path(__file__).resolve().parents[3] / "pipelines" / "samples"
ARCHIVE = SAMPLES / "archive"
POLICIES = ["--policy", str(SAMPLES / "policy-acme.json"), "--policy", str(SAMPLES / "policy-kidsplay.json")]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


@pytest.mark.usefixtures("ray_local")
def test_sample_archive_one_liner_writes_verdicts_errors_and_report(
    tiny_guard_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "backfill"
    args = ["backfill", str(ARCHIVE), *POLICIES, "--out", str(out), "--model", str(tiny_guard_path)]
    result = CliRunner().invoke(_app(), [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "unsafe rate per tenant and category" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["verdicts"], summary["bad_rows"]) == (42, 4)
    assert (summary["rows"], summary["rows_this_run"]) == (46, 46)
    assert summary["rows_per_s"] > 0 and summary["unsafe"] <= summary["verdicts"]
    assert [t["tenant_id"] for t in summary["tenants"]] == ["acme", "kidsplay"]
    for name in ("report.md", "report.html", "score_histogram.png", "categories.png"):
        assert (out / name).stat().st_size > 0, name
    assert "![score histogram](score_histogram.png)" in (out / "report.md").read_text()

    again = CliRunner().invoke(_app(), [*args, "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "resumed: 3 of 3 shards were already done" in again.output
    resumed = json.loads((out / "summary.json").read_text())
    assert (resumed["verdicts"], resumed["rows"], resumed["rows_this_run"]) == (42, 46, 0)


def test_redis_source_and_policy_files_exclude_each_other(tmp_path: Path) -> None:
    args = ["backfill", str(ARCHIVE), *POLICIES, "--policy-source", "redis", "--out", str(tmp_path)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 2
    assert "exclude each other" in result.output


def test_a_missing_input_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["backfill", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no such file or folder" in result.output
    assert "Traceback" not in result.output
