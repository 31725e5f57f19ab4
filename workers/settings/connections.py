"""Where guardstream's services are and how it authenticates to them: the connection part of ``Settings``.

:class:`ConnectionSettings` is a mixin of :class:`workers.settings.Settings`, never built on its own: its
fields read ``GUARDSTREAM_<FIELD>`` through ``Settings``' configuration like every other field. It holds
the service addresses, the Kafka and Redis TLS/SASL options, the secured dev stack's ports, and the checks
that tie them together (secret files, combinations kafka-python would reject only at the first connect).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator

SECRET_FIELDS: tuple[str, ...] = ("kafka_sasl_password", "kafka_ssl_password", "redis_password")
"""Secrets: each may also come from ``GUARDSTREAM_<NAME>_FILE`` or ``<secrets dir>/guardstream_<name>``."""


class ConnectionSettings(BaseModel):
    """Service addresses and the Kafka/Redis security options (a mixin of ``Settings``)."""

    # --- services -------------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        repr=False,
        description="Redis holding tenant policies; rediss:// for TLS. Put a password in redis_password, "
        "not here (guardstream redacts URLs it prints, but the URL is not a SecretStr).",
    )
    redis_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="Redis connect/read timeout; an outage must not stall workers."
    )
    ray_address: str | None = Field(default=None, description="Join this Ray cluster; None: local ray.init.")
    ray_worker_niceness: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Nice value of the worker processes (replicas, stream workers) of a Ray this process "
        "starts; a joined cluster keeps its own. Ray's default, 15, lets every other process of the node "
        "(the driver, a local Kafka broker, any other job) take the CPU before the model does: on a shared "
        "2-core machine the stream's replica then scored at a fraction of the in-process rate "
        "(BENCHMARKS.md, stream).",
    )
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

    # --- Kafka security (names follow kafka-python's own client options) -------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client connects; managed clusters want SASL_SSL."
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"] | None
    ) = Field(default=None, description="SASL mechanism; required with SASL_* protocols.")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user (PLAIN and SCRAM).")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (PLAIN and SCRAM); never logged or printed."
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="File holding kafka_sasl_password (a mounted Secret); read at start."
    )
    kafka_sasl_oauth_token_provider: str | None = Field(
        default=None,
        description="OAUTHBEARER: import path `module:attr` of a kafka-python AbstractTokenProvider class "
        "or a zero-argument factory returning one.",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA bundle that signed the brokers' certificates (SSL, SASL_SSL)."
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM client private key (mutual TLS).")
    kafka_ssl_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted kafka_ssl_keyfile."
    )
    kafka_ssl_password_file: Path | None = Field(default=None, description="File holding kafka_ssl_password.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker certificate names the host; off only in labs."
    )

    # --- Redis security (TLS is the rediss:// scheme of redis_url) ------------------------------------
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (overrides one in redis_url); stream workers: read-only."
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis ACL password (overrides one in redis_url); never logged or printed."
    )
    redis_password_file: Path | None = Field(default=None, description="File holding redis_password.")
    redis_ssl_cafile: Path | None = Field(default=None, description="PEM CA of the Redis server (rediss://).")
    redis_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (rediss://).")
    redis_ssl_keyfile: Path | None = Field(default=None, description="PEM client private key (rediss://).")
    redis_ssl_check_hostname: bool = Field(
        default=True, description="Check that the Redis certificate names the host (rediss://)."
    )

    # --- local secured stack (`guardstream infra up --secure`) ----------------------------------------
    infra_secure: bool = Field(
        default=False,
        description="`infra up` starts the secured dev stack (SASL_SSL broker, TLS+ACL Redis) instead.",
    )
    infra_secure_kafka_port: int = Field(
        default=9094, ge=1, le=65535, description="SASL_SSL listener port of the secured dev broker."
    )
    infra_secure_controller_port: int = Field(
        default=9095, ge=1, le=65535, description="KRaft controller port of the secured dev broker."
    )
    infra_secure_redis_port: int = Field(
        default=6380, ge=1, le=65535, description="TLS port of the secured dev Redis."
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``X_FILE`` fills the secret ``X`` from a file (a mounted Kubernetes Secret), trailing newline cut.

        A set ``X`` wins over its file. An unreadable file is an error naming the path, never a content.
        """
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            path = data.get(f"{name}_file")
            if path and not data.get(name):
                try:
                    data[name] = Path(path).read_text().rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(f"{name}_file: cannot read {path}: {exc.strerror}") from None
        return data

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        """Combinations kafka-python would only reject at the first connect, long after start-up."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and self.kafka_sasl_mechanism is None:
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol} needs kafka_sasl_mechanism"
            )
        password_sasl = self.kafka_sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
        if sasl and password_sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"kafka_sasl_mechanism={self.kafka_sasl_mechanism} needs kafka_sasl_username and "
                "kafka_sasl_password (or kafka_sasl_password_file)"
            )
        if sasl and self.kafka_sasl_mechanism == "OAUTHBEARER" and not self.kafka_sasl_oauth_token_provider:
            raise ValueError("kafka_sasl_mechanism=OAUTHBEARER needs kafka_sasl_oauth_token_provider")
        redis_tls = any((self.redis_ssl_cafile, self.redis_ssl_certfile, self.redis_ssl_keyfile))
        if redis_tls and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_ssl_* settings need a rediss:// redis_url (TLS)")
        return self
