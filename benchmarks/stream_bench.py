"""The incremental replay through the real stream: ``guardstream stream`` against (c) in-process, one run.

    .venv/bin/python benchmarks/stream_bench.py [--conversations 3] [--batch 16] [--stream-share 0.34]
                                                [--rounds 3] [--torch-threads N] [--quick] [--json FILE]

Needs the local Kafka and Redis (``python -m infra.local up``). The events are the incremental benchmark's
replay (``incremental_bench.replay``: HH conversations with >= 4 turns, each user turn on the prompt side,
each assistant turn on the response side, a share of the replies streamed as ``partial`` 16-token chunks,
conversations interleaved), written as ``ConversationEvent`` JSON under two tenants whose policies (the
custom three-category taxonomy, Llama Guard 3's default) are stored in Redis. Same model, same settings,
same requests (``decision.build_request`` of each event under its policy) on both paths:

  (c) in-process: ``GuardScorer`` on batches of ``--batch`` events in replay order, fresh KV tree.
  stream: ``guardstream stream`` as a subprocess on fresh topics and consumer group; once ``/readyz`` says
      ready, every event is produced keyed ``tenant:conversation`` and the clock runs from the first send
      to the last verdict read back from the verdict topic. Cache counters come from its ``/metrics``.

Both paths run ``--rounds`` times, alternating which goes first, each round on tenants of its own (a
cold cache); the stream stays up between rounds. Figures: events/s per round and over all rounds, the
stream's ratio to (c) (the issue's target: within 15 %), tokens hit/run, forward batch sizes, and the
largest score difference between the verdicts and the in-process scores. Writes
``benchmarks/results/<device>-<date>-stream.json`` (``--quick``: ``...-stream-quick.json``, git-ignored)
and with ``--json FILE`` the same record.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import torch
from incremental_bench import replay
from score_bench import CUSTOM, ROOT, run_meta, write_record
from stream_harness import StreamRun

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.taxonomy import Generation, Taxonomy
from workers.decision import build_request
from workers.engine import ScoreRequest
from workers.guard.loading import LoadedGuard, load_guard
from workers.guard.scorer import GuardScorer
from workers.policies.redis_store import RedisPolicyStore
from workers.settings import ModelSpec, Settings

TENANTS = {"tenant0": CUSTOM, "tenant1": Taxonomy(generation=Generation.LG3)}
"""The replay's tenants and taxonomies (``incremental_bench.conversation_events`` alternates them)."""


def events_of(
    guard: LoadedGuard, data: Path, conversations: int, share: float, round_: int
) -> list[ConversationEvent]:
    """The replay as wire events: a streamed chunk is ``partial`` with the reply's ``response_id``. Each
    round has tenants of its own (``tenant0-r1``...), so it starts on a cold cache on both paths."""
    out = []
    for request, position in replay(guard, data, conversations, share):
        conversation = request.request_id.split("-")[0]
        partial = position > 0
        out.append(
            ConversationEvent(
                event_id=f"r{round_}-{request.request_id}",
                tenant_id=f"{request.cache_scope}-r{round_}",
                conversation_id=conversation,
                messages=list(request.messages),
                classify=request.side,
                partial=partial,
                response_id=f"{conversation}-r{len(request.messages)}" if partial else None,
            )
        )
    return out


def in_process(
    guard: LoadedGuard, settings: Settings, requests: list[ScoreRequest], batch: int
) -> dict[str, Any]:
    """(c): a fresh scorer over the requests in replay order, ``batch`` at a time."""
    scorer = GuardScorer(guard, settings)
    scores: dict[str, float] = {}
    load = psutil.getloadavg()[0]
    with torch.inference_mode():
        start = time.perf_counter()
        for i in range(0, len(requests), batch):
            for result in scorer.score(requests[i : i + batch]):
                scores[result.request_id] = result.score
        wall = time.perf_counter() - start
    return {
        "events": len(requests),
        "seconds": wall,
        "events_per_s": len(requests) / wall,
        "tokens_per_event": scorer.computed_tokens / len(requests),
        "cache_hit_ratio": scorer.cache.hit_ratio,
        "load_average_before": load,
        "scores": scores,
    }


def max_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max((abs(a[k] - b[k]) for k in a.keys() & b.keys()), default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="(c) and stream alternate, this many each.")
    parser.add_argument("--batch", type=int, default=16, help="(c)'s batch; the stream uses its settings.")
    parser.add_argument("--stream-share", type=float, default=0.34, help="Assistant turns also streamed.")
    parser.add_argument("--model", type=Path, default=None, help="Default: the shipped SmolLM2-135M.")
    parser.add_argument("--prompt-format", default=None)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="The replica's (ModelSpec.torch_threads); default: "
        "this process's torch threads, so both paths run the model on the same cores.",
    )
    parser.add_argument("--quick", action="store_true", help="2 conversations, 2 rounds.")
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds for the stream's replay.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.rounds = 2, 2
    settings = Settings()
    spec = ModelSpec(
        path=args.model,
        prompt_format=args.prompt_format,
        torch_threads=args.torch_threads or torch.get_num_threads(),
    )
    guard = load_guard(spec, settings)
    rounds = [
        events_of(guard, args.data_dir, args.conversations, args.stream_share, r) for r in range(args.rounds)
    ]
    policies = {
        e.tenant_id: TenantPolicy(tenant_id=e.tenant_id, taxonomy=TENANTS[e.tenant_id.split("-")[0]])
        for events in rounds
        for e in events
    }
    with RedisPolicyStore(settings) as store:
        for policy in policies.values():
            store.put(policy)
    with torch.inference_mode():
        GuardScorer(guard, settings).score([build_request(e, policies[e.tenant_id]) for e in rounds[0][:2]])
    stream = StreamRun(settings, datetime.now(UTC).strftime("%Y%m%d%H%M%S"), spec)
    runs: dict[str, list[dict[str, Any]]] = {"in_process": [], "stream": []}
    try:
        ready_s = stream.wait_ready(900)
        print(
            f"stream ready after {ready_s:.0f}s; {args.rounds} rounds of {len(rounds[0])} events", flush=True
        )
        for r, events in enumerate(rounds):
            requests = [build_request(e, policies[e.tenant_id]) for e in events]
            for path in ("in_process", "stream") if r % 2 == 0 else ("stream", "in_process"):
                if path == "stream":
                    runs[path].append(stream.replay(events, args.timeout))
                else:
                    runs[path].append(in_process(guard, settings, requests, args.batch))
                row = runs[path][-1]
                print(f"round {r + 1} {path:<10} {row['events_per_s']:.3f} events/s", flush=True)
    finally:
        report = stream.stop()
    summarise(args, guard, settings, spec, runs, report, ready_s)


def _total(runs: list[dict[str, Any]]) -> float:
    return sum(r["events"] for r in runs) / sum(r["seconds"] for r in runs)


def summarise(
    args: argparse.Namespace,
    guard: LoadedGuard,
    settings: Settings,
    spec: ModelSpec,
    runs: dict[str, list[dict[str, Any]]],
    report: dict[str, Any],
    ready_s: float,
) -> None:
    inproc, through = _total(runs["in_process"]), _total(runs["stream"])
    ratio = through / inproc
    diff = max(
        max_diff(s["scores"], c["scores"]) for s, c in zip(runs["stream"], runs["in_process"], strict=True)
    )
    last = runs["stream"][-1]
    print(
        f"\nmodel {guard.name} on {guard.device} ({guard.dtype}), {args.rounds} rounds of "
        f"{runs['stream'][0]['events']} events from {args.conversations} conversations; torch threads: "
        f"in-process {torch.get_num_threads()}, replica {spec.torch_threads}; load average now "
        f"{psutil.getloadavg()[0]:.1f}"
    )
    print(
        f"{'round':<6} {'(c) events/s':>12} {'stream events/s':>15} {'ratio':>6} {'load (c)':>8} "
        f"{'load stream':>11}"
    )
    for r, (c, s) in enumerate(zip(runs["in_process"], runs["stream"], strict=True)):
        print(
            f"{r + 1:<6} {c['events_per_s']:12.3f} {s['events_per_s']:15.3f} "
            f"{s['events_per_s'] / c['events_per_s']:6.2f} {c['load_average_before']:8.1f} "
            f"{s['load_average_before']:11.1f}"
        )
    print(
        f"all    {inproc:12.3f} {through:15.3f} {ratio:6.2f}   (events / seconds over all rounds)\n"
        f"stream / (c) = {ratio:.2f} (target >= 0.85: {'met' if ratio >= 0.85 else 'NOT met'}); "
        f"hit ratio (c) {runs['in_process'][-1]['cache_hit_ratio']:.2f}, "
        f"stream {last['cache_hit_ratio']:.2f}; "
        f"{last['forward_batches']:.0f} replica forwards of {last['mean_forward_batch']:.1f} requests; "
        f"max |score stream - score (c)| = {diff:.1e}"
    )
    strip = [
        [{k: v for k, v in r.items() if k != "scores"} for r in runs[p]] for p in ("in_process", "stream")
    ]
    record = {
        "guardstream": {"events_per_s": inproc, "runs": strip[0]},
        "stream": {
            "events_per_s": through,
            "vs_in_process": ratio,
            "max_abs_score_diff": diff,
            "runs": strip[1],
            "ready_after_s": ready_s,
            "report": report,
        },
        "meta": {
            **run_meta(guard),
            "conversations": args.conversations,
            "rounds": args.rounds,
            "stream_share": args.stream_share,
            "batch": args.batch,
            "stream_batch_size": settings.batch_size,
            "replica_max_batch": settings.replica_max_batch,
            "replica_torch_threads": spec.torch_threads,
            "kv_cache_mb": settings.kv_cache_mb,
            "quick": args.quick,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    suffix = "-stream-quick" if args.quick else "-stream"
    out = write_record(record, guard.device, suffix, args.json)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
