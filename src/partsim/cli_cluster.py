"""CLI commands over the service cluster: ``up``, ``index``, ``search-mix``, ``search-stems``, ``demo``."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .cli_registry import command
from .errors import InvalidArgument, NotFound

DEFAULT_GATEWAY = "localhost:50051"
STEM = re.compile(r"^(?P<part>[a-z_]+):(?P<track>.+)@(?P<sec>[0-9.]+)$")


def add_parsers(sub) -> None:
    up = sub.add_parser("up", help="start the whole cluster on this machine (embedded Milvus Lite, no Redis)")
    up.add_argument("--data", type=Path, default=Path("partsim-data"), help="state folder (default ./partsim-data)")
    up.add_argument("--gateway", default="127.0.0.1:50051", help="gateway HOST:PORT (default 127.0.0.1:50051)")
    up.add_argument("--redis-url", default="", help="use this Redis for the cache and ingest queue")
    up.add_argument("--model", default="", help="model manifest (default: the shipped model)")
    up.add_argument("--allow", action="append", type=Path, default=[], metavar="DIR",
                    help="folder that ingest-job URIs may point into (repeatable)")

    ix = sub.add_parser("index", help="index songs: corpus song folders or audio files (track id = folder/file name)")
    ix.add_argument("paths", nargs="+", type=Path)
    ix.add_argument("--gateway", default=DEFAULT_GATEWAY)
    ix.add_argument("--parallel", type=int, default=4, help="uploads in flight (default 4)")
    ix.add_argument("--quiet", action="store_true")

    for name, helptext in (("search-mix", "songs whose parts sound like the query stems (eq. 6.1/6.2)"),
                           ("search-stems", "segments of one part most similar to one stem")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--stem", action="append", required=True, metavar="PART:TRACK_ID@SECONDS",
                       help="a query stem: the part of an indexed track at a time" +
                            (" (repeatable)" if name == "search-mix" else ""))
        p.add_argument("--top-k", type=int, default=None, help="results (default 100, at most 1000)")
        mode = p.add_mutually_exclusive_group()
        mode.add_argument("--exact", action="store_true", help="exact search (brute force over every segment)")
        mode.add_argument("--approximate", action="store_true",
                          help="per-part nearest neighbours in Milvus + exact re-rank (default: the searcher's mode)")
        p.add_argument("--exclude", action="append", default=[], metavar="TRACK_ID", help="leave out this track")
        if name == "search-mix":
            p.add_argument("--weight", action="append", default=[], metavar="PART=W", help="part weight in eq. 6.2")
        p.add_argument("--gateway", default=DEFAULT_GATEWAY)
        p.add_argument("--json", action="store_true", help="print JSON")

    demo = sub.add_parser("demo", help="make a demo corpus, start the cluster, index it, run example searches")
    demo.add_argument("--data", type=Path, default=Path("demo-data"))
    demo.add_argument("--songs", type=int, default=200)
    demo.add_argument("--seconds", type=float, default=30.0)
    demo.add_argument("--gateway", default="127.0.0.1:50051")
    demo.add_argument("--no-serve", action="store_true", help="stop after the example searches")


def parse_stem(text: str):
    from .client import Stem

    m = STEM.match(text)
    if not m:
        raise InvalidArgument(f"--stem {text!r}: expected PART:TRACK_ID@SECONDS, e.g. drums:song00003@30")
    return Stem(m.group("part"), track_id=m.group("track"), seconds=float(m.group("sec")))


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


@command("up")
def cmd_up(args) -> int:
    from .cluster import Cluster, parse_host_port

    print(f"starting partsim (state in {args.data})", flush=True)
    with Cluster(args.data, gateway=parse_host_port(args.gateway), redis_url=args.redis_url, model=args.model,
                 allowed_roots=args.allow) as cluster:
        from .client import PartsimClient

        with PartsimClient(cluster.gateway) as c:
            c.wait_ready(300)
        print(f"partsim is serving on {cluster.gateway}; Ctrl-C stops it", flush=True)
        _wait_for_signal()
        print("stopping...", flush=True)
    return 0


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
                meta["tags"] = {"tempo": str(m.get("tempo", "")), "key": m.get("key", {}).get("name", ""),
                                "parts": ",".join(m.get("present", []))}
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


def index_paths(gateway: str, paths: list[Path], parallel: int = 4, quiet: bool = False) -> tuple[int, list[str]]:
    from tqdm import tqdm

    from .client import PartsimClient

    items = _track_items(paths)
    failures = []
    with PartsimClient(gateway) as c, ThreadPoolExecutor(max(1, parallel)) as pool:
        futs = {pool.submit(c.index_bytes, f.read_bytes(), tid, title=m["title"], tags=m["tags"]): tid
                for tid, f, m in items}
        for fut in tqdm(as_completed(futs), total=len(futs), desc="indexing", unit="song", disable=quiet):
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per track
                failures.append(f"{futs[fut]}: {exc}")
    return len(items) - len(failures), failures


@command("index")
def cmd_index(args) -> int:
    ok, failures = index_paths(args.gateway, args.paths, args.parallel, args.quiet)
    for f in failures:
        print(f"partsim: failed: {f}", file=sys.stderr)
    print(f"indexed {ok} of {ok + len(failures)} tracks", file=sys.stderr)
    return 0 if not failures else 1


def _mode(args) -> str | None:
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


@command("search-mix")
def cmd_search_mix(args) -> int:
    from .client import PartsimClient

    stems = [parse_stem(s) for s in args.stem]
    with PartsimClient(args.gateway) as c:
        hits = c.search_mix(stems, top_k=args.top_k, weights=_weights(args.weight), exclude=args.exclude,
                            mode=_mode(args))
    print_warnings(hits, args.json)
    if args.json:
        print(json.dumps([{"track_id": h.track_id, "distance": h.distance, "best_start": h.best_start,
                           "best_end": h.best_end, "per_part": h.per_part} for h in hits], indent=1))
    else:
        print_mix_hits(hits)
    return 0


def print_warnings(result, as_json: bool) -> None:
    """A search's warnings on stderr, one line each: ``partsim: warning: CODE: message``, or with --json
    one JSON object per line (``{"warning": {...}}``); stdout keeps the hits alone."""
    for w in getattr(result, "warnings", []):
        if as_json:
            print(json.dumps({"warning": w.to_json()}), file=sys.stderr)
        else:
            print(f"partsim: warning: {w.code}: {w.message}", file=sys.stderr)


def print_mix_hits(hits) -> None:
    for rank, h in enumerate(hits, 1):
        parts = " ".join(f"{p}={d:.3f}" for p, d in h.per_part.items())
        print(f"{rank:4d}  {h.track_id:20s} distance {h.distance:.4f}  best {h.best_start:6.1f}-{h.best_end:6.1f} s  {parts}")


@command("search-stems")
def cmd_search_stems(args) -> int:
    from .client import PartsimClient

    if len(args.stem) != 1:
        raise InvalidArgument("search-stems takes exactly one --stem")
    with PartsimClient(args.gateway) as c:
        hits = c.search_stems(parse_stem(args.stem[0]), top_k=args.top_k, exclude=args.exclude,
                              mode=_mode(args))
    print_warnings(hits, args.json)
    if args.json:
        print(json.dumps([{"track_id": h.track_id, "segment": h.segment, "start": h.start, "end": h.end,
                           "distance": h.distance} for h in hits], indent=1))
    else:
        for rank, h in enumerate(hits, 1):
            print(f"{rank:4d}  {h.track_id:20s} segment {h.segment:3d} ({h.start:6.1f}-{h.end:6.1f} s)  "
                  f"distance {h.distance:.4f}")
    return 0


@command("demo")
def cmd_demo(args) -> int:
    from .client import PartsimClient, Stem
    from .cluster import Cluster, parse_host_port
    from .corpus.make import CorpusConfig, make_corpus
    from .corpus.soundfonts import default_soundfonts

    corpus = args.data / "corpus"
    if not (corpus / "index.json").is_file():
        print(f"making a demo corpus of {args.songs} songs x {args.seconds:g} s in {corpus}", flush=True)
        make_corpus(CorpusConfig(out=corpus, songs=args.songs, seconds=args.seconds, seed=1,
                                 soundfonts=default_soundfonts(), workers=2), progress=True)
    songs = sorted(p for p in corpus.iterdir() if p.is_dir() and (p / "mix.flac").is_file())
    print("starting the cluster", flush=True)
    with Cluster(args.data / "state", gateway=parse_host_port(args.gateway)) as cluster:
        with PartsimClient(cluster.gateway) as c:
            c.wait_ready(300)
            ok, failures = index_paths(cluster.gateway, songs, parallel=4)
            for f in failures:
                print(f"failed: {f}", file=sys.stderr)
            drums_song, bass_song = _demo_pair(songs)
            print(f"\nSearchMix: the drums of {drums_song} (0-10 s) with the bass of {bass_song} (10-20 s)")
            t = time.perf_counter()
            hits = c.search_mix([Stem("drums", track_id=drums_song, seconds=5),
                                 Stem("bass", track_id=bass_song, seconds=15)], top_k=10)
            print_mix_hits(hits)
            print_warnings(hits, False)
            print(f"({(time.perf_counter() - t) * 1000:.0f} ms)")
            print(f"\nSearchStems: segments whose bass sounds like {bass_song}'s at 15 s")
            for rank, h in enumerate(c.search_stems(Stem("bass", track_id=bass_song, seconds=15), top_k=10), 1):
                print(f"{rank:4d}  {h.track_id:20s} segment {h.segment:3d} ({h.start:6.1f}-{h.end:6.1f} s)  "
                      f"distance {h.distance:.4f}")
        if args.no_serve:
            return 0
        print(f"\npartsim is serving on {cluster.gateway}; try\n  partsim search-mix --stem drums:{drums_song}@5 "
              f"--stem bass:{bass_song}@15 --gateway {cluster.gateway}\nCtrl-C stops it", flush=True)
        _wait_for_signal()
    return 0


def _demo_pair(songs: list[Path]) -> tuple[str, str]:
    """Two songs: one whose drums play at 5 s, another whose bass plays at 15 s."""
    def plays(song: Path, part: str, t: float) -> bool:
        m = json.loads((song / "metadata.json").read_text())
        active = m.get("parts", {}).get(part, {}).get("active", [])
        return any(a <= t - 2 and t + 2 <= b for a, b in active)

    drums = next((s.name for s in songs if plays(s, "drums", 5)), songs[0].name)
    bass = next((s.name for s in songs if plays(s, "bass", 15) and s.name != drums), songs[-1].name)
    return drums, bass
