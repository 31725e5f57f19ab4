"""Backfill brings a conversation's turns together across shards (``--group-conversations archive``).

The archive holds every conversation twice, its first exchange in one file (one shard) and the
conversation two turns later in another, with many other conversations in between. The KV cache is kept
small (1 MiB: ~4k tiny-model tokens), so within-shard grouping evicts each first exchange before its
later turn arrives, while the archive-wide grouping scores the two back to back: the later turn reuses
the first one's keys/values. The run's hit counters show it, and the verdicts are the same either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipelines.backfill.job import RunStats, run_backfill
from pipelines.backfill.plan import BackfillOptions
from workers.policies.file_store import FilePolicyStore
from workers.settings import Settings

pytestmark = pytest.mark.usefixtures("ray_local")

CONVERSATIONS = 48


def _text(conv: int, turn: int) -> str:
    return " ".join(f"conversation {conv} turn {turn} word {w}" for w in range(6))


def _event(conv: int, turns: int) -> str:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": _text(conv, i)} for i in range(turns)
    ]
    return json.dumps(
        {
            "event_id": f"c{conv}-t{turns}",
            "tenant_id": "acme",
            "conversation_id": f"c{conv}",
            "messages": messages,
        }
    )


@pytest.fixture(scope="module")
def split_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split-archive")
    (root / "part-0-first.jsonl").write_text("".join(_event(c, 2) + "\n" for c in range(CONVERSATIONS)))
    (root / "part-1-later.jsonl").write_text("".join(_event(c, 4) + "\n" for c in range(CONVERSATIONS)))
    return root


def _run(root: Path, out: Path, settings: Settings, policies: FilePolicyStore, grouping: str) -> RunStats:
    options = BackfillOptions(
        inputs=(str(root),), out=out, shard_rows=CONVERSATIONS, batch_size=8, progress=False
    ).model_copy(update={"group_conversations": grouping})
    small_cache = settings.model_copy(update={"kv_cache_mb": 1})
    return run_backfill(options, small_cache, policies)[1]


def _scores(out: Path) -> dict[str, Any]:
    return {r["event_id"]: (r["unsafe"], r["score"]) for r in pq.read_table(out / "verdicts").to_pylist()}


def test_archive_grouping_reuses_earlier_turns_from_other_shards(
    split_archive: Path, settings: Settings, policies: FilePolicyStore, tmp_path: Path
) -> None:
    per_shard = _run(split_archive, tmp_path / "shard", settings, policies, "shard")
    archive = _run(split_archive, tmp_path / "archive", settings, policies, "archive")
    assert per_shard.rows == archive.rows == 2 * CONVERSATIONS
    assert per_shard.prompt_tokens == archive.prompt_tokens > 0
    # Each later turn reuses its first exchange (head + two messages) only when grouped across shards.
    assert archive.cached_tokens > per_shard.cached_tokens
    assert archive.cache_hit_ratio > per_shard.cache_hit_ratio + 0.05
    got, want = _scores(tmp_path / "archive"), _scores(tmp_path / "shard")
    assert got.keys() == want.keys() and len(got) == 2 * CONVERSATIONS
    for event_id, (unsafe, score) in want.items():
        assert got[event_id][0] == unsafe
        assert got[event_id][1] == pytest.approx(score, abs=1e-5)
