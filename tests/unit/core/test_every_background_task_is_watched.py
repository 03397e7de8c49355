"""Every task the broker starts is supervised, awaited, or listed here with the reason.

A bare ``asyncio.create_task``/``ensure_future`` whose exception nobody retrieves fails silently
(at best "Task exception was never retrieved" at garbage collection). Accepted shapes:

* started by :class:`broker.supervisor.Supervisor` (``spawn`` for long-lived tasks, ``run_once``
  for one-shot tasks: logged, counted in ``mdm_broker_task_failures_total``, shown in /readyz);
* bound to a local name that the same function awaits (``await task``, ``asyncio.wait(tasks)``);
* listed in :data:`AWAITED_ELSEWHERE` with where its outcome is collected.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STARTERS = {"create_task", "ensure_future"}

AWAITED_ELSEWHERE = {
    "broker/consumer/partitions.py::PartitionWorker.start": (
        "the worker's exception is read by IdempotentConsumer._raise_if_worker_failed, which "
        "ends the consumer with ConsumerError"
    ),
    "broker/consumer/consumer.py::IdempotentConsumer._loop": (
        "purge task: _purge catches, counts (store_errors) and logs its own errors; "
        "awaited in _close_resources"
    ),
    "broker/publisher.py::KafkaPublisher._send_all": (
        "flush of the calls of one loop turn: _flush catches every exception and hands it to "
        "the waiting callers (each call's outcome future); awaited in KafkaPublisher.stop"
    ),
    "broker/devtools/dev.py::DevStack._start": (
        "dev traffic driver: awaited in DevStack.stop (a dev tool, not the broker)"
    ),
}


def _starts() -> list[tuple[str, ast.Call, list[ast.AST]]]:
    """(``path::qualname``, the call, its ancestors innermost first) for every task start."""
    found = []
    for folder in ("broker", "adapters"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel != "broker/supervisor.py":
                found += _scan(rel, path.read_text())
    return found


def _scan(rel: str, source: str) -> list[tuple[str, ast.Call, list[ast.AST]]]:
    tree = ast.parse(source, filename=rel)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name not in STARTERS:
            continue
        chain: list[ast.AST] = []
        cursor: ast.AST = node
        while cursor in parents:
            cursor = parents[cursor]
            chain.append(cursor)
        qualname = ".".join(
            s.name
            for s in reversed(chain)
            if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and isinstance(parents.get(s), ast.Module | ast.ClassDef)
        )
        found.append((f"{rel}::{qualname}", node, chain))
    return found


def _unwatched(starts: list[tuple[str, ast.Call, list[ast.AST]]]) -> list[str]:
    unwatched = []
    for where, call, chain in starts:
        function = _outermost_function(chain)
        names = _bound_names(chain)
        if function is not None and names and _awaited_in(function, names):
            continue
        if where in AWAITED_ELSEWHERE:
            continue
        unwatched.append(f"{where}:{call.lineno}")
    return unwatched


def _bound_names(chain: list[ast.AST]) -> set[str]:
    """Local names the started task ends up in (directly or inside a collection literal)."""
    for ancestor in chain:
        if isinstance(ancestor, ast.Assign | ast.AnnAssign):
            targets = ancestor.targets if isinstance(ancestor, ast.Assign) else [ancestor.target]
            return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if isinstance(ancestor, ast.stmt):
            return set()
    return set()


def _awaited_in(function: ast.AST, names: set[str]) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Await) and any(
            isinstance(n, ast.Name) and n.id in names for n in ast.walk(node)
        ):
            return True
    return False


def _outermost_function(chain: list[ast.AST]) -> ast.AST | None:
    functions = [a for a in chain if isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef)]
    return functions[-1] if functions else None


def test_every_task_start_is_supervised_awaited_or_explained() -> None:
    starts = _starts()
    assert len(starts) >= 8  # the scan sees the starts it is meant to police
    unwatched = _unwatched(starts)
    assert not unwatched, (
        "tasks started without supervision (use Supervisor.spawn/run_once, await them in the "
        f"same function, or explain in AWAITED_ELSEWHERE): {unwatched}"
    )


def test_the_check_flags_a_fire_and_forget_task() -> None:
    source = (
        "import asyncio\n"
        "class Poller:\n"
        "    async def kick(self):\n"
        "        self._task = asyncio.create_task(self._poll())\n"
        "    async def fine(self):\n"
        "        task = asyncio.ensure_future(self._poll())\n"
        "        await asyncio.wait({task})\n"
    )
    assert _unwatched(_scan("adapters/x.py", source)) == ["adapters/x.py::Poller.kick:4"]


def test_the_explanations_are_not_stale() -> None:
    places = {where for where, _, _ in _starts()}
    assert set(AWAITED_ELSEWHERE) <= places
