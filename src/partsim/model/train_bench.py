"""``partsim bench-train``: triplet draws per second of csn-v2's training configuration and of
csn-v3's, measured side by side in one run on the same corpus, network and device.

csn-v2's configuration: fp32, NCHW tensors, features with NumPy on the CPU (or TorchLogMel on a
GPU, as csn-v2 trained), no augmentation. csn-v3's: bf16 autocast where the device has it,
channels_last, features on the training device, augmentation before mixing, and
``torch.compile`` when asked. Both run the whole training step (draw, mix, features, forward,
masked triplet + norm losses, backward, Adam); the first steps (warm-up, compilation) are not
timed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace

import torch

from .nets import NetConfig
from .train import TrainConfig, Trainer


def _rate(cfg: TrainConfig, steps: int, warmup: int) -> dict:
    tr = Trainer(cfg, progress=False)
    sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        tr.step("main")
    sync()
    seconds = time.perf_counter() - t0
    return {
        "draws_per_second": steps * cfg.batch / seconds,
        "seconds": seconds,
        "steps": steps,
        "batch": cfg.batch,
        "bf16": tr.bf16,
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "features": cfg.features,
        "augment": cfg.augment,
        "device": str(tr.device),
    }


def bench_training(
    corpus: str,
    widths=(16, 32, 64, 128, 256),
    subspace_dim: int = 128,
    batch: int = 32,
    steps: int = 4,
    warmup: int = 1,
    device: str = "auto",
    compile: bool = False,
) -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        v3 = TrainConfig(
            corpus=corpus,
            out=f"{tmp}/v3",
            net=NetConfig(widths=list(widths), subspace_dim=subspace_dim),
            batch=batch,
            pretrain=False,
            device=device,
            load_workers=0,
            compile=compile,
        )
        # csn-v2: the same run with csn-v2's defaults for what csn-v3 changed
        v2 = replace(
            v3,
            out=f"{tmp}/v2",
            compile=False,
            precision="fp32",
            channels_last=False,
            augment=False,
            features="torch" if gpu else "numpy",
        )
        for name, cfg in (("csn-v2 configuration", v2), ("csn-v3 configuration", v3)):
            results[name] = _rate(cfg, steps, warmup)
            r = results[name]
            print(
                f"{name:<22} {r['draws_per_second']:9.1f} draws/s  (batch {batch}, {steps} steps, "
                f"bf16={r['bf16']}, channels_last={r['channels_last']}, compile={r['compile']}, "
                f"features={r['features']}, augment={r['augment']}, {r['device']})",
                flush=True,
            )
    results["ratio"] = (
        results["csn-v3 configuration"]["draws_per_second"] / results["csn-v2 configuration"]["draws_per_second"]
    )
    print(f"ratio csn-v3 / csn-v2   {results['ratio']:9.2f}x", flush=True)
    return results
