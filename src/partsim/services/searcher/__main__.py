"""``python -m partsim.services.searcher``: run the searcher service (one line and exit status 1 without its extra)."""

from partsim.extras import service_main

raise SystemExit(service_main("searcher"))
