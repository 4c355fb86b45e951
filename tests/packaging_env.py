"""What an install of ``partsim`` with some extras holds, worked out from this environment's installed metadata,
and a Python that can import only that: the helpers of tests/test_packaging*.py.

``allowed_modules("gateway")`` follows the Requires-Dist of partsim (with the gateway extra, markers evaluated)
through the installed distributions and returns every top-level module they provide; ``run_restricted`` runs
code in a subprocess where every other installed top-level module is ``None`` in ``sys.modules`` — exactly what
Python does for a module that is absent (``import numpy`` raises ModuleNotFoundError, ``find_spec`` is None).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .util import ROOT


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@functools.cache
def dist_modules() -> dict[str, set[str]]:
    """canonical distribution name -> the top-level modules it provides (installed distributions)."""
    out: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for d in dists:
            out.setdefault(canonicalize_name(d), set()).add(module)
    return out


def module_dist() -> dict[str, set[str]]:
    """top-level module -> the canonical names of the installed distributions that provide it."""
    out: dict[str, set[str]] = {}
    for dist, modules in dist_modules().items():
        for m in modules:
            out.setdefault(m, set()).add(dist)
    return out


def expand_extras(extras: tuple[str, ...]) -> set[str]:
    """``extras`` with the self-referencing groups of pyproject.toml (``all = ["partsim[server,...]"]``) expanded."""
    groups = pyproject()["optional-dependencies"]
    out, todo = set(), list(extras)
    while todo:
        e = todo.pop()
        if e in out:
            continue
        out.add(e)
        for spec in groups.get(e, []):
            req = Requirement(spec)
            if canonicalize_name(req.name) == "partsim":
                todo += sorted(req.extras)
    return out


def direct_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """partsim's own requirements for ``extras`` (groups expanded; the self references left out)."""
    project = pyproject()
    specs = list(project["dependencies"])
    for e in expand_extras(extras):
        specs += project["optional-dependencies"][e]
    return [r for r in map(Requirement, specs) if canonicalize_name(r.name) != "partsim"]


def closure(extras: tuple[str, ...] = ()) -> set[str]:
    """Canonical names of every distribution partsim with ``extras`` installs, via the installed metadata."""
    seen: set[str] = set()
    todo = [(r, "") for r in direct_requirements(extras)]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(name)  # PackageNotFoundError: this venv lacks a dependency of an extra
        for spec in dist.requires or []:
            sub = Requirement(spec)
            for e in sorted(req.extras) or [""]:
                todo.append((sub, e))
    return {k.partition("[")[0] for k in seen}


def allowed_modules(*extras: str) -> set[str]:
    """Top-level modules the distributions of partsim[extras] provide, partsim included."""
    modules = {"partsim"}
    for dist in closure(extras):
        modules |= dist_modules().get(dist, set())
    return modules


RESTRICT = """
import sys
for _m in {blocked!r}:
    sys.modules[_m] = None  # what an absent module is to the import system
sys.argv = ['partsim'] + {argv!r}
"""


def run_restricted(
    extras: tuple[str, ...], code: str, argv: list[str] | None = None, timeout: float = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python that can import only the stdlib and what partsim[extras] installs."""
    allowed = allowed_modules(*extras)
    blocked = sorted(m for m in module_dist() if m not in allowed and m.isidentifier() and "__editable__" not in m)
    script = RESTRICT.format(blocked=blocked, argv=argv or []) + code
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def third_party_imports(path) -> set[str]:
    """Top-level names of every non-stdlib, non-partsim module a file imports (module level and in functions)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.partition(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names and m not in ("partsim", "__future__", "_typeshed")}
