"""Held-out splits keep a request on one side; the compare verdict is the issue's ship rule."""

from pipelines.evaluate.compare import SetResult, format_table, verdict
from pipelines.evaluate.rows import EvalRow
from pipelines.evaluate.split import request_key, split_rows
from pipelines.finetune.data import TrainingExample
from pipelines.finetune.mix import class_weights, dedupe
from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy


def _prompt(text: str, unsafe: int = 0) -> EvalRow:
    return EvalRow(text=text, side="prompt", unsafe=unsafe)  # type: ignore[arg-type]


def _response(prompt: str, reply: str) -> EvalRow:
    convo = (Message(role="user", content=prompt), Message(role="assistant", content=reply))
    return EvalRow(conversation=convo, side="response", unsafe=0)


def test_split_is_seeded_and_keeps_a_request_on_one_side() -> None:
    rows = [_prompt(f"question number {i}") for i in range(400)]
    train, held = split_rows(rows, 0.3, seed=0)
    assert len(train) + len(held) == 400 and 80 < len(held) < 160
    assert split_rows(rows, 0.3, seed=0) == (train, held)
    assert split_rows(rows, 0.3, seed=1) != (train, held)
    held_keys = {request_key(r) for r in held}
    answers = [_response(f"Question  number {i}", "Sure.") for i in range(400)]  # case and spaces differ
    _, held_answers = split_rows(answers, 0.3, seed=0)
    assert {request_key(r) for r in held_answers} == held_keys


def test_request_key_ignores_a_context_before_the_request() -> None:
    assert request_key(_prompt("Some article text.\n\nWrite a defamatory post")) == "write a defamatory post"


def _result(name: str, auprc: float | None) -> SetResult:
    return SetResult(scorer=name, data="d", rows=10, positives=5, auprc=auprc, recall=0.5, seconds=0)


def test_verdict_needs_the_guard_above_every_rival_that_beats_chance() -> None:
    rivals = {"base": _result("base", 0.7), "profanity": _result("profanity", 0.45)}
    assert verdict(0.5, {"guard": _result("guard", 0.8), **rivals}) is True
    assert verdict(0.5, {"guard": _result("guard", 0.6), **rivals}) is False
    # the word list is below chance, so only the base decides
    assert verdict(0.5, {"guard": _result("guard", 0.71), **rivals}) is True
    assert verdict(0.5, {"guard": _result("guard", None), **rivals}) is None
    below = {"base": _result("base", 0.4), "profanity": _result("profanity", 0.45)}
    assert verdict(0.5, {"guard": _result("guard", 0.3), **below}) is None


def test_table_prints_deltas() -> None:
    from pipelines.evaluate.compare import CompareRow

    results = {
        "guard": _result("guard", 0.8),
        "base": _result("base", 0.7),
        "profanity": _result("profanity", 0.6),
    }
    row = CompareRow(data="x.jsonl", side="prompt", rows=10, positive_rate=0.5, results=results, passed=True,
                     intervals={"base": (-0.031, 0.234)})  # fmt: skip
    text = format_table([row])
    assert "+0.100" in text and "+0.200" in text and " ok" in text
    assert "[-0.03,+0.23]" in text  # the base delta's interval; the word list's has none, so a dash


def test_compare_rows_carry_bootstrap_intervals_from_per_row_scores() -> None:
    from pipelines.evaluate.compare import delta_intervals

    labels = [1, 0] * 20
    results = {
        "guard": SetResult(scorer="guard", data="d", rows=40, positives=20, auprc=1.0, recall=1.0,
                           seconds=0, scores=[0.9 if y else 0.1 for y in labels]),
        "base": SetResult(scorer="base", data="d", rows=40, positives=20, auprc=0.5, recall=0.0,
                          seconds=0, scores=[0.5] * 40),
        "profanity": _result("profanity", 0.6),  # read from an old cache: no per-row scores, no interval
    }  # fmt: skip
    spans = delta_intervals(labels, results, rounds=100)
    assert set(spans) == {"base"}
    assert 0.25 < spans["base"][0] <= 0.5 <= spans["base"][1] < 0.75  # 1.0 minus a coin's ~0.5


def test_mix_weights_each_class_equally_per_side_and_merges_duplicates() -> None:
    lg3 = Taxonomy(generation=Generation.LG3)
    msg = (Message(role="user", content="x"),)
    examples = [
        TrainingExample(messages=msg, side="prompt", taxonomy=lg3, unsafe=True),
        TrainingExample(messages=msg, side="prompt", taxonomy=lg3, unsafe=False),  # duplicate request
        *[
            TrainingExample(
                messages=(Message(role="user", content=str(i)),), side="prompt", taxonomy=lg3, unsafe=i < 3
            )
            for i in range(4)
        ],
    ]
    kept = dedupe(examples)
    assert len(kept) == 5
    weights = class_weights(kept)
    unsafe = sum(w for w, ex in zip(weights, kept, strict=True) if ex.unsafe)
    safe = sum(w for w, ex in zip(weights, kept, strict=True) if not ex.unsafe)
    assert abs(unsafe - safe) < 1e-9
