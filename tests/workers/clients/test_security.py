"""Security settings → client options, secrets from files, and secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.clients.security import (
    SecurityConfigError,
    kafka_client_kwargs,
    kafka_security_kwargs,
    redact_url,
    redis_security_kwargs,
)
from workers.settings import Settings

SECRET = "s3cr3t-Pa55word-never-shown"


class StaticTokenProvider:
    """An OAUTHBEARER provider as a deployment would plug in through its import path."""

    def token(self) -> str:
        return "token-for-tests"


def scram(**extra: object) -> Settings:
    return Settings(
        kafka_bootstrap="broker:9096",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="guardstream",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=Path("/etc/kafka/ca.pem"),
        **extra,
    )


def test_plaintext_adds_nothing() -> None:
    settings = Settings(kafka_bootstrap="a:1,b:2")
    assert kafka_security_kwargs(settings) == {}
    assert kafka_client_kwargs(settings) == {"bootstrap_servers": "a:1,b:2"}


def test_sasl_ssl_scram_options() -> None:
    assert kafka_client_kwargs(scram()) == {
        "bootstrap_servers": "broker:9096",
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": "/etc/kafka/ca.pem",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "guardstream",
        "sasl_plain_password": SECRET,
    }


def test_ssl_only_has_no_sasl_options() -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=Path("c.pem"),
        kafka_ssl_keyfile=Path("k.pem"),
        kafka_ssl_check_hostname=False,
    )
    assert kafka_security_kwargs(settings) == {
        "security_protocol": "SSL",
        "ssl_check_hostname": False,
        "ssl_certfile": "c.pem",
        "ssl_keyfile": "k.pem",
    }


def test_oauthbearer_loads_the_provider_by_import_path() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider=f"{__name__}:StaticTokenProvider",
    )
    provider = kafka_security_kwargs(settings)["sasl_oauth_token_provider"]
    assert provider.token() == "token-for-tests"
    assert kafka_security_kwargs(settings)["sasl_oauth_token_provider"] is provider


def test_bad_token_provider_path_is_a_clear_error() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_provider=f"{__name__}:NoSuchProvider",
    )
    with pytest.raises(SecurityConfigError, match="NoSuchProvider"):
        kafka_security_kwargs(settings)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "needs kafka_sasl_username",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "needs kafka_sasl_oauth_token_provider",
        ),
        ({"redis_ssl_cafile": Path("ca.pem")}, "rediss://"),
    ],
)
def test_incomplete_security_settings_fail_at_start(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]


def test_password_from_file_and_from_secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kafka_password").write_text(SECRET + "\n")
    monkeypatch.setenv("GUARDSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GUARDSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("GUARDSTREAM_KAFKA_SASL_USERNAME", "guardstream")
    monkeypatch.setenv("GUARDSTREAM_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "kafka_password"))
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "guardstream_redis_password").write_text("from-secret-volume")
    from_dir = Settings(_secrets_dir=secrets)  # type: ignore[call-arg]
    assert redis_security_kwargs(from_dir)["password"] == "from-secret-volume"


def test_unreadable_password_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read") as caught:
        Settings(kafka_sasl_password_file=tmp_path / "missing")
    assert str(tmp_path / "missing") in str(caught.value)


def test_secrets_never_in_repr_dumps_or_validation_errors() -> None:
    settings = scram(redis_password=SECRET, redis_url=f"redis://u:{SECRET}@h:6379/0")
    for shown in (repr(settings), str(settings)):
        assert SECRET not in shown
    dumped = settings.model_dump_json(exclude={"redis_url"})
    assert SECRET not in dumped
    assert "**********" in dumped
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_sasl_password=SECRET, kafka_security_protocol="SASL_SSL")
    assert SECRET not in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        Settings(redis_password=SECRET, batch_size=SECRET)  # type: ignore[arg-type]
    assert SECRET not in str(caught.value)


def test_redis_options_and_redacted_url() -> None:
    settings = Settings(
        redis_url="rediss://127.0.0.1:6380/0",
        redis_username="guardstream-reader",
        redis_password=SECRET,
        redis_ssl_cafile=Path("ca.pem"),
    )
    assert redis_security_kwargs(settings) == {
        "username": "guardstream-reader",
        "password": SECRET,
        "ssl_check_hostname": True,
        "ssl_ca_certs": "ca.pem",
    }
    assert redact_url(f"rediss://reader:{SECRET}@10.0.0.1:6380/0") == "rediss://reader:***@10.0.0.1:6380/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
