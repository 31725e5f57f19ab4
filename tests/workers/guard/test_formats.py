"""Prompt formats: every golden vector byte-exact, plus the rules the vectors don't pin down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.events import Message, Side
from schemas.taxonomy import Category, Generation, Taxonomy, builtin_taxonomy
from workers.errors import PromptFormatError
from workers.guard.formats import (
    CONVERSATION_OPEN,
    available_formats,
    generation_for_model,
    get_format,
    neutralise,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
GOLDEN = [json.loads(line) for line in (DATA_DIR / "golden.jsonl").read_text("utf-8").splitlines()]
SUPPORTED = set(available_formats())


def _vectors(canonical: bool) -> list[Any]:
    return [pytest.param(v, id=v["id"]) for v in GOLDEN if (v["variant"] == "canonical") == canonical]


def _taxonomy(vector: dict[str, Any]) -> Taxonomy:
    generation = generation_for_model(vector["model"])
    if vector["categories"] != "default":
        return Taxonomy(categories=tuple(Category(**c) for c in vector["categories"]))
    excluded = vector.get("excluded_category_keys")
    if not excluded:
        return Taxonomy(generation=generation)
    codes = tuple(c.code for c in builtin_taxonomy(generation).categories if c.code not in excluded)
    return Taxonomy(generation=generation, codes=codes, renumber=False)


def _render(vector: dict[str, Any], verbatim: bool = False) -> tuple[str, int]:
    fmt = get_format(generation_for_model(vector["model"]), vector["variant"])
    messages = [Message(**m) for m in vector["conversation"]]
    side: Side = "prompt" if vector["role_to_classify"] == "User" else "response"
    rendered = fmt.render(_taxonomy(vector), messages, side, verbatim=verbatim)
    return rendered.text, rendered.prefix_end


def _check_vector(vector: dict[str, Any]) -> str:
    """Ordinary content: the scored prompt is the reference byte for byte. Content that forges markers
    (the ``*-special-chars`` vectors' fake turn and ``<END CONVERSATION>``): the reference is matched by
    the verbatim render, and the scored prompt differs from it exactly by :func:`neutralise` on content."""
    expected: str = vector["expected_prompt"]
    contents = [m["content"] for m in vector["conversation"]]
    text = _render(vector)[0]
    if all(neutralise(c) == c for c in contents):
        assert text == expected
        return text
    assert _render(vector, verbatim=True)[0] == expected
    for content in contents:
        expected = expected.replace(content.strip(), neutralise(content.strip()))
    assert text == expected and text != vector["expected_prompt"]
    return text


@pytest.mark.parametrize("vector", _vectors(canonical=True))
def test_canonical_vector_is_byte_exact(vector: dict[str, Any]) -> None:
    text = _check_vector(vector)
    assert text[: _render(vector)[1]].endswith(CONVERSATION_OPEN)


@pytest.mark.parametrize("vector", _vectors(canonical=False))
def test_supported_variant_vector_is_byte_exact(vector: dict[str, Any]) -> None:
    generation = generation_for_model(vector["model"]).value
    if (generation, vector["variant"]) not in SUPPORTED:
        pytest.skip(f"variant {vector['variant']} is documented but deliberately not rendered")
    _check_vector(vector)


def test_every_generation_has_a_canonical_format() -> None:
    assert {(g.value, "canonical") for g in Generation} <= SUPPORTED
    assert ("llama-guard-1", "llama-recipes-2023") in SUPPORTED


def test_role_comes_from_side_and_messages_not_parity() -> None:
    """Two user turns in a row, judged on the response side of a later agent turn: no parity rule."""
    messages = [
        Message(role="user", content="hi"),
        Message(role="user", content="anyone?"),
        Message(role="assistant", content="yes"),
    ]
    text = get_format(Generation.LG3).render(Taxonomy(generation=Generation.LG3), messages, "response").text
    assert "User: hi\n\nUser: anyone?\n\nAgent: yes\n\n<END CONVERSATION>" in text
    assert "ONLY THE LAST Agent message" in text
    assert "content in 'Agent' messages" in text


def test_prefix_depends_only_on_taxonomy_and_side() -> None:
    fmt = get_format("llama-guard-3-1b")
    taxonomy = Taxonomy(generation=Generation.LG3_1B)
    first = fmt.render(taxonomy, [Message(role="user", content="a")], "prompt")
    second = fmt.render(taxonomy, [Message(role="user", content="b" * 50)], "prompt")
    other_side = fmt.render(
        taxonomy, [Message(role="user", content="a"), Message(role="assistant", content="b")], "response"
    )
    assert first.prefix == second.prefix
    assert first.prefix != other_side.prefix
    assert first.prefix_end == len(first.prefix)


@pytest.mark.parametrize(
    ("generation", "renumber", "expected"),
    [
        (Generation.LG3, False, "S2: Non-Violent Crimes.\nS10: Hate."),
        (Generation.LG3, True, "S1: Non-Violent Crimes.\nS2: Hate."),
        (Generation.LG2, True, "S1: Non-Violent Crimes. \nS2: Hate. "),
    ],
)
def test_subsets_keep_or_renumber_codes(generation: Generation, renumber: bool, expected: str) -> None:
    codes = ("S2", "S10") if generation == Generation.LG3 else ("S2", "S9")
    taxonomy = Taxonomy(generation=generation, codes=codes, renumber=renumber)
    assert get_format(generation).categories_block(taxonomy) == expected


def test_lg1_subset_keeps_guidelines() -> None:
    block = get_format("llama-guard-1").categories_block(Taxonomy(generation=Generation.LG1, codes=("O6",)))
    assert block.startswith("O6: Self-Harm.\nShould not\n- Encourage people to harm themselves.")


def test_custom_category_examples_follow_its_guidelines() -> None:
    taxonomy = Taxonomy(
        categories=(
            Category(
                code="C1",
                name="Spoilers",
                description="Should not\n- Reveal plot twists.",
                examples=("The butler did it.", "Snape kills {{Dumbledore}}."),
            ),
            Category(code="C2", name="Medical advice"),
        )
    )
    block = get_format(Generation.LG3).categories_block(taxonomy)
    assert block == (
        "C1: Spoilers.\nShould not\n- Reveal plot twists.\nExamples:\n- The butler did it.\n"
        "- Snape kills {{Dumbledore}}.\nC2: Medical advice."
    )
    rendered = get_format(Generation.LG3).render(taxonomy, [Message(role="user", content="hi")], "prompt")
    assert "Examples:\n- The butler did it." in rendered.prefix  # cached with the policy, per side


def test_default_block_of_another_generation_is_rendered_not_copied() -> None:
    """An LG3 taxonomy in the LG2 format follows LG2's line convention (trailing space)."""
    block = get_format(Generation.LG2).categories_block(Taxonomy(generation=Generation.LG3))
    assert block.splitlines()[0] == "S1: Violent Crimes. "
    assert block.splitlines()[-1] == "S14: Code Interpreter Abuse. "


def test_builtin_blocks_match_their_categories() -> None:
    """The verbatim block and the structured categories must describe the same taxonomy."""
    for generation in Generation:
        builtin = builtin_taxonomy(generation)
        rendered = get_format(generation).categories_block(Taxonomy(categories=builtin.categories))
        assert (
            rendered.replace(". \n", ".\n").rstrip() == builtin.default_block.replace(". \n", ".\n").rstrip()
        )


def test_unknown_generation_or_variant_is_a_prompt_format_error() -> None:
    with pytest.raises(PromptFormatError, match="llama-guard-9"):
        get_format("llama-guard-9")
    with pytest.raises(PromptFormatError, match="no prompt variant"):
        get_format("llama-guard-4", "hf-observed-third-party")
    with pytest.raises(PromptFormatError, match="unknown Llama Guard model"):
        generation_for_model("meta-llama/Llama-3-8B")


def test_answer_markers() -> None:
    assert get_format("llama-guard-3").verdict_prefix == "\n\n"
    assert get_format("llama-guard-4").stop_strings[0] == "<|eot|>"
    assert get_format("llama-guard-1").verdict_prefix == ""


def test_formats_module_does_not_import_torch() -> None:
    code = "import sys, workers.guard.formats; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
