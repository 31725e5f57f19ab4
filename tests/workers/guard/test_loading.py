"""Loading checkpoints: prompt format never guessed silently, adapters applied, GGUF cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from schemas.taxonomy import Generation
from workers.errors import ModelLoadError, PromptFormatError
from workers.guard.loading import MARKER_FILE, load_guard
from workers.settings import ModelSpec, Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", device="cpu")


def _unmarked_copy(source: Path, target: Path) -> Path:
    """The tiny guard under another name, without its format marker (files symlinked, not copied)."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != MARKER_FILE:
            (target / item.name).symlink_to(item)
    return target


def test_marker_file_declares_the_format(tiny_guard_path: Path, settings: Settings) -> None:
    guard = load_guard(ModelSpec(path=tiny_guard_path), settings)
    assert guard.prompt_format.generation == Generation.LG3
    assert guard.name == f"llama-guard-3 @ {tiny_guard_path}"
    assert guard.device.type == "cpu" and guard.dtype == torch.float32
    assert not guard.model.training


def test_configured_format_wins_over_the_marker(tiny_guard_path: Path, settings: Settings) -> None:
    guard = load_guard(ModelSpec(path=tiny_guard_path, prompt_format=Generation.LG1), settings)
    assert guard.prompt_format.generation == Generation.LG1
    assert guard.tokens.verdict_prefix_ids == ()


def test_meta_checkpoint_name_is_recognised(
    tiny_guard_path: Path, tmp_path: Path, settings: Settings
) -> None:
    plain = _unmarked_copy(tiny_guard_path, tmp_path / "Llama-Guard-3-1B")
    assert load_guard(ModelSpec(path=plain), settings).prompt_format.generation == Generation.LG3_1B


def test_unknown_checkpoint_without_format_is_an_error(
    tiny_guard_path: Path, tmp_path: Path, settings: Settings
) -> None:
    plain = _unmarked_copy(tiny_guard_path, tmp_path / "some-model")
    with pytest.raises(PromptFormatError, match="prompt_format"):
        load_guard(ModelSpec(path=plain), settings)


def test_bad_paths_are_load_errors(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_guard(ModelSpec(path=tmp_path / "missing"), settings)
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load_guard(ModelSpec(path=weights), settings)


def test_lora_adapter_is_merged_on_top(tiny_guard_path: Path, tmp_path: Path, settings: Settings) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_guard(ModelSpec(path=tiny_guard_path), settings)
    lora = get_peft_model(
        base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    (adapter / MARKER_FILE).write_text(json.dumps({"prompt_format": "llama-guard-2"}))
    ids = torch.tensor([base.tokens.encode_prompt("<|begin_of_text|>User: hello")])
    with torch.inference_mode():
        expected = lora(ids).logits
        plain = load_guard(ModelSpec(path=tiny_guard_path), settings).model(ids).logits
    tuned = load_guard(ModelSpec(path=tiny_guard_path, adapter=adapter), settings)
    with torch.inference_mode():
        got = tuned.model(ids).logits
    assert tuned.prompt_format.generation == Generation.LG2
    assert tuned.name.endswith(f"+ {adapter}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


@pytest.mark.slow
def test_default_gguf_model_loads_and_is_cached(settings: Settings) -> None:
    guard = load_guard(ModelSpec(), settings)
    assert (guard.tokens.safe_id, guard.tokens.unsafe_id) == (2991, 20408)
    assert guard.prompt_format.generation == Generation.LG3
    assert any((settings.state_dir / "models").glob("SmolLM2-135M-Instruct*/model.safetensors"))
