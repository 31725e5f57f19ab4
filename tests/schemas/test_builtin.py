"""The built-in Llama Guard taxonomies shipped as data in ``schemas/builtin/``."""

from __future__ import annotations

import pytest

from schemas.taxonomy import Generation, Taxonomy, builtin_taxonomy

EXPECTED = {
    Generation.LG1: ("O", 6, "Self-Harm"),
    Generation.LG2: ("S", 11, "Sexual Content"),
    Generation.LG3: ("S", 14, "Code Interpreter Abuse"),
    Generation.LG3_1B: ("S", 13, "Elections"),
    Generation.LG4: ("S", 14, "Code Interpreter Abuse"),
}


@pytest.mark.parametrize("generation", list(Generation))
def test_builtin_codes_are_contiguous_with_the_right_prefix(generation: Generation) -> None:
    prefix, count, last_name = EXPECTED[generation]
    builtin = builtin_taxonomy(generation)
    assert builtin.generation == generation
    assert builtin.code_prefix == prefix
    assert [c.code for c in builtin.categories] == [f"{prefix}{i}" for i in range(1, count + 1)]
    assert builtin.categories[-1].name == last_name
    assert builtin.default_block.startswith(f"{prefix}1: ")
    assert Taxonomy(generation=generation).resolve() == builtin.categories


def test_prompt_names_not_model_card_names() -> None:
    names = {c.name for c in builtin_taxonomy(Generation.LG3).categories}
    assert {"Sex Crimes", "Child Exploitation", "Self-Harm"} <= names
    assert not {"Sex-Related Crimes", "Child Sexual Exploitation", "Suicide & Self-Harm"} & names


def test_only_lg1_carries_guidelines() -> None:
    assert all(c.description.startswith("Should not\n") for c in builtin_taxonomy(Generation.LG1).categories)
    for generation in (Generation.LG2, Generation.LG3, Generation.LG3_1B, Generation.LG4):
        assert all(c.description == "" for c in builtin_taxonomy(generation).categories)


def test_default_blocks_keep_their_invisible_details() -> None:
    assert builtin_taxonomy(Generation.LG1).default_block.startswith("O1: Violence and Hate. \nShould not\n")
    assert builtin_taxonomy(Generation.LG2).default_block.endswith("S11: Sexual Content. ")
    assert builtin_taxonomy(Generation.LG3).default_block.endswith("S14: Code Interpreter Abuse.")
