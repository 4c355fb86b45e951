"""``partsim compare-paths``: both paths measured on the same songs, tables and costs well formed."""

from __future__ import annotations

import json

import pytest

from .tiny_separator import make_tiny_repo
from .util import run_cli


@pytest.mark.slow
def test_compare_paths_on_a_tiny_corpus(tiny_corpus, tmp_path):
    repo = tmp_path / "repo"
    make_tiny_repo(repo, name="tiny-sep")
    out = tmp_path / "cmp.json"
    proc = run_cli(
        "compare-paths",
        "--corpus",
        str(tiny_corpus),
        "--split",
        "train",
        "--repo",
        str(repo),
        "--model",
        "tiny-sep",
        "--limit",
        "4",
        "--out",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "signal level costs" in proc.stdout and "thesis 3.2 proposed" in proc.stdout
    r = json.loads(out.read_text())
    t = r["track_id_accuracy_3s"]
    assert set(t) == {"feature_level_csn_on_mix", "signal_level_csn_on_separated", "csn_on_ideal_stems"}
    for row in t.values():
        assert set(row) == {"drums", "bass", "piano", "guitar", "others"}
        assert all(v is None or 0.0 <= v <= 100.0 for v in row.values())
        assert sum(v is not None for v in row.values()) >= 3
    c = r["ingest_cost"]
    assert c["signal_level_seconds"] > c["feature_level_seconds"] > 0
    assert c["signal_over_feature_cost"] == c["signal_level_seconds"] / c["feature_level_seconds"]
    assert r["tracks"] == 4 and r["segments"] > 0


@pytest.mark.slow
def test_compare_paths_names_a_missing_model(tiny_corpus, tmp_path):
    proc = run_cli("compare-paths", "--corpus", str(tiny_corpus), "--repo", str(tmp_path), "--model", "nope")
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
