"""The embedding pipeline: audio -> mono at the model's rate -> segments -> [log-mel] -> batcher -> vectors.

Shapes: audio ``(n,)`` float32 at ``sample_rate``; ``N`` segments of ``seg`` samples every ``hop``
samples (a short tail is dropped, as ``partsim embed`` does); model input: the segments
themselves ``(N, seg)`` when the manifest says ``onnx.input: "pcm"`` (the graph computes the
features: on the GPU with device=cuda), else mel ``(N, n_mels, frames)`` by
:class:`partsim.model.features.LogMel` (csn-v1/v2); model output ``(N, P, D)`` raw subspace
vectors; norms ``(N, P)``; presence ``(N, P)`` bool.

Presence: with ``"presence": {"norm_bias": [b_1..b_P]}`` in the manifest a part is present when
``log(norm) + b_j > 0`` (eq. 4.4, ``sigmoid(log norm + b) > 0.5``); a manifest without it (the
csn-v1) falls back to ``norm > PRESENCE_NORM_FALLBACK`` (1e-3).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from prometheus_client import CollectorRegistry

from partsim.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from partsim.model.inference import OnnxEmbedder, session_options
from partsim.v1 import types_pb2

from ..audio import decode_audio_message
from ..cancel import CancelToken
from .batcher import Batcher

log = logging.getLogger("partsim.embedder")

DEFAULT_SEGMENT_SECONDS = 10.0  # EmbedRequest: 0 takes 10 s, hop = segment
MAX_SEGMENT_SECONDS = 600.0  # as ``partsim embed``
PRESENCE_NORM_FALLBACK = 1e-3
FEATURE_CHUNK_SAMPLES = 8 * 10 * 44100  # audio per LogMel call (bounds the STFT's temporary memory)
MAX_INFLIGHT_CHUNKS = 4  # feature chunks of one request waiting in the batcher (bounds mel memory)


@dataclass
class Embedding:
    """One request's result: ``N`` segments of ``P`` parts."""

    starts: np.ndarray  # (N,) start sample
    segment_samples: int
    vectors: np.ndarray  # (N, P, D) float32, raw subspace vectors
    norms: np.ndarray  # (N, P) float32
    present: np.ndarray  # (N, P) bool
    duration_seconds: float


def make_session(onnx_path: Path, device: str = "cpu", intra_op_threads: int = 0, spinning: bool = False):
    """An onnxruntime session on ``device`` (cpu|cuda); FailedPrecondition when CUDA is asked for but absent.

    Idle pool threads do not spin (``spinning`` False, see :func:`session_options`). On CUDA,
    TF32 is off: the STFT inside a PCM-input graph needs float32's precision (TF32 would put
    its noise floor near -60 dB, inside the features' 100-dB range).
    """
    import onnxruntime as ort

    opts = session_options(intra_op_threads, spinning)
    provider_options = None
    if device == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise FailedPrecondition(
                f"device=cuda, but this onnxruntime {ort.__version__} has no "
                f"CUDAExecutionProvider (it has {', '.join(available)}); install "
                f"onnxruntime-gpu (pip install 'partsim[gpu]') or use device=cpu"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        provider_options = [{"use_tf32": "0"}, {}]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise InvalidArgument(f"device must be cpu or cuda, got {device!r}")
    try:
        session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=providers, provider_options=provider_options
        )
    except Exception as exc:
        if provider_options is None or "use_tf32" not in str(exc):
            raise
        log.warning("this onnxruntime's CUDA provider has no use_tf32 option; running with its default")
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise FailedPrecondition(
            "device=cuda, but onnxruntime could not start its CUDA provider (see its log "
            "above: CUDA/cuDNN libraries missing or no GPU visible); use device=cpu"
        )
    return session


class Engine:
    """The model (manifest + ONNX, sha256-checked), its features, and a :class:`Batcher` in front of it."""

    def __init__(
        self,
        manifest_path: str | Path,
        device: str = "cpu",
        intra_op_threads: int = 0,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_audio_seconds: float = 1200.0,
        max_segments: int = 2000,
        registry: CollectorRegistry | None = None,
        spinning: bool = False,
    ):
        manifest_path = Path(manifest_path)
        # OnnxEmbedder validates the manifest and the ONNX file's sha256 and builds the features;
        # the serving session is then rebuilt with the configured device and threads.
        ref = OnnxEmbedder(manifest_path)
        self.manifest = ref.manifest
        self.features = ref.features
        self.parts = list(ref.parts)
        self.subspace_dim = ref.subspace_dim
        self.model_segment_seconds = ref.segment_seconds
        self.sample_rate = ref.features.cfg.sample_rate
        self.input = ref.input  # "pcm": segments go to the model as they are; "mel": their LogMel features
        self.min_frames = int(self.manifest["onnx"].get("min_frames", 32))
        bias = (self.manifest.get("presence") or {}).get("norm_bias")
        if bias is not None and len(bias) != len(self.parts):
            raise InvalidArgument(
                f"{manifest_path}: presence.norm_bias has {len(bias)} values for {len(self.parts)} parts"
            )
        self.norm_bias = None if bias is None else np.asarray(bias, dtype=np.float64)
        self.session = make_session(
            manifest_path.parent / self.manifest["onnx"]["file"], device, intra_op_threads, spinning
        )
        self.device = device
        self.input_name = self.session.get_inputs()[0].name
        self.max_audio_seconds = float(max_audio_seconds)
        self.max_segments = int(max_segments)
        self.batcher = Batcher(
            self._run,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_batch_length=max_batch * self._row_length(self._default_samples()),
            registry=registry,
        )
        del ref

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    def model_info(self) -> types_pb2.ModelInfo:
        return types_pb2.ModelInfo(
            model_version=self.model_version,
            parts=self.parts,
            subspace_dim=self.subspace_dim,
            model_segment_seconds=self.model_segment_seconds,
            sample_rate=self.sample_rate,
        )

    def _default_samples(self) -> int:
        return int(round(DEFAULT_SEGMENT_SECONDS * self.sample_rate))

    def _row_length(self, samples: int) -> int:
        """Length of one model-input row's last axis for a segment of ``samples``: samples or frames."""
        return samples if self.input == "pcm" else self.features.cfg.frames(samples)

    def model_rows(self, segments: np.ndarray) -> np.ndarray:
        """``(k, seg)`` segments -> the model's input rows: the segments themselves (PCM-input graph)
        or their features ``(k, n_mels, frames)``."""
        return segments if self.input == "pcm" else self.features(segments)

    def _run(self, rows: np.ndarray) -> np.ndarray:
        """``(b, samples)`` or ``(b, n_mels, frames)`` -> ``(b, P, D)``: one onnxruntime call."""
        return self.session.run(None, {self.input_name: rows})[0]

    def warm_up(self) -> None:
        """One batch of default-length silent segments through the batcher and the model."""
        silence = np.zeros((min(self.batcher.max_batch, 4), self._default_samples()), np.float32)
        self.batcher.submit(self.model_rows(silence)).result()

    def close(self) -> None:
        self.batcher.close()

    # -- request steps ------------------------------------------------------------------------
    def decode(self, audio: types_pb2.Audio) -> np.ndarray:
        """An ``Audio`` message -> ``(n,)`` float32 mono at :attr:`sample_rate`."""
        return decode_audio_message(audio, self.sample_rate, mono=True, max_seconds=self.max_audio_seconds)

    def segment_lengths(self, segment_seconds: float, hop_seconds: float) -> tuple[float, float, int, int]:
        """Request seconds (0 = defaults) -> ``(segment_s, hop_s, segment_samples, hop_samples)``."""
        if not math.isfinite(segment_seconds) or segment_seconds < 0:
            raise InvalidArgument(
                f"segment_seconds must be 0 (default {DEFAULT_SEGMENT_SECONDS:g} s) or positive, "
                f"got {segment_seconds:g}"
            )
        if not math.isfinite(hop_seconds) or hop_seconds < 0:
            raise InvalidArgument(f"hop_seconds must be 0 (= segment_seconds) or positive, got {hop_seconds:g}")
        seg_s = segment_seconds or DEFAULT_SEGMENT_SECONDS
        hop_s = hop_seconds or seg_s
        if seg_s > MAX_SEGMENT_SECONDS:
            raise InvalidArgument(f"segment_seconds {seg_s:g} is longer than the limit of {MAX_SEGMENT_SECONDS:g} s")
        sr, cfg = self.sample_rate, self.features.cfg
        seg, hop = int(round(seg_s * sr)), int(round(hop_s * sr))
        if cfg.frames(seg) < self.min_frames:
            min_s = (self.min_frames - 1) * cfg.hop_length / sr
            raise InvalidArgument(
                f"segment_seconds {seg_s:g} gives {cfg.frames(seg)} feature frames; the model "
                f"needs at least {self.min_frames} (segment_seconds >= {min_s:.3f})"
            )
        if hop < 1:
            raise InvalidArgument(f"hop_seconds {hop_s:g} is shorter than one sample at {sr} Hz")
        return seg_s, hop_s, seg, hop

    def embed(
        self,
        audio: np.ndarray,
        segment_seconds: float = 0.0,
        hop_seconds: float = 0.0,
        token: CancelToken | None = None,
    ) -> Embedding:
        """``(n,)`` mono audio at :attr:`sample_rate` -> per-segment per-part vectors."""
        seg_s, hop_s, seg, hop = self.segment_lengths(segment_seconds, hop_seconds)
        sr, n = self.sample_rate, len(audio)
        if n < seg:
            raise InvalidArgument(f"audio lasts {n / sr:.2f} s, shorter than one {seg_s:g}-s segment")
        count = (n - seg) // hop + 1
        if count > self.max_segments:
            raise ResourceExhausted(
                f"{n / sr:.1f} s of audio in {seg_s:g}-s segments every {hop_s:g} s gives "
                f"{count} segments, more than the limit of {self.max_segments} per request; "
                f"use a longer hop or send less audio"
            )
        windows = sliding_window_view(audio, seg)[::hop]  # (count, seg), a view
        assert len(windows) == count
        # features: bounded chunks (the STFT's temporary memory); PCM rows are views of the audio,
        # copied by the batcher only when it stacks a batch
        chunk = max(1, min(self.batcher.max_batch, FEATURE_CHUNK_SAMPLES // seg if self.input == "mel" else count))
        futures: list[Future] = []
        results: list[np.ndarray] = []
        try:
            for i in range(0, count, chunk):
                if len(futures) - len(results) >= MAX_INFLIGHT_CHUNKS:
                    results.append(futures[len(results)].result())
                if token is not None and token.cancelled:
                    raise CancelledError()
                fut = self.batcher.submit(self.model_rows(windows[i : i + chunk]))
                if token is not None:
                    token.add(fut)
                futures.append(fut)
            results.extend(f.result() for f in futures[len(results) :])
        except CancelledError:
            for f in futures:
                f.cancel()
            raise Unavailable("the request was cancelled") from None
        vectors = np.concatenate(results).astype(np.float32, copy=False)  # (N, P, D)
        norms = np.linalg.norm(vectors, axis=-1)  # (N, P)
        return Embedding(
            starts=np.arange(count, dtype=np.int64) * hop,
            segment_samples=seg,
            vectors=vectors,
            norms=norms,
            present=self.presence(norms),
            duration_seconds=n / sr,
        )

    def presence(self, norms: np.ndarray) -> np.ndarray:
        """``(..., P)`` norms -> bool: ``log(norm) + norm_bias > 0``, or ``norm > 1e-3`` without a bias."""
        if self.norm_bias is None:
            return norms > PRESENCE_NORM_FALLBACK
        with np.errstate(divide="ignore"):
            return np.log(norms.astype(np.float64)) + self.norm_bias > 0
