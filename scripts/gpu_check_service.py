"""The separator as a service on the check's device (a section of scripts/gpu_check.py): the real
gRPC server started, one Separate call through the client, and a SIGTERM that must stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import traceback

import numpy as np

SR = 44100


def run_service(device: str, audio: np.ndarray, timeout: float = 180.0) -> tuple[dict, np.ndarray | None]:
    """``python -m partsim.services.separator`` on ``device``; one Separate (FLOAT32LE stems, raw float32
    PCM in) through the client. The record and the stems ``(S, 1, n)`` (None when the call failed)."""
    rec: dict = {"device": device, "audio_seconds": len(audio) / SR}
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from partsim.services.separator import client
        from partsim.v1 import types_pb2
    except Exception as exc:  # noqa: BLE001
        rec.update(skipped=True, why=f"imports for the service/client fail here: {type(exc).__name__}: {exc}")
        return rec, None
    env = dict(os.environ, PARTSIM_SEPARATOR_DEVICE=device, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "partsim.services.separator", "--address", "127.0.0.1:0", "--metrics-port", "-1"]
    t_start = time.perf_counter()
    # cwd outside the checkout: the partsim imported is the one on PYTHONPATH (gpu-check.sh: src/)
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
            return rec, None
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
            return rec, None
        rec["start_to_serving_s"] = time.perf_counter() - t_start
        pcm = types_pb2.RawPcm(
            data=np.ascontiguousarray(audio, "<f4").tobytes(),
            sample_rate=SR,
            channels=audio.shape[1],
            format=types_pb2.SAMPLE_FORMAT_FLOAT32LE,
        )
        t0 = time.perf_counter()
        header, stems = client.separate(
            address, types_pb2.Audio(pcm=pcm), encoding=types_pb2.STEM_ENCODING_FLOAT32LE, timeout=120
        )
        rec["separate_rpc_s"] = time.perf_counter() - t0
        y = client.decode_stems(header, stems)
        rec.update(
            ok=True,
            header={
                "model": header.model,
                "stems": [s.name for s in header.stems],
                "sample_rate": header.sample_rate,
                "channels": header.channels,
                "total_frames": header.total_frames,
            },
            output_shape=list(y.shape),
            rtf_rpc=rec["separate_rpc_s"] / rec["audio_seconds"],
        )
        return rec, y
    except Exception as exc:  # noqa: BLE001
        rec.update(
            ok=False,
            error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:800]}",
            traceback_tail=traceback.format_exc().splitlines()[-6:],
        )
        return rec, None
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
