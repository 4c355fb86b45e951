"""The Kubernetes manifests as the k8s tests see them: every kustomization rendered once per test
session with the real kustomize (``kubectl kustomize``): the base, both overlays and all 128
combinations of the seven components (``render_all``, the ``k8s_renders`` fixture in conftest.py),
and the service contract they implement. Reading the rendered objects: tests/k8s_objects.py."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from .util import ROOT

K8S = ROOT / "k8s"
IMAGE = "ghcr.io/partsim/partsim"
# canonical order: ingest-worker before audio-store and tls (they patch the ingest workers too)
COMPONENTS = ["gpu", "hpa", "network-policies", "monitoring", "ingest-worker", "audio-store", "tls"]
SERVICES = {  # component -> (gRPC port, metrics port, env prefix)
    "gateway": (50051, 9091, "PARTSIM_GATEWAY"),
    "embedder": (50052, 9092, "PARTSIM_EMBEDDER"),
    "searcher": (50053, 9093, "PARTSIM_SEARCHER"),
    "separator": (50054, 9094, "PARTSIM_SEPARATOR"),
    "ingest-worker": (50051, 9091, "PARTSIM_GATEWAY"),
}
HEADLESS = {"embedder": "partsim-embedder", "searcher": "partsim-searcher", "separator": "partsim-separator"}
KUBECTL = shutil.which("kubectl")


def _kustomize(path: Path) -> list[dict]:
    proc = subprocess.run(
        [KUBECTL, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def render_all() -> dict[str, list[dict]]:
    """name -> rendered objects, for base, overlays/cpu, overlays/gpu and every component subset."""
    jobs: dict[str, Path] = {
        "base": K8S / "base",
        "overlay-cpu": K8S / "overlays" / "cpu",
        "overlay-gpu": K8S / "overlays" / "gpu",
    }
    with tempfile.TemporaryDirectory(prefix="partsim-k8s-") as tmp:
        for n in range(1, len(COMPONENTS) + 1):
            for combo in itertools.combinations(COMPONENTS, n):
                d = Path(tmp) / "+".join(combo)
                d.mkdir()
                rel = os.path.relpath(K8S, d)
                doc = {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": "partsim-test",
                    "resources": [f"{rel}/base"],
                    "components": [f"{rel}/components/{c}" for c in combo],
                }
                (d / "kustomization.yaml").write_text(yaml.safe_dump(doc))
                jobs["+".join(combo)] = d
        with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as pool:
            out = dict(zip(jobs, pool.map(_kustomize, jobs.values())))
    assert len(out) == 3 + 2 ** len(COMPONENTS) - 1
    return out


def components_of(name: str) -> set[str]:
    if name == "base":
        return set()
    if name == "overlay-cpu":
        return {"hpa", "network-policies", "monitoring", "ingest-worker", "audio-store", "tls"}
    if name == "overlay-gpu":
        return {"gpu", "hpa", "network-policies", "monitoring", "ingest-worker", "audio-store", "tls"}
    return set(name.split("+"))


RENDER_NAMES = ["base", "overlay-cpu", "overlay-gpu"] + [
    "+".join(c) for n in range(1, len(COMPONENTS) + 1) for c in itertools.combinations(COMPONENTS, n)
]


def renders_with(comp: str) -> list[str]:
    """The render names that include component ``comp``."""
    return [n for n in RENDER_NAMES if comp in components_of(n)]
