"""ONNX export parity, the manifest, and the `partsim embed` contract (real files, real CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from partsim.errors import InvalidArgument
from partsim.model.export import export, parity
from partsim.model.inference import OnnxEmbedder, TorchEmbedder, sha256_file

from .conftest import TINY_DIM
from .util import run_cli

SR = 44100


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "m"
    manifest = export(tiny_run / "model.pt", out)
    return out, manifest


def test_manifest_describes_the_model(exported, tiny_run):
    out, manifest = exported
    assert manifest["parts"] == ["drums", "bass", "piano", "guitar", "others"]
    assert manifest["subspace_dim"] == TINY_DIM and manifest["embedding_dim"] == 5 * TINY_DIM
    assert manifest["onnx"]["sha256"] == sha256_file(out / "csn.onnx")
    assert manifest["features"]["n_mels"] == 128 and manifest["features"]["hop_length"] == 512
    assert manifest["segment_seconds"] == 3.0 and manifest["training"]["corpus"]["layout"] == "partsim"
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest, default=float))


def test_onnx_matches_pytorch_on_random_and_real_audio(exported, tiny_run, tiny_corpus):
    out, _ = exported
    rng = np.random.default_rng(0)
    torch_model = TorchEmbedder(tiny_run / "model.pt")
    # random spectrograms of several lengths (dynamic time axis) and batch sizes
    for batch, frames in ((1, 259), (3, 431), (2, 64)):
        mel = rng.random((batch, 128, frames), dtype=np.float32)
        assert parity(out / "manifest.json", tiny_run / "model.pt", mel) <= 1e-4
    # real audio through the shared feature code
    mix, _ = sf.read(str(next(tiny_corpus.glob("song*/mix.flac"))), dtype="float32")
    segs = np.stack([mix[:3 * SR], mix[3 * SR:6 * SR]])
    a = OnnxEmbedder(out / "manifest.json").embed(segs)
    b = torch_model.embed(segs)
    assert a.shape == (2, 5, TINY_DIM) and np.max(np.abs(a - b)) <= 1e-4


def test_tampered_onnx_is_refused(exported, tmp_path):
    out, manifest = exported
    copy = tmp_path / "m"
    copy.mkdir()
    (copy / "manifest.json").write_text((out / "manifest.json").read_text())
    data = bytearray((out / "csn.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "csn.onnx").write_bytes(bytes(data))
    with pytest.raises(InvalidArgument, match="sha256"):
        OnnxEmbedder(copy / "manifest.json")


def _wav(path, audio, sr=SR, subtype="FLOAT"):
    sf.write(str(path), audio, sr, subtype=subtype)
    return path


def test_embed_cli_writes_the_contract(exported, tmp_path, tiny_corpus):
    out, _ = exported
    mix = next(tiny_corpus.glob("song*/mix.flac"))  # 8 s mono FLAC
    rng = np.random.default_rng(1)
    stereo = _wav(tmp_path / "stereo-22k.wav", rng.uniform(-0.3, 0.3, (22050 * 7, 2)).astype(np.float32), sr=22050)
    npz = tmp_path / "out.npz"
    proc = run_cli("embed", str(mix), str(stereo), "--model", str(out / "manifest.json"), "-o", str(npz))
    assert proc.returncode == 0, proc.stderr
    z = np.load(npz)
    assert sorted(z.files) == ["file_index", "files", "parts", "start", "vectors"]
    assert z["parts"].tolist() == ["drums", "bass", "piano", "guitar", "others"]
    # 8 s -> 2 segments of 3 s (the tail is dropped); 7 s at 22.05 kHz -> 2 segments
    assert z["vectors"].shape == (4, 5, TINY_DIM) and z["vectors"].dtype == np.float32
    assert z["file_index"].tolist() == [0, 0, 1, 1] and z["file_index"].dtype == np.int64
    assert z["start"].tolist() == [0.0, 3.0, 0.0, 3.0] and z["start"].dtype == np.float64
    assert z["files"].tolist() == [str(mix), str(stereo)]
    # the vectors are the model's raw output for those segments
    audio, _ = sf.read(str(mix), dtype="float32")
    direct = OnnxEmbedder(out / "manifest.json").embed(np.stack([audio[:3 * SR], audio[3 * SR:6 * SR]]))
    np.testing.assert_allclose(z["vectors"][:2], direct, atol=1e-5)
    # hop and segment options
    proc = run_cli("embed", str(mix), "--model", str(out / "manifest.json"), "--segment-seconds", "2",
                   "--hop-seconds", "1", "-o", str(npz))
    assert proc.returncode == 0, proc.stderr
    assert np.load(npz)["start"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("case", ["not-audio", "empty", "nan", "short", "missing"])
def test_embed_bad_input_names_the_file(exported, tmp_path, case):
    out, _ = exported
    path = tmp_path / f"{case}.wav"
    if case == "not-audio":
        path.write_text("definitely not audio\n")
        fragment = "cannot decode"
    elif case == "empty":
        _wav(path, np.zeros(0, np.float32))
        fragment = "empty"
    elif case == "nan":
        x = np.zeros(5 * SR, np.float32)
        x[100] = np.nan
        _wav(path, x)
        fragment = "NaN"
    elif case == "short":
        _wav(path, np.zeros(SR, np.float32))
        fragment = "shorter than one 3-s segment"
    else:
        fragment = "not found"
    proc = run_cli("embed", str(path), "--model", str(out / "manifest.json"), "-o", str(tmp_path / "x.npz"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and str(path) in lines[0], proc.stderr
    assert not (tmp_path / "x.npz").exists()


def test_embed_refuses_a_manifest_that_does_not_match(exported, tmp_path):
    out, _ = exported
    bad = tmp_path / "manifest.json"
    m = json.loads((out / "manifest.json").read_text())
    m["onnx"]["sha256"] = "0" * 64
    m["onnx"]["file"] = str(out / "csn.onnx")
    bad.write_text(json.dumps(m))
    audio = _wav(tmp_path / "a.wav", np.zeros(4 * SR, np.float32))
    proc = run_cli("embed", str(audio), "--model", str(bad), "-o", str(tmp_path / "x.npz"))
    assert proc.returncode == 2 and "sha256" in proc.stderr and "Traceback" not in proc.stderr
