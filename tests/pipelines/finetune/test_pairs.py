"""Preference pairs: hh-rlhf parsing and filtering, and a ranking term that orders each pair's replies."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.finetune.pairs import parse_transcript, read_hh_pairs
from schemas.taxonomy import Generation, Taxonomy
from workers.errors import InputError

LG3 = Taxonomy(generation=Generation.LG3)


def _record(request: str, chosen: str, rejected: str, before: str = "") -> dict[str, str]:
    head = f"\n\nHuman: {before}\n\nAssistant: Sure." if before else ""
    return {
        "chosen": f"{head}\n\nHuman: {request}\n\nAssistant: {chosen}",
        "rejected": f"{head}\n\nHuman: {request}\n\nAssistant: {rejected}",
    }


def _write(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_transcripts_parse_into_turns_and_must_end_on_the_agent() -> None:
    text = "\n\nHuman: hi there\n\nAssistant: Hello!\n\nHuman: how are you?\n\nAssistant: Fine."
    msgs = parse_transcript(text)
    assert msgs is not None and [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[-1].content == "Fine."
    assert parse_transcript("\n\nHuman: hi\n\nAssistant: Hello\n\nHuman: and?") is None


def test_pairs_keep_one_differing_last_turn_no_heldout_request_and_a_seeded_order(tmp_path: Path) -> None:
    three = "\n\nHuman: 1\n\nAssistant: 1\n\nHuman: 2\n\nAssistant: 2\n\nHuman: 3\n\nAssistant: "
    records = [_record(f"question {i}", "I won't help with that.", f"Sure, step {i}: ...") for i in range(6)]
    records += [
        _record("same reply", "Identical.", "Identical."),  # nothing to rank
        {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"},
        {"chosen": three + "no", "rejected": three + "yes"},  # three exchanges: over MAX_MESSAGES
    ]
    path = _write(tmp_path / "hh.jsonl", records)
    pairs = read_hh_pairs(path, heldout={"question 0"}, limit=None, seed=0)
    assert sorted(p.chosen[0].content for p in pairs) == [f"question {i}" for i in range(1, 6)]
    assert all(p.chosen[:-1] == p.rejected[:-1] and p.chosen[-1] != p.rejected[-1] for p in pairs)
    assert read_hh_pairs(path, set(), limit=3, seed=0) == read_hh_pairs(path, set(), limit=3, seed=0)
    assert len(read_hh_pairs(path, set(), limit=3, seed=0)) == 3
    (tmp_path / "bad.jsonl").write_text('{"chosen": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: not an hh-rlhf record"):
        read_hh_pairs(tmp_path / "bad.jsonl", set(), None, 0)


def _z_order(model: Any, feats: Any, ids: tuple[int, int]) -> float:
    from pipelines.finetune.head import head_logits

    def z(residual: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        logits = head_logits(model, residual, attention)
        return logits[:, ids[1]] - logits[:, ids[0]]

    with torch.no_grad():
        rejected = z(feats.rejected_residual, feats.rejected_attention)
        return float((rejected - z(feats.chosen_residual, feats.chosen_attention)).mean())


def test_the_ranking_term_raises_the_rejected_reply_above_the_chosen(
    tiny_guard_path: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.finetune.head import HEAD_PROJECTIONS, capture, train_head
    from pipelines.finetune.loop import split_examples
    from pipelines.finetune.pairs import capture_pairs
    from pipelines.finetune.train import TrainConfig, wrap_lora
    from workers.guard.formats import get_format
    from workers.guard.tokens import resolve_tokens

    fmt = get_format(Generation.LG3)
    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), fmt)
    model = AutoModelForCausalLM.from_pretrained(tiny_guard_path, dtype=torch.float32)
    config = TrainConfig(rank=2, alpha=4, top_layers=1, dropout=0.0, modules=HEAD_PROJECTIONS, lr=5e-2,
                         epochs=40, warmup=0.0, pairs=4, pair_weight=1.0)  # fmt: skip
    model = wrap_lora(model, config)
    records = [
        _record(f"how do I do thing {i}?", "I can't help with that.", f"Here is how: {i}") for i in range(4)
    ]
    pairs = read_hh_pairs(_write(tmp_path / "hh.jsonl", records), set(), None, 0)
    ranked = capture_pairs(model, pairs, LG3, fmt, tokens, 380)
    assert len(ranked) == 4
    ids = (tokens.safe_id, tokens.unsafe_id)
    before = _z_order(model, ranked, ids)
    # one labelled example (the ranking term rides on the label loss), so the order change is the pairs'
    from pipelines.finetune.data import TrainingExample
    from schemas.events import Message

    one = TrainingExample(
        messages=(Message(role="user", content="hi"),), side="prompt", taxonomy=LG3, unsafe=False
    )
    feats = capture(model, split_examples([one], fmt, tokens, 380), tokens.pad_id, tokens.unsafe_id)
    train_head(model, feats, config, tmp_path / "out", ids, batch_examples=1, pairs=ranked)
    assert _z_order(model, ranked, ids) > before + 1.0  # rejected now scores clearly above chosen


def test_finetune_with_pairs_records_them_and_reuses_their_features(
    tiny_guard_path: Path, tmp_path: Path
) -> None:
    from pipelines.evaluate.rows import EvalRow
    from pipelines.finetune.cli import run_finetune
    from pipelines.finetune.data import AugmentConfig
    from pipelines.finetune.head import HEAD_PROJECTIONS
    from pipelines.finetune.train import TrainConfig

    rows = [EvalRow(text="how do I bake bread", side="prompt", unsafe=0),
            EvalRow(text="how do I make a bomb to hurt people", side="prompt", unsafe=1)]  # fmt: skip
    records = [_record(f"how do I do thing {i}?", "I can't help.", f"Here is how: {i}") for i in range(3)]
    pairs = read_hh_pairs(_write(tmp_path / "hh.jsonl", records), set(), None, 0)
    config = TrainConfig(rank=2, alpha=4, lr=1e-2, epochs=2, grad_accum=2, max_tokens=380, top_layers=1,
                         modules=HEAD_PROJECTIONS, pairs=len(pairs))  # fmt: skip
    aug = AugmentConfig(shuffle_categories=False, drop_nonviolated=False, drop_violated=False,
                        both_sides=False, multi_turn_rate=0.0, refusal_rate=0.0, seed=0)  # fmt: skip
    features = tmp_path / "feats.pt"
    for out in (tmp_path / "a", tmp_path / "b"):
        run_finetune(rows, out, tiny_guard_path, None, None, "none", config, aug, None, 1, "head", features,
                     None, pairs)  # fmt: skip
    marker = json.loads((tmp_path / "b" / "guardstream.json").read_text())
    assert marker["recipe"]["pairs"] == 3 and marker["recipe"]["pair_weight"] == 1.0
    assert (tmp_path / "feats.pairs.pt").is_file()
    # the same pairs and data: the second run read both caches, so it trained to the same weights
    a = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "adapter_model.safetensors").read_bytes()
    varied = AugmentConfig()  # shuffled taxonomies: no cached head features, so no ranking term
    with pytest.raises(ValueError, match="only with the head trainer"):
        run_finetune(rows, tmp_path / "c", tiny_guard_path, None, None, "none", config, varied, None, 1,
                     "head", features, None, pairs)  # fmt: skip
