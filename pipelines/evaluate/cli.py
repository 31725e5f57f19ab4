"""``guardstream eval``: the Llama Guard paper's evaluation on any labelled JSONL, through the real scorer.

Overall AUPRC is computed from ``P(unsafe)`` under the full taxonomy; per-category AUPRC follows the paper's
1-vs-all protocol: for each code, the row's score is ``P(unsafe)`` from a prompt listing *only that*
category (``ScoreRequest.category_codes``), positives are the rows labelled with it and every other row is
a negative. Scoring goes through ``workers.serving.local_engine.LocalEngine``, the same engine the stream and
backfill use, so a number here is a number there.

``--baseline profanity`` adds the ``alt-profanity-check`` classifier (a linear model on word n-grams) on the
judged message alone; it has no categories, so its one score stands in for every category.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from pipelines.errors import user_errors
from pipelines.evaluate.metrics import BinaryMetrics, PRCurve, binary_metrics, pr_curve
from pipelines.evaluate.report import EvalReport, ScorerReport, table, write_plots
from pipelines.evaluate.rows import CategoryMap, EvalRow, load_category_map, read_rows
from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy
from workers.errors import InputError

ScoreFn = Callable[[Sequence[EvalRow], Sequence[str]], list[tuple[float, dict[str, float]]]]
"""Rows and 1-vs-all codes in, (overall score, per-code scores) per row out."""


def judged_messages(row: EvalRow) -> tuple[Message, ...]:
    """What the guard reads: for a prompt row, nothing after the last user turn (as ``ConversationEvent``)."""
    msgs = row.messages()
    if row.side == "response":
        return msgs
    last_user = max(i for i, m in enumerate(msgs) if m.role == "user")
    return msgs[: last_user + 1]


def engine_scorer(engine: object, taxonomy: Taxonomy, batch_size: int) -> ScoreFn:
    """A ``ScoreFn`` over any ``workers.engine.Engine``, with a progress bar over rows."""
    from tqdm import tqdm

    from workers.engine import Engine, ScoreRequest

    assert isinstance(engine, Engine)

    def score(rows: Sequence[EvalRow], codes: Sequence[str]) -> list[tuple[float, dict[str, float]]]:
        out: list[tuple[float, dict[str, float]]] = []
        with tqdm(total=len(rows), desc="scoring", unit="row") as bar:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                requests = [
                    ScoreRequest(
                        request_id=str(start + i),
                        messages=judged_messages(row),
                        side=row.side,
                        taxonomy=taxonomy,
                        decode_categories_at=None,
                        category_codes=tuple(codes),
                    )
                    for i, row in enumerate(chunk)
                ]
                results = engine.score(requests)
                failed = [r for r in results if r.error is not None]
                if failed:  # a silent 0 would bias every metric
                    row_number = int(failed[0].request_id) + 1
                    raise InputError(f"eval row {row_number} can't be scored: {failed[0].error}")
                out.extend((r.score, dict(r.category_scores)) for r in results)
                bar.update(len(chunk))
        return out

    return score


def profanity_scorer(rows: Sequence[EvalRow], codes: Sequence[str]) -> list[tuple[float, dict[str, float]]]:
    """alt-profanity-check's probability on the judged message (the last turn of the judged side)."""
    from profanity_check import predict_prob

    texts = [judged_messages(row)[-1].content for row in rows]
    probs = [float(p) for p in predict_prob(texts)] if texts else []
    return [(p, dict.fromkeys(codes, p)) for p in probs]


def evaluate_scorer(
    name: str,
    scorer: ScoreFn,
    rows: Sequence[EvalRow],
    codes: Sequence[str],
    category_map: CategoryMap | None,
    threshold: float,
) -> tuple[ScorerReport, dict[str, PRCurve | None]]:
    """Score every row once and compute overall and 1-vs-all figures plus their PR curves."""
    started = time.monotonic()
    scored = scorer(rows, codes)
    labels = [row.unsafe for row in rows]
    scores = [s for s, _ in scored]
    curves: dict[str, PRCurve | None] = {"overall": pr_curve(labels, scores)}
    per_category: dict[str, BinaryMetrics] = {}
    for code in codes:
        code_labels = [int(code in row.codes(category_map)) for row in rows]
        code_scores = [per[code] for _, per in scored]
        per_category[code] = binary_metrics(code_labels, code_scores, threshold)
        curves[code] = pr_curve(code_labels, code_scores)
    overall = binary_metrics(labels, scores, threshold)
    return ScorerReport.build(name, overall, per_category, time.monotonic() - started), curves


def sample_rows(rows: list[EvalRow], size: int | None, seed: int) -> list[EvalRow]:
    """A reproducible random subset that keeps file order; files are often sorted by type or label."""
    if size is None or size >= len(rows):
        return rows
    import random

    keep = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[i] for i in keep]


def _taxonomy(path: Path | None, generation: Generation) -> Taxonomy:
    if path is None:
        return Taxonomy(generation=generation)
    return Taxonomy.model_validate_json(path.read_text("utf-8"))


def _category_map(value: str) -> CategoryMap | None:
    from pipelines.evaluate.category_maps import merged_lg3_map

    if value == "lg3":
        return merged_lg3_map()
    return None if value == "none" else load_category_map(value)


def eval_main(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Eval-row JSONL (see `guardstream eval convert`).")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Checkpoint dir or .gguf (default: shipped).")] = None,
    adapter: Annotated[Path | None, typer.Option(help="peft LoRA adapter dir on top of --model.")] = None,
    prompt_format: Annotated[str | None, typer.Option(help="Llama Guard format, e.g. llama-guard-3.")] = None,
    taxonomy: Annotated[Path | None, typer.Option(help="Taxonomy JSON (default: the format's own).")] = None,
    category_map: Annotated[
        str, typer.Option(help="Labels->codes: built-in name, JSON file, 'lg3' (all built-ins), 'none'.")
    ] = "lg3",
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
    sample: Annotated[int | None, typer.Option(help="A seeded random N rows (file order kept).")] = None,
    seed: int = 0,
    per_category: Annotated[
        bool, typer.Option(help="1-vs-all per-category AUPRC (one prompt per code).")
    ] = True,
    baseline: Annotated[list[str] | None, typer.Option(help="Side-by-side baseline: profanity.")] = None,
    skip_model: Annotated[bool, typer.Option(help="Only the baselines (fast).")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Directory for PR-curve PNGs.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 16,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Evaluate a guard on labelled rows: AUPRC overall and per category, P/R/F1 at the threshold."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        if data is None:
            raise typer.BadParameter("--data is required (or use a subcommand: convert, datasets)")
        if baseline and set(baseline) - {"profanity"}:
            raise ValueError(f"unknown baseline(s) {sorted(set(baseline) - {'profanity'})}; known: profanity")
        rows = sample_rows(read_rows(data, limit), sample, seed)
        if not rows:
            raise ValueError(f"{data} has no rows")
        generation = Generation(prompt_format) if prompt_format else Generation.LG3
        tax = _taxonomy(taxonomy, generation)
        mapping = _category_map(category_map)
        known = [c.code for c in tax.resolve()]
        present = {code for row in rows for code in row.codes(mapping)}
        codes = [c for c in known if c in present] if per_category else []
        reports: list[ScorerReport] = []
        curves: dict[str, dict[str, PRCurve | None]] = {}
        scorers: list[tuple[str, ScoreFn]] = []
        if not skip_model:
            scorers.append(_model_scorer(model, adapter, prompt_format, tax, batch_size, threads))
        scorers += [("profanity baseline (alt-profanity-check)", profanity_scorer) for _ in baseline or []]
        for name, scorer in scorers:
            report, scorer_curves = evaluate_scorer(name, scorer, rows, codes, mapping, threshold)
            reports.append(report)
            for figure, curve in scorer_curves.items():
                curves.setdefault(figure, {})[name] = curve
        main, *rest = reports
        sides = sorted({row.side for row in rows})
        full = EvalReport(
            **main.model_dump(),
            data=str(data),
            side=",".join(sides),
            taxonomy=tax.model_dump(mode="json", exclude_none=True),
            category_map=category_map,
            baselines=rest,
        )
        typer.echo(table(reports))
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(full.model_dump_json(indent=2) + "\n", encoding="utf-8")
        if plots is not None:
            write_plots(plots, data.stem, curves)


def _model_scorer(
    model: Path | None,
    adapter: Path | None,
    prompt_format: str | None,
    taxonomy: Taxonomy,
    batch_size: int,
    threads: int | None,
) -> tuple[str, ScoreFn]:
    import torch

    from workers.serving.local_engine import LocalEngine
    from workers.settings import ModelSpec, get_settings

    if threads is not None:
        torch.set_num_threads(threads)
    spec = ModelSpec(
        path=model, adapter=adapter, prompt_format=Generation(prompt_format) if prompt_format else None
    )
    engine = LocalEngine(spec, get_settings())
    return engine.model_name, engine_scorer(engine, taxonomy, batch_size)


def register(app: typer.Typer) -> None:
    from pipelines.evaluate.calibrate import register_calibrate
    from pipelines.evaluate.compare import register_compare
    from pipelines.evaluate.datasets import register_commands
    from pipelines.evaluate.probe import register_probe
    from pipelines.evaluate.replay import register_replay
    from pipelines.evaluate.split import register_split

    group = typer.Typer(help="Evaluate guards on labelled datasets (AUPRC as in the Llama Guard paper).")
    group.callback(invoke_without_command=True)(eval_main)
    register_commands(group)
    register_split(group)
    register_compare(group)
    register_replay(group)
    register_probe(group)
    register_calibrate(group)
    app.add_typer(group, name="eval")
