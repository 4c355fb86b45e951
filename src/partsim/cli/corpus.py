"""``partsim corpus make|info|bench``: compose, render, inspect and time multitrack corpora."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import fractions, integer, number


def register(sub) -> None:
    corpus = sub.add_parser("corpus", help="make and inspect multitrack corpora (partsim or Slakh2100 layout)")
    csub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")

    make = csub.add_parser("make", help="compose and render a Slakh-style corpus with FluidSynth")
    make.add_argument(
        "--out", required=True, type=Path, help="output folder (new, empty, or an interrupted run to resume)"
    )
    make.add_argument("--songs", required=True, type=integer, help="number of songs")
    make.add_argument("--seconds", required=True, type=number, help="length of each song in seconds")
    make.add_argument("--seed", required=True, type=integer, help="random seed (same seed, same corpus)")
    make.add_argument(
        "--soundfont",
        action="extend",
        nargs="+",
        default=[],
        metavar="SF2",
        help="SoundFont to render with (repeatable; default: the Debian GM SoundFonts)",
    )
    make.add_argument("--workers", type=integer, default=1, help="render processes (default 1)")
    make.add_argument(
        "--split", type=fractions, default=(0.8, 0.1, 0.1), help="train,validation,test fractions (default 0.8,0.1,0.1)"
    )
    make.add_argument(
        "--composer",
        default="partsim",
        metavar="partsim|mma|mixed",
        help="who composes: partsim's procedural composer, Debian's MMA grooves, or mixed "
        "(each song's composer drawn from its index, half each; default partsim)",
    )
    make.add_argument(
        "--grooves",
        default="train",
        metavar="train|heldout",
        help="MMA groove families: train (all but the held-out ones, default) or heldout "
        "(only the held-out families: the composer-shift evaluation set)",
    )
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(handler=_cmd_make, needs="corpus")

    info = csub.add_parser("info", help="summarise a corpus folder (partsim or Slakh2100 layout)")
    info.add_argument("root", type=Path)
    info.add_argument("--check", action="store_true", help="also decode every audio file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=_cmd_info, needs="corpus")

    bench = csub.add_parser("bench", help="measure composing and rendering speed (real-time factor)")
    bench.add_argument("--songs", type=integer, default=24)
    bench.add_argument("--seconds", type=number, default=30.0)
    bench.add_argument("--seed", type=integer, default=0)
    bench.add_argument("--soundfont", action="extend", nargs="+", default=[], metavar="SF2")
    bench.set_defaults(handler=_cmd_bench, needs="corpus")


def _cmd_make(args: argparse.Namespace) -> int:
    from ..corpus.make import CorpusConfig, make_corpus
    from ..corpus.soundfonts import check_soundfonts

    cfg = CorpusConfig(
        out=args.out,
        songs=args.songs,
        seconds=args.seconds,
        seed=args.seed,
        soundfonts=check_soundfonts(args.soundfont) if args.soundfont else [],
        workers=args.workers,
        split=args.split,
        composer=args.composer,
        grooves=args.grooves,
    )
    cfg.validate()  # before any SoundFont is loaded or folder is made
    index = make_corpus(cfg, progress=not args.quiet)
    _print_summary(cfg.out, index)
    return 0


def _print_summary(out: Path, index: dict) -> None:
    songs = index["songs"]
    print(
        f"wrote {len(songs)} songs to {out} in {index['wall_seconds']:.1f} s "
        f"({index['config']['seconds']:g} s each, seed {index['config']['seed']})"
    )
    print("split: " + ", ".join(f"{name} {len(ids)}" for name, ids in index["splits"].items()))
    print(f"{'song':<10} {'split':<10} {'composer':<8} {'tempo':>6} {'class':>5}  {'key':<14} parts")
    for sid, s in songs.items():
        print(
            f"{sid:<10} {s['split']:<10} {s.get('composer', 'partsim'):<8} {s['tempo']:>6.1f} "
            f"{s['tempo_class']:>5}  {s['key']:<14} {' '.join(s['present'])}"
        )


def _cmd_info(args: argparse.Namespace) -> int:
    from ..data import open_dataset

    ds = open_dataset(args.root)
    tracks = ds.tracks()
    per_part = {p: sum(t.present[p] for t in tracks) for p in ds.parts}
    summary = {
        "root": str(ds.root),
        "layout": ds.layout,
        "tracks": len(tracks),
        "splits": {k: len(v) for k, v in ds.splits().items()},
        "tracks_with_part": per_part,
    }
    if args.check:
        summary["check"] = ds.check(decode=True)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{summary['root']}: {summary['layout']} layout, {summary['tracks']} tracks")
    print("splits: " + (", ".join(f"{k} {v}" for k, v in summary["splits"].items()) or "none"))
    print("tracks with each part: " + ", ".join(f"{p} {n}" for p, n in per_part.items()))
    if args.check:
        c = summary["check"]
        print(f"checked: {c['files']} audio files decoded, {c['seconds']:.1f} s of audio, all readable")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..corpus.bench import run_bench

    run_bench(songs=args.songs, seconds=args.seconds, seed=args.seed, soundfonts=args.soundfont)
    return 0
