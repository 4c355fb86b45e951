"""What machine the GPU check ran on (scripts/gpu_check.py): Python, torch and its CUDA, the GPU as
nvidia-smi and torch see it, TF32 defaults, and the versions and paths of the packages that matter."""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def version(mod: str) -> str | None:
    try:
        from importlib.metadata import version as v

        return v(mod)
    except Exception:  # noqa: BLE001
        return None


def machine_info(cpu_only: bool) -> dict:
    import torch

    info: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cpu_only_mode": cpu_only,
    }
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except Exception as exc:  # noqa: BLE001
        info["nvidia_smi"] = f"unavailable: {type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["cuda_device"] = {
            "name": p.name,
            "total_memory_gib": round(p.total_memory / 2**30, 2),
            "multiprocessors": p.multi_processor_count,
            "capability": f"{p.major}.{p.minor}",
        }
        info["tf32_defaults"] = {
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    import google.protobuf
    import grpc

    info["packages"] = {
        n: version(n)
        for n in (
            "numpy",
            "demucs",
            "julius",
            "einops",
            "protobuf",
            "grpcio",
            "grpcio-health-checking",
            "soundfile",
            "soxr",
            "prometheus_client",
        )
    }
    info["module_paths"] = {"google.protobuf": google.protobuf.__file__, "grpc": grpc.__file__}
    return info
