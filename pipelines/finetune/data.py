"""Training examples for a Llama Guard-format classifier, with the augmentations of Meta's fine-tuning
data formatter (llama-recipes ``finetuning_data_formatter.py``), re-implemented for our schemas.

Why each rule exists (the Llama Guard paper, §3 and §4.2): a guard must follow the taxonomy *in its prompt*,
not a taxonomy memorised in its weights. So besides the plain example under the full default taxonomy:

- **shuffle**: the categories appear in a random order and are renumbered ``S1..Sn`` in that order, so a
  code means "the n-th line of this prompt", never a fixed harm;
- **drop non-violated**: a copy lists a random subset of the categories, always keeping the violated ones;
  the label is unchanged. This is what makes removing categories at inference work zero-shot;
- **drop violated**: a copy of an unsafe example whose violated categories are all removed (plus some
  others) becomes ``safe`` — the content is only unsafe under categories the prompt no longer lists;
- **both sides**: a response row whose prompt label is known also yields a prompt-side example, and an
  unsafe prompt yields a response-side example where the agent refuses (``safe``);
- **multi-turn**: some examples get an earlier safe exchange in front, so the model learns to judge the
  *last* turn only.
- **voice** (guardstream's, off unless ``voice_sources`` names a dataset): a prompt-side *statement* (a
  ToxiGen sentence, not a request) also yields a response-side example where the agent says it, with the
  same label. Every other response example separates refusal from compliance; these separate harmful from
  harmless *compliant* text, which is what response sets such as BeaverTails and PKU-SafeRLHF label.

Rows whose unsafe label has no known code (datasets without categories) keep only what is sound: the
verdict is trained, the codes are not (``codes_known=False``), and the two dropping rules skip them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from pipelines.evaluate.rows import EvalRow
from schemas.events import Message, Side
from schemas.taxonomy import Category, Taxonomy

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request. If you're struggling, please reach out to someone you trust.",
    "Sorry, I won't provide that. Is there something else I can help you with?",
    "I cannot help with this because it could cause harm.",
)
ACKNOWLEDGEMENTS = (
    "Sure, happy to help with that.",
    "Here is a short answer to your question.",
    "Good question! Let me explain.",
)
VOICE_REQUESTS = (
    "What do you think about {group}?",
    "Tell me something about {group}.",
    "Write one sentence about {group}.",
    "What's your honest opinion of {group}?",
    "Describe {group} in a sentence.",
    "Say what you really think of {group}.",
)
"""The user turn in front of a voiced statement: a neutral request, so the label rests on the reply."""
GROUPS = {
    "lgbtq": "LGBTQ people", "mental_disability": "people with mental disabilities", "women": "women",
    "physical_disability": "people with physical disabilities", "middle_east": "people from the Middle East",
    "muslim": "Muslims", "jewish": "Jewish people", "native_american": "Native Americans",
    "trans": "trans people", "asian": "Asian people", "black": "Black people", "chinese": "Chinese people",
    "latino": "Latino people", "mexican": "Mexican people",
}  # fmt: skip
"""ToxiGen target groups (``toxigen:<kind>_<group>`` sources); any other group reads ``<group> people``."""


def dataset_of(row: EvalRow) -> str:
    """The dataset a row came from: its ``source`` up to the first ``:`` (``aegis:131`` -> ``aegis``)."""
    return row.source.split(":", 1)[0]


class AugmentConfig(BaseModel):
    """Which augmentation rules run; every rule is on by default, as in Meta's recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shuffle_categories: bool = Field(default=True, description="Augmented copies shuffle and renumber.")
    drop_nonviolated: bool = Field(default=True, description="Add a copy without some non-violated ones.")
    drop_violated: bool = Field(default=True, description="Add a safe copy without the violated ones.")
    both_sides: bool = Field(default=True, description="Derive the other side's example where sound.")
    multi_turn_rate: float = Field(default=0.2, ge=0.0, le=1.0, description="Share given a prior exchange.")
    refusal_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of unsafe prompts that also yield a refused response."
    )
    voice_sources: tuple[str, ...] = Field(
        default=(), description="Datasets of statements whose prompt rows are also said by the agent."
    )
    seed: int = 0


class TrainingExample(BaseModel):
    """What one training sequence says: this conversation, under this taxonomy, should get this answer."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    side: Side
    taxonomy: Taxonomy
    unsafe: bool
    codes: tuple[str, ...] = Field(default=(), description="Violated codes in this taxonomy's numbering.")
    codes_known: bool = Field(default=True, description="False: train the verdict token, not the codes.")
    rule: str = Field(default="base", description="Which rule produced it, for counting and tests.")
    source: str = Field(
        default="", description="Dataset it came from (``refusal``/``voice`` for those rules), for weighting."
    )

    def answer(self) -> str:
        """The trained answer text: ``safe`` or ``unsafe\\nS2,S5`` (Llama Guard grammar)."""
        if not self.unsafe:
            return "safe"
        return "unsafe\n" + ",".join(self.codes) if self.codes else "unsafe"


def _code_key(code: str) -> tuple[str, int]:
    digits = code.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return code[: len(code) - len(digits)], int(digits)


def subset_taxonomy(
    categories: Sequence[Category], keep: Sequence[int], violated: set[int], prefix: str
) -> tuple[Taxonomy, tuple[str, ...]]:
    """A custom taxonomy of ``categories[i] for i in keep`` (in that order) renumbered ``prefix1..n``,
    and the new codes of the kept violated ones."""
    renamed = tuple(categories[i].model_copy(update={"code": f"{prefix}{n + 1}"}) for n, i in enumerate(keep))
    codes = tuple(sorted((f"{prefix}{n + 1}" for n, i in enumerate(keep) if i in violated), key=_code_key))
    return Taxonomy(categories=renamed), codes


class Augmenter:
    """Turns eval rows into training examples under one base taxonomy, deterministically for a seed."""

    def __init__(
        self,
        base: Taxonomy,
        category_map: Mapping[str, tuple[str, ...]] | None,
        config: AugmentConfig | None = None,
    ) -> None:
        self.base = base
        self.categories = base.resolve()
        self.prefix = _code_key(self.categories[0].code)[0]
        self.index = {c.code: i for i, c in enumerate(self.categories)}
        self.category_map = category_map
        self.config = config or AugmentConfig()
        self.rng = random.Random(self.config.seed)
        self._prior: list[tuple[Message, Message]] = []

    def violated(self, row: EvalRow) -> set[int] | None:
        """Indices of the row's violated categories; None when unsafe with no code this taxonomy has."""
        found = {self.index[c] for c in row.codes(self.category_map) if c in self.index}
        if row.unsafe and not found:
            return None
        return found if row.unsafe else set()

    def expand(self, rows: Sequence[EvalRow]) -> list[TrainingExample]:
        """Every example the rules produce for ``rows``, in a seeded, reproducible order."""
        self._prior = _prior_exchanges(rows)
        out: list[TrainingExample] = []
        for row in rows:
            for side_row in self._sides(row):
                out.extend(self._one_row(side_row))
        self.rng.shuffle(out)
        return out

    def _sides(self, row: EvalRow) -> list[EvalRow]:
        rows = [row]
        if not self.config.both_sides:
            return rows
        msgs = row.messages()
        if row.side == "response" and row.prompt_unsafe is not None:
            last_user = max(i for i, m in enumerate(msgs) if m.role == "user")
            cats = row.categories if row.prompt_unsafe else ()
            rows.append(
                EvalRow(
                    conversation=msgs[: last_user + 1],
                    side="prompt",
                    unsafe=row.prompt_unsafe,
                    categories=cats,
                    source=row.source,
                )
            )
        if row.side == "prompt" and row.unsafe and self.rng.random() < self.config.refusal_rate:
            reply = Message(role="assistant", content=self.rng.choice(REFUSALS))
            rows.append(EvalRow(conversation=(*msgs, reply), side="response", unsafe=0, source="refusal"))
        if row.side == "prompt" and len(msgs) == 1 and dataset_of(row) in self.config.voice_sources:
            rows.append(self._voiced(row, msgs[0]))
        return rows

    def _voiced(self, row: EvalRow, statement: Message) -> EvalRow:
        """The agent says the user's statement, after a neutral request about the statement's group."""
        group = row.source.split(":", 1)[-1].removesuffix("_sentences").partition("_")[2]
        named = GROUPS.get(group, f"{group.replace('_', ' ')} people") if group else "this topic"
        ask = Message(role="user", content=self.rng.choice(VOICE_REQUESTS).format(group=named))
        reply = Message(role="assistant", content=statement.content)
        return EvalRow(
            conversation=(ask, reply), side="response", unsafe=row.unsafe, categories=row.categories,
            source=f"voice:{row.source}",
        )  # fmt: skip

    def _one_row(self, row: EvalRow) -> list[TrainingExample]:
        msgs = self._maybe_prior(row.messages())
        violated = self.violated(row)
        rule = dataset_of(row) if dataset_of(row) in ("refusal", "voice") else "base"
        every = list(range(len(self.categories)))
        if violated is None:
            out = [self._example(msgs, row, self.base, (), codes_known=False, rule=rule)]
            if self.config.shuffle_categories:
                order = self.rng.sample(every, len(every))
                taxonomy, _ = subset_taxonomy(self.categories, order, set(), self.prefix)
                out.append(self._example(msgs, row, taxonomy, (), codes_known=False, rule="shuffle"))
            return out
        base_codes = tuple(sorted((self.categories[i].code for i in violated), key=_code_key))
        out = [self._example(msgs, row, self.base, base_codes, rule=rule)]
        nonviolated = [i for i in every if i not in violated]
        if self.config.drop_nonviolated:
            n_drop = self.rng.randint(0, len(nonviolated))
            n_drop -= int(n_drop == len(every))
            dropped = set(self.rng.sample(nonviolated, n_drop))
            out.append(
                self._subset(msgs, row, [i for i in every if i not in dropped], violated, "drop_nonviolated")
            )
        if self.config.drop_violated and violated and nonviolated:
            n_drop = self.rng.randint(0, len(nonviolated) - 1)
            dropped = violated | set(self.rng.sample(nonviolated, n_drop))
            kept = [i for i in every if i not in dropped]
            out.append(self._subset(msgs, row, kept, set(), "drop_violated", force_safe=True))
        return out

    def _subset(
        self,
        msgs: tuple[Message, ...],
        row: EvalRow,
        kept: list[int],
        violated: set[int],
        rule: str,
        force_safe: bool = False,
    ) -> TrainingExample:
        if self.config.shuffle_categories:
            kept = self.rng.sample(kept, len(kept))
        taxonomy, codes = subset_taxonomy(self.categories, kept, violated, self.prefix)
        unsafe = False if force_safe else bool(row.unsafe)
        return TrainingExample(
            messages=msgs, side=row.side, taxonomy=taxonomy, unsafe=unsafe, codes=codes, rule=rule,
            source=dataset_of(row),
        )  # fmt: skip

    def _example(
        self,
        msgs: tuple[Message, ...],
        row: EvalRow,
        taxonomy: Taxonomy,
        codes: tuple[str, ...],
        *,
        codes_known: bool = True,
        rule: str,
    ) -> TrainingExample:
        return TrainingExample(
            messages=msgs,
            side=row.side,
            taxonomy=taxonomy,
            unsafe=bool(row.unsafe),
            codes=codes,
            codes_known=codes_known,
            rule=rule,
            source=dataset_of(row),
        )

    def _maybe_prior(self, msgs: tuple[Message, ...]) -> tuple[Message, ...]:
        if not self._prior or msgs[0].role != "user" or self.rng.random() >= self.config.multi_turn_rate:
            return msgs
        return (*self.rng.choice(self._prior), *msgs)


def _prior_exchanges(rows: Sequence[EvalRow]) -> list[tuple[Message, Message]]:
    """Safe (user, agent) pairs to put in front of other examples: safe prompts with a short reply."""
    pairs: list[tuple[Message, Message]] = []
    for n, row in enumerate(rows):
        msgs = row.messages()
        if row.unsafe or row.side != "prompt" or len(msgs) != 1 or len(msgs[0].content) > 400:
            continue
        reply = Message(role="assistant", content=ACKNOWLEDGEMENTS[n % len(ACKNOWLEDGEMENTS)])
        pairs.append((msgs[0], reply))
    return pairs
