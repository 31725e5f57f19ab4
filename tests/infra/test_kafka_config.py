"""The broker config is rendered from the template with every value a single node needs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from infra.kafka_local import KafkaService, new_cluster_id, parse_bootstrap, render_server_properties
from workers.settings import Settings


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_rendered_config_is_a_kraft_single_node_with_transactions(tmp_path: Path) -> None:
    props = _props(render_server_properties("127.0.0.1", 9092, 9093, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert "$" not in "".join(props.values())


def test_service_renders_into_its_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_bootstrap="localhost:19092", kafka_controller_port=19093)
    kafka = KafkaService(settings)
    assert kafka.local
    assert kafka.home == tmp_path.resolve() / "kafka"
    argv = kafka.argv()
    assert argv[0] == "java" and "-Xmx512m" in argv
    assert argv[-2:] == ["kafka.Kafka", str(kafka.config_file)]
    assert kafka.marker in " ".join(argv)


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("kafka-0.kafka:9092,kafka-1.kafka:9092", ("kafka-0.kafka", 9092)),
        ("[::1]:9094", ("::1", 9094)),
    ],
)
def test_parse_bootstrap(bootstrap: str, expected: tuple[str, int]) -> None:
    assert parse_bootstrap(bootstrap) == expected


def test_parse_bootstrap_rejects_a_missing_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_bootstrap("localhost")


def test_remote_bootstrap_is_never_started_here() -> None:
    assert not KafkaService(Settings(kafka_bootstrap="kafka.prod.example:9092")).local


def test_cluster_id_is_kafka_shaped() -> None:
    """Shaped like ``kafka-storage random-uuid``'s, and never read as an option by ``format --cluster-id``."""
    ids = [new_cluster_id() for _ in range(2000)]  # a leading '-' has odds 1/32 per id
    for cid in ids:
        assert len(cid) == 22 and "=" not in cid and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
