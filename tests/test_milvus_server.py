"""The production path: the searcher talking to a Milvus *server* over the network, not the embedded Lite folder.

Every test runs against both server processes of tests/milvus_servers.py (``lite-server``: ``milvus-lite server``;
``standalone-2.3``: the Milvus 2.3.5 standalone of the ``milvus`` package), each test in a database of its own.
"""

from __future__ import annotations

import time
import urllib.request

import grpc
import numpy as np
import pytest

from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.searcher import bench
from partsim.services.searcher.config import SearcherConfig
from partsim.services.searcher.server import SearcherServer
from partsim.services.searcher.store import SearchStore
from partsim.v1 import types_pb2

from .milvus_servers import (  # noqa: F401 - fixtures
    STANDALONE,
    listening,
    milvus_server_fixture,
    milvus_standalone_bin_fixture,
    milvus_uri_fixture,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PARTS = ["drums", "bass", "piano", "guitar", "others"]
D = 128


def _segment(i: int, vecs: np.ndarray, present: np.ndarray) -> types_pb2.SegmentEmbedding:
    return types_pb2.SegmentEmbedding(
        index=i,
        start_seconds=10.0 * i,
        end_seconds=10.0 * (i + 1),
        parts=[
            types_pb2.PartVector(
                part=p, vector=vecs[j].tolist(), norm=float(np.linalg.norm(vecs[j])), present=bool(present[j])
            )
            for j, p in enumerate(PARTS)
        ],
    )


def test_searcher_against_a_milvus_server(milvus_uri, tmp_path):
    cfg = SearcherConfig(
        address="127.0.0.1:0",
        data_dir=str(tmp_path / "meta"),
        milvus_uri=milvus_uri,
        metrics_port=-1,
        index_type="HNSW",
    )
    server = SearcherServer(cfg).start()
    try:
        stub = searcher_pb2_grpc.SearcherServiceStub(grpc.insecure_channel(server.address))
        assert "milvus http://127.0.0.1" in stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30).backend
        rng = np.random.default_rng(0)
        catalog = {}
        for t in range(12):  # each write on a 2.3 server takes about a second (its Strong reads)
            vecs = rng.standard_normal((3, len(PARTS), D)).astype(np.float32)
            present = rng.random((3, len(PARTS))) > 0.2
            catalog[f"t{t:02d}"] = (vecs, present)
            stub.UpsertTrack(
                searcher_pb2.UpsertTrackRequest(
                    track=types_pb2.Track(
                        track_id=f"t{t:02d}",
                        num_segments=3,
                        duration_seconds=30,
                        segment_seconds=10,
                        model_version="test",
                    ),
                    segments=[_segment(i, vecs[i], present[i]) for i in range(3)],
                ),
                timeout=60,
            )
        # re-upsert: replaced, not duplicated (the server path: delete + insert with Strong reads)
        assert stub.UpsertTrack(
            searcher_pb2.UpsertTrackRequest(
                track=types_pb2.Track(
                    track_id="t00", num_segments=3, duration_seconds=30, segment_seconds=10, model_version="test"
                ),
                segments=[_segment(i, catalog["t00"][0][i], catalog["t00"][1][i]) for i in range(3)],
            ),
            timeout=60,
        ).replaced
        stats = stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30)
        assert (stats.tracks, stats.segments) == (12, 36)
        # a segment's own drums vector finds that segment first, in both modes
        tid = next(t for t, (v, p) in catalog.items() if p[1, 0])
        q = searcher_pb2.PartQuery(part="drums", vector=catalog[tid][0][1, 0].tolist(), weight=1)
        for mode in (types_pb2.SEARCH_MODE_EXACT, types_pb2.SEARCH_MODE_APPROXIMATE):
            hits = stub.SearchMix(searcher_pb2.SearchMixRequest(parts=[q], top_k=5, mode=mode), timeout=60).hits
            assert hits[0].track.track_id == tid and hits[0].best_segment.index == 1
            assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
        exact = stub.SearchMix(
            searcher_pb2.SearchMixRequest(parts=[q], top_k=10, mode=types_pb2.SEARCH_MODE_EXACT), timeout=60
        )
        approx = stub.SearchMix(
            searcher_pb2.SearchMixRequest(parts=[q], top_k=10, mode=types_pb2.SEARCH_MODE_APPROXIMATE),
            timeout=60,
        )
        assert [h.track.track_id for h in approx.hits] == [h.track.track_id for h in exact.hits]
        stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id=tid), timeout=60)
        hits = stub.SearchMix(
            searcher_pb2.SearchMixRequest(parts=[q], top_k=5, mode=types_pb2.SEARCH_MODE_APPROXIMATE),
            timeout=60,
        ).hits
        assert tid not in [h.track.track_id for h in hits]
        assert stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30).segments == 33
    finally:
        server.stop(1)


def test_the_server_process(milvus_server):
    """What the fixture promises: the server listens where it was told (the standalone: every port one the OS
    picked, none of 2.3.5's defaults, its embedded etcd on 127.0.0.1 alone), and each test's database is its own."""
    ports = listening(milvus_server.proc.pid)
    assert (
        ("127.0.0.1", milvus_server.port) in ports
        or ("::ffff:127.0.0.1", milvus_server.port) in ports
        or any(p == milvus_server.port and a in ("0.0.0.0", "::") for a, p in ports)
    ), ports
    if milvus_server.name == STANDALONE:
        chosen = milvus_server.ports
        assert {p for _, p in ports} <= set(chosen.values()), (ports, chosen)
        assert not {p for _, p in ports} & {2379, 2380, 9091, 19530}
        for key in ("etcd_port", "etcd_peer_port"):
            assert {a for a, p in ports if p == chosen[key]} == {"127.0.0.1"}, (key, ports)
        with urllib.request.urlopen(f"http://127.0.0.1:{chosen['etcd_port']}/health", timeout=10) as r:
            assert b'"health":"true"' in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{chosen['webservice_port']}/healthz", timeout=10) as r:
            assert b"OK" in r.read()
    else:  # milvus-lite server: one port, loopback only
        assert {p for _, p in ports} == {milvus_server.port}
        assert {a for a, _ in ports} <= {"127.0.0.1", "::ffff:127.0.0.1"}, ports
    from pymilvus import MilvusClient

    one, two = milvus_server.new_database("one"), milvus_server.new_database("two")
    a, b = MilvusClient(uri=one), MilvusClient(uri=two)
    try:
        a.create_collection("c", dimension=4)
        assert a.list_collections() == ["c"] and b.list_collections() == []
    finally:
        a.close()
        b.close()


# Measured on this 2-core machine: on standalone-2.3 describe_index says Finished (indexed_rows == total_rows,
# pending_index_rows 0) some 15-17 s before the query node serves the indexed segment (list_loaded_segments lists
# no segment until then); meanwhile the flushed rows are searched as a growing segment through 2.3's interim IVF
# index (queryNode.segcore.interimIndex: nlist 128, nprobe 16), and the first searches' recall@100 was 0.77-0.91.
# readiness.wait_until_served therefore also waits until list_loaded_segments shows every flushed segment with its
# index; this test fails without that wait.


def test_a_fresh_index_is_served_when_reported_ready(milvus_server, milvus_uri, tmp_path):
    """Right after the searcher reports its index ready (SearchStore.wait_for_index, what bench.build and the
    benchmarks rely on), its approximate searches have recall@100 >= 0.99 against exact, from the first query.

    40,000 rows of one part: enough for 2.3.5 to index the segment (>= 1024 rows) and to search unindexed rows
    through its interim IVF index, whose recall shows."""
    parts, dim = ["drums"], 32
    catalog = bench.make_catalog(10000, 4, parts=parts, dim=dim, seed=3)
    queries = bench.make_queries(catalog, 5, parts=parts, max_parts=1, seed=4)
    store = SearchStore(milvus_uri, tmp_path / "tracks.sqlite", parts, dim, index_type="HNSW", flush_rows=1 << 30)
    store.open()
    try:
        built = bench.build(store, catalog)  # upserts, then wait_for_index: "ready"
        t0 = time.monotonic()
        approx = [[h.track_id for h in store.search_mix(q, 100, exact=False).hits] for q in queries]
        seconds = time.monotonic() - t0
        exact = [[h.track_id for h in store.search_mix(q, 100, exact=True).hits] for q in queries]
    finally:
        store.close()
    recalls = [round(bench.recall(e, a), 3) for e, a in zip(exact, approx)]
    assert all(len(e) == 100 for e in exact)
    assert min(recalls) >= 0.99, (
        f"{milvus_server.name}: recall@100 of the first {len(queries)} approximate searches "
        f"(within {seconds:.1f} s of wait_for_index, after {built:.1f} s of building): {recalls}"
    )
