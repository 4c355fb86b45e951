"""``partsim export``: the trained CSN as ONNX (dynamic batch and time axes) plus a manifest.

By default the graph takes PCM, ``pcm: (batch, samples)`` float32 mono at the manifest's sample
rate (44.1 kHz), and computes the log-mel features itself (:class:`~.features_torch.GraphLogMel`:
the STFT as a strided Conv1d with the windowed DFT basis, the mel product, dB and clamp), so a
runtime needs no feature code and a GPU runtime computes the features on the GPU. With
``input="mel"`` (``--input mel``) it takes the normalised log-mel spectrogram
``mel: (batch, n_mels, frames)`` made by :mod:`partsim.model.features`, as csn-v1/v2 do. Either
way it returns ``embedding: (batch, parts, subspace_dim)``, the raw (not normalised) subspace
vectors.

The manifest's ``onnx.input`` says which (``"pcm"`` or ``"mel"``; a manifest without it is
``"mel"``), with ``input_shape``, ``min_frames`` and, for PCM, ``min_samples`` and ``frontend``.
It also carries everything else a consumer needs: the part list, subspace size, feature
parameters, segment length, model version, the ONNX file's sha256, the training corpus, the
evaluation results and the export's own parity check (``onnx.export_check``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import InvalidArgument
from .inference import Embedder, OnnxEmbedder, TorchEmbedder, sha256_file

OPSET = 17
ONNX_FILE = "csn.onnx"
MANIFEST_FILE = "manifest.json"
INPUTS = ("pcm", "mel")
MIN_FRAMES = 32  # five 2x poolings
DEFAULT_RADIX = 32
EXPORT_CHECK_LIMIT = 1e-3  # max |ONNX - PyTorch| on the check signals, else the export fails


class _Export(torch.nn.Module):
    """The CSN, with the feature front end in front of it for PCM input."""

    def __init__(self, embedder: TorchEmbedder, frontend: torch.nn.Module | None = None):
        super().__init__()
        self.frontend = frontend
        self.csn = embedder.csn
        self.p, self.d = len(embedder.parts), embedder.subspace_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = x if self.frontend is None else self.frontend(x)
        return self.csn(mel).view(x.shape[0], self.p, self.d)


def pcm_input_fields(cfg, radix: int, min_frames: int = MIN_FRAMES) -> dict:
    """The manifest's ``onnx`` fields of a PCM-input graph (besides file, sha256, output...)."""
    return {
        "input": "pcm",
        "input_shape": ["batch", "samples"],
        "sample_rate": cfg.sample_rate,
        "min_samples": (min_frames - 1) * cfg.hop_length,
        "frontend": {
            "features": "log-mel of partsim.model.features (GraphLogMel)",
            "stft": "strided Conv1d, windowed DFT basis",
            "radix": radix,
            "dtype": "float32",
        },
    }


def check_signals(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """``(4, samples)`` float32: noise, a chord with harmonics, a quiet tone, a tone after silence."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(seed)
    chord = sum(np.sin(2 * np.pi * f * h * t) / h for f in (220.0, 277.2, 329.6) for h in range(1, 6))
    late = np.where(t > seconds / 3, 0.3 * np.sin(2 * np.pi * 3000.0 * t), 0.0)
    return np.stack(
        [rng.uniform(-0.5, 0.5, n), 0.5 * chord / np.abs(chord).max(), 1e-3 * np.sin(2 * np.pi * 1000.0 * t), late]
    ).astype(np.float32)


def export(
    model_path: str | Path,
    out_dir: str | Path,
    evaluation: str | Path | None = None,
    name: str = "csn",
    input: str = "pcm",
    radix: int = DEFAULT_RADIX,
) -> dict:
    """Write ``csn.onnx`` and ``manifest.json`` into ``out_dir``; returns the manifest.

    ``input``: ``"pcm"`` (the features inside the graph, the default) or ``"mel"`` (the graph
    starts after :class:`~.features.LogMel`). ``radix``: the STFT split of the PCM front end
    (:class:`~.features_torch.GraphLogMel`; 1 is the plain DFT convolution).
    """
    if input not in INPUTS:
        raise InvalidArgument(f"input must be one of {', '.join(INPUTS)}, got {input!r}")
    embedder = TorchEmbedder(model_path)
    cfg = embedder.features.cfg
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg_samples = int(round(embedder.segment_seconds * cfg.sample_rate))
    frontend = None
    if input == "pcm":
        from .features_torch import GraphLogMel

        try:
            frontend = GraphLogMel(cfg, radix=radix).eval()
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        example = torch.from_numpy(check_signals(cfg.sample_rate, embedder.segment_seconds)[:2])
        axes = {"pcm": {0: "batch", 1: "samples"}, "embedding": {0: "batch"}}
    else:
        example = torch.rand(2, cfg.n_mels, cfg.frames(seg_samples))
        axes = {"mel": {0: "batch", 2: "frames"}, "embedding": {0: "batch"}}
    tmp = out / (ONNX_FILE + ".tmp")
    with warnings.catch_warnings():  # the tracer's notes on shape arithmetic and the frozen BatchNorm
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Export(embedder, frontend).eval(),
            (example,),
            str(tmp),
            input_names=[input],
            output_names=["embedding"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes=axes,
        )
    os.replace(tmp, out / ONNX_FILE)
    digest = sha256_file(out / ONNX_FILE)
    onnx_info = {
        "file": ONNX_FILE,
        "sha256": digest,
        "opset": OPSET,
        **(
            pcm_input_fields(cfg, radix)
            if input == "pcm"
            else {"input": "mel", "input_shape": ["batch", cfg.n_mels, "frames"]}
        ),
        "output": "embedding",
        "output_shape": ["batch", len(embedder.parts), embedder.subspace_dim],
        "min_frames": MIN_FRAMES,
    }
    log = embedder.log or {}
    evaluation_data = None
    if evaluation is not None:
        try:
            evaluation_data = json.loads(Path(evaluation).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot read evaluation results {evaluation}: {exc}") from None
    last = (log.get("epochs") or [{}])[-1]
    manifest = {
        "format": "partsim-model",
        "version": 1,
        "model_version": f"{name}-{digest[:12]}",
        "partsim_version": __version__,
        "parts": embedder.parts,
        "subspace_dim": embedder.subspace_dim,
        "embedding_dim": len(embedder.parts) * embedder.subspace_dim,
        "segment_seconds": embedder.segment_seconds,
        "features": embedder.features.cfg.to_dict(),
        "onnx": onnx_info,
        # Part presence from a subspace's norm (eq. 4.4): present when sigmoid(log ||v_j|| + b_j) > 0.5,
        # i.e. when ||v_j|| > exp(-b_j).
        "presence": {
            "norm_bias": [float(b) for b in embedder.csn.norm_bias.detach().cpu()],
            "rule": "present when log(norm) + norm_bias > 0",
        },
        "network": {**embedder.net_cfg.to_dict(), "parameters": int(sum(p.numel() for p in embedder.csn.parameters()))},
        "training": {
            "corpus": log.get("corpus"),
            "config": log.get("config"),
            "git_commit": log.get("git_commit"),
            "wall_seconds": log.get("wall_seconds"),
            "final_epoch": last,
        },
        "evaluation": evaluation_data,
    }
    # the exported graph against PyTorch on the NumPy features, on audio, whatever the input
    _write_checked(out, manifest, embedder, "max_abs_vs_pytorch", "the exported graph differs from PyTorch")
    return manifest


def _write_checked(out: Path, manifest: dict, reference: Embedder, field: str, differs: str) -> None:
    """Write ``out/manifest.json``, embed the check signals with the model it describes and with
    ``reference``, record the largest difference under ``onnx.export_check[field]`` and write the
    manifest again; raise (the manifest kept for a look) when it is over ``EXPORT_CHECK_LIMIT``."""
    path = out / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1, default=float) + "\n")
    audio = check_signals(reference.features.cfg.sample_rate, reference.segment_seconds, seed=1)
    err = float(np.max(np.abs(OnnxEmbedder(path).embed(audio) - reference.embed(audio))))
    manifest["onnx"]["export_check"] = {"signals": "noise, chord, quiet tone, tone after silence", field: err}
    path.write_text(json.dumps(manifest, indent=1, default=float) + "\n")
    if not err <= EXPORT_CHECK_LIMIT:
        raise InvalidArgument(f"{differs} by {err:.3g} (limit {EXPORT_CHECK_LIMIT:g}) on the check signals; see {path}")


def parity(manifest_path: str | Path, model_path: str | Path, inputs: np.ndarray) -> float:
    """Max |onnxruntime - PyTorch| of the embeddings of ``inputs``: what the graph takes
    (mel ``(N, n_mels, frames)`` for a mel-input graph, audio ``(N, samples)`` for a PCM one);
    PyTorch gets the NumPy features of the audio."""
    onnx_model, torch_model = OnnxEmbedder(manifest_path), TorchEmbedder(model_path)
    if onnx_model.input == "pcm":
        a, b = onnx_model.embed(inputs), torch_model.embed(inputs)
    else:
        a, b = onnx_model.embed_mel(inputs), torch_model.embed_mel(inputs)
    return float(np.max(np.abs(a.reshape(len(inputs), -1) - b.reshape(len(inputs), -1))))


def add_frontend(manifest_path: str | Path, out_dir: str | Path, radix: int = DEFAULT_RADIX) -> dict:
    """A mel-input model (csn-v1/v2) as a PCM-input one: the feature front end prepended to its graph.

    The weights are the old graph's, untouched; the new manifest is the old one with the new
    ``onnx`` section and model version (``<name>-<new sha256[:12]>``), and ``converted_from``.
    """
    import onnx
    import onnx.compose

    from .features_torch import GraphLogMel

    src = OnnxEmbedder(manifest_path)  # validates the manifest and the file's sha256
    if src.input != "mel":
        raise InvalidArgument(f"{manifest_path} already takes {src.input}; only a mel-input model gets a front end")
    manifest = json.loads(json.dumps(src.manifest))
    cfg = src.features.cfg
    try:
        frontend = GraphLogMel(cfg, radix=radix).eval()
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (ONNX_FILE + ".tmp")
    example = torch.from_numpy(check_signals(cfg.sample_rate, src.segment_seconds)[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            frontend,
            (example,),
            str(tmp),
            input_names=["pcm"],
            output_names=["features"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={"pcm": {0: "batch", 1: "samples"}},
        )
    front = onnx.load(str(tmp))
    model = onnx.load(str(Path(manifest_path).parent / src.manifest["onnx"]["file"]))
    front.ir_version = model.ir_version
    merged = onnx.compose.merge_models(front, model, io_map=[("features", src.input_name)], prefix1="frontend/")
    for node in merged.graph.node:  # the graph's input keeps its plain name
        node.input[:] = ["pcm" if name == "frontend/pcm" else name for name in node.input]
    merged.graph.input[0].name = "pcm"
    onnx.checker.check_model(merged)
    onnx.save(merged, str(tmp))
    os.replace(tmp, out / ONNX_FILE)
    digest = sha256_file(out / ONNX_FILE)
    old = manifest["model_version"]
    base = old[:-13] if old.endswith("-" + manifest["onnx"]["sha256"][:12]) else old
    manifest["converted_from"] = {"model_version": old, "onnx_sha256": manifest["onnx"]["sha256"]}
    manifest["model_version"] = f"{base}-{digest[:12]}"
    manifest["onnx"].update(
        {
            "file": ONNX_FILE,
            "sha256": digest,
            **pcm_input_fields(cfg, radix, int(manifest["onnx"].get("min_frames", MIN_FRAMES))),
        }
    )
    _write_checked(out, manifest, src, "max_abs_vs_mel_graph", "the PCM graph differs from the mel graph")
    return manifest
