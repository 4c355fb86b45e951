"""csn-v3 training: augmentation before mixing, warm start from a shipped ONNX model, weights-only
checkpoints and the training-speed benchmark (real corpora, the real shipped model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from partsim.model.augment import AugmentConfig, Augmenter
from partsim.model.data import StemBank
from partsim.model.nets import CSN, NetConfig
from partsim.model.train import Trainer

from .conftest import TINY_DIM, TINY_WIDTHS, tiny_train_config
from .util import run_cli

SEG = 44100


def _stems(n=12, extra=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SEG + extra) / 44100.0
    tone = torch.sin(2 * torch.pi * 220.0 * t)[None, :] * torch.rand(n, 1, generator=g)
    x = tone + 0.01 * torch.randn(n, SEG + extra, generator=g)
    x[3] = 0.0  # a silent stem (an absent part)
    return x


def test_augmentation_is_deterministic_per_seed_and_differs_between_seeds():
    aug = Augmenter(AugmentConfig(p=1.0))
    x = _stems(extra=aug.extra(SEG))
    a = aug.stems(x, 1, SEG, torch.Generator().manual_seed(7))
    b = aug.stems(x, 1, SEG, torch.Generator().manual_seed(7))
    c = aug.stems(x, 1, SEG, torch.Generator().manual_seed(8))
    assert a.shape == (12, SEG)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    m1 = aug.mix(a, torch.Generator().manual_seed(3))
    m2 = aug.mix(a, torch.Generator().manual_seed(3))
    assert torch.equal(m1, m2)


def test_augmentation_changes_audible_stems_keeps_silence_silent_and_stays_finite():
    aug = Augmenter(AugmentConfig(p=1.0, noise_p=1.0))
    x = _stems(extra=aug.extra(SEG))
    y = aug.stems(x, 3, SEG, torch.Generator().manual_seed(1))
    assert torch.isfinite(y).all()
    assert torch.all(y[3] == 0)  # a silent stem stays silent: presence targets stay honest
    changed = [i for i in range(12) if i != 3 and not torch.allclose(y[i], x[i, :SEG], atol=1e-4)]
    assert len(changed) == 11
    # gain within ±6 dB and bounded effects: no stem explodes or vanishes
    ratio = (
        y.pow(2).mean(1)[[i for i in range(12) if i != 3]] / x[:, :SEG].pow(2).mean(1)[[i for i in range(12) if i != 3]]
    )
    assert torch.all(ratio > 10 ** (-30 / 10)) and torch.all(ratio < 10 ** (20 / 10))
    mixed = aug.mix(y, torch.Generator().manual_seed(1))
    noise = (mixed - y).pow(2).mean(1)
    assert torch.all(noise[[i for i in range(12) if i != 3]] > 0)


def test_augmentation_off_rows_are_untouched():
    aug = Augmenter(AugmentConfig(p=0.0))
    x = _stems(extra=aug.extra(SEG))
    assert torch.equal(aug.stems(x, 0, SEG, torch.Generator().manual_seed(0)), x[:, :SEG])


@pytest.mark.slow
def test_augmented_render_batch_is_seeded_and_judges_presence_after_augmentation(tiny_corpus):
    from partsim.data import open_dataset

    aug = Augmenter(AugmentConfig(p=1.0))
    parts = ["drums", "bass", "piano", "guitar", "others"]
    bank = StemBank(open_dataset(tiny_corpus).tracks("train"), parts, SEG, SEG // 2, extra=aug.extra(SEG))
    rng = np.random.default_rng(0)
    pieces = [p for _ in range(4) for p in bank.pseudo_triplets(rng)[0]]
    a, pa = bank.render_batch(pieces, "cpu", aug, torch.Generator().manual_seed(5))
    b, pb = bank.render_batch(pieces, "cpu", aug, torch.Generator().manual_seed(5))
    plain, pp = bank.render_batch(pieces)
    assert torch.equal(a, b) and torch.equal(pa, pb)
    assert a.shape == plain.shape == (12, SEG) and not torch.allclose(a, plain)
    assert pp.shape == pa.shape


def _calibration_audio() -> np.ndarray:
    t = np.arange(3 * 44100) / 44100.0
    rng = np.random.default_rng(0)
    return np.stack(
        [0.2 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(len(t)) for f in np.geomspace(50, 5000, 24)]
    ).astype(np.float32)


def _calibration_mel():
    from partsim.model.features import FeatureConfig, LogMel

    return torch.from_numpy(LogMel(FeatureConfig())(_calibration_audio()))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["csn-v2", "default"])
def test_warm_start_from_a_shipped_onnx_model_reproduces_it_in_eval_and_train_mode(model):
    """csn-v2 takes mel; the default (csn-v3) takes PCM, its front end a 1-D convolution the
    warm start must skip."""
    from partsim import assets
    from partsim.model.inference import OnnxEmbedder
    from partsim.model.warmstart import load_onnx_into

    manifest = assets.shipped_model("csn-v2") / "manifest.json" if model == "csn-v2" else assets.default_manifest()
    widths = json.loads(manifest.read_text())["network"]["widths"]
    csn = CSN(NetConfig(widths=widths))
    mel = _calibration_mel()
    load_onnx_into(csn, manifest, mel)
    ref = OnnxEmbedder(manifest).embed(_calibration_audio()).reshape(len(mel), -1)
    csn.eval()
    with torch.no_grad():
        assert np.abs(csn(mel).numpy() - ref).max() < 1e-4
    csn.train()  # batch statistics of the calibration batch equal the rebuilt running statistics
    with torch.no_grad():
        assert np.abs(csn(mel).numpy() - ref).max() < 1e-3


def test_warm_start_rejects_a_model_of_other_sizes(tmp_path):
    from partsim.assets import default_manifest
    from partsim.errors import InvalidArgument
    from partsim.model.warmstart import load_init

    with pytest.raises(InvalidArgument, match="widths"):
        load_init(CSN(NetConfig(widths=TINY_WIDTHS, subspace_dim=TINY_DIM)), default_manifest(), _calibration_mel)
    with pytest.raises(InvalidArgument, match="no such model"):
        load_init(CSN(NetConfig()), tmp_path / "missing.pt", _calibration_mel)


@pytest.mark.slow
def test_init_from_a_model_skips_pretraining_and_checkpoints_hold_weights_only(tiny_run, tiny_corpus, tmp_path):
    cfg = tiny_train_config(tiny_corpus, tmp_path / "ft", init=str(tiny_run / "model.pt"), schedule="cosine")
    tr = Trainer(cfg, progress=False)
    start = {k: v.clone() for k, v in tr.csn.state_dict().items()}
    trained = torch.load(tiny_run / "model.pt", weights_only=False)["csn"]
    assert all(torch.equal(start[k], trained[k]) for k in trained)
    log = tr.run()
    assert [e["phase"] for e in log["epochs"]] == ["main"]
    assert log["init"].startswith("torch:") and log["augmentation"]["p"] > 0
    assert log["epochs"][0]["draws_per_second"] > 0
    ck = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=False)
    assert "opt" not in ck and ck["partnets"] is None
    assert torch.load(tmp_path / "ft" / "model.pt", weights_only=False)["partnets"] is None


@pytest.mark.slow
def test_training_speed_benchmark_prints_both_configurations_and_their_ratio(tiny_corpus, capsys):
    from partsim.model.train_bench import bench_training

    result = bench_training(str(tiny_corpus), widths=TINY_WIDTHS, subspace_dim=TINY_DIM, batch=4, steps=2)
    out = capsys.readouterr().out
    assert set(result) >= {"csn-v2 configuration", "csn-v3 configuration", "ratio"}
    assert result["csn-v2 configuration"]["draws_per_second"] > 0 and result["ratio"] > 0
    assert "draws/s" in out and "ratio" in out


@pytest.mark.slow
def test_frozen_batch_norms_keep_their_running_statistics_while_the_weights_learn(tiny_run, tiny_corpus, tmp_path):
    cfg = tiny_train_config(tiny_corpus, tmp_path / "fz", init=str(tiny_run / "model.pt"), freeze_bn=True)
    tr = Trainer(cfg, progress=False)
    before = {k: v.clone() for k, v in tr.csn.state_dict().items()}
    tr.run()
    after = tr.csn.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith("weight")]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in weights)


@pytest.mark.parametrize(
    "args, message",
    [(["--steps", "0"], "--steps must be at least 1"), (["--batch", "0"], "--batch must be at least 1")],
)
@pytest.mark.slow
def test_bench_train_rejects_bad_sizes_with_one_line(tiny_corpus, args, message):
    r = run_cli("bench-train", "--corpus", str(tiny_corpus), *args)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"partsim: error: {message}, got 0"]


def test_bench_train_names_a_missing_corpus(tmp_path):
    r = run_cli("bench-train", "--corpus", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_interpolation_spans_the_shipped_start_and_the_fine_tuned_model(tiny_run, tiny_corpus, tmp_path):
    from partsim.model.export import export
    from partsim.model.inference import OnnxEmbedder, TorchEmbedder

    export(tiny_run / "model.pt", tmp_path / "start", name="tiny")
    cfg = tiny_train_config(
        tiny_corpus, tmp_path / "ft", steps_per_epoch=3, init=str(tmp_path / "start"), freeze_bn=True, lr=1e-2
    )
    Trainer(cfg, progress=False).run()
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, (4, 3 * 44100)).astype(np.float32)
    start = OnnxEmbedder(tmp_path / "start" / "manifest.json").embed(audio)
    tuned = TorchEmbedder(tmp_path / "ft" / "model.pt").embed(audio)
    for alpha, expect in ((0.0, start), (1.0, tuned)):
        r = run_cli(
            "interpolate",
            str(tmp_path / "ft" / "model.pt"),
            "--init",
            str(tmp_path / "start"),
            "--alpha",
            str(alpha),
            "--out",
            str(tmp_path / f"a{alpha}.pt"),
        )
        assert r.returncode == 0, r.stderr
        got = TorchEmbedder(tmp_path / f"a{alpha}.pt").embed(audio)
        assert np.abs(got - expect).max() < 1e-4
    assert np.abs(start - tuned).max() > 1e-3  # the fine-tuning moved the model: the check above means something
    r = run_cli(
        "interpolate",
        str(tiny_run / "model.pt"),
        "--init",
        str(tmp_path / "start"),
        "--alpha",
        "0.5",
        "--out",
        str(tmp_path / "bad.pt"),
    )
    assert r.returncode == 2 and "--freeze-bn" in r.stderr


@pytest.mark.slow
def test_init_and_interpolate_name_a_corrupt_or_foreign_model_file(tiny_corpus, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"x": 1}, foreign)
    r = run_cli(
        "train",
        "--corpus",
        str(tiny_corpus),
        "--out",
        str(tmp_path / "run"),
        "--init",
        str(corrupt),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--quiet",
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"partsim: error: --init {corrupt}: not a readable PyTorch file (ValueError)"
    ]
    from partsim import assets

    v2 = assets.shipped_model("csn-v2")
    for path, message in ((corrupt, "not a readable PyTorch file"), (foreign, "not a partsim model.pt")):
        r = run_cli("interpolate", str(path), "--init", str(v2), "--alpha", "0.5", "--out", str(tmp_path / "o.pt"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    assert not (tmp_path / "o.pt").exists()
