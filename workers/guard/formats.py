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

The shared layout (:class:`TemplatePromptFormat`, :class:`Template`, :class:`RenderedPrompt`) lives in
:mod:`workers.guard.format_layout`; this module declares each generation's templates and is the registry
(everything is re-exported here, so import from ``workers.guard.formats``).

No torch or transformers here: ``guardstream render-prompt`` imports this module and must start fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from types import MappingProxyType

from schemas.taxonomy import Generation
from workers.errors import PromptFormatError
from workers.guard.format_layout import (
    CONVERSATION_CLOSE,
    CONVERSATION_OPEN,
    ROLE_LABELS,
    SIDE_LABELS,
    PromptFormat,
    RenderedPrompt,
    Template,
    TemplatePromptFormat,
)
from workers.guard.neutralise import neutralise

__all__ = [
    "CONVERSATION_CLOSE",
    "CONVERSATION_OPEN",
    "FORMAT_CLASSES",
    "HF_MODEL_IDS",
    "LLAMA3_CUE",
    "LLAMA3_USER",
    "ROLE_LABELS",
    "SIDE_LABELS",
    "LlamaGuard1Format",
    "LlamaGuard2Format",
    "LlamaGuard3Format",
    "LlamaGuard3SmallFormat",
    "LlamaGuard4Format",
    "PromptFormat",
    "RenderedPrompt",
    "Template",
    "TemplatePromptFormat",
    "available_formats",
    "generation_for_model",
    "get_format",
    "neutralise",
]


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
