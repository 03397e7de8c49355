"""``mdm-broker simulate android [options]``: the EMM simulator as a process."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simulators.android.runner import add_arguments, run

EXAMPLES = """\
examples:
  mdm-broker simulate android --write-service-account .mdm-dev/android-sa.json
  mdm-broker simulate android --service-account sa.json --hold-s 5 --ack-deadline-s 2
  curl -X POST localhost:8082/control/load -d '{"count": 1000}'
  curl localhost:8082/control/stats
"""


def main(argv: Sequence[str]) -> int:
    """Parse ``argv`` and serve until SIGINT/SIGTERM; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="mdm-broker simulate android",
        description=(
            "Simulate the Google Play EMM notification API: OAuth jwt-bearer token endpoint, "
            "pullNotificationSet (long-poll), acknowledgeNotificationSet with a 20 s deadline and "
            "redelivery, sendTestPushNotification, 429 above a rate, and a control API."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(list(argv)))
