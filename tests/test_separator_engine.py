"""The separator's engine: models (stereo, loaded by signature, the shipped partsim-sep-v1), start-up
failures that name the model and the folder, the parts mapping, configuration errors that name the variable,
CUDA without a GPU, and the DC bin made real before the inverse STFT.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from partsim.assets import shipped_separator_repo as shipped_repo
from partsim.errors import FailedPrecondition, InvalidArgument, NotFound
from partsim.services.config import parse
from partsim.services.separator.config import PREFIX, SeparatorConfig, parse_parts
from partsim.services.separator.engine import Engine, load_model
from partsim.v1 import types_pb2

from .audio import SR, encode, make_audio, pcm
from .tiny_separator import PARTS5, make_tiny_repo


# -- engine: models, channels, start-up errors ------------------------------------------------
def test_stereo_model_takes_mono_and_multichannel_input(tmp_path):
    engine = Engine(
        make_tiny_repo(tmp_path / "r", name="st", sources=["a", "b"], channels=2), "st", segment_seconds=1.0
    )
    assert (engine.channels, engine.parts) == (2, {"a": "a", "b": "b"})
    mono = make_audio(0.5, 20)[:, None]
    assert np.array_equal(engine.to_model_channels(mono), np.repeat(mono, 2, axis=1))
    six = make_audio(0.5, 21, channels=6)
    np.testing.assert_allclose(engine.to_model_channels(six)[:, 1], six.mean(axis=1), rtol=1e-6)
    stereo = make_audio(1.2, 22, channels=2)
    assert np.array_equal(engine.decode(pcm(stereo)), stereo)
    out = engine.separate(engine.decode(types_pb2.Audio(encoded=encode(mono[:, 0]))))
    assert out.shape == (2, 2, len(mono))


def test_model_loads_by_signature_too(tmp_path):
    repo = make_tiny_repo(tmp_path / "r", seed=3)
    sig = next(repo.glob("*.th")).stem.split("-")[0]
    assert list(load_model(repo, sig).sources) == PARTS5


def test_corrupt_checkpoint_is_refused_at_start_up(tmp_path):
    repo = make_tiny_repo(tmp_path / "r")
    th = next(repo.glob("*.th"))
    data = bytearray(th.read_bytes())
    data[len(data) // 2] ^= 0xFF
    th.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match=rf"'tiny-sep' from {re.escape(str(repo))}: Invalid checksum"):
        Engine(repo, "tiny-sep")
    # the right checksum of a file that is not a model
    th.unlink()
    (repo / f"a1b2c3d0-{hashlib.sha256(b'garbage').hexdigest()[:8]}.th").write_bytes(b"garbage")
    with pytest.raises(FailedPrecondition, match=f"cannot load separator model 'tiny-sep' from {re.escape(str(repo))}"):
        Engine(repo, "tiny-sep")


def test_missing_model_or_folder_names_both(tmp_path):
    repo = make_tiny_repo(tmp_path / "r")
    with pytest.raises(
        NotFound,
        match=rf"'nope' is not in {re.escape(str(repo))}: expected nope.yaml .* has tiny-sep, ",
    ):
        Engine(repo, "nope")
    with pytest.raises(
        NotFound,
        match=rf"'tiny-sep': the model repository folder {re.escape(str(tmp_path))}/gone does not exist",
    ):
        Engine(tmp_path / "gone", "tiny-sep")
    (repo / "tiny-sep.yaml").write_text("models: ['0badc0de']\n")  # a bag naming a model the folder lacks
    with pytest.raises(FailedPrecondition, match="0badc0de"):
        Engine(repo, "tiny-sep")


def test_parts_mapping_errors(tmp_path):
    repo = make_tiny_repo(tmp_path / "r")
    with pytest.raises(
        InvalidArgument, match=r"no source 'vocals' \(its sources: drums, bass, piano, guitar, others\)"
    ):
        Engine(repo, "tiny-sep", parts=parse_parts("vocals="))
    with pytest.raises(InvalidArgument, match="part 'drums' would come from more than one source"):
        Engine(repo, "tiny-sep", parts={"bass": "drums"})
    assert Engine(repo, "tiny-sep", parts=parse_parts("others=,piano=keys")).parts == {
        "drums": "drums",
        "bass": "bass",
        "piano": "keys",
        "guitar": "guitar",
        "others": "",
    }
    for text, message in (
        ("drums", "expected SOURCE=PART"),
        ("a=x,a=y", "mapped twice"),
        ("a=x,b=x", "comes from more than one source"),
        ("a b=x", "bad name"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            parse_parts(text)


def test_config_validation_names_the_variable():
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_DEVICE"):
        parse(SeparatorConfig, PREFIX, ["--device", "tpu"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_PARTS .*mapped twice"):
        parse(SeparatorConfig, PREFIX, [], environ={"PARTSIM_SEPARATOR_PARTS": "a=b,a=c"})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_OVERLAP"):
        parse(SeparatorConfig, PREFIX, ["--overlap", "1"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_WORKERS"):
        parse(SeparatorConfig, PREFIX, ["--max-queued", "20"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_SHIFTS"):
        parse(SeparatorConfig, PREFIX, ["--shifts", "5"], environ={})
    cfg = parse(SeparatorConfig, PREFIX, ["--segment-seconds", "7.5"], environ={"PARTSIM_SEPARATOR_MODEL": "m1"})
    assert (cfg.model, cfg.segment_seconds, cfg.address, cfg.metrics_port, cfg.max_audio_seconds) == (
        "m1",
        7.5,
        "127.0.0.1:50054",
        9094,
        900.0,
    )
    assert cfg.repo_path == shipped_repo() and shipped_repo().name == "separator"


def test_cuda_without_gpu_fails_clearly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FailedPrecondition, match="device=cuda, but torch .* sees no CUDA device.*device=cpu"):
        Engine(make_tiny_repo(tmp_path / "r"), "tiny-sep", device="cuda")


# -- the shipped model ------------------------------------------------------------------------
SHIPPED = shipped_repo() / "partsim-sep-v1.yaml"


@pytest.mark.slow
def test_shipped_model_separates_into_the_catalog_parts():
    assert SHIPPED.is_file(), f"{SHIPPED} is shipped with partsim"
    engine = Engine(shipped_repo(), "partsim-sep-v1", segment_seconds=0.0)
    assert engine.sources == PARTS5 and engine.sample_rate == SR and engine.channels == 1
    assert engine.parts == {p: p for p in PARTS5}
    audio = make_audio(3.0, seed=40)[:, None]
    out = engine.separate(audio)
    assert out.shape == (5, 1, len(audio)) and np.all(np.isfinite(out)) and np.abs(out).max() > 0
    silent = engine.separate(np.zeros((SR, 1), np.float32))
    assert np.abs(silent).max() < 1e-4


@pytest.mark.slow
def test_the_dc_bin_is_made_real_before_the_inverse_stft(tmp_path):
    """real_dc_bins: the inverse STFT gets a spectrum whose DC bin has no imaginary part (cuFFT
    does not ignore it, CPU's irfft does), and on the CPU the stems do not change at all."""
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    make_tiny_repo(tmp_path, name="tiny-sep")
    patched, plain = load_model(tmp_path, "tiny-sep"), get_model("tiny-sep", repo=tmp_path).eval()
    inner = patched.models[0] if hasattr(patched, "models") else patched
    seen = []
    wrapped = inner._ispec.ispec
    inner._ispec.ispec = lambda z, length=None, scale=0: seen.append(z) or wrapped(z, length, scale)
    x = torch.from_numpy(make_audio(4.0, seed=9)).reshape(1, 1, -1).float()
    with torch.no_grad():
        a = apply_model(patched, x, shifts=0, split=False)
        b = apply_model(plain, x, shifts=0, split=False)
    assert seen and all(float(z[..., 0, :].imag.abs().max()) == 0.0 for z in seen)
    assert float(seen[0][..., 1, :].imag.abs().max()) > 0  # only the DC bin is touched
    assert torch.equal(a, b)
