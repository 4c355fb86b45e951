"""CLI commands for the separation model: ``train-separator``, ``evaluate-separator``, ``export-separator``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_registry import command

def add_parsers(sub) -> None:
    tr = sub.add_parser("train-separator", help="train a small demucs separation model on a partsim corpus")
    tr.add_argument("--corpus", required=True, type=Path, help="corpus folder (partsim corpus make)")
    tr.add_argument("--out", required=True, type=Path, help="run folder (checkpoint.th, run.json; resumed if present)")
    tr.add_argument("--time-limit", dest="time_limit", type=float, metavar="MIN", help="stop after this many minutes")
    tr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tr.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    tr.add_argument("--arch", choices=["htdemucs", "hdemucs"], help="demucs class (default htdemucs)")
    for flag, typ, helptext in (("channels", int, "first-layer channels (default 16)"),
                                ("depth", int, "layers (default 4)"),
                                ("nfft", int, "STFT size (default 1024)"),
                                ("t-layers", int, "HTDemucs transformer layers (default 2)"),
                                ("segment", float, "training window in seconds (default 3)"),
                                ("batch-size", int, "windows per step (default 4)"),
                                ("lr", float, "Adam learning rate (default 1e-3)"),
                                ("epoch-steps", int, "steps per epoch (default 60)"),
                                ("epochs", int, "at most this many epochs (default 1000)"),
                                ("remix-prob", float, "probability of a random remix (default 0.5)"),
                                ("val-songs", int, "validation songs (default 12)"),
                                ("val-seconds", float, "validation chunk seconds (default 10)"),
                                ("seed", int, "random seed (default 0)")):
        tr.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=typ, help=helptext)

    ev = sub.add_parser("evaluate-separator", help="SDR/SIR/SAR per part on a corpus's test split (Table 3.1)")
    ev.add_argument("model", metavar="MODEL_NAME", help="bag name or signature in the repository")
    ev.add_argument("--repo", type=Path, default=None, help="model repository folder (default: the shipped one)")
    ev.add_argument("--corpus", required=True, type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--songs", type=int, default=None, help="only the first N songs of the split")
    ev.add_argument("--chunk-seconds", type=float, default=10.0)
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--out", type=Path, help="write the result JSON here")
    ev.add_argument("--quiet", action="store_true")

    ex = sub.add_parser("export-separator", help="export a run's best model into a demucs model repository")
    ex.add_argument("run", metavar="RUN", type=Path, help="run folder of train-separator")
    ex.add_argument("--repo", required=True, type=Path, help="repository folder (created)")
    ex.add_argument("--name", default="partsim-sep-v1", help="bag name (default partsim-sep-v1)")


@command("train-separator")
def _cmd_train(args: argparse.Namespace) -> int:
    from .separation.train import config_from_args, train

    run = train(args.corpus, args.out, config_from_args(args), device=args.device, threads=args.threads,
                log=lambda m: print(m, flush=True))
    print(json.dumps({"run": str(args.out), "epochs": len(run["epochs"]), "best": run["best"]}))
    return 0


@command("evaluate-separator")
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .separation import load_separator
    from .separation.evaluate import evaluate, format_table, save
    from .separation.train import _device

    model = load_separator(args.model, args.repo)
    log = None if args.quiet else (lambda m: print(m, flush=True))
    result = evaluate(model, args.corpus, args.split, args.chunk_seconds, args.songs, _device(args.device), log=log)
    result["separator"] = {"name": args.model, "repo": str(args.repo) if args.repo else "shipped"}
    print(format_table(result))
    if args.out:
        save(result, args.out)
    return 0


@command("export-separator")
def _cmd_export(args: argparse.Namespace) -> int:
    from .separation import export_run

    path = export_run(args.run, args.repo, args.name)
    print(json.dumps({"file": str(path), "bag": str(args.repo / f"{args.name}.yaml"),
                      "bytes": path.stat().st_size}))
    return 0
