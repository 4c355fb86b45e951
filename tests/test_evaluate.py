"""The evaluation protocols: kNN voting on hand-made data, a full run on the tiny model, several sets side by
side, and the untrained log-spectrum baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partsim.cli import main
from partsim.corpus.make import CorpusConfig, make_corpus
from partsim.corpus.soundfonts import check_soundfonts
from partsim.model.baseline import LogSpectrumBaseline, load_model
from partsim.model.evaluate import EvalSet, parse_set
from partsim.model.tables import knn_accuracy

from .util import FAST_SOUNDFONTS, run_cli


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


@pytest.mark.slow
def test_evaluate_cli_on_the_tiny_model(tiny_run, tiny_corpus, tmp_path):
    out = tmp_path / "eval.json"
    figs = tmp_path / "figs"
    proc = run_cli(
        "evaluate",
        str(tiny_run / "model.pt"),
        "--corpus",
        str(tiny_corpus),
        "--split",
        "train",
        "--out",
        str(out),
        "--figures",
        str(figs),
        timeout=600,
    )
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
    for name in (
        "fig4_7_tsne_by_track.png",
        "fig4_8_tsne_pseudo_by_label.png",
        "fig4_10_isolated_stem_embeddings.png",
        "fig4_11_distance_matrices.png",
    ):
        assert (figs / name).stat().st_size > 5000, name
        assert (figs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluate_and_export_bad_input(tmp_path, tiny_corpus):
    proc = run_cli("evaluate", str(tmp_path / "nope.pt"), "--corpus", str(tiny_corpus))
    assert proc.returncode == 2 and "model file not found" in proc.stderr
    proc = run_cli("export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and "model file not found" in proc.stderr
    proc = run_cli("train", "--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- several sets, baseline

PARTS = ["drums", "bass", "piano", "guitar", "others"]


@pytest.fixture(scope="module")
def heldout_corpus(tmp_path_factory) -> Path:
    """Four other songs on the other fast SoundFont, everything in the test split (``--split 0,0,1``)."""
    out = tmp_path_factory.mktemp("heldout") / "corpus"
    make_corpus(
        CorpusConfig(
            out=out,
            songs=4,
            seconds=8.0,
            seed=6,
            split=(0.0, 0.0, 1.0),
            soundfonts=check_soundfonts(FAST_SOUNDFONTS[1:2]),
        ),
        progress=False,
    )
    return out


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``partsim ARGS`` in this process (no interpreter start-up): exit status, stdout, stderr."""
    capsys.readouterr()
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.slow
def test_several_sets_print_one_row_per_set_and_baseline_under_each_table_and_write_one_json(
    tiny_run, tiny_corpus, heldout_corpus, tmp_path
):
    out = tmp_path / "sets.json"
    proc = run_cli(
        "evaluate",
        str(tiny_run / "model.pt"),
        "--set",
        f"test={tiny_corpus}",
        "--set",
        f"synth={heldout_corpus}",
        "--set",
        f"tiny-val={tiny_corpus}:validation",
        "--baseline",
        "--out",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    blocks = {title: text.split(title, 1)[1] for title in ("Table 4.2", "Table 4.1", "Table 4.3", "Table 4.4")}
    for title in ("Table 4.2", "Table 4.1", "Table 4.3"):
        block = blocks[title].split("Table 4.", 1)[0]
        for label in ("test split", "held-out SoundFont", "tiny-val"):
            assert f"\n  {label} " in block, (title, label)
    t42 = blocks["Table 4.2"].split("Table 4.", 1)[0]
    assert "baseline, held-out SoundFont" in t42 and "thesis (i)" in t42
    t41 = blocks["Table 4.1"].split("Table 4.", 1)[0]
    assert "3-s segments" in t41 and "5-s segments" in t41 and "10-s segments" not in t41  # 8-s songs
    assert "test split, ideal stems" in t41 and "baseline, test split" in t41 and "thesis proposed" in t41
    t43 = blocks["Table 4.3"].split("Table 4.", 1)[0]
    assert "thesis w/pre, w/norm" in t43 and "baseline," not in t43
    assert "first set only (test split)" in text
    assert text.count("Table 4.4") == 1 and text.count("Table 4.5") == 1

    report = json.loads(out.read_text())
    assert report["format"] == "partsim-evaluation-sets"
    assert list(report["sets"]) == list(report["results"]) == ["test", "synth", "tiny-val"]
    synth = report["sets"]["synth"]
    assert synth["label"] == "held-out SoundFont"
    assert (synth["corpus"], synth["split"], synth["tracks"]) == (str(heldout_corpus), "test", 4)
    assert synth["corpus_summary"]["config"]["soundfonts"] == ["FluidR3_GM.sf2"]
    assert synth["corpus_summary"]["soundfonts"] == {"FluidR3_GM.sf2": 4}
    assert report["sets"]["test"]["split"] == "test" and report["sets"]["test"]["tracks"] == 1
    assert report["sets"]["tiny-val"] == {**report["sets"]["test"], "label": "tiny-val", "split": "validation"}
    for name, res in report["results"].items():
        assert set(res["table_4_2_part_label_accuracy"]) == set(PARTS)
        assert set(res["table_4_3_identification_accuracy"]) == set(PARTS)
        assert set(res["table_4_1_track_id_accuracy"]["proposed"]) == {"3", "5"}
        assert ("table_4_4_4_5_correlations" in res) == (name == "test")
    base = report["baseline"]
    assert base["name"] == "baseline:logspec" and list(base["results"]) == ["test", "synth", "tiny-val"]
    assert all(v is None for v in base["results"]["synth"]["table_4_3_identification_accuracy"].values())
    assert report["thesis"]["table_4_2"]["drums"] == 95.80


@pytest.mark.slow
def test_one_corpus_with_baseline_is_a_one_set_report_on_the_shipped_model(heldout_corpus, tmp_path, capsys):
    from partsim.assets import default_manifest

    out = tmp_path / "one.json"
    rc, text, err = cli(
        capsys,
        "evaluate",
        str(default_manifest()),
        "--corpus",
        str(heldout_corpus),
        "--baseline",
        "--quick",
        "--out",
        str(out),
    )
    assert rc == 0, err
    assert "\n  test split " in text and "\n  baseline, test split " in text and "Table 4.1" not in text
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["test"] and report["quick"] is True
    assert "table_4_1_track_id_accuracy" not in report["results"]["test"]


def test_the_baseline_model_alone_evaluates_like_a_model(heldout_corpus, capsys):
    rc, text, err = cli(capsys, "evaluate", "baseline:logspec", "--set", f"synth={heldout_corpus}", "--quick")
    assert rc == 0, err
    assert text.startswith("model baseline:logspec") and "\n  held-out SoundFont " in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "composer"], "expected NAME=DIR[:SPLIT]"),
        (["--set", "=x"], "expected NAME=DIR[:SPLIT]"),
        (["--set", "bad name=x"], "set name 'bad name'"),
        (["--set", "a={c}:"], "empty split"),
        (["--set", "a={c}/nowhere"], "--set a: data set folder not found"),
        (["--set", "a={c}", "--set", "a={c}"], "--set a is given more than once"),
        (["--set", "a={c}:train"], "--set a: corpus"),  # the held-out corpus has everything in test
        (["--set", "a={c}:tst"], "--set a: unknown split 'tst'"),
        (["--set", "a={c}", "--corpus", "{c}"], "not both"),
        ([], "give either --corpus DIR"),
    ],
)
def test_bad_sets_are_one_error_line_and_exit_2(heldout_corpus, capsys, args, message):
    from partsim.assets import default_manifest

    args = [a.replace("{c}", str(heldout_corpus)) for a in args]
    rc, text, err = cli(capsys, "evaluate", str(default_manifest()), *args)
    assert rc == 2 and text == ""
    assert err.startswith("partsim: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_an_unknown_baseline_is_one_error_line(heldout_corpus, capsys):
    rc, _, err = cli(capsys, "evaluate", "baseline:mfcc", "--set", f"a={heldout_corpus}")
    assert rc == 2 and err == "partsim: error: unknown baseline 'baseline:mfcc' (baselines: baseline:logspec)\n"


def test_set_syntax_takes_the_last_colon_as_the_split_unless_it_is_part_of_a_path():
    assert parse_set("composer=work/ho-grooves") == EvalSet("composer", Path("work/ho-grooves"), "test")
    assert parse_set("test=work/mixed:test").split == "test"
    assert parse_set("x=/data/a:b/corpus:validation") == EvalSet("x", Path("/data/a:b/corpus"), "validation")
    assert parse_set("x=/data/a:b/corpus") == EvalSet("x", Path("/data/a:b/corpus"), "test")
    assert parse_set("x=c", default_split="train").split == "train"
    assert EvalSet("both", Path("c")).label == "both" and EvalSet("synth", Path("c")).label == "held-out SoundFont"


def test_the_baseline_gives_every_part_the_same_fixed_vector_of_the_subspace_size_and_is_deterministic():
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 0.1, (3, 44100)).astype(np.float32)
    audio[1] *= 0.01  # another loudness: another spectrum
    a = load_model("baseline:logspec")
    assert isinstance(a, LogSpectrumBaseline) and a.identifies_parts is False
    va = a.embed(audio)
    assert va.shape == (3, 5, 128) and va.dtype == np.float32 and a.parts == PARTS
    assert np.array_equal(va, va[:, :1].repeat(5, axis=1))  # one vector in every subspace
    assert not np.allclose(va[0, 0], va[1, 0])
    vb = LogSpectrumBaseline().embed(audio)
    assert np.array_equal(va, vb)  # a fresh instance: the same projection, the same vectors
    p = a.projection
    assert p.shape == (256, 128) and np.allclose(p.T @ p, np.eye(128), atol=1e-5)  # distances never stretch
    small = LogSpectrumBaseline(subspace_dim=8, parts=["bass", "drums"])
    assert small.embed(audio).shape == (3, 2, 8)
    wide = LogSpectrumBaseline(subspace_dim=300)
    summary = wide.summary(wide.features(audio))
    assert np.allclose(wide.embed(audio)[:, 0, :256], summary) and not wide.embed(audio)[:, 0, 256:].any()
