"""Models shipped with partsim (installed as ``partsim.shipped``): ONNX files and their manifests."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "csn-v3"


def default_manifest() -> Path:
    """The manifest ``partsim embed`` and the services use unless told otherwise.

    ``PARTSIM_MODEL`` (a manifest path) overrides the shipped default.
    """
    env = os.environ.get("PARTSIM_MODEL")
    if env:
        return Path(env)
    return Path(__file__).parent / DEFAULT_MODEL / "manifest.json"


def shipped_separator_repo() -> Path:
    """The separation model repository shipped with partsim (Demucs layout; see models/separator/README.md)."""
    return Path(__file__).parent / "separator"
