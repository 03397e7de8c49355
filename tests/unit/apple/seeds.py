"""The Apple seed documents' example notifications, VERBATIM.

``tests/data/seeds/`` holds unchanged copies of the two Apple seed documents (checked against their
SHA-256 below): the "Subscribing to Notifications" article (``000_*``) and the WWDC21 session
10137 transcript (``004_*``). The examples are extracted from that text at import time; the only
change is the removal of the documents' ``...`` placeholders (with their adjacent comma), which
JSON cannot hold. Ids are kept as printed: the article prints USER_MANAGEMENT create, update and
retire under one ``notificationId``, and the session reuses the article's ids with different
content. The broker must cope with that (id collisions), so the tests must not hide it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

SEED_DIR = Path(__file__).resolve().parents[2] / "data" / "seeds"
ARTICLE = "000_82eb0be70688c8be.txt"
SESSION = "004_685a2c0d1b67916f.txt"
SEED_SHA256 = {
    ARTICLE: "445d884ab2365819b531ea0ff88d4f35c78a6a1156fe927f499e998c38b9783c",
    SESSION: "4312e0e8d04b32c3a4732c807b0ca0e079babaa85c40c5e1b0edc463e6f1411d",
}
UID = "2049025000431439"

_FENCE = re.compile(r"^```\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SESSION_SNIPPET = re.compile(r"^(\d+:\d\d) - (.*Notification)\n(\{.*\})$", re.MULTILINE)
_COMMA_PLACEHOLDER = re.compile(r",\s*\.\.\.")
_PLACEHOLDER_COMMA = re.compile(r"\.\.\.\s*,")
_ELIDED_BODY = re.compile(r'"notification":\s*\{\s*\.\.\.\s*\}')
ENVELOPE_KEYS = frozenset({"notification", "notificationId", "notificationType", "uId"})


@dataclass(frozen=True)
class SeedExample:
    """One example notification as printed in a seed document."""

    document: str
    where: str
    """Where in the document: the article's preceding heading, or the session's timestamp."""
    printed: str
    """The example exactly as printed."""

    @property
    def body(self) -> bytes:
        """What is posted: the printed text minus its ``...`` placeholders, nothing else."""
        return remove_placeholders(self.printed).encode()

    @property
    def complete(self) -> bool:
        """The example prints its whole envelope and a notification body: placeholders elide at
        most some list elements or some keys of an entity (the 13 the issue counts). Not complete:
        the article's generic format (``"notification": {...}``) and the session's 13:24 example,
        whose envelope is elided (``}, ... }``)."""
        if _ELIDED_BODY.search(self.printed):
            return False
        return self.parsed().keys() >= ENVELOPE_KEYS

    def parsed(self) -> dict[str, Any]:
        value = orjson.loads(self.body)
        assert isinstance(value, dict)
        return value


def remove_placeholders(text: str) -> str:
    """Remove ``...`` placeholders: ``, ...`` and ``..., `` with their comma, then bare ones."""
    text = _COMMA_PLACEHOLDER.sub("", text)
    text = _PLACEHOLDER_COMMA.sub("", text)
    return text.replace("...", "")


def seed_text(name: str) -> str:
    return (SEED_DIR / name).read_text(encoding="utf-8")


def _article_examples() -> list[SeedExample]:
    text = seed_text(ARTICLE)
    examples = []
    for match in _FENCE.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        examples.append(SeedExample(ARTICLE, headings[-1], match.group(1).rstrip()))
    return examples


def _session_examples() -> list[SeedExample]:
    return [
        SeedExample(SESSION, f"{m.group(1)} {m.group(2)}", m.group(3))
        for m in _SESSION_SNIPPET.finditer(seed_text(SESSION))
    ]


@cache
def seed_examples() -> tuple[SeedExample, ...]:
    """Every example notification of both documents, in document order (article first)."""
    return (*_article_examples(), *_session_examples())


def _by_type(kind: str, sub: str | None = None) -> dict[str, Any]:
    """The article's complete example of a notification type (and sub-type)."""
    for example in seed_examples():
        if example.document != ARTICLE or not example.complete:
            continue
        doc = example.parsed()
        if doc["notificationType"] == kind and (sub is None or doc["notification"]["type"] == sub):
            return doc
    raise LookupError(kind)


TEST_NOTIFICATION = _by_type("TEST_NOTIFICATION")
ASSET_COUNT = _by_type("ASSET_COUNT")
ASSOCIATE = _by_type("ASSET_MANAGEMENT", "ASSOCIATE")
DISASSOCIATE = _by_type("ASSET_MANAGEMENT", "DISASSOCIATE")
REVOKE = _by_type("ASSET_MANAGEMENT", "REVOKE")
USER_CREATE = _by_type("USER_MANAGEMENT", "CREATE")
USER_UPDATE = _by_type("USER_MANAGEMENT", "UPDATE")
USER_RETIRE = _by_type("USER_MANAGEMENT", "RETIRE")
USER_ASSOCIATED = _by_type("USER_ASSOCIATED")

EXPECTED_TYPES: dict[str, tuple[str, str]] = {
    "TEST_NOTIFICATION": ("mdm.test", "TEST_NOTIFICATION"),
    "ASSET_COUNT": ("mdm.asset.count_changed", "ASSET_COUNT"),
    "ASSET_MANAGEMENT/ASSOCIATE": ("mdm.assignment.associated", "ASSET_MANAGEMENT/ASSOCIATE"),
    "ASSET_MANAGEMENT/DISASSOCIATE": (
        "mdm.assignment.disassociated",
        "ASSET_MANAGEMENT/DISASSOCIATE",
    ),
    "ASSET_MANAGEMENT/REVOKE": ("mdm.assignment.revoked", "ASSET_MANAGEMENT/REVOKE"),
    "USER_MANAGEMENT/CREATE": ("mdm.user.created", "USER_MANAGEMENT/CREATE"),
    "USER_MANAGEMENT/UPDATE": ("mdm.user.updated", "USER_MANAGEMENT/UPDATE"),
    "USER_MANAGEMENT/RETIRE": ("mdm.user.retired", "USER_MANAGEMENT/RETIRE"),
    "USER_ASSOCIATED": ("mdm.user.associated", "USER_ASSOCIATED"),
}


def vendortype_of(doc: dict[str, Any]) -> str:
    kind = str(doc["notificationType"])
    if kind in ("ASSET_MANAGEMENT", "USER_MANAGEMENT"):
        return f"{kind}/{doc['notification']['type']}"
    return kind


# (parsed example, canonical type, vendortype) of every complete example, both documents.
SEED_EXAMPLES: list[tuple[dict[str, Any], str, str]] = [
    (example.parsed(), *EXPECTED_TYPES[vendortype_of(example.parsed())])
    for example in seed_examples()
    if example.complete
]
