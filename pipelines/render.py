"""``guardstream render-prompt``: print the exact Llama Guard prompt for one request on stdin.

The request has the keys of a golden vector (``model`` or ``generation``, ``variant``, ``role_to_classify``,
``categories``, ``excluded_category_keys``, ``conversation``), so a vector can be piped in unchanged and
the output compared byte for byte; other keys (``id``, ``expected_prompt``...) are ignored. Output is
written as UTF-8 bytes with no added newline. Only the prompt-format module is imported, never torch.

Conversation content is neutralised as the scorer sees it (``workers.guard.neutralise``); ``--verbatim``
prints it as Meta's reference templates insert it, for comparing with them. ``--token-ids`` prints, for
auditing, the ids the scorer would feed the configured model (or ``--model``) for this request: fitted
to ``max_prompt_tokens``, content tokenized without special tokens, then the verdict prefix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.errors import user_errors
from schemas.events import Message, Side
from schemas.taxonomy import Category, Generation, Taxonomy, builtin_taxonomy
from workers.guard.formats import RenderedPrompt, generation_for_model, get_format

SIDES: dict[str, Side] = {"User": "prompt", "Agent": "response"}


class RenderRequest(BaseModel):
    """One prompt to render, in golden-vector vocabulary."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str | None = Field(
        default=None, description="Meta's Hugging Face id, e.g. meta-llama/Llama-Guard-3-8B."
    )
    generation: Generation | None = Field(
        default=None,
        description="Only without 'model' (golden vectors put the family here: 3-1B says llama-guard-3).",
    )
    variant: str = "canonical"
    role_to_classify: Literal["User", "Agent"]
    categories: Literal["default"] | tuple[Category, ...] = "default"
    excluded_category_keys: tuple[str, ...] = ()
    conversation: tuple[Message, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RenderRequest:
        if self.model is None and self.generation is None:
            raise ValueError("give 'model' (a Llama Guard model id) or 'generation'")
        if self.role_to_classify == "Agent" and self.conversation[-1].role != "assistant":
            raise ValueError(
                "role_to_classify=Agent needs the last conversation message to be the assistant's"
            )
        return self

    @property
    def resolved_generation(self) -> Generation:
        if self.model is not None:
            return generation_for_model(self.model)
        assert self.generation is not None
        return self.generation

    def taxonomy(self) -> Taxonomy:
        """The taxonomy the request describes; excluded keys keep the other codes (Hugging Face semantics)."""
        if self.categories == "default":
            generation = self.resolved_generation
            all_codes = [c.code for c in builtin_taxonomy(generation).categories]
            if not self.excluded_category_keys:
                return Taxonomy(generation=generation)
            _check_known(self.excluded_category_keys, all_codes)
            kept = tuple(c for c in all_codes if c not in self.excluded_category_keys)
            return Taxonomy(generation=generation, codes=kept, renumber=False)
        _check_known(self.excluded_category_keys, [c.code for c in self.categories])
        kept_categories = tuple(c for c in self.categories if c.code not in self.excluded_category_keys)
        return Taxonomy(categories=kept_categories)

    def render(self, verbatim: bool = False) -> RenderedPrompt:
        fmt = get_format(self.resolved_generation, self.variant)
        return fmt.render(self.taxonomy(), self.conversation, SIDES[self.role_to_classify], verbatim=verbatim)


def _check_known(excluded: tuple[str, ...], codes: list[str]) -> None:
    unknown = sorted(set(excluded) - set(codes))
    if unknown:
        raise ValueError(f"excluded_category_keys names codes {unknown} that the taxonomy does not have")


def token_ids(request: RenderRequest, model: Path | None) -> str:
    """One JSON line: the model, whether the prompt was truncated, the ids and their token strings."""
    from workers.guard.loading import load_tokens
    from workers.guard.prompt_ids import fit_prompt
    from workers.settings import ModelSpec, get_settings

    settings = get_settings()
    spec = ModelSpec(path=model) if model is not None else settings.models.get("default", ModelSpec())
    tokens = load_tokens(spec, settings)
    fmt = get_format(request.resolved_generation, request.variant)
    budget = settings.max_prompt_tokens - len(tokens.verdict_prefix_ids) - 1 - settings.max_category_tokens
    side = SIDES[request.role_to_classify]
    fitted = fit_prompt(fmt, tokens, request.taxonomy(), request.conversation, side, budget)
    ids = [*fitted.ids, *tokens.verdict_prefix_ids]
    pieces = tokens.tokenizer.convert_ids_to_tokens(ids)
    return json.dumps(
        {"model": str(spec.path or "default"), "truncated": fitted.truncated, "ids": ids, "tokens": pieces}
    )


def register(app: typer.Typer) -> None:
    @app.command("render-prompt")
    def render_prompt(
        verbatim: Annotated[
            bool, typer.Option("--verbatim", help="Content as Meta's templates insert it (not neutralised).")
        ] = False,
        ids: Annotated[
            bool, typer.Option("--token-ids", help="Print the token ids the scorer would feed, as JSON.")
        ] = False,
        model: Annotated[
            Path | None,
            typer.Option("--model", help="Checkpoint for --token-ids (default: the default pool)."),
        ] = None,
    ) -> None:
        """Read one JSON request on stdin and print exactly the Llama Guard prompt it describes."""
        with user_errors():
            request = RenderRequest.model_validate_json(sys.stdin.buffer.read())
            text = token_ids(request, model) + "\n" if ids else request.render(verbatim).text
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
