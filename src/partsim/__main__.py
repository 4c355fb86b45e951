"""``python -m partsim`` is the ``partsim`` command."""

from .cli import main

raise SystemExit(main())
