"""CLI: ``partsim separate AUDIO -o DIR``: one FLAC per stem of a Demucs model, locally or via the service."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli_registry import command
from .errors import InvalidArgument, NotFound

def add_parsers(sub) -> None:
    p = sub.add_parser("separate", help="split audio into the stems of a Demucs model: DIR/<stem>.flac (24-bit)")
    p.add_argument("audio", type=Path, help="an audio file (any format libsndfile reads)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (created; stem files replaced)")
    p.add_argument("--separator", default="", metavar="HOST:PORT",
                   help="separate through a running separator service instead of locally")
    local = p.add_argument_group("local separation (without --separator)")
    local.add_argument("--repo", type=Path, default=None,
                       help="model repository folder (default: the shipped models/separator)")
    local.add_argument("--model", default=None, help="model name in the repository (default partsim-sep-v1)")
    local.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default cpu")
    local.add_argument("--parts", default=None, metavar="SRC=PART,...", help="source -> catalog part overrides")
    local.add_argument("--segment-seconds", type=float, default=None, help="split length (default: the model's)")
    local.add_argument("--overlap", type=float, default=None, help="overlap of the splits (default 0.25)")
    p.add_argument("--shifts", type=int, default=None, help="random-shift passes averaged (default 0)")
    p.add_argument("--start", type=float, default=None, metavar="SECONDS", help="separate from here")
    p.add_argument("--end", type=float, default=None, metavar="SECONDS", help="separate up to here")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --separator: seconds to wait (default 3600)")
    p.add_argument("--quiet", action="store_true")

    c = sub.add_parser("compare-paths", help="feature-level vs signal-level embeddings: track-ID accuracy and "
                                             "ingest cost on a corpus's test split")
    c.add_argument("--corpus", required=True, type=Path)
    c.add_argument("--repo", type=Path, default=None, help="separator model repository (default: the shipped one)")
    c.add_argument("--model", default="partsim-sep-v1", help="separator model name (default partsim-sep-v1)")
    c.add_argument("--manifest", type=Path, default=None, help="embedding model manifest (default: the shipped one)")
    c.add_argument("--split", default="test")
    c.add_argument("--limit", type=int, default=None, help="only the first N tracks of the split")
    c.add_argument("--out", type=Path, help="write the results as JSON")


def _local_options(args: argparse.Namespace) -> list[str]:
    names = ("repo", "model", "device", "parts", "segment_seconds", "overlap")
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) is not None]


@command("separate")
def cmd_separate(args: argparse.Namespace) -> int:
    if not args.audio.is_file():
        raise NotFound(f"audio file not found: {args.audio}")
    data = args.audio.read_bytes()
    t0 = time.perf_counter()
    if args.separator:
        if _local_options(args):
            raise InvalidArgument(f"{', '.join(_local_options(args))} apply to local separation; the service at "
                                  f"{args.separator} uses its own configuration")
        from partsim.services.separator.client import separate
        from partsim.v1 import separator_pb2, types_pb2

        header, stems = separate(args.separator, types_pb2.Audio(encoded=data), separator_pb2.STEM_ENCODING_FLAC,
                                 args.start, args.end, args.shifts, timeout=args.timeout)
        names = [(s.name, s.part) for s in header.stems]
        sr, frames = header.sample_rate, header.total_frames
    else:
        from partsim.assets import DEFAULT_SEPARATION_MODEL, shipped_separator_repo
        from partsim.services.separator.config import parse_parts
        from partsim.services.separator.engine import Engine, flac_bytes
        from partsim.v1 import types_pb2

        engine = Engine(args.repo or shipped_separator_repo(), args.model or DEFAULT_SEPARATION_MODEL, device=args.device or "cpu",
                        segment_seconds=args.segment_seconds or 0.0,
                        overlap=0.25 if args.overlap is None else args.overlap,
                        max_shifts=max(20, args.shifts or 0), max_audio_seconds=86400.0,
                        parts=parse_parts(args.parts or "", "--parts"))
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
        print(f"{len(stems)} stems of {frames / sr:.2f} s at {sr} Hz in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return 0


@command("compare-paths")
def _cmd_compare_paths(args) -> int:
    import json

    from partsim.separation.compare import compare_paths, format_comparison
    from partsim.assets import default_manifest, shipped_separator_repo

    result = compare_paths(args.manifest or default_manifest(), args.repo or shipped_separator_repo(), args.model,
                           args.corpus, args.split, args.limit)
    print(format_comparison(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0
