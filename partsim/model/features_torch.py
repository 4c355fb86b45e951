"""The log-mel features of :mod:`partsim.model.features` in PyTorch, for training on a GPU.

Kept apart so that :mod:`features` (used by the services) needs no PyTorch. Filters and window
come from :class:`features.LogMel`, so there is one definition of the features.
"""

from __future__ import annotations

import torch

from .features import FeatureConfig, LogMel


class TorchLogMel(torch.nn.Module):
    """The same features as :class:`LogMel`, in PyTorch, on any device (GPU training).

    ``(B, n)`` float audio -> ``(B, n_mels, frames)`` float32 in [0, 1]. Agrees with
    :class:`LogMel` to float32 rounding (tested); inference keeps the NumPy one.
    """

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
        spec = torch.stft(audio.float(), c.n_fft, c.hop_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # (B, F, T)
        power = (spec.real ** 2 + spec.imag ** 2) * (self.scale ** 2)
        mel = torch.matmul(self.filters, power)  # (B, n_mels, T)
        db = 10.0 * torch.log10(mel.clamp_min(1e-30))
        return ((db + c.top_db) / c.top_db).clamp(0.0, 1.0)
