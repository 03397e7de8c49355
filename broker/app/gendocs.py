"""``python -m broker.app.gendocs [DOCS_DIR]`` (``make schema``): regenerate the JSON Schemas and
docs/configuration.md from the models, with the broker's assembled settings model."""

from __future__ import annotations

import sys
from pathlib import Path

from broker.app.config import BrokerSettings
from broker.devtools import schema


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "docs")
    for path in schema.write(target, BrokerSettings):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
