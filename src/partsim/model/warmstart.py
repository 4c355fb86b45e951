"""Start training from a shipped model (``--init``): weights from a model.pt or from an ONNX export.

A shipped model folder holds only the ONNX graph, where the exporter has folded every batch
norm into the convolution before it (``W' x + b'``). :func:`load_onnx_into` puts ``W'`` back into
the convolutions and rebuilds each batch norm so that it computes the same ``+ b'``: it runs a
batch of real features through the network, measures each convolution's per-channel output mean
``mu`` and variance ``var``, and sets ``running_mean = mu``, ``running_var = var``,
``weight = sqrt(var + eps)``, ``bias = mu + b'``. In eval mode that is exactly the exported
function (tested against onnxruntime); in training mode the batch statistics are close to
``mu``/``var``, so fine-tuning starts from the shipped model rather than from a perturbed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgument
from .features import FeatureConfig
from .nets import CSN, NetConfig


def _conv_bn_pairs(csn: CSN) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each convolution of the encoder with the batch norm that follows it (the pairs the exporter folds)."""
    layers = list(csn.encoder.features)
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    for i, m in enumerate(layers):
        if not isinstance(m, nn.Conv2d):
            continue
        bn = layers[i + 1] if i + 1 < len(layers) else None
        if not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"encoder layer {i} is a Conv2d followed by {type(bn).__name__}, not a BatchNorm2d")
        pairs.append((m, bn))
    return pairs


def _running_stats(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch norm's running mean and variance buffers (torch has none with track_running_stats=False)."""
    if bn.running_mean is None or bn.running_var is None:
        raise TypeError("a BatchNorm2d without running statistics (track_running_stats=False)")
    return bn.running_mean, bn.running_var


def _onnx_tensors(onnx_path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        # 2-D convolutions only: a PCM-input graph also has its STFT as a 1-D convolution
        if node.op_type == "Conv" and len(node.input) >= 3 and inits.get(node.input[1], np.zeros(0)).ndim == 4:
            convs.append((inits[node.input[1]], inits[node.input[2]]))
    return convs, inits


def _copy_onnx_weights(csn: CSN, manifest_path: Path) -> list[torch.Tensor]:
    """Conv weights, projection and presence biases of a shipped model into ``csn``.

    Returns each convolution's folded bias ``b'``; the batch norms are the caller's to set.
    """
    manifest = json.loads(manifest_path.read_text())
    net = manifest.get("network", {})
    if net.get("widths") != list(csn.cfg.widths) or manifest.get("subspace_dim") != csn.cfg.subspace_dim:
        raise InvalidArgument(
            f"--init {manifest_path}: the model has widths {net.get('widths')} and subspace "
            f"{manifest.get('subspace_dim')}; training asks for {csn.cfg.widths} and "
            f"{csn.cfg.subspace_dim}"
        )
    onnx_file = manifest_path.parent / manifest["onnx"]["file"]
    convs, inits = _onnx_tensors(onnx_file)
    fc_w = next((v for k, v in inits.items() if k.endswith("encoder.fc.weight")), None)
    fc_b = next((v for k, v in inits.items() if k.endswith("encoder.fc.bias")), None)
    pairs = _conv_bn_pairs(csn)
    if len(convs) != len(pairs) or fc_w is None or fc_b is None:
        raise InvalidArgument(
            f"--init {onnx_file}: {len(convs)} convolutions and "
            f"{'a' if fc_w is not None else 'no'} projection; the CSN has {len(pairs)}"
        )
    biases = []
    with torch.no_grad():
        for (conv, _), (w, b) in zip(pairs, convs):
            if tuple(conv.weight.shape) != w.shape:
                raise InvalidArgument(
                    f"--init {onnx_file}: convolution shapes differ ({w.shape} vs {tuple(conv.weight.shape)})"
                )
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            biases.append(torch.from_numpy(np.array(b)))
        csn.encoder.fc.weight.copy_(torch.from_numpy(np.array(fc_w)))
        csn.encoder.fc.bias.copy_(torch.from_numpy(np.array(fc_b)))
        csn.norm_bias.copy_(torch.tensor(manifest["presence"]["norm_bias"], dtype=torch.float32))
    return biases


def load_onnx_into(csn: CSN, manifest_path: str | Path, calibration_mel: torch.Tensor) -> None:
    """Load a shipped model (``manifest.json`` + its ONNX file) into ``csn``.

    Args:
        csn: a CSN of the manifest's sizes.
        manifest_path: the shipped model's ``manifest.json``.
        calibration_mel: ``(B, n_mels, frames)`` features of real audio (B of 64 or more).
    """
    biases = _copy_onnx_weights(csn, Path(manifest_path))
    pairs = _conv_bn_pairs(csn)
    with torch.no_grad():
        # Identity norms (sqrt(var + eps) = 1) with the folded biases where the exporter had them.
        for (_, bn), b in zip(pairs, biases):
            running_mean, running_var = _running_stats(bn)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            running_mean.zero_()
            running_var.fill_(1.0 - bn.eps)
        stats: list[tuple[torch.Tensor, torch.Tensor]] = []

        def hook(_module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            stats.append((out.mean(dim=(0, 2, 3)), out.var(dim=(0, 2, 3), unbiased=False)))

        handles = [conv.register_forward_hook(hook) for conv, _ in pairs]
        was_training = csn.training
        csn.eval()
        try:
            csn(calibration_mel.float())
        finally:
            for h in handles:
                h.remove()
        for (_, bn), (mu, var), b in zip(pairs, stats, biases):
            running_mean, running_var = _running_stats(bn)
            running_mean.copy_(mu)
            running_var.copy_(var)
            bn.weight.copy_((var + bn.eps).sqrt())
            bn.bias.copy_(mu + b)
        csn.train(was_training)


def _load_run_file(path: Path, what: str) -> dict:
    """A model.pt or checkpoint.pt of ``partsim train``; anything else is one precise error."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a corrupt or foreign file
        raise InvalidArgument(f"{what}: not a readable PyTorch file ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or "csn" not in ck or "net" not in ck:
        raise InvalidArgument(f"{what}: not a partsim model.pt or checkpoint.pt (no 'csn' weights)")
    return ck


def load_init(csn: CSN, path: str | Path, calibration_mel: Callable[[], torch.Tensor]) -> str:
    """``--init PATH``: a model.pt of ``partsim train``, or a shipped model folder / manifest.

    ``calibration_mel`` makes the features :func:`load_onnx_into` needs (called only for an ONNX start).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise InvalidArgument(f"--init {path}: no such model (a model.pt, a model folder or its manifest.json)")
    if p.suffix == ".json":
        load_onnx_into(csn, p, calibration_mel())
        return f"onnx:{p}"
    ck = _load_run_file(p, f"--init {path}")
    try:
        csn.load_state_dict(ck["csn"])
    except RuntimeError as exc:
        raise InvalidArgument(f"--init {path}: weights do not fit this network: {str(exc).splitlines()[0]}") from None
    return f"torch:{p}"


def interpolate(finetuned: str | Path, manifest_path: str | Path, alpha: float, out: str | Path) -> dict:
    """Weight-space ensemble of a fine-tuned run and the shipped model it started from (``--init``).

    ``theta = (1 - alpha) * theta_init + alpha * theta_finetuned`` (Wortsman et al., "Robust
    fine-tuning of zero-shot models", 2022: the interpolation keeps the start model's robustness
    to distribution shift and the fine-tuned model's gains). The run must have been trained with
    ``--freeze-bn``: its batch norms then still hold the running statistics that
    :func:`load_onnx_into` rebuilt, from which ``theta_init`` follows exactly (conv weights from
    the ONNX graph, ``weight = sqrt(var + eps)``, ``bias = mean + b'``). Writes a model.pt.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgument(f"--alpha must be within 0..1, got {alpha}")
    ck = _load_run_file(Path(finetuned), str(finetuned))
    log = ck.get("log", {})
    if not (log.get("config", {}).get("freeze_bn") and str(log.get("init", "")).startswith("onnx:")):
        raise InvalidArgument(
            f"{finetuned}: interpolation needs a run started with --init from a shipped model "
            "and trained with --freeze-bn"
        )
    csn = CSN(NetConfig(**ck["net"]))
    csn.load_state_dict(ck["csn"])
    start = CSN(NetConfig(**ck["net"]))
    start.load_state_dict(ck["csn"])  # running statistics, as frozen during fine-tuning
    biases = _copy_onnx_weights(start, Path(manifest_path))
    with torch.no_grad():
        for (_, bn), b in zip(_conv_bn_pairs(start), biases):
            running_mean, running_var = _running_stats(bn)
            bn.weight.copy_((running_var + bn.eps).sqrt())
            bn.bias.copy_(running_mean + b)
        a, b0 = csn.state_dict(), start.state_dict()
        mixed = {k: ((1 - alpha) * b0[k] + alpha * a[k]) if a[k].is_floating_point() else a[k] for k in a}
    model = {
        "csn": mixed,
        "partnets": None,
        "net": ck["net"],
        "features": ck.get("features") or FeatureConfig().to_dict(),  # checkpoints carry none
        "segment_seconds": ck.get("segment_seconds", 3.0),
        "log": {**log, "interpolation": {"alpha": alpha, "init": str(manifest_path), "finetuned": str(finetuned)}},
    }
    torch.save(model, out)
    return model
