"""What the deployment tests share: the deploy/ folder, the contract the compose file and the
images implement (each service's gRPC port, metrics port and health name, the image, the
unprivileged uid) and the rule for a pinned image reference."""

from __future__ import annotations

import re

from .util import ROOT

DEPLOY = ROOT / "deploy"

# The contract: service -> (gRPC port, metrics port, grpc.health.v1 service name)
SERVICES = {
    "gateway": (50051, 9091, "partsim.v1.PartsimService"),
    "embedder": (50052, 9092, "partsim.internal.v1.EmbedderService"),
    "searcher": (50053, 9093, "partsim.internal.v1.SearcherService"),
    "separator": (50054, 9094, "partsim.internal.v1.SeparatorService"),
}
IMAGE = "ghcr.io/partsim/partsim:0.1.0"
UID = "10001"


def exact_tag(image: str) -> bool:
    """name:TAG pinned to one release (x.y.z or a dated release), or name@sha256:digest."""
    if "@sha256:" in image:
        return bool(re.search(r"@sha256:[0-9a-f]{64}$", image))
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or tag == "latest":
        return False
    return bool(re.search(r"\d+\.\d+\.\d+|\d{4}-\d{2}-\d{2}", tag))
