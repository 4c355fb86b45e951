"""``python -m partsim.services.embedder.bench``: embedder throughput at several client concurrencies.

Starts a real embedder (the shipped model unless ``--model``) in-process on loopback, sends the
same ``--requests`` requests (each ``--seconds`` of noise-plus-tones audio, as raw PCM or FLAC)
at each concurrency, and prints segments/s, the real-time factor (seconds of audio embedded
per second of wall time), request latency, and the mean batch size the batcher formed. The
batching gain is the throughput at the highest concurrency over that at concurrency 1.

The client runs in the same process as the server, so on a small machine it competes for the
same cores; the numbers are a lower bound on a dedicated server.
"""

from __future__ import annotations

import argparse
import io
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import soundfile as sf
from prometheus_client import CollectorRegistry

from partsim.v1 import embedder_pb2, embedder_pb2_grpc, types_pb2

from .config import EmbedderConfig
from .server import serve


def make_request(seconds: float, seed: int, fmt: str, segment: float, sr: int = 44100) -> embedder_pb2.EmbedRequest:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.05 * rng.standard_normal(len(t))
    for f in rng.uniform(50, 4000, size=4):
        x += 0.2 * np.sin(2 * np.pi * f * t)
    x = x.astype(np.float32)
    if fmt == "flac":
        buf = io.BytesIO()
        sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
        audio = types_pb2.Audio(encoded=buf.getvalue())
    else:
        audio = types_pb2.Audio(pcm=types_pb2.RawPcm(data=x.tobytes(), sample_rate=sr, channels=1,
                                                     format=types_pb2.SAMPLE_FORMAT_FLOAT32LE))
    return embedder_pb2.EmbedRequest(audio=audio, segment_seconds=segment, hop_seconds=segment)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m partsim.services.embedder.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per request")
    ap.add_argument("--segment-seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrencies")
    ap.add_argument("--format", choices=["pcm", "flac"], default="pcm")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--intra-op-threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="", help="manifest (default: the shipped model)")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    cfg = EmbedderConfig(address="127.0.0.1:0", metrics_port=-1, model=args.model, device=args.device,
                         max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         intra_op_threads=args.intra_op_threads, workers=max(levels) + 2)
    cfg.validate()
    registry = CollectorRegistry()
    server = serve(cfg, registry=registry)
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 256 << 20),
                                                             ("grpc.max_receive_message_length", 256 << 20)])
    stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
    requests = [make_request(args.seconds, i, args.format, args.segment_seconds) for i in range(args.requests)]
    stub.Embed(requests[0], timeout=120)  # warm the path once

    def batches() -> tuple[float, float]:
        return (registry.get_sample_value("partsim_embedder_batch_size_sum"),
                registry.get_sample_value("partsim_embedder_batch_size_count"))

    def one(req):
        t = time.perf_counter()
        resp = stub.Embed(req, timeout=600)
        return len(resp.segments), time.perf_counter() - t

    print(f"embedder bench: {args.requests} requests x {args.seconds:g} s ({args.format}), "
          f"{args.segment_seconds:g}-s segments, max_batch {args.max_batch}, max_wait {args.max_wait_ms:g} ms, "
          f"device {args.device}")
    print(f"{'conc':>5} {'segments/s':>11} {'x realtime':>11} {'p50 ms':>8} {'p95 ms':>8} {'mean batch':>11}")
    rates = {}
    try:
        for c in levels:
            s0, n0 = batches()
            start = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                out = list(pool.map(one, requests))
            wall = time.perf_counter() - start
            s1, n1 = batches()
            segments = sum(n for n, _ in out)
            lat = np.array([t for _, t in out]) * 1000
            rates[c] = segments / wall
            print(f"{c:>5} {segments / wall:>11.1f} {args.requests * args.seconds / wall:>11.1f} "
                  f"{np.percentile(lat, 50):>8.0f} {np.percentile(lat, 95):>8.0f} {(s1 - s0) / max(n1 - n0, 1):>11.2f}")
        if len(levels) > 1:
            lo, hi = levels[0], levels[-1]
            print(f"batching gain (concurrency {hi} vs {lo}): {rates[hi] / rates[lo]:.2f}x")
    finally:
        channel.close()
        server.stop(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
