"""Deployment artefacts checked with real tools: compose-go, promtool, and the settings model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapters.android.metrics import AmapiMetrics, AndroidMetrics
from adapters.apple.metrics import AppleMetrics
from adapters.apple.syncmetrics import AppleSyncMetrics
from adapters.kapua.metrics import KapuaMetrics
from broker.app.config import load_settings
from broker.consumer.metrics import ConsumerMetrics
from broker.devtools.dev import ALERT_RULES, BASE_CONFIG
from broker.metrics import BrokerMetrics
from broker.supervisor import SupervisorMetrics

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required (`.ci/run` installs it; Debian: apt-get install prometheus)"
    return path


@pytest.fixture(scope="module")
def compose_project() -> dict[str, Any]:
    """docker-compose.yml loaded and validated by compose-go (what `docker compose` uses)."""
    go = _tool("go")
    proc = subprocess.run(
        [go, "run", ".", str(REPO / "docker-compose.yml")],
        cwd=REPO / "deploy" / "compose-check",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    project: dict[str, Any] = json.loads(proc.stdout)
    return project


def test_compose_file_is_valid_and_ordered_by_health(compose_project: dict[str, Any]) -> None:
    services = compose_project["services"]
    assert {
        "kafka",
        "topics",
        "broker",
        "apple-sim",
        "android-sim",
        "amapi-sim",
        "kapua-sim",
    } <= set(services)
    assert {"prometheus", "grafana", "traffic", "apple-subscribe"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    broker = services["broker"]
    conditions = {name: dep["condition"] for name, dep in broker["depends_on"].items()}
    assert conditions == {
        "kafka": "service_healthy",
        "topics": "service_completed_successfully",
        "apple-sim": "service_healthy",
        "android-sim": "service_healthy",
        "amapi-sim": "service_healthy",
        "kapua-sim": "service_healthy",
    }
    for name in (
        "kafka",
        "broker",
        "apple-sim",
        "android-sim",
        "amapi-sim",
        "kapua-sim",
        "prometheus",
    ):
        assert services[name].get("healthcheck"), f"{name} has no health check"


def test_compose_broker_uses_the_same_config_file_as_dev(compose_project: dict[str, Any]) -> None:
    broker = compose_project["services"]["broker"]
    config_path = broker["environment"]["MDM_BROKER_CONFIG"]
    mounts = {v["target"]: Path(v["source"]) for v in broker["volumes"] if v["type"] == "bind"}
    assert mounts[config_path].resolve() == BASE_CONFIG.resolve()
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"COPY deploy/broker.toml {config_path}" in dockerfile
    settings = load_settings(BASE_CONFIG)
    assert settings.apple.enabled
    assert settings.android.enabled
    assert settings.kapua.enabled
    assert settings.kafka.bootstrap_servers == "kafka:19092"


def test_packaged_deploy_files_are_links_to_deploy() -> None:
    """``mdm-broker dev`` from a wheel reads broker/devtools/deploy/: links to deploy/'s files
    (one source; the wheel build copies the files they point to, and so must the image build)."""
    packaged = REPO / "broker" / "devtools" / "deploy"
    for source, link in (
        (REPO / "deploy" / "broker.toml", packaged / "broker.toml"),
        (PROMETHEUS_DIR / "alerts.yml", packaged / "alerts.yml"),
    ):
        assert link.is_symlink(), f"{link} must be a relative link to {source}"
        assert not Path(os.readlink(link)).is_absolute()
        assert link.resolve() == source.resolve()
    assert BASE_CONFIG == REPO / "deploy" / "broker.toml"  # in a checkout, deploy/ itself
    assert ALERT_RULES == PROMETHEUS_DIR / "alerts.yml"
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for name in ("deploy/broker.toml", "deploy/prometheus/alerts.yml"):
        assert f"COPY {name} ./{name}" in dockerfile  # the links resolve in the build stage


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.MULTILINE)
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile
    assert "/healthz" in dockerfile


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = _tool("promtool")
    for args in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        proc = subprocess.run(
            [promtool, *args],
            cwd=PROMETHEUS_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _declared_metric_names() -> set[str]:
    registry = CollectorRegistry()
    broker = BrokerMetrics(registry)
    ConsumerMetrics(registry)
    AndroidMetrics(registry)
    AmapiMetrics(registry)
    KapuaMetrics(broker)
    AppleMetrics(registry)
    AppleSyncMetrics(broker)
    SupervisorMetrics(registry)
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
    return names


def test_dashboard_and_alerts_only_use_declared_metrics() -> None:
    """A renamed metric must not silently blank a panel or an alert."""
    dashboard = json.loads(
        (REPO / "deploy" / "grafana" / "dashboards" / "mdm-broker.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((PROMETHEUS_DIR / "alerts.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"\bmdm_broker_[a-z_]+", e)}
    declared = _declared_metric_names()
    assert used, "no metrics found in the dashboard"
    unknown = {
        m for m in used if not {m, m.removesuffix("_total"), m.removesuffix("_bucket")} & declared
    }
    assert not unknown, f"not declared by any metrics module: {unknown}"
