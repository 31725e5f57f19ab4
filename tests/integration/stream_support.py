"""Helpers for the stream's end-to-end tests: unique topics per test, producing with offsets, reading outputs,
running the stream in a thread, and awaiting conditions without bare sleeps."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition

from pipelines.stream.run import StreamReport, run_stream
from workers.clients import kafka as kafka_clients
from workers.clients.kafka import ensure_topics
from workers.settings import Settings


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``check`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


TOPIC_PREFIX = "gs-e2e-"


def isolated(base: Settings, **overrides: Any) -> Settings:
    """``base`` with topics and consumer group of its own, so tests never see each other's records.

    Every topic name starts with the consumer group's name, so ``delete_topics_of`` can remove them all.
    """
    group = f"{TOPIC_PREFIX}{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "input_topic": f"{group}.in",
        "verdict_topic": f"{group}.verdicts",
        "dlq_topic": f"{group}.dlq",
        "consumer_group": group,
        "topic_partitions": 2,
        "stream_workers": 2,
        "batch_size": 8,
        "batch_max_wait_ms": 20,
        "log_format": "console",
        "metrics_port": 0,  # tests run streams side by side; the metrics tests ask for a port themselves
    }
    fields.update(overrides)
    return base.model_copy(update=fields)


def delete_topics_of(settings: Settings) -> None:
    """Remove the topics ``isolated`` named for this settings' group (best effort: never fails a test)."""
    from kafka.errors import KafkaError

    admin = kafka_clients.admin(settings, client_id="guardstream-tests")
    try:
        mine = [t for t in admin.list_topics() if t.startswith(f"{settings.consumer_group}.")]
        if mine:
            admin.delete_topics(mine)
    except KafkaError:
        pass
    finally:
        admin.close()


def event(tenant: str, conversation: str, event_id: str, text: str, reply: str | None = None) -> bytes:
    messages = [{"role": "user", "content": text}]
    if reply is not None:
        messages.append({"role": "assistant", "content": reply})
    body = {"event_id": event_id, "tenant_id": tenant, "conversation_id": conversation, "messages": messages}
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes
    partition: int
    offset: int


def produce(settings: Settings, records: Sequence[tuple[bytes | None, bytes]]) -> list[Sent]:
    """Send records to the input topic (acks=all) and return where each landed."""
    ensure_topics(settings, [settings.input_topic])
    producer = kafka_clients.producer(settings, client_id="guardstream-tests")
    try:
        futures = [(k, v, producer.send(settings.input_topic, key=k, value=v)) for k, v in records]
        producer.flush()
        return [Sent(k, v, f.get(30).partition, f.get(30).offset) for k, v, f in futures]
    finally:
        producer.close()


def keyed(tenant: str, conversation: str, value: bytes) -> tuple[bytes, bytes]:
    return f"{tenant}:{conversation}".encode(), value


@dataclass
class Outputs:
    """Everything read so far from some topics, in partition order: (topic, partition, key, json)."""

    records: list[tuple[str, int, bytes | None, dict[str, Any]]] = field(default_factory=list)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [value for t, _, _, value in self.records if t == topic]

    def event_ids(self, topic: str) -> list[str]:
        return [v["event_id"] for v in self.on(topic)]


class TopicReader:
    """A group-less consumer over whole topics (from the beginning), read incrementally."""

    def __init__(self, settings: Settings, topics: list[str], *, read_committed: bool = False) -> None:
        ensure_topics(settings, topics)
        self._consumer = kafka_clients.reader(
            settings,
            fetch_max_wait_ms=50,
            isolation_level="read_committed" if read_committed else "read_uncommitted",
        )
        parts = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        self.outputs = Outputs()

    def read(self) -> Outputs:
        for tp, batch in self._consumer.poll(timeout_ms=100).items():
            for record in batch:
                self.outputs.records.append((tp.topic, tp.partition, record.key, json.loads(record.value)))
        return self.outputs

    def until(self, check: Callable[[Outputs], bool], *, timeout_s: float, what: str) -> Outputs:
        wait_until(lambda: check(self.read()), timeout_s=timeout_s, what=what, interval_s=0.0)
        return self.outputs

    def close(self) -> None:
        self._consumer.close()


@contextmanager
def reading(settings: Settings, topics: list[str], *, read_committed: bool = False) -> Iterator[TopicReader]:
    reader = TopicReader(settings, topics, read_committed=read_committed)
    try:
        yield reader
    finally:
        reader.close()


@dataclass
class RunningStream:
    """``run_stream`` on a thread; ``stop()`` drains it and returns its report."""

    thread: threading.Thread
    stop_event: threading.Event
    result: list[StreamReport | BaseException]

    def stop(self, timeout_s: float = 120) -> StreamReport:
        self.stop_event.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "stream did not drain in time"
        outcome = self.result[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def start_in_thread(settings: Settings, pools: Any, **kwargs: Any) -> RunningStream:
    stop = threading.Event()
    result: list[StreamReport | BaseException] = []

    def target() -> None:
        try:
            result.append(run_stream(settings, stop=stop, pools=pools, **kwargs))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, name="stream-under-test", daemon=True)
    thread.start()
    return RunningStream(thread, stop, result)


@contextmanager
def streaming(settings: Settings, pools: Any, **kwargs: Any) -> Iterator[RunningStream]:
    """Run the stream for the duration of the block; always drained at the end."""
    running = start_in_thread(settings, pools, **kwargs)
    try:
        yield running
    finally:
        if running.thread.is_alive():
            running.stop()


def committed(settings: Settings) -> dict[int, int]:
    """The consumer group's committed offsets on the input topic, by partition."""
    consumer = kafka_clients.reader(settings, group_id=settings.consumer_group)
    try:
        parts = sorted(consumer.partitions_for_topic(settings.input_topic) or ())
        return {p: consumer.committed(TopicPartition(settings.input_topic, p)) or 0 for p in parts}
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = kafka_clients.reader(settings)
    try:
        parts = [
            TopicPartition(settings.input_topic, p)
            for p in consumer.partitions_for_topic(settings.input_topic)
        ]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()
