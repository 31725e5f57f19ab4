"""The secured dev stack's files: a CA-signed server certificate, a SASL_SSL-only broker config, hashed
Redis ACLs, and env files that name password files instead of holding passwords."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from infra.kafka_local import render_server_properties
from infra.secure_local import (
    REDIS_READER,
    SecureKafkaService,
    SecureRedisService,
    client_settings,
    password_file,
    write_env_files,
)
from infra.tls import ensure_tls
from workers.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path,
        kafka_bootstrap="127.0.0.1:19092",
        infra_secure_kafka_port=19094,
        infra_secure_controller_port=19095,
        infra_secure_redis_port=16380,
    )


def test_server_certificate_verifies_against_the_ca_for_loopback(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "127.0.0.1")
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(str(files.server_cert), str(files.server_key))  # key matches the certificate
    assert files.server_key.stat().st_mode & 0o077 == 0
    assert ensure_tls(tmp_path, "127.0.0.1") == files
    assert files.ca_cert.read_bytes() == ensure_tls(tmp_path, "127.0.0.1").ca_cert.read_bytes()


def test_broker_config_has_only_a_sasl_ssl_client_listener(tmp_path: Path) -> None:
    kafka = SecureKafkaService(client_settings(_settings(tmp_path)))
    rendered = render_server_properties(
        "127.0.0.1", 19094, 19095, tmp_path, kafka.listeners, kafka.listener_values()
    )
    props = dict(line.split("=", 1) for line in rendered.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "PLAINTEXT://" not in props["listeners"].replace("CONTROLLER://", "")
    assert any(arg.startswith("SCRAM-SHA-512=[name=guardstream,") for arg in kafka.format_args())
    secret = password_file(kafka.settings, "guardstream").read_text()
    assert kafka.redact(f"bad {secret}") == "bad ***"


def test_redis_acl_file_holds_hashes_and_env_files_hold_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    service = SecureRedisService(client_settings(settings))
    service.home.mkdir(parents=True)
    service.prepare()
    acl = service.acl_file.read_text()
    assert acl.startswith("user default off\n")
    reader_password = password_file(settings, REDIS_READER).read_text()
    assert reader_password not in acl and f"user {REDIS_READER} on #" in acl
    argv = service.argv()
    assert argv[argv.index("--port") + 1] == "0" and argv[argv.index("--tls-port") + 1] == "16380"
    secure_env, writer_env = write_env_files(settings)
    env = dict(line.split("=", 1) for line in secure_env.read_text().splitlines())
    assert env["GUARDSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["GUARDSTREAM_REDIS_URL"] == "rediss://127.0.0.1:16380/0"
    assert env["GUARDSTREAM_REDIS_USERNAME"] == REDIS_READER
    assert "guardstream-writer" in writer_env.read_text()
    for path in (tmp_path / "secure" / "secrets").iterdir():
        assert path.read_text() not in secure_env.read_text() + writer_env.read_text()
    for key in [k for k in os.environ if k.startswith("GUARDSTREAM_")]:
        monkeypatch.delenv(key)  # the shell's own settings would win over the env file
    loaded = Settings(_env_file=secure_env)  # type: ignore[call-arg]
    assert loaded.kafka_sasl_password is not None
    assert loaded.kafka_sasl_password.get_secret_value() == password_file(settings, "guardstream").read_text()
