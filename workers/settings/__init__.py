"""The one configuration object. Every field reads ``GUARDSTREAM_<FIELD>`` from the environment.

Nothing else in guardstream reads ``os.environ``: pass a ``Settings`` (or ``get_settings()``) down.

The fields are declared in groups: the connection ones (services, Kafka/Redis TLS and SASL, the secured
dev stack) in :mod:`workers.settings.connections`, a model pool in :mod:`workers.settings.model_spec`,
the rest here. ``Settings`` is one frozen pydantic-settings object; import everything from here.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.settings.connections import SECRET_FIELDS, ConnectionSettings
from workers.settings.model_spec import ModelSpec

__all__ = ["SECRET_FIELDS", "ConnectionSettings", "ModelSpec", "Settings", "get_settings"]


class Settings(ConnectionSettings, BaseSettings):
    """guardstream's configuration, frozen once read."""

    model_config = SettingsConfigDict(
        env_prefix="GUARDSTREAM_",
        frozen=True,
        extra="ignore",
        # A validation error must never echo what it was given: that could be a password.
        hide_input_in_errors=True,
    )

    # --- tenant isolation -----------------------------------------------------------------------------
    tenant_topic_prefix: str = Field(
        default="guard.verdicts.",
        min_length=1,
        max_length=200,
        description="Prefix every tenant's own route.verdict_topic must have; `policy set` refuses others.",
    )
    tenant_source: Literal["payload", "key", "header"] = Field(
        default="payload",
        description="Who says which tenant an event is: its payload alone (the producer is trusted), or "
        "the record key's `tenant:` part / a record header, which must then match the payload's tenant_id.",
    )
    tenant_header: str = Field(
        default="tenant_id", min_length=1, description="The record header read when tenant_source=header."
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
    max_output_bytes: int = Field(
        default=1_000_000,
        ge=16 * 1024,
        le=1_000_000,
        description="Largest verdict or dead letter produced: under the producer's 1 MiB max_request_size "
        "with room for key and batch overhead; a bigger dead letter's raw_payload is cut "
        "(payload_truncated).",
    )
    max_in_flight: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="Records a worker may hold polled but not produced; above it, its partitions pause.",
    )
    undecodable_batch: Literal["dead-letter", "stop"] = Field(
        default="dead-letter",
        description="A record batch that cannot be decoded (corrupt, unknown codec): one undecodable_batch "
        "dead letter naming its offsets and skip it, or stop the stream with the error.",
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

    # --- observability --------------------------------------------------------------------------------
    metrics_port: int = Field(
        default=9400,
        ge=0,
        le=65535,
        description="Port where `stream` serves /metrics, /healthz and /readyz; 0: no endpoint.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the metrics endpoint binds; 0.0.0.0 in a pod/container so probes reach it.",
    )
    metrics_refresh_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="How often `stream` collects the actors' metrics, checks readiness and reads lag.",
    )
    metrics_max_tenants: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Distinct tenant label values in metrics; later tenants are counted as 'other'.",
    )

    # --- logging --------------------------------------------------------------------------------------
    log_format: Literal["json", "console"] = Field(default="json", description="json in production.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once.

    ``GUARDSTREAM_SECRETS_DIR`` names a directory of secret files (pydantic-settings' ``secrets_dir``: one
    file per setting, named ``guardstream_<field>``, e.g. a Kubernetes Secret volume); environment
    variables win over it.
    """
    secrets_dir = os.environ.get("GUARDSTREAM_SECRETS_DIR")
    return Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
