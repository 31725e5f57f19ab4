"""The committed JSON Schema files match the pydantic models and accept what the models accept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from schemas.export import EXPORTED, render_all

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


@pytest.mark.parametrize("name", sorted(render_all()))
def test_committed_schema_is_up_to_date(name: str) -> None:
    committed = COMMITTED / name
    assert committed.exists(), f"run: python -m schemas.export {COMMITTED}"
    assert committed.read_text("utf-8") == render_all()[name], (
        f"stale; run: python -m schemas.export {COMMITTED}"
    )


def test_every_contract_model_is_exported() -> None:
    assert set(EXPORTED) == {"conversation-event", "verdict", "dead-letter", "tenant-policy", "taxonomy"}
    assert {p.name for p in COMMITTED.glob("*.json")} == set(render_all())


def test_cli_writes_the_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemas.export", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(render_all())


def test_event_schema_accepts_extra_fields_and_rejects_bad_roles() -> None:
    schema = json.loads(render_all()["conversation-event.json"])
    event = {
        "event_id": "e-1",
        "tenant_id": "acme",
        "conversation_id": "c-1",
        "messages": [{"role": "user", "content": "hi"}],
        "trace_id": "kept-in-metadata",
    }
    jsonschema.validate(event, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**event, "messages": [{"role": "system", "content": "hi"}]}, schema)


def test_policy_schema_bounds_thresholds() -> None:
    schema = json.loads(render_all()["tenant-policy.json"])
    jsonschema.validate({"tenant_id": "acme", "threshold": 0.3}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tenant_id": "acme", "threshold": 1.3}, schema)
