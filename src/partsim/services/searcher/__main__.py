"""``python -m partsim.services.searcher``: run the searcher service."""

from .server import main

raise SystemExit(main())
