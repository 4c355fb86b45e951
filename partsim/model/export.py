"""``partsim export``: the trained CSN as ONNX (dynamic batch and time axes) plus a manifest.

The ONNX graph takes the normalised log-mel spectrogram ``mel: (batch, n_mels, frames)`` made
by :mod:`partsim.model.features` and returns ``embedding: (batch, parts, subspace_dim)``, the raw
(not normalised) subspace vectors. The manifest carries everything a consumer needs: the part
list, subspace size, feature parameters, segment length, model version, the ONNX file's
sha256, the training corpus and the evaluation results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import InvalidArgument
from .inference import TorchEmbedder, sha256_file

OPSET = 17
ONNX_FILE = "csn.onnx"
MANIFEST_FILE = "manifest.json"


class _Export(torch.nn.Module):
    def __init__(self, embedder: TorchEmbedder):
        super().__init__()
        self.csn = embedder.csn
        self.p, self.d = len(embedder.parts), embedder.subspace_dim

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.csn(mel).view(mel.shape[0], self.p, self.d)


def export(model_path: str | Path, out_dir: str | Path, evaluation: str | Path | None = None,
           name: str = "csn") -> dict:
    embedder = TorchEmbedder(model_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = embedder.features.cfg.frames(int(embedder.segment_seconds * embedder.features.cfg.sample_rate))
    example = torch.rand(2, embedder.features.cfg.n_mels, frames)
    tmp = out / (ONNX_FILE + ".tmp")
    torch.onnx.export(_Export(embedder).eval(), (example,), str(tmp), input_names=["mel"],
                      output_names=["embedding"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={"mel": {0: "batch", 2: "frames"}, "embedding": {0: "batch"}})
    os.replace(tmp, out / ONNX_FILE)
    digest = sha256_file(out / ONNX_FILE)
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
        "onnx": {"file": ONNX_FILE, "sha256": digest, "opset": OPSET, "input": "mel",
                 "input_shape": ["batch", embedder.features.cfg.n_mels, "frames"], "output": "embedding",
                 "output_shape": ["batch", len(embedder.parts), embedder.subspace_dim], "min_frames": 32},
        # Part presence from a subspace's norm (eq. 4.4): present when sigmoid(log ||v_j|| + b_j) > 0.5,
        # i.e. when ||v_j|| > exp(-b_j).
        "presence": {"norm_bias": [float(b) for b in embedder.csn.norm_bias.detach().cpu()],
                     "rule": "present when log(norm) + norm_bias > 0"},
        "network": {**embedder.net_cfg.to_dict(),
                    "parameters": int(sum(p.numel() for p in embedder.csn.parameters()))},
        "training": {"corpus": log.get("corpus"), "config": log.get("config"), "git_commit": log.get("git_commit"),
                     "wall_seconds": log.get("wall_seconds"), "final_epoch": last},
        "evaluation": evaluation_data,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, default=float) + "\n")
    return manifest


def parity(manifest_path: str | Path, model_path: str | Path, mel: np.ndarray) -> float:
    """Max |onnxruntime - PyTorch| on ``mel``."""
    from .inference import OnnxEmbedder

    a = OnnxEmbedder(manifest_path).embed_mel(mel).reshape(len(mel), -1)
    b = TorchEmbedder(model_path).embed_mel(mel).reshape(len(mel), -1)
    return float(np.max(np.abs(a - b)))
