"""Artefacts shipped inside the package, and the one place that finds them.

``models/<name>/`` holds each shipped model: the part-embedding networks (``csn-v2`` takes
log-mel, ``csn-v3`` takes PCM; each an ONNX file with its ``manifest.json``, model card and
evaluation) and ``separator/``, the Demucs-layout separation model repository. Code never builds
these paths itself: it asks :func:`shipped_model`, :func:`default_manifest` or
:func:`shipped_separator_repo`.
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS = Path(__file__).parent / "models"

#: the part-embedding model ``partsim embed`` and the services load unless told otherwise
DEFAULT_EMBEDDING_MODEL = "csn-v3"
#: the separation model (a bag name in :func:`shipped_separator_repo`) the separator loads by default
DEFAULT_SEPARATION_MODEL = "partsim-sep-v1"


def shipped_model(name: str) -> Path:
    """The folder of the shipped model ``name`` (``csn-v3``, ``csn-v2``, ``separator``).

    Raises ``FileNotFoundError`` naming the folder when that model is not shipped.
    """
    folder = MODELS / name
    if not folder.is_dir():
        known = ", ".join(sorted(p.name for p in MODELS.iterdir() if p.is_dir()))
        raise FileNotFoundError(f"no shipped model {name!r} in {MODELS} (shipped: {known})")
    return folder


def default_manifest() -> Path:
    """The embedding manifest used unless told otherwise; ``PARTSIM_MODEL`` (a manifest path) overrides it."""
    env = os.environ.get("PARTSIM_MODEL")
    if env:
        return Path(env)
    return shipped_model(DEFAULT_EMBEDDING_MODEL) / "manifest.json"


def shipped_separator_repo() -> Path:
    """The separation model repository shipped with partsim (Demucs layout; see models/separator/README.md)."""
    return shipped_model("separator")
