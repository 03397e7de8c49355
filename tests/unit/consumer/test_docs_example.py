"""The README-ready example in docs/consumer.md runs: imports resolve, the handler works."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from broker.events import (
    Assignment,
    AssignmentData,
    EventType,
    Vendor,
    apple_key,
    make_event,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "consumer.md"


def _example() -> str:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, "docs/consumer.md lost its example"
    return match.group(1)


class FakeTx:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.calls.append((sql, *args))
        return "INSERT 0 1"


async def test_example_handler_writes_one_row_per_assignment() -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(_example(), str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    assert inspect.iscoroutinefunction(namespace["main"])
    event = make_event(
        id="n-1",
        vendor=Vendor.APPLE,
        tenant="uid-1",
        type=EventType.ASSIGNMENT_ASSOCIATED,
        vendortype="ASSET_MANAGEMENT/ASSOCIATE",
        partitionkey=apple_key("uid-1"),
        data=AssignmentData(
            raw={},
            assignments=[
                Assignment(adam_id="1", serial_number="S1"),
                Assignment(adam_id="2", serial_number="S2"),
            ],
        ),
    )
    tx = FakeTx()
    await namespace["handle"](event, tx)
    assert [call[1:] for call in tx.calls] == [
        ("uid-1", "1", "S1", "mdm.assignment.associated"),
        ("uid-1", "2", "S2", "mdm.assignment.associated"),
    ]


def test_example_is_about_twenty_lines_of_code() -> None:
    code = [line for line in _example().splitlines() if line.strip() and "import" not in line]
    assert len(code) <= 25
