"""Prerequisites of the local services, installed once and cheap to re-check (`make setup` runs this).

Java 17 and Maven run the broker and resolve its jars; Debian's redis-server serves policies. Missing
system packages are installed with apt-get (through sudo when not root); the broker jars are resolved
from Maven Central into infra/kafka/target/jars, keyed by a hash of pom.xml so a version bump re-resolves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from infra.errors import InstallError
from infra.kafka_local import JARS_DIR, KAFKA_DIR
from workers.logging import get_logger

log = get_logger(__name__)

APT_PACKAGES: dict[str, str] = {
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
    "redis-server": "redis-server",
}
"""Command on PATH → the Debian package that provides it."""

STAMP = JARS_DIR / ".pom.sha256"


def missing_commands() -> list[str]:
    return [cmd for cmd in APT_PACKAGES if shutil.which(cmd) is None]


def apt_install(packages: list[str]) -> None:
    """Install Debian packages non-interactively; needs root or sudo."""
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise InstallError(f"need root to install {' '.join(packages)}: install them, then re-run")
        prefix = ["sudo", "-n"]
    if shutil.which("apt-get") is None:
        raise InstallError(f"no apt-get here: install {' '.join(packages)} with your package manager")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise InstallError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-2000:]}")


def _pom_hash() -> str:
    return hashlib.sha256((KAFKA_DIR / "pom.xml").read_bytes()).hexdigest()


def kafka_jars_current() -> bool:
    """Whether the resolved jars match the current pom.xml."""
    try:
        return STAMP.read_text().strip() == _pom_hash() and any(JARS_DIR.glob("kafka_2.13-*.jar"))
    except OSError:
        return False


def resolve_kafka_jars() -> None:
    """`mvn dependency:copy-dependencies` into a fresh jars dir (~/.m2 is the download cache)."""
    if JARS_DIR.exists():
        shutil.rmtree(JARS_DIR)
    argv = ["mvn", "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallError(f"resolving Kafka jars failed: {(done.stdout + done.stderr).strip()[-3000:]}")
    STAMP.write_text(_pom_hash() + "\n")


def install() -> None:
    """Make sure java, mvn, redis-server and the Kafka jars are present; a no-op when they are."""
    missing = missing_commands()
    if missing:
        packages = [APT_PACKAGES[cmd] for cmd in missing]
        log.info("apt_install", packages=packages)
        apt_install(packages)
    if not kafka_jars_current():
        log.info("kafka_jars_resolve", pom=str(KAFKA_DIR / "pom.xml"))
        resolve_kafka_jars()
    log.info("install_done", kafka_jars=str(JARS_DIR))
