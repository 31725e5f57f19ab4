"""Safety taxonomies: the numbered categories a Llama Guard prompt lists.

A taxonomy is either a Llama Guard generation's built-in default (optionally a subset of its codes) or a
custom list. Invalid categories are rejected, never dropped: a narrower policy than the operator asked for
would silently let content through.
"""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CODE_PATTERN = r"^[A-Z]{1,3}[0-9]{1,3}$"


class Generation(StrEnum):
    """Llama Guard generations whose prompt format and default taxonomy guardstream knows byte-exactly."""

    LG1 = "llama-guard-1"
    LG2 = "llama-guard-2"
    LG3 = "llama-guard-3"  # Llama-Guard-3-8B: S1-S14
    LG3_1B = "llama-guard-3-1b"  # Llama-Guard-3-1B: S1-S13, ' <|eot_id|>' wrapper
    LG4 = "llama-guard-4"


class Category(BaseModel):
    """One category line of the prompt: ``{code}: {name}.`` plus an optional guideline paragraph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(pattern=CODE_PATTERN, description="e.g. S1, O3, C2; unique within a taxonomy.")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000, description="Guidelines, inserted verbatim.")
    examples: tuple[str, ...] = Field(
        default=(), description="Optional few-shot examples of violations, rendered after the guidelines."
    )

    @field_validator("name")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if "\n" in value or not value.strip():
            raise ValueError("category name must be one non-blank line")
        return value


class BuiltinTaxonomy(BaseModel):
    """A generation's default taxonomy as shipped in ``schemas/builtin/<generation>.json``."""

    model_config = ConfigDict(frozen=True)

    generation: Generation
    code_prefix: str
    categories: tuple[Category, ...]
    default_block: str = Field(description="The exact categories block of the model's own template.")


@cache
def builtin_taxonomy(generation: Generation | str) -> BuiltinTaxonomy:
    gen = Generation(generation)
    text = resources.files("schemas").joinpath("builtin", f"{gen.value}.json").read_text("utf-8")
    return BuiltinTaxonomy.model_validate(json.loads(text))


def _check_unique_codes(categories: tuple[Category, ...]) -> None:
    seen: set[str] = set()
    for category in categories:
        if category.code in seen:
            raise ValueError(f"taxonomy 'categories' has duplicate code {category.code!r}")
        seen.add(category.code)


class Taxonomy(BaseModel):
    """A tenant's taxonomy: ``{"generation": ...}`` (optionally ``codes``) or ``{"categories": [...]}``.

    ``renumber`` only matters for a subset of a built-in taxonomy: False keeps the original codes (gaps, as
    Hugging Face's ``excluded_category_keys``), True renumbers 1..n as Meta's fine-tuning formatter does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    generation: Generation | None = None
    codes: tuple[str, ...] | None = Field(default=None, description="Subset of the generation's codes.")
    renumber: bool = False
    categories: tuple[Category, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Taxonomy:
        if (self.generation is None) == (self.categories is None):
            raise ValueError("taxonomy needs exactly one of 'generation' or 'categories'")
        if self.categories is not None:
            if self.codes is not None or self.renumber:
                raise ValueError("'codes' and 'renumber' apply only to a generation's default taxonomy")
            if not self.categories:
                raise ValueError("taxonomy 'categories' must not be empty")
            _check_unique_codes(self.categories)
        if self.generation is not None and self.codes is not None:
            if not self.codes:
                raise ValueError("taxonomy 'codes' must not be empty")
            known = {c.code for c in builtin_taxonomy(self.generation).categories}
            unknown = [c for c in self.codes if c not in known]
            if unknown:
                raise ValueError(f"codes {unknown} are not in the {self.generation.value} taxonomy")
            if len(set(self.codes)) != len(self.codes):
                raise ValueError("taxonomy 'codes' has duplicates")
        return self

    def resolve(self) -> tuple[Category, ...]:
        """The categories exactly as they will appear in the prompt, in order, with final codes.

        Computed once per distinct taxonomy: a request's policy check, prompt, parse and verdict all ask.
        """
        return _resolve(self)

    def only(self, code: str) -> Taxonomy:
        """The taxonomy holding only ``code`` (a final code), for the paper's 1-vs-all protocol.

        A built-in subset stays a subset of the generation (so the prompt keeps its wording); a renumbered
        one maps ``code`` back to the original. ``ValueError`` when the taxonomy lacks ``code``.
        """
        resolved = self.resolve()
        codes = [c.code for c in resolved]
        if code not in codes:
            raise ValueError(f"category_codes names {code!r}, which the request's taxonomy does not have")
        index = codes.index(code)
        if self.generation is None:
            return Taxonomy(categories=(resolved[index],))
        wanted = self.codes
        originals = [
            c.code for c in builtin_taxonomy(self.generation).categories if not wanted or c.code in wanted
        ]
        return Taxonomy(generation=self.generation, codes=(originals[index],))

    @property
    def is_builtin_default(self) -> bool:
        """True when the prompt may use the generation's verbatim default block."""
        return self.generation is not None and self.codes is None


@lru_cache(maxsize=1024)
def _resolve(taxonomy: Taxonomy) -> tuple[Category, ...]:
    if taxonomy.categories is not None:
        return taxonomy.categories
    assert taxonomy.generation is not None
    builtin = builtin_taxonomy(taxonomy.generation)
    if taxonomy.codes is None:
        return builtin.categories
    wanted = set(taxonomy.codes)
    kept = tuple(c for c in builtin.categories if c.code in wanted)
    if not taxonomy.renumber:
        return kept
    return tuple(c.model_copy(update={"code": f"{builtin.code_prefix}{i + 1}"}) for i, c in enumerate(kept))
