"""``partsim bench-embed``: embedding throughput, PyTorch eager vs onnxruntime, same inputs, one run.

Reports segments per second and the real-time factor (seconds of audio embedded per second)
at several batch sizes, and the ratio onnxruntime / PyTorch. PyTorch runs the network on
precomputed NumPy features (network alone). onnxruntime runs the exported graph on what it
takes: precomputed features for a mel-input graph (network alone; "end to end" adds the NumPy
features' time), PCM for a PCM-input graph (the features are inside it: network and features,
so its rate is already end to end).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from .inference import OnnxEmbedder, TorchEmbedder


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _in_batches(run: Callable[[int, int], object], total: int, batch: int) -> Callable[[], None]:
    """A call that runs ``run(start, stop)`` over ``range(total)`` in slices of ``batch``."""

    def all_batches() -> None:
        for i in range(0, total, batch):
            run(i, i + batch)

    return all_batches


def run_bench(
    model_pt: str, manifest: str, segments: int = 64, batches=(1, 16, 64), repeats: int = 3, seed: int = 0
) -> dict:
    torch_model = TorchEmbedder(model_pt)
    onnx_model = OnnxEmbedder(manifest)
    seg_s = torch_model.segment_seconds
    sr = torch_model.features.cfg.sample_rate
    audio = np.random.default_rng(seed).uniform(-0.3, 0.3, (segments, int(seg_s * sr))).astype(np.float32)
    mel = torch_model.features(audio)
    features_s = _best_of(lambda: torch_model.features(audio), repeats)
    pcm = onnx_model.input == "pcm"
    onnx_input = audio if pcm else mel
    rows = []
    for b in batches:
        run_torch = _in_batches(lambda i, j: torch_model.embed_mel(mel[i:j]), segments, b)
        run_onnx = _in_batches(
            lambda i, j: onnx_model.session.run(None, {onnx_model.input_name: onnx_input[i:j]}), segments, b
        )
        t_torch = _best_of(run_torch, repeats)
        t_onnx = _best_of(run_onnx, repeats)
        e2e = t_onnx if pcm else t_onnx + features_s
        rows.append(
            {
                "batch": b,
                "torch_seg_per_s": segments / t_torch,
                "onnx_seg_per_s": segments / t_onnx,
                "torch_rtf": segments * seg_s / t_torch,
                "onnx_rtf": segments * seg_s / t_onnx,
                "onnx_over_torch": t_torch / t_onnx,
                "end_to_end_onnx_rtf": segments * seg_s / e2e,
            }
        )
    result = {
        "segments": segments,
        "segment_seconds": seg_s,
        "torch_threads": torch.get_num_threads(),
        "onnx_input": onnx_model.input,
        "features_seg_per_s": segments / features_s,
        "rows": rows,
    }
    print(
        f"embedding bench: {segments} segments of {seg_s:g} s, model {manifest} (input {onnx_model.input}), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"  features (NumPy log-mel): {segments / features_s:8.1f} segments/s"
        + ("   (the ONNX graph computes its own: its columns include them)" if pcm else "")
    )
    print(
        f"  {'batch':>5} {'torch seg/s':>12} {'onnx seg/s':>11} {'torch RTF':>10} {'onnx RTF':>9} "
        f"{'onnx/torch':>10} {'e2e onnx RTF':>13}"
    )
    for r in rows:
        print(
            f"  {r['batch']:>5} {r['torch_seg_per_s']:>12.1f} {r['onnx_seg_per_s']:>11.1f} {r['torch_rtf']:>9.0f}x "
            f"{r['onnx_rtf']:>8.0f}x {r['onnx_over_torch']:>9.2f}x {r['end_to_end_onnx_rtf']:>12.0f}x"
        )
    return result
