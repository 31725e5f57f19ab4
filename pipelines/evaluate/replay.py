"""``guardstream eval replay``: the ``compare`` table for any last-layer adapter in seconds, not half an hour.

One ``eval compare`` of a candidate costs about 25 minutes on a 2-core CPU, nearly all of it in the frozen
layers that every head adapter (``finetune --trainer head``) shares with the base model. ``replay-capture``
runs those layers once per held-out row and keeps what the last layer reads at the verdict position (the
residual entering it and its attention output before ``o_proj``, as ``pipelines/finetune/head.py`` does for
training rows), plus the word list's score. ``replay`` then recomputes only the position-wise rest of the
last layer and the LM head: for the base model and for each ``--adapter``, the scorer's own ``P(unsafe)``
(softmax over the vocabulary at the verdict position), pinned against ``LocalEngine`` by
``tests/pipelines/evaluate/test_replay.py``. It holds only for adapters that change nothing but the last
layer's ``o_proj`` and MLP, so any other adapter is refused rather than scored wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipelines.errors import user_errors
from pipelines.evaluate.compare import CompareRow, SetResult, delta_intervals, format_table, verdict
from pipelines.evaluate.rows import EvalRow, read_rows
from workers.errors import InputError

if TYPE_CHECKING:
    import torch


@dataclass
class ReplayFeatures:
    """Per held-out row: the last layer's inputs at the verdict position, its label, file and word score."""

    residual: torch.Tensor
    attention: torch.Tensor
    unsafe: list[int]
    files: list[str]
    sides: list[str]
    words: list[float]
    base: str
    """The checkpoint these were captured with; replaying on another would be meaningless."""


def capture_rows(model: Any, tokens: Any, rows: Sequence[EvalRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual and attention output at each row's verdict position, in ``rows`` order (LG3 prompt)."""
    import torch

    from pipelines.evaluate.cli import judged_messages
    from pipelines.finetune.data import TrainingExample
    from pipelines.finetune.head import capture, verdict_positions
    from pipelines.finetune.loop import split_examples
    from schemas.taxonomy import Generation, Taxonomy
    from workers.guard.formats import get_format

    taxonomy = Taxonomy(generation=Generation.LG3)
    examples = [
        TrainingExample(messages=judged_messages(r), side=r.side, taxonomy=taxonomy, unsafe=bool(r.unsafe))
        for r in rows
    ]
    data = split_examples(examples, get_format(Generation.LG3), tokens, 32_768)
    if len(data) != len(examples):
        raise InputError(f"{len(examples) - len(data)} row(s) can't be rendered as the scorer renders them")
    feats = capture(model, data, tokens.pad_id, tokens.unsafe_id)
    assert feats.index is not None
    at = verdict_positions(feats, (tokens.safe_id, tokens.unsafe_id))
    owner = feats.index[feats.example[at]]  # the data (= rows) index of each verdict position
    order = torch.argsort(owner)
    return feats.residual[at][order], feats.attention[at][order]


def replay_scores(model: Any, feats: ReplayFeatures, unsafe_id: int) -> list[float]:
    """``P(unsafe)`` at every captured verdict position under ``model`` (base, or base plus a head LoRA)."""
    import torch

    from pipelines.finetune.head import head_logits

    with torch.no_grad():
        logits = head_logits(model, feats.residual, feats.attention)
        return torch.softmax(logits, dim=-1)[:, unsafe_id].tolist()  # type: ignore[no-any-return]


def head_adapter(base: Any, adapter: Path) -> Any:
    """``base`` with the LoRA at ``adapter`` applied; refused unless it is a last-layer head adapter."""
    import json

    from peft import PeftModel

    from pipelines.finetune.head import HEAD_PROJECTIONS

    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise InputError(f"{adapter} has no adapter_config.json (expected a peft LoRA dir)")
    config = json.loads(config_file.read_text("utf-8"))
    last = int(base.config.num_hidden_layers) - 1
    modules = set(config.get("target_modules") or ())
    if config.get("layers_to_transform") != [last] or not modules <= set(HEAD_PROJECTIONS):
        raise InputError(
            f"{adapter} is not a head adapter (LoRA on layer {last}'s {', '.join(HEAD_PROJECTIONS)} only); "
            "score it with `guardstream eval compare`"
        )
    return PeftModel.from_pretrained(base, adapter, is_trainable=False).eval()


def _result(name: str, data: str, labels: list[int], scores: list[float]) -> SetResult:
    from pipelines.evaluate.metrics import binary_metrics

    metrics = binary_metrics(labels, scores, 0.5)
    auprc = metrics.auprc if 0 < metrics.positives < len(labels) else None
    return SetResult(scorer=name, data=data, rows=len(labels), positives=metrics.positives, auprc=auprc,
                     recall=metrics.recall, seconds=0.0, scores=scores)  # fmt: skip


def replay_table(
    feats: ReplayFeatures, base: list[float], guard: list[float], rounds: int = 1000
) -> list[CompareRow]:
    """The ``compare`` rows (guard vs base vs word list, and the ship verdict) from replayed scores."""
    table = []
    for name in dict.fromkeys(feats.files):
        idx = [i for i, f in enumerate(feats.files) if f == name]
        labels = [feats.unsafe[i] for i in idx]
        results = {
            scorer: _result(scorer, name, labels, [scores[i] for i in idx])
            for scorer, scores in (("guard", guard), ("base", base), ("profanity", feats.words))
        }
        rate = sum(labels) / len(labels)
        side = ",".join(sorted({feats.sides[i] for i in idx}))
        table.append(CompareRow(data=name, side=side, rows=len(idx), positive_rate=rate, results=results,
                                passed=verdict(rate, results),
                                intervals=delta_intervals(labels, results, rounds)))  # fmt: skip
    return table


def _load_base(model_path: Path | None, threads: int | None) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from schemas.taxonomy import Generation
    from workers.guard.formats import get_format
    from workers.guard.loading import checkpoint_dir, default_model_path, quiet_transformers
    from workers.guard.tokens import resolve_tokens
    from workers.settings import get_settings

    if threads is not None:
        torch.set_num_threads(threads)
    source = model_path if model_path is not None else default_model_path()
    directory = checkpoint_dir(source, get_settings())
    quiet_transformers()
    tokens = resolve_tokens(
        AutoTokenizer.from_pretrained(directory, local_files_only=True), get_format(Generation.LG3)
    )
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True).eval()
    return model, tokens, source.name


def load_features(path: Path) -> ReplayFeatures:
    """A ``replay-capture`` file, or a one-line ``InputError`` saying why it is not one."""
    import torch

    if not path.is_file():
        raise InputError(f"no features at {path} (run `guardstream eval replay-capture`)")
    try:
        return ReplayFeatures(**torch.load(path, weights_only=True))
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise InputError(f"{path} is not a `replay-capture` file ({type(exc).__name__})") from None


def load_replay_base(model_path: Path | None, threads: int | None, feats: ReplayFeatures) -> tuple[Any, Any]:
    """The base checkpoint and its guard tokens, refused unless ``feats`` were captured with it."""
    bare, tokens, name = _load_base(model_path, threads)
    if feats.base != name:
        raise InputError(f"these features were captured with {feats.base}, not {name}")
    return bare, tokens


def register_replay(group: typer.Typer) -> None:
    """``guardstream eval replay-capture`` and ``guardstream eval replay``."""

    @group.command("replay-capture")
    def capture_command(
        data: Annotated[list[Path], typer.Option("--data", help="Held-out eval-row JSONL file(s).")],
        out: Annotated[Path, typer.Option(help="Where to write the captured features (.pt).")],
        sample: Annotated[
            list[int] | None, typer.Option(help="Seeded rows per file (one, or one per --data).")
        ] = None,
        seed: int = 0,
        model: Annotated[Path | None, typer.Option(help="Base checkpoint (default: shipped).")] = None,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    ) -> None:
        """Run the shared frozen layers once per held-out row (LG3 prompt, as `eval compare` scores)."""
        import torch

        from pipelines.evaluate.cli import profanity_scorer, sample_rows

        with user_errors():
            sizes = list(sample or [])
            if len(sizes) not in (0, 1, len(data)):
                raise ValueError("give --sample once, or once per --data")
            rows, files = [], []
            for i, path in enumerate(data):
                size = sizes[i] if len(sizes) == len(data) else (sizes[0] if sizes else None)
                chosen = sample_rows(read_rows(path), size or None, seed)
                rows.extend(chosen)
                files.extend([path.name] * len(chosen))
            guard, tokens, base = _load_base(model, threads)
            residual, attention = capture_rows(guard, tokens, rows)
            words = [s for s, _ in profanity_scorer(rows, [])]
            feats = ReplayFeatures(
                residual, attention, [r.unsafe for r in rows], files, [r.side for r in rows], words, base
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(feats.__dict__, out)
            typer.echo(f"captured {len(rows)} rows of {len(data)} file(s) to {out}")

    @group.command("replay")
    def replay_command(
        features: Annotated[Path, typer.Option(help="A `replay-capture` file.")],
        adapter: Annotated[list[Path], typer.Option(help="Head adapter dir(s) to score; repeatable.")],
        model: Annotated[Path | None, typer.Option(help="Base checkpoint (default: shipped).")] = None,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
        bootstrap: Annotated[int, typer.Option(help="Resamples per delta interval (0: none).")] = 1000,
    ) -> None:
        """The compare table (guard vs bare base vs word list, deltas, verdict) for each head adapter."""
        with user_errors():
            feats = load_features(features)
            bare, tokens = load_replay_base(model, threads, feats)
            base = replay_scores(bare, feats, tokens.unsafe_id)
            for path in adapter:
                fresh, _, _ = _load_base(model, threads)  # peft wraps in place: one base per adapter
                guard = replay_scores(head_adapter(fresh, path), feats, tokens.unsafe_id)
                typer.echo(f"adapter {path} (replayed on {len(feats.files)} captured rows)")
                typer.echo(format_table(replay_table(feats, base, guard, bootstrap)))
