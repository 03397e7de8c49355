"""``mdm-broker dev``: the whole local stack in one command, no Docker.

Starts, in this order, and stops in reverse order on SIGINT/SIGTERM, leaving no process behind:

1. a real Apache Kafka (KRaft) through broker/devtools/devkafka.py, and the broker's topics;
2. the three vendor simulators (Apple, Google EMM, Kapua) on loopback;
3. the broker, configured from ``deploy/broker.toml`` (the docker-compose service's file; outside a
   checkout, the copy shipped in the package) with local addresses written over it into
   ``.mdm-dev/broker.toml``; the Apple client config is registered through the simulator (which
   sends TEST_NOTIFICATION), the Google service-account key is generated for the simulator, the
   Kapua demo credentials are used;
4. a demo idempotent consumer (its metrics on the broker's /metrics), and
5. unless ``--no-traffic``, steady mixed traffic from all three vendors (broker/devtools/devtraffic.py).

Where to look is printed and written to ``.mdm-dev/endpoints.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import secrets
import signal
import socket
import sys
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import orjson
import tomli_w

from adapters.apple.settings import AppleSettings
from broker.devtools.devkafka import KafkaCluster, SecureListeners, free_port
from broker.metrics import BrokerMetrics
from broker.settings import KafkaSettings
from broker.signals import install_stop_signals

log = logging.getLogger(__name__)

_CHECKOUT_DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: deploy/broker.toml and deploy/prometheus/alerts.yml shipped as package data, so
#: ``mdm-broker dev`` runs from an installed wheel: in the checkout broker/devtools/deploy/ holds
#: relative links to them (one source), which the wheel build replaces by the files.
_PACKAGED_DEPLOY = resources.files("broker.devtools") / "deploy"


def deploy_file(checkout_path: str, packaged_name: str) -> Path:
    """``deploy/<checkout_path>`` when running from a checkout, else the packaged copy."""
    path = _CHECKOUT_DEPLOY / checkout_path
    return path if path.is_file() else Path(str(_PACKAGED_DEPLOY / packaged_name))


BASE_CONFIG = deploy_file("broker.toml", "broker.toml")
ALERT_RULES = deploy_file("prometheus/alerts.yml", "alerts.yml")
DEMO_GROUP = "mdm-dev-demo"


class StackSettings(Protocol):
    """The parts of the broker's settings the dev stack reads."""

    @property
    def kafka(self) -> KafkaSettings: ...

    @property
    def apple(self) -> AppleSettings: ...


class StackBroker(Protocol):
    """A started broker process, as the dev stack sees it."""

    @property
    def metrics(self) -> BrokerMetrics: ...

    async def stop(self) -> object: ...


#: Loads the broker settings from a config file and starts a broker with them. Handed in by the
#: composition root (:mod:`broker.app`), so the dev tooling imports no application code.
BrokerStarter = Callable[[Path], Awaitable[tuple[StackSettings, StackBroker]]]


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` written over it, recursing into tables."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def port_or_free(preferred: int) -> int:
    """``preferred`` when it can be bound on 127.0.0.1, else a free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def reap_stale_kafka(state_dir: Path) -> list[int]:
    """Kill Kafka JVMs a previous ``dev`` left behind (it was SIGKILLed and could not stop them).

    Only pids listed in the previous ``endpoints.json`` whose command line is still one of our
    launcher's Kafka JVMs are killed; returns them.
    """
    endpoints = state_dir / "endpoints.json"
    try:
        pids = [int(p) for p in orjson.loads(endpoints.read_bytes()).get("kafka_pids", [])]
    except (OSError, ValueError, TypeError):
        return []
    reaped = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and b"mdm-kafka-" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                reaped.append(pid)
    return reaped


@dataclass
class DevStack:
    """Everything ``mdm-broker dev`` runs; :meth:`start` and :meth:`stop` in fixed order."""

    state_dir: Path
    start_broker: BrokerStarter
    base_config: Path = BASE_CONFIG
    traffic: bool = True
    broker_port: int = 8080
    traffic_interval_s: float = 2.0
    secure: bool = False
    endpoints: dict[str, Any] = field(default_factory=dict)
    demo_counts: Counter[str] = field(default_factory=Counter)
    _kafka: KafkaCluster | None = None
    _closers: list[Any] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _stop_traffic: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> dict[str, Any]:
        """Start the stack; returns the endpoints document. On failure stops what started."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> dict[str, Any]:
        from simulators.android.auth import AuthState
        from simulators.android.keys import generate_service_account, write_service_account
        from simulators.android.pubsub_runner import PubsubSimulatorServer
        from simulators.android.pubsub_server import PubsubSimConfig, PubsubSimulator
        from simulators.android.runner import SimulatorServer
        from simulators.android.server import EmmSimulator, SimulatorConfig
        from simulators.apple.delivery import Faults
        from simulators.apple.server import AppleSimulator
        from simulators.kapua.app import KapuaSimulator
        from simulators.kapua.state import SimConfig as KapuaSimConfig

        self.state_dir.mkdir(parents=True, exist_ok=True)
        for pid in reap_stale_kafka(self.state_dir):
            _say(f"killed Kafka JVM {pid} left behind by an earlier `mdm-broker dev`")
        _say("starting Kafka (KRaft, Apache Kafka jars from Maven Central) ...")
        kafka_security: dict[str, Any] = {}
        if self.secure:
            password = secrets.token_urlsafe(18)
            self._kafka = KafkaCluster(
                nodes=1,
                secure=SecureListeners(scram_users={"mdm-broker": password}, authorizer=False),
            )
        else:
            self._kafka = KafkaCluster(nodes=1)
        await asyncio.to_thread(self._kafka.start)
        bootstrap = self._kafka.bootstrap_servers
        if self.secure:
            password_file = self.state_dir / "kafka-password"
            password_file.write_text(password)
            password_file.chmod(0o600)
            ca_file = self.state_dir / "kafka-ca.crt"
            ca_file.write_bytes(self._kafka.pki.ca.ca_file.read_bytes())
            kafka_security = {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "mdm-broker",
                "sasl_password_file": str(password_file),
                "ssl_ca_file": str(ca_file),
                "ssl_use_system_ca": False,
            }
            _say(f"  Kafka at {bootstrap} (SASL_SSL, SCRAM-SHA-512, throwaway CA {ca_file})")
        else:
            _say(f"  Kafka at {bootstrap}")

        _say("starting simulators ...")
        apple_sim = AppleSimulator(faults=Faults(retry_window_s=30.0, duplicate_rate=0.05))
        await apple_sim.start()
        self._closers.append(apple_sim.stop)
        stoken_file = self.state_dir / "apple.stoken"
        stoken_file.write_text(apple_sim.default.s_token)

        account, public_pem = generate_service_account()
        auth = AuthState()
        auth.accounts[account["client_email"]] = [public_pem]
        android_sim = SimulatorServer(EmmSimulator(SimulatorConfig(hold_s=10.0), auth))
        await android_sim.start()
        self._closers.append(android_sim.stop)
        key_file = self.state_dir / "android-service-account.json"
        account["token_uri"] = android_sim.token_url
        write_service_account(key_file, account)

        # AMAPI (Pub/Sub) beside EMM, as for an enterprise in migration; the same service account.
        amapi_auth = AuthState()
        amapi_auth.accounts[account["client_email"]] = [public_pem]
        amapi_sim = PubsubSimulatorServer(PubsubSimulator(PubsubSimConfig(hold_s=10.0), amapi_auth))
        await amapi_sim.start()
        self._closers.append(amapi_sim.stop)

        kapua_sim = KapuaSimulator(KapuaSimConfig(step_interval_s=1.0))
        await kapua_sim.start()
        self._closers.append(kapua_sim.stop)
        _say(
            f"  apple {apple_sim.base_url}  android {android_sim.base_url}  "
            f"amapi {amapi_sim.base_url}  kapua {kapua_sim.root_url}"
        )

        port = port_or_free(self.broker_port)
        broker_url = f"http://127.0.0.1:{port}"
        base = tomllib.loads(self.base_config.read_text())
        config = deep_merge(
            base,
            {
                "kafka": {"bootstrap_servers": bootstrap}
                | ({"security": kafka_security} if kafka_security else {}),
                "http": {"host": "127.0.0.1", "port": port},
                "apple": {
                    "api_base_url": apple_sim.api_url,
                    "public_base_url": broker_url,
                    "tenants": {"demo": {"s_token_file": str(stoken_file)}},
                },
                "android": {
                    "service_account_file": str(key_file),
                    "token_url": android_sim.token_url,
                    "api_base_url": android_sim.api_base_url,
                },
                "amapi": {
                    "service_account_file": str(key_file),
                    "token_url": amapi_sim.token_url,
                    "api_base_url": amapi_sim.api_base_url,
                    "subscription": amapi_sim.subscription,
                },
                "kapua": {"base_url": kapua_sim.base_url},
            },
        )
        config_file = self.state_dir / "broker.toml"
        config_file.write_text(
            "# Written by `mdm-broker dev` from deploy/broker.toml with local addresses.\n"
            + tomli_w.dumps(config)
        )
        taken = f" (port {self.broker_port} is in use, e.g. by another stack)"
        _say(f"starting the broker on {broker_url}{taken if port != self.broker_port else ''} ...")
        settings, app = await self.start_broker(config_file)
        self._closers.append(app.stop)

        from adapters.apple.cli import subscribe

        out = io.StringIO()
        args = argparse.Namespace(
            load_settings=lambda _path: settings.apple,
            config=config_file,
            tenant="demo",
            url=None,
            types=None,
        )
        verdict = await subscribe(args, out)
        _say("  " + out.getvalue().strip().replace("\n", "\n  "))
        if verdict != 0:
            raise RuntimeError("Apple simulator refused the client config")

        await self._start_demo_consumer(settings, app)

        token = settings.apple.tenants["demo"].notification_auth_tokens[0].get_secret_value()
        if self.traffic:
            from broker.devtools.devtraffic import TrafficDriver, TrafficTargets

            driver = TrafficDriver(
                TrafficTargets(
                    apple_sim_url=apple_sim.base_url,
                    android_sim_url=android_sim.base_url,
                    amapi_sim_url=amapi_sim.base_url,
                    kapua_sim_url=kapua_sim.root_url,
                    broker_url=broker_url,
                    apple_tenant="demo",
                    apple_token=token,
                ),
                interval_s=self.traffic_interval_s,
            )
            self._tasks.append(asyncio.create_task(driver.run(self._stop_traffic)))

        self.endpoints = {
            "kafka_bootstrap": bootstrap,
            "kafka_security": settings.kafka.security.describe(),
            "kafka_pids": self._kafka.pids if self._kafka else [],
            "topic": settings.kafka.events_topic,
            "dlq_topic": settings.kafka.dlq_topic,
            "broker_url": broker_url,
            "metrics_url": f"{broker_url}/metrics",
            "config_file": str(config_file),
            "tail_command": f"{Path(sys.executable).parent / 'mdm-broker'} tail -c {config_file}",
            "apple": {
                "simulator_url": apple_sim.base_url,
                "webhook_url": f"{broker_url}/apple/demo/notifications",
                "tenant": "demo",
                "notification_auth_token": token,
            },
            "android": {"simulator_url": android_sim.base_url},
            "amapi": {"simulator_url": amapi_sim.base_url},
            "kapua": {"simulator_url": kapua_sim.root_url},
        }
        (self.state_dir / "endpoints.json").write_bytes(
            orjson.dumps(self.endpoints, option=orjson.OPT_INDENT_2)
        )
        (self.state_dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
            f"rule_files:\n  - {ALERT_RULES}\n"
            "scrape_configs:\n  - job_name: mdm-broker\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n"
        )
        return self.endpoints

    async def _start_demo_consumer(self, settings: StackSettings, app: StackBroker) -> None:
        from broker.consumer import ConsumerSettings, IdempotentConsumer, InMemoryStore
        from broker.events import CanonicalEvent
        from broker.topics import TopicSpec, create_topic_specs

        consumer_settings = ConsumerSettings(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            topic=settings.kafka.events_topic,
            group_id=DEMO_GROUP,
            auto_offset_reset="earliest",
            security=settings.kafka.security,
        )
        dlq = consumer_settings.dlq_topic or f"{settings.kafka.events_topic}.{DEMO_GROUP}.dlq"
        await create_topic_specs(settings.kafka, [TopicSpec(dlq, 1, 1, {})])

        async def handle(event: CanonicalEvent, tx: None) -> None:
            self.demo_counts[event.type.value] += 1

        consumer = IdempotentConsumer(
            consumer_settings, InMemoryStore(), handle, registry=app.metrics.registry
        )
        await consumer.start()
        stop_consumer = asyncio.Event()
        task = asyncio.create_task(consumer.run_until(stop_consumer), name="dev-demo-consumer")

        async def close_consumer() -> None:
            stop_consumer.set()
            await asyncio.wait_for(task, 30)

        self._closers.append(close_consumer)

    async def stop(self) -> None:
        """Stop traffic, consumer, broker, simulators, then Kafka. Idempotent."""
        self._stop_traffic.set()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        self._tasks.clear()
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception:
                log.exception("stopping %s failed", getattr(closer, "__qualname__", closer))
        if self._kafka is not None:
            await asyncio.to_thread(self._kafka.stop)
            self._kafka = None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _banner(endpoints: dict[str, Any], state_dir: Path, traffic: bool) -> str:
    expected = [
        "Expected WARNING lines: every 5th traffic tick sends a wrong Apple token (401, which",
        "also opens an Apple sync gap) and a malformed Apple body (a dead letter), on purpose.",
    ]
    return "\n".join(
        [
            "",
            "mdm-broker dev is running. Where to look:",
            f"  metrics        {endpoints['metrics_url']}",
            f"  readiness      {endpoints['broker_url']}/readyz",
            f"  events         {endpoints['tail_command']}",
            f"  Apple webhook  {endpoints['apple']['webhook_url']}",
            f"  Kafka          {endpoints['kafka_bootstrap']} (topic {endpoints['topic']}, "
            f"{endpoints['kafka_security']})",
            f"  all of it      {state_dir / 'endpoints.json'}",
            *(expected if traffic else []),
            "Ctrl-C stops everything.",
            "",
        ]
    )


async def run_dev(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    # a second Ctrl-C must not exit before the Kafka JVMs are stopped
    install_stop_signals(asyncio.get_running_loop(), stop, second_signal_exits=False)
    stack = DevStack(
        start_broker=args.start_broker,
        state_dir=args.state_dir,
        base_config=args.base_config,
        traffic=not args.no_traffic,
        broker_port=args.port,
        traffic_interval_s=args.traffic_interval_s,
        secure=args.secure,
    )
    try:
        start = asyncio.create_task(stack.start())
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if start in done:
            endpoints = start.result()
            print(_banner(endpoints, args.state_dir, not args.no_traffic), flush=True)
            await waiter
        else:
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
        _say("stopping the stack ...")
    finally:
        await stack.stop()
        _say(f"stopped; demo consumer handled {sum(stack.demo_counts.values())} events")


def register(sub: argparse._SubParsersAction[Any], start_broker: BrokerStarter) -> None:
    """Add ``dev`` and ``dev-traffic`` to ``mdm-broker``; ``start_broker`` runs the broker."""
    dev = sub.add_parser(
        "dev",
        help="run the local stack: Kafka + simulators + broker + traffic (no Docker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev.add_argument("--no-traffic", action="store_true", help="start everything, generate no load")
    dev.add_argument(
        "--port", type=int, default=8080, help="broker HTTP port (a free one if taken)"
    )
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".mdm-dev"),
        help="written config, keys, endpoints.json (default: .mdm-dev)",
    )
    dev.add_argument(
        "--base-config",
        type=Path,
        default=BASE_CONFIG,
        help="settings the local addresses are written over (default: deploy/broker.toml)",
    )
    dev.add_argument(
        "--traffic-interval-s",
        type=float,
        default=2.0,
        help="seconds between traffic ticks (default: 2)",
    )
    dev.add_argument(
        "--secure",
        action="store_true",
        help="run Kafka with a SASL_SSL listener only (SCRAM-SHA-512, throwaway CA in the state "
        "dir); every client of the stack then uses [kafka.security]",
    )
    dev.set_defaults(func=cmd_dev, start_broker=start_broker)

    from broker.devtools import devtraffic

    traffic = sub.add_parser(
        "dev-traffic",
        help="drive the simulators of a running stack (docker-compose's traffic service)",
        description=devtraffic.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devtraffic.add_arguments(traffic)
    traffic.set_defaults(func=devtraffic.run_from_args)


class FreshClusterNoise(logging.Filter):
    """Drops aiokafka's ``ERROR Group Coordinator Request failed: [Error 15]
    GroupCoordinatorNotAvailableError``: the dev stack's Kafka is seconds old and answers that
    until its ``__consumer_offsets`` topic exists; the consumer retries and joins. Any other
    coordinator error is kept. Installed by ``mdm-broker dev`` only: on a running cluster the
    same line means something."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Group Coordinator Request failed")
            and "GroupCoordinatorNotAvailableError" in message
        )


COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"


def cmd_dev(args: argparse.Namespace) -> int:
    from broker.logsetup import setup_logging

    setup_logging("INFO")
    logging.getLogger("aiokafka").setLevel("ERROR")
    logging.getLogger(COORDINATOR_LOGGER).addFilter(FreshClusterNoise())
    from broker import eventloop

    eventloop.run(run_dev(args))
    return 0
