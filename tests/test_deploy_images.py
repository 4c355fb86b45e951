"""The container images: deploy/Dockerfile and Dockerfile.gpu (pinned multi-stage builds, an
unprivileged final stage without build tools, every COPY source in the build context and not
excluded by .dockerignore) and the hashed requirement locks they install
(deploy/requirements/{cpu,gpu}.txt, against pyproject.toml's partsim[server,cpu] and partsim[server,gpu])."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from .deploy_files import DEPLOY, ROOT, SERVICES, UID, exact_tag
from .packaging_env import expand_extras

DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
LOCKS = {"cpu": DEPLOY / "requirements" / "cpu.txt", "gpu": DEPLOY / "requirements" / "gpu.txt"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def _stages(path: Path) -> list[tuple[str, str | None, list[tuple[str, str]]]]:
    stages = []
    for instr, args in _instructions(path):
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append((words[0], alias, []))
        elif stages:
            stages[-1][2].append((instr, args))
    return stages


def _dockerignore_excludes(rel: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        parts = rel.strip("/").split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_matcher():
    assert _dockerignore_excludes(".venv/bin/python")
    assert _dockerignore_excludes(".git/HEAD")
    assert _dockerignore_excludes("partsim-data/tracks.sqlite")
    assert _dockerignore_excludes("tests/test_deploy_images.py")
    assert _dockerignore_excludes("src/partsim/__pycache__/cli.cpython-311.pyc")
    assert not _dockerignore_excludes("src/partsim/cli/__init__.py")
    assert not _dockerignore_excludes("src/partsim/assets/models/csn-v2/csn.onnx")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(path):
    stages = _stages(path)
    aliases = {alias for _, alias, _ in stages if alias}
    assert len(stages) >= 2, "multi-stage build expected"
    for image, _, _ in stages:
        if image not in aliases:
            assert exact_tag(image), f"FROM {image} is not pinned to an exact version"
    final_image, _, final = stages[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users and users[-1].split(":")[0] == UID, "the final stage must run as uid 10001"
    runs = " ".join(args for instr, args in final if instr == "RUN")
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "git ", "curl "):
        assert tool not in runs, f"final stage installs {tool.strip()}"
    assert any(instr == "COPY" and "--from=builder" in args and "/opt/venv" in args for instr, args in final)
    env = " ".join(args for instr, args in final if instr == "ENV")
    for var in ("HOME=/tmp", "XDG_CACHE_HOME=/tmp/", "MPLCONFIGDIR=/tmp/", "TORCH_HOME=/tmp/", "HF_HUB_OFFLINE=1"):
        assert var in env, var
    exposed = {int(p.split("/")[0]) for instr, args in final if instr == "EXPOSE" for p in args.split()}
    assert exposed >= {p for ports in SERVICES.values() for p in ports[:2]}
    assert any(instr in ("ENTRYPOINT", "CMD") for instr, _ in final)
    # every COPY from the build context exists and is not excluded by .dockerignore
    locks = []
    for _, _, body in stages:
        for instr, args in body:
            if instr not in ("COPY", "ADD") or "--from=" in args:
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
                if source.startswith("deploy/requirements/"):
                    locks.append(ROOT / source)
    assert locks and all(lock in LOCKS.values() for lock in locks)


# --------------------------------------------------------------------------- requirement locks


def _lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"{path.name}: not 'name==version --hash=sha256:...': {line[:120]}"
        name = canonicalize_name(m.group(1))
        assert name not in entries, f"{path.name}: {name} twice"
        entries[name] = (m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return entries


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_lock_is_pinned_hashed_and_covers_pyproject(kind):
    path = LOCKS[kind]
    head = path.read_text().splitlines()[:8]
    assert any("deploy/requirements/lock.sh" in line for line in head)
    assert any(re.search(r"\d{4}-\d{2}-\d{2}", line) for line in head)
    lock = _lock(path)
    project = _pyproject()
    deps = [Requirement(r) for r in project["dependencies"]]  # the image is partsim[server,<kind>]
    for extra in expand_extras(("server", kind)):
        deps += [r for r in map(Requirement, project["optional-dependencies"][extra]) if r.name != "partsim"]
    if kind == "gpu":
        assert "onnxruntime" not in lock, "onnxruntime and onnxruntime-gpu would overwrite each other's module"
    for name in ("matplotlib", "scikit-learn", "onnx", "pyfluidsynth", "mido", "fast-bss-eval"):
        assert name not in lock, f"{path.name}: {name} (corpus and training only, no service imports it) is locked"
    for req in deps:
        name = canonicalize_name(req.name)
        assert name in lock, f"{path.name}: {name} is a runtime dependency but is not locked"
        version = Version(lock[name][0])
        assert SpecifierSet(str(req.specifier)).contains(version, prereleases=True), (
            f"{path.name}: {name} {version} does not satisfy {req.specifier}"
        )
    for test_dep in project["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(test_dep).name) not in lock, f"{path.name}: test dependency locked"
    torch = Version(lock["torch"][0])
    if kind == "cpu":
        assert torch.local == "cpu", "the CPU image needs the +cpu build of torch"
        assert not any(n.startswith(("nvidia-", "triton", "cuda-")) for n in lock), "CUDA packages in the CPU lock"
        script = (DEPLOY / "requirements" / "lock.sh").read_text()
        pinned = re.search(r"TORCH_CPU_SHA256=([0-9a-f]{64})", script).group(1)
        assert lock["torch"][1] == [pinned]
    else:
        assert torch.local is None, "the GPU image takes PyPI's (CUDA) torch"
