"""Output parsing: every case in outputs.jsonl, plus the never-safe-by-default guarantees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.taxonomy import Generation, builtin_taxonomy
from workers.guard.formats import get_format
from workers.guard.parse import ParsedOutput, parse_output

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
CASES = [json.loads(line) for line in (DATA_DIR / "outputs.jsonl").read_text("utf-8").splitlines()]
VARIANTS = {"llama-guard-3-8b": Generation.LG3, "llama-guard-3-1b": Generation.LG3_1B}


def _codes(case: dict[str, Any]) -> list[str]:
    if case["taxonomy_codes"] != "default":
        return list(case["taxonomy_codes"])
    generation = VARIANTS.get(case["model_variant"]) or Generation(case["model_variant"])
    return [c.code for c in builtin_taxonomy(generation).categories]


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in CASES])
def test_reference_case(case: dict[str, Any]) -> None:
    parsed = parse_output(case["raw_output"], _codes(case))
    assert parsed == ParsedOutput.model_validate(case["expected"])


@pytest.mark.parametrize(
    "raw", ["", "unsure", "The content is safe.", "safe_", "**safe**", "<|eot_id|>safe", "verdict: safe"]
)
def test_malformed_output_is_invalid_never_safe(raw: str) -> None:
    parsed = parse_output(raw, ["S1"])
    assert parsed.verdict == "invalid"
    assert not parsed.strict


def test_unknown_codes_are_kept_beside_known_ones() -> None:
    parsed = parse_output("unsafe\nS1,S99,S2", ["S1", "S2"])
    assert parsed.categories == ("S1", "S2")
    assert parsed.unknown_codes == ("S99",)
    assert not parsed.strict


def test_format_stop_strings_cut_the_answer() -> None:
    fmt = get_format("llama-guard-4")
    parsed = parse_output(fmt.verdict_prefix + "unsafe\nS2<|eot|>\nS3", ["S2", "S3"], fmt.stop_strings)
    assert parsed.categories == ("S2",)
    assert parsed.strict


def test_several_issues_are_all_reported_once() -> None:
    parsed = parse_output("UNSAFE\ns1,,s1", ["S1"])
    assert parsed.issues == ("verdict_not_lowercase", "code_not_uppercase", "empty_code", "duplicate_code")
    assert parsed.categories == ("S1",)
