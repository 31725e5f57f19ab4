"""Verdict token resolution: per tokenizer, loud failure when the verdict words are split."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from schemas.taxonomy import Generation
from workers.errors import ModelLoadError
from workers.guard.formats import get_format
from workers.guard.tokens import GuardTokens, encode, resolve_tokens


@pytest.fixture(scope="module")
def tiny_tokens(tiny_guard_path: Path) -> GuardTokens:
    tokenizer = AutoTokenizer.from_pretrained(tiny_guard_path)
    return resolve_tokens(tokenizer, get_format(Generation.LG3))


def test_smollm2_tokenizer_uses_space_prefixed_verdict_words(tiny_tokens: GuardTokens) -> None:
    assert (tiny_tokens.safe_id, tiny_tokens.unsafe_id, tiny_tokens.verdict_form) == (2991, 20408, " ")
    assert tiny_tokens.verdict_prefix_ids == tuple(encode(tiny_tokens.tokenizer, "\n\n"))
    eot = tiny_tokens.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert tiny_tokens.stop_ids[0] == eot


def test_formats_without_verdict_prefix_feed_nothing_before_the_verdict(tiny_guard_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_guard_path)
    assert resolve_tokens(tokenizer, get_format(Generation.LG2)).verdict_prefix_ids == ()


def test_prompt_encoding_parses_special_tokens_and_adds_no_bos(tiny_tokens: GuardTokens) -> None:
    ids = tiny_tokens.encode_prompt("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    bos = tiny_tokens.tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert ids[0] == bos and ids.count(bos) == 1
    assert len(ids) == 4


def test_target_ids_are_prefix_verdict_codes_stop(tiny_tokens: GuardTokens) -> None:
    prefix = list(tiny_tokens.verdict_prefix_ids)
    unsafe = tiny_tokens.target_ids("unsafe", ["S1", "S10"])
    assert unsafe[: len(prefix) + 1] == [*prefix, tiny_tokens.unsafe_id]
    assert tiny_tokens.decode(unsafe[len(prefix) : -1]).strip() == "unsafe\nS1,S10"
    assert unsafe[-1] == tiny_tokens.stop_ids[0]
    assert tiny_tokens.target_ids("safe", ["S1"]) == [*prefix, tiny_tokens.safe_id, tiny_tokens.stop_ids[0]]


def _char_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer that knows only characters: no verdict word is a single token."""
    vocab = {c: i for i, c in enumerate(sorted(set("safeun \n<>|_/abcdefghijklmnopqrstuvwxyz")))}
    vocab["</s>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")


def test_tokenizer_without_single_token_verdicts_fails_loudly() -> None:
    with pytest.raises(ModelLoadError, match="single-token verdict"):
        resolve_tokens(_char_tokenizer(), get_format(Generation.LG1))
