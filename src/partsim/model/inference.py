"""Embedding audio with a trained model, in PyTorch (``model.pt``) or onnxruntime (manifest + ONNX).

Both embedders take audio segments and return ``(N, P, D)`` float32 subspace vectors. The
features are :class:`~.features.LogMel`'s (the one definition): computed in NumPy for
``model.pt`` and for an ONNX graph whose manifest says ``onnx.input: "mel"`` (or says nothing:
csn-v1/v2), and inside the graph when it says ``"pcm"`` (the audio goes in as it is).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import InvalidArgument, NotFound
from .features import FeatureConfig, LogMel


class Embedder:
    parts: list[str]
    subspace_dim: int
    segment_seconds: float
    features: LogMel
    input: str = "mel"  # what the model itself takes: "mel" or "pcm"

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:  # (N, n_mels, T) -> (N, P * D)
        raise NotImplementedError

    def embed(self, segments: np.ndarray, batch: int = 64) -> np.ndarray:
        """``(N, samples)`` audio at 44.1 kHz -> ``(N, P, D)`` float32."""
        segments = np.asarray(segments, dtype=np.float32)
        out = np.zeros((len(segments), len(self.parts), self.subspace_dim), dtype=np.float32)
        for i in range(0, len(segments), batch):
            mel = self.features(segments[i : i + batch])
            out[i : i + batch] = self.embed_mel(mel).reshape(-1, len(self.parts), self.subspace_dim)
        return out


class TorchEmbedder(Embedder):
    """The CSN (and, for the signal-level baseline, the per-part networks) from ``model.pt``."""

    def __init__(self, path: str | Path):
        import torch

        from .nets import CSN, NetConfig, PartNet

        path = Path(path)
        if not path.is_file():
            raise NotFound(f"model file not found: {path}")
        ck = torch.load(path, map_location="cpu", weights_only=False)
        self.net_cfg = NetConfig(**ck["net"])
        self.parts = list(self.net_cfg.parts)
        self.subspace_dim = self.net_cfg.subspace_dim
        self.segment_seconds = float(ck.get("segment_seconds", 3.0))
        self.features = LogMel(FeatureConfig(**ck.get("features", {})))
        self.csn = CSN(self.net_cfg)
        self.csn.load_state_dict(ck["csn"])
        self.csn.eval()
        # A fine-tuned model (``partsim train --init``) trains no per-part networks: None then.
        self.partnets = None
        if ck.get("partnets") is not None:
            self.partnets = torch.nn.ModuleList([PartNet(self.net_cfg) for _ in self.parts])
            self.partnets.load_state_dict(ck["partnets"])
            self.partnets.eval()
        self.log = ck.get("log", {})
        self._torch = torch

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self.csn(self._torch.from_numpy(mel)).numpy()

    def embed_stems(self, part: int, segments: np.ndarray, batch: int = 64) -> np.ndarray:
        """Signal-level path: per-part network ``part`` on stem segments -> ``(N, D)``."""
        if self.partnets is None:
            raise ValueError("this model has no per-part networks (it was fine-tuned with --init)")
        out = []
        with self._torch.no_grad():
            for i in range(0, len(segments), batch):
                mel = self._torch.from_numpy(self.features(segments[i : i + batch]))
                out.append(self.partnets[part](mel).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.subspace_dim), np.float32)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def session_options(intra_op_threads: int = 0, spinning: bool = False):
    """onnxruntime session options: ``intra_op_threads`` (0: its default, one per physical core)
    and no busy-waiting of idle pool threads (``allow_spinning`` off, intra- and inter-op), so that
    the model's threads leave the cores to decoding and features between calls."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if intra_op_threads > 0:
        opts.intra_op_num_threads = intra_op_threads
    flag = "1" if spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return opts


def model_input(manifest: dict) -> str:
    """``"pcm"`` or ``"mel"``: what a manifest's graph takes (no ``onnx.input``: mel, as csn-v1/v2)."""
    kind = manifest["onnx"].get("input", "mel")
    if kind not in ("pcm", "mel"):
        raise ValueError(f"onnx.input must be pcm or mel, got {kind!r}")
    return kind


class OnnxEmbedder(Embedder):
    """The exported CSN run by onnxruntime; the manifest names the ONNX file and its sha256.

    A PCM-input graph gets the segments as they are; a mel-input graph gets their NumPy features.
    """

    def __init__(self, manifest_path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 0):
        import onnxruntime as ort

        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise NotFound(f"model manifest not found: {manifest_path}")
        try:
            self.manifest = json.loads(manifest_path.read_text())
            onnx_path = manifest_path.parent / self.manifest["onnx"]["file"]
            expected = self.manifest["onnx"]["sha256"]
            self.parts = list(self.manifest["parts"])
            self.subspace_dim = int(self.manifest["subspace_dim"])
            self.segment_seconds = float(self.manifest["segment_seconds"])
            self.features = LogMel(FeatureConfig(**self.manifest["features"]))
            self.input = model_input(self.manifest)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"{manifest_path} is not a partsim model manifest: {exc}") from None
        if not onnx_path.is_file():
            raise NotFound(f"ONNX model named by {manifest_path} not found: {onnx_path}")
        actual = sha256_file(onnx_path)
        if actual != expected:
            raise InvalidArgument(
                f"ONNX file {onnx_path} has sha256 {actual[:12]}..., its manifest says "
                f"{expected[:12]}...; the model and manifest do not belong together"
            )
        providers = providers or ["CPUExecutionProvider"]
        # CUDA: no TF32 (the in-graph STFT needs float32's precision), as the embedder service
        options = [{"use_tf32": "0"} if p == "CUDAExecutionProvider" else {} for p in providers]
        self.session = ort.InferenceSession(
            str(onnx_path),
            sess_options=session_options(intra_op_threads),
            providers=providers,
            provider_options=options,
        )
        self.input_name = self.session.get_inputs()[0].name

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:
        if self.input == "pcm":
            raise InvalidArgument("this model computes its features in the graph: it takes PCM (embed), not mel")
        return self.session.run(None, {self.input_name: mel.astype(np.float32)})[0]

    def embed(self, segments: np.ndarray, batch: int = 64) -> np.ndarray:
        if self.input == "mel":
            return super().embed(segments, batch)
        segments = np.asarray(segments, dtype=np.float32)
        least = int(self.manifest["onnx"].get("min_samples", 0))
        if segments.shape[-1] < least:
            raise InvalidArgument(
                f"segments of {segments.shape[-1]} samples are shorter than the model's minimum "
                f"of {least} ({least / self.features.cfg.sample_rate:.3f} s)"
            )
        out = np.zeros((len(segments), len(self.parts), self.subspace_dim), dtype=np.float32)
        for i in range(0, len(segments), batch):
            out[i : i + batch] = self.session.run(
                None, {self.input_name: np.ascontiguousarray(segments[i : i + batch])}
            )[0]
        return out


def load_embedder(path: str | Path) -> Embedder:
    """``model.pt`` -> PyTorch; a ``.json`` manifest -> onnxruntime."""
    path = Path(path)
    if path.suffix == ".json":
        return OnnxEmbedder(path)
    return TorchEmbedder(path)
