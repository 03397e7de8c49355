"""``mdm-broker``: the command line. Signal handlers: :func:`broker.signals.install_stop_signals`.

Exit codes:

* 0: success; for ``run``, a graceful shutdown that drained everything in ``shutdown_timeout_s``;
* 1: runtime failure (e.g. ``topics create`` cannot reach Kafka; ``kafka-check`` found a
  problem). ``run`` does not exit when Kafka refuses or cannot be reached at start: it stays up,
  not ready, naming the cause on /readyz, and connects in the background;
* 2: usage or configuration error, including a required Kafka topic that is missing while the
  cluster does not auto-create topics (the message names the topic and the fix);
* 3: ``run`` stopped, but the drain was incomplete: the shutdown budget ran out and in-flight
  work was abandoned (never acknowledged to a vendor, so vendors redeliver it; see the log line
  ``drain INCOMPLETE`` for counts).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiokafka.errors import KafkaError

from broker.app.config import BrokerSettings, load_settings
from broker.errors import BrokerError, ConfigError
from broker.kafka_diagnosis import diagnose
from broker.signals import install_stop_signals

EXAMPLES = """\
examples:
  mdm-broker run --config deploy/broker.toml       run the broker
  MDM_BROKER_KAFKA__BOOTSTRAP_SERVERS=k:9092 mdm-broker run --config broker.toml
  mdm-broker topics create --config broker.toml    create every topic the broker and its adapters need
  mdm-broker kafka-check --config broker.toml      TLS, SASL login, topics and ACLs the broker needs
  mdm-broker dev                                    local stack: Kafka + simulators + broker
  mdm-broker kafka                                  just a local Kafka (no Docker)
  mdm-broker tail -c .mdm-dev/broker.toml           follow the events of `mdm-broker dev`
  mdm-broker dlq list -c broker.toml --since 6h     dead letters; `dlq replay` after a mapping fix
  mdm-broker apple subscribe --tenant demo -c broker.toml
  mdm-broker simulate kapua --port 8083             one vendor simulator

configuration: a TOML file (--config or $MDM_BROKER_CONFIG) overridden by environment variables
MDM_BROKER_<SECTION>__<FIELD>, e.g. MDM_BROKER_HTTP__PORT=9000. See docs/configuration.md.

exit codes: 0 success; 1 runtime failure (Kafka unreachable, a failed check); 2 usage or
configuration error (every bad setting is named); 3 `run` stopped with an incomplete drain.
`mdm-broker COMMAND --help` explains each command.
"""

Command = Callable[[argparse.Namespace], int]

EXIT_DRAIN_INCOMPLETE = 3


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="TOML settings file (default: $MDM_BROKER_CONFIG, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdm-broker",
        description=(
            "Bridge Apple, Google Play EMM and Eclipse Kapua device-management notifications "
            "into one Kafka topic of CloudEvents."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the broker until SIGTERM/SIGINT",
        description=(
            "Run the broker: connect to Kafka, start the enabled adapters and serve /healthz, "
            "/readyz and /metrics. SIGTERM or SIGINT drains in-flight work within "
            "shutdown_timeout_s (one deadline for HTTP drain, adapters and the Kafka flush) and "
            "exits 0 when everything was drained, 3 when the budget ran out and work was "
            "abandoned (vendors redeliver it). Exits 2 when a required topic is missing and "
            "Kafka does not auto-create topics."
        ),
    )
    _config_arg(run)
    run.set_defaults(func=cmd_run)

    topics = sub.add_parser(
        "topics",
        help="manage the broker's Kafka topics",
        description="Manage the broker's Kafka topics.\n\n"
        "example:\n  mdm-broker topics create --config broker.toml\n\n"
        "exit codes: 0 done, 1 Kafka unreachable or refused, 2 configuration error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = topics_sub.add_parser(
        "create",
        help="create every topic the broker and its enabled adapters need (idempotent)",
        description=(
            "Create the missing topics: events, dead letters, the compacted state topic and "
            "what the enabled adapters need (e.g. kapua.watch_topic), with "
            "kafka.partitions, kafka.replication_factor, min.insync.replicas (2 when the "
            "replication factor is 3 or more) and max.message.bytes = kafka.max_request_bytes. "
            "Existing topics are left unchanged (a warning names a smaller max.message.bytes)."
        ),
    )
    _config_arg(create)
    create.add_argument(
        "--all-adapters",
        action="store_true",
        help="also create the topics of adapters that are disabled in the configuration",
    )
    create.set_defaults(func=cmd_topics_create)

    check = sub.add_parser(
        "kafka-check",
        help="check the Kafka connection, login, topics and ACLs the broker needs",
        description=(
            "Connect with kafka.security (TLS, CA, host name, SASL login), then check as the "
            "authenticated principal: every topic exists (DESCRIBE); WRITE on the events, DLQ and "
            "state topics (an empty produce request, nothing is written); READ on the state topic; "
            "READ on the Kapua shard consumer groups when Kapua is enabled. Prints a table; exit "
            "code 0 when every check passed, 1 otherwise, 2 for a configuration error."
        ),
    )
    _config_arg(check)
    check.set_defaults(func=cmd_kafka_check)

    kafka = sub.add_parser(
        "kafka",
        help="run a local Apache Kafka (KRaft) from Maven Central jars, no Docker",
        description="Fetch the pinned Kafka release (cached) and run it until Ctrl-C.",
    )
    kafka.add_argument(
        "--nodes", type=int, choices=(1, 3), default=1, help="cluster size (default: 1)"
    )
    kafka.set_defaults(func=cmd_kafka)

    from broker.app import extra_commands

    extra_commands.register(sub)
    _plain_descriptions(parser)
    return parser


_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _plain_descriptions(parser: argparse.ArgumentParser) -> None:
    """Help reads as plain text: descriptions taken from module docstrings lose their reST
    markup (````x```` and ``:func:`x``` become ``x``), for every command below ``parser``."""
    if parser.description:
        parser.description = _RST_ROLE.sub(r"\1", _RST_LITERAL.sub(r"\1", parser.description))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _plain_descriptions(sub)


def _load(args: argparse.Namespace) -> BrokerSettings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from broker.app.heap import settle_after_startup
    from broker.app.runtime import BrokerApp
    from broker.logsetup import setup_logging

    settings = _load(args)
    setup_logging(settings.log.level, settings.log.json_format)

    hint = f"--config {args.config}" if args.config else ""

    async def main() -> int:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop)
        app = BrokerApp(settings, config_hint=hint)
        report = await app.run_until(stop, on_started=settle_after_startup)
        return 0 if report.complete else EXIT_DRAIN_INCOMPLETE

    from broker import eventloop

    logging.getLogger(__name__).info("event loop: %s", eventloop.loop_name())
    return eventloop.run(main())


def cmd_topics_create(args: argparse.Namespace) -> int:
    from broker.app import registry
    from broker.topics import create_topics, topic_specs

    settings = _load(args)
    needs = registry.topic_needs(settings, include_disabled=args.all_adapters)
    created = set(asyncio.run(create_topics(settings.kafka, needs)))
    for spec in topic_specs(settings.kafka, needs):
        state = "created" if spec.name in created else "exists "
        print(f"{state} {spec.name}  ({spec.purpose})")
    return 0


def cmd_kafka_check(args: argparse.Namespace) -> int:
    from broker.kafka_check import format_table, run_checks

    settings = _load(args)
    groups: list[str] = []
    read_topics: list[str] = []
    if settings.kapua.enabled:
        groups.append(settings.kapua.group_id)
        if settings.kapua.watch_topic_enabled:
            groups.append(f"{settings.kapua.group_id}-watch")
            read_topics.append(settings.kapua.watch_topic)
    rows = asyncio.run(run_checks(settings.kafka, groups=groups, read_topics=read_topics))
    print(format_table(rows))
    return 0 if all(row.ok for row in rows) else 1


def cmd_kafka(args: argparse.Namespace) -> int:
    from broker.devtools import devkafka

    return devkafka.main(["run", "--nodes", str(args.nodes)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"mdm-broker: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"mdm-broker: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    except KafkaError as exc:  # a command that let a client error through: one line, no traceback
        print(f"mdm-broker: {diagnose(exc).summary}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
