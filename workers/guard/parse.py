"""Parsing a guard's generated answer into a verdict and violated codes.

The trained grammar is ``safe`` | ``unsafe\\n`` CODE (``,`` CODE)* (FORMATS.md §7). Parsing is lenient where a
deviation is harmless (whitespace, case, CRLF) and records every deviation in ``issues``. It is never lenient
towards ``safe``: anything that does not start with the word ``safe`` or ``unsafe`` is ``invalid``, and codes
the taxonomy lacks are reported in ``unknown_codes`` instead of being dropped, so a confused model can't
silently narrow a tenant's policy.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

DEFAULT_STOPS: tuple[str, ...] = ("</s>", "<|eot_id|>", "<|end_of_text|>", "<|eot|>", "<|eom_id|>", "<|eom|>")
"""End-of-answer tokens of every Llama Guard tokenizer, as they appear when decoded with special tokens."""

_VERDICT = re.compile(r"^(safe|unsafe)\b", re.IGNORECASE)


class ParseIssue(StrEnum):
    """Ways an answer deviates from the trained grammar. Any issue makes a parse non-strict."""

    EMPTY_OUTPUT = "empty_output"
    FIRST_LINE_NOT_VERDICT = "first_line_not_safe_or_unsafe"
    VERDICT_NOT_LOWERCASE = "verdict_not_lowercase"
    CARRIAGE_RETURN = "carriage_return"
    TRAILING_TEXT_AFTER_SAFE = "trailing_text_after_safe_ignored"
    CODES_ON_FIRST_LINE = "codes_on_first_line"
    MISSING_CATEGORIES = "missing_categories"
    EXTRA_LINES = "extra_lines_ignored"
    EMPTY_CODE = "empty_code"
    CODE_NOT_UPPERCASE = "code_not_uppercase"
    DUPLICATE_CODE = "duplicate_code"
    UNKNOWN_CODE = "unknown_code"


class ParsedOutput(BaseModel):
    """What the guard said: verdict, known violated codes (in the model's order) and what was odd."""

    model_config = ConfigDict(frozen=True)

    verdict: Literal["safe", "unsafe", "invalid"]
    categories: tuple[str, ...] = ()
    unknown_codes: tuple[str, ...] = ()
    strict: bool
    """True when the answer was exactly the trained grammar (after whitespace normalisation)."""
    issues: tuple[str, ...] = ()


class _Issues:
    """Ordered, de-duplicated issue collector."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, issue: ParseIssue) -> None:
        if issue.value not in self.items:
            self.items.append(issue.value)


def cut_at_stop(raw: str, stop_strings: Sequence[str]) -> str:
    """``raw`` up to the first end token: what follows it (e.g. a leaked chat template) is not the answer."""
    cut = len(raw)
    for stop in stop_strings:
        index = raw.find(stop)
        if stop and 0 <= index < cut:
            cut = index
    return raw[:cut]


def _split_codes(text: str, taxonomy_codes: Collection[str], issues: _Issues) -> tuple[list[str], list[str]]:
    known: list[str] = []
    unknown: list[str] = []
    for item in text.split(","):
        code = item.strip()
        if not code:
            issues.add(ParseIssue.EMPTY_CODE)
            continue
        if code != code.upper():
            issues.add(ParseIssue.CODE_NOT_UPPERCASE)
            code = code.upper()
        if code in known or code in unknown:
            issues.add(ParseIssue.DUPLICATE_CODE)
        elif code in taxonomy_codes:
            known.append(code)
        else:
            issues.add(ParseIssue.UNKNOWN_CODE)
            unknown.append(code)
    return known, unknown


def parse_output(
    raw: str, taxonomy_codes: Collection[str], stop_strings: Sequence[str] = DEFAULT_STOPS
) -> ParsedOutput:
    """Parse one decoded answer against the codes of the taxonomy that was in the prompt."""
    issues = _Issues()
    text = cut_at_stop(raw, stop_strings).strip()
    if "\r" in text:
        issues.add(ParseIssue.CARRIAGE_RETURN)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        issues.add(ParseIssue.EMPTY_OUTPUT)
        return _result("invalid", [], [], issues)
    first, *rest = text.split("\n")
    match = _VERDICT.match(first)
    if match is None:
        issues.add(ParseIssue.FIRST_LINE_NOT_VERDICT)
        return _result("invalid", [], [], issues)
    word = match.group(1)
    if word != word.lower():
        issues.add(ParseIssue.VERDICT_NOT_LOWERCASE)
    tail = first[match.end() :].strip()
    if word.lower() == "safe":
        if tail or rest:
            issues.add(ParseIssue.TRAILING_TEXT_AFTER_SAFE)
        return _result("safe", [], [], issues)
    if tail:
        issues.add(ParseIssue.CODES_ON_FIRST_LINE)
        codes_line, extra = tail, rest
    else:
        codes_line, extra = (rest[0], rest[1:]) if rest else ("", [])
    if any(line.strip() for line in extra):
        issues.add(ParseIssue.EXTRA_LINES)
    known, unknown = _split_codes(codes_line, taxonomy_codes, issues) if codes_line.strip() else ([], [])
    if not known and not unknown:
        issues.add(ParseIssue.MISSING_CATEGORIES)
    return _result("unsafe", known, unknown, issues)


def _result(
    verdict: Literal["safe", "unsafe", "invalid"], known: list[str], unknown: list[str], issues: _Issues
) -> ParsedOutput:
    return ParsedOutput(
        verdict=verdict,
        categories=tuple(known),
        unknown_codes=tuple(unknown),
        strict=not issues.items,
        issues=tuple(issues.items),
    )
