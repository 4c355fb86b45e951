"""The separator's CUDA path against its CPU path on one machine (run by scripts/gpu-check.sh).

Loads the shipped separation model (models/separator, partsim-sep-v1) with
``partsim.services.separator.engine.Engine`` on ``cuda`` and on ``cpu``, separates the same inputs
(the first 10, 30 and 120 s of one stereo 44.1 kHz recording) on both, and writes one JSON file:
the machine, load times, wall time and real-time factor per device (after a warm-up), peak GPU
memory, and per stem the largest absolute difference and the SDR of the CUDA stems against the
CPU stems (CUDA run as the service runs it, with PyTorch's default TF32 settings, and once more with
TF32 off). Optionally starts the real gRPC service (``python -m partsim.services.separator``) on
the device and calls Separate once through ``services/separator/client.py``.

``--cpu-only`` skips everything that needs a GPU (for a dry run on a machine without one); the
JSON then says so. Each section that fails records its error and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

SR = 44100
MODEL = "partsim-sep-v1"


def now() -> float:
    return time.perf_counter()


def err(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:800]}",
            "traceback_tail": traceback.format_exc().splitlines()[-6:]}


def version(mod: str) -> str | None:
    try:
        from importlib.metadata import version as v
        return v(mod)
    except Exception:  # noqa: BLE001
        return None


def machine_info(cpu_only: bool) -> dict:
    import torch

    info: dict = {"python": sys.version.split()[0], "platform": platform.platform(),
                  "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
                  "cpu_only_mode": cpu_only}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except Exception as exc:  # noqa: BLE001
        info["nvidia_smi"] = f"unavailable: {type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["cuda_device"] = {"name": p.name, "total_memory_gib": round(p.total_memory / 2**30, 2),
                               "multiprocessors": p.multi_processor_count, "capability": f"{p.major}.{p.minor}"}
        info["tf32_defaults"] = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                                 "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    import google.protobuf
    import grpc
    info["packages"] = {n: version(n) for n in ("numpy", "demucs", "julius", "einops", "protobuf", "grpcio",
                                                "grpcio-health-checking", "soundfile", "soxr", "prometheus_client")}
    info["module_paths"] = {"google.protobuf": google.protobuf.__file__, "grpc": grpc.__file__}
    return info


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
        return np.ascontiguousarray(x[:int(seconds * SR)]), f"{path} ({x.shape[1]} ch, {sr} Hz)"
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
        out[s] = {"max_abs_diff": mad, "max_abs_ref": peak, "rel_max_diff": mad / peak if peak else None,
                  "sdr_db": (10 * np.log10(num / den)) if den > 0 and num > 0 else None,
                  "identical": den == 0}
    worst_rel = max((v["rel_max_diff"] or 0.0) for v in out.values())
    sdrs = [v["sdr_db"] for v in out.values() if v["sdr_db"] is not None]
    return {"per_stem": out, "worst_rel_max_diff": worst_rel, "min_sdr_db": min(sdrs) if sdrs else None,
            "within_1e-4_rel": worst_rel <= 1e-4}


def zero_dc_imag(model) -> None:
    """Make each HTDemucs of ``model`` drop the imaginary part of the DC bin before its inverse STFT.

    A real signal's spectrum has a real DC bin; the model's complex-as-channels output need not. The
    CPU's inverse real FFT ignores that imaginary part; this makes every device ignore it."""
    for m in (list(model.models) if hasattr(model, "models") else [model]):
        if not hasattr(m, "_ispec"):
            continue
        orig = m._ispec

        def ispec(z, length=None, scale=0, orig=orig):
            z = z.clone()
            z[..., 0, :].imag.zero_()
            return orig(z, length, scale)

        m._ispec = ispec


def run_device(device: str, repo: Path, inputs: dict[str, np.ndarray], reps: int, dc_fix: bool = False
               ) -> tuple[dict, dict]:
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
    if dc_fix:
        zero_dc_imag(engine.model)
        rec["dc_imag_zeroed_before_istft"] = True
    t0 = now()
    engine.warm_up()
    rec["engine_warm_up_s"] = now() - t0  # the engine's own 1-s silent warm-up (what the service does)
    rec["engine_load_seconds_metric"] = engine.load_seconds
    rec["model"] = {"name": engine.name, "sources": engine.sources, "sample_rate": engine.sample_rate,
                    "channels": engine.channels, "segment_seconds": engine.segment_seconds,
                    "overlap": engine.overlap, "class": type(engine.model).__name__,
                    "params": sum(p.numel() for p in engine.model.parameters())}
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
        r = {"audio_seconds": dur, "wall_s": times, "wall_s_median": float(np.median(times)),
             "rtf_median": float(np.median(times)) / dur, "rtf_best": min(times) / dur,
             "output_shape": list(y.shape), "finite": bool(np.all(np.isfinite(y))),
             "max_abs_diff_between_reps": repeat_diff}
        if cuda:
            r["peak_gpu_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            r["peak_gpu_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        results[name] = r
        outs[name] = y
        print(f"  {device} {name}: {dur:.0f} s audio, median {r['wall_s_median']:.3f} s, "
              f"RTF {r['rtf_median']:.4f}", flush=True)
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


def _first_tensor(x):
    import torch
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _rel(a, b) -> float | None:
    """max |a - b| / max |b| (None when the shapes differ or b is all zeros)."""
    if a is None or b is None or a.shape != b.shape:
        return None
    peak = float(b.abs().max()) if b.numel() else 0.0
    return float((a - b).abs().max()) / peak if peak else None


def diagnose(repo: Path, audio: np.ndarray, device: str = "cuda") -> dict:
    """Where the device's forward pass of one split leaves the CPU's: every module's input and output
    (forward hooks) on ``device`` under a few attention settings, against the CPU with default settings;
    plus the STFT alone and the whole split's stems."""
    import contextlib
    import copy

    import torch
    from partsim.services.separator.engine import load_model

    bag = load_model(repo, MODEL)
    ref_model = bag.models[0] if hasattr(bag, "models") else bag
    seg = int(float(ref_model.segment) * ref_model.samplerate)
    mono = audio.mean(axis=1, dtype=np.float32)
    start = min(len(mono) - seg, int(5 * SR)) if len(mono) > seg else 0
    x = mono[start:start + seg]
    x = (x - mono.mean()) / (mono.std() + 1e-8)
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]

    def trace(model, dev, settings):
        rec: list = []
        hooks = [mod.register_forward_hook(
            lambda mod, inp, out, name=name: rec.append((name, _first_tensor(inp), _first_tensor(out))))
            for name, mod in model.named_modules() if name]
        old_fast = torch.backends.mha.get_fastpath_enabled()
        try:
            with contextlib.ExitStack() as st:
                if settings.get("sdpa_math_only"):
                    from torch.nn.attention import SDPBackend, sdpa_kernel
                    st.enter_context(sdpa_kernel(SDPBackend.MATH))
                if "mha_fastpath" in settings:
                    torch.backends.mha.set_fastpath_enabled(settings["mha_fastpath"])
                with torch.no_grad():
                    y = model(x.to(dev))
                    z = model._spec(x.to(dev))
        finally:
            torch.backends.mha.set_fastpath_enabled(old_fast)
            for h in hooks:
                h.remove()
        cpu = lambda t: None if t is None else t.detach().to("cpu", torch.float64)  # noqa: E731
        return cpu(y), torch.view_as_real(z).detach().cpu().double(), [(n, cpu(i), cpu(o)) for n, i, o in rec]

    y_ref, z_ref, rec_ref = trace(ref_model, "cpu", {})
    dev_model = copy.deepcopy(ref_model).to(device)
    configs = {"default": {}, "sdpa_math_only": {"sdpa_math_only": True}, "mha_fastpath_off": {"mha_fastpath": False},
               "mha_fastpath_off+sdpa_math_only": {"mha_fastpath": False, "sdpa_math_only": True}}
    out: dict = {"split": {"start_s": start / SR, "seconds": seg / SR}, "reference": "cpu, default settings",
                 "device": device, "configs": {}}
    y_cpu_nofast, _, _ = trace(ref_model, "cpu", {"mha_fastpath": False})
    out["cpu_mha_fastpath_off_vs_cpu"] = {"rel_max_diff": _rel(y_cpu_nofast, y_ref)}
    for cname, settings in configs.items():
        try:
            y, z, rec = trace(dev_model, device, settings)
        except Exception as exc:  # noqa: BLE001
            out["configs"][cname] = err(exc)
            continue
        stems = {}
        for i, s in enumerate(ref_model.sources):
            r, e = y_ref[0, i], y[0, i]
            den = float(((r - e) ** 2).sum())
            stems[s] = {"rel_max_diff": _rel(e, r),
                        "sdr_db": 10 * np.log10(float((r ** 2).sum()) / den) if den > 0 else None}
        mods = []
        for (n, i_d, o_d), (n_r, i_r, o_r) in zip(rec, rec_ref):
            if n != n_r:
                mods.append({"module": n, "note": f"call order differs from the cpu's ({n_r})"})
                break
            mods.append({"module": n, "rel_in": _rel(i_d, i_r), "rel_out": _rel(o_d, o_r)})
        first_bad = [m for m in mods if (m.get("rel_out") or 0) > 1e-3][:6]
        amplifiers = sorted((m for m in mods if m.get("rel_out") is not None),
                            key=lambda m: -(m["rel_out"] / max(m.get("rel_in") or 0.0, 1e-7)))[:6]
        out["configs"][cname] = {"settings": settings, "stems": stems,
                                 "worst_rel_max_diff": max(v["rel_max_diff"] or 0 for v in stems.values()),
                                 "stft_rel_max_diff": _rel(z, z_ref),
                                 "modules_compared": len(mods), "first_modules_over_1e-3": first_bad,
                                 "first_modules_over_1e-5": [m for m in mods if (m.get("rel_out") or 0) > 1e-5][:25],
                                 "largest_amplification_out_over_in": amplifiers}
        print(f"  {cname}: worst rel {out['configs'][cname]['worst_rel_max_diff']:.2e}; first over 1e-3: "
              f"{[m['module'] for m in first_bad[:3]]}", flush=True)

    # the inverse STFT alone, on the spectrogram the CPU model hands it (functional: no hook sees it)
    captured: dict = {}
    orig = ref_model._ispec

    def cap(z, length=None, scale=0):
        captured.setdefault("z", z.detach().clone())
        captured.setdefault("length", length)
        return orig(z, length, scale)

    ref_model._ispec = cap
    try:
        with torch.no_grad():
            ref_model(x)
    finally:
        del ref_model._ispec
    z, length = captured["z"], captured["length"]
    z0 = z.clone()
    z0[..., 0, :].imag.zero_()
    with torch.no_grad():
        x_cpu, x_cpu0 = orig(z, length), orig(z0, length)
        x_dev, x_dev0 = (dev_model._ispec(t.to(device), length).cpu() for t in (z, z0))
    dc = z[..., 0, :]
    out["istft"] = {"spectrogram_shape": list(z.shape),
                    "dc_bin_imag_energy_fraction": float((dc.imag ** 2).sum() / (z.abs() ** 2).sum()),
                    "dc_bin_imag_max_abs": float(dc.imag.abs().max()),
                    "device_vs_cpu_rel_max_diff": _rel(x_dev.double(), x_cpu.double()),
                    "cpu_dc_imag_zeroed_vs_cpu_rel_max_diff": _rel(x_cpu0.double(), x_cpu.double()),
                    "device_dc_imag_zeroed_vs_cpu_rel_max_diff": _rel(x_dev0.double(), x_cpu.double()),
                    "device_dc_imag_zeroed_vs_device_rel_max_diff": _rel(x_dev0.double(), x_dev.double())}
    # the whole split again with the DC bin's imaginary part dropped on the device (a no-op on the CPU)
    fixed = copy.deepcopy(ref_model).to(device)
    zero_dc_imag(fixed)
    with torch.no_grad():
        y_fix = fixed(x.to(device)).cpu().double()
    out["istft"]["model_with_dc_imag_zeroed_on_device_vs_cpu_rel_max_diff"] = _rel(y_fix, y_ref)
    print(f"  istft: {out['istft']}", flush=True)
    return out


def run_service(device: str, audio: np.ndarray, ref: np.ndarray | None, timeout: float = 180.0) -> dict:
    """``python -m partsim.services.separator`` on ``device``; one Separate (FLOAT32LE stems, raw float32
    PCM in) through the client; the stems compared with the in-process engine's on the same device."""
    rec: dict = {"device": device, "audio_seconds": len(audio) / SR}
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from partsim.services.separator import client
        from partsim.v1 import separator_pb2, types_pb2
    except Exception as exc:  # noqa: BLE001
        rec.update(skipped=True, why=f"imports for the service/client fail here: {type(exc).__name__}: {exc}")
        return rec
    env = dict(os.environ, PARTSIM_SEPARATOR_DEVICE=device, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "partsim.services.separator", "--address", "127.0.0.1:0", "--metrics-port", "-1"]
    t_start = now()
    # cwd outside the checkout: the checkout's own partsim/ (without services/) must not shadow the layout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd="/tmp")
    lines: list[str] = []
    try:
        address, deadline = None, time.monotonic() + timeout
        while time.monotonic() < deadline and address is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"separator serving on (\S+)", line)
            address = m and m.group(1)
        if not address:
            rec.update(ok=False, why="the service printed no address", rc=proc.poll())
            return rec
        rec["address"] = address
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
        status = None
        while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
            if proc.poll() is not None:
                break
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        if status != health_pb2.HealthCheckResponse.SERVING:
            rec.update(ok=False, why="never turned SERVING", rc=proc.poll())
            return rec
        rec["start_to_serving_s"] = now() - t_start
        pcm = types_pb2.RawPcm(data=np.ascontiguousarray(audio, "<f4").tobytes(), sample_rate=SR,
                               channels=audio.shape[1], format=types_pb2.SAMPLE_FORMAT_FLOAT32LE)
        t0 = now()
        header, stems = client.separate(address, types_pb2.Audio(pcm=pcm),
                                        encoding=separator_pb2.STEM_ENCODING_FLOAT32LE, timeout=120)
        rec["separate_rpc_s"] = now() - t0
        y = client.decode_stems(header, stems)
        rec.update(ok=True, header={"model": header.model, "stems": [s.name for s in header.stems],
                                    "sample_rate": header.sample_rate, "channels": header.channels,
                                    "total_frames": header.total_frames},
                   output_shape=list(y.shape), rtf_rpc=rec["separate_rpc_s"] / rec["audio_seconds"])
        if ref is not None:
            rec["vs_in_process_engine_same_device"] = compare(ref, y, [s.name for s in header.stems])
        return rec
    except Exception as exc:  # noqa: BLE001
        rec.update(ok=False, **err(exc))
        return rec
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rec["exit_code_after_sigterm"] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rec["exit_code_after_sigterm"] = "killed"
        try:
            tail = proc.stdout.read()
            if tail:
                lines.extend(tail.splitlines(True))
        except Exception:  # noqa: BLE001
            pass
        rec["log_tail"] = [ln.rstrip()[:400] for ln in lines[-12:]]


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
    ap.add_argument("--no-diagnose", action="store_true", help="skip the per-module cpu/cuda comparison")
    ap.add_argument("--diagnose-device", default="cuda", help=argparse.SUPPRESS)  # cpu: test the code here
    ap.add_argument("--service-seconds", type=float, default=30.0, help="length of the audio sent to the service")
    args = ap.parse_args(argv)

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"check": "partsim separator: CUDA path vs CPU path (scripts/gpu-check.sh)",
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sections_failed": []}

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
        result["cuda_skipped"] = ("--cpu-only given" if args.cpu_only else
                                  "torch.cuda.is_available() is False") + ": the CUDA sections did not run"

    lengths = [float(s) for s in args.lengths.split(",") if s]
    audio, source = load_audio(args.audio, max(lengths + [args.service_seconds]))
    inputs = {f"{s:g}s": audio[:int(s * SR)] for s in lengths}
    result["inputs"] = {"source": source, "lengths_s": lengths, "channels_in": int(audio.shape[1]),
                        "sample_rate": SR, "note": "the model is mono: the engine averages the channels"}

    from partsim.assets import shipped_separator_repo
    repo = shipped_separator_repo()
    result["model_repo"] = {"path": str(repo), "files": sorted(p.name for p in repo.iterdir())}

    outs: dict[str, dict] = {}

    def do(device, strict=False, dc_fix=False):
        if strict:
            rec, o = run_cuda_strict(repo, inputs)
        elif dc_fix:
            rec, o = run_device(device, repo, inputs, 1, dc_fix=True)
        else:
            rec, o = run_device(device, repo, inputs, args.cuda_reps if device == "cuda" else args.cpu_reps)
        outs["cuda_strict" if strict else f"{device}_dcfix" if dc_fix else device] = o
        return rec

    if not cpu_only:
        section("cuda", lambda: do("cuda"))
    section("cpu", lambda: do("cpu"))
    if not cpu_only:
        section("cuda_tf32_off", lambda: do("cuda", strict=True))
        section("cuda_dc_imag_zeroed", lambda: do("cuda", dc_fix=True))

    if not args.no_diagnose and (not cpu_only or args.diagnose_device == "cpu"):
        section("diagnosis", lambda: diagnose(repo, audio, args.diagnose_device))
    sources = (result.get("cpu") or {}).get("model", {}).get("sources") or []
    agreement: dict = {}
    if "cpu" in outs:
        for other in ("cuda", "cuda_strict", "cuda_dcfix"):
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
        summary["peak_gpu_memory_allocated_mib"] = max(v["peak_gpu_memory_allocated_mib"]
                                                       for v in result["cuda"]["inputs"].values())
        if "rtf_cpu" in summary:
            summary["speedup_cuda_over_cpu"] = {k: summary["rtf_cpu"][k] / summary["rtf_cuda"][k]
                                                for k in summary["rtf_cuda"] if k in summary["rtf_cpu"]}
    for key in ("cuda_vs_cpu", "cuda_strict_vs_cpu", "cuda_dcfix_vs_cpu"):
        if key in agreement:
            a = agreement[key]
            summary[key] = {"worst_rel_max_diff": max(v["worst_rel_max_diff"] for v in a.values()),
                            "worst_max_abs_diff": max(s["max_abs_diff"] for v in a.values()
                                                      for s in v["per_stem"].values()),
                            "min_sdr_db": min((v["min_sdr_db"] for v in a.values() if v["min_sdr_db"] is not None),
                                              default=None)}
    if args.truth and Path(args.truth).is_dir() and "30s" in inputs and sources:
        section("quality_vs_truth", lambda: quality(args.truth, inputs["30s"], sources,
                                                    {k: v["30s"] for k, v in outs.items() if "30s" in v}))
        q = result.get("quality_vs_truth") or {}
        if "sdr_db" in q:
            summary["sdr_vs_truth_30s"] = q["sdr_db"]
    result["summary"] = summary
    save()

    if args.no_service:
        result["service"] = {"skipped": True, "why": "--no-service"}
    else:
        dev = "cpu" if cpu_only else "cuda"
        key = f"{args.service_seconds:g}s"
        ref = outs.get(dev, {}).get(key)
        section("service", lambda: run_service(dev, audio[:int(args.service_seconds * SR)], ref))
    result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print(json.dumps(result["summary"], indent=1), flush=True)
    print(f"wrote {out_path}", flush=True)
    return 0 if not result["sections_failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
