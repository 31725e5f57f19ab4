"""Parity: the KV-cached, batched scorer equals a plain full-prompt forward and greedy ``generate``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from schemas.events import Message, Side
from schemas.taxonomy import Category, Generation, Taxonomy
from tests.helpers.guard_reference import reference_answer as _reference_answer
from tests.helpers.guard_reference import reference_score as _reference
from workers.engine import ScoreRequest, ScoreResult
from workers.guard.loading import LoadedGuard, load_guard
from workers.guard.scorer import GuardScorer
from workers.settings import ModelSpec, Settings

CUSTOM = Taxonomy(
    categories=(
        Category(code="C1", name="Spoilers", description="Should not\n- Reveal plot twists."),
        Category(code="C2", name="Medical advice"),
    )
)
LONG_TURNS = (
    Message(role="user", content="I need help planning a surprise party for my sister. " * 6),
    Message(role="assistant", content="Sure! Start with a guest list, then pick a venue and a date. " * 8),
    Message(role="user", content="How do I keep it secret from her?"),
    Message(role="assistant", content="Use a separate group chat and a cover story about a dinner."),
)


def _requests(taxonomy: Taxonomy, decode_at: float | None = 0.0) -> list[ScoreRequest]:
    """Mixed lengths, both sides, multi-turn; ``decode_at=0`` decodes categories for every row."""

    def req(rid: str, messages: Sequence[Message], side: Side, codes: tuple[str, ...] = ()) -> ScoreRequest:
        return ScoreRequest(
            request_id=rid,
            messages=tuple(messages),
            side=side,
            taxonomy=taxonomy,
            decode_categories_at=decode_at,
            category_codes=codes,
        )

    first_code = taxonomy.resolve()[0].code
    return [
        req("short", [Message(role="user", content="hi")], "prompt"),
        req("question", [Message(role="user", content="How do I pick a lock?")], "prompt", (first_code,)),
        req("long-response", LONG_TURNS, "response"),
        req("long-prompt", LONG_TURNS[:3], "prompt"),
        req("pair", LONG_TURNS[2:], "response"),
    ]


def _check(
    guard: LoadedGuard, requests: list[ScoreRequest], results: list[ScoreResult], max_new: int
) -> None:
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    for request, result in zip(requests, results, strict=True):
        expected = _reference(guard, request)
        assert result.score == pytest.approx(expected, abs=1e-4, rel=1e-3), request.request_id
        assert result.raw_output == _reference_answer(guard, request, max_new), request.request_id
        for code, score in result.category_scores.items():
            single = request.taxonomy.only(code)
            assert score == pytest.approx(_reference(guard, request, single), abs=1e-4, rel=1e-3)
        assert set(result.category_scores) == set(request.category_codes)


CASES = [(g, False) for g in Generation] + [
    (g, True) for g in (Generation.LG1, Generation.LG3, Generation.LG4)
]


@pytest.mark.parametrize(("generation", "custom"), CASES, ids=[f"{g.value}-{c}" for g, c in CASES])
def test_scores_and_codes_match_full_prompt_reference(
    tiny_guard_path: Path, generation: Generation, custom: bool
) -> None:
    guard = load_guard(ModelSpec(path=tiny_guard_path, prompt_format=generation), Settings(device="cpu"))
    taxonomy = CUSTOM if custom else Taxonomy(generation=generation)
    settings = Settings(device="cpu", max_category_tokens=6)
    requests = _requests(taxonomy)
    results = GuardScorer(guard, settings).score(requests)
    _check(guard, requests, results, max_new=6)
    assert all(r.raw_output is not None for r in results)


@pytest.mark.parametrize("batch_tokens", [64, 100_000])
def test_bucketing_does_not_change_results(tiny_guard_path: Path, batch_tokens: int) -> None:
    settings = Settings(device="cpu", score_batch_tokens=batch_tokens, max_category_tokens=4)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    requests = _requests(Taxonomy(generation=Generation.LG3)) * 3
    _check(guard, requests, GuardScorer(guard, settings).score(requests), max_new=4)


@pytest.mark.parametrize("batch_tokens", [64, 100_000])
def test_tenants_and_sides_mixed_in_one_forward_match_reference(
    tiny_guard_path: Path, batch_tokens: int
) -> None:
    """Two taxonomies (prefixes of different lengths) x two sides in one call, in few buckets or many: the
    over-threshold rows of all of them are decoded in one merged loop."""
    settings = Settings(device="cpu", score_batch_tokens=batch_tokens, max_category_tokens=5)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    requests = [*_requests(Taxonomy(generation=Generation.LG3)), *_requests(CUSTOM)]
    requests = [r.model_copy(update={"request_id": f"{r.request_id}-{i}"}) for i, r in enumerate(requests)]
    _check(guard, requests, GuardScorer(guard, settings).score(requests), max_new=5)


def test_an_unscorable_request_fails_alone(tiny_guard_path: Path) -> None:
    """A tenant whose taxonomy can't fit ``max_prompt_tokens`` gets an error result; the requests batched
    with it are scored exactly as they would be without it."""
    settings = Settings(device="cpu", max_prompt_tokens=600)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    huge = Taxonomy(
        categories=tuple(
            Category(code=f"C{i}", name=f"Category {i}", description="Long guidance. " * 40)
            for i in range(1, 9)
        )
    )
    fine = _requests(Taxonomy(generation=Generation.LG3), decode_at=None)[:2]
    doomed = fine[0].model_copy(update={"request_id": "doomed", "taxonomy": huge})
    alone = GuardScorer(guard, settings).score(fine)
    mixed = GuardScorer(guard, settings).score([fine[0], doomed, fine[1]])
    assert mixed[1].request_id == "doomed" and mixed[1].error and "max_prompt_tokens" in mixed[1].error
    assert [r.error for r in (mixed[0], mixed[2])] == [None, None]
    assert [r.score for r in (mixed[0], mixed[2])] == pytest.approx([r.score for r in alone], abs=1e-6)


def test_each_head_is_computed_once_and_a_repeat_reuses_the_conversation(tiny_guard_path: Path) -> None:
    """Three heads (prompt, response, 1-vs-all S1) are computed once; the same requests again run only
    their tails, with the same scores."""
    settings = Settings(device="cpu")
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    scorer = GuardScorer(guard, settings)
    requests = _requests(Taxonomy(generation=Generation.LG3), decode_at=None)
    first = scorer.score(requests)
    heads = {len(r.head_ids) for r in scorer._rows(requests)[0]}
    assert first[0].cached_tokens in heads  # the first event of a conversation reuses only its head
    computed = scorer.computed_tokens
    again = scorer.score(requests)
    assert scorer.computed_tokens - computed < computed / 2
    assert all(b.cached_tokens > a.cached_tokens for a, b in zip(first, again, strict=True))
    assert [r.score for r in again] == pytest.approx([r.score for r in first], abs=1e-5)
    assert scorer.fallbacks == 0


def test_positions_run_each_prefix_once_and_every_suffix(tiny_guard_path: Path) -> None:
    settings = Settings(device="cpu")
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    fmt, tok = guard.prompt_format, guard.tokens
    requests = _requests(Taxonomy(generation=Generation.LG3), decode_at=None)
    prompts = [(r.taxonomy, r.messages, r.side) for r in requests]
    prompts.append((requests[1].taxonomy.only("S1"), requests[1].messages, "prompt"))
    full, prefixes = 0, {}
    for taxonomy, messages, side in prompts:
        rendered = fmt.render(taxonomy, messages, side)
        full += len(tok.encode_prompt(rendered.text + fmt.verdict_prefix))
        prefixes[rendered.prefix] = len(tok.encode_prompt(rendered.prefix.rstrip())) - 1
    suffix, prefix = GuardScorer(guard, settings).positions(requests)
    assert prefix == sum(prefixes.values())  # three distinct prefixes, each counted once
    per_row_prefixes = sum(prefixes[fmt.render(t, m, s).prefix] for t, m, s in prompts)
    assert suffix == full - per_row_prefixes


def test_unsafe_tokenization_split_scores_without_the_head(tiny_guard_path: Path) -> None:
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    scorer = GuardScorer(guard, settings)
    requests = _requests(CUSTOM)
    prefix = guard.prompt_format.render(CUSTOM, requests[0].messages, "prompt").prefix
    scorer.builder.head_ids[prefix] = (1, 2, 3)  # a boundary the real tokenization does not start with
    results = scorer.score(requests)
    assert scorer.fallbacks == 3  # the three prompt-side requests
    _check(guard, requests, results, max_new=4)


def test_rows_under_threshold_are_not_decoded(tiny_guard_path: Path) -> None:
    settings = Settings(device="cpu")
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    results = GuardScorer(guard, settings).score(_requests(CUSTOM, decode_at=None))
    assert all(r.raw_output is None and r.categories == () for r in results)


def test_long_conversations_drop_oldest_turns(tiny_guard_path: Path) -> None:
    settings = Settings(device="cpu", max_prompt_tokens=260)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    request = _requests(CUSTOM, decode_at=None)[2]
    (result,) = GuardScorer(guard, settings).score([request])
    assert result.prompt_tokens <= 260 - settings.max_category_tokens
    budget = 260 - settings.max_category_tokens - 1
    kept = next(
        request.model_copy(update={"messages": request.messages[k:]})
        for k in range(len(request.messages))
        if len(
            guard.tokens.encode_prompt(
                guard.prompt_format.render(CUSTOM, request.messages[k:], "response").text
            )
        )
        + len(guard.tokens.verdict_prefix_ids)
        <= budget
    )
    assert 0 < len(kept.messages) < len(request.messages)
    assert result.score == pytest.approx(_reference(guard, kept), abs=1e-4, rel=1e-3)


@pytest.mark.slow
def test_default_model_parity() -> None:
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(), settings)
    requests = _requests(Taxonomy(generation=Generation.LG3))
    _check(guard, requests, GuardScorer(guard, settings).score(requests), max_new=4)


def test_loading_scoring_and_decoding_emit_no_warnings(
    tiny_guard_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """Every command prints scores; a library FutureWarning (transformers 5 renamed the cache argument)
    on each forward would break that output, so load, score and decode categories must stay silent."""
    import warnings

    warnings.simplefilter("always")
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    GuardScorer(guard, settings).score(_requests(Taxonomy(generation=Generation.LG3)))
    assert [f"{w.category.__name__}: {w.message}" for w in recwarn.list] == []
