"""The secured dev stack (`guardstream infra up --secure`): a SASL_SSL-only broker and a TLS + ACL Redis.

It is a second pair of services, with its own state (``<state_dir>/secure``, ``kafka-secure``,
``redis-secure``) and ports (``infra_secure_*``), so it can run beside the plaintext stack. What it makes:

- a dev CA and a server certificate (``secure/tls``, :mod:`infra.tls`), trusted by clients through
  ``ssl_cafile`` with hostname checks on;
- random passwords, one file each, 0600, under ``secure/secrets``; the broker's SCRAM-SHA-512 users are
  created when its storage is formatted, Redis gets an ACL file holding only their SHA-256 hashes;
- ``<state_dir>/secure.env`` (stream workers: the read-only Redis user) and ``secure-writer.env`` (the
  Redis user ``guardstream policy`` needs): ``GUARDSTREAM_...=...`` lines naming the password *files*, so
  neither env file holds a secret.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from infra.kafka_local import KAFKA_DIR, KafkaService, parse_bootstrap
from infra.redis_local import RedisService
from infra.service import LocalService
from infra.tls import TlsFiles, ensure_tls
from workers.settings import Settings

SASL_SSL_LISTENERS = KAFKA_DIR / "listeners-sasl-ssl.properties"
KAFKA_USER = "guardstream"
"""The SCRAM user every guardstream client connects as."""
KAFKA_BROKER_USER = "broker"
"""The SCRAM user the broker uses towards itself (inter-broker listener)."""
REDIS_READER = "guardstream-reader"
REDIS_WRITER = "guardstream-writer"
REDIS_ADMIN = "guardstream-admin"

_READ = "+get +smembers +subscribe +unsubscribe +ping"
REDIS_ACL: dict[str, str] = {
    # Stream workers: read policies and listen for invalidations; %R~ makes the keys read-only even if a
    # write command were ever allowed.
    REDIS_READER: f"resetkeys %R~guardstream:* resetchannels &guardstream:* -@all {_READ}",
    # `guardstream policy`: writes one tenant's policy, version and the invalidation in one transaction.
    REDIS_WRITER: "resetkeys ~guardstream:* resetchannels &guardstream:* -@all "
    f"{_READ} +set +del +sadd +srem +publish +multi +exec +discard +watch +unwatch",
    # Operators and tests (clean-ups); never given to a worker.
    REDIS_ADMIN: "~* &* +@all",
}


def secure_home(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "secure"


def password_file(settings: Settings, user: str) -> Path:
    """The file holding ``user``'s password, created with a random one on first use (0600)."""
    path = secure_home(settings) / "secrets" / f"{user}.password"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return path


def _password(settings: Settings, user: str) -> str:
    return password_file(settings, user).read_text().strip()


def tls_files(settings: Settings) -> TlsFiles:
    host, _ = parse_bootstrap(settings.kafka_bootstrap)
    return ensure_tls(secure_home(settings) / "tls", host)


def client_env(settings: Settings, redis_user: str = REDIS_READER) -> dict[str, str]:
    """``GUARDSTREAM_*`` variables pointing a client at the secured stack as ``redis_user``."""
    host, _ = parse_bootstrap(settings.kafka_bootstrap)
    tls = tls_files(settings)
    return {
        "GUARDSTREAM_INFRA_SECURE": "true",
        "GUARDSTREAM_INFRA_SECURE_KAFKA_PORT": str(settings.infra_secure_kafka_port),
        "GUARDSTREAM_INFRA_SECURE_CONTROLLER_PORT": str(settings.infra_secure_controller_port),
        "GUARDSTREAM_INFRA_SECURE_REDIS_PORT": str(settings.infra_secure_redis_port),
        "GUARDSTREAM_KAFKA_BOOTSTRAP": f"{host}:{settings.infra_secure_kafka_port}",
        "GUARDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "GUARDSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "GUARDSTREAM_KAFKA_SASL_USERNAME": KAFKA_USER,
        "GUARDSTREAM_KAFKA_SASL_PASSWORD_FILE": str(password_file(settings, KAFKA_USER)),
        "GUARDSTREAM_KAFKA_SSL_CAFILE": str(tls.ca_cert),
        "GUARDSTREAM_REDIS_URL": f"rediss://{host}:{settings.infra_secure_redis_port}/0",
        "GUARDSTREAM_REDIS_USERNAME": redis_user,
        "GUARDSTREAM_REDIS_PASSWORD_FILE": str(password_file(settings, redis_user)),
        "GUARDSTREAM_REDIS_SSL_CAFILE": str(tls.ca_cert),
    }


def client_settings(settings: Settings, redis_user: str = REDIS_READER) -> Settings:
    """``settings`` as a client of the secured stack sees them (what ``secure.env`` sets)."""
    host, _ = parse_bootstrap(settings.kafka_bootstrap)
    tls = tls_files(settings)
    return settings.model_copy(
        update={
            "infra_secure": True,
            "kafka_bootstrap": f"{host}:{settings.infra_secure_kafka_port}",
            "kafka_controller_port": settings.infra_secure_controller_port,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": KAFKA_USER,
            "kafka_sasl_password": SecretStr(_password(settings, KAFKA_USER)),
            "kafka_ssl_cafile": tls.ca_cert,
            "redis_url": f"rediss://{host}:{settings.infra_secure_redis_port}/0",
            "redis_username": redis_user,
            "redis_password": SecretStr(_password(settings, redis_user)),
            "redis_ssl_cafile": tls.ca_cert,
        }
    )


def write_env_files(settings: Settings) -> list[Path]:
    """``secure.env`` (read-only Redis user) and ``secure-writer.env`` (policy writer) in the state dir."""
    written = []
    for name, user in (("secure.env", REDIS_READER), ("secure-writer.env", REDIS_WRITER)):
        path = settings.state_dir.resolve() / name
        lines = [f"{key}={value}" for key, value in client_env(settings, user).items()]
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


class SecureKafkaService(KafkaService):
    """The broker with only a SASL_SSL client listener; SCRAM users made when its storage is formatted."""

    name = "kafka-secure"
    listeners = SASL_SSL_LISTENERS

    def listener_values(self) -> dict[str, str]:
        tls = tls_files(self.settings)
        return {
            "broker_user": KAFKA_BROKER_USER,
            "broker_password": _password(self.settings, KAFKA_BROKER_USER),
            "keystore": str(tls.server_bundle),
            "truststore": str(tls.ca_cert),
        }

    def format_args(self) -> list[str]:
        args = []
        for user in (KAFKA_BROKER_USER, KAFKA_USER):
            args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={_password(self.settings, user)}]"]
        return args

    def redact(self, text: str) -> str:
        for user in (KAFKA_BROKER_USER, KAFKA_USER):
            text = text.replace(_password(self.settings, user), "***")
        return text


class SecureRedisService(RedisService):
    """Redis on a TLS port only (no plaintext port), with ACL users and the default user disabled."""

    name = "redis-secure"

    @property
    def acl_file(self) -> Path:
        return self.home / "users.acl"

    def prepare(self) -> None:
        super().prepare()
        lines = ["user default off"]
        for user, rules in REDIS_ACL.items():
            digest = hashlib.sha256(_password(self.settings, user).encode()).hexdigest()
            lines.append(f"user {user} on #{digest} {rules}")
        self.acl_file.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        tls = tls_files(self.settings)
        _, port = self.host_port
        argv = super().argv()
        argv[argv.index("--port") + 1] = "0"
        return [
            *argv,
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(tls.server_cert),
            "--tls-key-file",
            str(tls.server_key),
            "--tls-ca-cert-file",
            str(tls.ca_cert),
            "--tls-auth-clients",
            "no",
            "--aclfile",
            str(self.acl_file),
        ]


def secure_services(settings: Settings) -> list[LocalService]:
    """The secured broker and Redis, probed as the stream workers' client would connect."""
    client = client_settings(settings)
    return [SecureKafkaService(client), SecureRedisService(client)]
