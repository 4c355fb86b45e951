"""Input features of the thesis (4.4.1): dB-scaled mel spectrogram, 128 bins, window 2048, hop 512,
44.1 kHz mono, normalised to [0, 1].

This module is the one definition, in NumPy, used by training, evaluation, ``partsim embed`` and
the embedding service. A model exported with PCM input (``partsim export``, the default since
csn-v3) computes the same features inside its ONNX graph
(:class:`~partsim.model.features_torch.GraphLogMel`, parity tested against this module); a
mel-input graph (csn-v1/v2) starts *after* this module. Services need no PyTorch either way.

Cost: the STFT is ``scipy.fft.rfft`` on frames laid out frequency-major, and the 128 x 1025
filterbank (1.5 % non-zero) is applied as a sparse product over its 2,014 non-zeros, not as a
dense one (the graph's front end uses the same sparsity in dense blocks, :func:`mel_band_groups`).

Normalisation: the thesis does not say how dB values are mapped to [0, 1]. A per-segment
min-max (or ``ref=max``) mapping would blow up near-silent input to full range, which defeats
the norm loss (a silent part must give a near-zero subspace). partsim therefore uses a fixed
reference: the STFT is scaled so that a full-scale sine peaks at 0 dB, and
``x = clip((dB + TOP_DB) / TOP_DB, 0, 1)`` with ``TOP_DB = 100``: digital silence maps to 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft
import scipy.sparse
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 22050.0
    top_db: float = 100.0

    def frames(self, num_samples: int) -> int:
        """Frames of a signal of ``num_samples`` (centred STFT: 1 + n // hop)."""
        return 1 + num_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


def _hz_to_mel(f: float | np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters with peak 1 (a tone in one band keeps its power)."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lower, centre, upper = mel_pts[:-2, None], mel_pts[1:-1, None], mel_pts[2:, None]
    up = (fft_freqs[None, :] - lower) / np.maximum(centre - lower, 1e-10)
    down = (upper - fft_freqs[None, :]) / np.maximum(upper - centre, 1e-10)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


MEL_GROUP = 8  # mel bands per banded product (see mel_band_groups)


def mel_band_groups(filters: np.ndarray, group: int = MEL_GROUP) -> list[tuple[int, int, int, int]]:
    """Contiguous blocks of the sparse filterbank: ``[(band_from, band_to, bin_from, bin_to)]``.

    The ``(n_mels, bins)`` triangular filterbank is 1.5 % non-zero; bands ``band_from..band_to``
    together are non-zero only on bins ``bin_from..bin_to``, so the mel product is a few small
    dense products instead of one ``n_mels x bins`` one (the same sums: the skipped weights are 0).
    """
    nonzero = filters != 0
    groups = []
    for a in range(0, len(filters), group):
        b = min(a + group, len(filters))
        cols = np.flatnonzero(nonzero[a:b].any(axis=0))
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)
        groups.append((a, b, lo, hi))
    return groups


class LogMel:
    """Audio ``(..., n)`` float -> normalised log-mel ``(..., n_mels, frames)`` float32 in [0, 1]."""

    def __init__(self, cfg: FeatureConfig | None = None):
        self.cfg = cfg or FeatureConfig()
        c = self.cfg
        n = np.arange(c.n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / c.n_fft)).astype(np.float32)  # periodic Hann
        self.scale = 2.0 / self.window.sum()  # full-scale sine -> magnitude 1
        self.filters = mel_filterbank(c)
        # the mel product over the filterbank's non-zeros only (CSR), the STFT scale folded in. A
        # sparse product is one single-threaded pass: no BLAS call, whose threads stall for whole
        # scheduler slices when the cores are busy with decoding and the model (measured: 0.2 ms
        # per 10-s segment against 2.4 ms dense with one BLAS thread and 24-32 ms with two).
        self._mel = scipy.sparse.csr_matrix(self.filters * np.float32(self.scale**2))

    def _spectrum(self, audio: np.ndarray) -> np.ndarray:
        """``(..., n)`` -> ``(..., n_fft // 2 + 1, frames)`` complex STFT (unscaled), centred frames,
        reflect padding; frequency before time, so that the mel product runs along contiguous rows."""
        c = self.cfg
        audio = np.asarray(audio, dtype=np.float32)
        pad = c.n_fft // 2
        if audio.shape[-1] <= pad:
            raise ValueError(f"audio of {audio.shape[-1]} samples is too short for an STFT of {c.n_fft}")
        padded = np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(pad, pad)], mode="reflect")
        frames = sliding_window_view(padded, c.n_fft, axis=-1)[..., :: c.hop_length, :]  # (..., T, n_fft), a view
        windowed = np.swapaxes(frames, -1, -2) * self.window[:, None]  # (..., n_fft, T)
        return scipy.fft.rfft(windowed, axis=-2, workers=-1)

    def power_spectrum(self, audio: np.ndarray) -> np.ndarray:
        """``(..., n)`` -> ``(..., n_fft // 2 + 1, frames)`` power spectrogram."""
        spec = self._spectrum(audio)
        return (np.square(spec.real) + np.square(spec.imag)) * np.float32(self.scale**2)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        spec = self._spectrum(audio)  # (..., F, T)
        power = np.square(spec.real)
        power += np.square(spec.imag)
        del spec
        mel = np.empty(power.shape[:-2] + (self.cfg.n_mels, power.shape[-1]), dtype=np.float32)
        flat_power, flat_mel = power.reshape(-1, *power.shape[-2:]), mel.reshape(-1, *mel.shape[-2:])
        for i in range(len(flat_power)):
            flat_mel[i] = self._mel @ flat_power[i]
        # 10 log10(max(mel, 1e-30)), then (dB + top) / top clipped to [0, 1]
        top = self.cfg.top_db
        np.maximum(mel, np.float32(1e-30), out=mel)
        np.log10(mel, out=mel)
        mel *= np.float32(10.0 / top)
        mel += np.float32(1.0)
        return np.clip(mel, 0.0, 1.0, out=mel)


def segment_starts(num_samples: int, segment: int, hop: int) -> np.ndarray:
    """Start samples of every full segment of length ``segment`` taken every ``hop`` samples."""
    if num_samples < segment:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, num_samples - segment + 1, hop, dtype=np.int64)


def mean_power(audio: np.ndarray) -> np.ndarray:
    """Time-average power over the last axis (thesis 3.3.1: silent when below 1e-4)."""
    a = np.asarray(audio, dtype=np.float64)
    return np.mean(a * a, axis=-1)


SILENCE_POWER = 1e-4
