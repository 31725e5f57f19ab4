"""The dev/CI Apache Kafka broker: KRaft, one node, jars resolved by Maven (infra/kafka/pom.xml).

Why a JVM we start ourselves instead of a container: the project must run where Docker isn't available,
with the same broker version and the same transactional guarantees as production.
"""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from string import Template

from infra.errors import InstallError, ServiceStartError
from infra.service import LocalService

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
JARS_DIR = KAFKA_DIR / "target" / "jars"
SERVER_TEMPLATE = KAFKA_DIR / "server.properties"
PLAINTEXT_LISTENERS = KAFKA_DIR / "listeners-plaintext.properties"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.xml"


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first bootstrap server (``host:port[,host:port...]``)."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"kafka_bootstrap must be host:port, got {bootstrap!r}")
    return host.strip("[]"), int(port)


def render_server_properties(
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    listeners: Path = PLAINTEXT_LISTENERS,
    values: Mapping[str, str] | None = None,
) -> str:
    """The broker config for this machine, from the checked-in templates (server + one listener file)."""
    common = {"host": host, "port": str(port), "controller_port": str(controller_port), **(values or {})}
    listener_config = Template(listeners.read_text()).substitute(common)
    return Template(SERVER_TEMPLATE.read_text()).substitute(
        common, log_dir=str(log_dir), listener_config=listener_config
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints).

    Never starting with ``-``: like Kafka's own ``Uuid.randomUuid``, because ``kafka-storage format
    --cluster-id -x…`` reads such an id as an option and refuses to format (1 fresh start in 32 failed).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def classpath() -> str:
    if not any(JARS_DIR.glob("kafka_2.13-*.jar")):
        raise InstallError(
            f"Kafka jars missing in {JARS_DIR}: run `make setup` (python -m infra.local install)"
        )
    return f"{JARS_DIR}/*"


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """A TCP connect: the cheap first check, since a client to a closed port retries for many seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    """kafka-python logs every refused connection; a probe expects those while the broker boots."""
    logger = logging.getLogger("kafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class KafkaService(LocalService):
    name = "kafka"
    grace_s = 30.0
    listeners = PLAINTEXT_LISTENERS

    def listener_values(self) -> dict[str, str]:
        """Placeholders of :attr:`listeners` beyond host and ports (the secured broker's files, users)."""
        return {}

    def format_args(self) -> list[str]:
        """Extra ``kafka-storage format`` arguments (the secured broker's SCRAM users)."""
        return []

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_bootstrap(self.settings.kafka_bootstrap)

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def marker(self) -> str:
        return str(self.config_file)

    def prepare(self) -> None:
        """Render the config and format the storage once (a formatted dir keeps its cluster id)."""
        host, port = self.host_port
        text = render_server_properties(
            host,
            port,
            self.settings.kafka_controller_port,
            self.data_dir,
            self.listeners,
            self.listener_values(),
        )
        self.config_file.touch(mode=0o600)  # the secured broker's file holds its own SCRAM password
        self.config_file.write_text(text)
        if (self.data_dir / "meta.properties").exists():
            return
        argv = [
            *self._java(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self.config_file),
            "--ignore-formatted",
            *self.format_args(),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            output = self.redact(done.stdout + done.stderr)
            raise ServiceStartError(self.name, "formatting KRaft storage failed", output)

    def redact(self, text: str) -> str:
        """``text`` safe to show (the secured broker removes its passwords)."""
        return text

    def _java(self) -> list[str]:
        return [
            "java",
            "-Xms64m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            # Keep logging through the broker's own shutdown so `infra down` leaves a complete log.
            "-Dlog4j2.shutdownHookEnabled=false",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            classpath(),
        ]

    def argv(self) -> list[str]:
        return [*self._java(), "kafka.Kafka", str(self.config_file)]

    def probe(self) -> bool:
        """A metadata request through the admin client: the broker is up and has joined its quorum."""
        from kafka.errors import KafkaError

        from workers.clients import kafka as kafka_clients

        if not port_open(*self.host_port):
            return False
        with _quiet_kafka_client():
            try:
                admin = kafka_clients.admin(
                    self.settings,
                    client_id="guardstream-infra-probe",
                    request_timeout_ms=5000,
                    bootstrap_timeout_ms=5000,
                )
            except (KafkaError, OSError, ValueError):
                return False
            try:
                cluster = admin.describe_cluster()
                return bool(cluster.get("brokers"))
            except (KafkaError, OSError, ValueError):
                return False
            finally:
                admin.close()
