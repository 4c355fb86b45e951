"""``python -m partsim.services.embedder.bench``: embedder throughput at several client concurrencies.

Starts a real embedder (the shipped model unless ``--model``) in-process on loopback, sends the
same ``--requests`` requests (each ``--seconds`` of noise-plus-tones audio, as raw PCM or FLAC)
at each concurrency, and prints segments/s, the real-time factor (seconds of audio embedded
per second of wall time), request latency, and the mean batch size the batcher formed. The
batching gain is the throughput at the highest concurrency over that at concurrency 1.

``--pipeline``: the ingest path against the model alone, side by side in one run. ``--songs``
songs of ``--song-seconds`` as FLAC files (what ``partsim index`` sends), ``--concurrency``
requests at a time, each decoded, cut into 10-s segments, turned into the model's input
(features, or nothing for a PCM-input graph) and embedded through the batcher; against the
same server's onnxruntime session alone on ready-made input rows of the same segments, in
batches of ``--max-batch``. The two are measured alternately (``--rounds``, best of each) and
the ratio pipeline / model-only is printed, with the model-only real-time factor, the CPU time
per segment split into model, decoding, features (input rows) and the rest, and the model's share
of the pipeline's CPU time (which, unlike the wall ratio, other processes' load does not move).

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

from partsim.internal.v1 import embedder_pb2, embedder_pb2_grpc
from partsim.v1 import types_pb2

from .config import EmbedderConfig
from .server import EmbedderServer


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
        audio = types_pb2.Audio(
            pcm=types_pb2.RawPcm(data=x.tobytes(), sample_rate=sr, channels=1, format=types_pb2.SAMPLE_FORMAT_FLOAT32LE)
        )
    return embedder_pb2.EmbedRequest(audio=audio, segment_seconds=segment, hop_seconds=segment)


def pipeline_bench(args, stub, engine, registry) -> dict:
    """Pipeline (FLAC songs through Embed) vs model only (the session on ready rows), alternately."""
    import os

    seg_s = args.segment_seconds
    songs = [make_request(args.song_seconds, 1000 + i, "flac", seg_s) for i in range(args.songs)]
    seg = int(round(seg_s * engine.sample_rate))
    segments: list[np.ndarray] = []
    for req in songs[: max(1, (2 * args.max_batch) // max(1, int(args.song_seconds // seg_s)) + 1)]:
        audio = engine.decode(req.audio)
        segments.extend(audio[i : i + seg] for i in range(0, len(audio) - seg + 1, seg))
    rows = engine.model_rows(np.stack(segments[: 2 * args.max_batch]))  # ready-made input rows, 2 full batches
    per_song = int(args.song_seconds // seg_s)
    total = per_song * len(songs)
    session, name, mb = engine.session, engine.input_name, args.max_batch
    stub.Embed(songs[0], timeout=600)  # warm

    def model_only(batch: int) -> tuple[float, float]:
        """Segments/s and CPU-s per segment of the session alone, in batches of ``batch``."""
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, len(rows), batch):
            session.run(None, {name: rows[i : i + batch]})
        return len(rows) / (time.perf_counter() - t), (time.process_time() - c) / len(rows)

    def pipeline() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.pipeline_concurrency) as pool:
            n = sum(len(r.segments) for r in pool.map(lambda r: stub.Embed(r, timeout=600), songs))
        assert n == total, (n, total)
        return total / (time.perf_counter() - t), (time.process_time() - c) / total

    def steps() -> tuple[float, float]:
        """CPU-s per segment of the pipeline's own steps, measured alone: decoding, input rows."""
        c = time.process_time()
        decoded = [engine.decode(r.audio) for r in songs[:4]]
        decode_cpu = (time.process_time() - c) / (per_song * len(decoded))
        c = time.process_time()
        for audio in decoded:
            engine.model_rows(np.stack([audio[i : i + seg] for i in range(0, len(audio) - seg + 1, seg)]))
        return decode_cpu, (time.process_time() - c) / (per_song * len(decoded))

    step_runs = []
    batches = sorted({1, 4, 8, mb} & set(range(1, mb + 1)))
    model_runs: dict[int, list] = {b: [] for b in batches}
    pipe_runs = []
    s0, n0 = (registry.get_sample_value(f"partsim_embedder_batch_size_{k}") for k in ("sum", "count"))
    for _ in range(args.rounds):
        for b in batches:
            model_runs[b].append(model_only(b))
        pipe_runs.append(pipeline())
        step_runs.append(steps())
    s1, n1 = (registry.get_sample_value(f"partsim_embedder_batch_size_{k}") for k in ("sum", "count"))
    best_b = max(batches, key=lambda b: max(r for r, _ in model_runs[b]))
    m = max(r for r, _ in model_runs[best_b])
    m_cpu = min(c for _, c in model_runs[best_b])
    p = max(r for r, _ in pipe_runs)
    p_cpu = min(c for _, c in pipe_runs)
    decode_cpu, rows_cpu = min(d for d, _ in step_runs), min(r for _, r in step_runs)
    threads = engine.session.get_session_options().intra_op_num_threads or os.cpu_count()
    print(
        f"pipeline bench: model {engine.model_version} (input {engine.input}), {os.cpu_count()} CPU cores, "
        f"onnxruntime intra-op threads {threads}{' (spinning)' if args.spinning else ''}, device {args.device}"
    )
    print(
        f"  songs: {len(songs)} x {args.song_seconds:g} s FLAC, {seg_s:g}-s segments ({total} per round), "
        f"concurrency {args.pipeline_concurrency}, max_batch {mb}, {args.rounds} rounds (best of each)"
    )
    print(
        f"  model only (onnxruntime on ready {'PCM' if engine.input == 'pcm' else 'mel'} rows), by batch size: "
        + ", ".join(
            f"{b}: {max(r for r, _ in model_runs[b]):.1f} ({1000 * min(c for _, c in model_runs[b]):.0f} CPU-ms)"
            for b in batches
        )
        + " segments/s"
    )
    print(f"  model only, best (batch {best_b}): {m:7.1f} segments/s = {m * seg_s:5.0f}x real time")
    print(
        f"  pipeline (decode, segment, {'' if engine.input == 'pcm' else 'features, '}model via Embed): "
        f"{p:7.1f} segments/s = {p * seg_s:5.0f}x real time, mean batch {(s1 - s0) / max(1, n1 - n0):.1f}   rounds: "
        + " ".join(f"{r:.1f}" for r, _ in pipe_runs)
    )
    print(f"  pipeline / model only: {p / m:.2f}")
    other = p_cpu - m_cpu - decode_cpu - rows_cpu
    print(
        f"  CPU-ms per segment: pipeline {1000 * p_cpu:.1f} = model {1000 * m_cpu:.1f} + decode "
        f"{1000 * decode_cpu:.1f} + {'features' if engine.input == 'mel' else 'input rows'} {1000 * rows_cpu:.1f}"
        f" + other {1000 * other:.1f}"
    )
    print(
        f"  the model's share of the pipeline's CPU time: {m_cpu / p_cpu:.2f} (the wall ratio when both runs "
        f"keep the cores busy; it does not move with other processes' load, the wall ratio does)"
    )
    return {
        "model_only": m,
        "pipeline": p,
        "ratio": p / m,
        "cpu_ms": {
            "pipeline": 1000 * p_cpu,
            "model": 1000 * m_cpu,
            "decode": 1000 * decode_cpu,
            "rows": 1000 * rows_cpu,
            "other": 1000 * other,
        },
        "model_cpu_share": m_cpu / p_cpu,
    }


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
    ap.add_argument("--spinning", action="store_true", help="onnxruntime's idle threads busy-wait (default off)")
    ap.add_argument("--pipeline", action="store_true", help="pipeline vs model-only, side by side (see above)")
    ap.add_argument("--songs", type=int, default=50, help="--pipeline: songs per round")
    ap.add_argument("--song-seconds", type=float, default=30.0, help="--pipeline: length of each song")
    ap.add_argument("--pipeline-concurrency", type=int, default=4, help="--pipeline: requests at a time")
    ap.add_argument("--rounds", type=int, default=3, help="--pipeline: alternating rounds of each measurement")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.pipeline:
        levels = [args.pipeline_concurrency]
    cfg = EmbedderConfig(
        address="127.0.0.1:0",
        metrics_port=-1,
        model=args.model,
        device=args.device,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        intra_op_threads=args.intra_op_threads,
        workers=max(levels) + 2,
        spinning=args.spinning,
    )
    cfg.validate()
    registry = CollectorRegistry()
    server = EmbedderServer(cfg, registry).start()
    channel = grpc.insecure_channel(
        server.address,
        options=[("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)],
    )
    stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
    if args.pipeline:
        try:
            pipeline_bench(args, stub, server.servicer.engine, registry)
        finally:
            channel.close()
            server.stop(1)
        return 0
    requests = [make_request(args.seconds, i, args.format, args.segment_seconds) for i in range(args.requests)]
    stub.Embed(requests[0], timeout=120)  # warm the path once

    def batches() -> tuple[float, float]:
        return (
            registry.get_sample_value("partsim_embedder_batch_size_sum") or 0.0,
            registry.get_sample_value("partsim_embedder_batch_size_count") or 0.0,
        )

    def one(req):
        t = time.perf_counter()
        resp = stub.Embed(req, timeout=600)
        return len(resp.segments), time.perf_counter() - t

    print(
        f"embedder bench: {args.requests} requests x {args.seconds:g} s ({args.format}), "
        f"{args.segment_seconds:g}-s segments, max_batch {args.max_batch}, max_wait {args.max_wait_ms:g} ms, "
        f"device {args.device}"
    )
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
            print(
                f"{c:>5} {segments / wall:>11.1f} {args.requests * args.seconds / wall:>11.1f} "
                f"{np.percentile(lat, 50):>8.0f} {np.percentile(lat, 95):>8.0f} {(s1 - s0) / max(n1 - n0, 1):>11.2f}"
            )
        if len(levels) > 1:
            lo, hi = levels[0], levels[-1]
            print(f"batching gain (concurrency {hi} vs {lo}): {rates[hi] / rates[lo]:.2f}x")
    finally:
        channel.close()
        server.stop(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
