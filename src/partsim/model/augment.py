"""Training-time augmentation of stems before they are mixed (csn-v3).

The corpus renders each part with General MIDI SoundFonts and no effects; real recordings have
other levels, equalisation, distortion, compression, rooms, tempi and noise floors. Each stem
window of a pseudo piece is changed on its own, before the mix is summed, so the model learns
that a bass through a darker amplifier in a small room is still the same bass:

=================  ===========================================================================
gain               uniform ±``gain_db`` dB
speed              resampled by a factor in [1 - speed, 1 + speed] (pitch and tempo together)
EQ                 a tilt of ±``tilt_db`` dB across 20 Hz..20 kHz and, with ``band_p``, one
                   Gaussian bell in log frequency (100 Hz..8 kHz, ±``band_db`` dB, 0.3..1.5
                   octaves wide)
saturation         with ``drive_p`` (x 2 for bass and guitar): ``tanh(d x) / tanh(d)`` on the
                   peak-normalised stem, drive d in 1.5..6
compression        with ``comp_p`` (x 2 for bass and guitar): a feed-forward compressor on the
                   23-ms RMS envelope, threshold 6..20 dB below the loudest frame, ratio 2..6
reverb             with ``reverb_p``: a synthetic room, exponentially decaying noise of RT60
                   0.1..0.6 s, wet level 0.05..0.35
noise              with ``noise_p``, added to the *mix*: white or pink noise 70..45 dB below
                   the mix's RMS
=================  ===========================================================================

Work is done only on the augmented, non-silent rows; EQ is one FFT, reverb an FFT convolution
(truncated to the window). Everything is drawn from a :class:`torch.Generator` seeded by the
caller, so a seed gives the same audio on a given device (tested). Shapes: stems ``(N, n + extra)`` in, ``(N, n)`` out; mixes ``(N, n)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from partsim.data.taxonomy import PARTS

SAMPLE_RATE = 44100
HEAVY_PARTS = ("bass", "guitar")  # saturation and compression are twice as likely for these


@dataclass
class AugmentConfig:
    p: float = 0.5  # probability that a stem is augmented at all
    gain_db: float = 6.0
    speed: float = 0.03
    tilt_db: float = 4.0
    band_p: float = 0.4
    band_db: float = 6.0
    drive_p: float = 0.1
    comp_p: float = 0.1
    reverb_p: float = 0.15
    reverb_max_seconds: float = 0.6
    noise_p: float = 0.15

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def _chance(gen: torch.Generator, n: int, p: float, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


class Augmenter:
    """Per-stem and per-mix augmentation; see the module docstring for the chain."""

    def __init__(
        self, cfg: AugmentConfig | None = None, parts: list[str] | None = None, sample_rate: int = SAMPLE_RATE
    ):
        self.cfg = cfg or AugmentConfig()
        self.parts = list(parts or PARTS)
        self.sr = sample_rate

    def extra(self, segment: int) -> int:
        """Samples a stem window needs beyond ``segment`` for the fastest speed change."""
        return int(math.ceil(segment * self.cfg.speed)) + 2 if self.cfg.speed > 0 else 0

    # ------------------------------------------------------------------------------------
    def stems(self, x: torch.Tensor, part: int, segment: int, gen: torch.Generator) -> torch.Tensor:
        """Augment ``(N, segment + extra)`` windows of one part -> ``(N, segment)``.

        Every random number is drawn for all N rows, so a row's augmentation depends only on the
        seed and its position; the work is done only on rows that are augmented and not silent.
        """
        c, dev = self.cfg, x.device
        n = x.shape[0]
        heavy = 2.0 if self.parts[part] in HEAVY_PARTS else 1.0
        on = _chance(gen, n, c.p, dev)
        r = _uniform(gen, n, 1 - c.speed, 1 + c.speed, dev)
        drive = _chance(gen, n, c.drive_p * heavy, dev)
        d = _uniform(gen, n, 1.5, 6.0, dev)
        comp = _chance(gen, n, c.comp_p * heavy, dev)
        thr_db = _uniform(gen, n, 6.0, 20.0, dev)
        ratio = _uniform(gen, n, 2.0, 6.0, dev)
        tilt = _uniform(gen, n, -c.tilt_db, c.tilt_db, dev)
        band = _chance(gen, n, c.band_p, dev)
        fc = torch.exp(_uniform(gen, n, math.log(100.0), math.log(8000.0), dev))
        width = _uniform(gen, n, 0.3, 1.5, dev)
        bgain = torch.where(band, _uniform(gen, n, -c.band_db, c.band_db, dev), torch.zeros(n, device=dev))
        verb = _chance(gen, n, c.reverb_p, dev)
        rt60 = _uniform(gen, n, 0.1, c.reverb_max_seconds, dev)
        wet = _uniform(gen, n, 0.05, 0.35, dev)
        g = _uniform(gen, n, -c.gain_db, c.gain_db, dev)
        ir_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=dev).item())
        out = x[:, :segment].clone()
        rows = torch.nonzero(on & (x.abs().amax(dim=1) > 0)).flatten()
        if len(rows) == 0:
            return out
        y = self._resample(x[rows], r[rows], segment)
        for mask, fn in (
            (drive, lambda v, i: self._saturate(v, d[i])),
            (comp, lambda v, i: self._compress(v, thr_db[i], ratio[i])),
        ):
            sel = torch.nonzero(mask[rows]).flatten()
            if len(sel):
                y[sel] = fn(y[sel], rows[sel])
        y = self._equalise(y, tilt[rows], fc[rows], width[rows], bgain[rows])
        sel = torch.nonzero(verb[rows]).flatten()
        if len(sel):
            ir_gen = torch.Generator(device=dev)
            ir_gen.manual_seed(ir_seed)
            y[sel] = self._reverb(y[sel], rt60[rows[sel]], wet[rows[sel]], ir_gen)
        out[rows] = y * (10.0 ** (g[rows] / 20.0))[:, None]
        return out

    def mix(self, audio: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Add a low noise floor to ``(N, n)`` mixes (white or pink, 45..70 dB under the mix)."""
        n, length = audio.shape
        dev = audio.device
        add = _chance(gen, n, self.cfg.noise_p, dev)
        level_db = _uniform(gen, n, -70.0, -45.0, dev)
        pink = _chance(gen, n, 0.5, dev)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=dev).item())
        rows = torch.nonzero(add).flatten()
        if len(rows) == 0:
            return audio
        noise_gen = torch.Generator(device=dev)
        noise_gen.manual_seed(noise_seed)
        noise = torch.randn(len(rows), length, generator=noise_gen, device=dev)
        sel = torch.nonzero(pink[rows]).flatten()
        if len(sel):
            spec = torch.fft.rfft(noise[sel], dim=1)
            f = torch.arange(spec.shape[1], device=dev, dtype=torch.float32).clamp_min(1.0)
            noise[sel] = torch.fft.irfft(spec / f.sqrt(), n=length, dim=1)
        noise = noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
        rms = audio[rows].pow(2).mean(dim=1, keepdim=True).sqrt()
        out = audio.clone()
        out[rows] = audio[rows] + noise * rms * (10.0 ** (level_db[rows] / 20.0))[:, None]
        return out

    # ------------------------------------------------------------------------------------
    @staticmethod
    def _resample(x: torch.Tensor, r: torch.Tensor, segment: int) -> torch.Tensor:
        pos = torch.arange(segment, device=x.device, dtype=torch.float32)[None, :] * r[:, None]
        pos = pos.clamp(max=x.shape[1] - 1.001)
        i0 = pos.floor().long()
        frac = pos - i0
        a = torch.gather(x, 1, i0)
        b = torch.gather(x, 1, i0 + 1)
        return a + (b - a) * frac

    @staticmethod
    def _saturate(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        peak = y.abs().amax(dim=1, keepdim=True).clamp_min(1e-6)
        d = d[:, None]
        return torch.tanh(d * y / peak) / torch.tanh(d) * peak

    def _compress(self, y: torch.Tensor, thr_db: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        frame = 1024
        n, length = y.shape
        pad = (-length) % frame
        env = torch.nn.functional.pad(y, (0, pad)).view(n, -1, frame).pow(2).mean(dim=2).add(1e-12).sqrt()
        env_db = 20.0 * torch.log10(env)
        thr = env_db.amax(dim=1, keepdim=True) - thr_db[:, None]
        over = (env_db - thr).clamp_min(0.0)
        gain_db = -over * (1.0 - 1.0 / ratio[:, None])
        gain = 10.0 ** (gain_db / 20.0)
        gain = torch.nn.functional.interpolate(gain[:, None, :], size=length + pad, mode="linear", align_corners=False)[
            :, 0, :length
        ]
        # make-up gain brings the loudest frame back to where it was
        return y * gain / gain.amax(dim=1, keepdim=True).clamp_min(1e-6)

    def _equalise(self, y, tilt, fc, width, bgain) -> torch.Tensor:
        """Tilt and bell in one real gain curve (computed on 1,024 points, then interpolated)."""
        n, length = y.shape
        spec = torch.fft.rfft(y, dim=1)
        coarse = torch.linspace(0.0, self.sr / 2, 1024, device=y.device)
        octaves = torch.log2(coarse.clamp(20.0, 20000.0) / 632.0)  # 632 Hz: log centre of 20 Hz..20 kHz
        gain_db = tilt[:, None] * octaves[None, :] / 5.0  # ±tilt at the ends of the ~10-octave range
        bell = torch.exp(
            -0.5 * ((torch.log2(coarse.clamp_min(1.0))[None, :] - torch.log2(fc)[:, None]) / width[:, None]) ** 2
        )
        gain = 10.0 ** ((gain_db + bgain[:, None] * bell) / 20.0)
        gain = torch.nn.functional.interpolate(gain[:, None, :], size=spec.shape[1], mode="linear", align_corners=True)[
            :, 0
        ]
        return torch.fft.irfft(spec * gain, n=length, dim=1)

    def _reverb(self, y, rt60, wet, gen) -> torch.Tensor:
        """Dry plus a synthetic room: exponentially decaying noise (-60 dB at ``rt60``), FFT convolution."""
        n, length = y.shape
        ir_len = int(self.cfg.reverb_max_seconds * self.sr)
        t = torch.arange(ir_len, device=y.device, dtype=torch.float32) / self.sr
        ir = torch.randn(n, ir_len, generator=gen, device=y.device) * torch.exp(-6.9078 * t[None, :] / rt60[:, None])
        ir = ir / ir.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
        n_fft = length + ir_len
        wet_part = torch.fft.irfft(
            torch.fft.rfft(y, n=n_fft, dim=1) * torch.fft.rfft(ir, n=n_fft, dim=1), n=n_fft, dim=1
        )[:, :length]
        return y + wet[:, None] * wet_part
