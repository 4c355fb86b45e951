"""``python -m partsim.services.embedder``: run the embedder service (one line and exit status 1 without its extra)."""

from partsim.extras import service_main

raise SystemExit(service_main("embedder"))
