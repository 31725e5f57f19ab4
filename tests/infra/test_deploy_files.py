"""The deployment files (docker-compose, KubeRay) parse and agree with Settings and with each other.

Nothing here starts Docker or Kubernetes; the point is that a renamed setting or a version bump can't leave
these files silently wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.kafka_local import KAFKA_DIR
from workers.settings import Settings

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose" / "docker-compose.yml"
K8S = INFRA / "k8s"
SETTING_ENV_NAMES = {f"GUARDSTREAM_{name.upper()}" for name in Settings.model_fields}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _compose() -> dict[str, Any]:
    return _docs(COMPOSE)[0]


def _k8s(kind: str) -> dict[str, Any]:
    found = [doc for path in sorted(K8S.glob("*.yaml")) for doc in _docs(path) if doc.get("kind") == kind]
    assert len(found) == 1, kind
    return found[0]


def _guardstream_env() -> list[tuple[str, dict[str, str]]]:
    """(where, env) for every place that sets GUARDSTREAM_* variables."""
    places = [
        (f"compose:{name}", {k: str(v) for k, v in (svc.get("environment") or {}).items()})
        for name, svc in _compose()["services"].items()
    ]
    places.append(("k8s:configmap", dict(_k8s("ConfigMap")["data"])))
    return places


@pytest.mark.parametrize("path", [COMPOSE, *sorted(K8S.glob("*.yaml"))], ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    assert _docs(path)


def test_only_real_settings_are_named() -> None:
    for where, env in _guardstream_env():
        unknown = {k for k in env if k.startswith("GUARDSTREAM_")} - SETTING_ENV_NAMES
        assert not unknown, f"{where} sets unknown settings {unknown}"
    commented = set(re.findall(r"GUARDSTREAM_[A-Z_]+", COMPOSE.read_text()))
    assert commented <= SETTING_ENV_NAMES


def test_setting_values_are_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every value parses as its field would from the environment (JSON models included); secret files
    named by *_FILE settings are stand-ins here (in the cluster they come from the mounted Secret)."""
    for _, env in _guardstream_env():
        for key, value in env.items():
            if key.endswith("_PASSWORD_FILE"):
                stand_in = tmp_path / Path(value).name
                stand_in.write_text("stand-in")
                monkeypatch.setenv(key, str(stand_in))
            elif key.startswith("GUARDSTREAM_"):
                monkeypatch.setenv(key, value)
        Settings()
        for key in env:
            monkeypatch.delenv(key, raising=False)


def test_compose_kafka_matches_the_local_broker_and_the_stream_settings() -> None:
    services = _compose()["services"]
    pom_version = re.search(r"<kafka.version>([^<]+)<", (KAFKA_DIR / "pom.xml").read_text())
    assert pom_version and services["kafka"]["image"] == f"apache/kafka:{pom_version.group(1)}"
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    stream_env = services["stream"]["environment"]
    assert stream_env["GUARDSTREAM_KAFKA_BOOTSTRAP"] in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert stream_env["GUARDSTREAM_REDIS_URL"].startswith("redis://redis:")
    defaults = Settings()
    # host tools keep their defaults: the published ports are the Settings defaults
    assert f"127.0.0.1:9092:{defaults.kafka_bootstrap.rsplit(':', 1)[1]}" in services["kafka"]["ports"]
    assert "127.0.0.1:6379:6379" in services["redis"]["ports"]
    dockerfile = (COMPOSE.parent / services["stream"]["build"]["context"]) / services["stream"]["build"][
        "dockerfile"
    ]
    assert dockerfile.resolve().is_file()


def test_rayjob_runs_the_stream_with_gpus_for_every_replica() -> None:
    job = _k8s("RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith("guardstream stream")
    cluster = job["spec"]["rayClusterSpec"]
    configmap = _k8s("ConfigMap")
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        group["template"]["spec"]["containers"][0] for group in cluster["workerGroupSpecs"]
    ]
    for container in containers:
        assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in container["envFrom"]

    settings = Settings.model_validate(
        {"models": yaml.safe_load(configmap["data"]["GUARDSTREAM_MODELS"]), "ray_address": "auto"}
    )
    gpus_needed = sum(spec.replicas * spec.num_gpus for spec in settings.models.values())
    gpus_max = sum(
        int(group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
        * group["maxReplicas"]
        for group in cluster["workerGroupSpecs"]
    )
    assert 0 < gpus_needed <= gpus_max


def test_secrets_stay_in_secrets_and_ray_stays_inside_the_cluster() -> None:
    configmap = _k8s("ConfigMap")["data"]
    for key, value in configmap.items():
        assert "PASSWORD" not in key or key.endswith("_FILE"), key
        assert "@" not in value, f"{key} looks like a URL with credentials"
    assert configmap["GUARDSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert configmap["GUARDSTREAM_REDIS_URL"].startswith("rediss://")
    cluster = _k8s("RayJob")["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]
    ]
    secret_dir = str(Path(configmap["GUARDSTREAM_KAFKA_SASL_PASSWORD_FILE"]).parent)
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts[secret_dir]["name"]]["secret"]["secretName"] == "guardstream-secrets"
    policy = _k8s("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    redis_values = _docs(K8S / "redis-values.yaml")[0]
    assert redis_values["auth"]["enabled"] and redis_values["auth"]["existingSecret"]
    assert redis_values["tls"]["enabled"] and "password" not in redis_values["auth"]


def test_probes_and_scrapes_reach_the_metrics_port() -> None:
    """Compose and Kubernetes point their probes and Prometheus at the port ``stream`` serves on."""
    stream = _compose()["services"]["stream"]
    port = stream["environment"]["GUARDSTREAM_METRICS_PORT"]
    assert stream["environment"]["GUARDSTREAM_METRICS_HOST"] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in stream["ports"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(stream["healthcheck"]["test"])

    k8s_port = int(_k8s("ConfigMap")["data"]["GUARDSTREAM_METRICS_PORT"])
    head = _k8s("RayJob")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert {"containerPort": k8s_port, "name": "metrics"} in head["spec"]["containers"][0]["ports"]
    service = _k8s("Service")
    assert service["spec"]["selector"].items() <= head["metadata"]["labels"].items()
    assert service["spec"]["ports"][0] == {"name": "metrics", "port": k8s_port, "targetPort": "metrics"}
    probe = _k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    target = f"http://{service['metadata']['name']}:{k8s_port}/readyz"
    assert target in " ".join(probe["exec"]["command"])
