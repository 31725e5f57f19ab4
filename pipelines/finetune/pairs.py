"""Preference pairs: two replies to one conversation, one judged more harmful, as a ranking signal.

Every 0/1 response label in the permissive data separates refusal from compliance, or a harmful
completion from an off-target one. What PKU-SafeRLHF and BeaverTails label is subtler: two *compliant*
answers to the same request, one harmful. Anthropic's hh-rlhf harmless-base (MIT) has that shape but no
0/1 label, only "``rejected`` is more harmful than ``chosen``". So the head trainer can add a ranking
term (``pair_loss``): with ``z`` the unsafe-minus-safe logit at the verdict position of the response-side
prompt, ``-log sigmoid(z_rejected - z_chosen)``, which moves only the order of the two, never calls either
safe or unsafe. The features are captured exactly as the training examples' are (``head.capture``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import torch
from pydantic import BaseModel, ConfigDict

from pipelines.evaluate.rows import EvalRow
from pipelines.evaluate.split import request_key
from pipelines.finetune.data import TrainingExample
from schemas.events import Message
from schemas.taxonomy import Taxonomy
from workers.errors import InputError

if TYPE_CHECKING:
    from pipelines.finetune.train import TrainConfig

log = structlog.get_logger(__name__)

MAX_MESSAGES = 4
"""At most two exchanges: longer transcripts are cut by ``max_tokens`` and mostly lose the request."""


class PreferencePair(BaseModel):
    """The same conversation twice, differing only in the last agent turn; ``rejected`` is more harmful."""

    model_config = ConfigDict(frozen=True)

    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]


def parse_transcript(text: str) -> tuple[Message, ...] | None:
    """``\\n\\nHuman: ...\\n\\nAssistant: ...`` -> messages; None unless it ends on a non-empty agent turn."""
    messages: list[Message] = []
    for part in text.split("\n\nHuman: ")[1:]:
        human, _, reply = part.partition("\n\nAssistant: ")
        messages.append(Message(role="user", content=human.strip()))
        if reply:
            messages.append(Message(role="assistant", content=reply.strip()))
    if not messages or messages[-1].role != "assistant" or any(not m.content for m in messages):
        return None
    return tuple(messages)


def read_hh_pairs(path: Path, heldout: set[str], limit: int | None, seed: int) -> list[PreferencePair]:
    """hh-rlhf JSONL (``chosen``/``rejected`` transcripts) -> pairs that share every turn but the last,
    have at most ``MAX_MESSAGES`` messages and no held-out request; a seeded shuffle, then ``limit``."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            chosen, rejected = parse_transcript(record["chosen"]), parse_transcript(record["rejected"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: not an hh-rlhf record (chosen/rejected)") from None
        if chosen is None or rejected is None or len(chosen) > MAX_MESSAGES:
            continue
        if chosen[:-1] != rejected[:-1] or chosen[-1].content == rejected[-1].content:
            continue
        if request_key(EvalRow(conversation=chosen, side="response", unsafe=0)) in heldout:
            continue
        pairs.append(PreferencePair(chosen=chosen, rejected=rejected))
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def pair_examples(pairs: Sequence[PreferencePair], taxonomy: Taxonomy) -> list[TrainingExample]:
    """Chosen, rejected, chosen, ... as response-side examples (their ``safe`` target is never trained)."""
    return [
        TrainingExample(
            messages=side, side="response", taxonomy=taxonomy, unsafe=False, rule="pair", source="pair"
        )
        for pair in pairs
        for side in (pair.chosen, pair.rejected)
    ]


@dataclass
class PairFeatures:
    """The last layer's inputs at the verdict position of each pair's two replies (head trainer)."""

    chosen_residual: torch.Tensor
    chosen_attention: torch.Tensor
    rejected_residual: torch.Tensor
    rejected_attention: torch.Tensor

    def __len__(self) -> int:
        return len(self.chosen_residual)


def capture_pairs(model: Any, pairs: Sequence[PreferencePair], taxonomy: Taxonomy, fmt: Any, tokens: Any,
                  max_tokens: int) -> PairFeatures:  # fmt: skip
    """One forward per reply, as ``head.capture`` does for training rows; pairs that don't fit are refused."""
    from pipelines.finetune.head import capture, verdict_positions
    from pipelines.finetune.loop import split_examples

    examples = pair_examples(pairs, taxonomy)
    data = split_examples(examples, fmt, tokens, max_tokens)
    if len(data) != len(examples):
        raise InputError(f"{len(examples) - len(data)} pair replies do not fit --max-tokens {max_tokens}")
    feats = capture(model, data, tokens.pad_id, tokens.unsafe_id)
    at = verdict_positions(feats, (tokens.safe_id, tokens.unsafe_id))
    position = {int(feats.index[int(feats.example[p])]): p for p in torch.nonzero(at).flatten().tolist()}  # type: ignore[index]
    chosen = torch.tensor([position[2 * k] for k in range(len(pairs))])
    rejected = torch.tensor([position[2 * k + 1] for k in range(len(pairs))])
    return PairFeatures(feats.residual[chosen], feats.attention[chosen],
                        feats.residual[rejected], feats.attention[rejected])  # fmt: skip


def pair_loss(model: Any, pairs: PairFeatures, picked: torch.Tensor, verdict_ids: tuple[int, int]) -> Any:
    """``-log sigmoid(z_rejected - z_chosen)`` averaged over ``picked`` pairs; z = unsafe - safe logit."""
    from pipelines.finetune.head import head_logits

    safe, unsafe = verdict_ids

    def z(residual: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        logits = head_logits(model, residual[picked], attention[picked])
        return logits[:, unsafe] - logits[:, safe]

    rejected = z(pairs.rejected_residual, pairs.rejected_attention)
    margin = rejected - z(pairs.chosen_residual, pairs.chosen_attention)
    return -torch.nn.functional.logsigmoid(margin).mean()


def pair_features_for(model: Any, pairs: Sequence[PreferencePair], taxonomy: Any, fmt: Any, tokens: Any,
                      config: TrainConfig, features: Path | None) -> PairFeatures:  # fmt: skip
    """Pair features, cached beside ``features`` (``NAME.pairs.pt``) under a digest of the pairs' text."""
    import hashlib

    text = json.dumps([[p.model_dump(mode="json") for p in pairs], config.max_tokens, fmt.generation.value])
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = features.with_suffix(".pairs.pt") if features is not None else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.pop("digest", None) == digest:
            log.info("pair_features_reused", path=str(path))
            return PairFeatures(**saved)
    ranked = capture_pairs(model, pairs, taxonomy, fmt, tokens, config.max_tokens)
    log.info("pair_features_captured", pairs=len(ranked))
    if path is not None:
        torch.save({**ranked.__dict__, "digest": digest}, path)
    return ranked
