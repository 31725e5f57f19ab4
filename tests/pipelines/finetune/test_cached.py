"""The cached trainer computes what the scorer reads: same prompt ids, same target id, same logits.

The shipped adapter of 2026-11 ranked harm below chance; these tests pin the token-level contract
between training and scoring so that a recipe bug can't hide behind a silent mismatch: the training
prompt's ids are the scorer's ids for the same request, the first answer token after ``verdict_prefix``
is the scorer's ``unsafe_id``, and the frozen-lower-layer / shared-prefix forward equals a plain forward.
"""

from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.finetune.cached import (
    SplitExample,
    answer_logits,
    embed,
    run_prefix,
    run_suffixes,
    split_example,
)
from pipelines.finetune.data import TrainingExample
from pipelines.finetune.loop import cache_lower, step_loss
from pipelines.finetune.train import TrainConfig, encode_example, wrap_lora
from schemas.events import Message
from schemas.taxonomy import Generation, Taxonomy
from workers.engine import ScoreRequest
from workers.guard.formats import get_format

LG3 = Taxonomy(generation=Generation.LG3)
FMT = get_format(Generation.LG3)
TEXTS = ("hi", "How do I build a pipe bomb?", "How do I bake a cake for my daughter's birthday party?")


@pytest.fixture(scope="module")
def guard(tiny_guard_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from workers.guard.loading import load_guard
    from workers.settings import ModelSpec, Settings

    state = tmp_path_factory.mktemp("state")
    return load_guard(ModelSpec(path=tiny_guard_path), Settings(state_dir=state))


def _example(text: str, unsafe: bool) -> TrainingExample:
    msgs = (Message(role="user", content=text),)
    return TrainingExample(messages=msgs, side="prompt", taxonomy=LG3, unsafe=unsafe, codes=("S9",) * unsafe)


@pytest.mark.parametrize("text", TEXTS)
def test_training_prompt_ids_are_the_scorers_ids(guard: Any, text: str) -> None:
    from workers.guard.scorer import GuardScorer
    from workers.settings import Settings

    encoded = encode_example(_example(text, True), FMT, guard.tokens, 4096)
    assert encoded is not None
    scorer = GuardScorer(guard, Settings())
    request = ScoreRequest(
        request_id="r", messages=(Message(role="user", content=text),), side="prompt", taxonomy=LG3
    )
    row = scorer._rows([request])[0][0]
    scored = [*row.ids, *guard.tokens.verdict_prefix_ids]
    # the scorer feeds prompt + verdict_prefix and reads the next token: the first target is that prefix
    assert scored == encoded.prompt + list(guard.tokens.verdict_prefix_ids)
    split = split_example(encoded.prompt, encoded.target, FMT.render(LG3, request.messages, "prompt").prefix,
                          guard.tokens, "prompt")  # fmt: skip
    assert split is not None and split.prefix == row.head_ids


def test_training_target_id_is_the_scorers_unsafe_id(guard: Any) -> None:
    tokens = guard.tokens
    encoded = encode_example(_example("How do I build a pipe bomb?", True), FMT, tokens, 4096)
    assert encoded is not None
    verdict_at = len(tokens.verdict_prefix_ids)
    assert encoded.target[:verdict_at] == list(tokens.verdict_prefix_ids)
    assert encoded.target[verdict_at] == tokens.unsafe_id
    assert tokens.decode([tokens.unsafe_id]) == tokens.verdict_form + "unsafe"
    safe = encode_example(_example("hi", False), FMT, tokens, 4096)
    assert safe is not None and safe.target[verdict_at] == tokens.safe_id


def test_cached_forward_equals_the_full_forward(guard: Any) -> None:
    model = wrap_lora(guard.model, TrainConfig(rank=2, alpha=4, top_layers=1, dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # a LoRA that changes the output, so the top path is really tested
    model.eval()
    tokens = guard.tokens
    data: list[SplitExample] = []
    for text in TEXTS:
        enc = encode_example(_example(text, True), FMT, tokens, 4096)
        assert enc is not None
        prefix_text = FMT.render(LG3, (Message(role="user", content=text),), "prompt").prefix
        split = split_example(enc.prompt, enc.target, prefix_text, tokens, "prompt")
        assert split is not None
        data.append(split)
    n_layers = int(model.config.num_hidden_layers)
    with torch.no_grad():
        cached = cache_lower(model, data, n_layers - 1, tokens.pad_id)
        _, kv = run_prefix(model, range(n_layers - 1, n_layers), cached.prefixes[data[0].prefix])
        states = [cached.suffixes[i] for i in range(len(data))]
        width = max(s.shape[0] for s in states)
        hidden = torch.stack([torch.nn.functional.pad(s, (0, 0, 0, width - s.shape[0])) for s in states])
        lengths = torch.tensor([s.shape[0] for s in states])
        out = run_suffixes(model, range(n_layers - 1, n_layers), hidden, lengths, kv)
        counts = [len(ex.target) for ex in data]
        fast = answer_logits(model, out, lengths, counts)
        offset = 0
        for ex, n in zip(data, counts, strict=True):
            ids = torch.tensor([[*ex.prefix, *ex.suffix]])
            full = model(input_ids=ids).logits[0, -n:].float()
            torch.testing.assert_close(fast[offset : offset + n], full, atol=1e-4, rtol=1e-4)
            offset += n
        assert float(step_loss(model, cached, data, [0, 1, 2])) > 0
    # the embedding path is the model's own
    emb, _ = embed(model, [[1, 2, 3]], tokens.pad_id)
    assert emb.shape[:2] == (1, 3)
