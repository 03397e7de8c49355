"""``mdm-broker simulate apple|android|amapi|kapua [options]``: run one vendor simulator.

Each vendor owns its options: everything after the vendor name is handed, unparsed, to that
vendor's ``main(argv) -> exit code`` (``mdm-broker simulate apple --help`` lists Apple's).
Vendors are listed explicitly in :data:`SIMULATORS`; adding one is one import and one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from simulators.android.cli import main as android_main
from simulators.android.pubsub_runner import main as amapi_main
from simulators.apple.cli import main as apple_main
from simulators.kapua.cli import main as kapua_main

SimulatorMain = Callable[[Sequence[str]], int]

SIMULATORS: dict[str, SimulatorMain] = {
    "apple": apple_main,
    "android": android_main,
    "amapi": amapi_main,
    "kapua": kapua_main,
}


def cmd_simulate(args: argparse.Namespace) -> int:
    simulator: SimulatorMain = SIMULATORS[args.vendor]
    return simulator(args.simulator_args)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulate`` to ``mdm-broker``."""
    parser = sub.add_parser(
        "simulate",
        help="run a vendor simulator (" + "|".join(SIMULATORS) + ")",
        description="Run a faithful simulator of a vendor API until SIGINT/SIGTERM. Options after "
        "the vendor name belong to that simulator (see `mdm-broker simulate VENDOR --help`).",
    )
    parser.add_argument(
        "vendor", choices=sorted(SIMULATORS), metavar="VENDOR", help=", ".join(sorted(SIMULATORS))
    )
    parser.add_argument(
        "simulator_args",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="the simulator's own options, e.g. mdm-broker simulate kapua --port 8083",
    )
    parser.set_defaults(func=cmd_simulate)
