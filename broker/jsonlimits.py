"""Structural limits of vendor JSON: how deep one input may nest.

Vendor notifications nest a handful of levels (Apple's deepest documented shape is 6). A body nested
hundreds of levels is valid JSON but poison downstream: ``orjson.dumps`` stops at 254 levels,
Python's ``json`` at about 1,000 and ``orjson.loads`` at 1,024. Inputs deeper than a configured
limit are therefore dead-lettered instead of published, so every record on the events topic can be
decoded by any consumer.
"""

from __future__ import annotations

from typing import Any


def nesting_exceeds(value: Any, limit: int, body: bytes | None = None) -> bool:
    """True when ``value`` (parsed JSON) nests arrays/objects more than ``limit`` levels deep.

    A top-level object is depth 1. Iterative (no recursion), stops at the first too-deep container.
    ``body``, the bytes ``value`` was parsed from, enables a constant-time pass for bodies that
    cannot be that deep (fewer than ``limit`` opening brackets in total).
    """
    if not isinstance(value, dict | list):
        return False
    if limit < 1:
        return True
    if body is not None and body.count(b"{") + body.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
