"""``guardstream finetune``: LoRA-tune a Llama-architecture checkpoint into a Llama Guard-format classifier.

Input is the eval-row JSONL (``guardstream eval convert``), so the data a model is judged on and the data it
learns from share one format and one category-map mechanism. Output is a peft adapter directory plus a
``guardstream.json`` marker (prompt format, base, recipe, data) that ``ModelSpec(adapter=DIR)`` loads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.errors import user_errors
from pipelines.evaluate.rows import EvalRow, read_rows
from pipelines.finetune.data import AugmentConfig
from pipelines.finetune.train import CaptureBudget, TrainConfig

if TYPE_CHECKING:
    from pipelines.finetune.pairs import PreferencePair

FORMAT_HELP = (
    "Llama Guard prompt format (default: inferred from --model; the shipped base uses llama-guard-3)."
)


def _sample_rows(files: list[Path], per_file: int | None, seed: int) -> list[EvalRow]:
    rows: list[EvalRow] = []
    rng = random.Random(seed)
    for path in files:
        found = read_rows(path)
        if per_file is not None and len(found) > per_file:
            found = rng.sample(found, per_file)
        rows.extend(found)
    return rows


def _source_weights(specs: list[str] | None) -> dict[str, float] | None:
    """``["aegis=3", "toxigen"]`` -> ``{"aegis": 3.0, "toxigen": 1.0}``; None when no option was given."""
    if not specs:
        return None
    out: dict[str, float] = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            out[name.strip()] = float(value) if value else 1.0
        except ValueError:
            raise ValueError(f"--source-weight {spec!r}: expected DATASET=NUMBER") from None
        if not name.strip() or out[name.strip()] <= 0:
            raise ValueError(f"--source-weight {spec!r}: expected a dataset name and a positive number")
    return out


def finetune_command(
    data: Annotated[list[Path], typer.Option("--data", help="Eval-row JSONL file(s) to learn from.")],
    out: Annotated[Path, typer.Option("--out", help="Adapter directory to write.")],
    model: Annotated[
        Path | None, typer.Option(help="Base checkpoint dir or .gguf (default: shipped)")
    ] = None,
    prompt_format: Annotated[str | None, typer.Option(help=FORMAT_HELP)] = None,
    taxonomy: Annotated[Path | None, typer.Option(help="Taxonomy JSON (default: the format's own).")] = None,
    category_map: Annotated[
        str, typer.Option(help="Built-in map name, JSON file, 'lg3' (all built-ins) or 'none'.")
    ] = "lg3",
    per_file: Annotated[int | None, typer.Option(help="Random rows kept per --data file.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Cap after augmentation.")] = None,
    rank: int = 16,
    alpha: int = 32,
    top_layers: Annotated[int | None, typer.Option(help="LoRA on the last N layers only.")] = None,
    lr: float = 2e-4,
    verdict_weight: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Head trainer: loss share of the verdict token (vs. the codes)."),
    ] = 0.8,
    epochs: float = 1.0,
    grad_accum: int = 8,
    max_tokens: int = 448,
    multi_turn_rate: float = 0.2,
    augment: Annotated[bool, typer.Option(help="Meta's augmentations (off: base examples only).")] = True,
    taxonomy_augment: Annotated[
        bool,
        typer.Option(help="Shuffle/drop-category copies (vary the prefix; off: cached CPU trainer)."),
    ] = False,
    refusal_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Unsafe prompts given a refusal.")
    ] = 1.0,
    exclude: Annotated[
        list[Path] | None, typer.Option(help="Held-out files: their requests never train.")
    ] = None,
    source_weight: Annotated[
        list[str] | None,
        typer.Option(
            help="DATASET=K: weigh per source (each dataset's share of its side = its size x K, classes "
            "balanced within it); repeatable; any one switches per-source weighting on (K defaults to 1)."
        ),
    ] = None,
    voice_source: Annotated[
        list[str] | None,
        typer.Option(help="Dataset of statements (e.g. toxigen) whose rows the agent also says; repeatable."),
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(help="Head trainer: hh-rlhf JSONL (chosen/rejected) for a ranking term (pairs.py)."),
    ] = None,
    max_pairs: Annotated[int, typer.Option(min=1, help="Seeded random pairs kept from --pairs.")] = 600,
    pair_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the ranking term.")] = 1.0,
    trainer: Annotated[
        str, typer.Option(help="head: last layer on cached activations; cached: top layers; full.")
    ] = "head",
    features: Annotated[Path | None, typer.Option(help="Head trainer: feature cache file.")] = None,
    capture_budget: Annotated[
        float | None, typer.Option(help="Head trainer: stop capturing after S seconds, train on those.")
    ] = None,
    capture_examples: Annotated[
        int | None, typer.Option(min=1, help="Head trainer: stop capturing after N examples (reproducible).")
    ] = None,
    seed: int = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Train a LoRA guard adapter on labelled conversations (CPU works, slowly; a GPU is used if present)."""
    with user_errors():
        if trainer not in ("head", "cached", "full"):
            raise ValueError(f"unknown --trainer {trainer!r}; known: head, cached, full")
        head = trainer == "head" and not taxonomy_augment
        from pipelines.finetune.mix import heldout_keys, without_heldout
        from pipelines.finetune.pairs import read_hh_pairs

        held = heldout_keys(exclude) if exclude else set()
        ranked = read_hh_pairs(pairs, held, max_pairs, seed) if pairs is not None else []
        if head:
            from pipelines.finetune.head import HEAD_PROJECTIONS

            top_layers = 1
        config = TrainConfig(
            rank=rank,
            alpha=alpha,
            top_layers=top_layers,
            modules=HEAD_PROJECTIONS if head else TrainConfig().modules,
            lr=lr,
            verdict_weight=verdict_weight,
            epochs=epochs,
            grad_accum=grad_accum,
            max_tokens=max_tokens,
            source_weights=_source_weights(source_weight),
            pairs=len(ranked),
            pair_weight=pair_weight,
            seed=seed,
        )
        on = augment
        tax_on = on and taxonomy_augment
        aug = AugmentConfig(
            shuffle_categories=tax_on,
            drop_nonviolated=tax_on,
            drop_violated=tax_on,
            both_sides=on,
            multi_turn_rate=multi_turn_rate if on else 0.0,
            refusal_rate=refusal_rate,
            voice_sources=tuple(voice_source or ()) if on else (),
            seed=seed,
        )
        rows = _sample_rows(data, per_file, seed)
        if exclude:
            rows = without_heldout(rows, held)
        run_finetune(
            rows, out, model, prompt_format, taxonomy, category_map, config, aug, max_examples, threads,
            "head" if head else trainer, features, CaptureBudget(capture_budget, capture_examples), ranked,
        )  # fmt: skip


def run_finetune(
    rows: list[EvalRow],
    out: Path,
    model_path: Path | None,
    prompt_format: str | None,
    taxonomy_file: Path | None,
    category_map: str,
    config: TrainConfig,
    aug: AugmentConfig,
    max_examples: int | None,
    threads: int | None,
    trainer: str = "full",
    features: Path | None = None,
    capture_budget: CaptureBudget | None = None,
    pairs: Sequence[PreferencePair] = (),
) -> None:
    """Load, augment, encode, train and save; pieces: ``data``, ``train``, ``loop``, ``head``, ``pairs``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.evaluate.category_maps import merged_lg3_map
    from pipelines.evaluate.rows import load_category_map
    from pipelines.finetune.data import Augmenter
    from pipelines.finetune.train import encode_example, train, wrap_lora
    from schemas.taxonomy import Generation, Taxonomy
    from workers.guard.formats import get_format
    from workers.guard.loading import (
        checkpoint_dir,
        default_model_path,
        infer_prompt_format,
        pick_device,
        quiet_transformers,
    )
    from workers.guard.tokens import resolve_tokens
    from workers.logging import get_logger
    from workers.settings import ModelSpec, get_settings

    log = get_logger(__name__)
    settings = get_settings()
    if threads is not None:
        torch.set_num_threads(threads)
    source = model_path if model_path is not None else default_model_path()
    spec = ModelSpec(path=model_path, prompt_format=Generation(prompt_format) if prompt_format else None)
    generation = infer_prompt_format(spec, source)
    fmt = get_format(generation)
    if taxonomy_file is not None:
        base = Taxonomy.model_validate_json(taxonomy_file.read_text("utf-8"))
    else:
        base = Taxonomy(generation=generation)
    mapping: dict[str, tuple[str, ...]] | None = None
    if category_map == "lg3":
        mapping = merged_lg3_map()
    elif category_map != "none":
        mapping = load_category_map(category_map)
    examples = Augmenter(base, mapping, aug).expand(rows)
    varied = aug.shuffle_categories or aug.drop_nonviolated or aug.drop_violated
    if pairs and (trainer != "head" or varied):
        raise ValueError(
            "preference pairs (--pairs) train only with the head trainer and no taxonomy augmentation "
            "(--trainer head, --no-taxonomy-augment)"
        )
    if not varied:
        from pipelines.finetune.mix import dedupe

        examples = dedupe(examples)
    examples = examples[:max_examples]
    directory = checkpoint_dir(source, settings)
    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    tokens = resolve_tokens(tokenizer, fmt)
    torch.manual_seed(config.seed)
    device = pick_device(settings)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
    if trainer == "head" and not varied:
        from pipelines.finetune.head import train_head_recipe

        model = wrap_lora(model, config).to(device)
        history, count = train_head_recipe(
            model, examples, fmt, tokens, config, out, features, capture_budget, pairs
        )
    elif varied or trainer != "cached" or config.top_layers is None:
        encoded = [e for ex in examples if (e := encode_example(ex, fmt, tokens, config.max_tokens))]
        log.info("finetune_data", rows=len(rows), examples=len(examples), encoded=len(encoded))
        model = wrap_lora(model, config).to(device)
        history = train(model, encoded, config, out)
        count = len(encoded)
    else:
        from pipelines.finetune.loop import train_default_prefix

        model = wrap_lora(model, config).to(device)
        history, count = train_default_prefix(model, examples, fmt, tokens, config, out)
    model.save_pretrained(out)
    rules: dict[str, int] = {}
    for ex in examples:
        rules[ex.rule] = rules.get(ex.rule, 0) + 1
    marker = {
        "prompt_format": generation.value,
        "base_model": str(source.name),
        "taxonomy": json.loads(base.model_dump_json(exclude_none=True)),
        "recipe": config.model_dump(),
        "augmentation": aug.model_dump(),
        "rows": len(rows),
        "examples": count,
        "trainer": trainer if not varied else "full",
        "examples_by_rule": rules,
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": history[-1]["elapsed_s"] if history else 0,
    }
    (out / "guardstream.json").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"adapter written to {out} ({count} examples, {len(history)} steps)")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
