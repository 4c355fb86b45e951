"""The separator's CUDA path against its CPU path on one machine (run by scripts/gpu-check.sh).

Loads the shipped separation model (src/partsim/assets/models/separator, partsim-sep-v1) with
``partsim.services.separator.engine.Engine`` on ``cuda`` and on ``cpu``, separates the same inputs
(the first 10, 30 and 120 s of one stereo 44.1 kHz recording) on both, and writes one JSON file:
the machine, load times, wall time and real-time factor per device (after a warm-up), peak GPU
memory, and per stem the largest absolute difference and the SDR of the CUDA stems against the
CPU stems (CUDA run as the service runs it, with PyTorch's default TF32 settings, and once more with
TF32 off). Optionally starts the real gRPC service (``python -m partsim.services.separator``) on
the device and calls Separate once through ``partsim.services.separator.client``
(scripts/gpu_check_service.py).

``--cpu-only`` skips everything that needs a GPU (for a dry run on a machine without one); the
JSON then says so. Each section that fails records its error and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import numpy as np
from gpu_check_machine import machine_info
from gpu_check_service import run_service

SR = 44100
MODEL = "partsim-sep-v1"


def now() -> float:
    return time.perf_counter()


def err(exc: BaseException) -> dict:
    return {
        "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:800]}",
        "traceback_tail": traceback.format_exc().splitlines()[-6:],
    }


def load_audio(path: str | None, seconds: float) -> tuple[np.ndarray, str]:
    """``(n, 2)`` float32 at 44.1 kHz: the FLAC if given and present, else deterministic noise + tones."""
    if path and Path(path).is_file():
        import soundfile as sf

        x, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != SR:
            raise ValueError(f"{path}: {sr} Hz, expected {SR}")
        if len(x) < int(seconds * SR):
            reps = int(np.ceil(seconds * SR / len(x)))
            x = np.tile(x, (reps, 1))
        return np.ascontiguousarray(x[: int(seconds * SR)]), f"{path} ({x.shape[1]} ch, {sr} Hz)"
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * SR)) / SR
    chans = []
    for c in range(2):
        x = 0.03 * rng.standard_normal(len(t))
        for f in (55.0, 110.0, 220.0, 440.0, 1760.0):
            x += 0.1 * np.sin(2 * np.pi * f * t + c) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t * f / 110))
        x += 0.3 * (rng.random(len(t)) < 2.0 / SR) * rng.standard_normal(len(t))  # sparse clicks
        chans.append(x)
    return np.stack(chans, 1).astype(np.float32), "synthetic: noise + tones + clicks, seed 1234"


def compare(ref: np.ndarray, est: np.ndarray, sources: list[str]) -> dict:
    """Per stem: max |est - ref|, that relative to max |ref|, SDR of est against ref (dB)."""
    out = {}
    for i, s in enumerate(sources):
        r, e = ref[i].astype(np.float64), est[i].astype(np.float64)
        d = e - r
        num, den = float(np.sum(r * r)), float(np.sum(d * d))
        peak = float(np.max(np.abs(r)))
        mad = float(np.max(np.abs(d)))
        out[s] = {
            "max_abs_diff": mad,
            "max_abs_ref": peak,
            "rel_max_diff": mad / peak if peak else None,
            "sdr_db": (10 * np.log10(num / den)) if den > 0 and num > 0 else None,
            "identical": den == 0,
        }
    worst_rel = max((v["rel_max_diff"] or 0.0) for v in out.values())
    sdrs = [v["sdr_db"] for v in out.values() if v["sdr_db"] is not None]
    return {
        "per_stem": out,
        "worst_rel_max_diff": worst_rel,
        "min_sdr_db": min(sdrs) if sdrs else None,
        "within_1e-4_rel": worst_rel <= 1e-4,
    }


def run_device(device: str, repo: Path, inputs: dict[str, np.ndarray], reps: int) -> tuple[dict, dict]:
    """Load the engine on ``device``, warm up, time each input ``reps`` times; (record, {input: stems})."""
    import torch

    from partsim.services.separator.engine import Engine

    rec: dict = {"device": device, "reps": reps}
    cuda = device == "cuda"
    if cuda:
        t0 = now()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        rec["cuda_context_init_s"] = now() - t0
    t0 = now()
    engine = Engine(repo, MODEL, device=device)
    if cuda:
        torch.cuda.synchronize()
    rec["model_load_s"] = now() - t0
    t0 = now()
    engine.warm_up()
    rec["engine_warm_up_s"] = now() - t0  # the engine's own 1-s silent warm-up (what the service does)
    rec["engine_load_seconds_metric"] = engine.load_seconds
    rec["model"] = {
        "name": engine.name,
        "sources": engine.sources,
        "sample_rate": engine.sample_rate,
        "channels": engine.channels,
        "segment_seconds": engine.segment_seconds,
        "overlap": engine.overlap,
        "class": type(engine.model).__name__,
        "params": sum(p.numel() for p in engine.model.parameters()),
    }
    if cuda:
        rec["gpu_memory_after_load_mib"] = torch.cuda.memory_allocated() / 2**20
    first = next(iter(inputs.values()))
    t0 = now()
    engine.separate(engine.to_model_channels(first))  # warm-up on real audio, untimed
    rec["warm_up_first_input_s"] = now() - t0
    results, outs = {}, {}
    for name, audio in inputs.items():
        mono = engine.to_model_channels(audio)
        dur = len(mono) / engine.sample_rate
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times, y, repeat_diff = [], None, 0.0
        for _ in range(reps):
            t0 = now()
            z = engine.separate(mono)
            times.append(now() - t0)
            if y is not None:
                repeat_diff = max(repeat_diff, float(np.max(np.abs(z - y))))
            y = z
        r = {
            "audio_seconds": dur,
            "wall_s": times,
            "wall_s_median": float(np.median(times)),
            "rtf_median": float(np.median(times)) / dur,
            "rtf_best": min(times) / dur,
            "output_shape": list(y.shape),
            "finite": bool(np.all(np.isfinite(y))),
            "max_abs_diff_between_reps": repeat_diff,
        }
        if cuda:
            r["peak_gpu_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            r["peak_gpu_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        results[name] = r
        outs[name] = y
        print(
            f"  {device} {name}: {dur:.0f} s audio, median {r['wall_s_median']:.3f} s, RTF {r['rtf_median']:.4f}",
            flush=True,
        )
    rec["inputs"] = results
    del engine
    if cuda:
        torch.cuda.empty_cache()
    return rec, outs


def run_cuda_strict(repo: Path, inputs: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """CUDA once more with TF32 off for convolutions and matmuls (full fp32), one timed pass per input."""
    import torch

    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        rec, outs = run_device("cuda", repo, inputs, reps=1)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    rec["settings"] = {"cudnn.allow_tf32": False, "cuda.matmul.allow_tf32": False}
    return rec, outs


def quality(folder: str, audio: np.ndarray, sources: list[str], outs: dict[str, np.ndarray]) -> dict:
    """SDR (dB) of each run's stems against the true stems, put through the same stereo -> mono step as
    the input (the true stems are mono; the input's right channel is 0.9 x the mix, 5 ms later)."""
    import soundfile as sf

    n = len(audio)
    d = int(0.005 * SR)
    truth = {}
    for s in sources:
        f = Path(folder) / f"{s}.flac"
        if not f.is_file():
            continue
        t, _ = sf.read(f, dtype="float64")
        t = t[:n]
        right = np.concatenate([np.zeros(d), 0.9 * t[:-d]])
        truth[s] = 0.5 * (t + right)
    mix_err = float(np.max(np.abs(sum(truth.values()) - audio.astype(np.float64).mean(axis=1))))
    res: dict = {"truth": folder, "input": "30s", "truth_sum_vs_input_max_abs_diff": mix_err, "sdr_db": {}}
    for run, y in outs.items():
        per = {}
        for i, s in enumerate(sources):
            t = truth.get(s)
            if t is None or float(np.sum(t * t)) < 1e-6 * len(t):
                per[s] = None  # silent or absent in this song
                continue
            e = y[i, 0].astype(np.float64) - t
            per[s] = 10 * np.log10(float(np.sum(t * t)) / float(np.sum(e * e)))
        vals = [v for v in per.values() if v is not None]
        per["mean"] = float(np.mean(vals)) if vals else None
        res["sdr_db"][run] = per
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--audio", default="", help="a 44.1 kHz FLAC (stereo); absent: deterministic synthetic audio")
    ap.add_argument("--lengths", default="10,30,120", help="input lengths in seconds (prefixes of the audio)")
    ap.add_argument("--cpu-only", action="store_true", help="skip the CUDA parts (dry run without a GPU)")
    ap.add_argument("--cpu-reps", type=int, default=2)
    ap.add_argument("--cuda-reps", type=int, default=3)
    ap.add_argument("--no-service", action="store_true", help="skip starting the gRPC service")
    ap.add_argument("--truth", default="", help="a folder of <source>.flac: the true stems of the audio's start")
    ap.add_argument("--service-seconds", type=float, default=30.0, help="length of the audio sent to the service")
    args = ap.parse_args(argv)

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "check": "partsim separator: CUDA path vs CPU path (scripts/gpu-check.sh)",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sections_failed": [],
    }

    def save() -> None:
        out_path.write_text(json.dumps(result, indent=1, default=float) + "\n")

    def section(name: str, fn):
        print(f"== {name}", flush=True)
        t0 = now()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001
            value = err(exc)
            result["sections_failed"].append(name)
            print(f"  FAILED: {value['error']}", flush=True)
        result[name] = value
        if isinstance(value, dict):
            value.setdefault("section_wall_s", now() - t0)
        save()
        return value

    import torch

    cpu_only = args.cpu_only or not torch.cuda.is_available()
    info = section("machine", lambda: machine_info(cpu_only))
    print(json.dumps({k: info.get(k) for k in ("nvidia_smi", "torch", "cuda_available", "cpu_count")}), flush=True)
    if cpu_only:
        result["cuda_skipped"] = (
            "--cpu-only given" if args.cpu_only else "torch.cuda.is_available() is False"
        ) + ": the CUDA sections did not run"

    lengths = [float(s) for s in args.lengths.split(",") if s]
    audio, source = load_audio(args.audio, max(lengths + [args.service_seconds]))
    inputs = {f"{s:g}s": audio[: int(s * SR)] for s in lengths}
    result["inputs"] = {
        "source": source,
        "lengths_s": lengths,
        "channels_in": int(audio.shape[1]),
        "sample_rate": SR,
        "note": "the model is mono: the engine averages the channels",
    }

    from partsim.assets import shipped_separator_repo

    repo = shipped_separator_repo()
    result["model_repo"] = {"path": str(repo), "files": sorted(p.name for p in repo.iterdir())}

    outs: dict[str, dict] = {}

    def do(device, strict=False):
        if strict:
            rec, o = run_cuda_strict(repo, inputs)
        else:
            rec, o = run_device(device, repo, inputs, args.cuda_reps if device == "cuda" else args.cpu_reps)
        outs["cuda_strict" if strict else device] = o
        return rec

    if not cpu_only:
        section("cuda", lambda: do("cuda"))
    section("cpu", lambda: do("cpu"))
    if not cpu_only:
        section("cuda_tf32_off", lambda: do("cuda", strict=True))

    sources = (result.get("cpu") or {}).get("model", {}).get("sources") or []
    agreement: dict = {}
    if "cpu" in outs:
        for other in ("cuda", "cuda_strict"):
            if other in outs:
                agreement[f"{other}_vs_cpu"] = {k: compare(outs["cpu"][k], outs[other][k], sources) for k in inputs}
    if agreement:
        agreement["reference"] = "the CPU stems of the same input on the same machine"
        result["agreement"] = agreement
    else:
        result["agreement"] = {"skipped": "needs both the cpu and the cuda runs"}
    save()

    summary: dict = {}
    for dev in ("cpu", "cuda"):
        r = result.get(dev)
        if isinstance(r, dict) and "inputs" in r:
            summary[f"rtf_{dev}"] = {k: v["rtf_median"] for k, v in r["inputs"].items()}
            summary[f"model_load_s_{dev}"] = r["model_load_s"]
    if isinstance(result.get("cuda"), dict) and "inputs" in result["cuda"]:
        summary["peak_gpu_memory_allocated_mib"] = max(
            v["peak_gpu_memory_allocated_mib"] for v in result["cuda"]["inputs"].values()
        )
        if "rtf_cpu" in summary:
            summary["speedup_cuda_over_cpu"] = {
                k: summary["rtf_cpu"][k] / summary["rtf_cuda"][k]
                for k in summary["rtf_cuda"]
                if k in summary["rtf_cpu"]
            }
    for key in ("cuda_vs_cpu", "cuda_strict_vs_cpu"):
        if key in agreement:
            a = agreement[key]
            summary[key] = {
                "worst_rel_max_diff": max(v["worst_rel_max_diff"] for v in a.values()),
                "worst_max_abs_diff": max(s["max_abs_diff"] for v in a.values() for s in v["per_stem"].values()),
                "min_sdr_db": min((v["min_sdr_db"] for v in a.values() if v["min_sdr_db"] is not None), default=None),
            }
    if args.truth and Path(args.truth).is_dir() and "30s" in inputs and sources:
        section(
            "quality_vs_truth",
            lambda: quality(args.truth, inputs["30s"], sources, {k: v["30s"] for k, v in outs.items() if "30s" in v}),
        )
        q = result.get("quality_vs_truth") or {}
        if "sdr_db" in q:
            summary["sdr_vs_truth_30s"] = q["sdr_db"]
    result["summary"] = summary
    save()

    def service(device: str) -> dict:
        rec, stems = run_service(device, audio[: int(args.service_seconds * SR)])
        ref = outs.get(device, {}).get(f"{args.service_seconds:g}s")
        if ref is not None and stems is not None:
            rec["vs_in_process_engine_same_device"] = compare(ref, stems, rec["header"]["stems"])
        return rec

    if args.no_service:
        result["service"] = {"skipped": True, "why": "--no-service"}
    else:
        section("service", lambda: service("cpu" if cpu_only else "cuda"))
    result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print(json.dumps(result["summary"], indent=1), flush=True)
    print(f"wrote {out_path}", flush=True)
    return 0 if not result["sections_failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
