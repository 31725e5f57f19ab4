"""The cheapest exact trainer: LoRA on the last layer's ``o_proj`` and MLP, trained on cached activations.

On a shared 2-core CPU even the top-layer trainer (``loop``) costs ~2 minutes per 16-example step.
This one costs one no-grad forward per example, once: in the last decoder layer, everything *after* the
attention softmax is position-wise — ``o_proj``, the residual add, the post-attention norm, the MLP, the
final norm, the LM head. With LoRA only on ``o_proj``, ``gate_proj``, ``up_proj`` and ``down_proj`` of that
layer, the attention's inputs (and so its keys, values and output before ``o_proj``) are those of the
frozen model. So for each answer position we keep two vectors — the residual entering the last layer and
the attention output before ``o_proj`` — and training recomputes just ``head_logits`` on them, exactly the
logits the merged adapter produces at scoring time (pinned by ``tests/pipelines/finetune/test_head.py``).

An epoch over 1,000 examples then takes seconds, so the recipe can afford many epochs and a held-out
check; what it cannot do is change how the model reads the prompt (no q/k/v, no lower layers). The
features are saved with ``torch.save`` so a new learning rate or rank reuses them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from pipelines.finetune.cached import SplitExample, decoder_of, embed, run_prefix, run_suffixes
from pipelines.finetune.pairs import PairFeatures, PreferencePair
from pipelines.finetune.train import CaptureBudget, TrainConfig

log = structlog.get_logger(__name__)

HEAD_PROJECTIONS = ("o_proj", "gate_proj", "up_proj", "down_proj")
"""What the head trainer adapts: the last layer's position-wise modules (module docstring)."""


@dataclass
class HeadFeatures:
    """Per answer position: the last layer's input residual and its attention output before ``o_proj``."""

    residual: torch.Tensor
    attention: torch.Tensor
    target: torch.Tensor
    example: torch.Tensor
    """Index of the example each position belongs to (for per-example weights and splits)."""
    weight: torch.Tensor
    """Per example."""
    unsafe: torch.Tensor
    """Per example: whether the verdict target is ``unsafe`` (for reporting)."""
    index: torch.Tensor | None = None
    """Per example: its position in the captured ``data``, so a reused cache takes that data's weights."""


def capture(
    model: Any, data: Sequence[SplitExample], pad_id: int, unsafe_id: int, budget: CaptureBudget | None = None
) -> HeadFeatures:
    """One no-grad forward per example (batched per prefix), keeping the answer positions' features."""
    model.eval()
    dec = decoder_of(model)
    last = dec.layers[-1]
    grabbed: dict[str, torch.Tensor] = {}

    def keep_residual(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        grabbed["residual"] = args[0] if args else kwargs["hidden_states"]

    def keep_attention(_module: Any, args: tuple[Any, ...]) -> None:
        grabbed["attention"] = args[0]

    hooks = [
        last.register_forward_pre_hook(keep_residual, with_kwargs=True),
        last.self_attn.o_proj.register_forward_pre_hook(keep_attention),
    ]
    every = range(len(dec.layers))
    residual, attention, target, example = [], [], [], []
    done: list[int] = []
    started = time.monotonic()
    kv_by_prefix: dict[tuple[int, ...], dict[int, Any]] = {}
    # a seeded random order (sorted by length only within runs of 32, for padding), so that a run stopped
    # by ``budget`` has captured an unbiased sample rather than the shortest examples
    shuffled = random.Random(0).sample(range(len(data)), len(data))
    runs = [shuffled[i : i + 32] for i in range(0, len(shuffled), 32)]
    order = [i for run in runs for i in sorted(run, key=lambda i: (data[i].prefix, len(data[i].suffix)))]
    try:
        with torch.no_grad():
            for start in range(0, len(order), 8):
                if budget is not None and budget.spent(time.monotonic() - started, len(done)):
                    log.warning("head_capture_budget_spent", captured=len(done), total=len(data))
                    break
                chunk = order[start : start + 8]
                for prefix in {data[i].prefix for i in chunk}:
                    if prefix not in kv_by_prefix:
                        kv_by_prefix[prefix] = run_prefix(model, every, embed(model, [prefix], pad_id)[0])[1]
                    members = [i for i in chunk if data[i].prefix == prefix]
                    hidden, lengths = embed(model, [data[i].suffix for i in members], pad_id)
                    run_suffixes(model, every, hidden, lengths, kv_by_prefix[prefix])
                    for row, i in enumerate(members):
                        end, n = int(lengths[row]), len(data[i].target)
                        residual.append(grabbed["residual"][row, end - n : end].clone())
                        attention.append(grabbed["attention"][row, end - n : end].clone())
                        target.append(torch.tensor(data[i].target))
                        example.append(torch.full((n,), len(done)))
                        done.append(i)
                if start % 80 == 0:
                    log.info("head_capture", done=start, total=len(data), s=round(time.monotonic() - started))
    finally:
        for hook in hooks:
            hook.remove()
    log.info("head_captured", examples=len(done), s=round(time.monotonic() - started))
    kept = [data[i] for i in done]
    unsafe = torch.tensor([unsafe_id in ex.target for ex in kept])
    return HeadFeatures(
        torch.cat(residual), torch.cat(attention), torch.cat(target), torch.cat(example),
        _rebalanced(kept, unsafe.tolist()), unsafe, torch.tensor(done),
    )  # fmt: skip


def _rebalanced(kept: Sequence[SplitExample], unsafe: Sequence[bool]) -> torch.Tensor:
    """The examples' own weights (``mix.class_weights``), rebalanced over what was captured: a no-op for
    a full capture, a correction for one stopped by a budget."""
    from pipelines.finetune.mix import balance_labels

    keys = [(ex.side, bool(u)) for ex, u in zip(kept, unsafe, strict=True)]
    return torch.tensor(balance_labels([ex.weight for ex in kept], keys))


def final_hidden(model: Any, residual: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """The rest of the last layer and the final norm, position-wise: what the LM head reads."""
    dec = decoder_of(model)
    last = dec.layers[-1]
    hidden = residual + last.self_attn.o_proj(attention)
    hidden = hidden + last.mlp(last.post_attention_layernorm(hidden))
    return dec.norm(hidden)  # type: ignore[no-any-return]


def head_logits(model: Any, residual: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """The rest of the last layer, the final norm and the LM head, position-wise."""
    return model.get_output_embeddings()(final_hidden(model, residual, attention)).float()  # type: ignore[no-any-return]


def verdict_positions(feats: HeadFeatures, verdict_ids: tuple[int, int]) -> torch.Tensor:
    """Per position: whether it is its example's verdict (the first ``safe``/``unsafe`` target; in formats
    with a verdict prefix such as LG3's ``\\n\\n`` the prefix token comes before it)."""
    is_id = torch.isin(feats.target, torch.tensor(verdict_ids))
    seen: set[int] = set()
    out = torch.zeros_like(is_id)
    for position in torch.nonzero(is_id).flatten().tolist():
        owner = int(feats.example[position])
        if owner not in seen:
            seen.add(owner)
            out[position] = True
    return out


def _loss(
    model: Any, feats: HeadFeatures, positions: torch.Tensor, verdict: torch.Tensor, verdict_weight: float
) -> Any:
    """Per example: ``verdict_weight`` of its weight on the verdict token, the rest spread over the others.

    The scorer reads only the verdict position. With the loss averaged over all answer tokens (verdict
    prefix, verdict, category codes, end of turn) the verdict got about a sixth of each example's weight,
    and 8 epochs left it near chance (EVALUATION.md, "The head trainer's loss").
    """
    logits = head_logits(model, feats.residual[positions], feats.attention[positions])
    per_token = torch.nn.functional.cross_entropy(logits, feats.target[positions], reduction="none")
    owners = feats.example[positions]
    is_verdict = verdict[positions]
    counts = torch.bincount(owners, minlength=len(feats.weight)).float()
    rest = (counts[owners] - 1).clamp(min=1)
    share = torch.where(is_verdict, torch.full_like(rest, verdict_weight), (1 - verdict_weight) / rest)
    per_position = feats.weight[owners] * share
    return (per_token * per_position).sum() / feats.weight[owners.unique()].sum()


def train_head(
    model: Any,
    feats: HeadFeatures,
    config: TrainConfig,
    out_dir: Path,
    verdict_ids: tuple[int, int],
    batch_examples: int = 32,
    pairs: PairFeatures | None = None,
) -> list[dict[str, float]]:
    """AdamW over the last layer's LoRA weights, ``config.epochs`` passes over the cached examples; with
    ``pairs``, each step adds ``config.pair_weight`` times the ranking loss of 16 seeded random pairs."""
    torch.manual_seed(config.seed)
    from pipelines.finetune.loop import epoch_order, optimise
    from pipelines.finetune.pairs import pair_loss

    pick = random.Random(config.seed + 1)

    n_examples = len(feats.weight)
    by_example: list[list[int]] = [[] for _ in range(n_examples)]
    for position, owner in enumerate(feats.example.tolist()):
        by_example[owner].append(position)
    verdict = verdict_positions(feats, verdict_ids)
    order = epoch_order(n_examples, config.epochs, config.seed)
    steps = max(1, -(-len(order) // batch_examples))

    def loss_at(step: int) -> Any:
        chosen = order[step * batch_examples : (step + 1) * batch_examples]
        chosen_positions = torch.tensor([p for i in chosen for p in by_example[i]])
        loss = _loss(model, feats, chosen_positions, verdict, config.verdict_weight)
        if pairs is not None and len(pairs):
            picked = torch.tensor(pick.sample(range(len(pairs)), min(16, len(pairs))))
            loss = loss + config.pair_weight * pair_loss(model, pairs, picked, verdict_ids)
        return loss

    return optimise(model, steps, config, out_dir, loss_at, "head_step")


def _digest(data: Sequence[SplitExample]) -> str:
    import hashlib

    text = json.dumps([[list(ex.prefix[:4]), ex.suffix, ex.target] for ex in data])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def features_for(
    model: Any,
    data: Sequence[SplitExample],
    tokens: Any,
    path: Path | None,
    budget: CaptureBudget | None = None,
) -> HeadFeatures:
    """Captured features, read from ``path`` when it holds those of exactly ``data`` (else written there).

    The digest covers the examples' ids, not their weights: a new weighting reuses the features, taking
    each example's weight from ``data`` through the saved ``index``."""
    digest = _digest(data)
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.pop("digest", None) == digest and saved.get("index") is not None:
            log.info("head_features_reused", path=str(path))
            kept = [data[i] for i in saved["index"].tolist()]
            saved["weight"] = _rebalanced(kept, saved["unsafe"].tolist())
            return HeadFeatures(**saved)
    feats = capture(model, data, tokens.pad_id, tokens.unsafe_id, budget)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**feats.__dict__, "digest": digest}, path)
    return feats


def train_head_recipe(
    model: Any,
    examples: Sequence[Any],
    fmt: Any,
    tokens: Any,
    config: TrainConfig,
    out_dir: Path,
    features: Path | None,
    budget: CaptureBudget | None = None,
    pairs: Sequence[PreferencePair] = (),
) -> tuple[list[dict[str, float]], int]:
    """Encode and split as the scorer does, capture (or reuse) features, train; (history, examples)."""
    from pipelines.finetune.loop import split_examples
    from pipelines.finetune.mix import describe

    data = split_examples(examples, fmt, tokens, config.max_tokens, config.source_weights)
    log.info("finetune_data", examples=len(examples), trained=len(data), **describe(examples))
    feats = features_for(model, data, tokens, features, budget)
    ranked = None
    if pairs:
        from pipelines.finetune.pairs import pair_features_for

        ranked = pair_features_for(model, pairs, examples[0].taxonomy, fmt, tokens, config, features)
    ids = (tokens.safe_id, tokens.unsafe_id)
    history = train_head(model, feats, config, out_dir, ids, config.grad_accum, ranked)
    return history, len(feats.weight)
