"""``guardstream moderate`` as a user runs it, on the tiny guard: verdict lines, a table, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipelines.moderate import register
from schemas.verdicts import Verdict

SAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "samples"
EVENTS = SAMPLES / "conversations.jsonl"


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def _run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), ["moderate", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def few_events() -> str:
    return "\n".join(EVENTS.read_text().splitlines()[:3]) + "\n"


def test_prints_one_verdict_per_event_from_stdin(tiny_guard_path: Path, few_events: str) -> None:
    code, out, _ = _run(["--model", str(tiny_guard_path), "--threshold", "0.2"], few_events)
    assert code == 0
    verdicts = [Verdict.model_validate_json(line) for line in out.splitlines()]
    assert [v.event_id for v in verdicts] == ["sample-001", "sample-002", "sample-003"]
    assert all(v.threshold == 0.2 and v.model.startswith("llama-guard-3 @ ") for v in verdicts)
    assert all(v.unsafe == (v.score is not None and v.score >= 0.2) for v in verdicts)


def test_policies_by_tenant_and_table(tiny_guard_path: Path) -> None:
    args = ["--model", str(tiny_guard_path), "--file", str(EVENTS), "--table"]
    args += ["--policy", str(SAMPLES / "policy-acme.json"), "--policy", str(SAMPLES / "policy-kidsplay.json")]
    code, out, _ = _run(args)
    assert code == 0
    assert "sample-001" in out and "kidsplay" in out and "score" in out


def test_custom_taxonomy_and_single_json_event(tiny_guard_path: Path, tmp_path: Path) -> None:
    taxonomy = tmp_path / "tax.json"
    taxonomy.write_text(json.dumps({"categories": [{"code": "C1", "name": "Spoilers"}]}))
    event = EVENTS.read_text().splitlines()[0]
    code, out, _ = _run(
        ["--model", str(tiny_guard_path), "--taxonomy", str(taxonomy), "--threshold", "0"], event
    )
    assert code == 0
    (verdict,) = [Verdict.model_validate_json(line) for line in out.splitlines()]
    assert verdict.unsafe and all(c.code == "C1" for c in verdict.categories)


@pytest.mark.parametrize(
    ("stdin", "extra", "message"),
    [
        ('{"event_id": "x"', [], "invalid JSON"),
        ('{"event_id": "e", "tenant_id": "t", "conversation_id": "c", "messages": []}', [], "messages"),
        ("", [], "no events"),
        (None, ["--file", "/nonexistent/events.jsonl"], "No such file"),
        ('{"event_id": "e"}', ["--prompt-format", "llama-guard-9"], "unknown --prompt-format"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tiny_guard_path: Path, stdin: str | None, extra: list[str], message: str
) -> None:
    code, out, err = _run(["--model", str(tiny_guard_path), *extra], stdin)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_model_without_known_format_is_a_user_error(tmp_path: Path, few_events: str) -> None:
    (tmp_path / "config.json").write_text("{}")
    code, _, err = _run(["--model", str(tmp_path)], few_events)
    assert code == 2 and "prompt_format" in err


def _unscorable_policies(tmp_path: Path, on_error: str) -> Path:
    """Tenant ``big``'s taxonomy cannot fit ``max_prompt_tokens``, so its events can never be scored."""
    huge = [{"code": f"C{i}", "name": f"Rule {i}", "description": "word " * 1900} for i in range(1, 4)]
    policies = [
        {"tenant_id": "big", "taxonomy": {"categories": huge}, "on_error": on_error},
        {"tenant_id": "small", "threshold": 0.0},
    ]
    path = tmp_path / "policies.json"
    path.write_text(json.dumps({"policies": policies}))
    return path


def _events(*tenants: str) -> str:
    lines = []
    for i, tenant in enumerate(tenants):
        body = {
            "event_id": f"e{i}",
            "tenant_id": tenant,
            "conversation_id": "c",
            "messages": [{"role": "user", "content": "hi"}],
        }
        lines.append(json.dumps(body))
    return "\n".join(lines) + "\n"


def test_dead_letter_outcome_is_an_error_line_and_exit_1_never_a_safe_verdict(
    tiny_guard_path: Path, tmp_path: Path
) -> None:
    policies = _unscorable_policies(tmp_path, "dead-letter")
    code, out, err = _run(
        ["--model", str(tiny_guard_path), "--policy", str(policies)], _events("small", "big")
    )
    assert code == 1
    (verdict,) = [Verdict.model_validate_json(line) for line in out.splitlines()]
    assert verdict.event_id == "e0" and verdict.unsafe and verdict.error is None
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: event e1 (big): scoring_failed: scoring failed on model pool 'default'")


def test_fail_closed_scoring_error_is_an_unsafe_verdict_with_the_error(
    tiny_guard_path: Path, tmp_path: Path
) -> None:
    policies = _unscorable_policies(tmp_path, "fail-closed")
    code, out, _ = _run(["--model", str(tiny_guard_path), "--policy", str(policies)], _events("big"))
    assert code == 0
    (verdict,) = [Verdict.model_validate_json(line) for line in out.splitlines()]
    assert verdict.unsafe and verdict.score is None and verdict.error
    assert verdict.model.startswith("llama-guard-3 @ ")
