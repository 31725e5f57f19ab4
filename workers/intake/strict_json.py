"""JSON as RFC 7493 (I-JSON) has it, with bounded nesting: what intake accepts as an event's text.

Plain ``json.loads`` accepts things that parsers elsewhere read differently, or that break a later step of
ours: duplicate keys (which ``tenant_id`` wins?), ``NaN``/``Infinity`` and numbers a double cannot hold,
escaped lone surrogates (a ``str`` that cannot be encoded back to UTF-8, so no verdict or log line could
carry it), and nesting deep enough to hit Python's recursion limit. Each is refused here with a
``StrictJsonError`` naming the dead-letter code and a one-line reason. Plain ``ValueError``s from the
standard parser (e.g. an integer over Python's 4300-digit limit) are mapped the same way.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from schemas.verdicts import DeadLetterCode

_LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A cheap byte test: only records containing a surrogate escape need their strings walked."""


class StrictJsonError(ValueError):
    """Text that is not acceptable JSON, with the dead-letter code and reason intake gives it."""

    def __init__(self, code: DeadLetterCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _NotIJson(ValueError):
    """Raised from inside the parser's hooks."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _NotIJson(f"duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> float:
    raise _NotIJson(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotIJson(f"number {text[:32]} does not fit a double")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite)


def loads(text: str, raw: bytes, *, max_depth: int) -> Any:
    """Parse ``text`` (the UTF-8 decoding of ``raw``) or raise ``StrictJsonError``."""
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        reason = f"payload is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise StrictJsonError(DeadLetterCode.INVALID_JSON, reason) from None
    except RecursionError:
        reason = f"payload nests deeper than the JSON parser's limit (accepted: {max_depth} levels)"
        raise StrictJsonError(DeadLetterCode.TOO_DEEP, reason) from None
    except ValueError as exc:
        reason = f"payload is not I-JSON: {str(exc)[:200]}"
        raise StrictJsonError(DeadLetterCode.INVALID_JSON, reason) from None
    check_depth = raw.count(b"[") + raw.count(b"{") > max_depth
    check_surrogates = _LONE_SURROGATE_ESCAPE.search(raw) is not None
    if check_depth or check_surrogates:
        _walk(data, max_depth=max_depth, check_depth=check_depth, check_surrogates=check_surrogates)
    return data


def _walk(data: Any, *, max_depth: int, check_depth: bool, check_surrogates: bool) -> None:
    """Find nesting deeper than ``max_depth`` or a lone surrogate, iteratively (no recursion limit)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
            if check_surrogates:
                stack.extend((key, depth) for key in value)
        elif isinstance(value, list):
            children = value
        else:
            if check_surrogates and isinstance(value, str) and not _encodable(value):
                reason = "payload is not I-JSON: a string holds a lone surrogate"
                raise StrictJsonError(DeadLetterCode.INVALID_JSON, reason)
            continue
        if check_depth and depth > max_depth:
            raise StrictJsonError(DeadLetterCode.TOO_DEEP, f"payload nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
