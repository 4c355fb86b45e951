"""Benchmark of the searcher's two paths on a synthetic clustered catalog, on Milvus Lite or a Milvus server.

    python -m partsim.services.searcher.bench --songs 10000
    python -m partsim.services.searcher.bench --songs 100000 --start-server standalone --replicas 2 \
        --index-type HNSW --hnsw-ef 0,400

builds the catalog (index time: insert, then until the server serves the index: progress and probe
searches, :meth:`.store.SearchStore.wait_for_index`, and, for a local server child, until its CPU is idle,
i.e. background index builds are done), then, for the same random 1-, 2- and 3-part queries, prints
SearchMix latency p50/p99 of the exact and the approximate path and the approximate path's
recall@100 against the exact one, per number of query parts, for each search setting
(``--hnsw-ef`` / ``--ivf-nprobe`` / ``--ann-candidates`` take comma-separated lists: search-time
parameters, tried on the same index), with one searcher and (``--replicas 2``) two searcher processes
on the same server, the queries spread over both and run concurrently; and the RSS (VmHWM peak,
VmRSS now) of every process: the bench (the writer), each searcher, and the Milvus server when it
is a local child (``--start-server lite``: a ``milvus-lite server``; ``--start-server standalone``: the Milvus 2.3.5
standalone of the ``milvus`` package, :mod:`.servers`; on loopback ports the OS picks, for the run).

Without ``--milvus-uri`` / ``--start-server`` the catalog is in a temporary Milvus Lite folder (or
``--data``) inside the bench process, which is then the only searcher (one replica).

The catalog imitates what the CSN produces: songs belong to "styles" (a few hundred), each
style has a centre per part; a song's part vector is its style's centre (or, sometimes, another
style's: parts mix across styles) plus a song offset, and each segment adds its own noise.
Some parts are absent (zero vector) in some songs or segments.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from partsim.data import taxonomy

from .meta import TrackInfo
from .milvus import INDEX_TYPES, IVF_TYPES, pk
from .retrieval import Query
from .servers import MilvusLiteServer, MilvusProcess, MilvusStandalone, standalone_missing, unpack_standalone
from .store import MIRROR_BYTES, SearchStore, Segments

PARTS = list(taxonomy.PARTS)
ABSENT = {"drums": 0.1, "bass": 0.1, "piano": 0.4, "guitar": 0.4, "others": 0.2}  # per song


def make_catalog(
    songs: int, segments: int = 4, parts: list[str] = PARTS, dim: int = 128, styles: int = 300, seed: int = 0
) -> list[tuple[TrackInfo, Segments]]:
    """A synthetic clustered catalog: ``songs`` tracks of ``segments`` 10-s segments."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((styles, len(parts), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=2, keepdims=True)
    style = rng.integers(0, styles, songs)
    out = []
    for s in range(songs):
        own = np.where(rng.random(len(parts)) < 0.3, rng.integers(0, styles, len(parts)), style[s])
        base = centres[own, np.arange(len(parts))] + rng.standard_normal((len(parts), dim)) * (0.6 / np.sqrt(dim))
        vec = base[:, None, :] + rng.standard_normal((len(parts), segments, dim)) * (0.4 / np.sqrt(dim))
        present = np.ones((len(parts), segments), dtype=bool)
        for i, p in enumerate(parts):
            if rng.random() < ABSENT.get(p, 0.2):
                present[i] = False
            present[i] &= rng.random(segments) > 0.1
        vec = np.where(present[:, :, None], vec, rng.standard_normal(vec.shape) * 1e-3).astype(np.float32)
        idx = np.arange(segments)
        out.append(
            (
                TrackInfo(
                    f"song-{s:06d}",
                    title=f"Song {s}",
                    artist=f"Artist {style[s]}",
                    num_segments=segments,
                    duration_seconds=10.0 * segments,
                    segment_seconds=10.0,
                    model_version="synthetic",
                    indexed_at=time.time(),
                ),
                Segments(idx, idx * 10.0, idx * 10.0 + 10.0, vec, present),
            )
        )
    return out


def make_queries(
    catalog: list[tuple[TrackInfo, Segments]],
    n: int,
    parts: list[str] = PARTS,
    seed: int = 1,
    max_parts: int = 3,
    min_parts: int = 1,
) -> list[list[Query]]:
    """Random min_parts..max_parts-part queries: each part is a present segment of a random song, perturbed."""
    rng = np.random.default_rng(seed)
    queries: list[list[Query]] = []
    while len(queries) < n:
        k = int(rng.integers(min_parts, max_parts + 1))
        chosen = rng.choice(len(parts), size=k, replace=False)
        q = []
        for pi in sorted(chosen):
            for _ in range(100):
                _, seg = catalog[int(rng.integers(len(catalog)))]
                j = int(rng.integers(len(seg)))
                if seg.present[pi, j]:
                    v = seg.vectors[pi, j]
                    q.append(
                        Query(
                            parts[pi],
                            v
                            + rng.standard_normal(v.shape).astype(np.float32)
                            * 0.3
                            * float(np.linalg.norm(v))
                            / np.sqrt(v.size),
                        )
                    )
                    break
        if len(q) == k:
            queries.append(q)
    return queries


def recall(exact: list[str], approx: list[str]) -> float:
    """|approx top-k ∩ exact top-k| / |exact top-k| (1.0 for an empty exact list)."""
    return len(set(exact) & set(approx)) / len(exact) if exact else 1.0


def build(store: SearchStore, catalog: list[tuple[TrackInfo, Segments]], batch: int = 2000, probes: int = 16) -> float:
    """Insert in large batches, then wait until Milvus serves the index (progress and probe searches of
    ``probes`` rows spread over the catalog, :meth:`SearchStore.wait_for_index`); returns the seconds it took."""
    t0 = time.perf_counter()
    for i in range(0, len(catalog), batch):
        store.upsert_many(catalog[i : i + batch])
    store.wait_for_index(probe_keys=probe_keys(store, catalog, probes))
    return time.perf_counter() - t0


def probe_keys(store: SearchStore, catalog: list[tuple[TrackInfo, Segments]], n: int) -> list[str]:
    """Primary keys of ``n`` rows spread evenly over the catalog (their tracks' current versions)."""
    if not catalog or n <= 0:
        return []
    picks = [catalog[int(i)][0].track_id for i in np.linspace(0, len(catalog) - 1, n)]
    gens = store.tracks.generations(picks, "Strong")
    return [pk(t, 0, gens[t]) for t in picks if t in gens]


def measure(store: SearchStore, queries: list[list[Query]], top_k: int = 100) -> dict:
    """Latency of both paths and recall@top_k of the approximate one, per query."""
    lat: dict[str, list[float]] = {"exact": [], "approx": []}
    recalls, candidates = [], []
    for q in queries:
        t = time.perf_counter()
        ex = store.search_mix(q, top_k, exact=True)
        lat["exact"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ap = store.search_mix(q, top_k, exact=False)
        lat["approx"].append(time.perf_counter() - t)
        recalls.append(recall([h.track_id for h in ex.hits], [h.track_id for h in ap.hits]))
        candidates.append(ap.candidates)
    return {
        "latency": {k: np.asarray(v) for k, v in lat.items()},
        "recall": np.asarray(recalls),
        "candidates": np.asarray(candidates),
    }


# ---------------------------------------------------------------- search settings, runs, processes


def apply_setting(store: SearchStore, setting: dict) -> None:
    """Set search-time parameters on an open store: ef (HNSW), nprobe (IVF), K' and grouping."""
    m = store.milvus
    if "ef" in setting:
        m.hnsw["ef"] = int(setting["ef"])
    if "nprobe" in setting:
        m.ivf["nprobe"] = int(setting["nprobe"])
    if "candidates" in setting:
        store.ann.candidates = int(setting["candidates"])
    if "grouping" in setting:
        store.ann.grouping = bool(setting["grouping"])


def run_queries(store: SearchStore, queries: list[list[Query]], top_k: int, exact: bool, setting: dict) -> list:
    """Each query's (seconds, hit track ids, candidates), searched one after the other."""
    apply_setting(store, setting)
    out = []
    for q in queries:
        t = time.perf_counter()
        r = store.search_mix(q, top_k, exact=exact)
        out.append((time.perf_counter() - t, [h.track_id for h in r.hits], r.candidates))
    return out


def rss(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process in MiB, from /proc/<pid>/status ((nan, nan) when it cannot be read)."""
    got = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                got[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return got.get("VmHWM", float("nan")), got.get("VmRSS", float("nan"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 3600.0, busy: float = 0.05, quiet: int = 3) -> float:
    """Wait until a process has used under ``busy`` of a core for ``quiet`` seconds in a row (a Milvus server
    child done with its background index builds); returns the seconds waited."""
    t0 = time.monotonic()
    calm, last = 0, cpu_seconds(pid)
    while calm < quiet and time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < busy else 0
        last = now
    return time.monotonic() - t0


def start_server(kind: str, folder: Path) -> MilvusProcess:
    """A Milvus server child (``lite``: ``milvus-lite server``; ``standalone``: Milvus 2.3.5 of the ``milvus``
    package) on loopback ports the OS picks, its data in ``folder``; started (it answers pymilvus)."""
    if kind == "lite":
        return MilvusLiteServer(folder / "milvus-lite").start()
    why = standalone_missing()
    if why:
        raise SystemExit(f"bench: --start-server standalone: {why}")
    return MilvusStandalone(folder / "milvus-standalone", unpack_standalone(folder / "milvus-bin")).start()


def stop(proc: mp.process.BaseProcess) -> None:
    """Terminate a replica child, then kill it if it has not ended within 30 s (a server child stops itself:
    :meth:`.servers.MilvusProcess.stop`)."""
    proc.terminate()
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _replica(conn, uri: str, args: dict) -> None:
    """A searcher replica (a child process): opens the catalog on the server, fills its mirror, then runs
    the query batches the bench sends (``("run", queries, top_k, exact, setting)``) until ``None``."""
    logging.basicConfig(level=logging.WARNING)
    # a server that gives no MVCC timestamp (milvus-lite server): pymilvus warns at every query iterator
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    t = time.perf_counter()
    store = _store(uri, args, mirror_bytes=args["mirror_bytes"]).open(wait=True)
    conn.send(("ready", time.perf_counter() - t))
    try:
        while (msg := conn.recv()) is not None:
            _, queries, top_k, exact, setting = msg
            conn.send(run_queries(store, queries, top_k, exact, setting))
    finally:
        store.close()


def _store(uri: str, args: dict, mirror_bytes: int) -> SearchStore:
    return SearchStore(
        uri,
        None,
        PARTS,
        args["dim"],
        index_type=args["index_type"],
        ann_candidates=args["ann_candidates"],
        hnsw_m=args["hnsw_m"],
        hnsw_ef_construction=args["hnsw_ef_construction"],
        ivf_nlist=args["ivf_nlist"],
        flush_rows=1 << 30,  # never seals on its own: build() does, once
        collection_prefix=args["prefix"],
        mirror_bytes=mirror_bytes,
        search_consistency=args["consistency"],
        orphan_grace_seconds=0 if args["lite"] else 600.0,
    )


class Replicas:
    """Searcher replicas: the bench's own store (Milvus Lite in process) or child processes on a server."""

    def __init__(self, store: SearchStore | None, uri: str, n: int, args: dict):
        self.store, self.children, self.fill = store, [], []
        if store is not None:
            return
        ctx = mp.get_context("spawn")
        for _ in range(n):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_replica, args=(there, uri, args), daemon=True)
            proc.start()
            self.children.append((proc, here))
        for _, conn in self.children:
            _, seconds = conn.recv()
            self.fill.append(seconds)

    def pids(self) -> list[int]:
        return [os.getpid()] if self.store is not None else [p.pid or 0 for p, _ in self.children]

    def run(self, n: int, queries: list[list[Query]], top_k: int, exact: bool, setting: dict) -> tuple[list, float]:
        """The queries over the first ``n`` replicas (query i on replica i mod n, the replicas at once); each
        query's result in order, and the wall seconds of the whole batch."""
        t = time.perf_counter()
        if self.store is not None:
            return run_queries(self.store, queries, top_k, exact, setting), time.perf_counter() - t
        shares = [queries[r::n] for r in range(n)]
        for (_, conn), share in zip(self.children[:n], shares):
            conn.send(("run", share, top_k, exact, setting))
        got = [conn.recv() for _, conn in self.children[:n]]
        wall = time.perf_counter() - t
        out: list = [None] * len(queries)
        for r, res in enumerate(got):
            out[r::n] = res
        return out, wall

    def close(self) -> None:
        for _, conn in self.children:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc, _ in self.children:
            proc.join(timeout=60)
            if proc.is_alive():
                stop(proc)


def settings_of(args: argparse.Namespace) -> list[dict]:
    """The search settings to try: each ef (HNSW) or nprobe (IVF) x each K'."""
    ks = [int(k) for k in str(args.ann_candidates).split(",")]
    if args.index_type == "HNSW":
        base = [{"ef": int(e)} for e in str(args.hnsw_ef).split(",")]
    elif args.index_type in IVF_TYPES:
        base = [{"nprobe": int(p)} for p in str(args.ivf_nprobe).split(",")]
    else:
        base = [{}]
    return [{**b, "candidates": k} for b in base for k in ks]


def describe(setting: dict) -> str:
    return " ".join(f"{'K' + chr(39) if k == 'candidates' else k}={v}" for k, v in setting.items() if k != "grouping")


def pct(values: list[float], q: float) -> float:
    return 1e3 * float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m partsim.services.searcher.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--songs", type=int, default=10000)
    ap.add_argument("--segments", type=int, default=4, help="segments per song")
    ap.add_argument("--dim", type=int, default=128, help="subspace dimension")
    ap.add_argument("--queries", type=int, default=30, help="queries per number of parts (1, 2, 3)")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--index-type", default="HNSW", choices=list(INDEX_TYPES))
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-ef-construction", type=int, default=100)
    ap.add_argument("--hnsw-ef", default="0", help="HNSW search ef, comma-separated values to try (0: the limit)")
    ap.add_argument("--ivf-nlist", type=int, default=256)
    ap.add_argument("--ivf-nprobe", default="32", help="IVF search nprobe, comma-separated values to try")
    ap.add_argument("--ann-candidates", default="1000", help="K' per query part, comma-separated values to try")
    ap.add_argument("--consistency", default="Bounded", help="the searches' consistency level")
    ap.add_argument("--milvus-uri", default="", help="a Milvus server (http://host:19530); default: Milvus Lite")
    ap.add_argument(
        "--start-server",
        nargs="?",
        const="lite",
        default="",
        choices=["lite", "standalone"],
        help="start a Milvus server child for the run: lite (milvus-lite server, the default) or standalone "
        "(Milvus 2.3.5 of the milvus package, C++ search)",
    )
    ap.add_argument("--replicas", type=int, default=1, choices=[1, 2], help="2: also two searcher processes")
    ap.add_argument("--batch", type=int, default=2000, help="songs per insert batch")
    ap.add_argument("--data", default="", help="folder for Milvus Lite / the server's data (default: temporary)")
    args = ap.parse_args(argv)
    for name in (
        "songs",
        "segments",
        "dim",
        "queries",
        "top_k",
        "batch",
        "hnsw_m",
        "hnsw_ef_construction",
        "ivf_nlist",
    ):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 1 or more")
    try:
        settings_of(args)
    except ValueError:
        ap.error("--hnsw-ef, --ivf-nprobe and --ann-candidates take comma-separated whole numbers")
    remote = bool(args.milvus_uri) or args.start_server
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    if args.replicas > 1 and not remote:
        ap.error("--replicas 2 needs a Milvus server: --milvus-uri or --start-server")

    tmp = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="partsim-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    server: MilvusProcess | None = None
    replicas: Replicas | None = None
    store: SearchStore | None = None
    rows = args.songs * args.segments
    conf = {
        "dim": args.dim,
        "index_type": args.index_type,
        "ann_candidates": int(str(args.ann_candidates).split(",")[0]),
        "hnsw_m": args.hnsw_m,
        "hnsw_ef_construction": args.hnsw_ef_construction,
        "ivf_nlist": args.ivf_nlist,
        "prefix": f"bench{os.getpid()}_",
        "consistency": args.consistency,
        "lite": not remote,
        "mirror_bytes": max(MIRROR_BYTES, int(rows * len(PARTS) * (args.dim * 4 + 64) * 1.5)),
    }
    try:
        if args.start_server:
            server = start_server(args.start_server, tmp)
            uri = server.uri
            where = f"{server.name} server (child pid {server.pid}, up in {server.started_in:.1f} s) at {uri}"
        elif args.milvus_uri:
            uri, where = args.milvus_uri, f"Milvus at {args.milvus_uri}"
        else:
            uri, where = str(tmp / "milvus.db"), "Milvus Lite in the bench process"
        # the writer: on a server it keeps no mirror (the replicas have theirs); with Lite it is the searcher
        store = _store(uri, conf, conf["mirror_bytes"] if not remote else 0).open(wait=True)
        t = time.perf_counter()
        catalog = make_catalog(args.songs, args.segments, dim=args.dim)
        queries = {n: make_queries(catalog, args.queries, seed=n, max_parts=n, min_parts=n) for n in (1, 2, 3)}
        print(
            f"catalog: {args.songs} songs x {args.segments} segments x {len(PARTS)} parts = "
            f"{rows * len(PARTS)} rows, dim {args.dim} (generated in {time.perf_counter() - t:.1f} s)"
        )
        print(f"Milvus: {where}")
        idx = describe_index(args)
        t = time.perf_counter()
        for i in range(0, len(catalog), args.batch):
            store.upsert_many(catalog[i : i + args.batch])
        inserted = time.perf_counter() - t
        served = store.wait_for_index(probe_keys=probe_keys(store, catalog, 16))
        ready = time.perf_counter() - t
        idle = wait_idle(server.pid) if server is not None else 0.0
        print(
            f"index {idx}: insert {inserted:.1f} s, then served (progress + probe searches) after "
            f"{ready - inserted:.1f} s (probes {served:.1f} s), server idle (background index builds done) "
            f"{idle:.1f} s later: {ready + idle:.1f} s in all"
        )
        del catalog
        if remote:
            replicas = Replicas(None, uri, args.replicas, conf)
            print("searcher mirrors filled from Milvus in " + ", ".join(f"{s:.1f} s" for s in replicas.fill))
        else:
            replicas = Replicas(store, uri, 1, conf)
        top_k = args.top_k
        for n in (1, 2, 3):  # warm-up
            replicas.run(len(replicas.pids()), queries[n][:2], top_k, True, {})
            replicas.run(len(replicas.pids()), queries[n][:2], top_k, False, {})
        truth = {n: replicas.run(1, queries[n], top_k, True, {})[0] for n in (1, 2, 3)}
        print()
        print(f"SearchMix, top_k {top_k}, {args.queries} queries per row; ms; recall@{top_k} against exact")
        head = (
            f"{'replicas':>11} {'search setting':<24} {'parts':>5} {'exact p50':>9} {'p99':>7} "
            f"{'approx p50':>10} {'p99':>7} {'recall mean':>11} {'min':>5} {'candidates':>10} {'approx q/s':>10}"
        )
        print(head)
        for nrep in range(1, args.replicas + 1):
            ex_lat = {}
            for n in (1, 2, 3):
                res, _ = replicas.run(nrep, queries[n], top_k, True, {}) if nrep > 1 else (truth[n], 0.0)
                ex_lat[n] = [r[0] for r in res]
            _rows(args, str(nrep), lambda qs, v, n=nrep: replicas.run(n, qs, top_k, False, v), queries, truth, ex_lat)
        if remote:  # the writer keeps no mirror: the approximate path as a searcher over its mirror budget runs it
            writer = Replicas(store, uri, 1, conf)
            _rows(args, "1 no mirror", lambda qs, v: writer.run(1, qs, top_k, False, v), queries, truth, None)
        print()
        procs = [("bench (writer)", os.getpid())]
        procs += [(f"searcher {i + 1}", p) for i, p in enumerate(replicas.pids()) if p != os.getpid()]
        if server is not None:
            procs.append((f"{server.name} server", server.pid))
        for what, pid in procs:
            hwm, now = rss(pid)
            print(f"RSS {what:<20} pid {pid:>7}: peak (VmHWM) {hwm:8.0f} MiB, now (VmRSS) {now:8.0f} MiB")
    finally:
        if replicas is not None and replicas.store is None:
            replicas.close()
        if store is not None:
            store.close()
        if server is not None:
            server.stop()
        if not args.data:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _rows(args, label: str, run, queries: dict, truth: dict, ex_lat: dict | None) -> None:
    """The table's rows of one searcher set-up (``run(queries, setting)`` -> (results, wall seconds)): each
    search setting x 1-3 query parts (one part: grouped and per-part); ``ex_lat``: the exact path's latencies
    per number of parts (None: not measured, printed as '-')."""
    for setting in settings_of(args):
        for n in (1, 2, 3):
            variants = [setting]
            if n == 1:  # one part: Milvus's grouping search, and the per-part path for comparison
                variants = [{**setting, "grouping": True}, {**setting, "grouping": False}]
            for v in variants:
                res, wall = run(queries[n], v)
                rec = [recall(tr[1], r[1]) for tr, r in zip(truth[n], res)]
                lat = [r[0] for r in res]
                name = describe(v) + (" grouped" if v.get("grouping") else "")
                if n == 1 and not v.get("grouping"):
                    name = describe(v) + " per-part"
                exact = f"{pct(ex_lat[n], 50):>9.1f} {pct(ex_lat[n], 99):>7.1f}" if ex_lat else f"{'-':>9} {'-':>7}"
                print(
                    f"{label:>11} {name:<24} {n:>5} {exact} "
                    f"{pct(lat, 50):>10.1f} {pct(lat, 99):>7.1f} {np.mean(rec):>11.4f} {min(rec):>5.2f} "
                    f"{int(np.median([r[2] for r in res])):>10} {len(res) / wall:>10.1f}",
                    flush=True,
                )


def describe_index(args: argparse.Namespace) -> str:
    if args.index_type == "HNSW":
        return f"HNSW M={args.hnsw_m} efConstruction={args.hnsw_ef_construction}"
    if args.index_type in IVF_TYPES:
        return f"{args.index_type} nlist={args.ivf_nlist}"
    return args.index_type


if __name__ == "__main__":
    raise SystemExit(main())
