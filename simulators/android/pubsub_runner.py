"""Run the Pub/Sub + AMAPI simulator: in-process (tests, ``mdm-broker dev``) or as
``mdm-broker simulate amapi``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from simulators.android import amapi_resources
from simulators.android.pubsub_server import PubsubSimConfig, PubsubSimulator
from simulators.android.runner_common import (
    add_service_account_arguments,
    auth_from_args,
    serve_until_stopped,
)
from simulators.android.runner_common import steady_load as _steady_load
from simulators.android.serving import ServedSimulator

log = logging.getLogger(__name__)


class PubsubSimulatorServer(ServedSimulator[PubsubSimulator]):
    """A :class:`PubsubSimulator` served on ``host:port`` (0 picks a free port)."""

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def subscription(self) -> str:
        return self.simulator.config.subscription_path


EXAMPLES = """\
examples:
  mdm-broker simulate amapi --write-service-account .mdm-dev/amapi-sa.json
  mdm-broker simulate amapi --service-account sa.json --ack-deadline-s 10 --hold-s 5
  curl -X POST localhost:8085/control/amapi/enroll -d '{"enterprise": "LC0abc", "device": "3f01"}'
  curl -X POST localhost:8085/control/load -d '{"count": 1000}'
  curl localhost:8085/control/stats
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdm-broker simulate amapi",
        description=(
            "Simulate the Android Management API's notification path: a Cloud Pub/Sub project "
            "(REST: topics, pull subscriptions with ack deadlines, redelivery with the same "
            "messageId and a growing deliveryAttempt, modifyAckDeadline, retention, 429 above a "
            "rate, OAuth jwt-bearer tokens) fed by a simulated AMAPI (ENROLLMENT, STATUS_REPORT, "
            "COMMAND, USAGE_LOGS, ENTERPRISE_UPGRADE), with a control API."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--project", default="sim-project")
    parser.add_argument("--topic", default="amapi-notifications")
    parser.add_argument("--subscription", default="amapi-broker")
    add_service_account_arguments(parser)
    parser.add_argument(
        "--ack-deadline-s",
        type=float,
        default=10.0,
        help="subscription ack deadline (Pub/Sub: 10-600; shorter allowed here for tests)",
    )
    parser.add_argument("--hold-s", type=float, default=20.0, help="pull hold time when idle")
    parser.add_argument("--retention-s", type=float, default=7 * 24 * 3600.0)
    parser.add_argument("--rate-limit-qps", type=float, default=200.0, help="429 above; 0 = off")
    parser.add_argument("--token-lifetime-s", type=int, default=3600)
    parser.add_argument(
        "--load-per-s", type=float, default=0.0, help="publish this many notifications per second"
    )
    return parser


def build_from_args(args: argparse.Namespace) -> PubsubSimulator:
    auth = auth_from_args(args)
    config = PubsubSimConfig(
        project=args.project,
        topic=args.topic,
        subscription=args.subscription,
        ack_deadline_s=args.ack_deadline_s,
        retention_s=args.retention_s,
        hold_s=args.hold_s,
        rate_limit_qps=args.rate_limit_qps or None,
    )
    return PubsubSimulator(config, auth)


async def steady_load(simulator: PubsubSimulator, rate: float, stop: asyncio.Event) -> None:
    """Publish about ``rate`` notifications per second (every type in turn) until ``stop``."""

    def emit(count: int, first_seq: int) -> None:
        for kind, resource in amapi_resources.generate(count, first_seq=first_seq):
            simulator.publish_notification(kind, resource)

    await _steady_load(emit, rate, stop)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM/SIGINT."""
    simulator = build_from_args(args)
    await serve_until_stopped(
        PubsubSimulatorServer(simulator, args.host, args.port),
        lambda server: (
            f"Pub/Sub + AMAPI simulator on {server.base_url} (token {server.token_url}, "
            f"api {server.api_base_url}, subscription {server.subscription}, "
            f"control {server.base_url}/control/stats)"
        ),
        (lambda stop: steady_load(simulator, args.load_per_s, stop))
        if args.load_per_s > 0
        else None,
    )


def main(argv: Sequence[str]) -> int:
    """Entry point of ``mdm-broker simulate amapi``; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0
