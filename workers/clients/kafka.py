"""Every Kafka client guardstream uses — consumers, producers, admin clients — built here from ``Settings``.

The only module that constructs kafka-python clients, so a client setting (security, compression, timeouts)
is added once and reaches the stream, the backfill's ``--to-kafka``, ``produce``, ``topics``, the demo and the
infra probe alike. Callers import this module inside their functions when they want ``--help`` to stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from workers.clients.security import kafka_client_kwargs
from workers.logging import get_logger
from workers.settings import Settings

log = get_logger(__name__)

SESSION_TIMEOUT_MS = 10_000
"""A dead worker's partitions move after 10 s instead of the client default 45 s."""

MAX_POLL_INTERVAL_MS = 25_000
"""Rebalance timeout: how long the group waits for its members to rejoin."""

RECONNECT_BACKOFF_MAX_MS = 1_000
"""Longest wait between reconnect attempts to a broker (the Java client's default; kafka-python's is 30 s).

The backoff doubles per failed attempt, so with 30 s a 20 s broker restart left clients waiting up to
another 30 s after the broker was back: the chaos table's broker-kill row stalled 40-46 s for that reason.
One attempt a second per broker costs nothing while it is down.
"""


def _common(settings: Settings) -> dict[str, Any]:
    """Options every client shares: where the cluster is, how to authenticate to it (TLS, SASL), and how
    soon to reconnect after it comes back."""
    return {**kafka_client_kwargs(settings), "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS}


def stream_consumer(settings: Settings, *, worker_id: str) -> KafkaConsumer:
    """The stream worker's group member: manual commits, ``read_committed``, earliest when uncommitted."""
    return KafkaConsumer(
        **_common(settings),
        group_id=settings.consumer_group,
        client_id=f"guardstream-{worker_id}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max(settings.batch_size * 4, 64),
        fetch_max_wait_ms=100,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        # Also the rebalance timeout: a member that doesn't rejoin within it (e.g. a wedged client, see
        # Rebalance.check_rejoin) is dropped by the broker, so the others' rebalance ends before their own
        # rejoin timeout instead of after the 5-minute default. The loop polls every <= 100 ms; only a
        # drain this long would miss it (its commits then fail and the records are re-read).
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        heartbeat_interval_ms=2_000,
        # A consumer that joins before a just-created topic reaches the broker's metadata gets no
        # partitions until its next metadata refresh; the client default (5 min) would stall it that long.
        metadata_max_age_ms=5_000,
    )


def reader(settings: Settings, **options: Any) -> KafkaConsumer:
    """A group-less consumer that never commits (the demo's live view, tests reading outputs)."""
    return KafkaConsumer(**_common(settings), enable_auto_commit=False, **options)


def lag_consumer(settings: Settings) -> KafkaConsumer:
    """Reads the stream group's committed offsets and the input's end offsets (``workers.metrics.lag``).

    It names the group only to fetch its commits: it never subscribes, so it never joins the group.
    """
    return KafkaConsumer(
        **_common(settings),
        group_id=settings.consumer_group,
        client_id="guardstream-lag",
        enable_auto_commit=False,
        isolation_level="read_committed",  # end offset = last stable offset, what the workers can read
        metadata_max_age_ms=5_000,  # see a topic created after start-up within seconds
    )


def producer(
    settings: Settings, *, client_id: str = "guardstream-sink", transactional_id: str | None = None
) -> KafkaProducer:
    """An idempotent ``acks=all`` producer of raw bytes; transactional when ``transactional_id`` is set.

    Idempotence keeps up to five in-flight requests per connection in order, so outputs released in input
    order land in that order, and a retried send never duplicates.
    """
    return KafkaProducer(
        **_common(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        # A send blocks its caller (the stream's poll thread) while metadata or buffer space is missing:
        # bounded well under the 25 s max_poll_interval; a send that times out is retried later
        # (workers.stream.retries).
        max_block_ms=5_000,
        transactional_id=transactional_id,
    )


def admin(settings: Settings, *, client_id: str = "guardstream-admin", **options: Any) -> KafkaAdminClient:
    """An admin client (topic creation, the infra readiness probe)."""
    return KafkaAdminClient(**_common(settings), client_id=client_id, **options)


def ensure_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Create the missing topics among ``names`` (``settings.topic_partitions`` and ``topic_replication``);
    return those created.

    Idempotent and race-safe (another worker creating the same topic is not an error).
    """
    wanted = sorted(set(names))
    client = admin(settings)
    try:
        missing = [name for name in wanted if name not in set(client.list_topics())]
        created: list[str] = []
        for name in missing:
            topic = NewTopic(
                name, num_partitions=settings.topic_partitions, replication_factor=settings.topic_replication
            )
            try:
                client.create_topics([topic], wait_for_metadata=True)
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("topics_created", topics=created, partitions=settings.topic_partitions)
        return created
    finally:
        client.close()
