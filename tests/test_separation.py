"""The separation model: training, demucs repository export/load, evaluation, the shipped model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from partsim.errors import FailedPrecondition, NotFound
from partsim.separation import SOURCES, export_run, load_separator, shipped_repo
from partsim.separation.train import SepConfig, WindowSampler, build_model, sdr, separate, train, train_step

TINY = dict(
    channels=8, depth=4, nfft=1024, t_layers=1, segment=1.0, batch_size=2, epoch_steps=2, val_songs=1, val_seconds=2.0
)
NAME = "tiny-sep"


@pytest.fixture(scope="module")
def sep_run(tiny_corpus, tmp_path_factory) -> Path:
    """A tiny separator trained for one epoch of two steps, then resumed for a second epoch."""
    out = tmp_path_factory.mktemp("seprun") / "run"
    train(tiny_corpus, out, SepConfig(epochs=1, **TINY), log=lambda m: None)
    train(tiny_corpus, out, SepConfig(epochs=2, **TINY), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def sep_repo(sep_run, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("seprepo")
    export_run(sep_run, repo, NAME)
    return repo


@pytest.mark.slow
def test_training_steps_decrease_the_loss(tiny_corpus):
    from partsim.data import open_dataset

    torch.manual_seed(0)
    model = build_model(SepConfig(**TINY))
    sampler = WindowSampler(open_dataset(tiny_corpus).tracks("train"), 44100)
    stems = sampler.sample(np.random.default_rng(0), 2)  # (B, S, 1, T)
    assert stems.shape == (2, len(SOURCES), 1, 44100)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = [train_step(model, optimizer, stems) for _ in range(12)]
    assert np.mean(losses[-3:]) < losses[0], losses


@pytest.mark.slow
def test_run_log_and_resume(sep_run):
    run = json.loads((sep_run / "run.json").read_text())
    assert [e["epoch"] for e in run["epochs"]] == [0, 1]  # the second call resumed after epoch 0
    assert len(run["invocations"]) == 2
    assert run["config"]["channels"] == 8 and run["corpus"]["splits"]["train"] > 0
    assert set(run["epochs"][0]["val_sdr"]) == {*SOURCES, "mean"}
    assert run["best"]["epoch"] in (0, 1) and run["wall_seconds"] > 0


def test_export_writes_a_demucs_repository(sep_repo):
    from demucs.apply import BagOfModels
    from demucs.pretrained import get_model

    files = sorted(p.name for p in sep_repo.iterdir())
    assert len(files) == 2 and files[1] == f"{NAME}.yaml", files
    m = re.fullmatch(r"([0-9a-f]{8})-([0-9a-f]{8})\.th", files[0])
    assert m, files
    assert (sep_repo / f"{NAME}.yaml").read_text().strip() == f"models:\n- {m.group(1)}"
    bag = get_model(NAME, repo=sep_repo)
    assert isinstance(bag, BagOfModels)
    assert bag.sources == SOURCES and bag.samplerate == 44100 and bag.audio_channels == 1
    single = get_model(m.group(1), repo=sep_repo)  # the signature alone loads the model itself
    assert type(single).__name__ == "HTDemucs"


def test_corrupted_checkpoint_is_refused(sep_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sep_repo, repo)
    th = next(repo.glob("*.th"))
    data = bytearray(th.read_bytes())
    data[len(data) // 2] ^= 0x01
    th.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match="checksum"):
        load_separator(NAME, repo)
    with pytest.raises(NotFound):
        load_separator("no-such-model", repo)
    with pytest.raises(NotFound):
        load_separator(NAME, tmp_path / "missing")


@pytest.mark.slow
def test_evaluation_returns_the_table(sep_repo, tiny_corpus, tmp_path):
    from partsim.cli import main

    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate-separator",
                NAME,
                "--repo",
                str(sep_repo),
                "--corpus",
                str(tiny_corpus),
                "--songs",
                "1",
                "--chunk-seconds",
                "4",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert set(result["model"]) == set(SOURCES) and set(result["mix"]) == set(SOURCES)
    assert set(result["model"]["drums"]) >= {"sdr", "sir", "sar", "chunks"}
    assert result["spleeter_table_3_1"] == {"drums": 2.73, "bass": -4.79, "piano": -9.66}
    assert result["protocol"]["songs"] == 1 and result["chunks"]
    assert sum(result["model"][p]["chunks"] for p in SOURCES) == len(result["chunks"])


def test_cli_export(sep_run, tmp_path, capsys):
    from partsim.cli import main

    assert main(["export-separator", str(sep_run), "--repo", str(tmp_path / "r"), "--name", "x"]) == 0
    assert (tmp_path / "r" / "x.yaml").exists()
    assert main(["export-separator", str(tmp_path / "none"), "--repo", str(tmp_path / "r"), "--name", "x"]) == 2
    assert "no checkpoint.th" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_model_separates_a_generated_song(tiny_corpus):
    from partsim.data import open_dataset

    assert (shipped_repo() / "partsim-sep-v1.yaml").is_file(), f"partsim ships partsim-sep-v1 in {shipped_repo()}"
    model = load_separator("partsim-sep-v1")
    track = open_dataset(tiny_corpus).tracks("test")[0]
    stems, mix = track.load_stems(), track.load_mix()
    est = separate(model, mix)  # (S, T)
    assert est.shape == (len(SOURCES), len(mix)) and list(model.sources) == SOURCES
    checked = 0
    for s, part in enumerate(SOURCES):
        if np.mean(stems[part] ** 2) >= 1e-4:
            assert sdr(stems[part], est[s]) > sdr(stems[part], mix), part
            checked += 1
    assert checked >= 2
