"""Exactness of conversation-level KV reuse: replayed conversations score as their full prompts, whatever
was cached before, and a streamed reply costs per chunk what the chunk adds."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from schemas.events import Message
from schemas.taxonomy import Category, Generation, Taxonomy
from tests.helpers.guard_reference import reference_answer, reference_score
from workers.engine import ScoreRequest, ScoreResult
from workers.guard.formats import CONVERSATION_CLOSE
from workers.guard.loading import LoadedGuard, load_guard
from workers.guard.scorer import GuardScorer
from workers.settings import ModelSpec, Settings

CUSTOM = Taxonomy(
    categories=(
        Category(code="C1", name="Spoilers", description="Should not\n- Reveal plot twists."),
        Category(code="C2", name="Medical advice", examples=("Which pills should I double up on?",)),
    )
)
CONVERSATIONS = (
    (
        ("user", "My neighbour's dog barks all night. What can I do?"),
        ("assistant", "Talk to them first; keep a log of the nights and times. " * 5),
        ("user", "They ignored me. Can I poison it?"),
        ("assistant", "No. Contact your local council about a noise complaint instead. " * 6),
    ),
    (
        ("user", "Summarise the ending of the film for me, spoilers welcome."),
        ("assistant", "In the final act the detective realises her partner was the informant all along."),
        ("user", "And what happens after that?"),
        ("assistant", "She lets him go, and the last scene is the two of them at the station. " * 4),
    ),
)
CHUNK = 16


def _events(
    guard: LoadedGuard, taxonomy: Taxonomy, conv: int, stream: bool, scope: str = "t"
) -> list[ScoreRequest]:
    """Every event of one conversation in order: each user turn (prompt side), each assistant turn
    (response side), the assistant turns also streamed in ``CHUNK``-token chunks before their final event."""
    turns = [Message(role=r, content=c) for r, c in CONVERSATIONS[conv]]  # type: ignore[arg-type]
    events: list[tuple[tuple[Message, ...], str]] = []
    for i, turn in enumerate(turns):
        if turn.role == "assistant" and stream:
            ids = guard.tokens.encode_prompt(turn.content)
            for end in range(CHUNK, len(ids), CHUNK):
                text = guard.tokens.decode(ids[:end])
                events.append(((*turns[:i], Message(role="assistant", content=text)), "response"))
        events.append((tuple(turns[: i + 1]), "response" if turn.role == "assistant" else "prompt"))
    return [
        ScoreRequest(
            request_id=f"{scope}-c{conv}-e{n}",
            messages=messages,
            side=side,  # type: ignore[arg-type]
            taxonomy=taxonomy,
            decode_categories_at=0.0,
            cache_scope=scope,
            affinity=f"{scope}:c{conv}",
        )
        for n, (messages, side) in enumerate(events)
    ]


def _interleaved(*streams: list[ScoreRequest]) -> list[ScoreRequest]:
    out: list[ScoreRequest] = []
    for i in range(max(len(s) for s in streams)):
        out += [s[i] for s in streams if i < len(s)]
    return out


def _check(guard: LoadedGuard, requests: list[ScoreRequest], results: list[ScoreResult]) -> None:
    for request, result in zip(requests, results, strict=True):
        assert result.request_id == request.request_id
        assert result.score == pytest.approx(reference_score(guard, request), abs=1e-4), request.request_id
        assert result.raw_output == reference_answer(guard, request, max_new=4), request.request_id


def _tail(guard: LoadedGuard, request: ScoreRequest) -> int:
    """Tokens after the conversation: the fixed instructions and cue, then the verdict prefix."""
    text = guard.prompt_format.render(request.taxonomy, request.messages, request.side).text
    conversation = guard.tokens.encode_prompt(text[: text.rfind(CONVERSATION_CLOSE)])
    return len(guard.tokens.encode_prompt(text)) - len(conversation) + len(guard.tokens.verdict_prefix_ids)


def _replay(scorer: GuardScorer, requests: list[ScoreRequest], batch: int) -> list[ScoreResult]:
    results: list[ScoreResult] = []
    for start in range(0, len(requests), batch):
        results += scorer.score(requests[start : start + batch])
    return results


CASES = [(g, False) for g in Generation] + [(Generation.LG1, True), (Generation.LG3, True)]


@pytest.mark.parametrize(("generation", "custom"), CASES, ids=[f"{g.value}-{c}" for g, c in CASES])
def test_replayed_conversations_match_full_prompts_and_reuse_history(
    tiny_guard_path: Path, generation: Generation, custom: bool
) -> None:
    """Two conversations interleaved, both sides, streamed replies, batches of 3 (so some batches hold
    two chunks of one reply): every score and decoded answer equals the full prompt's, and every event
    after a conversation's first on a side reuses the previous one up to its conversation's end."""
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(path=tiny_guard_path, prompt_format=generation), settings)
    taxonomy = CUSTOM if custom else Taxonomy(generation=generation)
    scorer = GuardScorer(guard, settings)
    requests = _interleaved(*(_events(guard, taxonomy, c, stream=True) for c in range(2)))
    results = _replay(scorer, requests, batch=3)
    _check(guard, requests, results)
    history: dict[tuple[str | None, str], int] = {}
    for request, result in zip(requests, results, strict=True):
        key = (request.affinity, request.side)
        if key in history:  # reuses the previous same-side event up to its conversation's end
            assert result.cached_tokens >= history[key] - 2, request.request_id
        history[key] = result.prompt_tokens - _tail(guard, request)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_whatever_was_cached_before_and_with_evictions(tiny_guard_path: Path, seed: int) -> None:
    """A random subset of the events scored first in random order (by another tenant too), then the
    replay under a byte bound small enough to evict in the middle of it: still exact."""
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    taxonomy = Taxonomy(generation=Generation.LG3)
    scorer = GuardScorer(guard, settings)
    requests = _interleaved(*(_events(guard, taxonomy, c, stream=True) for c in range(2)))
    rng = random.Random(seed)
    warm = rng.sample(requests, k=len(requests) // 2)
    warm += [r.model_copy(update={"cache_scope": "other"}) for r in rng.sample(requests, k=4)]
    _replay(scorer, warm, batch=rng.randint(1, 4))
    scorer.cache.max_bytes = scorer.cache.nbytes // 3
    evicted = scorer.cache.evicted_nodes
    results = _replay(scorer, requests, batch=rng.randint(1, 4))
    _check(guard, requests, results)
    assert scorer.cache.evicted_nodes > evicted
    assert scorer.cache.nbytes <= scorer.cache.max_bytes


def test_streamed_chunk_costs_the_chunk_plus_the_fixed_tail(tiny_guard_path: Path) -> None:
    """Tokens run per chunk event stay flat as the reply grows: the chunk, the re-tokenized boundary
    token at most, and the tail after the conversation (which attends to it, so it is always rerun)."""
    settings = Settings(device="cpu")
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    taxonomy = Taxonomy(generation=Generation.LG3)
    scorer = GuardScorer(guard, settings)
    requests = [r for r in _events(guard, taxonomy, 0, stream=True) if r.side == "response"]
    requests = [r.model_copy(update={"decode_categories_at": None}) for r in requests]
    results = _replay(scorer, requests, batch=1)
    tail = _tail(guard, requests[0])
    computed = [r.prompt_tokens - r.cached_tokens for r in results]
    chunk_events = [c for r, c in zip(requests, computed, strict=True) if len(r.messages) == 2][1:]
    assert len(chunk_events) >= 4
    assert all(c <= CHUNK + tail + 3 for c in chunk_events), (computed, tail)


def test_one_tenants_cache_never_serves_another(tiny_guard_path: Path) -> None:
    """The same conversation under two cache scopes: the second tenant reuses only its own head, and
    scores as it would on a fresh scorer."""
    settings = Settings(device="cpu")
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    taxonomy = Taxonomy(generation=Generation.LG3)
    scorer = GuardScorer(guard, settings)
    mine = _events(guard, taxonomy, 0, stream=False, scope="acme")
    theirs = [r.model_copy(update={"cache_scope": "kidsplay"}) for r in mine]
    _replay(scorer, mine, batch=4)
    shared = scorer.score(theirs)
    fresh = GuardScorer(guard, settings).score(theirs)
    assert [r.cached_tokens for r in shared] == [r.cached_tokens for r in fresh]
    assert [r.score for r in shared] == pytest.approx([r.score for r in fresh], abs=1e-6)


def test_concurrent_callers_get_exact_scores(tiny_guard_path: Path) -> None:
    """Two threads replaying different conversations on one scorer (the lock serialises calls)."""
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    taxonomy = Taxonomy(generation=Generation.LG3)
    scorer = GuardScorer(guard, settings)
    streams = [_events(guard, taxonomy, c, stream=True) for c in range(2)]
    out: dict[int, list[ScoreResult]] = {}
    threads = [
        threading.Thread(target=lambda c=c: out.__setitem__(c, _replay(scorer, streams[c], batch=2)))
        for c in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for c in range(2):
        _check(guard, streams[c], out[c])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_default_model_replay_is_exact() -> None:
    """The shipped model (SmolLM2-135M + guard adapter) on a streamed conversation interleaved with one
    under a custom taxonomy (each event also runs a full forward and ``generate``: minutes on CPU)."""
    settings = Settings(device="cpu", max_category_tokens=4)
    guard = load_guard(ModelSpec(), settings)
    taxonomy = Taxonomy(generation=Generation.LG3)
    scorer = GuardScorer(guard, settings)
    requests = _interleaved(_events(guard, taxonomy, 0, stream=True), _events(guard, CUSTOM, 1, stream=False))
    _check(guard, requests, _replay(scorer, requests, batch=4))
