"""One model pool's settings: a checkpoint and how many replicas serve it (``Settings.models`` values)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.taxonomy import Generation


class ModelSpec(BaseModel):
    """One model pool: a checkpoint and how many replicas serve it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = Field(
        default=None, description="HF checkpoint dir or .gguf file; None: the shipped default model."
    )
    adapter: Path | None = Field(default=None, description="LoRA adapter dir (peft) applied on top of path.")
    prompt_format: Generation | None = Field(
        default=None,
        description="Llama Guard prompt format; None: inferred from the checkpoint, else an error.",
    )
    replicas: int = Field(default=1, ge=1, le=64, description="GuardReplica actors in this pool.")
    num_gpus: float = Field(default=0.0, ge=0.0, le=8.0, description="GPUs per replica (0 on CPU).")
    num_cpus: float = Field(default=0.5, gt=0.0, le=64.0, description="CPUs reserved per replica.")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Torch CPU threads per replica; None: Ray's default, int(num_cpus) but at least 1 (so 1 "
        "for the default 0.5). Set it to the cores a CPU replica may really use when its reservation is "
        "smaller: a stream worker beside it mostly waits on it, and one thread on a 2-core machine is half "
        "of the cores (BENCHMARKS.md, stream).",
    )
