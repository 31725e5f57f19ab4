"""How many tokens the fixed tail after the conversation costs, per tokenizer: the limit of KV reuse.

    .venv/bin/python benchmarks/tail_bound.py [--results benchmarks/results/<...>-incremental.json]

Every event reruns the tail (``<END CONVERSATION>``, the instructions, the generation cue, the verdict
prefix) because it attends to the conversation. The default model's tokenizer (SmolLM2) spells Llama 3's
special tokens as text; a real Llama 3 tokenizer has them as one id each. Its vocabulary file is not
available offline, so the Llama 3 figure is a *lower bound*, computed exactly: the pieces of Llama 3's
pre-tokenizer (the regex of ``meta-llama/llama-models`` ``models/llama3/tokenizer.py``; BPE never merges
across pieces, so each piece is at least one token) plus one id per special token. With ``--results``
it redoes the position bound of an incremental run with that tail in place of the measured one (every
other token as measured).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import regex
from score_bench import ROOT

from workers.guard.loading import load_guard
from workers.settings import ModelSpec, Settings

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
SPECIAL = re.compile(r"<\|[a-z_]+\|>")


def llama3_lower_bound(text: str) -> int:
    """Tokens a Llama 3 tokenizer needs at least for ``text`` (specials as one id each)."""
    count = 0
    for part in SPECIAL.split(text):
        count += len(regex.findall(LLAMA3_PATTERN, part))
    return count + len(SPECIAL.findall(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=None, help="An incremental_bench results file.")
    args = parser.parse_args()
    guard = load_guard(ModelSpec(), Settings())
    golden = [json.loads(line) for line in (ROOT.parent / "shared" / "llama_guard" / "golden.jsonl").open()]
    tails = {}
    for vector in golden:
        if vector["generation"] == "llama-guard-3" and vector["variant"] == "canonical":
            prompt = vector["expected_prompt"]
            side = vector["role_to_classify"]
            tails[side] = (
                prompt[prompt.rindex("\n\n<END CONVERSATION>") :] + guard.prompt_format.verdict_prefix
            )
    print(f"{'side':<6} {'SmolLM2 tokens':>14} {'Llama 3 (at least)':>18}  of which specials")
    bounds = {}
    for side, tail in sorted(tails.items()):
        smol = len(guard.tokens.encode_prompt(tail))
        llama3 = llama3_lower_bound(tail)
        bounds[side] = (smol, llama3)
        print(f"{side:<6} {smol:>14} {llama3:>18}  {len(SPECIAL.findall(tail))}")
    if args.results:
        record = json.loads(args.results.read_text())
        a, b, c = (record[m]["tokens_per_event"] for m in ("card", "prefix_only", "guardstream"))
        smol, llama3 = max(bounds.values())
        cut = smol - llama3
        lines = [
            f"{args.results.name}: per event (a) {a:.0f}, (b) {b:.0f}, (c) {c:.0f} positions, tail {smol}:",
            f"  bound {a / c:.1f}x (a), {b / c:.2f}x (b)",
            f"  with a Llama 3 tail of >= {llama3}: (a) {a - cut:.0f}, (b) {b - cut:.0f}, (c) {c - cut:.0f}"
            f" -> at most {(a - cut) / (c - cut):.1f}x (a), {(b - cut) / (c - cut):.2f}x (b)",
            f"  with no tail at all: at most {(a - smol) / (c - smol):.1f}x (a),"
            f" {(b - smol) / (c - smol):.2f}x (b)",
        ]
        print("\n".join(lines))


if __name__ == "__main__":
    main()
