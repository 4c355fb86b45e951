"""Source separation commands: ``separate`` (one FLAC per stem of a Demucs model, locally or via the
separator service), ``compare-paths`` (feature-level vs signal-level embeddings), and the separation
model's ``train-separator``, ``evaluate-separator``, ``export-separator``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import InvalidArgument, NotFound
from .args import add_connection_options, connection, integer, number


def register(sub) -> None:
    p = sub.add_parser("separate", help="split audio into the stems of a Demucs model: DIR/<stem>.flac (24-bit)")
    p.add_argument("audio", type=Path, help="an audio file (any format libsndfile reads)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created; stem files replaced)")
    p.add_argument(
        "--separator",
        default="",
        metavar="HOST:PORT",
        help="separate through a running separator service instead of locally",
    )
    local = p.add_argument_group("local separation (without --separator)")
    local.add_argument(
        "--repo", type=Path, default=None, help="model repository folder (default: the shipped models/separator)"
    )
    local.add_argument("--model", default=None, help="model name in the repository (default partsim-sep-v1)")
    local.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default cpu")
    local.add_argument("--parts", default=None, metavar="SRC=PART,...", help="source -> catalog part overrides")
    local.add_argument("--segment-seconds", type=number, default=None, help="split length (default: the model's)")
    local.add_argument("--overlap", type=number, default=None, help="overlap of the splits (default 0.25)")
    p.add_argument("--shifts", type=integer, default=None, help="random-shift passes averaged (default 0)")
    p.add_argument("--start", type=number, default=None, metavar="SECONDS", help="separate from here")
    p.add_argument("--end", type=number, default=None, metavar="SECONDS", help="separate up to here")
    p.add_argument("--timeout", type=number, default=3600.0, help="with --separator: seconds to wait (default 3600)")
    add_connection_options(p, client_cert=True)  # with --separator: TLS, and the client certificate mTLS asks for
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_separate)

    c = sub.add_parser(
        "compare-paths",
        help="feature-level vs signal-level embeddings: track-ID accuracy and ingest cost on a corpus's test split",
    )
    c.add_argument("--corpus", required=True, type=Path)
    c.add_argument("--repo", type=Path, default=None, help="separator model repository (default: the shipped one)")
    c.add_argument("--model", default="partsim-sep-v1", help="separator model name (default partsim-sep-v1)")
    c.add_argument("--manifest", type=Path, default=None, help="embedding model manifest (default: the shipped one)")
    c.add_argument("--split", default="test")
    c.add_argument("--limit", type=integer, default=None, help="only the first N tracks of the split")
    c.add_argument("--out", type=Path, help="write the results as JSON")
    c.set_defaults(handler=_cmd_compare_paths, needs="train,cpu")

    tr = sub.add_parser("train-separator", help="train a small demucs separation model on a partsim corpus")
    tr.add_argument("--corpus", required=True, type=Path, help="corpus folder (partsim corpus make)")
    tr.add_argument("--out", required=True, type=Path, help="run folder (checkpoint.th, run.json; resumed if present)")
    tr.add_argument("--time-limit", dest="time_limit", type=number, metavar="MIN", help="stop after this many minutes")
    tr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tr.add_argument("--threads", type=integer, default=None, help="torch threads (default: torch's)")
    tr.add_argument("--arch", choices=["htdemucs", "hdemucs"], help="demucs class (default htdemucs)")
    for flag, typ, helptext in (
        ("channels", integer, "first-layer channels (default 16)"),
        ("depth", integer, "layers (default 4)"),
        ("nfft", integer, "STFT size (default 1024)"),
        ("t-layers", integer, "HTDemucs transformer layers (default 2)"),
        ("segment", number, "training window in seconds (default 3)"),
        ("batch-size", integer, "windows per step (default 4)"),
        ("lr", number, "Adam learning rate (default 1e-3)"),
        ("epoch-steps", integer, "steps per epoch (default 60)"),
        ("epochs", integer, "at most this many epochs (default 1000)"),
        ("remix-prob", number, "probability of a random remix (default 0.5)"),
        ("val-songs", integer, "validation songs (default 12)"),
        ("val-seconds", number, "validation chunk seconds (default 10)"),
        ("seed", integer, "random seed (default 0)"),
    ):
        tr.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=typ, help=helptext)
    tr.set_defaults(handler=_cmd_train_separator, needs="train")

    ev = sub.add_parser("evaluate-separator", help="SDR/SIR/SAR per part on a corpus's test split (Table 3.1)")
    ev.add_argument("model", metavar="MODEL_NAME", help="bag name or signature in the repository")
    ev.add_argument("--repo", type=Path, default=None, help="model repository folder (default: the shipped one)")
    ev.add_argument("--corpus", required=True, type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--songs", type=integer, default=None, help="only the first N songs of the split")
    ev.add_argument("--chunk-seconds", type=number, default=10.0)
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--out", type=Path, help="write the result JSON here")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(handler=_cmd_evaluate_separator, needs="train")

    ex = sub.add_parser("export-separator", help="export a run's best model into a demucs model repository")
    ex.add_argument("run", metavar="RUN", type=Path, help="run folder of train-separator")
    ex.add_argument("--repo", required=True, type=Path, help="repository folder (created)")
    ex.add_argument("--name", default="partsim-sep-v1", help="bag name (default partsim-sep-v1)")
    ex.set_defaults(handler=_cmd_export_separator, needs="train")


def _local_options(args: argparse.Namespace) -> list[str]:
    names = ("repo", "model", "device", "parts", "segment_seconds", "overlap")
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]


def _cmd_separate(args: argparse.Namespace) -> int:
    if not args.audio.is_file():
        raise NotFound(f"audio file not found: {args.audio}")
    data = args.audio.read_bytes()
    t0 = time.perf_counter()
    if args.separator:
        if _local_options(args):
            raise InvalidArgument(
                f"{', '.join(_local_options(args))} apply to local separation; the service at "
                f"{args.separator} uses its own configuration"
            )
        from ..client import Connection
        from ..services.separator.client import separate
        from ..v1 import types_pb2

        header, stems = separate(
            args.separator,
            types_pb2.Audio(encoded=data),
            types_pb2.STEM_ENCODING_FLAC,
            args.start,
            args.end,
            args.shifts,
            timeout=args.timeout,
            credentials=Connection(**connection(args)).credentials(),
        )
        names = [(s.name, s.part) for s in header.stems]
        sr, frames = header.sample_rate, header.total_frames
    else:
        from ..extras import require

        require("partsim separate (without --separator)", "separator")
        from ..assets import DEFAULT_SEPARATION_MODEL, shipped_separator_repo
        from ..services.separator.config import parse_parts
        from ..services.separator.engine import Engine, flac_bytes
        from ..v1 import types_pb2

        engine = Engine(
            args.repo or shipped_separator_repo(),
            args.model or DEFAULT_SEPARATION_MODEL,
            device=args.device or "cpu",
            segment_seconds=args.segment_seconds or 0.0,
            overlap=0.25 if args.overlap is None else args.overlap,
            max_shifts=max(20, args.shifts or 0),
            max_audio_seconds=86400.0,
            parts=parse_parts(args.parts or "", "--parts"),
        )
        audio = engine.decode(types_pb2.Audio(encoded=data))
        a, b = engine.span(len(audio), args.start, args.end)
        separated = engine.separate(audio, a, b, shifts=args.shifts)
        stems = [flac_bytes(stem, engine.sample_rate) for stem in separated]
        names = [(s, engine.parts[s]) for s in engine.sources]
        sr, frames = engine.sample_rate, b - a
    args.out.mkdir(parents=True, exist_ok=True)
    for (name, part), blob in zip(names, stems):
        path = args.out / f"{name}.flac"
        path.write_bytes(blob)
        if not args.quiet:
            print(f"{path}  (part {part or '-'})")
    if not args.quiet:
        print(
            f"{len(stems)} stems of {frames / sr:.2f} s at {sr} Hz in {time.perf_counter() - t0:.1f} s", file=sys.stderr
        )
    return 0


def _cmd_compare_paths(args: argparse.Namespace) -> int:
    from ..assets import default_manifest, shipped_separator_repo
    from ..separation.compare import compare_paths, format_comparison

    result = compare_paths(
        args.manifest or default_manifest(),
        args.repo or shipped_separator_repo(),
        args.model,
        args.corpus,
        args.split,
        args.limit,
    )
    print(format_comparison(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _cmd_train_separator(args: argparse.Namespace) -> int:
    from ..separation.train import config_from_args, train

    run = train(
        args.corpus,
        args.out,
        config_from_args(args),
        device=args.device,
        threads=args.threads,
        log=lambda m: print(m, flush=True),
    )
    print(json.dumps({"run": str(args.out), "epochs": len(run["epochs"]), "best": run["best"]}))
    return 0


def _cmd_evaluate_separator(args: argparse.Namespace) -> int:
    from ..separation import load_separator
    from ..separation.evaluate import evaluate, format_table, save
    from ..separation.train import _device

    model = load_separator(args.model, args.repo)
    log = None if args.quiet else (lambda m: print(m, flush=True))
    result = evaluate(model, args.corpus, args.split, args.chunk_seconds, args.songs, _device(args.device), log=log)
    result["separator"] = {"name": args.model, "repo": str(args.repo) if args.repo else "shipped"}
    print(format_table(result))
    if args.out:
        save(result, args.out)
    return 0


def _cmd_export_separator(args: argparse.Namespace) -> int:
    from ..separation import export_run

    path = export_run(args.run, args.repo, args.name)
    print(json.dumps({"file": str(path), "bag": str(args.repo / f"{args.name}.yaml"), "bytes": path.stat().st_size}))
    return 0
