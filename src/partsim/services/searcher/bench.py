"""Benchmark of the searcher's two paths on a synthetic clustered catalog.

    python -m partsim.services.searcher.bench --songs 10000

builds a catalog in a temporary Milvus Lite folder (or ``--data``), then, for the same random
1-3-part queries, prints SearchMix latency p50/p99 of the exact and the approximate path and
the approximate path's recall@100 against the exact one.

The catalog imitates what the CSN produces: songs belong to "styles" (a few hundred), each
style has a centre per part; a song's part vector is its style's centre (or, sometimes, another
style's: parts mix across styles) plus a song offset, and each segment adds its own noise.
Some parts are absent (zero vector) in some songs or segments.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from partsim.data import taxonomy

from .meta import TrackInfo
from .retrieval import Query
from .store import SearchStore, Segments

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
    catalog: list[tuple[TrackInfo, Segments]], n: int, parts: list[str] = PARTS, seed: int = 1, max_parts: int = 3
) -> list[list[Query]]:
    """Random 1..max_parts-part queries: each part is a present segment of a random song, perturbed."""
    rng = np.random.default_rng(seed)
    queries: list[list[Query]] = []
    while len(queries) < n:
        k = int(rng.integers(1, max_parts + 1))
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


def build(store: SearchStore, catalog: list[tuple[TrackInfo, Segments]], batch: int = 2000) -> float:
    """Insert in large batches, then wait for Milvus's index; returns the seconds it took."""
    t0 = time.perf_counter()
    for i in range(0, len(catalog), batch):
        store.upsert_many(catalog[i : i + batch])
    store.wait_for_index()
    return time.perf_counter() - t0


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


def _open_store(folder: Path, args: argparse.Namespace) -> SearchStore:
    """The bench's store in ``folder`` (Milvus Lite file + track metadata), opened; it never seals
    segments on its own (``wait_for_index`` in :func:`build` does, once); returns once its mirror is filled."""
    return SearchStore(
        str(folder / "milvus.db"),
        folder / "tracks.sqlite",
        PARTS,
        args.dim,
        index_type=args.index_type,
        ann_candidates=args.ann_candidates,
        flush_rows=1 << 30,
    ).open(wait=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m partsim.services.searcher.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--songs", type=int, default=10000)
    ap.add_argument("--segments", type=int, default=4, help="segments per song")
    ap.add_argument("--dim", type=int, default=128, help="subspace dimension")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--index-type", default="HNSW", choices=["FLAT", "IVF_FLAT", "HNSW"])
    ap.add_argument("--ann-candidates", type=int, default=1000, help="K': neighbours per query part")
    ap.add_argument("--data", default="", help="folder for Milvus Lite + metadata (default: a temporary one)")
    args = ap.parse_args(argv)

    tmp = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="partsim-bench-"))
    store = _open_store(tmp, args)
    try:
        t = time.perf_counter()
        catalog = make_catalog(args.songs, args.segments, dim=args.dim)
        print(
            f"catalog: {args.songs} songs x {args.segments} segments x {len(PARTS)} parts, dim {args.dim} "
            f"(generated in {time.perf_counter() - t:.1f} s)"
        )
        print(f"indexed into Milvus Lite ({args.index_type}, IP) in {build(store, catalog):.1f} s")
        queries = make_queries(catalog, args.queries)
        measure(store, queries[:2], args.top_k)  # warm-up
        r = measure(store, queries, args.top_k)
        for mode, v in r["latency"].items():
            print(
                f"SearchMix {mode:6s}: p50 {1e3 * np.percentile(v, 50):7.1f} ms  "
                f"p99 {1e3 * np.percentile(v, 99):7.1f} ms  ({len(v)} queries, top_k {args.top_k})"
            )
        print(
            f"approximate recall@{args.top_k}: mean {r['recall'].mean():.4f}  min {r['recall'].min():.4f}  "
            f"(K'={args.ann_candidates}, candidates re-ranked: median {int(np.median(r['candidates']))})"
        )
        before = [[(h.track_id, h.segment) for h in store.search_mix(q, args.top_k).hits] for q in queries[:5]]
        store.close()
        t = time.perf_counter()
        store = _open_store(tmp, args)
        after = [[(h.track_id, h.segment) for h in store.search_mix(q, args.top_k).hits] for q in queries[:5]]
        print(
            f"reopened (mirror loaded from Milvus) in {time.perf_counter() - t:.1f} s; "
            f"same exact results: {before == after}"
        )
    finally:
        store.close()
        if not args.data:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
