"""The wheel, installed into a fresh venv outside the checkout, works: `mdm-broker kafka` starts a
real Kafka that takes a topic and stops cleanly, the simulators' CLI answers, and the extras pull
what they promise (`[consumer]` no server-side package, `[postgres]` asyncpg).

Offline by design: the wheel is built by setuptools' PEP 517 hook without isolation and installed
with ``--no-deps``; the fresh venv sees the dependencies (never the project) through a ``.pth``
line naming this venv's site-packages, whose own ``.pth`` files (the editable install's finder)
are not processed.
"""

from __future__ import annotations

import importlib.metadata
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
PROJECT = "mdm-notification-broker"
SERVER_SIDE = {"aiohttp", "pydantic-settings", "pyjwt", "cryptography", "tomli-w", "asyncpg"}


@dataclass(frozen=True)
class Installed:
    root: Path
    bin: Path
    site_packages: Path
    wheel: Path

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _check(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("broker", "adapters", "simulators"):  # links kept, as in a checkout
        shutil.copytree(REPO / package, src / package, ignore=ignore, symlinks=True)
    for name in (
        "pyproject.toml",
        "README.md",
        "deploy/broker.toml",
        "deploy/prometheus/alerts.yml",
    ):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    build = "from setuptools import build_meta; build_meta.build_wheel('../dist')"
    _check([sys.executable, "-c", build], src)  # the PEP 517 hook, offline (no isolation)
    pip = [sys.executable, "-m", "pip", "--no-input", "-q"]
    (wheel,) = (root / "dist").glob("mdm_notification_broker-*.whl")
    venv = root / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    _check([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], root)
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    (site / "_mdm_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Installed(root=root, bin=venv / "bin", site_packages=site, wheel=wheel)


def test_the_installed_package_is_the_one_that_runs(installed: Installed) -> None:
    proc = installed.run("python", "-c", "import broker, simulators; print(broker.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(installed.site_packages)
    assert (installed.site_packages / "broker" / "devtools" / "kafka" / "pom.xml").is_file()
    assert (
        installed.site_packages / "broker" / "devtools" / "kafka" / "log4j2.properties"
    ).is_file()


def test_simulate_apple_help(installed: Installed) -> None:
    proc = installed.run("mdm-broker", "simulate", "apple", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mdm-broker simulate apple")


def test_dev_runs_from_the_wheel_with_its_packaged_config(installed: Installed) -> None:
    proc = installed.run("mdm-broker", "dev", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mdm-broker dev")
    resolve = (
        "from broker.app.config import load_settings\n"
        "from broker.devtools.dev import ALERT_RULES, BASE_CONFIG\n"
        "print(BASE_CONFIG); print(ALERT_RULES)\n"
        "print(load_settings(BASE_CONFIG).apple.enabled)\n"
    )
    proc = installed.run("python", "-c", resolve)
    assert proc.returncode == 0, proc.stderr
    config, rules, apple_enabled = proc.stdout.split()
    packaged = installed.site_packages / "broker" / "devtools" / "deploy"
    assert Path(config) == packaged / "broker.toml"
    assert Path(rules) == packaged / "alerts.yml"
    assert Path(rules).is_file()
    assert not Path(rules).is_symlink()  # the wheel holds the file, not the checkout's link
    assert Path(rules).read_bytes() == (REPO / "deploy/prometheus/alerts.yml").read_bytes()
    assert apple_enabled == "True"


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except OSError:
        return False


def _read_line_with(proc: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break  # EOF: the process exited
            if line.startswith(prefix):
                return line.strip()
    raise AssertionError(f"no {prefix!r} line within {timeout_s} s (exit code {proc.poll()})")


@pytest.fixture
def kafka_process(installed: Installed) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [str(installed.bin / "mdm-broker"), "kafka"],
        cwd=installed.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        assert proc.stdout is not None
        proc.stdout.close()
        if proc.poll() is None:  # the test failed before its clean stop: leave nothing behind
            jvms = _children(proc.pid)
            proc.kill()
            proc.wait(30)
            for pid in jvms:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_mdm_broker_kafka_starts_takes_a_topic_and_stops_cleanly(
    installed: Installed, kafka_process: subprocess.Popen[str]
) -> None:
    line = _read_line_with(kafka_process, "KAFKA_BOOTSTRAP_SERVERS=", timeout_s=120)
    bootstrap = line.split("=", 1)[1]
    config = installed.root / "broker.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{bootstrap}"\npartitions = 1\n')
    created = installed.run("mdm-broker", "topics", "create", "--config", str(config))
    assert created.returncode == 0, created.stderr
    assert "created mdm.events" in created.stdout

    jvms = _children(kafka_process.pid)
    assert jvms, "no Kafka JVM under `mdm-broker kafka`"
    kafka_process.send_signal(signal.SIGTERM)
    assert kafka_process.wait(60) == 0
    assert not [pid for pid in jvms if _alive(pid)], "Kafka JVM left behind"


def _pulled(wheel_requires: list[str], extra: str) -> set[str]:
    """Every distribution ``pip install 'mdm-notification-broker[extra]'`` pulls: the wheel's
    requirements resolved transitively over the metadata of the installed distributions."""
    seen: set[str] = set()
    todo = [(r, extra) for r in wheel_requires]
    while todo:
        text, active_extra = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": active_extra}):
            continue
        name = canonicalize_name(req.name)
        if name in seen or name == PROJECT:
            continue
        seen.add(name)
        requires = importlib.metadata.requires(name) or []
        todo += [(sub, e) for sub in requires for e in {"", *req.extras}]
    return seen


def test_consumer_extra_pulls_no_server_side_package_and_postgres_adds_asyncpg(
    installed: Installed,
) -> None:
    metadata = importlib.metadata.PathDistribution(
        next(installed.site_packages.glob("mdm_notification_broker-*.dist-info"))
    )
    assert set(metadata.metadata.get_all("Provides-Extra") or []) >= {
        "consumer",
        "postgres",
        "server",
    }
    requires = metadata.requires or []
    consumer = _pulled(requires, "consumer")
    assert {"aiokafka", "orjson", "msgspec", "pydantic", "prometheus-client"} <= consumer
    assert not consumer & SERVER_SIDE, consumer & SERVER_SIDE
    assert _pulled(requires, "postgres") - consumer == {"asyncpg"}
    assert SERVER_SIDE - {"asyncpg"} <= _pulled(requires, "server")
