"""The log-mel features: shapes, scale and an independent STFT reference."""

from __future__ import annotations

import numpy as np
import torch

from partsim.model.features import FeatureConfig, LogMel, mel_band_groups, mel_filterbank

SR = 44100


def test_shape_and_range():
    lm = LogMel()
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    mel = lm(x)
    assert mel.shape == (128, 1 + 3 * SR // 512) and mel.dtype == np.float32
    assert 0.0 <= mel.min() and mel.max() <= 1.0
    batch = lm(np.stack([x, 0.1 * x]))
    assert batch.shape == (2, 128, mel.shape[1])
    np.testing.assert_allclose(batch[0], mel, atol=1e-6)
    assert (batch[1] < batch[0]).mean() > 0.95  # 20 dB quieter is lower, not renormalised


def test_silence_is_zero_and_full_scale_sine_is_zero_db():
    lm = LogMel()
    assert not lm(np.zeros(SR, np.float32)).any()
    t = np.arange(SR) / SR
    mel = lm(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    frame = mel[:, mel.shape[1] // 2]
    assert abs(frame.max() - 1.0) < 0.02  # 0 dB
    centres = np.argmax(mel_filterbank(FeatureConfig()), axis=1) * SR / 2048
    assert abs(centres[frame.argmax()] - 1000) < 120


def test_matches_an_independent_torch_stft():
    """NumPy framing/FFT against torch.stft with the same window and centring."""
    cfg = FeatureConfig()
    lm = LogMel(cfg)
    x = np.random.default_rng(1).normal(0, 0.1, 2 * SR).astype(np.float32)
    ours = lm.power_spectrum(x)
    spec = (
        torch.stft(
            torch.from_numpy(x),
            cfg.n_fft,
            cfg.hop_length,
            window=torch.from_numpy(lm.window),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).numpy()
        * lm.scale
    )
    ref = (np.abs(spec) ** 2).astype(np.float32)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6)


def test_torch_features_agree_with_the_numpy_ones():
    """Training on a GPU computes the features with TorchLogMel; they must be the same features."""

    from partsim.model.features_torch import TorchLogMel

    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((3, 3 * 44100)) * 0.1).astype(np.float32)
    audio[1] *= 1e-3  # quiet
    audio[2, :60000] = 0.0  # part silence
    ref = LogMel()(audio)
    got = TorchLogMel()(torch.from_numpy(audio)).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-5


def test_banded_mel_product_equals_the_dense_filterbank():
    """LogMel applies the 1.5 %-non-zero filterbank block by block; the sums are the dense product's."""
    lm = LogMel()
    x = np.random.default_rng(3).normal(0, 0.2, (2, SR)).astype(np.float32)
    dense = np.einsum("mk,bkt->bmt", lm.filters.astype(np.float64), lm.power_spectrum(x).astype(np.float64))
    want = np.clip((10 * np.log10(np.maximum(dense, 1e-30)) + 100) / 100, 0, 1)
    assert np.abs(lm(x) - want).max() < 1e-6
    covered = np.zeros_like(lm.filters, dtype=bool)
    for a, b, lo, hi in mel_band_groups(lm.filters):
        covered[a:b, lo:hi] = True
    assert covered[lm.filters != 0].all()  # no weight is skipped


def _signals(n: int, seed: int) -> np.ndarray:
    """Noise and tonal signals at musical levels: ``(6, n)`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    chord = sum(
        np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6)) / h for f in (110.0, 138.6, 164.8) for h in range(1, 7)
    )
    return np.stack(
        [
            rng.uniform(-0.5, 0.5, n),  # white noise
            0.5 * chord / np.abs(chord).max() + 1e-4 * rng.standard_normal(n),  # a chord with harmonics
            0.25 * np.sin(2 * np.pi * rng.uniform(40, 60) * t),  # a bass tone
            0.2 * np.sin(2 * np.pi * 1000 * t) * (t > n / SR / 2),  # silence, then a tone
            1e-3 * np.sin(2 * np.pi * 5000 * t),  # a quiet tone (-60 dB)
            np.zeros(n),  # digital silence
        ]
    ).astype(np.float32)


# lengths: the shortest the model takes (32 frames), an odd length, 3 s + a part of a hop
LENGTHS = (31 * 512, 44100 + 333, 3 * 44100 + 100)


def test_in_graph_features_match_the_numpy_features():
    """GraphLogMel (the front end inside a PCM-input ONNX graph) computes LogMel's features:
    max abs difference <= 1e-4 on the [0, 1] scale, for the default radix-32 STFT and the plain
    DFT convolution (radix 1)."""
    from partsim.model.features_torch import GraphLogMel

    lm = LogMel()
    for radix in (32, 1):
        graph = GraphLogMel(radix=radix)
        for i, n in enumerate(LENGTHS):
            x = _signals(n, seed=i)
            want = lm(x)
            with torch.no_grad():
                got = graph(torch.from_numpy(x)).numpy()
            assert got.shape == want.shape == (6, 128, 1 + n // 512)
            assert np.abs(got - want).max() <= 1e-4, (radix, n, np.abs(got - want).max(axis=(1, 2)))
            assert not got[-1].any()  # silence is 0


def test_in_graph_features_in_onnxruntime_match_the_numpy_features(tmp_path):
    """The front end exported alone and run by onnxruntime (dynamic batch and length)."""
    import onnxruntime as ort

    from partsim.model.features_torch import GraphLogMel

    path = tmp_path / "frontend.onnx"
    example = torch.from_numpy(_signals(LENGTHS[1], seed=9)[:2])
    torch.onnx.export(
        GraphLogMel().eval(),
        (example,),
        str(path),
        input_names=["pcm"],
        output_names=["mel"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"pcm": {0: "batch", 1: "samples"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lm = LogMel()
    for i, n in enumerate(LENGTHS):
        x = _signals(n, seed=10 + i)
        got = session.run(None, {"pcm": x})[0]
        assert got.shape == (6, 128, 1 + n // 512)
        assert np.abs(got - lm(x)).max() <= 1e-4


def test_full_scale_pure_tones_agree_within_float32s_own_error():
    """A full-scale pure tone puts mel bands near the -100 dB floor whose float32 STFT error
    (any float32 FFT's, NumPy's included: it is 2e-4 from the exact float64 value there) exceeds
    1e-4 on the [0, 1] scale. Both stay within 1e-3 of each other and of the exact features."""
    from numpy.lib.stride_tricks import sliding_window_view

    from partsim.model.features_torch import GraphLogMel

    lm, graph = LogMel(), GraphLogMel()
    t = np.arange(3 * SR) / SR
    x = np.stack([np.sin(2 * np.pi * f * t) for f in (55.0, 440.0, 1000.0, 3000.0, 12345.0)]).astype(np.float32)
    padded = np.pad(x.astype(np.float64), [(0, 0), (1024, 1024)], mode="reflect")
    frames = sliding_window_view(padded, 2048, axis=-1)[:, ::512]
    power = np.abs(np.fft.rfft(frames * lm.window, axis=-1)) ** 2 * lm.scale**2
    exact = np.swapaxes(
        np.clip((10 * np.log10(np.maximum(power @ lm.filters.T.astype(np.float64), 1e-30)) + 100) / 100, 0, 1), -1, -2
    )
    with torch.no_grad():
        got = graph(torch.from_numpy(x)).numpy()
    numpy_features = lm(x)
    assert np.abs(got - numpy_features).max() <= 1e-3
    assert np.abs(got - exact).max() <= 1e-3 and np.abs(numpy_features - exact).max() <= 1e-3
