"""Labelled evaluation rows: the one JSONL format ``guardstream eval`` and ``guardstream finetune`` read.

A row is ``{"conversation": [...] | "text": "...", "side": "prompt|response", "unsafe": 0|1,
"categories": [...]}``. ``categories`` hold the *dataset's own* labels (e.g. BeaverTails' 14 harm types);
a category map turns them into taxonomy codes at evaluation or training time, so one converted file serves
any taxonomy. Validation happens here, at the boundary, so a bad line is reported with its line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.events import Message, Side
from workers.errors import InputError

CategoryMap = Mapping[str, tuple[str, ...]]


class EvalRow(BaseModel):
    """One labelled example. ``text`` is shorthand for a single user message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversation: tuple[Message, ...] | None = None
    text: str | None = None
    side: Side
    unsafe: Literal[0, 1]
    categories: tuple[str, ...] = Field(default=(), description="Dataset labels, mapped to codes later.")
    prompt_unsafe: Literal[0, 1] | None = Field(
        default=None, description="For response rows: the label of the user prompt, when the dataset has it."
    )
    source: str = Field(default="", description="Dataset name and row id, for tracing a number back.")

    @model_validator(mode="after")
    def _one_body(self) -> EvalRow:
        if (self.conversation is None) == (self.text is None):
            raise ValueError("row needs exactly one of 'conversation' or 'text'")
        if self.text is not None and not self.text.strip():
            raise ValueError("row 'text' must not be blank")
        if self.side == "response" and self.messages()[-1].role != "assistant":
            raise ValueError("a response row needs the assistant's message last")
        return self

    def messages(self) -> tuple[Message, ...]:
        """The conversation the guard reads (``text`` becomes one user turn)."""
        if self.conversation is not None:
            return self.conversation
        assert self.text is not None
        return (Message(role="user", content=self.text),)

    def codes(self, category_map: CategoryMap | None) -> tuple[str, ...]:
        """Taxonomy codes of this row: its labels through the map, or as given when there is no map."""
        if category_map is None:
            return tuple(dict.fromkeys(self.categories))
        out: list[str] = []
        for label in self.categories:
            out.extend(category_map.get(label, ()))
        return tuple(dict.fromkeys(out))


def read_rows(path: Path, limit: int | None = None) -> list[EvalRow]:
    """All rows of a JSONL file (blank lines skipped); the first bad line raises ``InputError``."""
    rows: list[EvalRow] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(EvalRow.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "<root>"
                raise InputError(f"{path}:{number}: {where}: {first['msg']}") from None
            if limit is not None and len(rows) >= limit:
                break
    return rows


def write_rows(rows: Iterable[EvalRow], path: Path) -> int:
    """Write rows as JSONL (compact, UTF-8, ``None`` fields left out); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(row.model_dump_json(exclude_none=True, exclude_defaults=False) + "\n")
            count += 1
    return count


def load_category_map(value: str | Path) -> dict[str, tuple[str, ...]]:
    """A category map from a built-in name (``beavertails``…) or a JSON file ``{"label": "S1" | [...]}``."""
    from pipelines.evaluate.category_maps import BUILTIN_MAPS

    name = str(value)
    if name in BUILTIN_MAPS:
        return dict(BUILTIN_MAPS[name])
    path = Path(name)
    try:
        raw: Any = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        known = ", ".join(sorted(BUILTIN_MAPS))
        raise InputError(f"category map {name!r} is neither a file nor a built-in ({known})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a category map is a JSON object of label -> code(s)")
    out: dict[str, tuple[str, ...]] = {}
    for label, codes in raw.items():
        items = [codes] if isinstance(codes, str) else codes
        if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
            raise InputError(f"{path}: {label!r} must map to a code or a list of codes")
        out[str(label)] = tuple(items)
    return out


def iter_codes(rows: Iterable[EvalRow], category_map: CategoryMap | None) -> Iterator[str]:
    """Every code some row carries, in first-seen order, without repeats."""
    seen: dict[str, None] = {}
    for row in rows:
        for code in row.codes(category_map):
            seen.setdefault(code, None)
    yield from seen
