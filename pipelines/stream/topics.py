"""The topics a deployment needs, created if missing: input, verdicts, dead letters, tenant verdict topics.

Creating them up front (rather than relying on broker auto-creation, often disabled in production) gives
every topic ``settings.topic_partitions`` partitions, which bounds the stream's parallelism: one partition
is read by one worker at a time. Tenant verdict topics are also created on demand by the sink when a policy
names a new one while the stream runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import typer

from pipelines.errors import user_errors
from schemas.policy import TenantPolicy
from workers.logging import get_logger
from workers.settings import Settings, get_settings

log = get_logger(__name__)


def stream_topics(settings: Settings, policies: Iterable[TenantPolicy] = ()) -> list[str]:
    """Input, verdict and DLQ topics plus every verdict topic a policy routes to, sorted."""
    names = {settings.input_topic, settings.verdict_topic, settings.dlq_topic}
    names |= {p.route.verdict_topic for p in policies if p.route.verdict_topic}
    return sorted(names)


def ensure_stream_topics(settings: Settings, *, with_policies: bool = True) -> list[str]:
    """Create the missing stream topics; returns the names created.

    ``with_policies`` also reads the stored policies (Redis) for their verdict topics; Redis being down is
    not fatal here, the sink creates those topics on first use. Neither is a tenant topic Kafka refuses to
    create (an invalid or denied name): that is logged, and the stream's sink dead-letters that tenant's
    verdicts (``produce_failed``) instead of the whole stream failing to start.
    """
    from kafka.errors import KafkaError

    from workers.clients.kafka import ensure_topics
    from workers.errors import PolicyStoreUnavailable

    policies: list[TenantPolicy] = []
    if with_policies:
        from workers.policies.redis_store import RedisPolicyStore

        store = RedisPolicyStore(settings)
        try:
            policies = store.list()
        except PolicyStoreUnavailable:
            policies = []
        finally:
            store.close()
    created = ensure_topics(settings, stream_topics(settings))
    for name in sorted(set(stream_topics(settings, policies)) - set(stream_topics(settings))):
        try:
            created += ensure_topics(settings, [name])
        except KafkaError as exc:
            log.error("topic_unavailable", topic=name, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return created


def topics_command() -> None:
    """Create the input, verdict, DLQ and tenant verdict topics if missing."""
    settings = get_settings()
    with user_errors():
        created = ensure_stream_topics(settings)
    for name in stream_topics(settings):
        typer.echo(f"{name}\t{'created' if name in created else 'exists'}")
    for name in sorted(set(created) - set(stream_topics(settings))):
        typer.echo(f"{name}\tcreated")


def register(app: typer.Typer) -> None:
    app.command("topics")(topics_command)
