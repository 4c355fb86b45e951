"""Packaging (issue 13): the core install is the thin client, each service has an extra that is exactly enough for
it, a missing extra is one line naming the pip command, the bootstrap takes Python 3.11 to 3.13, and the
project metadata says so. (tests/test_packaging_install.py installs and resolves for real.)"""

from __future__ import annotations

import re
import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from partsim import extras

from .packaging_env import (
    allowed_modules,
    direct_requirements,
    dist_modules,
    expand_extras,
    pyproject,
    run_restricted,
    third_party_imports,
)
from .util import ROOT

THIN = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
SRC = ROOT / "src" / "partsim"
CLI = "from partsim.cli import main; raise SystemExit(main())"


def _names(specs) -> set[str]:
    return {canonicalize_name(Requirement(s).name) for s in specs}


def test_core_install_is_the_thin_client():
    assert _names(pyproject()["dependencies"]) == THIN
    optional = pyproject()["optional-dependencies"]
    for heavy in ("torch", "numpy", "demucs", "onnxruntime", "pymilvus", "redis"):
        assert heavy not in _names(pyproject()["dependencies"])
        assert any(heavy in _names(specs) for specs in optional.values()), f"{heavy} is in no extra"


def test_server_with_gpu_never_brings_the_cpu_onnxruntime():
    optional = pyproject()["optional-dependencies"]
    server_gpu = set().union(*(_names(optional[e]) for e in expand_extras(("server", "gpu"))))
    assert "onnxruntime-gpu" in server_gpu and "onnxruntime" not in server_gpu
    cpu_only = set().union(*(_names(optional[e]) for e in expand_extras(("server", "cpu"))))
    assert "onnxruntime" in cpu_only and "onnxruntime-gpu" not in cpu_only
    assert extras.MODULES["gpu"] == extras.MODULES["cpu"] == ("onnxruntime",)


def test_extra_groups_are_the_ones_pyproject_spells():
    for group, members in extras.GROUPS.items():
        assert expand_extras((group,)) - {group} >= set(members)
        assert {e for e in expand_extras((group,)) if e in extras.MODULES} == set(members)
    assert set(extras.MODULES) | set(extras.GROUPS) | {"test"} == set(pyproject()["optional-dependencies"])


@pytest.mark.parametrize("extra", sorted(set(extras.MODULES) - {"gpu"}))  # onnxruntime-gpu: not installed here
def test_each_extra_brings_the_modules_partsim_takes_from_it_and_nothing_idle(extra):
    provided = allowed_modules(extra)
    for module in extras.MODULES[extra]:
        assert module in provided, f"partsim[{extra}] does not install {module!r} (partsim/extras.py says it does)"
    core = _names(pyproject()["dependencies"])
    for req in direct_requirements((extra,)):
        name = canonicalize_name(req.name)
        if name in core:
            continue
        gives = dist_modules().get(name, set())
        assert gives & set(extras.MODULES[extra]), f"partsim[{extra}] requires {name}, which gives none of its modules"


# Imports a service package may make beyond its extra, each inside one function that says in one line what
# to install when it is missing: the embedder's onnxruntime comes from partsim[cpu] or partsim[gpu]; the
# searcher's milvus (the Milvus 2.3.5 standalone) only for its benchmark's --start-server standalone and the
# tests (searcher/servers.py: standalone_missing), from partsim[test].
DEV_ONLY = {"embedder": {"onnxruntime"}, "searcher": {"milvus"}}


@pytest.mark.parametrize("service", extras.SERVICES)
def test_each_service_package_imports_only_what_its_extra_brings(service):
    """Every import in partsim/services/<service>/ (module level and inside functions), against its extra."""
    allowed = set(allowed_modules()) | set(extras.modules(service)) | DEV_ONLY.get(service, set())
    for path in sorted((SRC / "services" / service).rglob("*.py")):
        stray = third_party_imports(path) - allowed
        assert not stray, f"{path.relative_to(ROOT)} imports {sorted(stray)}, which partsim[{service}] lacks"


def test_client_and_cli_import_only_the_core_install_at_module_level():
    code = "import partsim.client, partsim.cli, partsim.v1.gateway_pb2_grpc, partsim.errors, partsim.hits; print('ok')"
    proc = run_restricted((), code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("service", extras.SERVICES)
def test_each_service_server_module_imports_with_only_its_extra(service):
    with_runtime = (service, "cpu") if service == "embedder" else (service,)
    proc = run_restricted(with_runtime, f"import partsim.services.{service}.server; print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("service", ["searcher", "embedder"])
def test_a_service_without_its_extra_says_which_in_one_line(service):
    run = f"import runpy; runpy.run_module('partsim.services.{service}', run_name='__main__')"
    proc = run_restricted((), run)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    spec = "embedder,cpu" if service == "embedder" else service
    assert lines[0].startswith(f"partsim-{service}: cannot start: the {service} needs the '{service}'")
    assert lines[0].endswith(
        f"pip install 'partsim[{spec}]'" + (" (with CUDA: 'partsim[embedder,gpu]')" * (service == "embedder"))
    )


@pytest.mark.parametrize(
    "argv, spec",
    [
        (["up"], "server,cpu"),
        (["demo", "--no-serve"], "server,corpus,cpu"),
        (["corpus", "info", "/nonexistent"], "corpus"),
        (["train", "--corpus", "/nonexistent", "--out", "/nonexistent"], "train"),
        (["embed", "x.flac", "-o", "/nonexistent"], "embedder,cpu"),
        (["search-mix", "--stem-file", "drums:README.md@1"], "audio"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else v,
)
def test_a_command_in_the_thin_install_names_the_extra_it_needs(argv, spec):
    proc = run_restricted((), CLI, argv)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partsim: error: "), proc.stderr
    assert f"pip install 'partsim[{spec}]'" in lines[0], lines[0]


def test_search_mix_runs_in_the_thin_install_as_far_as_the_call():
    """No gateway listens on port 1: exit 4 (unavailable), one line."""
    argv = ["search-mix", "--stem", "drums:song1@5", "--stem", "bass:song2@15", "--json", "--gateway", "127.0.0.1:1"]
    proc = run_restricted((), CLI, argv)
    assert proc.returncode == 4, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partsim: error: "), proc.stderr


@pytest.mark.slow
def test_every_query_command_runs_in_the_thin_install():
    """No gateway listens on port 1: each query command gets as far as the call (exit 4, one line)."""
    assert run_restricted((), CLI, ["--help"]).returncode == 0
    for argv in (
        ["search-stems", "--stem", "bass:song2@15"],
        ["tracks", "list"],
        ["stats"],
        ["jobs", "get", "job-1"],
        ["index", "README.md", "--quiet"],
    ):
        proc = run_restricted((), CLI, [*argv, "--gateway", "127.0.0.1:1"])
        assert proc.returncode == 4, (argv, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and "needs the" not in proc.stderr, proc.stderr
    proc = run_restricted((), CLI, ["health", "127.0.0.1:1", "--timeout", "2"])
    assert proc.returncode == 1 and proc.stderr.strip() == "partsim health: 127.0.0.1:1: unreachable", proc.stderr


# --------------------------------------------------------------------------- Pythons and project metadata


def _supported_in_bootstrap() -> list[str]:
    text = (ROOT / "scripts" / "bootstrap.sh").read_text()
    return re.search(r"^SUPPORTED_PYTHONS=\(([^)]*)\)", text, re.M).group(1).split()


def _fake_python(tmp_path, version: str):
    """An executable that answers the bootstrap's version question as Python ``version`` would."""
    path = tmp_path / f"python{version}"
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)
    return path


def _check_python(python) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / "bootstrap.sh"), "--check-python"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)},
    )


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_bootstrap_takes_python_3_11_to_3_13(tmp_path, version):
    proc = _check_python(_fake_python(tmp_path, version))
    assert proc.returncode == 0, proc.stderr
    assert f"is Python {version}: supported" in proc.stdout


@pytest.mark.parametrize("version", ["3.10", "3.9", "3.14", "2.7"])
def test_bootstrap_refuses_other_pythons_in_one_line(tmp_path, version):
    python = _fake_python(tmp_path, version)
    proc = _check_python(python)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"bootstrap: partsim needs Python 3.11, 3.12 or 3.13; {python} is {version} (set PYTHON=/path/to/python3.X)"
    ]


def test_bootstrap_checks_the_real_interpreter_and_a_missing_one(tmp_path):
    import sys

    assert _check_python(sys.executable).returncode == 0  # the suite runs on 3.11
    proc = _check_python(tmp_path / "no-python")
    assert proc.returncode == 1 and "is not a working Python" in proc.stderr


def test_project_metadata_names_the_supported_pythons_license_and_urls():
    project = pyproject()
    supported = _supported_in_bootstrap()
    assert supported == ["3.11", "3.12", "3.13"]
    classifiers = project["classifiers"]
    assert [
        c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ] == (supported)
    assert project["requires-python"] == f">={supported[0]}"
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert project["license"] == {"text": "Apache-2.0"}
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert any(c.startswith("Topic :: ") for c in classifiers)
    assert "Typing :: Typed" in classifiers and (SRC / "py.typed").is_file()
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(project["urls"])
    assert all(url.startswith("https://") for url in project["urls"].values())
    assert project["keywords"]
