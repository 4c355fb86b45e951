"""``python -m partsim.services.separator``: run the separator service."""

from .server import main

raise SystemExit(main())
