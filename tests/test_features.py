"""The log-mel features: shapes, scale and an independent STFT reference."""

from __future__ import annotations

import numpy as np
import torch

from partsim.model.features import FeatureConfig, LogMel, mel_filterbank

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
    spec = torch.stft(torch.from_numpy(x), cfg.n_fft, cfg.hop_length, window=torch.from_numpy(lm.window),
                      center=True, pad_mode="reflect", return_complex=True).numpy() * lm.scale
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
