"""Commands that talk to a running gateway about its catalog: ``index``, ``search-mix``, ``search-stems``.

``index_paths`` and the hit printers also serve ``partsim demo`` (``cli/cluster.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument, NotFound
from .args import add_connection_options, connection, integer

DEFAULT_GATEWAY = "localhost:50051"
STEM = re.compile(r"^(?P<part>[a-z_]+):(?P<track>.+)@(?P<sec>[0-9.]+)$")


def register(sub) -> None:
    ix = sub.add_parser("index", help="index songs: corpus song folders or audio files (track id = folder/file name)")
    ix.add_argument("paths", nargs="+", type=Path)
    ix.add_argument("--gateway", default=DEFAULT_GATEWAY)
    ix.add_argument("--parallel", type=integer, default=4, help="uploads in flight (default 4)")
    ix.add_argument("--quiet", action="store_true")
    add_connection_options(ix)
    ix.set_defaults(handler=_cmd_index)

    for name, helptext, handler in (
        ("search-mix", "songs whose parts sound like the query stems (eq. 6.1/6.2)", _cmd_search_mix),
        ("search-stems", "segments of one part most similar to one stem", _cmd_search_stems),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "--stem",
            action="append",
            required=True,
            metavar="PART:TRACK_ID@SECONDS",
            help="a query stem: the part of an indexed track at a time"
            + (" (repeatable)" if name == "search-mix" else ""),
        )
        p.add_argument("--top-k", type=integer, default=None, help="results (default 100, at most 1000)")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--exact", action="store_true", help="exact search (brute force over every segment)")
        mode.add_argument(
            "--approximate",
            action="store_true",
            help="per-part nearest neighbours in Milvus + exact re-rank (default: the searcher's mode)",
        )
        p.add_argument("--exclude", action="append", default=[], metavar="TRACK_ID", help="leave out this track")
        if name == "search-mix":
            p.add_argument("--weight", action="append", default=[], metavar="PART=W", help="part weight in eq. 6.2")
        p.add_argument("--gateway", default=DEFAULT_GATEWAY)
        p.add_argument("--json", action="store_true", help="print JSON")
        add_connection_options(p)
        p.set_defaults(handler=handler)


def parse_stem(text: str):
    from ..client import Stem

    m = STEM.match(text)
    if not m:
        raise InvalidArgument(f"--stem {text!r}: expected PART:TRACK_ID@SECONDS, e.g. drums:song00003@30")
    return Stem(m.group("part"), track_id=m.group("track"), seconds=float(m.group("sec")))


def _track_items(paths: list[Path]) -> list[tuple[str, Path, dict]]:
    """(track id, audio file, metadata) for song folders (corpus layout) and audio files."""
    items = []
    for p in paths:
        if p.is_dir():
            mix = p / "mix.flac"
            if not mix.is_file():
                raise NotFound(f"{p}: a song folder needs mix.flac (partsim corpus layout)")
            meta = {"title": p.name, "artist": "", "tags": {}}
            mfile = p / "metadata.json"
            if mfile.is_file():
                m = json.loads(mfile.read_text())
                meta["tags"] = {
                    "tempo": str(m.get("tempo", "")),
                    "key": m.get("key", {}).get("name", ""),
                    "parts": ",".join(m.get("present", [])),
                }
            items.append((p.name, mix, meta))
        elif p.is_file():
            items.append((p.stem, p, {"title": p.stem, "artist": "", "tags": {}}))
        else:
            raise NotFound(f"{p}: no such file or folder")
    ids = [i[0] for i in items]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise InvalidArgument(f"two paths give the track id {sorted(dup)[0]!r}")
    return items


def index_paths(
    gateway: str, paths: list[Path], parallel: int = 4, quiet: bool = False, conn: dict | None = None
) -> tuple[int, list[str]]:
    """Upload song folders and audio files to the gateway (``conn``: PartsimClient's connection keywords);
    (tracks indexed, one failure line per other track)."""
    from tqdm import tqdm

    from ..client import PartsimClient

    items = _track_items(paths)
    failures = []
    with PartsimClient(gateway, **(conn or {})) as c, ThreadPoolExecutor(max(1, parallel)) as pool:
        futs = {
            pool.submit(c.index_bytes, f.read_bytes(), tid, title=m["title"], tags=m["tags"]): tid
            for tid, f, m in items
        }
        for fut in tqdm(as_completed(futs), total=len(futs), desc="indexing", unit="song", disable=quiet):
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per track
                failures.append(f"{futs[fut]}: {exc}")
    return len(items) - len(failures), failures


def _cmd_index(args: argparse.Namespace) -> int:
    ok, failures = index_paths(args.gateway, args.paths, args.parallel, args.quiet, connection(args))
    for f in failures:
        print(f"partsim: failed: {f}", file=sys.stderr)
    print(f"indexed {ok} of {ok + len(failures)} tracks", file=sys.stderr)
    return 0 if not failures else 1


def _mode(args: argparse.Namespace) -> str | None:
    return "exact" if args.exact else ("approximate" if args.approximate else None)


def _weights(items: list[str]) -> dict[str, float]:
    out = {}
    for it in items:
        part, _, w = it.partition("=")
        try:
            out[part] = float(w)
        except ValueError:
            raise InvalidArgument(f"--weight {it!r}: expected PART=NUMBER") from None
    return out


def _cmd_search_mix(args: argparse.Namespace) -> int:
    from ..client import PartsimClient

    stems = [parse_stem(s) for s in args.stem]
    with PartsimClient(args.gateway, **connection(args)) as c:
        hits = c.search_mix(
            stems, top_k=args.top_k, weights=_weights(args.weight), exclude=args.exclude, mode=_mode(args)
        )
    _print_result(hits, args.json, ("track_id", "distance", "best_start", "best_end", "per_part"), print_mix_hits)
    return 0


def _cmd_search_stems(args: argparse.Namespace) -> int:
    from ..client import PartsimClient

    if len(args.stem) != 1:
        raise InvalidArgument("search-stems takes exactly one --stem")
    with PartsimClient(args.gateway, **connection(args)) as c:
        hits = c.search_stems(parse_stem(args.stem[0]), top_k=args.top_k, exclude=args.exclude, mode=_mode(args))
    _print_result(hits, args.json, ("track_id", "segment", "start", "end", "distance"), print_stem_hits)
    return 0


def _print_result(hits, as_json: bool, fields: tuple[str, ...], print_lines: Callable[[Any], None]) -> None:
    """A search's warnings (:func:`print_warnings`), then its hits: with --json a list of objects
    holding ``fields`` of each hit, else ``print_lines(hits)``."""
    print_warnings(hits, as_json)
    if as_json:
        print(json.dumps([{f: getattr(h, f) for f in fields} for h in hits], indent=1))
    else:
        print_lines(hits)


def print_warnings(result, as_json: bool) -> None:
    """A search's warnings on stderr, one line each: ``partsim: warning: CODE: message``, or with --json
    one JSON object per line (``{"warning": {...}}``); stdout keeps the hits alone."""
    for w in getattr(result, "warnings", []):
        if as_json:
            print(json.dumps({"warning": w.to_json()}), file=sys.stderr)
        else:
            print(f"partsim: warning: {w.code}: {w.message}", file=sys.stderr)


def print_mix_hits(hits) -> None:
    """One line per SearchMix hit: rank, track, distance, best-matching span, per-part distances."""
    for rank, h in enumerate(hits, 1):
        parts = " ".join(f"{p}={d:.3f}" for p, d in h.per_part.items())
        print(
            f"{rank:4d}  {h.track_id:20s} distance {h.distance:.4f}  "
            f"best {h.best_start:6.1f}-{h.best_end:6.1f} s  {parts}"
        )


def print_stem_hits(hits) -> None:
    """One line per SearchStems hit: rank, track, segment and its span, distance."""
    for rank, h in enumerate(hits, 1):
        print(
            f"{rank:4d}  {h.track_id:20s} segment {h.segment:3d} ({h.start:6.1f}-{h.end:6.1f} s)  "
            f"distance {h.distance:.4f}"
        )
