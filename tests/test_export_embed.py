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


@pytest.mark.slow
def test_manifest_describes_the_model(exported, tiny_run):
    out, manifest = exported
    assert manifest["parts"] == ["drums", "bass", "piano", "guitar", "others"]
    assert manifest["subspace_dim"] == TINY_DIM and manifest["embedding_dim"] == 5 * TINY_DIM
    assert manifest["onnx"]["sha256"] == sha256_file(out / "csn.onnx")
    assert manifest["features"]["n_mels"] == 128 and manifest["features"]["hop_length"] == 512
    assert manifest["segment_seconds"] == 3.0 and manifest["training"]["corpus"]["layout"] == "partsim"
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest, default=float))


@pytest.mark.slow
def test_onnx_matches_pytorch_on_random_and_real_audio(exported, tiny_run, tiny_corpus, tmp_path):
    out, manifest = exported
    assert manifest["onnx"]["input"] == "pcm"  # the default
    rng = np.random.default_rng(0)
    torch_model = TorchEmbedder(tiny_run / "model.pt")
    # random audio of several lengths (dynamic samples axis) and batch sizes through the PCM graph
    for batch, samples in ((1, 3 * SR), (3, 5 * SR + 77), (2, 31 * 512)):
        audio = rng.uniform(-0.5, 0.5, (batch, samples)).astype(np.float32)
        assert parity(out / "manifest.json", tiny_run / "model.pt", audio) <= 1e-4
    # random spectrograms of several lengths (dynamic time axis) and batch sizes through a mel graph
    export(tiny_run / "model.pt", tmp_path / "mel", input="mel")
    for batch, frames in ((1, 259), (3, 431), (2, 64)):
        mel = rng.random((batch, 128, frames), dtype=np.float32)
        assert parity(tmp_path / "mel" / "manifest.json", tiny_run / "model.pt", mel) <= 1e-4
    # real audio through the shared feature code
    mix, _ = sf.read(str(next(tiny_corpus.glob("song*/mix.flac"))), dtype="float32")
    segs = np.stack([mix[: 3 * SR], mix[3 * SR : 6 * SR]])
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


@pytest.mark.slow
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
    direct = OnnxEmbedder(out / "manifest.json").embed(np.stack([audio[: 3 * SR], audio[3 * SR : 6 * SR]]))
    np.testing.assert_allclose(z["vectors"][:2], direct, atol=1e-5)
    # hop and segment options
    proc = run_cli(
        "embed",
        str(mix),
        "--model",
        str(out / "manifest.json"),
        "--segment-seconds",
        "2",
        "--hop-seconds",
        "1",
        "-o",
        str(npz),
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(npz)["start"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.slow
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


# -- PCM input: the features inside the graph ----------------------------------------------------
def write_random_model(path, widths=(2, 4, 4, 8, 8), dim=TINY_DIM, seed=0):
    """A ``model.pt`` as ``partsim train`` writes it, with random weights and BatchNorm statistics
    (no training needed to test export and inference)."""
    import torch

    from partsim.model.features import FeatureConfig
    from partsim.model.nets import CSN, NetConfig, PartNet

    torch.manual_seed(seed)
    cfg = NetConfig(subspace_dim=dim, widths=list(widths))
    csn = CSN(cfg)
    for m in csn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(
        {
            "csn": csn.state_dict(),
            "partnets": torch.nn.ModuleList([PartNet(cfg) for _ in cfg.parts]).state_dict(),
            "net": cfg.to_dict(),
            "features": FeatureConfig().to_dict(),
            "segment_seconds": 3.0,
            "log": {"corpus": {"layout": "partsim"}},
        },
        path,
    )
    return path


def audio_signals(n: int, seed: int = 0) -> np.ndarray:
    """Noise, a chord with harmonics, a bass tone, a tone after silence, silence: ``(5, n)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    chord = sum(np.sin(2 * np.pi * f * h * t) / h for f in (196.0, 246.9, 293.7) for h in range(1, 6))
    return np.stack(
        [
            rng.uniform(-0.4, 0.4, n),
            0.5 * chord / np.abs(chord).max(),
            0.3 * np.sin(2 * np.pi * 49 * t),
            0.2 * np.sin(2 * np.pi * 2000 * t) * (t > 1.0),
            np.zeros(n),
        ]
    ).astype(np.float32)


@pytest.fixture(scope="module")
def random_exports(tmp_path_factory):
    """One random tiny model exported with PCM input (the default) and with mel input."""
    root = tmp_path_factory.mktemp("pcm")
    model = write_random_model(root / "model.pt")
    return model, export(model, root / "pcm"), export(model, root / "mel", input="mel"), root


@pytest.mark.slow
def test_export_takes_pcm_by_default_and_the_manifest_says_so(random_exports):
    import onnx

    _, manifest, mel_manifest, root = random_exports
    o = manifest["onnx"]
    assert o["input"] == "pcm" and o["input_shape"] == ["batch", "samples"] and o["sample_rate"] == SR
    assert o["min_samples"] == 31 * 512 and o["min_frames"] == 32
    assert o["frontend"]["radix"] == 32 and o["export_check"]["max_abs_vs_pytorch"] <= 1e-5
    graph = onnx.load(str(root / "pcm" / "csn.onnx")).graph
    assert [i.name for i in graph.input] == ["pcm"] and len(graph.input[0].type.tensor_type.shape.dim) == 2
    assert any(
        node.op_type == "Conv" and any(a.name == "group" and a.i == 32 for a in node.attribute) for node in graph.node
    )  # the STFT: a grouped strided Conv1d
    assert mel_manifest["onnx"]["input"] == "mel" and mel_manifest["onnx"]["input_shape"] == ["batch", 128, "frames"]
    assert "min_samples" not in mel_manifest["onnx"]
    assert json.loads((root / "pcm" / "manifest.json").read_text())["onnx"] == json.loads(json.dumps(o))


def test_pcm_graph_gives_the_mel_graphs_embeddings(random_exports):
    """The PCM-input graph (features inside) and the mel-input graph fed NumPy features: same vectors."""
    model, _, _, root = random_exports
    pcm, mel = OnnxEmbedder(root / "pcm" / "manifest.json"), OnnxEmbedder(root / "mel" / "manifest.json")
    assert (pcm.input, mel.input) == ("pcm", "mel")
    torch_model = TorchEmbedder(model)
    for n in (31 * 512, 3 * SR, 5 * SR + 123):
        x = audio_signals(n, seed=n)
        a, b = pcm.embed(x, batch=2), mel.embed(x)
        assert a.shape == b.shape == (5, 5, TINY_DIM)
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())
        assert np.abs(a - torch_model.embed(x)).max() <= 1e-5
    assert parity(root / "pcm" / "manifest.json", model, audio_signals(3 * SR)) <= 1e-5


@pytest.mark.slow
def test_plain_dft_convolution_export_gives_the_same_embeddings(random_exports, tmp_path):
    """--radix 1: the STFT as one Conv1d of n_fft-tap windowed DFT kernels, no split."""
    model, _, _, root = random_exports
    manifest = export(model, tmp_path / "r1", radix=1)
    assert manifest["onnx"]["frontend"]["radix"] == 1
    x = audio_signals(3 * SR, seed=4)
    a = OnnxEmbedder(tmp_path / "r1" / "manifest.json").embed(x)
    assert np.abs(a - OnnxEmbedder(root / "mel" / "manifest.json").embed(x)).max() <= 1e-5


def test_pcm_model_takes_no_mel_and_no_segment_under_its_minimum(random_exports):
    _, _, _, root = random_exports
    model = OnnxEmbedder(root / "pcm" / "manifest.json")
    with pytest.raises(InvalidArgument, match="takes PCM"):
        model.embed_mel(np.zeros((1, 128, 64), np.float32))
    with pytest.raises(InvalidArgument, match="shorter than the model's minimum of 15872"):
        model.embed(np.zeros((1, 15871), np.float32))


def test_a_manifest_without_an_input_field_is_a_mel_model(random_exports, tmp_path):
    """csn-v1 manifests have no onnx.input: they still load and embed, through the NumPy features."""
    _, _, _, root = random_exports
    m = json.loads((root / "mel" / "manifest.json").read_text())
    del m["onnx"]["input"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "csn.onnx").write_bytes((root / "mel" / "csn.onnx").read_bytes())
    old = OnnxEmbedder(tmp_path / "manifest.json")
    x = audio_signals(3 * SR, seed=5)
    assert old.input == "mel"
    np.testing.assert_array_equal(old.embed(x), OnnxEmbedder(root / "mel" / "manifest.json").embed(x))


@pytest.mark.slow
def test_embed_cli_with_a_pcm_model_and_export_cli_input_flag(random_exports, tmp_path):
    model, _, _, root = random_exports
    audio = audio_signals(7 * SR, seed=6)[1]
    wav = _wav(tmp_path / "chord.wav", audio)
    npz = tmp_path / "out.npz"
    proc = run_cli("embed", str(wav), "--model", str(root / "pcm" / "manifest.json"), "-o", str(npz))
    assert proc.returncode == 0, proc.stderr
    z = np.load(npz)
    want = OnnxEmbedder(root / "mel" / "manifest.json").embed(np.stack([audio[: 3 * SR], audio[3 * SR : 6 * SR]]))
    assert z["vectors"].shape == (2, 5, TINY_DIM) and np.abs(z["vectors"] - want).max() <= 1e-5
    proc = run_cli("export", str(model), "--out", str(tmp_path / "m"), "--input", "mel")
    assert proc.returncode == 0, proc.stderr
    assert "input mel" in proc.stdout
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["onnx"]["input"] == "mel"
