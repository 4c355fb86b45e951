"""The production path: the searcher talking to a Milvus *server* over the network (here Milvus
Lite's server mode, a separate process on a loopback port), not the embedded Lite folder."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.searcher.config import SearcherConfig
from partsim.services.searcher.server import SearcherServer
from partsim.v1 import types_pb2

pytestmark = pytest.mark.timeout(300)

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


@pytest.mark.slow
def test_searcher_against_a_milvus_server(milvus_server, tmp_path):
    cfg = SearcherConfig(
        address="127.0.0.1:0",
        data_dir=str(tmp_path / "meta"),
        milvus_uri=milvus_server,
        metrics_port=-1,
        index_type="HNSW",
    )
    server = SearcherServer(cfg).start()
    try:
        stub = searcher_pb2_grpc.SearcherServiceStub(grpc.insecure_channel(server.address))
        assert "milvus http://127.0.0.1" in stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30).backend
        rng = np.random.default_rng(0)
        catalog = {}
        for t in range(30):
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
        assert (stats.tracks, stats.segments) == (30, 90)
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
        assert stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30).segments == 87
    finally:
        server.stop(1)
