"""``python -m broker`` is ``mdm-broker``."""

from broker.app.cli import main

raise SystemExit(main())
