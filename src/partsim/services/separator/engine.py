"""The separation pipeline: audio -> the model's rate and channels -> Demucs -> stems.

Shapes: decoded audio ``(n, C)`` float32 at :attr:`Engine.sample_rate` with ``C`` =
:attr:`Engine.channels`; stems ``(S, C, k)`` float32, ``S`` sources in the model's order.

The model comes from a Demucs model repository folder (:mod:`.models`: ``<sig>-<sha8>.th``
packages whose sha256 prefix is checked and bag ``.yaml`` files); nothing is ever downloaded.

Separation (:meth:`Engine.blocks`) is ``demucs.apply.apply_model(split=True)`` done here chunk by
chunk: the same split offsets, the same triangular overlap-add weights and the same padding from
the surrounding audio, but each span is handed out as soon as no later split touches it, so the
working memory is a few splits whatever the track's length, and a server can stream while it
separates. With ``shifts=0`` the result equals ``apply_model(model, mix, split=True)`` on the whole
track (tests check it); with shifts the random shifts are drawn per split rather than per track.
Splits shorter than the split length (a track's last ones, short tracks) are padded to it with the
audio around them (see :meth:`Engine._pad_short_splits`).
As in ``demucs.api.Separator``, the mix is normalised by its mean and standard deviation (of the
channel average over the whole decoded input) and the stems scaled back.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from partsim.errors import FailedPrecondition, InvalidArgument, Unavailable
from partsim.internal.v1 import separator_pb2
from partsim.v1 import types_pb2

from ..audio import decode_audio_message
from ..cancel import CancelToken
from .models import FullSplit, load_model, resolve_parts  # models sets HF_HUB_OFFLINE before demucs loads

log = logging.getLogger("partsim.separator")

FLAC_SUBTYPE = "PCM_24"
RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)
WARM_UP_SECONDS = 1.0


def flac_bytes(stem: np.ndarray, sample_rate: int) -> bytes:
    """``(C, k)`` float32 -> one 24-bit FLAC file (clipped to [-1, 1])."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(stem.T, -1.0, 1.0), sample_rate, format="FLAC", subtype=FLAC_SUBTYPE)
    return buf.getvalue()


class FlacStems:
    """One growing in-memory FLAC file per stem, written block by block (see :meth:`Engine.blocks`)."""

    def __init__(self, stems: int, channels: int, sample_rate: int):
        self._bufs = [io.BytesIO() for _ in range(stems)]
        self._files = [
            sf.SoundFile(b, "w", sample_rate, channels, format="FLAC", subtype=FLAC_SUBTYPE) for b in self._bufs
        ]

    def write(self, block: np.ndarray) -> None:
        """``(S, C, k)`` float32."""
        for f, stem in zip(self._files, block):
            f.write(np.clip(stem.T, -1.0, 1.0))

    def close(self) -> list[bytes]:
        for f in self._files:
            f.close()
        return [b.getvalue() for b in self._bufs]


@dataclass
class Metrics:
    seconds: Counter
    rtf: Histogram
    load: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> Metrics:
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            seconds=Counter(
                "partsim_separator_audio_seconds", "Seconds of audio separated (the separated span).", registry=registry
            ),
            rtf=Histogram(
                "partsim_separator_realtime_factor",
                "Separation time / audio duration, per request.",
                buckets=RTF_BUCKETS,
                registry=registry,
            ),
            load=Gauge(
                "partsim_separator_model_load_seconds", "Time to load the model and warm it up.", registry=registry
            ),
        )


class Engine:
    """A Demucs model from a repository folder, ready to separate (thread-safe: no state per call).

    Args:
        repo: the model repository folder; ``model``: the name in it.
        device: cpu or cuda (cuda: FailedPrecondition when torch sees no GPU).
        segment_seconds: split length (0: the model's own).
        overlap: overlap of neighbouring splits, [0, 1).
        shifts: default random-shift passes; ``max_shifts``: the most a request may ask for.
        parts: source -> catalog part overrides (see :func:`resolve_parts`).
        threads: torch intra-op threads (0: leave torch's default).
    """

    def __init__(
        self,
        repo: str | Path,
        model: str,
        device: str = "cpu",
        segment_seconds: float = 0.0,
        overlap: float = 0.25,
        shifts: int = 0,
        max_shifts: int = 4,
        max_audio_seconds: float = 900.0,
        parts: dict[str, str] | None = None,
        threads: int = 0,
        registry: CollectorRegistry | None = None,
    ):
        import torch

        t0 = time.perf_counter()
        self.metrics = Metrics.create(registry)
        if device == "cuda" and not torch.cuda.is_available():
            raise FailedPrecondition(
                f"device=cuda, but torch {torch.__version__} sees no CUDA device "
                f"(torch.cuda.is_available() is False); use device=cpu"
            )
        if device not in ("cpu", "cuda"):
            raise InvalidArgument(f"device must be cpu or cuda, got {device!r}")
        if not 0 <= overlap < 1:
            raise InvalidArgument(f"overlap must be within [0, 1), got {overlap:g}")
        if threads > 0:
            torch.set_num_threads(threads)
        self.repo, self.name, self.device = Path(repo), model, device
        self.model = load_model(self.repo, model).to(device)
        self.sources: list[str] = list(self.model.sources)
        self.sample_rate = int(self.model.samplerate)
        self.channels = int(self.model.audio_channels)
        self.parts = resolve_parts(self.sources, parts or {})
        self.overlap = float(overlap)
        self.segment_seconds, self._segment_arg = self._segment(segment_seconds)
        self.segment_length = int(self.sample_rate * self.segment_seconds)
        self.stride = int((1 - self.overlap) * self.segment_length)
        if self.stride < 1:
            raise InvalidArgument(
                f"segment_seconds {self.segment_seconds:g} with overlap {self.overlap:g} leaves "
                f"no stride between splits"
            )
        self._pad_short_splits()
        self.max_shifts = int(max_shifts)
        self.shifts = self.check_shifts(shifts)
        self.max_audio_seconds = float(max_audio_seconds)
        self.load_seconds = time.perf_counter() - t0

    def _segment(self, seconds: float) -> tuple[float, float | None]:
        """The split length in seconds, and the ``segment`` argument apply_model gets (None: the model's)."""
        from demucs.apply import BagOfModels
        from demucs.htdemucs import HTDemucs

        models = list(self.model.models) if isinstance(self.model, BagOfModels) else [self.model]
        # demucs models declare segment as a plain attribute, which torch types as Tensor | Module
        segments = [(float(m.segment), isinstance(m, HTDemucs)) for m in models]  # type: ignore[arg-type]
        own = min(s for s, _ in segments)
        limit = min((s for s, htdemucs in segments if htdemucs), default=math.inf)
        if seconds and seconds > limit:
            raise InvalidArgument(
                f"segment_seconds {seconds:g} is longer than the {limit:g} s this transformer "
                f"model ({self.name}) was trained on"
            )
        return (float(seconds), float(seconds)) if seconds else (own, None)

    def _pad_short_splits(self) -> None:
        """Models without ``valid_length`` (HDemucs) get one that pads every split to the full split
        length, so apply_model pads a short split (the last ones of any track, and short tracks) with the
        audio around it, then trims: HDemucs fails on splits of a few samples, and sees the length it was
        trained on. HTDemucs and Demucs keep their own."""
        from demucs.apply import BagOfModels

        models = list(self.model.models) if isinstance(self.model, BagOfModels) else [self.model]
        for m in models:
            if not hasattr(m, "valid_length"):
                m.valid_length = FullSplit(self.segment_length)

    def check_shifts(self, shifts: int | None) -> int:
        if shifts is None:
            return self.shifts
        if not 0 <= shifts <= self.max_shifts:
            raise InvalidArgument(f"shifts must be within 0..{self.max_shifts}, got {shifts}")
        return int(shifts)

    # -- description -------------------------------------------------------------------------
    def stem_infos(self) -> list[types_pb2.StemInfo]:
        return [types_pb2.StemInfo(name=s, part=self.parts[s]) for s in self.sources]

    def model_info(self) -> separator_pb2.SeparatorModel:
        return separator_pb2.SeparatorModel(
            name=self.name,
            sources=self.sources,
            sample_rate=self.sample_rate,
            channels=self.channels,
            parts=self.parts,
            segment_seconds=self.segment_seconds,
            overlap=self.overlap,
            default_shifts=self.shifts,
            max_shifts=self.max_shifts,
            max_audio_seconds=self.max_audio_seconds,
        )

    # -- request steps -------------------------------------------------------------------------
    def to_model_channels(self, audio: np.ndarray) -> np.ndarray:
        """``(n, c)`` -> ``(n, C)``: averaged to mono for a mono model, mono copied for a stereo one; more
        channels than the model takes are averaged to mono first."""
        c, want = audio.shape[1], self.channels
        if c == want:
            return np.ascontiguousarray(audio, dtype=np.float32)
        mono = audio.mean(axis=1, keepdims=True, dtype=np.float32) if c > 1 else audio
        return np.ascontiguousarray(np.repeat(mono, want, axis=1), dtype=np.float32)

    def decode(self, audio: types_pb2.Audio) -> np.ndarray:
        """An ``Audio`` message -> ``(n, C)`` float32 at :attr:`sample_rate` in the model's channels."""
        data = decode_audio_message(audio, self.sample_rate, mono=False, max_seconds=self.max_audio_seconds)
        return self.to_model_channels(data)

    @staticmethod
    def check_times(start_seconds: float | None, end_seconds: float | None) -> None:
        """Cheap checks of a requested span before decoding."""
        for name, v in (("start_seconds", start_seconds), ("end_seconds", end_seconds)):
            if v is not None and (not math.isfinite(v) or v < 0):
                raise InvalidArgument(f"{name} must be a finite number >= 0, got {v:g}")
        if start_seconds is not None and end_seconds is not None and end_seconds <= start_seconds:
            raise InvalidArgument(f"end_seconds ({end_seconds:g}) must be after start_seconds ({start_seconds:g})")

    def span(
        self, frames: int, start_seconds: float | None = None, end_seconds: float | None = None
    ) -> tuple[int, int]:
        """The frames ``[a, b)`` to separate of ``frames``; an end past the audio is the audio's end."""
        self.check_times(start_seconds, end_seconds)
        sr = self.sample_rate
        a = 0 if start_seconds is None else int(round(start_seconds * sr))
        b = frames if end_seconds is None else min(frames, int(round(end_seconds * sr)))
        if a >= frames:
            raise InvalidArgument(
                f"start_seconds {start_seconds:g} is at or past the end of the audio ({frames / sr:.3f} s)"
            )
        if b <= a:
            raise InvalidArgument(f"the span {start_seconds or 0:g}..{end_seconds:g} s holds no sample at {sr} Hz")
        return a, b

    def blocks(
        self,
        audio: np.ndarray,
        start: int = 0,
        end: int | None = None,
        shifts: int | None = None,
        token: CancelToken | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Separate frames ``[start, end)`` of ``audio`` ``(n, C)``; yields ``(offset, stems)`` with
        ``stems`` ``(S, C, k)`` float32 covering ``[start + offset, start + offset + k)``, in order, without
        gaps. The audio outside the span pads the splits at its edges (as apply_model pads from the track).

        Raises:
            Unavailable: ``token`` was cancelled.
        """
        import torch
        from demucs.apply import TensorChunk, apply_model

        n = len(audio)
        end = n if end is None else end
        assert 0 <= start < end <= n and audio.ndim == 2 and audio.shape[1] == self.channels
        shifts = self.check_shifts(shifts)
        ref = audio[:, 0] if self.channels == 1 else audio.mean(axis=1, dtype=np.float32)  # (n,)
        mix = torch.from_numpy(np.ascontiguousarray(audio.T))[None]  # (1, C, n), shares memory
        ref_t = torch.from_numpy(ref)
        mean = ref_t.mean()
        std = (ref_t.std() if n > 1 else torch.zeros(())) + 1e-8
        mix = (mix - mean) / std
        length, seg, stride = end - start, self.segment_length, self.stride
        span = TensorChunk(mix, start, length)
        weight = torch.cat([torch.arange(1, seg // 2 + 1), torch.arange(seg - seg // 2, 0, -1)])
        weight = (weight / weight.max()) ** 1.0  # apply_model's weights (transition_power 1)
        offsets = list(range(0, length, stride))
        acc = torch.zeros(len(self.sources), self.channels, 0)
        wsum = torch.zeros(0)
        base = 0  # acc covers [base, base + acc length) of the span
        with torch.no_grad():
            for i, offset in enumerate(offsets):
                if token is not None and token.cancelled:
                    raise Unavailable("the request was cancelled")
                chunk = TensorChunk(span, offset, seg)
                out = apply_model(
                    self.model,
                    chunk,
                    shifts=shifts,
                    split=False,
                    overlap=self.overlap,
                    device=self.device,
                    segment=self._segment_arg,
                )[0].cpu()  # (S, C, k)
                k = out.shape[-1]
                grow = offset + k - base - acc.shape[-1]
                if grow > 0:
                    acc = torch.cat([acc, torch.zeros(*acc.shape[:2], grow)], dim=-1)
                    wsum = torch.cat([wsum, torch.zeros(grow)])
                acc[..., offset - base : offset - base + k] += weight[:k] * out
                wsum[offset - base : offset - base + k] += weight[:k]
                done = (offsets[i + 1] if i + 1 < len(offsets) else length) - base
                if done > 0:
                    block = acc[..., :done] / wsum[:done]
                    yield base, (block * std + mean).numpy()
                    acc, wsum, base = acc[..., done:].clone(), wsum[done:].clone(), base + done

    def separate(
        self,
        audio: np.ndarray,
        start: int = 0,
        end: int | None = None,
        shifts: int | None = None,
        token: CancelToken | None = None,
    ) -> np.ndarray:
        """All of :meth:`blocks` as one ``(S, C, end - start)`` array (what :meth:`stream` sends)."""
        t0 = time.perf_counter()
        end = len(audio) if end is None else end
        parts = [block for _, block in self.blocks(audio, start, end, shifts, token)]
        self.observe(end - start, time.perf_counter() - t0)
        return np.concatenate(parts, axis=-1)

    def observe(self, frames: int, seconds: float) -> None:
        audio_s = frames / self.sample_rate
        self.metrics.seconds.inc(audio_s)
        self.metrics.rtf.observe(seconds / audio_s)

    def stream(
        self,
        audio: np.ndarray,
        start: int,
        end: int,
        shifts: int,
        encoding: int,
        chunk_bytes: int,
        token: CancelToken | None = None,
    ) -> Iterator[types_pb2.StemChunk]:
        """The stems of ``[start, end)`` as ``StemChunk`` messages of at most ``chunk_bytes`` bytes of data.

        FLOAT32LE: interleaved little-endian float32 frames, all stems' chunks in time order as each span
        is done. FLAC: once all is done, one 24-bit FLAC file per stem, stem after stem.
        """
        t0 = time.perf_counter()
        offsets = [0] * len(self.sources)

        def pieces(i: int, data: bytes) -> Iterator[types_pb2.StemChunk]:
            view = memoryview(data)
            for j in range(0, len(data), chunk_bytes):
                piece = bytes(view[j : j + chunk_bytes])
                yield types_pb2.StemChunk(stem=i, offset=offsets[i], data=piece)
                offsets[i] += len(piece)

        if encoding == types_pb2.STEM_ENCODING_FLAC:
            flac = FlacStems(len(self.sources), self.channels, self.sample_rate)
            for _, block in self.blocks(audio, start, end, shifts, token):
                flac.write(block)
            files = flac.close()
            self.observe(end - start, time.perf_counter() - t0)
            for i, data in enumerate(files):
                yield from pieces(i, data)
            return
        for _, block in self.blocks(audio, start, end, shifts, token):
            for i, stem in enumerate(block):
                yield from pieces(i, np.ascontiguousarray(stem.T, dtype="<f4").tobytes())
        self.observe(end - start, time.perf_counter() - t0)

    def warm_up(self) -> None:
        """One short silent separation (checks the model runs; pays first-call costs before serving)."""
        t0 = time.perf_counter()
        silent = np.zeros((int(WARM_UP_SECONDS * self.sample_rate), self.channels), np.float32)
        out = np.concatenate([b for _, b in self.blocks(silent, shifts=0)], axis=-1)
        if out.shape != (len(self.sources), self.channels, len(silent)) or not np.all(np.isfinite(out)):
            raise FailedPrecondition(
                f"separator model {self.name!r} from {self.repo}: a warm-up separation gave "
                f"{'non-finite values' if out.shape[-1] == len(silent) else out.shape}"
            )
        self.load_seconds += time.perf_counter() - t0
        self.metrics.load.set(self.load_seconds)
