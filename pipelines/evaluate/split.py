"""Seeded train / held-out splits of every converted dataset, so that nothing evaluated is ever trained on.

A row's split is decided by a hash of its *request*: the last user message, last paragraph (HarmBench puts
a context before the behaviour), lower-cased with whitespace collapsed. Hashing the request, not the row,
keeps every row that shares a request on one side of the split: an XSTest prompt and the XSTest-Response
rows answering it, a HarmBench behaviour and the HarmBench responses to it. The hash is salted with the
seed, so ``--seed`` draws a different but reproducible split; no row order or file order matters.

Sets that may not train anything committed (NonCommercial licences) are held out whole:
``guardstream eval split`` writes only their ``.heldout.jsonl``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from pipelines.errors import user_errors
from pipelines.evaluate.rows import EvalRow, read_rows, write_rows

DEFAULT_HELDOUT = 0.3
"""Share of each trainable set's requests held out for evaluation."""


def request_key(row: EvalRow) -> str:
    """The normalised request a row answers or asks: what decides its split."""
    users = [m.content for m in row.messages() if m.role == "user"]
    text = users[-1] if users else row.messages()[-1].content
    last = [p for p in text.split("\n\n") if p.strip()] or [text]
    return re.sub(r"\s+", " ", last[-1]).strip().lower()


def is_heldout(row: EvalRow, fraction: float, seed: int) -> bool:
    """True for about ``fraction`` of requests, the same ones for the same seed on any machine."""
    digest = hashlib.sha256(f"{seed}\x00{request_key(row)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_rows(
    rows: Sequence[EvalRow], fraction: float = DEFAULT_HELDOUT, seed: int = 0
) -> tuple[list[EvalRow], list[EvalRow]]:
    """(train, held-out) with file order kept in each."""
    train: list[EvalRow] = []
    heldout: list[EvalRow] = []
    for row in rows:
        (heldout if is_heldout(row, fraction, seed) else train).append(row)
    return train, heldout


def split_paths(path: Path) -> tuple[Path, Path]:
    """Where ``guardstream eval split`` writes ``path``'s two halves."""
    stem = path.name.removesuffix(".jsonl")
    return path.with_name(f"{stem}.train.jsonl"), path.with_name(f"{stem}.heldout.jsonl")


def register_split(group: typer.Typer) -> None:
    """``guardstream eval split FILE... [--heldout 0.3] [--seed 0] [--eval-only]``."""

    @group.command("split")
    def split_command(
        files: Annotated[list[Path], typer.Argument(help="Converted eval-row JSONL files.")],
        heldout: Annotated[float, typer.Option(min=0.01, max=1.0, help="Share held out.")] = DEFAULT_HELDOUT,
        seed: int = 0,
        eval_only: Annotated[bool, typer.Option(help="Hold out every row (NC sets).")] = False,
    ) -> None:
        """Write FILE.train.jsonl and FILE.heldout.jsonl, split by a seeded hash of each request."""
        with user_errors():
            for path in files:
                rows = read_rows(path)
                train, held = split_rows(rows, 1.0 if eval_only else heldout, seed)
                train_path, held_path = split_paths(path)
                if train:
                    write_rows(train, train_path)
                write_rows(held, held_path)
                typer.echo(f"{path}: {len(train)} train, {len(held)} held out (seed {seed})")
