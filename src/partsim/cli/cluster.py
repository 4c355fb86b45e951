"""The cluster on this machine: ``partsim up`` (start it and serve) and ``partsim demo`` (a demo corpus,
the cluster, indexing and example searches). The launcher itself is ``partsim.cluster``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from .args import add_connection_options, connection, integer, number
from .catalog import index_paths, print_mix_hits, print_stem_hits, print_warnings


def register(sub) -> None:
    up = sub.add_parser("up", help="start the whole cluster on this machine (embedded Milvus Lite, no Redis)")
    up.add_argument("--data", type=Path, default=Path("partsim-data"), help="state folder (default ./partsim-data)")
    up.add_argument(
        "--gateway",
        default="127.0.0.1:50051",
        help="gateway HOST:PORT (default 127.0.0.1:50051; every other port is on 127.0.0.1 too). Beyond loopback "
        "it needs TLS and auth (PARTSIM_GATEWAY_TLS_CERT/_TLS_KEY/_AUTH in the environment) or --insecure",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="let a non-loopback --gateway serve without TLS and auth (a trusted network only; logs a warning)",
    )
    up.add_argument(
        "--http",
        default="127.0.0.1:8080",
        help="HOST:PORT of the HTTP/JSON API and web app (default 127.0.0.1:8080; port 0: any; 'off': none); "
        "beyond loopback on the gateway's terms",
    )
    up.add_argument("--redis-url", default="", help="use this Redis for the cache and ingest queue")
    up.add_argument("--model", default="", help="model manifest (default: the shipped model)")
    up.add_argument(
        "--allow",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="folder that ingest-job URIs may point into (repeatable)",
    )
    add_connection_options(up)  # how `up` checks that its gateway serves (TLS when it serves TLS)
    up.set_defaults(handler=_cmd_up, needs="server,cpu")

    demo = sub.add_parser("demo", help="make a demo corpus, start the cluster, index it, run example searches")
    demo.add_argument("--data", type=Path, default=Path("demo-data"))
    demo.add_argument("--songs", type=integer, default=200)
    demo.add_argument("--seconds", type=number, default=30.0)
    demo.add_argument("--gateway", default="127.0.0.1:50051")
    demo.add_argument("--http", default="127.0.0.1:8080", help="HTTP/JSON API and web app HOST:PORT ('off': none)")
    demo.add_argument("--no-serve", action="store_true", help="stop after the example searches")
    add_connection_options(demo)
    demo.set_defaults(handler=_cmd_demo, needs="server,corpus,cpu")


def _stop_on_signal() -> threading.Event:
    """An event that SIGINT/SIGTERM set. Installed before "serving" is printed, so a Ctrl-C that follows the
    line (a script sends it at once) is a clean stop (exit 0), never a KeyboardInterrupt (exit 130)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    return done


def _wait(done: threading.Event) -> None:
    while not done.wait(1.0):
        pass


def _cmd_up(args: argparse.Namespace) -> int:
    from ..client import PartsimClient
    from ..cluster import Cluster, parse_host_port
    from ..services.config import is_loopback

    print(f"starting partsim (state in {args.data})", flush=True)
    with Cluster(
        args.data,
        gateway=parse_host_port(args.gateway),
        redis_url=args.redis_url,
        model=args.model,
        allowed_roots=args.allow,
        insecure=args.insecure,
        http=_http(args.http),
    ) as cluster:
        with PartsimClient(cluster.gateway, **connection(args)) as c:
            c.wait_ready(300)
        bind = parse_host_port(args.gateway)  # the truth: the gateway prints 127.0.0.1 for 0.0.0.0
        done = _stop_on_signal()
        print(f"partsim is serving on {cluster.gateway if is_loopback(bind) else bind}; Ctrl-C stops it", flush=True)
        if cluster.http:
            print(f"web app: {cluster.http}", flush=True)
        _wait(done)
        print("stopping...", flush=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..client import PartsimClient, Stem
    from ..cluster import Cluster, parse_host_port
    from ..corpus.make import CorpusConfig, make_corpus
    from ..corpus.soundfonts import default_soundfonts

    corpus = args.data / "corpus"
    if not (corpus / "index.json").is_file():
        print(f"making a demo corpus of {args.songs} songs x {args.seconds:g} s in {corpus}", flush=True)
        make_corpus(
            CorpusConfig(
                out=corpus, songs=args.songs, seconds=args.seconds, seed=1, soundfonts=default_soundfonts(), workers=2
            ),
            progress=True,
        )
    songs = sorted(p for p in corpus.iterdir() if p.is_dir() and (p / "mix.flac").is_file())
    print("starting the cluster", flush=True)
    with Cluster(args.data / "state", gateway=parse_host_port(args.gateway), http=_http(args.http)) as cluster:
        with PartsimClient(cluster.gateway, **connection(args)) as c:
            c.wait_ready(300)
            if cluster.http:  # serving already: the songs show up in it as they are indexed
                print(f"web app: {cluster.http}", flush=True)
            ok, failures = index_paths(cluster.gateway, songs, parallel=4, conn=connection(args))
            for tid, exc in failures:
                print(f"failed: {tid}: {exc}", file=sys.stderr)
            drums_song, bass_song = _demo_pair(songs)
            print(f"\nSearchMix: the drums of {drums_song} (0-10 s) with the bass of {bass_song} (10-20 s)")
            t = time.perf_counter()
            hits = c.search_mix(
                [Stem("drums", track_id=drums_song, seconds=5), Stem("bass", track_id=bass_song, seconds=15)], top_k=10
            )
            print_mix_hits(hits)
            print_warnings(hits, False)
            print(f"({(time.perf_counter() - t) * 1000:.0f} ms)")
            print(f"\nSearchStems: segments whose bass sounds like {bass_song}'s at 15 s")
            print_stem_hits(c.search_stems(Stem("bass", track_id=bass_song, seconds=15), top_k=10))
        if args.no_serve:
            return 0
        done = _stop_on_signal()
        print(
            f"\npartsim is serving on {cluster.gateway}; try\n  partsim search-mix --stem drums:{drums_song}@5 "
            f"--stem bass:{bass_song}@15 --gateway {cluster.gateway}\nCtrl-C stops it",
            flush=True,
        )
        if cluster.http:
            print(f"web app: {cluster.http}", flush=True)
        _wait(done)
    return 0


def _http(text: str) -> str:
    """``--http``: HOST:PORT, or "" for "off"."""
    from ..cluster import parse_host_port

    return "" if text.strip().lower() in ("off", "none", "") else parse_host_port(text)


def _demo_pair(songs: list[Path]) -> tuple[str, str]:
    """Two songs: one whose drums play at 5 s, another whose bass plays at 15 s."""

    def plays(song: Path, part: str, t: float) -> bool:
        m = json.loads((song / "metadata.json").read_text())
        active = m.get("parts", {}).get(part, {}).get("active", [])
        return any(a <= t - 2 and t + 2 <= b for a, b in active)

    drums = next((s.name for s in songs if plays(s, "drums", 5)), songs[0].name)
    bass = next((s.name for s in songs if plays(s, "bass", 15) and s.name != drums), songs[-1].name)
    return drums, bass
