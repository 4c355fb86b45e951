"""The evaluation protocols: kNN voting on hand-made data, and a full run on the tiny model."""

from __future__ import annotations

import json

import numpy as np

from partsim.model.evaluate import knn_accuracy

from .util import run_cli


def test_knn_majority_vote_leave_one_out_and_group_exclusion():
    # two well separated clusters of 6 points each
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (6, 3)), rng.normal(5, 0.1, (6, 3))])
    labels = np.array([0] * 6 + [1] * 6)
    assert knn_accuracy(x, labels) == 100.0
    # a point's own label is never used: a singleton label is always wrong
    labels2 = labels.copy()
    labels2[0] = 7
    assert knn_accuracy(x, labels2) == 100.0 * 11 / 12
    # excluding same-group references: if every point's cluster-mates share its group, the
    # nearest allowed references are in the other cluster, so every prediction is wrong
    assert knn_accuracy(x, labels, groups=labels) == 0.0
    # groups of pairs inside each cluster leave 4 same-label references: still right
    assert knn_accuracy(x, labels, groups=np.arange(12) // 2) == 100.0


def test_evaluate_cli_on_the_tiny_model(tiny_run, tiny_corpus, tmp_path):
    out = tmp_path / "eval.json"
    figs = tmp_path / "figs"
    proc = run_cli("evaluate", str(tiny_run / "model.pt"), "--corpus", str(tiny_corpus), "--split", "train",
                   "--out", str(out), "--figures", str(figs), timeout=600)
    assert proc.returncode == 0, proc.stderr
    for title in ("Table 4.1", "Table 4.2", "Table 4.3", "Table 4.4", "Table 4.5", "thesis (i)"):
        assert title in proc.stdout
    results = json.loads(out.read_text())
    parts = ["drums", "bass", "piano", "guitar", "others"]
    t42 = results["table_4_2_part_label_accuracy"]
    assert set(t42) == set(parts)
    assert all(v is None or v != v or 0 <= v <= 100 for v in t42.values())
    assert set(results["table_4_1_track_id_accuracy"]["proposed"]) == {"3", "5"}  # 8-s songs: no 10-s segment
    assert set(results["table_4_3_identification_accuracy"]) == set(parts)
    for name in ("fig4_7_tsne_by_track.png", "fig4_8_tsne_pseudo_by_label.png",
                 "fig4_10_isolated_stem_embeddings.png", "fig4_11_distance_matrices.png"):
        assert (figs / name).stat().st_size > 5000, name
        assert (figs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_and_export_bad_input(tmp_path, tiny_corpus):
    proc = run_cli("evaluate", str(tmp_path / "nope.pt"), "--corpus", str(tiny_corpus))
    assert proc.returncode == 2 and "model file not found" in proc.stderr
    proc = run_cli("export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "model file not found" in proc.stderr
    proc = run_cli("train", "--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
