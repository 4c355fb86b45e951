"""protos/ is the one source of the API: the public API (package partsim.v1) imports nothing internal and
passes `buf lint` (STANDARD and COMMENTS); the committed stubs in src/partsim/v1 and src/partsim/internal/v1
and the descriptor set protos/partsim-v1.binpb are generated from it; `make check-generated` lists every
generator of the repository in one place."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from partsim.v1 import gateway_pb2

from .util import ROOT

BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"  # scripts/bootstrap.sh test installs it

ENV = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}


def test_generated_stubs_are_up_to_date():
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-protos.sh"), "--check"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_stub_check_fails_on_a_stale_stub(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos")
    for pkg in ("v1", "internal/v1"):
        shutil.copytree(ROOT / "src" / "partsim" / pkg, copy / "src" / "partsim" / pkg)
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gen-protos.sh", copy / "scripts")
    stub = copy / "src" / "partsim" / "v1" / "types_pb2.pyi"
    stub.write_text(stub.read_text() + "\n")
    proc = subprocess.run(
        ["bash", str(copy / "scripts" / "gen-protos.sh"), "--check"], env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "stale: src/partsim/v1/types_pb2.pyi" in proc.stderr


def test_every_generator_is_in_make_generate_and_make_check_generated():
    makefile = (ROOT / "Makefile").read_text()
    recipe = {
        t: re.search(rf"^{t}:.*\n((?:\t.*\n)+)", makefile, re.M).group(1) for t in ("generate", "check-generated")
    }
    for gen in sorted((ROOT / "scripts").glob("gen-*")):
        assert f"scripts/{gen.name}" in recipe["generate"], f"{gen.name} missing from make generate"
        assert re.search(rf"scripts/{re.escape(gen.name)} --check", recipe["check-generated"]), (
            f"{gen.name} --check missing from make check-generated"
        )


def _buf_lint(root):
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run scripts/bootstrap.sh test")
    return subprocess.run([str(BUF), "lint"], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_protos_pass_buf_lint_standard_with_comments():
    proc = _buf_lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_buf_lint_fails_on_an_undocumented_field(tmp_path):
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    types = tmp_path / "protos" / "partsim" / "v1" / "types.proto"
    types.write_text(types.read_text().replace("  // The track's title.\n", ""))
    proc = _buf_lint(tmp_path)
    assert proc.returncode != 0
    assert 'Field "title" should have a non-empty comment for documentation.' in proc.stdout


def test_the_public_api_imports_nothing_internal():
    def deps(fd):
        for d in fd.dependencies:
            yield d.name
            yield from deps(d)

    names = set(deps(gateway_pb2.DESCRIPTOR))
    assert "partsim/v1/types.proto" in names
    assert all(n.startswith(("partsim/v1/", "google/")) for n in names), names


def test_the_descriptor_set_holds_the_public_api_with_its_http_rules_and_comments():
    fds = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "protos" / "partsim-v1.binpb").read_bytes())
    files = {f.name: f for f in fds.file}
    assert {"partsim/v1/gateway.proto", "partsim/v1/types.proto", "google/api/annotations.proto"} <= set(files)
    assert not [n for n in files if "internal" in n]
    gateway = files["partsim/v1/gateway.proto"]
    (service,) = gateway.service
    for method in service.method:
        rule = method.options.Extensions[annotations_pb2.http]
        assert rule.WhichOneof("pattern"), f"{method.name} has no google.api.http rule"
    search = next(m for m in service.method if m.name == "SearchMix")
    assert search.options.Extensions[annotations_pb2.http].post == "/v1/search:mix"
    comments = [loc.leading_comments for loc in gateway.source_code_info.location]
    assert any("best segment each" in c for c in comments)
