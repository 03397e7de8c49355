"""Generate the published contract from the models: JSON Schemas and the configuration reference.

``make schema`` (``python -m broker.app.gendocs docs``) writes, for the settings model the
composition root hands in:

* ``docs/schema/envelope.json``: the CloudEvents envelope;
* ``docs/schema/data/<type>.json``: the ``data`` of each canonical type;
* ``docs/configuration.md``: every setting, its environment variable, type and default.

A test regenerates these in memory and fails when the committed files drift from the models.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from broker.events import DATA_MODELS, CanonicalEvent


def _dump(doc: Any) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def schema_files() -> dict[str, str]:
    """Relative path -> file content for every generated schema file."""
    files: dict[str, str] = {}
    envelope = CanonicalEvent.model_json_schema(mode="serialization")
    envelope["$id"] = "https://mdm-notification-broker/schema/envelope.json"
    files["schema/envelope.json"] = _dump(envelope)
    for event_type, model in DATA_MODELS.items():
        doc = model.model_json_schema(mode="serialization")
        doc["$id"] = f"https://mdm-notification-broker/schema/data/{event_type.value}.json"
        doc["title"] = f"{event_type.value} data"
        files[f"schema/data/{event_type.value}.json"] = _dump(doc)
    return files


def _describe_type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pydantic.types.", "")


def _settings_rows(model: type[BaseModel], prefix: list[str]) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_settings_rows(annotation, [*prefix, name]))
            continue
        dotted = ".".join([*prefix, name])
        env = "MDM_BROKER_" + "__".join(p.upper() for p in [*prefix, name])
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else f"`{default}`"
        if "SecretStr" in _describe_type(annotation):
            shown = "(secret)" if default is not None else ""
        desc = (field.description or "").replace("|", "\\|")
        kind = _describe_type(annotation).replace("|", "\\|")
        rows.append(f"| `{dotted}` | `{env}` | {kind} | {shown} | {desc} |")
    return rows


def configuration_reference(settings_model: type[BaseModel]) -> str:
    """Markdown table of every setting of ``settings_model`` (the broker's ``BrokerSettings``)."""
    header = [
        "# Configuration reference",
        "",
        "Generated from `broker/app/config.py` by `make schema`; do not edit by hand.",
        "",
        "Settings come from a TOML file (`mdm-broker run --config FILE`, or `$MDM_BROKER_CONFIG`)",
        "and environment variables, which win over the file. Nested fields use `__` in variable",
        "names. Durations are seconds (`*_s`), sizes bytes (`*_bytes`).",
        "",
        "A bad configuration stops every command with exit code 2 and one line per problem,",
        "naming the TOML key and its environment variable (never the value). A variable",
        "`MDM_BROKER_<SECTION>__...` whose section does not exist is refused too, with the",
        "closest name; other `MDM_BROKER_*` names (e.g. Kubernetes' `MDM_BROKER_SERVICE_HOST`",
        "for a Service named `mdm-broker`) are ignored unless they are close to a setting.",
        "Base URLs (`*_url`) must be `http://` or `https://` URLs with a host.",
        "",
        "| setting (TOML) | environment variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + _settings_rows(settings_model, [])) + "\n"


_RULES = [
    "## The type states the outcome",
    "",
    "A consumer that switches on `type` alone never acts on a failure as if it were a success.",
    "Apple ASSET_MANAGEMENT / USER_MANAGEMENT notifications keep their success types only with",
    '`"result": "SUCCESS"`; `"result": "FAILURE"` becomes `mdm.assignment.failed` /',
    "`mdm.user.failed` (`data.action` = Apple's `type`, `data.result`, `data.error`); any other",
    "`result` value (or none) is forwarded as `mdm.unknown` with the raw payload. Polled event",
    "status (reconciliation) follows the same rule: `COMPLETE` -> `mdm.apple.event_status`,",
    "`FAILED` -> the failure type of its `eventType`, anything else -> `mdm.unknown`.",
    "",
    "## Id collisions",
    "",
    "A vendor id seen again with **different content** is a different notification. The broker",
    "keeps a digest of each recently published id's content (bounded by count and bytes):",
    "",
    "* same id, same content: a duplicate, answered without a second write;",
    "* same id, different content: published under the derived, deterministic id",
    "  `{id}~{first 16 hex of SHA-256 of the body as received}`, with the extension",
    "  `idcollision` naming the original id, counted in `mdm_broker_id_collisions_total{vendor}`",
    "  and logged at WARNING. The idempotent consumer sees a distinct (`source`, `id`).",
    "",
    "Apple's own documentation prints USER_MANAGEMENT create, update and retire under one",
    "`notificationId`; posted verbatim, in that order, they become:",
    "",
    "| example | `id` | `idcollision` |",
    "|---|---|---|",
    "| CREATE | `4c0bbb9b-d5a6-4860-83ef-5cf362783c1e` | |",
    "| UPDATE | `4c0bbb9b-d5a6-4860-83ef-5cf362783c1e~ee24cea47553b846` |"
    " `4c0bbb9b-d5a6-4860-83ef-5cf362783c1e` |",
    "| RETIRE | `4c0bbb9b-d5a6-4860-83ef-5cf362783c1e~c485cdf99abb7b5a` |"
    " `4c0bbb9b-d5a6-4860-83ef-5cf362783c1e` |",
    "",
    "The window is per process and bounded: after a restart (or eviction), whichever content",
    "arrives first gets the plain id. A redelivery of the same bytes always maps to the same id.",
    "",
]


def event_catalogue() -> str:
    """Markdown catalogue: every canonical type, its vendor types, its data fields and an example."""
    from broker.devtools.examples import example_events

    lines = [
        "# Event catalogue",
        "",
        "Generated from `broker/events.py` and `broker/devtools/examples.py` by `make schema`; do not edit.",
        "",
        "Every record on the events topic is a CloudEvents 1.0 structured-mode JSON document with",
        "the extensions `vendor`, `tenant`, `vendortype` and `partitionkey` (also the record key).",
        "`data` holds the canonical fields below plus `raw`, the vendor notification as received.",
        "JSON Schemas: `docs/schema/envelope.json` and `docs/schema/data/<type>.json`.",
        "",
        *_RULES,
    ]
    for event_type, event in example_events().items():
        model = DATA_MODELS[event_type]
        fields = ", ".join(f"`{name}`" for name in model.model_fields if name != "raw")
        lines += [
            f"## `{event_type.value}`",
            "",
            inspect.cleandoc(model.__doc__ or ""),
            "",
            f"Canonical fields: {fields or '(none besides `raw`)'}.",
            "",
            "```json",
            orjson.dumps(
                event.model_dump(mode="json", exclude_none=True), option=orjson.OPT_INDENT_2
            ).decode(),
            "```",
            "",
        ]
    return "\n".join(lines)


def generated_files(settings_model: type[BaseModel]) -> dict[str, str]:
    """Every generated file's content by path relative to the docs folder."""
    files = schema_files()
    files["configuration.md"] = configuration_reference(settings_model)
    files["events.md"] = event_catalogue()
    return files


def write(docs_dir: Path, settings_model: type[BaseModel]) -> list[Path]:
    """Write :func:`generated_files` under ``docs_dir``; returns the paths written."""
    written = []
    for relative, content in generated_files(settings_model).items():
        path = docs_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
