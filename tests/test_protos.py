"""protos/ is the one source of the API: the committed stubs in src/partsim/v1 are generated from it."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_up_to_date(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts" / "gen-protos.sh"), str(tmp_path)], check=True, cwd=ROOT,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    fresh = sorted(p.name for p in (tmp_path / "partsim" / "v1").iterdir())
    committed = sorted(p.name for p in (ROOT / "src" / "partsim" / "v1").iterdir() if p.name != "__init__.py"
                       and p.suffix in (".py", ".pyi"))
    assert fresh == committed
    stale = [n for n in fresh if not filecmp.cmp(tmp_path / "partsim" / "v1" / n, ROOT / "src" / "partsim" / "v1" / n, shallow=False)]
    assert not stale, f"stale stubs {stale}: run scripts/gen-protos.sh"
