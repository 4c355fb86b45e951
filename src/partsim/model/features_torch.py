"""The log-mel features of :mod:`partsim.model.features` in PyTorch, for training on a GPU.

Kept apart so that :mod:`features` (used by the services) needs no PyTorch. Filters and window
come from :class:`features.LogMel`, so there is one definition of the features. Two modules:
:class:`TorchLogMel` (``torch.stft``, for training on a GPU) and :class:`GraphLogMel` (the same
features as exportable ops, the front end ``partsim export`` puts inside the ONNX graph).
"""

from __future__ import annotations

import numpy as np
import torch

from .features import FeatureConfig, LogMel, mel_band_groups


class TorchLogMel(torch.nn.Module):
    """The same features as :class:`LogMel`, in PyTorch, on any device (GPU training).

    ``(B, n)`` float audio -> ``(B, n_mels, frames)`` float32 in [0, 1]. Agrees with
    :class:`LogMel` to float32 rounding (tested); inference keeps the NumPy one.
    """

    # buffers (register_buffer), declared so that they read as tensors rather than Module.__getattr__'s union
    window: torch.Tensor
    filters: torch.Tensor

    def __init__(self, cfg: FeatureConfig | None = None):
        super().__init__()
        ref = LogMel(cfg)
        self.cfg = ref.cfg
        self.register_buffer("window", torch.from_numpy(ref.window), persistent=False)
        self.register_buffer("filters", torch.from_numpy(ref.filters), persistent=False)
        self.scale = float(ref.scale)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if audio.shape[-1] <= c.n_fft // 2:
            raise ValueError(f"audio of {audio.shape[-1]} samples is too short for an STFT of {c.n_fft}")
        spec = torch.stft(
            audio.float(),
            c.n_fft,
            c.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, F, T)
        power = (spec.real**2 + spec.imag**2) * (self.scale**2)
        mel = torch.matmul(self.filters, power)  # (B, n_mels, T)
        db = 10.0 * torch.log10(mel.clamp_min(1e-30))
        return ((db + c.top_db) / c.top_db).clamp(0.0, 1.0)


class GraphLogMel(torch.nn.Module):
    """The features of :class:`LogMel` as plain tensor ops that export to ONNX: the model's front end.

    ``(B, n)`` float32 PCM -> ``(B, n_mels, frames)`` in [0, 1], with :class:`LogMel`'s framing
    (centred frames, reflect padding by ``n_fft // 2``, periodic Hann window, the same scale,
    filterbank, dB floor ``1e-30``, ``top_db`` and clamp). Used by ``partsim export`` so that the
    ONNX graph takes PCM and a GPU runtime computes the features on the GPU.

    The STFT is a strided Conv1d whose kernels are the windowed DFT basis (real and imaginary
    parts). With ``radix=1`` it is the plain DFT: one kernel of ``n_fft`` taps per output
    (real, imaginary) x bin, stride ``hop_length``, ``n_fft`` x ``n_fft`` multiply-adds per frame. The
    default ``radix=32`` splits the same DFT once, Cooley-Tukey style (``n_fft = 32 x 64``): the
    signal, read as 32 interleaved phases ``n = 32 m + r``, goes through a grouped strided Conv1d
    (one group per phase ``r``, 64 taps: the window times the DFT basis ``exp(-2 pi i n k1 / n_fft)``,
    twiddle factor included), and one MatMul with the 32-point DFT over the phases finishes it,
    ``X[k1 + 64 k2] = sum_r W_32^(r k2) Z_r[k1]``. Same transform, about a tenth of the
    multiply-adds; it is also closer to the exact transform in float32 (shorter sums).
    The mel product runs over the filterbank's non-zero blocks only (:func:`mel_band_groups`).
    """

    # buffers (register_buffer), declared so that they read as tensors rather than Module.__getattr__'s union;
    # phase_dft exists only when radix > 1
    stft_kernel: torch.Tensor
    phase_dft: torch.Tensor

    def __init__(self, cfg: FeatureConfig | None = None, radix: int = 32):
        super().__init__()
        ref = LogMel(cfg)
        c = self.cfg = ref.cfg
        n_fft, hop = c.n_fft, c.hop_length
        if radix < 1 or n_fft % radix or hop % radix:
            raise ValueError(f"radix must divide n_fft ({n_fft}) and hop_length ({hop}), got {radix}")
        self.radix = radix
        bins = n_fft // 2 + 1
        taps = n_fft // radix  # N1: kernel taps of one phase
        k1 = np.arange(taps if radix > 1 else bins)  # output bins of stage 1
        self.k2 = (n_fft // 2) // taps + 1 if radix > 1 else 1  # stage-2 outputs needed for bins 0..n_fft/2
        window = ref.window.astype(np.float64) * ref.scale  # the scale folded in: power needs no factor
        n = radix * np.arange(taps)[None, None, :] + np.arange(radix)[:, None, None]  # (phase r, 1, tap m)
        basis = window[n] * np.exp(-2j * np.pi * n * k1[None, :, None] / n_fft)  # (r, k1, m)
        kernel = np.concatenate([basis.real, basis.imag], axis=1)  # out channels (r, re|im, k1)
        self.register_buffer("stft_kernel", _f32(kernel.reshape(-1, 1, taps)), persistent=False)
        if radix > 1:
            # rows (k2, re|im) x columns (r, re|im): the complex 32-point DFT over the phases
            w = np.exp(-2j * np.pi * np.outer(np.arange(self.k2), np.arange(radix)) / radix)  # (k2, r)
            dft = np.zeros((self.k2, 2, radix, 2))
            dft[:, 0, :, 0], dft[:, 0, :, 1] = w.real, -w.imag
            dft[:, 1, :, 0], dft[:, 1, :, 1] = w.imag, w.real
            self.register_buffer("phase_dft", _f32(dft.reshape(2 * self.k2, 2 * radix)), persistent=False)
        self.taps, self.bins1 = taps, len(k1)
        self.bands = [(a, b, lo, hi) for a, b, lo, hi in mel_band_groups(ref.filters)]
        for i, (a, b, lo, hi) in enumerate(self.bands):
            self.register_buffer(
                f"mel_{i}", torch.from_numpy(np.ascontiguousarray(ref.filters[a:b, lo:hi])), persistent=False
            )

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        c, r = self.cfg, self.radix
        n_fft, hop = c.n_fft, c.hop_length
        batch = pcm.shape[0]
        frames = pcm.shape[1] // hop + 1
        x = torch.nn.functional.pad(pcm.float(), (n_fft // 2, n_fft // 2), mode="reflect")
        x = x[:, : (frames - 1) * hop + n_fft]  # exactly the samples the frames cover
        x = x.reshape(batch, -1, r).transpose(1, 2)  # (B, r phases, samples / r)
        z = torch.nn.functional.conv1d(x, self.stft_kernel, stride=hop // r, groups=r)  # (B, r*2*k1, T)
        if r > 1:
            z = torch.matmul(self.phase_dft, z.reshape(batch, 2 * r, -1))  # (B, k2*2, k1*T)
            z = z * z
            power = (z[:, 0::2] + z[:, 1::2]).reshape(batch, -1, frames)  # (B, k2*k1 bins, T), bin k1 + taps*k2
        else:
            z = z * z
            power = z[:, : self.bins1] + z[:, self.bins1 :]  # (B, bins, T)
        mel = torch.cat(
            [torch.matmul(getattr(self, f"mel_{i}"), power[:, lo:hi]) for i, (_, _, lo, hi) in enumerate(self.bands)],
            dim=1,
        )  # (B, n_mels, T)
        db = torch.log10(mel.clamp_min(1e-30))
        return (db * (10.0 / c.top_db) + 1.0).clamp(0.0, 1.0)


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
