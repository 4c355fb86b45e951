"""``python -m partsim.services.embedder``: run the embedder service."""

from .server import main

raise SystemExit(main())
