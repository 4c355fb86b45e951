"""``python -m partsim.cli`` is the ``partsim`` command."""

from . import main

raise SystemExit(main())
