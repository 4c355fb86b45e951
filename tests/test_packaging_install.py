"""Installing partsim for real (issue 13, "Packaging" and "a thin client"): a fresh virtual environment with the
core install alone runs a SearchMix against a running cluster; pip's resolver installs partsim[all] and
partsim[server,gpu] for CPython 3.12 and 3.13 (``--python-version``, Linux x86_64 wheels; no interpreter is
downloaded and no wheel installed).

Both need the package index pip is configured with (network). The resolver runs pip's ``fast-deps`` feature
(metadata read by HTTP range requests): the index this project is built against does not advertise PEP 658
metadata files, and without it pip downloads every wheel whole to read its metadata — torch 2.13.0 and its
nvidia-* wheels are several GB.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .packaging_env import closure, pyproject
from .util import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# pip's --platform is one tag and pip does not widen manylinux_2_28 to the older glibc tags it covers
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
SDIST_ONLY = ("fast-bss-eval",)  # pure-Python sdists with no wheel on the index (the train extra)


def _run(cmd: list[str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _du_mb(path: Path) -> float:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0]) / 1024


def _source_copy(dest: Path, with_code: bool) -> Path:
    """The files a build of partsim reads, copied (a build in the repository would write build/ and
    *.egg-info into the working tree): pyproject.toml, README.md and src/ (``with_code``; else only the
    package's __init__, enough for its metadata)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    if with_code:
        shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
        (dest / "src" / "partsim").mkdir(parents=True)
        shutil.copy2(ROOT / "src" / "partsim" / "__init__.py", dest / "src" / "partsim" / "__init__.py")
    return dest


# --------------------------------------------------------------------------- the thin client, end to end


@pytest.fixture(scope="module")
def thin_venv(tmp_path_factory) -> Path:
    """A new venv with ``pip install partsim`` (no extras, not editable) from a copy of this repository."""
    tmp = tmp_path_factory.mktemp("thin")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    source = _source_copy(tmp / "partsim", with_code=True)
    _run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", source])
    return env_dir


def test_the_thin_client_installs_only_grpc_and_protobuf(thin_venv):
    listed = _run([thin_venv / "bin" / "python", "-m", "pip", "list", "--format=json", "--disable-pip-version-check"])
    installed = {canonicalize_name(d["name"]) for d in json.loads(listed.stdout)} - {"pip", "setuptools"}
    assert installed == closure(()) | {"partsim"}, installed
    probe = "import importlib.util as u; print([m for m in ('numpy', 'torch', 'demucs', 'soundfile', 'onnxruntime', 'pymilvus', 'grpc_health') if u.find_spec(m)])"
    assert _run([thin_venv / "bin" / "python", "-c", probe]).stdout.strip() == "[]"
    site = next((thin_venv / "lib").glob("python3.*/site-packages"))
    sizes = {p.name: _du_mb(p) for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")}
    models = _du_mb(site / "partsim" / "assets" / "models")
    print(
        f"\nthin client venv: {_du_mb(thin_venv):.0f} MB in all (du -sk {thin_venv}); without pip and setuptools "
        f"{_du_mb(site) - sum(v for k, v in sizes.items() if k in ('pip', 'setuptools', '_distutils_hack', 'pkg_resources')):.0f} MB "
        f"of site-packages: "
        + ", ".join(f"{k} {v:.1f} MB" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:6])
        + f" (partsim's shipped models: {models:.1f} MB)"
    )


def test_the_thin_client_runs_a_search_mix_against_the_cluster(thin_venv, cluster, indexed, catalog):
    drums, bass = sorted(indexed)[:2]
    proc = _run(
        [thin_venv / "bin" / "partsim", "search-mix", "--stem", f"drums:{drums}@5", "--stem", f"bass:{bass}@15"]
        + ["--top-k", "3", "--json", "--gateway", cluster.gateway],
        timeout=120,
    )
    hits = json.loads(proc.stdout)
    assert 1 <= len(hits) <= 3 and all(h["track_id"] in indexed for h in hits), hits
    typed = (
        "from partsim.client import PartsimClient, Stem, MixHit\n"
        f"with PartsimClient({cluster.gateway!r}) as c:\n"
        "    c.wait_ready(30)\n"
        f"    hits = c.search_mix([Stem('drums', track_id={drums!r}, seconds=5)], top_k=2)\n"
        "    assert hits and all(isinstance(h, MixHit) for h in hits), hits\n"
        "    print(hits[0].track_id, c.stats().tracks)\n"
    )
    track, tracks = _run([thin_venv / "bin" / "python", "-c", typed], timeout=120).stdout.split()
    assert track in indexed and int(tracks) == len(indexed)


# --------------------------------------------------------------------------- pip's resolver, Python 3.12 and 3.13


@pytest.fixture(scope="module")
def resolver(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a throwaway venv with the newest pip, a metadata-only copy of partsim, a folder of wheels built from the
    sdist-only dependencies)."""
    tmp = tmp_path_factory.mktemp("resolve")
    venv.create(tmp / "venv", with_pip=True)
    pip = [tmp / "venv" / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "-q", "--upgrade", "pip"])
    wheels = tmp / "wheels"
    specs = [s for s in pyproject()["optional-dependencies"]["train"] if Requirement(s).name in SDIST_ONLY]
    _run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", wheels, *specs])  # pure Python: py3-none-any
    return tmp / "venv" / "bin" / "python", _source_copy(tmp / "partsim", with_code=False), wheels


@pytest.mark.parametrize("extras", ["all", "server,gpu"])
@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_pip_resolves_the_install_for_python_3_12_and_3_13(resolver, tmp_path, python, extras):
    interpreter, source, wheels = resolver
    report = tmp_path / "report.json"
    cmd = [interpreter, "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "--ignore-installed"]
    cmd += ["--report", report, "--quiet", "--use-feature=fast-deps", "--only-binary=:all:", "--find-links", wheels]
    cmd += ["--python-version", python, "--implementation", "cp"]
    cmd += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    t0 = time.perf_counter()
    _run([*cmd, f"{source}[{extras}]"])
    seconds = time.perf_counter() - t0
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    print(f"\npip resolved partsim[{extras}] for CPython {python}: {len(resolved)} distributions in {seconds:.1f} s")
    assert resolved["partsim"] == "0.1.0"
    assert resolved["torch"] == "2.13.0"  # the pin has wheels for 3.12 and 3.13 (PyPI's CUDA build on Linux)
    for name in ("grpcio", "protobuf", "demucs", "pymilvus", "milvus-lite", "redis", "numpy"):
        assert name in resolved, name
    if extras == "server,gpu":
        assert "onnxruntime-gpu" in resolved and "onnxruntime" not in resolved
        assert not {"matplotlib", "scikit-learn", "pyfluidsynth", "fast-bss-eval"} & set(resolved)
    else:
        assert "onnxruntime" in resolved and "onnxruntime-gpu" not in resolved
        assert {"matplotlib", "scikit-learn", "pyfluidsynth", "fast-bss-eval", "onnx"} <= set(resolved)
