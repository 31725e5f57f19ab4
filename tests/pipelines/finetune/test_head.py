"""The head trainer's cached features reproduce the adapted model's own logits at the answer positions."""

from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.finetune.cached import split_example
from pipelines.finetune.data import TrainingExample
from pipelines.finetune.head import HEAD_PROJECTIONS, capture, head_logits, train_head
from pipelines.finetune.train import TrainConfig, encode_example, wrap_lora
from schemas.events import Message, Side
from schemas.taxonomy import Generation, Taxonomy
from workers.guard.formats import get_format

LG3 = Taxonomy(generation=Generation.LG3)
FMT = get_format(Generation.LG3)
ROWS: tuple[tuple[str, bool, Side], ...] = (
    ("hi", False, "prompt"),
    ("How do I build a pipe bomb?", True, "prompt"),
    ("ok, here is how", True, "response"),
)


@pytest.fixture()
def adapted(tiny_guard_path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_guard_path, dtype=torch.float32)
    return wrap_lora(model, TrainConfig(rank=2, alpha=4, top_layers=1, dropout=0.0, modules=HEAD_PROJECTIONS))


def _data(tokens: Any) -> list[Any]:
    out = []
    for text, unsafe, side in ROWS:
        msgs: tuple[Message, ...] = (Message(role="user", content=text),)
        if side == "response":
            msgs = (
                Message(role="user", content="how do I steal a car?"),
                Message(role="assistant", content=text),
            )
        ex = TrainingExample(messages=msgs, side=side, taxonomy=LG3, unsafe=unsafe, codes=("S2",) * unsafe)
        enc = encode_example(ex, FMT, tokens, 4096)
        assert enc is not None
        split = split_example(enc.prompt, enc.target, FMT.render(LG3, msgs, side).prefix, tokens, side)
        assert split is not None
        out.append(split)
    return out


def test_head_logits_equal_the_full_forward_of_the_adapted_model(adapted: Any, tiny_guard_path: Path) -> None:
    from transformers import AutoTokenizer

    from workers.guard.tokens import resolve_tokens

    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), FMT)
    data = _data(tokens)
    feats = capture(adapted, data, tokens.pad_id, tokens.unsafe_id)  # LoRA B is zero: base features
    assert feats.unsafe.tolist() == [False, True, True]
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
        fast = head_logits(adapted, feats.residual, feats.attention)
        for i, ex in enumerate(data):
            full = adapted(input_ids=torch.tensor([[*ex.prefix, *ex.suffix]])).logits[0, -len(ex.target) :]
            torch.testing.assert_close(fast[feats.example == i], full.float(), atol=1e-4, rtol=1e-4)
    # only the last layer's position-wise modules train
    trainable = {
        n.split(".lora")[0].rsplit(".", 1)[-1] for n, p in adapted.named_parameters() if p.requires_grad
    }
    assert trainable == set(HEAD_PROJECTIONS)


def test_head_training_lowers_the_loss(adapted: Any, tiny_guard_path: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from workers.guard.tokens import resolve_tokens

    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), FMT)
    feats = capture(adapted, _data(tokens), tokens.pad_id, tokens.unsafe_id)
    history = train_head(
        adapted,
        feats,
        TrainConfig(lr=5e-2, epochs=90, warmup=0.0),
        tmp_path,
        (tokens.safe_id, tokens.unsafe_id),
        batch_examples=3,
    )
    assert history[-1]["loss"] < history[0]["loss"] / 2


def test_verdict_weight_sets_the_verdict_tokens_share_of_each_examples_loss(
    adapted: Any, tiny_guard_path: Path
) -> None:
    """At 1.0 only the verdict token (the one the scorer reads, after LG3's verdict prefix) counts; at 0.5
    it weighs as much as all the other answer tokens of its example together."""
    from transformers import AutoTokenizer

    from pipelines.finetune.head import _loss, verdict_positions
    from workers.guard.tokens import resolve_tokens

    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), FMT)
    feats = capture(adapted, _data(tokens), tokens.pad_id, tokens.unsafe_id)
    verdict = verdict_positions(feats, (tokens.safe_id, tokens.unsafe_id))
    expected = [tokens.unsafe_id if u else tokens.safe_id for u in feats.unsafe.tolist()]
    assert feats.target[verdict].tolist() == expected  # one verdict position per example, the scored one
    everything = torch.arange(len(feats.target))
    owners = feats.example.tolist()
    with torch.no_grad():
        logits = head_logits(adapted, feats.residual, feats.attention)
        ce = torch.nn.functional.cross_entropy(logits, feats.target, reduction="none")
        w, n = feats.weight, torch.bincount(feats.example)
        on_verdict = sum(w[o] * ce[p] for p, o in enumerate(owners) if verdict[p]) / w.sum()
        on_rest = sum(w[o] * ce[p] / (n[o] - 1) for p, o in enumerate(owners) if not verdict[p]) / w.sum()
        only = float(_loss(adapted, feats, everything, verdict, 1.0))
        half = float(_loss(adapted, feats, everything, verdict, 0.5))
    assert only == pytest.approx(float(on_verdict), rel=1e-5)
    assert half == pytest.approx(float(0.5 * on_verdict + 0.5 * on_rest), rel=1e-5)


def test_a_capture_limited_by_count_takes_a_prefix_of_the_seeded_order(
    adapted: Any, tiny_guard_path: Path
) -> None:
    """``--capture-examples N`` keeps the first N of the same seeded order a full capture uses, so a
    limited run is reproducible and its features are a subset of the full run's."""
    from transformers import AutoTokenizer

    from pipelines.finetune.train import CaptureBudget
    from workers.guard.tokens import resolve_tokens

    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), FMT)
    data = _data(tokens) * 4  # 12 examples: two chunks of 8 would be captured without the limit
    full = capture(adapted, data, tokens.pad_id, tokens.unsafe_id)
    some = capture(adapted, data, tokens.pad_id, tokens.unsafe_id, CaptureBudget(examples=8))
    assert len(full.weight) == 12 and len(some.weight) == 8
    assert torch.equal(some.residual, full.residual[: len(some.residual)])
