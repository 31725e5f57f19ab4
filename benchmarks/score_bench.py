"""Scoring throughput: the model card's method vs a batched forward vs guardstream's scorer, side by side.

    .venv/bin/python benchmarks/score_bench.py [--conversations 64] [--repeats 3] [--card-sample N]
                                               [--quick] [--json FILE] [--data-dir ../shared/data]

One run, one model, one machine, the same inputs for all three methods:
  (a) card:        ``generate`` per conversation on the full prompt, batch 1, ``max_new_tokens=10``, the
                   score read from the generation scores at the verdict position (Meta's model cards).
  (b) batched:     left-padded batches of full prompts (+ verdict prefix), one plain ``model(**inputs)``
                   forward each, ``softmax(logits[:, -1])`` — what a user who batches would write.
  (c) guardstream: ``GuardScorer.score`` on the same batches (prefix cache, bucketing, verdict-only
                   ``lm_head``, codes decoded only for rows over 0.5), a fresh scorer per repeat so every
                   repeat pays for its prefixes once.
Inputs: half short prompts (XSTest), half long multi-turn conversations judged on the response side
(Anthropic HH harmless-base), shuffled with a fixed seed; alternate conversations use the Llama Guard 3
default taxonomy and a custom three-category taxonomy (two tenants). For every batch the three methods
run back to back in rotating order, so load from other processes hits them alike; throughput is reported
per wall second and per process-CPU second (the fairer ratio on a shared machine), medians over repeats.
The largest score difference between (b) and (c) is printed as a sanity check. Writes
``benchmarks/results/<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import torch

from schemas.events import Message, Side
from schemas.taxonomy import Category, Generation, Taxonomy
from workers.engine import ScoreRequest
from workers.guard.loading import LoadedGuard, load_guard
from workers.guard.scorer import GuardScorer
from workers.settings import ModelSpec, Settings

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = Taxonomy(
    categories=(
        Category(code="C1", name="Bullying", description="Insulting, humiliating or intimidating a person."),
        Category(code="C2", name="Adult Content", description="Sexual or nude content of any kind."),
        Category(code="C3", name="Dangerous Activities", description="Help obtaining weapons or self-harm."),
    )
)
METHODS = ("card", "batched", "guardstream")


def xstest(data: Path, n: int) -> list[tuple[list[Message], Side]]:
    with (data / "xstest" / "xstest_prompts.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [([Message(role="user", content=r["prompt"])], "prompt") for r in rows[:n]]


def hh_rlhf(data: Path, n: int) -> list[tuple[list[Message], Side]]:
    """Multi-turn conversations (>= 4 turns) ending with the assistant, judged on the response side."""
    out: list[tuple[list[Message], Side]] = []
    for line in (data / "hh-rlhf" / "harmless-base" / "test.jsonl").open():
        text = json.loads(line)["chosen"]
        messages = []
        for chunk in text.split("\n\nHuman: ")[1:]:
            human, _, assistant = chunk.partition("\n\nAssistant: ")
            if human.strip():
                messages.append(Message(role="user", content=human))
            if assistant.strip():
                messages.append(Message(role="assistant", content=assistant))
        if len(messages) >= 4 and messages[-1].role == "assistant":
            out.append((messages, "response"))
        if len(out) == n:
            break
    return out


def build_requests(data: Path, n: int) -> list[ScoreRequest]:
    convs = xstest(data, n // 2) + hh_rlhf(data, n - n // 2)
    random.Random(0).shuffle(convs)
    lg3 = Taxonomy(generation=Generation.LG3)
    return [
        ScoreRequest(request_id=f"c{i}", messages=tuple(m), side=side, taxonomy=lg3 if i % 2 else CUSTOM)
        for i, (m, side) in enumerate(convs)
    ]


class PeakMemory:
    """Peak resident memory (CPU) or allocated memory (CUDA) above the level at entry, in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, proc.memory_info().rss - self.base)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float:
        return max(self.peak, 0) / 2**20


def prompt_texts(guard: LoadedGuard, requests: Sequence[ScoreRequest]) -> list[str]:
    fmt = guard.prompt_format
    return [fmt.render(r.taxonomy, r.messages, r.side).text + fmt.verdict_prefix for r in requests]


def card_method(guard: LoadedGuard) -> Callable[[Sequence[ScoreRequest]], list[float]]:
    tok, model = guard.tokens, guard.model

    def run(batch: Sequence[ScoreRequest]) -> list[float]:
        scores = []
        for text in prompt_texts(guard, batch):
            ids = torch.tensor([tok.encode_prompt(text)], device=guard.device)
            out = model.generate(
                ids,
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=tok.pad_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
            scores.append(float(torch.softmax(out.scores[0][0].float(), -1)[tok.unsafe_id]))
        return scores

    return run


def batched_method(guard: LoadedGuard) -> Callable[[Sequence[ScoreRequest]], list[float]]:
    tok = guard.tokens

    def run(batch: Sequence[ScoreRequest]) -> list[float]:
        rows = [tok.encode_prompt(t) for t in prompt_texts(guard, batch)]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[tok.pad_id] * (width - len(r)) + r for r in rows], device=guard.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=guard.device)
        logits = guard.model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
        return torch.softmax(logits, -1)[:, tok.unsafe_id].tolist()

    return run


def guardstream_method(guard: LoadedGuard, settings: Settings) -> Callable[[], Callable[..., list[float]]]:
    def fresh() -> Callable[[Sequence[ScoreRequest]], list[float]]:
        scorer = GuardScorer(guard, settings)
        return lambda batch: [r.score for r in scorer.score(batch)]

    return fresh


class Tally:
    """One method's timings over a repeat: wall and process CPU seconds, per-batch latencies, memory."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.conversations = 0
        self.latencies: list[float] = []
        self.peak_mib = 0.0
        self.scores: list[float] = []

    def time(
        self, run: Callable[[Sequence[ScoreRequest]], list[float]], batch: Sequence[ScoreRequest]
    ) -> None:
        device = _DEVICE[0]
        with PeakMemory(device) as memory:
            wall, cpu = time.perf_counter(), time.process_time()
            self.scores += run(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.wall += wall
        self.cpu += cpu
        self.conversations += len(batch)
        self.latencies.append(wall)
        self.peak_mib = max(self.peak_mib, memory.mib)

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "conv_per_s": self.conversations / self.wall,
            "conv_per_cpu_s": self.conversations / self.cpu,
            "p50_batch_ms": 1000 * statistics.median(ordered),
            "p99_batch_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
            "peak_mem_mib": self.peak_mib,
        }


_DEVICE: list[torch.device] = [torch.device("cpu")]


def run_repeat(
    guard: LoadedGuard, settings: Settings, batches: list[list[ScoreRequest]], card_per_batch: int
) -> dict[str, Tally]:
    """One pass over all batches; per batch the three methods run back to back, in rotating order."""
    runners = {
        "card": card_method(guard),
        "batched": batched_method(guard),
        "guardstream": guardstream_method(guard, settings)(),
    }
    tallies = {m: Tally() for m in METHODS}
    with torch.inference_mode():
        for index, batch in enumerate(batches):
            for k in range(len(METHODS)):
                method = METHODS[(index + k) % len(METHODS)]
                rows = batch[:card_per_batch] if method == "card" else batch
                tallies[method].time(runners[method], rows)
    return tallies


def summarize(repeats: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.median(r[k] for r in repeats) for k in repeats[0]}
    out["conv_per_s_runs"] = [round(r["conv_per_s"], 4) for r in repeats]
    return out


def run_meta(guard: LoadedGuard) -> dict[str, Any]:
    """Where a benchmark ran: model, device, threads, machine and its load (the CPU may be shared)."""
    return {
        "model": guard.name,
        "device": device_label(guard.device),
        "dtype": str(guard.dtype),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "load_avg_at_end": list(psutil.getloadavg()),
    }


def write_record(record: dict[str, Any], device: torch.device, suffix: str, also: Path | None) -> Path:
    """``benchmarks/results/<device>-<date><suffix>.json`` (and ``also``, ``--json FILE``), the same JSON."""
    out = (
        ROOT / "benchmarks" / "results" / f"{device_label(device)}-{datetime.now(UTC):%Y-%m-%d}{suffix}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    out.write_text(text)
    if also is not None:
        also.write_text(text)
    return out


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return f"cpu-{psutil.cpu_count()}core"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="Conversations per batch for (b) and (c).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="Default: the shipped SmolLM2-135M.")
    parser.add_argument("--prompt-format", default=None)
    parser.add_argument(
        "--card-sample",
        type=int,
        default=0,
        help="Run (a) on only this many conversations (spread over the batches); 0: all. (a) is batch 1, "
        "so its conv/s from a sample is an unbiased estimate, and it is by far the slowest method.",
    )
    parser.add_argument("--quick", action="store_true", help="16 conversations, 1 repeat: under a minute.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.repeats, args.batch, args.card_sample = 16, 1, 8, 4

    settings = Settings()
    spec = ModelSpec(path=args.model, prompt_format=args.prompt_format)
    guard = load_guard(spec, settings)
    requests = build_requests(args.data_dir, args.conversations)
    batches = [requests[i : i + args.batch] for i in range(0, len(requests), args.batch)]
    _DEVICE[0] = guard.device
    card_per_batch = -(-min(args.card_sample or len(requests), len(requests)) // len(batches))
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection
        batched_method(guard)(batches[0][:2])
    runs: list[dict[str, Tally]] = []
    for repeat in range(args.repeats):
        runs.append(run_repeat(guard, settings, batches, card_per_batch))
        line = ", ".join(f"{m} {runs[-1][m].figures()['conv_per_s']:.3f}" for m in METHODS)
        print(f"repeat {repeat + 1}/{args.repeats}: conv/s {line}", flush=True)
    report_results(args, guard, settings, requests, runs)


def report_results(
    args: argparse.Namespace,
    guard: LoadedGuard,
    settings: Settings,
    requests: list[ScoreRequest],
    runs: list[dict[str, Tally]],
) -> None:
    results = {m: summarize([r[m].figures() for r in runs]) for m in METHODS}
    for m in METHODS:
        for key, base in (("vs_card", "card"), ("vs_batched", "batched")):
            results[m][key] = results[m]["conv_per_s"] / results[base]["conv_per_s"]
            results[m][key + "_cpu"] = results[m]["conv_per_cpu_s"] / results[base]["conv_per_cpu_s"]
    b, c = runs[0]["batched"].scores, runs[0]["guardstream"].scores
    diff = max(abs(x - y) for x, y in zip(b, c, strict=True))
    tokens = [len(guard.tokens.encode_prompt(t)) for t in prompt_texts(guard, requests)]
    print(
        f"\nmodel {guard.name} on {guard.device} ({guard.dtype}), {len(requests)} conversations "
        f"(card: {runs[0]['card'].conversations}), batch {args.batch}, prompt tokens median "
        f"{statistics.median(tokens):.0f} max {max(tokens)}, median of {args.repeats} repeat(s)"
    )
    head = f"{'method':<12} {'conv/s':>8} {'conv/cpu-s':>10} {'p50 ms':>9} {'p99 ms':>9} {'peak MiB':>9}"
    print(head + f" {'vs (a)':>7} {'vs (b)':>7} {'vs (a) cpu':>10} {'vs (b) cpu':>10}")
    for m in METHODS:
        r = results[m]
        print(
            f"{m:<12} {r['conv_per_s']:8.3f} {r['conv_per_cpu_s']:10.3f} {r['p50_batch_ms']:9.0f} "
            f"{r['p99_batch_ms']:9.0f} {r['peak_mem_mib']:9.0f} {r['vs_card']:6.1f}x {r['vs_batched']:6.2f}x "
            f"{r['vs_card_cpu']:9.1f}x {r['vs_batched_cpu']:9.2f}x"
        )
    print(f"max |score(b) - score(c)| = {diff:.2e}")
    bound = explain_targets(guard, settings, requests, tokens, results)
    record = {
        **results,
        "meta": {
            **run_meta(guard),
            "conversations": len(requests),
            "card_conversations": runs[0]["card"].conversations,
            "batch": args.batch,
            "repeats": args.repeats,
            "quick": args.quick,
            "prompt_tokens_median": statistics.median(tokens),
            "max_abs_score_diff_b_c": diff,
            **bound,
            "score_batch_tokens": settings.score_batch_tokens,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    # a --quick smoke run must not overwrite the day's full record
    out = write_record(record, guard.device, "-quick" if args.quick else "", args.json)
    print(f"wrote {out}")


def explain_targets(
    guard: LoadedGuard,
    settings: Settings,
    requests: list[ScoreRequest],
    tokens: list[int],
    results: dict[str, dict[str, float]],
) -> dict[str, float | int]:
    """Print the issue's targets against the measured ratios, with the bound the inputs set on (c) vs (a).

    (a) runs every prompt position; (c) runs each prefix once and every suffix. At equal per-token speed
    (c) can be at most full / (suffix + prefix) times faster than (a): a ratio below target next to a
    bound below target is the inputs' arithmetic, not a slow scorer.
    """
    suffix, prefix = GuardScorer(guard, settings).positions(requests)
    full = sum(tokens)
    bound = full / max(1, suffix + prefix)
    card_target = 30.0 if guard.device.type == "cuda" else 8.0
    vs_card, vs_batched = results["guardstream"]["vs_card"], results["guardstream"]["vs_batched"]
    print(
        f"positions: (a) and (b) run {full} prompt tokens; (c) runs {suffix} suffix + {prefix} prefix "
        f"tokens -> at equal per-token speed (c) is at most {bound:.1f}x (a)"
    )
    for name, target, got in (("(a)", card_target, vs_card), ("(b)", 2.5, vs_batched)):
        verdict = "met" if got >= target else "NOT met"
        print(f"target (c) >= {target:g}x {name} on {guard.device.type}: {got:.2f}x, {verdict}")
    return {
        "full_prompt_tokens": full,
        "suffix_tokens": suffix,
        "prefix_tokens": prefix,
        "position_bound_vs_card": bound,
    }


if __name__ == "__main__":
    main()
