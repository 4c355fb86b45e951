"""protos/ is the one source of the API: the committed stubs in src/partsim/v1 are generated from it,
and `make check-generated` lists every generator of the repository in one place."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from .util import ROOT

ENV = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}


def test_generated_stubs_are_up_to_date():
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-protos.sh"), "--check"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_stub_check_fails_on_a_stale_stub(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copytree(ROOT / "src" / "partsim" / "v1", copy / "src" / "partsim" / "v1")
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
