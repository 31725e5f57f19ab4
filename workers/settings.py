"""The one configuration object. Every field reads ``GUARDSTREAM_<FIELD>`` from the environment.

Nothing else in guardstream reads ``os.environ``: pass a ``Settings`` (or ``get_settings()``) down.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class Settings(BaseSettings):
    """guardstream's configuration, frozen once read."""

    model_config = SettingsConfigDict(env_prefix="GUARDSTREAM_", frozen=True, extra="ignore")

    # --- services -------------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated."
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis holding tenant policies.")
    redis_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="Redis connect/read timeout; an outage must not stall workers."
    )
    ray_address: str | None = Field(default=None, description="Join this Ray cluster; None: local ray.init.")
    state_dir: Path = Field(
        default=Path(".state"), description="Where infra/ keeps Kafka/Redis data and logs."
    )
    kafka_heap: str = Field(default="512m", description="Max heap for the local dev broker.")
    kafka_controller_port: int = Field(
        default=9093, ge=1, le=65535, description="KRaft controller port of the local dev broker."
    )
    infra_start_timeout_s: float = Field(
        default=90.0, gt=0, le=900, description="How long `infra up` waits for each service to answer."
    )

    # --- topics ---------------------------------------------------------------------------------------
    input_topic: str = Field(default="guard.conversations", description="Conversation events in.")
    verdict_topic: str = Field(
        default="guard.verdicts", description="Verdicts out, unless a route names another."
    )
    dlq_topic: str = Field(default="guard.dlq", description="Dead letters out, with payload and reason.")
    topic_partitions: int = Field(default=4, ge=1, le=1024, description="Partitions for topics we create.")
    topic_replication: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Replication factor for topics we create (1: dev broker; 3 typical).",
    )
    consumer_group: str = Field(default="guardstream", description="Consumer group of the stream workers.")
    exactly_once: bool = Field(
        default=False, description="Produce verdicts and commit offsets in one Kafka transaction."
    )

    # --- stream ---------------------------------------------------------------------------------------
    stream_workers: int = Field(
        default=1, ge=1, le=256, description="Stream-worker actors (Kafka consumers)."
    )
    worker_num_cpus: float = Field(
        default=0.25, gt=0.0, le=16.0, description="CPUs reserved per stream worker."
    )
    batch_size: int = Field(default=16, ge=1, le=4096, description="Max events per micro-batch.")
    batch_max_wait_ms: int = Field(default=50, ge=0, le=60_000, description="Max wait to fill a micro-batch.")
    score_timeout_s: float = Field(
        default=120.0, gt=0, description="A batch slower than this is a scoring error."
    )
    replica_max_batch: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Max requests per forward pass; a replica coalesces calls from all workers up to this.",
    )
    replica_batch_wait_ms: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description="How long a replica waits for other workers' calls to join a forward batch.",
    )
    affinity_max_outstanding: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Calls a pool copy may have outstanding on a conversation's owner replica before that "
        "conversation's requests go to the least-loaded replica instead (the owner is saturated).",
    )
    replica_down_s: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="After a call finds a replica dead, how long its conversations are routed elsewhere.",
    )
    replica_max_restarts: int = Field(
        default=-1, ge=-1, description="Ray restarts of a dead replica actor; -1: unlimited."
    )
    replica_max_task_retries: int = Field(
        default=2, ge=0, description="Ray re-runs of a batch whose replica died mid-call (on the restart)."
    )
    max_event_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Larger payloads are dead-lettered."
    )
    max_turns: int = Field(default=64, ge=1, description="Events with more messages are dead-lettered.")
    max_in_flight: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="Records a worker may hold polled but not produced; above it, its partitions pause.",
    )
    commit_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="How often a stream worker commits acknowledged offsets."
    )

    # --- policies -------------------------------------------------------------------------------------
    unknown_tenant: Literal["default", "reject"] = Field(
        default="default", description="Tenant without a policy: use the default policy, or dead-letter."
    )
    policy_refresh_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Max age of a cached policy if a pub/sub invalidation is missed.",
    )

    # --- models ---------------------------------------------------------------------------------------
    models: dict[str, ModelSpec] = Field(
        default_factory=lambda: {"default": ModelSpec()},
        description='Model pools by name (JSON), e.g. {"default": {"path": "/models/Llama-Guard-3-1B"}}.',
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA if present.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bf16 on GPU, fp32 on CPU."
    )
    max_prompt_tokens: int = Field(default=4096, ge=64, description="Longer prompts drop the oldest turns.")
    kv_cache_mb: int = Field(
        default=1024,
        ge=0,
        description="Memory bound of each replica's KV tree (policy heads and conversations so far), "
        "least recently used node first. ~46 KB per token for SmolLM2-135M in fp32, so 1 GiB keeps ~22k "
        "tokens: some 20-40 live conversations per side. Replaces GUARDSTREAM_PREFIX_CACHE_MB.",
    )
    max_category_tokens: int = Field(default=16, ge=1, le=64, description="Greedy tokens decoded for codes.")
    score_batch_tokens: int = Field(
        default=4096,
        ge=64,
        description="Padded suffix tokens per scoring forward (rows x longest row): bounds memory, padding.",
    )

    # --- logging --------------------------------------------------------------------------------------
    log_format: Literal["json", "console"] = Field(default="json", description="json in production.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
