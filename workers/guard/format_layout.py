"""The layout every Llama Guard prompt shares, and the prompt a format renders.

:class:`TemplatePromptFormat` puts the pieces together (task line, categories, conversation, instructions)
and :class:`Template` holds the constant text of one variant; :mod:`workers.guard.formats` declares each
generation's templates and looks formats up. The guarantees (byte-exact rendering, content as data,
``content_spans`` and :func:`~workers.guard.neutralise.neutralise` against forged structure, ``prefix_end``)
are described there.

No torch or transformers here: ``guardstream render-prompt`` imports this module and must start fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
