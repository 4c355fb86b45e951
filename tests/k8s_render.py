"""The Kubernetes manifests as the k8s tests see them: every kustomization rendered once per test
session with the real kustomize (``kubectl kustomize``): the base, both overlays and all 127
combinations of the seven components (``Renders``, the ``k8s_renders`` fixture in conftest.py),
and the service contract they implement. Reading the rendered objects: tests/k8s_objects.py."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
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
class Renders(Mapping[str, list[dict]]):
    """name -> rendered objects, for base, overlays/cpu, overlays/gpu and every component subset, each rendered
    on first use (a test of one render pays for that one; iterating renders the rest in parallel)."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="partsim-k8s-")
        self._done: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        if name == "base":
            return K8S / "base"
        if name.startswith("overlay-"):
            return K8S / "overlays" / name.removeprefix("overlay-")
        d = Path(self._tmp.name) / name
        d.mkdir(exist_ok=True)
        rel = os.path.relpath(K8S, d)
        doc = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "partsim-test",
            "resources": [f"{rel}/base"],
            "components": [f"{rel}/components/{c}" for c in name.split("+")],
        }
        (d / "kustomization.yaml").write_text(yaml.safe_dump(doc))
        return d

    def __getitem__(self, name: str) -> list[dict]:
        if name not in RENDER_NAMES:
            raise KeyError(name)
        with self._lock:
            if name not in self._done:
                self._done[name] = _kustomize(self._dir(name))
            return self._done[name]

    def __iter__(self) -> Iterator[str]:
        missing = [n for n in RENDER_NAMES if n not in self._done]
        with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as pool:
            for name, objs in zip(missing, pool.map(lambda n: _kustomize(self._dir(n)), missing)):
                self._done.setdefault(name, objs)
        return iter(RENDER_NAMES)

    def __len__(self) -> int:
        return len(RENDER_NAMES)

    def close(self) -> None:
        self._tmp.cleanup()


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
