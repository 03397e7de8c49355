"""``python -m broker`` is ``mdm-broker``."""

from broker.cli import main

raise SystemExit(main())
