"""Commands that talk to a running gateway about its catalog: ``index``, ``search-mix``, ``search-stems``.

A query stem is the part of an indexed track at a time (``--stem PART:TRACK_ID@SECONDS``) or the part in an
audio file (``--stem-file PART:FILE[@SECONDS]``: the file, or 10 s of it from SECONDS on, uploaded as the
query's audio). ``--json`` prints a list of hits, each the client's hit as JSON (``MixHit`` / ``StemHit``:
the track's ``metadata`` with title, artist and tags; the best segment and per-part distances).
``--filter KIND:VALUE`` (repeatable) keeps only tracks meeting every condition (:data:`FILTER_GRAMMAR`,
parsed by :meth:`partsim.client.SearchFilter.parse`; a bad one is one line, exit status 2). ``index`` sends
a corpus song's tempo and key (metadata.json) as the track's BPM and musical key.

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

from ..client.types import FILTER_GRAMMAR
from ..errors import InvalidArgument, NotFound
from .args import EXIT_OK, add_gateway_options, connection, exit_status, gateway_client, integer

STEM = re.compile(r"^(?P<part>[a-z_]+):(?P<track>.+)@(?P<sec>[0-9.]+)$")
STEM_FILE = re.compile(r"^(?P<part>[a-z_]+):(?P<file>.+?)(@(?P<sec>[0-9.]+))?$")
CLIP_SECONDS = 10.0  # the span of a --stem-file FILE@SECONDS query: one catalog segment


def register(sub) -> None:
    ix = sub.add_parser("index", help="index songs: corpus song folders or audio files (track id = folder/file name)")
    ix.add_argument("paths", nargs="+", type=Path)
    ix.add_argument("--parallel", type=integer, default=4, help="uploads in flight (default 4)")
    ix.add_argument("--quiet", action="store_true")
    add_gateway_options(ix)
    ix.set_defaults(handler=_cmd_index)

    for name, helptext, handler in (
        ("search-mix", "songs whose parts sound like the query stems (eq. 6.1/6.2)", _cmd_search_mix),
        ("search-stems", "segments of one part most similar to one stem", _cmd_search_stems),
    ):
        p = sub.add_parser(
            name, help=helptext, epilog=FILTER_GRAMMAR, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        again = " (repeatable)" if name == "search-mix" else ""
        p.add_argument(
            "--stem",
            action="append",
            default=[],
            metavar="PART:TRACK_ID@SECONDS",
            help="a query stem: the part of an indexed track at a time" + again,
        )
        p.add_argument(
            "--stem-file",
            action="append",
            default=[],
            metavar="PART:FILE[@SECONDS]",
            help=f"a query stem from an audio file: the part in the file (or in {CLIP_SECONDS:g} s of it from "
            "SECONDS on), uploaded as the query" + again,
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
        p.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KIND:VALUE",
            help="only tracks meeting this condition (repeatable; all must hold): tag:K=V, tag-all:K=V, "
            "bpm:LO..HI, key:KEY, duration:LO..HI, indexed-after:DATE (see below)",
        )
        if name == "search-mix":
            p.add_argument("--weight", action="append", default=[], metavar="PART=W", help="part weight in eq. 6.2")
        p.add_argument("--json", action="store_true", help="print JSON: a list of hits with metadata")
        add_gateway_options(p)
        p.set_defaults(handler=handler)


def parse_stem(text: str):
    from ..client import Stem

    m = STEM.match(text)
    if not m:
        raise InvalidArgument(f"--stem {text!r}: expected PART:TRACK_ID@SECONDS, e.g. drums:song00003@30")
    return Stem(m.group("part"), track_id=m.group("track"), seconds=float(m.group("sec")))


def parse_stem_file(text: str):
    """A query stem from ``PART:FILE[@SECONDS]``: the file's bytes, or (with SECONDS) :data:`CLIP_SECONDS`
    of its audio from SECONDS on as WAV."""
    from ..client import Stem

    m = STEM_FILE.match(text)
    if not m:
        raise InvalidArgument(f"--stem-file {text!r}: expected PART:FILE[@SECONDS], e.g. bass:clip.flac@12")
    path = Path(m.group("file"))
    if not path.is_file():
        raise NotFound(f"--stem-file {text!r}: no such file {str(path)!r}")
    if m.group("sec") is None:
        return Stem(m.group("part"), audio=path.read_bytes())
    import io

    from ..extras import require

    require(f"--stem-file {text!r} (cutting a clip at SECONDS)", "audio")
    import soundfile as sf

    start = float(m.group("sec"))
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            if start * sr >= f.frames:
                raise InvalidArgument(f"--stem-file {text!r}: {path} is {f.frames / sr:.1f} s long")
            f.seek(int(start * sr))
            audio = f.read(int(CLIP_SECONDS * sr), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise InvalidArgument(f"--stem-file {text!r}: cannot read {path}: {exc}") from None
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="FLOAT")
    return Stem(m.group("part"), audio=buf.getvalue())


def _stems(args: argparse.Namespace) -> list:
    stems = [parse_stem(s) for s in args.stem] + [parse_stem_file(s) for s in args.stem_file]
    if not stems:
        raise InvalidArgument("give a query stem: --stem PART:TRACK_ID@SECONDS or --stem-file PART:FILE[@SECONDS]")
    return stems


def _track_items(paths: list[Path]) -> list[tuple[str, Path, dict]]:
    """(track id, audio file, metadata) for song folders (corpus layout) and audio files."""
    items = []
    for p in paths:
        if p.is_dir():
            mix = p / "mix.flac"
            if not mix.is_file():
                raise NotFound(f"{p}: a song folder needs mix.flac (partsim corpus layout)")
            meta: dict[str, Any] = {"title": p.name, "artist": "", "tags": {}}
            mfile = p / "metadata.json"
            if mfile.is_file():
                m = json.loads(mfile.read_text())
                meta["tags"] = {
                    "tempo": str(m.get("tempo", "")),
                    "key": m.get("key", {}).get("name", ""),
                    "parts": ",".join(m.get("present", [])),
                }
                meta.update(_bpm_and_key(m.get("tempo"), m.get("key", {}).get("name", "")))
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
) -> tuple[int, list[tuple[str, Exception]]]:
    """Upload song folders and audio files to the gateway (``conn``: PartsimClient's connection keywords);
    (tracks indexed, (track id, error) of each other track)."""
    from ..client import PartsimClient

    try:
        from tqdm import tqdm
    except ImportError:  # the thin client install: no progress bar

        def tqdm(items, **_):
            return items

    items = _track_items(paths)
    failures = []
    with PartsimClient(gateway, **(conn or {})) as c, ThreadPoolExecutor(max(1, parallel)) as pool:
        futs = {
            pool.submit(
                c.index_bytes,
                f.read_bytes(),
                tid,
                title=m["title"],
                tags=m["tags"],
                bpm=m.get("bpm"),
                key=m.get("key", ""),
            ): tid
            for tid, f, m in items
        }
        for fut in tqdm(as_completed(futs), total=len(futs), desc="indexing", unit="song", disable=quiet):
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per track
                failures.append((futs[fut], exc))
    return len(items) - len(failures), failures


def _cmd_index(args: argparse.Namespace) -> int:
    ok, failures = index_paths(args.gateway, args.paths, args.parallel, args.quiet, connection(args))
    for tid, exc in failures:
        print(f"partsim: failed: {tid}: {exc}", file=sys.stderr)
    print(f"indexed {ok} of {ok + len(failures)} tracks", file=sys.stderr)
    return max((exit_status(exc) for _, exc in failures), default=EXIT_OK)


def _bpm_and_key(tempo: Any, key: str) -> dict[str, Any]:
    """A corpus song's tempo and key as the track's ``bpm`` and ``key`` (left out where not usable)."""
    from ..services.tracks import BPM_RANGE, normal_key

    out: dict[str, Any] = {}
    try:
        if BPM_RANGE[0] <= float(tempo) <= BPM_RANGE[1]:
            out["bpm"] = float(tempo)
    except (TypeError, ValueError):
        pass
    try:
        out["key"] = normal_key(key) if key else ""
    except ValueError:
        pass
    return out


def _filter(args: argparse.Namespace):
    """The search filter of ``--filter`` conditions (None: none given); InvalidArgument for a bad one."""
    from ..client import SearchFilter

    if not args.filter:
        return None
    try:
        return SearchFilter.parse(args.filter)
    except ValueError as exc:
        raise InvalidArgument(f"--filter {exc}") from None


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
    stems = _stems(args)
    weights = _weights(args.weight)
    where = _filter(args)
    with gateway_client(args) as c:
        hits = c.search_mix(
            stems, top_k=args.top_k, weights=weights, exclude=args.exclude, mode=_mode(args), filter=where
        )
    _print_result(hits, args.json, print_mix_hits)
    return EXIT_OK


def _cmd_search_stems(args: argparse.Namespace) -> int:
    stems = _stems(args)
    if len(stems) != 1:
        raise InvalidArgument("search-stems takes exactly one --stem or --stem-file")
    where = _filter(args)
    with gateway_client(args) as c:
        hits = c.search_stems(stems[0], top_k=args.top_k, exclude=args.exclude, mode=_mode(args), filter=where)
    _print_result(hits, args.json, print_stem_hits)
    return EXIT_OK


def _print_result(hits, as_json: bool, print_lines: Callable[[Any], None]) -> None:
    """A search's warnings (:func:`print_warnings`), then its hits: with --json a list of each hit's
    ``to_json()`` (with the track's metadata), else ``print_lines(hits)``."""
    print_warnings(hits, as_json)
    if as_json:
        print(json.dumps([h.to_json() for h in hits], indent=1))
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
