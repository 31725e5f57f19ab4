"""Per-source weighting and the voice rule: what the default guard's recipe adds to the per-side balance."""

from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.evaluate.rows import EvalRow
from pipelines.finetune.cli import _source_weights
from pipelines.finetune.data import AugmentConfig, Augmenter, TrainingExample
from pipelines.finetune.mix import class_weights
from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy

LG3 = Taxonomy(generation=Generation.LG3)


def _ex(n: int, source: str, unsafe: bool, side: str = "prompt") -> list[TrainingExample]:
    return [
        TrainingExample(
            messages=(Message(role="user", content=f"{source}-{unsafe}-{i}"),),
            side=side,  # type: ignore[arg-type]
            taxonomy=LG3,
            unsafe=unsafe,
            source=source,
        )
        for i in range(n)
    ]


def _mass(examples: list[TrainingExample], weights: list[float], **match: Any) -> float:
    return sum(
        w
        for ex, w in zip(examples, weights, strict=True)
        if all(getattr(ex, k) == v for k, v in match.items())
    )


def test_a_sources_share_of_its_side_is_its_size_times_its_multiplier() -> None:
    examples = _ex(2, "a", True) + _ex(2, "a", False) + _ex(4, "b", True) + _ex(4, "b", False)
    weights = class_weights(examples, {"a": 3.0})
    # masses 3 x 4 and 1 x 8 of the side's 12: a carries 12 x 12/20, b 12 x 8/20
    assert _mass(examples, weights, source="a") == pytest.approx(7.2)
    assert _mass(examples, weights, source="b") == pytest.approx(4.8)
    assert _mass(examples, weights, unsafe=True) == pytest.approx(6.0)
    assert _mass(examples, weights, unsafe=False) == pytest.approx(6.0)


def test_single_label_sources_keep_the_sides_labels_balanced() -> None:
    """An all-unsafe red-teaming set takes its share on one label; the side is then rebalanced 50/50."""
    examples = (
        _ex(6, "redteam", True)
        + _ex(2, "chat", True)
        + _ex(4, "chat", False)
        + _ex(3, "r", False, "response")
    )
    weights = class_weights(examples, {})
    assert _mass(examples, weights, side="prompt", unsafe=True) == pytest.approx(6.0)
    assert _mass(examples, weights, side="prompt", unsafe=False) == pytest.approx(6.0)
    assert _mass(examples, weights, side="response") == pytest.approx(3.0)
    redteam = [w for ex, w in zip(examples, weights, strict=True) if ex.source == "redteam"]
    chat_unsafe = [w for ex, w in zip(examples, weights, strict=True) if ex.source == "chat" and ex.unsafe]
    assert max(redteam) < min(chat_unsafe)  # per example, the crowded style weighs less than the rare one


def test_no_source_weights_is_the_per_side_class_balance() -> None:
    examples = _ex(6, "redteam", True) + _ex(2, "chat", True) + _ex(4, "chat", False)
    assert class_weights(examples) == pytest.approx([12 / (2 * 8)] * 8 + [12 / (2 * 4)] * 4)


def test_source_weight_option_parses_and_refuses_nonsense() -> None:
    assert _source_weights(["aegis=3", "toxigen"]) == {"aegis": 3.0, "toxigen": 1.0}
    assert _source_weights(None) is None
    for bad in ("aegis=x", "=2", "aegis=0"):
        with pytest.raises(ValueError, match="--source-weight"):
            _source_weights([bad])


def _augment(voice: tuple[str, ...]) -> list[TrainingExample]:
    rows = [
        EvalRow(text="they are all criminals", side="prompt", unsafe=1, categories=("hate_latino",),
                source="toxigen:hate_latino"),
        EvalRow(text="many of them run small businesses", side="prompt", unsafe=0,
                source="toxigen:neutral_latino"),
        EvalRow(text="how do I pick a lock?", side="prompt", unsafe=1, source="aegis:7"),
    ]  # fmt: skip
    config = AugmentConfig(shuffle_categories=False, drop_nonviolated=False, drop_violated=False,
                           multi_turn_rate=0.0, refusal_rate=0.0, voice_sources=voice)  # fmt: skip
    return Augmenter(LG3, {"hate_latino": ("S10",)}, config).expand(rows)


def test_voice_rule_has_the_agent_say_a_statement_with_its_label() -> None:
    voiced = [ex for ex in _augment(("toxigen",)) if ex.rule == "voice"]
    said = {ex.messages[-1].content: ex for ex in voiced}
    assert set(said) == {"they are all criminals", "many of them run small businesses"}  # not the request
    for ex in voiced:
        assert ex.side == "response" and ex.source == "voice"
        assert [m.role for m in ex.messages] == ["user", "assistant"]
        assert "Latino people" in ex.messages[0].content
    assert said["they are all criminals"].unsafe and said["they are all criminals"].codes == ("S10",)
    assert not said["many of them run small businesses"].unsafe
    assert not [ex for ex in _augment(()) if ex.rule == "voice"]
    assert {ex.source for ex in _augment(())} == {"toxigen", "aegis"}


def test_reused_features_take_the_new_weights(tiny_guard_path: Path, tmp_path: Path) -> None:
    """The feature cache's digest covers ids, not weights: reweighting reuses the capture."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.finetune.head import features_for
    from pipelines.finetune.loop import split_examples
    from workers.guard.formats import get_format
    from workers.guard.tokens import resolve_tokens

    fmt = get_format(Generation.LG3)
    tokens = resolve_tokens(AutoTokenizer.from_pretrained(tiny_guard_path), fmt)
    model = AutoModelForCausalLM.from_pretrained(tiny_guard_path, dtype=torch.float32)
    examples = _ex(3, "a", True) + _ex(1, "a", False) + _ex(1, "b", True) + _ex(3, "b", False)
    path = tmp_path / "features.pt"
    plain = features_for(model, split_examples(examples, fmt, tokens, 512), tokens, path)
    again = features_for(model, split_examples(examples, fmt, tokens, 512, {"b": 4.0}), tokens, path)
    assert torch.equal(plain.residual, again.residual)
    assert plain.index is not None and again.index is not None
    expected = class_weights(examples, {"b": 4.0})
    assert again.weight.tolist() == pytest.approx([expected[i] for i in again.index.tolist()])
    assert not torch.allclose(plain.weight, again.weight)
