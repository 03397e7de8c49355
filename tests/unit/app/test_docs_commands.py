"""Every `mdm-broker ...` command printed in README.md and docs/*.md parses as written (an
option renamed in the CLI but not in the docs fails here, not in a reader's terminal)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

from broker.app.cli import build_parser

REPO = Path(__file__).resolve().parents[3]
# A command at the start of a code line or an inline code span, after an optional venv path
# and environment assignments; it ends at a comment, a pipe, a redirection or the span's end.
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(?:\.venv/bin/)?mdm-broker ([^#|>`]*)")


def _commands(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    fenced = False
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        # Table cells spell alternatives `a\|b`: not a command to paste.
        candidates = [line.strip()] if fenced else re.findall(r"`([^`\\]+)`", line)
        for candidate in candidates:
            while fenced and candidate.endswith("\\") and number < len(lines):  # continued
                candidate = candidate[:-1] + " " + lines[number].strip()
                number += 1
            match = COMMAND.match(candidate)
            if match and not re.search(r"\[|\.\.\.|<|\{", match.group(1)):  # placeholders
                found.append((number, match.group(1).strip()))
    return found


def test_documented_commands_parse() -> None:
    failures = []
    checked = 0
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line, command in _commands(doc.read_text()):
            checked += 1
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    build_parser().parse_args(shlex.split(command))
            except SystemExit as exc:
                if exc.code:
                    reason = err.getvalue().strip().splitlines()[-1]
                    failures.append(f"{doc.name}:{line}: mdm-broker {command}\n    {reason}")
    assert checked > 40, checked
    assert not failures, "\n".join(failures)
