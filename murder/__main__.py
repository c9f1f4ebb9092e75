"""``python -m murder``: the same as the ``murder`` command."""

from murder.cli import main

raise SystemExit(main())
