"""The LoRA training loop behind ``guardstream finetune``: token ids, loss on the answer only, the adapter.

Training and scoring must agree token for token, so prompts come from the same ``PromptFormat.render`` and
answers from ``GuardTokens.target_ids`` the scorer uses. One example per forward pass (no padding to waste
CPU time) with gradient accumulation; logits are computed only at the answer positions, and LoRA may be
limited to the top layers so back-propagation stops there — both matter on a CPU, where a 135M model
does one ~300-token example per second or two.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from pipelines.finetune.data import TrainingExample
from schemas.events import Message
from workers.guard.formats import PromptFormat
from workers.guard.tokens import GuardTokens

log = structlog.get_logger(__name__)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    """The recipe; written into the adapter's ``guardstream.json`` so every adapter says how it was made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(default=16, ge=1, le=256, description="LoRA rank.")
    alpha: int = Field(default=32, gt=0, description="LoRA scaling numerator (alpha / rank).")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    top_layers: int | None = Field(default=None, ge=1, description="LoRA only on the last N layers.")
    lr: float = Field(default=2e-4, gt=0, le=1)
    epochs: float = Field(default=1.0, gt=0, le=100)
    grad_accum: int = Field(default=8, ge=1, le=1024, description="Examples per optimizer step.")
    warmup: float = Field(default=0.1, ge=0, lt=1, description="Share of steps with linearly rising lr.")
    verdict_weight: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Head trainer: share of each example's loss on the verdict token (the one scored); "
        "the category codes and end of turn share the rest.",
    )
    max_tokens: int = Field(default=448, ge=64, le=32_768, description="Longer examples are truncated.")
    source_weights: dict[str, float] | None = Field(
        default=None,
        description="None: classes balanced per side. A mapping: per-source shares times these multipliers "
        "(``pipelines/finetune/mix.py: class_weights``).",
    )
    modules: tuple[str, ...] = Field(default=PROJECTIONS, description="Projections that get LoRA matrices.")
    pairs: int = Field(default=0, ge=0, description="Head trainer: preference pairs in the ranking term.")
    pair_weight: float = Field(
        default=1.0, ge=0, description="Head trainer: weight of the ranking term next to the label loss."
    )
    seed: int = 0


@dataclass(frozen=True)
class CaptureBudget:
    """When capture stops early (both optional): after ``seconds``, or after ``examples`` examples.

    Either way the captured part is a prefix of one seeded random order, so it is an unbiased sample; a
    count reproduces exactly on any machine, a time limit does not.
    """

    seconds: float | None = None
    examples: int | None = None

    def spent(self, elapsed_s: float, captured: int) -> bool:
        over_time = self.seconds is not None and elapsed_s > self.seconds
        return over_time or (self.examples is not None and captured >= self.examples)


@dataclass(frozen=True)
class Encoded:
    """One example as ids: the prompt exactly as scored, then the answer tokens the loss covers."""

    prompt: list[int]
    target: list[int]


def answer_ids(example: TrainingExample, tokens: GuardTokens) -> list[int]:
    """Prefix, verdict, codes and stop; only prefix and verdict when the row's codes are unknown."""
    if example.unsafe and not example.codes_known:
        return [*tokens.verdict_prefix_ids, tokens.unsafe_id]
    return tokens.target_ids("unsafe" if example.unsafe else "safe", example.codes)


def _shorten(messages: tuple[Message, ...], excess_tokens: int) -> tuple[Message, ...]:
    """Cut the end of the longest message by about ``excess_tokens`` (~4 chars each), keeping its start."""
    longest = max(range(len(messages)), key=lambda i: len(messages[i].content))
    content = messages[longest].content
    keep = max(20, len(content) - 4 * excess_tokens - 40)
    cut = messages[longest].model_copy(update={"content": content[:keep]})
    return (*messages[:longest], cut, *messages[longest + 1 :])


def encode_example(
    example: TrainingExample, fmt: PromptFormat, tokens: GuardTokens, max_tokens: int
) -> Encoded | None:
    """Ids for one example, with message text shortened to fit ``max_tokens``; None if it can't fit."""
    target = answer_ids(example, tokens)
    messages = example.messages
    for _ in range(6):
        prompt = tokens.encode_prompt(fmt.render(example.taxonomy, messages, example.side).text)
        excess = len(prompt) + len(target) - max_tokens
        if excess <= 0:
            return Encoded(prompt, target)
        messages = _shorten(messages, excess)
    return None


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up then linear decay to zero, as a multiplier of the base learning rate."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def wrap_lora(model: Any, config: TrainConfig) -> Any:
    """The base model with trainable LoRA matrices on the attention and MLP projections."""
    from peft import LoraConfig, get_peft_model

    layers: list[int] | None = None
    if config.top_layers is not None:
        count = int(model.config.num_hidden_layers)
        layers = list(range(max(0, count - config.top_layers), count))
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.modules),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def example_loss(model: Any, item: Encoded) -> Any:
    """Mean cross-entropy over the answer tokens; logits are computed for those positions only."""
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([item.prompt + item.target])
    keep = len(item.target) + 1
    logits = model(input_ids=ids, logits_to_keep=keep).logits[0, :-1]
    return F.cross_entropy(logits.float(), torch.tensor(item.target))


def train(model: Any, data: Sequence[Encoded], config: TrainConfig, out_dir: Path) -> list[dict[str, float]]:
    """Run the recipe on ``model`` (already LoRA-wrapped); returns and writes the per-step loss log."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    order = random.Random(config.seed)
    total_examples = max(1, int(len(data) * config.epochs))
    steps = math.ceil(total_examples / config.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, config.warmup))
    stream = [data[i % len(data)] for i in _epoch_order(len(data), total_examples, order)]
    history: list[dict[str, float]] = []
    model.train()
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        (out_dir / "train_log.jsonl").open("w", encoding="utf-8") as handle,
        tqdm(total=steps, desc="finetune", unit="step") as bar,
    ):
        for step in range(steps):
            batch = stream[step * config.grad_accum : (step + 1) * config.grad_accum]
            loss_sum = 0.0
            for item in batch:
                loss = example_loss(model, item) / len(batch)
                loss.backward()
                loss_sum += loss.item()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record = {"step": step + 1, "loss": loss_sum, "lr": float(scheduler.get_last_lr()[0])}
            record["elapsed_s"] = round(time.monotonic() - started, 1)
            history.append(record)
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            bar.set_postfix(loss=f"{loss_sum:.3f}")
            bar.update()
    model.eval()
    return history


def _epoch_order(size: int, total: int, rng: random.Random) -> list[int]:
    """Indices for ``total`` examples: whole shuffled passes over the data, then a shuffled partial one."""
    order: list[int] = []
    while len(order) < total:
        order.extend(rng.sample(range(size), size))
    return order[:total]
