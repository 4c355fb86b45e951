"""Issue 15, "Milvus does the ranking work": index and search parameters as configuration, the one-part
approximate SearchMix as a Milvus grouping search by track id, and index readiness by what the server serves.

Run against Milvus Lite in process and a ``milvus-lite server`` process (tests/milvus_servers.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from partsim.errors import InvalidArgument
from partsim.services.config import parse
from partsim.services.searcher import bench
from partsim.services.searcher.config import PREFIX, SearcherConfig
from partsim.services.searcher.milvus import grouping_in
from partsim.services.searcher.store import SearchStore

from .milvus_servers import lite_server_fixture  # noqa: F401 - a fixture: a milvus-lite server process

DIM = 32


# ------------------------------------------------------------------ configuration


def test_index_and_search_parameters_have_documented_defaults_and_bad_values_name_the_variable(tmp_path):
    base = {
        "PARTSIM_SEARCHER_DATA_DIR": str(tmp_path),
        "PARTSIM_SEARCHER_PARTS": "drums",
        "PARTSIM_SEARCHER_SUBSPACE_DIM": "8",
    }
    cfg = parse(SearcherConfig, PREFIX, [], base)
    cfg.validate()
    assert (cfg.index_type, cfg.hnsw_m, cfg.hnsw_ef_construction, cfg.hnsw_ef) == ("HNSW", 16, 100, 0)
    assert (cfg.ivf_nlist, cfg.ivf_nprobe, cfg.ann_candidates, cfg.ann_grouping) == (256, 32, 1000, True)
    env = {
        **base,
        "PARTSIM_SEARCHER_INDEX_TYPE": "IVF_SQ8",
        "PARTSIM_SEARCHER_IVF_NLIST": "1024",
        "PARTSIM_SEARCHER_IVF_NPROBE": "64",
        "PARTSIM_SEARCHER_ANN_CANDIDATES": "400",
        "PARTSIM_SEARCHER_ANN_GROUPING": "false",
    }
    cfg = parse(SearcherConfig, PREFIX, [], env)
    cfg.validate()
    assert (cfg.index_type, cfg.ivf_nlist, cfg.ivf_nprobe, cfg.ann_candidates, cfg.ann_grouping) == (
        "IVF_SQ8",
        1024,
        64,
        400,
        False,
    )
    bad = {
        "INDEX_TYPE": "IVF_PQ",
        "HNSW_M": "1",
        "HNSW_EF_CONSTRUCTION": "0",
        "HNSW_EF": "-1",
        "IVF_NLIST": "0",
        "IVF_NPROBE": "300",  # more than IVF_NLIST (256)
        "ANN_CANDIDATES": "20000",
    }
    for name, value in bad.items():
        with pytest.raises(InvalidArgument, match=f"PARTSIM_SEARCHER_{name}"):
            parse(SearcherConfig, PREFIX, [], {**base, f"PARTSIM_SEARCHER_{name}": value}).validate()
    with pytest.raises(InvalidArgument, match="--hnsw-ef"):
        parse(SearcherConfig, PREFIX, ["--hnsw-ef", "many"], base)


def test_grouping_search_is_chosen_by_the_milvus_version():
    assert grouping_in("milvus_lite-3.2.2")
    assert not grouping_in("milvus_lite-2.4.10")
    assert grouping_in("v2.4.0") and grouping_in("v2.5.3") and grouping_in("2.6.0")
    assert not grouping_in("v2.3.5") and not grouping_in("unknown")


# ------------------------------------------------------------------ grouping search and readiness


@pytest.fixture(params=["lite", "server"])
def uri(request, tmp_path):
    if request.param == "lite":
        return str(tmp_path / "milvus.db")
    return request.getfixturevalue("lite_server").new_database(request.node.originalname)


def _store(uri: str, prefix: str, **kw) -> SearchStore:
    return SearchStore(
        uri, None, bench.PARTS, DIM, flush_rows=1 << 30, collection_prefix=prefix, orphan_grace_seconds=0, **kw
    ).open(wait=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_part_approximate_ranking_equals_the_exact_one_by_grouping_search(uri, monkeypatch):
    """One-part SearchMix, approximate: one grouping search by track id; the ranking (tracks, best segments,
    distances) equals the exact path's on a small clustered catalog, recall@k = 1, exclusions kept. A server that
    ignores the grouping (duplicate track ids) turns it off and the per-part path answers the same."""
    store = _store(uri, "grp_")
    try:
        catalog = bench.make_catalog(600, segments=4, dim=DIM, styles=20, seed=3)
        bench.build(store, catalog, batch=300)
        assert store.milvus.supports_grouping()
        calls: list = []
        search = store.milvus.search
        monkeypatch.setattr(
            store.milvus, "search", lambda *a, **kw: calls.append(kw.get("group_by")) or search(*a, **kw)
        )
        for q in bench.make_queries(catalog, 8, seed=4, max_parts=1):
            for top_k, exclude in ((50, ()), (20, ("song-000007", "song-000100"))):
                calls.clear()
                ex = store.search_mix(q, top_k, exclude, exact=True)
                ap = store.search_mix(q, top_k, exclude, exact=False)
                assert calls == ["track_id"]  # one grouping search, nothing else
                assert [(h.track_id, h.segment) for h in ap.hits] == [(h.track_id, h.segment) for h in ex.hits]
                assert [h.distance for h in ap.hits] == pytest.approx([h.distance for h in ex.hits], abs=1e-5)
                for a, e in zip(ap.hits, ex.hits):
                    assert a.part_distances == pytest.approx(e.part_distances, abs=1e-5)
                assert not set(exclude) & {h.track_id for h in ap.hits}
        # a Milvus that ignores group_by_field (2.3): rows of one track twice -> grouping off, same answer
        monkeypatch.setattr(store.milvus, "search", lambda *a, group_by=None, **kw: search(*a, **kw))
        q = bench.make_queries(catalog, 1, seed=5, max_parts=1)[0]
        ap = store.search_mix(q, 50, exact=False)
        assert not store.milvus.supports_grouping()
        ex = store.search_mix(q, 50, exact=True)
        assert [h.track_id for h in ap.hits] == [h.track_id for h in ex.hits]
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_first_approximate_searches_after_indexing_have_recall_at_100(uri):
    """Once wait_for_index returns (progress and probe searches: what the server serves), the very first
    approximate searches, of 1, 2 and 3 parts, have recall@100 >= 0.99 against exact."""
    store = _store(uri, "rdy_")
    try:
        catalog = bench.make_catalog(1500, segments=4, dim=DIM, styles=30, seed=8)
        for i in range(0, len(catalog), 500):
            store.upsert_many(catalog[i : i + 500])
        waited = store.wait_for_index(timeout=300, probe_keys=bench.probe_keys(store, catalog, 8))
        assert waited >= 0
        queries = [q for n in (1, 2, 3) for q in bench.make_queries(catalog, 4, seed=n, min_parts=n, max_parts=n)]
        approx = [store.search_mix(q, 100, exact=False) for q in queries]  # first, before any exact search
        recalls = [
            bench.recall([h.track_id for h in store.search_mix(q, 100, exact=True).hits], [h.track_id for h in a.hits])
            for q, a in zip(queries, approx)
        ]
        assert np.mean(recalls) >= 0.99, recalls
    finally:
        store.close()


@pytest.mark.slow
def test_readiness_fails_when_the_server_does_not_find_indexed_rows(tmp_path, monkeypatch):
    """The probe searches are what decide: a server whose searches miss the probed rows is not ready."""
    from partsim.errors import Unavailable

    store = _store(str(tmp_path / "milvus.db"), "nrd_")
    try:
        catalog = bench.make_catalog(50, segments=2, dim=DIM, styles=5, seed=9)
        store.upsert_many(catalog)
        monkeypatch.setattr(store.milvus, "search", lambda *a, **kw: [])
        with pytest.raises(Unavailable, match="do not find"):
            store.wait_for_index(timeout=1.0)
    finally:
        monkeypatch.undo()
        store.close()


# ------------------------------------------------------------------ the benchmark command


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_scale_benchmark_runs_on_a_server_child_with_two_replicas_and_prints_every_row(capsys, tmp_path):
    """`python -m partsim.services.searcher.bench --start-server ... --replicas 2`, the command behind the README's
    scale table, on a tiny catalog: every row it promises is printed, and recall is 1 where K' covers the catalog."""
    assert bench.main(["--songs", "120", "--queries", "3", "--start-server", "lite", "--replicas", "2"]) == 0
    out = capsys.readouterr().out
    assert "Milvus: lite-server server (child pid" in out and "searcher mirrors filled from Milvus in" in out
    table = [line for line in out.splitlines() if " ef=0 K'=1000" in line]
    rows = []  # (set-up, variant, parts, recall mean, candidates)
    for line in table:
        setup, rest = line.split(" ef=0 K'=1000")
        f = rest.split()
        variant = f.pop(0) if f[0] in ("grouped", "per-part") else "union"
        rows.append((setup.strip(), variant, int(f[0]), float(f[-4]), int(f[-2])))
    setups = ["1", "2", "1 no mirror"]  # one searcher, two, and the writer (re-ranking on vectors read from Milvus)
    variants = [("grouped", 1), ("per-part", 1), ("union", 2), ("union", 3)]
    assert [r[:3] for r in rows] == [(s, v, n) for s in setups for v, n in variants], out
    for v, n in variants:  # the same candidates and recall whichever way the candidates are re-ranked
        same = {(r[3], r[4]) for r in rows if (r[1], r[2]) == (v, n)}
        assert len(same) == 1, out
        # K' covers the catalog (480 rows a part), but HNSW leaves out a few absent-part (zero) rows
        assert next(iter(same))[0] >= 0.98, out
    assert out.count("RSS ") == 4  # the writer, two searchers, the server


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--songs", "10", "--replicas", "2"], "--replicas 2 needs a Milvus server"),
        (["--songs", "-5"], "--songs -5: must be 1 or more"),
        (["--top-k", "0"], "--top-k 0: must be 1 or more"),
        (["--hnsw-ef", "0,lots"], "--hnsw-ef, --ivf-nprobe and --ann-candidates take comma-separated whole numbers"),
        (["--start-server", "cluster"], "invalid choice: 'cluster'"),
    ],
)
def test_the_benchmark_refuses_bad_arguments_in_one_line(capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err
