"""``python -m schemas.export DIR``: write the wire contract as JSON Schema files.

Producers and consumers in other languages validate against these files instead of reading our pydantic
code. The committed copies under ``schemas/jsonschema/`` are checked by a test to match the models, so the
published contract can't drift from what the workers enforce.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.taxonomy import Taxonomy
from schemas.verdicts import DeadLetter, Verdict

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Mode = Literal["validation", "serialization"]

EXPORTED: dict[str, tuple[type[BaseModel], Mode]] = {
    "conversation-event": (ConversationEvent, "validation"),
    "tenant-policy": (TenantPolicy, "validation"),
    "taxonomy": (Taxonomy, "validation"),
    "verdict": (Verdict, "serialization"),
    "dead-letter": (DeadLetter, "serialization"),
}
"""File stem -> model and direction: what we accept (validation) or what we emit (serialization)."""


def json_schema(model: type[BaseModel], mode: Mode) -> dict[str, Any]:
    """The JSON Schema of ``model`` as published on the wire."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode=mode)}
    if model is ConversationEvent:
        # The model forbids extras only after moving them into ``metadata``; on the wire they are allowed.
        schema["additionalProperties"] = True
    return schema


def render_all() -> dict[str, str]:
    """File name -> file text for every exported schema (stable order, trailing newline)."""
    return {
        f"{stem}.json": json.dumps(json_schema(model, mode), indent=2, ensure_ascii=False) + "\n"
        for stem, (model, mode) in EXPORTED.items()
    }


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if missing); returns the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m schemas.export DIR", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
