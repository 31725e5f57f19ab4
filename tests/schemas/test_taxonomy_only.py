"""``Taxonomy.only``: the one-category taxonomy of the 1-vs-all protocol, for each kind of taxonomy."""

from __future__ import annotations

import pytest

from schemas.taxonomy import Category, Generation, Taxonomy


def test_builtin_default_keeps_the_generation_wording() -> None:
    single = Taxonomy(generation=Generation.LG3).only("S2")
    assert single == Taxonomy(generation=Generation.LG3, codes=("S2",))
    assert [c.name for c in single.resolve()] == ["Non-Violent Crimes"]


def test_renumbered_subset_maps_the_final_code_back_to_the_original() -> None:
    renumbered = Taxonomy(generation=Generation.LG3, codes=("S2", "S10"), renumber=True)
    assert [c.code for c in renumbered.resolve()] == ["S1", "S2"]
    assert renumbered.only("S2") == Taxonomy(generation=Generation.LG3, codes=("S10",))


def test_custom_taxonomy_keeps_the_category_itself() -> None:
    spoilers = Category(code="C2", name="Spoilers", description="Plot twists.")
    custom = Taxonomy(categories=(Category(code="C1", name="Bullying"), spoilers))
    assert custom.only("C2") == Taxonomy(categories=(spoilers,))


def test_a_code_the_taxonomy_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="'S99'"):
        Taxonomy(generation=Generation.LG3).only("S99")


def test_resolution_is_computed_once_per_taxonomy() -> None:
    taxonomy = Taxonomy(generation=Generation.LG3, codes=("S1", "S3"), renumber=True)
    assert (
        taxonomy.resolve() is Taxonomy(generation=Generation.LG3, codes=("S1", "S3"), renumber=True).resolve()
    )
