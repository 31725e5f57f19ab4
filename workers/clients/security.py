"""How guardstream's Kafka and Redis clients authenticate: Settings in, client keyword arguments out.

One pure function per client library, so every client the project builds (stream consumer and producers,
admin, ``produce``, ``topics``, backfill ``--to-kafka``, the demo, infra probes) connects the same way and a
new security option is added in one place. Secrets stay ``SecretStr`` until the last moment: they are
unwrapped only into the returned dict that goes straight to the client constructor, which is never logged.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from workers.errors import GuardstreamError
from workers.settings import Settings


class SecurityConfigError(GuardstreamError):
    """A security setting can't be turned into a working client option (e.g. a bad token-provider path)."""


@cache
def load_token_provider(path: str) -> Any:
    """The OAUTHBEARER token provider named ``module:attr``: a class or factory called with no arguments.

    Cached per path so all clients of a process share one provider (providers cache and refresh tokens).
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SecurityConfigError(f"kafka_sasl_oauth_token_provider must be module:attr, got {path!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SecurityConfigError(f"kafka_sasl_oauth_token_provider {path!r}: {exc}") from None
    provider = factory()
    if not callable(getattr(provider, "token", None)):
        raise SecurityConfigError(f"kafka_sasl_oauth_token_provider {path!r} has no token() method")
    return provider


def kafka_security_kwargs(settings: Settings) -> dict[str, Any]:
    """kafka-python options for ``settings``' security protocol; empty for PLAINTEXT.

    Valid for ``KafkaConsumer``, ``KafkaProducer`` and ``KafkaAdminClient`` alike.
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol in {"SSL", "SASL_SSL"}:
        kwargs["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
        for option in ("cafile", "certfile", "keyfile"):
            path = getattr(settings, f"kafka_ssl_{option}")
            if path is not None:
                kwargs[f"ssl_{option}"] = str(path)
        if settings.kafka_ssl_password is not None:
            kwargs["ssl_password"] = settings.kafka_ssl_password.get_secret_value()
    if protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        if settings.kafka_sasl_mechanism == "OAUTHBEARER":
            provider_path = settings.kafka_sasl_oauth_token_provider
            assert provider_path is not None  # Settings validates it
            kwargs["sasl_oauth_token_provider"] = load_token_provider(provider_path)
        elif settings.kafka_sasl_username is not None:
            kwargs["sasl_plain_username"] = settings.kafka_sasl_username
            if settings.kafka_sasl_password is not None:
                kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers plus :func:`kafka_security_kwargs`: what every Kafka client starts from."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **kafka_security_kwargs(settings)}


def redis_security_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py options for ``Redis.from_url(settings.redis_url, ...)``: ACL user, password, TLS files.

    TLS itself is the ``rediss://`` scheme of the URL; a user or password set here overrides the URL's.
    """
    kwargs: dict[str, Any] = {}
    if settings.redis_username is not None:
        kwargs["username"] = settings.redis_username
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        kwargs["ssl_check_hostname"] = settings.redis_ssl_check_hostname
        for option, path in (
            ("ssl_ca_certs", settings.redis_ssl_cafile),
            ("ssl_certfile", settings.redis_ssl_certfile),
            ("ssl_keyfile", settings.redis_ssl_keyfile),
        ):
            if path is not None:
                kwargs[option] = str(path)
    return kwargs


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: the form to print, log or put in an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
