"""The CSN, its losses, the pseudo-piece sampler and the training loop, on tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from partsim.data import open_dataset
from partsim.model.data import StemBank
from partsim.model.features import SILENCE_POWER
from partsim.model.nets import CSN, NetConfig, mask, masked_distance, norm_logits, triplet_loss
from partsim.model.train import TrainConfig, Trainer

from .conftest import TINY_DIM, TINY_WIDTHS, tiny_train_config

PARTS = ["drums", "bass", "piano", "guitar", "others"]
SEG = 3 * 44100
MAIN_PHASE_ONLY = dict(pretrain=False, batch=2, steps_per_epoch=1, val_draws=2)  # no pre-training, smallest steps


def test_mask_and_masked_distance_select_one_subspace():
    P, D = 5, 4
    m = mask(P, D, 2)
    assert m.tolist() == [0.0] * 8 + [1.0] * 4 + [0.0] * 8
    a = torch.randn(3, P * D)
    b = a.clone()
    b[:, :8] += 10.0  # change subspaces 0 and 1 only
    cond = torch.tensor([2, 3, 4])
    assert torch.allclose(masked_distance(a, b, cond, P, D), torch.zeros(3))
    b[:, 8:12] += 1.0  # subspace 2 by 1 in each of 4 dims -> distance 2 for rows with c = 2
    d = masked_distance(a, b, cond, P, D)
    assert d[0].item() == pytest.approx(2.0) and d[1].item() == 0 and d[2].item() == 0
    # (f(a) - f(b)) m_c == masked difference
    assert torch.allclose(
        (a[0] - b[0]) * mask(P, D, 2), torch.cat([torch.zeros(8), a[0, 8:12] - b[0, 8:12], torch.zeros(8)])
    )


def test_triplet_loss_is_the_hinge_of_eq_4_2():
    P, D = 5, 2
    anchor = torch.zeros(1, P * D)
    positive = torch.zeros(1, P * D)
    negative = torch.zeros(1, P * D)
    positive[0, 2] = 0.5  # subspace 1 distance 0.5
    negative[0, 2] = 0.6
    c = torch.tensor([1])
    assert triplet_loss(anchor, positive, negative, c, P, D, 0.2).item() == pytest.approx(0.1)
    negative[0, 2] = 1.0
    assert triplet_loss(anchor, positive, negative, c, P, D, 0.2).item() == 0.0


def test_norm_logits_follow_subspace_norms():
    emb = torch.zeros(1, 10)
    emb[0, 2:4] = torch.tensor([3.0, 4.0])  # subspace 1 of 5 x 2 has norm 5
    logits = norm_logits(emb, torch.zeros(5), 5, 2)
    assert logits[0, 1].item() == pytest.approx(np.log(5.0), abs=1e-5)
    assert (logits[0, [0, 2, 3, 4]] < -15).all()  # zero subspace -> log(1e-8)


def test_csn_shapes_any_length():
    net = CSN(NetConfig(subspace_dim=TINY_DIM, widths=TINY_WIDTHS)).eval()
    for frames in (32, 259, 431):
        out = net(torch.rand(3, 128, frames))
        assert out.shape == (3, 5 * TINY_DIM)
        assert net.subspaces(out).shape == (3, 5, TINY_DIM)


@pytest.fixture(scope="module")
def bank(tiny_corpus):
    return StemBank(open_dataset(tiny_corpus).tracks(), PARTS, SEG, SEG // 2)


@pytest.mark.slow
def test_pseudo_triplets_have_the_thesis_labels(bank):
    """Basic: (A,B), (A,C), (D,B) for c; additional: (A,B), (D,B), (A,C) for c2 != c present in B."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        (anchor, positive, negative), c, c2 = bank.pseudo_triplets(rng)
        a, b = anchor.sources[c][0], next(s[0] for j, s in enumerate(anchor.sources) if j != c and s)
        assert positive.sources[c][0] == a and negative.sources[c][0] != a
        d = negative.sources[c][0]
        cc = {s[0] for j, s in enumerate(positive.sources) if j != c and s}
        others_n = {s[0] for j, s in enumerate(negative.sources) if j != c and s}
        assert others_n == {b} and cc and b not in cc and a not in cc and len({a, b, d} | cc) == 4
        group = {bank.tempo_class[t] // bank.class_merge for t in (a, b, d, *cc)}
        assert len(group) == 1  # one (merged) tempo class
        assert bank.has(a, c) and bank.has(d, c)
        if c2 is not None:
            assert c2 != c and bank.has(b, c2)
            assert anchor.sources[c2] is not None and negative.sources[c2] is not None  # B's c2 kept in both
        # the part-c windows of the anchor and negative are non-silent
        for piece in (anchor, negative):
            t, start = piece.sources[c]
            assert np.mean(bank.window(t, c, start).astype(np.float64) ** 2) >= SILENCE_POWER


def test_norm_targets_follow_the_stems_power(bank):
    rng = np.random.default_rng(1)
    silent_seen = 0
    for _ in range(60):
        (anchor, _, _), _, _ = bank.pseudo_triplets(rng, drop_prob=0.7)
        audio, present = bank.render(anchor)
        total = np.zeros_like(audio)
        for j, src in enumerate(anchor.sources):
            if src is None:
                assert present[j] == 0
                silent_seen += 1
                continue
            w = bank.window(src[0], j, src[1])
            total += w
            assert present[j] == float(np.mean(w.astype(np.float64) ** 2) > SILENCE_POWER)
        np.testing.assert_allclose(audio, total, atol=1e-6)
    assert silent_seen > 0  # created silences happen


def test_render_batch_is_the_per_piece_mix(bank):
    """The batched gather used in training mixes exactly what the per-piece reference mixes."""
    rng = np.random.default_rng(4)
    pieces = [p for _ in range(10) for p in bank.pseudo_triplets(rng, drop_prob=0.7)[0]]
    audio, present = bank.render_batch(pieces)
    assert audio.shape == (len(pieces), SEG) and present.shape == (len(pieces), len(PARTS))
    for i, piece in enumerate(pieces):
        ref_audio, ref_present = bank.render(piece)
        np.testing.assert_allclose(audio[i].numpy(), ref_audio, atol=1e-6)
        np.testing.assert_array_equal(present[i].numpy(), ref_present)
    # stem windows of one part, silence where no source
    t, start = pieces[0].sources[pieces[0].sources.index(next(s for s in pieces[0].sources if s))]
    j = next(j for j, s in enumerate(pieces[0].sources) if s)
    w = bank.gather(j, [(t, start), None])
    np.testing.assert_allclose(w[0].numpy(), bank.window(t, j, start), atol=0)
    assert not w[1].any()


def test_time_limit_stops_the_main_phase_and_still_writes_the_model(tiny_corpus, tmp_path):
    cfg = tiny_train_config(tiny_corpus, tmp_path / "run", **MAIN_PHASE_ONLY, epochs=50, time_limit=1e-9)
    log = Trainer(cfg, progress=False).run()
    assert log["stopped_early"]["after_main_epochs"] == 0 and log["epochs"] == []
    assert (tmp_path / "run" / "model.pt").is_file()
    assert log["device"].startswith("cpu")


@pytest.mark.parametrize(
    "field,value,fragment",
    [("time_limit", -1.0, "--time-limit"), ("time_limit", float("nan"), "--time-limit"), ("device", "tpu", "--device")],
)
def test_bad_training_options(tiny_corpus, field, value, fragment):
    from partsim.errors import InvalidArgument

    cfg = TrainConfig(corpus=str(tiny_corpus), out="/tmp/unused", **{field: value})
    with pytest.raises(InvalidArgument, match=fragment):
        cfg.validate()


@pytest.mark.slow
def test_training_losses_decrease_on_a_fixed_batch(tiny_corpus):
    cfg = tiny_train_config(tiny_corpus, "/tmp/unused", batch=6, lr=3e-3, pretrain=False)
    tr = Trainer(cfg, progress=False)
    draws = [tr._draw(tr.train, np.random.default_rng(3)) for _ in range(6)]
    first = None
    for _ in range(25):
        out = tr._losses(tr.train, draws)
        tr.opt.zero_grad()
        out["loss"].backward()
        tr.opt.step()
        first = first if first is not None else float(out["loss"].detach())
    assert float(out["loss"]) < 0.6 * first


@pytest.mark.slow
def test_run_writes_log_checkpoint_and_resumes(tiny_run, tiny_corpus):
    log = json.loads((tiny_run / "run.json").read_text())
    phases = [e["phase"] for e in log["epochs"]]
    assert phases == ["partnets", "pretrain", "main", "main"]
    main = [e for e in log["epochs"] if e["phase"] == "main"]
    assert {"basic", "additional", "norm", "val_loss", "val_triplet_acc"} <= set(main[0])
    assert log["corpus"]["layout"] == "partsim" and log["config"]["net"]["widths"] == TINY_WIDTHS
    assert (tiny_run / "model.pt").is_file()
    # resume with more epochs: continues where it stopped
    cfg = tiny_train_config(tiny_corpus, tiny_run, epochs=3)
    tr = Trainer(cfg, progress=False)
    assert tr.resume() and tr.state == {"phase": "main", "epoch": 2}  # finished, but more epochs asked for
    log = tr.run()
    assert [e["phase"] for e in log["epochs"]] == ["partnets", "pretrain", "main", "main", "main"]
    assert log["resumed_with"][0]["after_epochs"] == 4 and log["config"]["epochs"] == 3
    again = Trainer(cfg, progress=False)
    assert again.resume() and again.state["phase"] == "done"  # nothing more to do
    assert len(again.run()["epochs"]) == 5


@pytest.mark.slow
def test_ablation_flags_change_what_is_trained(tiny_corpus, tmp_path):
    cfg = tiny_train_config(tiny_corpus, tmp_path / "abl", **MAIN_PHASE_ONLY, pseudo=False, norm=False)
    log = Trainer(cfg, progress=False).run()
    assert [e["phase"] for e in log["epochs"]] == ["main"]
    assert "additional" not in log["epochs"][0] and "norm" not in log["epochs"][0]
