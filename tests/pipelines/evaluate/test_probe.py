"""``eval probe`` tells a set whose labels the verdict position holds from one whose labels it does not."""

from pathlib import Path

import numpy as np
import torch


def test_probe_reads_a_linearly_held_label_and_not_a_shuffled_one() -> None:
    from pipelines.evaluate.probe import format_probe, probe_table

    rng = np.random.default_rng(0)
    labels = [int(i % 2) for i in range(120)]
    hidden = rng.normal(size=(240, 16))
    hidden[:120, 3] += 2.0 * np.array(labels)  # file "held": one direction carries the label
    files = ["held.jsonl"] * 120 + ["noise.jsonl"] * 120
    table = probe_table(hidden, files, labels * 2, base=[0.5] * 240, words=[0.0] * 240)
    held, noise = table
    assert held.best > 0.9
    assert noise.best < 0.75  # chance is 0.5; the best of four strengths is flattered by a little
    assert held.base == noise.base == 0.5  # a constant scorer sits at chance
    text = format_probe(table)
    assert "held.jsonl" in text and "C=0.01" in text and "never choose a recipe" in text


def test_a_set_too_small_to_cross_validate_is_left_out() -> None:
    from pipelines.evaluate.probe import probe_auprc, probe_table

    assert probe_auprc(np.zeros((6, 2)), [1, 1, 0, 0, 0, 0], 1.0) is None
    assert probe_table(np.zeros((6, 2)), ["a"] * 6, [1, 1, 0, 0, 0, 0], [0.0] * 6, [0.0] * 6) == []


def test_probe_command_runs_on_a_capture_of_the_tiny_guard(tiny_guard_path: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.evaluate.replay import ReplayFeatures, capture_rows
    from pipelines.evaluate.rows import EvalRow
    from schemas.taxonomy import Generation
    from workers.guard.formats import get_format
    from workers.guard.tokens import resolve_tokens

    rows = [EvalRow(text=f"question {i} about {'bombs' if i % 2 else 'cakes'}", side="prompt", unsafe=i % 2)
            for i in range(20)]  # fmt: skip
    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), get_format(Generation.LG3))
    model = AutoModelForCausalLM.from_pretrained(tiny_guard_path, dtype=torch.float32).eval()
    residual, attention = capture_rows(model, tokens, rows)
    feats = ReplayFeatures(residual, attention, [r.unsafe for r in rows], ["q.jsonl"] * 20,
                           ["prompt"] * 20, [0.0] * 20, tiny_guard_path.name)  # fmt: skip
    torch.save(feats.__dict__, tmp_path / "f.pt")
    args = ["eval", "probe", "--features", str(tmp_path / "f.pt"), "--model", str(tiny_guard_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("q.jsonl"))
    assert float(line.split()[2]) == 0.5  # chance, then base, words, probe and each strength's AUPRC
    assert all(0.0 <= float(v) <= 1.0 for v in line.split()[3:])
