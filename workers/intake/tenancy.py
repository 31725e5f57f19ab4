"""Tenant isolation at the edges: who says which tenant an event is, and where a tenant's verdicts may go.

Trust model (README "Security"): with ``tenant_source=payload`` the producer of the input topic is trusted
to name the tenant, since the event's own ``tenant_id`` decides whose policy scores it and where its
verdict goes. With ``key`` or ``header`` the tenant is also carried outside the payload, where a deployment
can bind it to the producer (one producer per tenant writing keys/headers it controls, or a gateway
that sets them); an event whose payload names a different tenant is dead-lettered as ``tenant_mismatch``
instead of being scored under that tenant's rules.

Pure functions, no Kafka: the stream worker calls :func:`check_tenant` per parsed event, ``policy set``
calls :func:`verdict_topic_problem` before anything reaches Redis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from schemas.events import ConversationEvent
from schemas.policy import TenantPolicy
from schemas.verdicts import DeadLetter, DeadLetterCode
from workers.intake.records import Source, dead_letter
from workers.settings import Settings

TenantSource = Literal["payload", "key", "header"]

KAFKA_TOPIC_MAX = 249
TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


def claimed_tenant(
    tenant_source: TenantSource,
    key: str | None,
    headers: Sequence[tuple[str, bytes | None]],
    header: str,
) -> str | None:
    """The tenant named outside the payload: the key's part before its first ``:``, or the last
    ``header`` record header (UTF-8); None when there is none."""
    if tenant_source == "key":
        return key.split(":", 1)[0] if key else None
    if tenant_source == "header":
        values = [value for name, value in headers if name == header and value is not None]
        return values[-1].decode("utf-8", "replace") if values else None
    return None


def check_tenant(
    event: ConversationEvent,
    raw: bytes,
    source: Source,
    *,
    tenant_source: TenantSource,
    headers: Sequence[tuple[str, bytes | None]] = (),
    header: str = "tenant_id",
) -> DeadLetter | None:
    """A ``tenant_mismatch`` dead letter when the key/header tenant is missing or differs from the
    payload's ``tenant_id``; None when the event may be scored as its payload says (always for ``payload``).
    """
    if tenant_source == "payload":
        return None
    claimed = claimed_tenant(tenant_source, source.key, headers, header)
    if claimed == event.tenant_id:
        return None
    where = "record key" if tenant_source == "key" else f"record header {header!r}"
    if claimed is None:
        reason = f"tenant_id: {where} names no tenant, and tenant_source={tenant_source} requires one"
    else:
        reason = f"tenant_id: payload says {event.tenant_id!r} but the {where} says {claimed!r}"
    return dead_letter(
        DeadLetterCode.TENANT_MISMATCH,
        reason,
        raw,
        source,
        event_id=event.event_id,
        tenant_id=event.tenant_id,
    )


def topic_collision_key(topic: str) -> str:
    """Kafka refuses topics that differ only in ``.`` vs ``_`` (their metric names collide)."""
    return topic.replace(".", "_")


def verdict_topic_problem(
    topic: str,
    *,
    tenant_id: str,
    prefix: str,
    reserved: Iterable[str],
    others: Mapping[str, str],
) -> str | None:
    """Why ``tenant_id`` may not route its verdicts to ``topic`` (one line), or None if it may.

    ``reserved``: the deployment's own topics (input, DLQ, shared verdict topic); ``others``: other
    tenants' dedicated verdict topics by tenant id. Collisions are compared as Kafka does (``.`` = ``_``).
    """
    if not topic or len(topic) > KAFKA_TOPIC_MAX or not TOPIC_CHARS.match(topic) or topic in {".", ".."}:
        return f"route.verdict_topic {topic!r} is not a valid Kafka topic name ([A-Za-z0-9._-], 1-249 chars)"
    if topic.startswith("__"):
        return f"route.verdict_topic {topic!r} is a Kafka internal topic name (starts with '__')"
    key = topic_collision_key(topic)
    for name in reserved:
        if key == topic_collision_key(name):
            return f"route.verdict_topic {topic!r} is (or collides with) the deployment's topic {name!r}"
    if not topic.startswith(prefix) or topic == prefix:
        return f"route.verdict_topic {topic!r} must start with the tenant topic prefix {prefix!r}"
    for other, their_topic in sorted(others.items()):
        if other != tenant_id and key == topic_collision_key(their_topic):
            return f"route.verdict_topic {topic!r} is (or collides with) tenant {other!r}'s verdict topic"
    return None


def route_problem(policy: TenantPolicy, settings: Settings, existing: Iterable[TenantPolicy]) -> str | None:
    """:func:`verdict_topic_problem` for ``policy``'s route in this deployment; None for the shared topic."""
    topic = policy.route.verdict_topic
    if topic is None:
        return None
    others = {p.tenant_id: p.route.verdict_topic for p in existing if p.route.verdict_topic is not None}
    return verdict_topic_problem(
        topic,
        tenant_id=policy.tenant_id,
        prefix=settings.tenant_topic_prefix,
        reserved=(settings.input_topic, settings.dlq_topic, settings.verdict_topic),
        others=others,
    )
