"""``python -m partsim.services.separator``: run the separator service (one line and exit status 1 without its extra)."""

from partsim.extras import service_main

raise SystemExit(service_main("separator"))
