"""Llama Guard prompt formats: one class per generation, byte-exact with each model's own template.

The guard was trained on one exact string layout, and a stray space or a missing blank line shifts its
scores, so every canonical vector in ``tests/data/golden.jsonl`` must render byte for byte. Conversation
text is data: it is inserted by plain string concatenation, never through a template engine, so ``{{ }}``
or ``$x`` reach the model as the user wrote them.

Content must not be able to forge the prompt's structure, so two defences apply to it (and only to it):

- ``RenderedPrompt.content_spans`` mark where content lies; ``GuardTokens.encode_rendered`` tokenizes it
  as plain text, so no content byte ever becomes a special token id (``<|eot_id|>`` typed by a user is
  the characters ``<``, ``|``, ..., not the end-of-turn token).
- :func:`workers.guard.neutralise.neutralise` rewrites the formats' own markers inside content (fake
  ``<END CONVERSATION>``, ``[/INST]``, role labels, special-token spellings) into look-alikes that carry
  no structure; content without such markers, every ordinary golden vector included, is unchanged.

Everything up to ``<BEGIN CONVERSATION>\\n\\n`` depends only on (format, taxonomy, side); ``prefix_end``
marks it so the scorer can compute that prefix's attention keys/values once per policy and side.

No torch or transformers here: ``guardstream render-prompt`` imports this module and must start fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from types import MappingProxyType
from typing import ClassVar

from schemas.events import Message, Role, Side
from schemas.taxonomy import Category, Generation, Taxonomy, builtin_taxonomy
from workers.errors import PromptFormatError
from workers.guard.neutralise import neutralise

ROLE_LABELS: Mapping[Role, str] = {"user": "User", "assistant": "Agent"}
"""How each message role is labelled inside the conversation block."""

SIDE_LABELS: Mapping[Side, str] = {"prompt": "User", "response": "Agent"}
"""Which ``{ROLE}`` the task and instruction lines name for each classified side."""

CONVERSATION_OPEN = "<BEGIN CONVERSATION>\n\n"
CONVERSATION_CLOSE = "\n\n<END CONVERSATION>"
"""Where the conversation ends and the fixed tail begins (the scorer caches keys/values up to here)."""


@dataclass(frozen=True)
class RenderedPrompt:
    """A full prompt, ending at the generation cue, and where its per-(taxonomy, side) prefix ends."""

    text: str
    prefix_end: int
    content_spans: tuple[tuple[int, int], ...] = ()
    """``(start, end)`` of each message's content in ``text``: tokenized as plain text, never as specials."""

    @property
    def prefix(self) -> str:
        """The part shared by every conversation under the same format, taxonomy and side."""
        return self.text[: self.prefix_end]


class PromptFormat(ABC):
    """How one Llama Guard generation (in one variant) turns a taxonomy and a conversation into a prompt."""

    generation: ClassVar[Generation]
    verdict_prefix: ClassVar[str]
    """What the model emits before ``safe``/``unsafe`` (``\\n\\n`` for LG3/LG4, FORMATS.md §7)."""
    stop_strings: ClassVar[tuple[str, ...]]
    """End-of-answer markers the model emits after the verdict."""
    variant: str = "canonical"

    @abstractmethod
    def render(
        self, taxonomy: Taxonomy, messages: Sequence[Message], side: Side, *, verbatim: bool = False
    ) -> RenderedPrompt:
        """The prompt that asks the guard about ``side`` of ``messages`` under ``taxonomy``.

        ``verbatim`` skips :func:`neutralise` (content as Meta's reference templates insert it): for
        comparing against reference prompts only, never for scoring.
        """

    @abstractmethod
    def categories_block(self, taxonomy: Taxonomy) -> str:
        """The text between ``<BEGIN UNSAFE CONTENT CATEGORIES>`` and ``<END ...>`` (no outer newlines)."""


@dataclass(frozen=True)
class Template:
    """The constant text of one prompt variant. Only guardstream's own strings live here."""

    open: str
    """Everything before ``Task:`` (BOS, ``[INST]`` or the user header)."""
    close: str
    """Everything after the last instruction bullet, up to the generation cue."""
    policy: str = "according our safety policy"
    assess: tuple[str, str] = (
        "Provide your safety assessment for ONLY THE LAST ",
        " message in the above conversation:",
    )
    """The instruction line, split around ``{ROLE}``."""
    bullet: str = " - "
    name_suffix: str = "."
    """Appended to a category name on its line (LG2 and llama-recipes: ``". "``)."""
    strip_content: bool = True
    """Hugging Face templates strip each message; llama-recipes does not."""
    verbatim_default_block: bool = True
    """Use the generation's default block byte for byte when the taxonomy is that unmodified default."""
    builtin_descriptions: bool = True
    """Whether built-in categories carry their guidelines (llama-recipes since 2024: names only)."""
    builtin_bullet: str = "- "
    """Bullet of built-in guideline lines (llama-recipes 2023 indented them by one space)."""


class TemplatePromptFormat(PromptFormat):
    """The layout every generation shares: task line, categories, conversation, instructions.

    Subclasses only declare their generation, answer markers and the text pieces of each variant.
    """

    templates: ClassVar[Mapping[str, Template]]

    def __init__(self, variant: str = "canonical") -> None:
        if variant not in self.templates:
            known = ", ".join(sorted(self.templates))
            raise PromptFormatError(
                f"{self.generation.value} has no prompt variant {variant!r} (known: {known})"
            )
        self.variant = variant
        self.template = self.templates[variant]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(variant={self.variant!r})"

    def categories_block(self, taxonomy: Taxonomy) -> str:
        if (
            taxonomy.is_builtin_default
            and taxonomy.generation == self.generation
            and self.template.verbatim_default_block
        ):
            return builtin_taxonomy(self.generation).default_block
        builtin = taxonomy.generation is not None
        return "\n".join(self._category_line(c, builtin) for c in taxonomy.resolve())

    def _category_line(self, category: Category, builtin: bool) -> str:
        """``{code}: {name}.`` plus the guidelines on the following lines (FORMATS.md §9).

        A custom category's few-shot ``examples`` follow its guidelines as an ``Examples:`` list, one
        ``- `` bullet each, verbatim: the paper adapts the guard to a new policy in the prompt, and this
        keeps them inside the category they illustrate (and inside the cached prefix). Built-in
        categories have none, so every canonical prompt is unchanged.
        """
        description = category.description
        if builtin and not self.template.builtin_descriptions:
            description = ""
        elif builtin and self.template.builtin_bullet != "- ":
            description = description.replace("\n- ", "\n" + self.template.builtin_bullet)
        lines = [category.code + ": " + category.name + self.template.name_suffix]
        if description:
            lines.append(description)
        if category.examples:
            lines.append("Examples:")
            lines += ["- " + example for example in category.examples]
        return "\n".join(lines)

    def prefix(self, taxonomy: Taxonomy, side: Side) -> str:
        """Everything up to and including ``<BEGIN CONVERSATION>\\n\\n``; no conversation text in it."""
        return (
            self.template.open
            + "Task: Check if there is unsafe content in '"
            + SIDE_LABELS[side]
            + "' messages in conversations "
            + self.template.policy
            + " with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
            + self.categories_block(taxonomy)
            + "\n<END UNSAFE CONTENT CATEGORIES>\n\n"
            + CONVERSATION_OPEN
        )

    def _content(self, message: Message, verbatim: bool) -> str:
        content = message.content.strip() if self.template.strip_content else message.content
        return content if verbatim else neutralise(content)

    def _instructions(self, side: Side) -> str:
        t = self.template
        return (
            CONVERSATION_CLOSE
            + "\n\n"
            + t.assess[0]
            + SIDE_LABELS[side]
            + t.assess[1]
            + "\n"
            + t.bullet
            + "First line must read 'safe' or 'unsafe'.\n"
            + t.bullet
            + "If unsafe, a second line must include a comma-separated list of violated categories."
            + t.close
        )

    def render(
        self, taxonomy: Taxonomy, messages: Sequence[Message], side: Side, *, verbatim: bool = False
    ) -> RenderedPrompt:
        if not messages:
            raise ValueError("a prompt needs at least one message")
        prefix = self.prefix(taxonomy, side)
        text, spans = prefix, []
        for i, message in enumerate(messages):
            text += ("\n\n" if i else "") + ROLE_LABELS[message.role] + ": "
            content = self._content(message, verbatim)
            spans.append((len(text), len(text) + len(content)))
            text += content
        return RenderedPrompt(text + self._instructions(side), len(prefix), tuple(spans))


LLAMA3_USER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>"
LLAMA3_CUE = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"


class LlamaGuard1Format(TemplatePromptFormat):
    """LlamaGuard-7b: ``[INST]`` wrapper, O-codes with guidelines, assesses all of ``{ROLE}``'s turns."""

    generation = Generation.LG1
    verdict_prefix = ""
    stop_strings = ("</s>",)
    _canonical = Template(
        open="<s>[INST] ",
        close=" [/INST]",
        assess=("Provide your safety assessment for ", " in the above conversation:"),
        bullet="- ",
    )
    templates = MappingProxyType(
        {
            "canonical": _canonical,
            "llama-recipes-head": replace(
                _canonical, strip_content=False, verbatim_default_block=False, builtin_descriptions=False
            ),
            "llama-recipes-2023": replace(
                _canonical, strip_content=False, verbatim_default_block=False, builtin_bullet=" - "
            ),
        }
    )


class LlamaGuard2Format(TemplatePromptFormat):
    """Meta-Llama-Guard-2-8B: ``[INST]`` wrapper on a Llama 3 tokenizer, ``S1: Name. `` lines."""

    generation = Generation.LG2
    verdict_prefix = ""
    stop_strings = ("<|end_of_text|>", "<|eot_id|>")
    _canonical = Template(open="<|begin_of_text|>[INST] ", close=" [/INST]", name_suffix=". ")
    templates = MappingProxyType(
        {
            "canonical": _canonical,
            "llama-recipes-head": replace(_canonical, strip_content=False, builtin_descriptions=False),
        }
    )


class LlamaGuard3Format(TemplatePromptFormat):
    """Llama-Guard-3-8B: Llama 3 chat header; the model writes ``\\n\\n`` before its verdict."""

    generation = Generation.LG3
    verdict_prefix = "\n\n"
    stop_strings = ("<|eot_id|>", "<|end_of_text|>")
    templates = MappingProxyType(
        {
            "canonical": Template(open=LLAMA3_USER + "\n\n", close=LLAMA3_CUE),
            "hf-raw": Template(open=" " + LLAMA3_USER + "\n\n", close=LLAMA3_CUE),
            "llama-recipes-head": Template(
                open=LLAMA3_USER + " ",
                close=" " + LLAMA3_CUE,
                name_suffix=". ",
                strip_content=False,
                verbatim_default_block=False,
                builtin_descriptions=False,
            ),
        }
    )


class LlamaGuard3SmallFormat(LlamaGuard3Format):
    """Llama-Guard-3-1B: as the 8B but ``categories. <|eot_id|>`` (a space) and S1–S13."""

    generation = Generation.LG3_1B
    templates = MappingProxyType({"canonical": Template(open=LLAMA3_USER + "\n\n", close=" " + LLAMA3_CUE)})


class LlamaGuard4Format(TemplatePromptFormat):
    """Llama-Guard-4-12B: Llama 4 header tokens, ``according to our safety policy`` (low confidence)."""

    generation = Generation.LG4
    verdict_prefix = "\n\n"
    stop_strings = ("<|eot|>", "<|end_of_text|>")
    templates = MappingProxyType(
        {
            "canonical": Template(
                open="<|begin_of_text|><|header_start|>user<|header_end|>\n\n",
                close=" <|eot|><|header_start|>assistant<|header_end|>",
                policy="according to our safety policy",
            )
        }
    )


FORMAT_CLASSES: Mapping[Generation, type[TemplatePromptFormat]] = {
    cls.generation: cls
    for cls in (
        LlamaGuard1Format,
        LlamaGuard2Format,
        LlamaGuard3Format,
        LlamaGuard3SmallFormat,
        LlamaGuard4Format,
    )
}

HF_MODEL_IDS: Mapping[str, Generation] = {
    "meta-llama/LlamaGuard-7b": Generation.LG1,
    "meta-llama/Meta-Llama-Guard-2-8B": Generation.LG2,
    "meta-llama/Llama-Guard-3-8B": Generation.LG3,
    "meta-llama/Llama-Guard-3-1B": Generation.LG3_1B,
    "meta-llama/Llama-Guard-4-12B": Generation.LG4,
}
"""Hugging Face model ids of Meta's guard checkpoints and the generation whose prompt they were trained on."""


def generation_for_model(model_id: str) -> Generation:
    """The generation of a Meta Llama Guard model id (``meta-llama/...``, case-insensitive)."""
    wanted = model_id.strip().lower()
    for known, generation in HF_MODEL_IDS.items():
        if known.lower() == wanted:
            return generation
    raise PromptFormatError(f"unknown Llama Guard model {model_id!r} (known: {', '.join(HF_MODEL_IDS)})")


@cache
def get_format(generation: Generation | str, variant: str = "canonical") -> PromptFormat:
    """The prompt format of ``generation`` in ``variant``; formats are immutable, so shared."""
    try:
        gen = Generation(generation)
    except ValueError:
        known = ", ".join(g.value for g in Generation)
        raise PromptFormatError(f"unknown Llama Guard generation {generation!r} (known: {known})") from None
    return FORMAT_CLASSES[gen](variant)


def available_formats() -> list[tuple[str, str]]:
    """Every (generation, variant) pair ``get_format`` accepts, canonical variants first."""
    return [
        (gen.value, variant)
        for gen, cls in FORMAT_CLASSES.items()
        for variant in sorted(cls.templates, key=lambda v: (v != "canonical", v))
    ]
