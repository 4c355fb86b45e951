"""What each part of partsim needs beyond the core install, by extra of the ``partsim`` distribution.

``pip install partsim`` is the thin client: grpcio, grpcio-status, protobuf and googleapis-common-protos, enough
for :mod:`partsim.client`, the generated stubs (:mod:`partsim.v1`) and the ``partsim`` commands that call a
gateway (index, search-mix, search-stems, tracks, stats, jobs, health). Everything else is an extra
(pyproject.toml, ``[project.optional-dependencies]``); :data:`MODULES` names the top-level modules each extra
brings that partsim imports, and :func:`require` turns a missing one into one line that names the pip command,
before anything is imported::

    partsim-searcher: cannot start: the searcher needs the 'searcher' extra (no module named 'pymilvus'):
    pip install 'partsim[searcher]'

onnxruntime is its own choice: ``cpu`` (onnxruntime) or ``gpu`` (onnxruntime-gpu, the same module with the CUDA
provider), never both, so ``partsim[server,gpu]`` never installs the CPU wheel. tests/test_packaging.py checks
:data:`MODULES` against pyproject.toml and against what each service really imports.
"""

from __future__ import annotations

import importlib.util
import sys

from .errors import PartsimError

_GRPC_SERVER = ("grpc_health", "grpc_reflection", "prometheus_client")  # what every service's runtime imports

# extra -> the top-level modules it brings that partsim imports (the core install's grpc and google.protobuf aside)
MODULES: dict[str, tuple[str, ...]] = {
    "audio": ("numpy", "soundfile"),
    "gateway": ("numpy", "scipy", "soundfile", "soxr", "redis", "jwt", *_GRPC_SERVER),
    "embedder": ("numpy", "scipy", "soundfile", "soxr", *_GRPC_SERVER),
    "searcher": ("numpy", "pymilvus", "milvus_lite", *_GRPC_SERVER),
    "separator": ("numpy", "soundfile", "soxr", "torch", "demucs", *_GRPC_SERVER),
    "cpu": ("onnxruntime",),
    "gpu": ("onnxruntime",),
    "corpus": ("numpy", "soundfile", "soxr", "mido", "fluidsynth", "yaml", "tqdm"),
    "train": (
        "numpy", "scipy", "soundfile", "soxr", "mido", "fluidsynth", "yaml", "tqdm",
        "torch", "onnx", "sklearn", "matplotlib", "demucs", "fast_bss_eval",
    ),
}  # fmt: skip
# extras made of other extras (pyproject.toml spells them partsim[...])
GROUPS: dict[str, tuple[str, ...]] = {
    "server": ("gateway", "embedder", "searcher", "separator"),
    "all": ("gateway", "embedder", "searcher", "separator", "corpus", "train", "cpu"),
}
SERVICES = ("gateway", "embedder", "searcher", "separator")


class MissingExtra(PartsimError):
    """This install lacks an extra that a command or service needs (one line: which, and the pip command)."""

    default_reason = "MISSING_EXTRA"


def modules(extras: str) -> list[str]:
    """The top-level modules of ``extras`` ("server,cpu"), groups expanded, each once, in order."""
    out: list[str] = []
    for name in extras.split(","):
        for extra in GROUPS.get(name, (name,)):
            out += [m for m in MODULES[extra] if m not in out]
    return out


def missing(extras: str) -> list[str]:
    """The modules of ``extras`` that cannot be imported here (found without importing anything)."""
    return [m for m in modules(extras) if importlib.util.find_spec(m) is None]


def require(what: str, extras: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extras`` ("searcher", "server,cpu") can be imported.

    ``what`` is the subject of the message ("the searcher", "partsim up"). An install spec with ``cpu`` also names
    its CUDA twin (``gpu``).
    """
    absent = missing(extras)
    if not absent:
        return
    names = extras.split(",")
    quoted = [repr(n) for n in names]
    noun = f"the {quoted[0]} extra" if len(names) == 1 else f"the {', '.join(quoted[:-1])} and {quoted[-1]} extras"
    hint = f"pip install 'partsim[{extras}]'"
    if "cpu" in names:
        hint += f" (with CUDA: 'partsim[{','.join('gpu' if n == 'cpu' else n for n in names)}]')"
    raise MissingExtra(f"{what} needs {noun} (no module named {absent[0]!r}): {hint}")


def service_main(name: str) -> int:
    """``python -m partsim.services.<name>``: the service's ``main()``, or, when this install lacks its extra,
    one line on stderr and exit status 1 (before the server module, which would fail on the import)."""
    try:
        require(f"the {name}", name + (",cpu" if name == "embedder" else ""))
    except MissingExtra as exc:
        print(f"partsim-{name}: cannot start: {exc}", file=sys.stderr)
        return 1
    server = importlib.import_module(f"partsim.services.{name}.server")
    return int(server.main())
