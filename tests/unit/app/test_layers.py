"""The layer contracts bite: a core module importing an adapter makes `lint-imports` fail.

The package tree is copied to a temporary folder (the checkout is never edited) and import-linter
runs there against the project's own pyproject.toml, once as is and once with a forbidden import
added to broker/publisher.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, not the editable install
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("broker", "adapters", "simulators"):
        shutil.copytree(REPO / package, tree / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_core_importing_an_adapter_breaks_the_layer_contracts(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    clean = _lint_imports(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 broken" in clean.stdout

    publisher = tree / "broker" / "publisher.py"
    publisher.write_text(
        publisher.read_text() + "\nfrom adapters.apple.settings import AppleSettings  # noqa\n"
    )
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "broker.publisher -> adapters.apple.settings" in broken.stdout, broken.stdout
