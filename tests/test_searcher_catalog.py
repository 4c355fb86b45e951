"""The searcher's catalog with real parts (Milvus Lite in a temporary folder, real gRPC on loopback): writes
replace and delete without leaving stale rows, reads give back every part's raw vector, presence flag and
audio power as indexed, and all of it survives a restart.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from partsim.internal.v1 import searcher_pb2

from .searcher_harness import (
    APPROX,
    EXACT,
    PARTS,
    Code,
    Searcher,
    make_tracks,
    mix_request,
    random_query,
    upsert_request,
)

# ------------------------------------------------------------------ writes


@pytest.mark.slow
def test_reupsert_replaces_without_duplicates(searcher):
    catalog = make_tracks(10, seed=8, max_segments=3)
    searcher.upsert(catalog)
    before = searcher.stub.GetStats(searcher_pb2.GetStatsRequest())
    one = make_tracks(1, seed=9, prefix="x", max_segments=1)["x000"][0]
    segs = [dict(one, index=i, start=10.0 * i, end=10.0 * i + 10) for i in range(5)]
    assert not searcher.stub.UpsertTrack(upsert_request("again", segs)).replaced
    assert searcher.stub.UpsertTrack(upsert_request("again", segs)).replaced  # idempotent
    stats = searcher.stub.GetStats(searcher_pb2.GetStatsRequest())
    assert (stats.tracks, stats.segments) == (before.tracks + 1, before.segments + 5)
    # a shorter new version: no stale segments left behind
    fresh = make_tracks(1, seed=10, prefix="y", max_segments=1)["y000"][0]
    short = [dict(fresh, index=i, start=10.0 * i, end=10.0 * i + 10) for i in range(2)]
    assert searcher.stub.UpsertTrack(upsert_request("again", short, title="v2")).replaced
    stats = searcher.stub.GetStats(searcher_pb2.GetStatsRequest())
    assert (stats.tracks, stats.segments) == (before.tracks + 1, before.segments + 2)
    track = searcher.stub.GetTrack(searcher_pb2.GetTrackRequest(track_id="again")).track
    assert (track.num_segments, track.metadata.title) == (2, "v2")
    with pytest.raises(grpc.RpcError) as e:
        searcher.stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id="again", segment_index=4))
    assert e.value.code() == Code.NOT_FOUND and "segments 0..1" in e.value.details()
    store = searcher.servicer.store
    store.flush()
    for part, name in store.collections.items():
        rows = store.milvus.client.query(name, filter='track_id == "again"', output_fields=["segment"])
        assert sorted(r["segment"] for r in rows) == [0, 1], part
    for mode in (EXACT, APPROX):
        old = searcher.stub.SearchStems(
            searcher_pb2.SearchStemsRequest(
                query=searcher_pb2.PartQuery(part="drums", vector=segs[0]["vectors"]["drums"].tolist()),
                top_k=50,
                mode=mode,
            )
        )
        keys = [(h.track.track_id, h.segment.index) for h in old.hits]
        assert len(keys) == len(set(keys))
        assert {i for t, i in keys if t == "again"} <= {0, 1}
        new = searcher.stub.SearchMix(mix_request({"drums": [short[0]["vectors"]["drums"]]}, top_k=50, mode=mode))
        ids = [h.track.track_id for h in new.hits]
        assert ids[0] == "again" and len(ids) == len(set(ids))


@pytest.mark.slow
def test_delete(searcher):
    catalog = make_tracks(8, seed=11)
    searcher.upsert(catalog)
    seg = catalog["t004"][0]
    searcher.stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id="t004"))
    for rpc, req in [
        (searcher.stub.GetTrack, searcher_pb2.GetTrackRequest(track_id="t004")),
        (searcher.stub.DeleteTrack, searcher_pb2.DeleteTrackRequest(track_id="t004")),
        (searcher.stub.GetSegment, searcher_pb2.GetSegmentRequest(track_id="t004")),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            rpc(req)
        assert e.value.code() == Code.NOT_FOUND and "t004" in e.value.details()
    for mode in (EXACT, APPROX):
        resp = searcher.stub.SearchMix(
            mix_request({"drums": [seg["vectors"]["drums"]], "bass": [seg["vectors"]["bass"]]}, top_k=100, mode=mode)
        )
        assert "t004" not in [h.track.track_id for h in resp.hits] and len(resp.hits) == 7
    stats = searcher.stub.GetStats(searcher_pb2.GetStatsRequest())
    assert (stats.tracks, stats.segments) == (7, sum(len(s) for t, s in catalog.items() if t != "t004"))
    odd = 'O\'Brien "quoted" \\ id#2'  # quotes and backslashes reach Milvus filters escaped; '#' is fine
    for _ in range(2):
        searcher.stub.UpsertTrack(upsert_request(odd, catalog["t001"]))
    assert searcher.stub.GetStats(searcher_pb2.GetStatsRequest()).tracks == 8
    got = searcher.stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id=odd, segment_index=0))
    assert got.track.track_id == odd
    resp = searcher.stub.SearchMix(
        mix_request({"bass": [catalog["t001"][0]["vectors"]["bass"]]}, top_k=3, mode=APPROX, exclude=["t001"])
    )
    assert resp.hits[0].track.track_id == odd
    searcher.stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id=odd))
    assert searcher.stub.GetStats(searcher_pb2.GetStatsRequest()).segments == stats.segments


# ------------------------------------------------------------------ reads and what the catalog keeps


@pytest.mark.slow
def test_get_segment_and_list_tracks(searcher):
    catalog = make_tracks(7, seed=12)
    searcher.upsert(catalog)
    s = catalog["t002"][-1]
    got = searcher.stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id="t002", segment_index=s["index"]))
    assert got.track.track_id == "t002" and got.segment.index == s["index"]
    assert [pv.part for pv in got.segment.parts] == PARTS
    for pv in got.segment.parts:
        assert pv.present == s["present"][pv.part]
        assert pv.norm == pytest.approx(float(np.linalg.norm(s["vectors"][pv.part])), rel=1e-5)
        # the raw vector as indexed, absent parts included
        assert np.array_equal(np.asarray(pv.vector, dtype=np.float32), s["vectors"][pv.part])
        assert not pv.HasField("power")  # none was sent: unknown
    ids, token = [], ""
    while True:
        page = searcher.stub.ListTracks(searcher_pb2.ListTracksRequest(page_size=3, page_token=token))
        assert len(page.tracks) <= 3
        ids += [t.track_id for t in page.tracks]
        token = page.next_page_token
        if not token:
            break
    assert ids == sorted(catalog)
    assert len(searcher.stub.ListTracks(searcher_pb2.ListTracksRequest()).tracks) == 7


@pytest.mark.slow
def test_the_catalog_keeps_raw_vectors_presence_and_audio_power_of_every_part(tmp_path):
    """Nothing the model said is lost: GetSegment returns each part's raw vector bit for bit (absent
    parts too), its presence flag and the segment's audio power, also after a restart."""
    catalog = make_tracks(4, seed=21)
    rng = np.random.default_rng(22)
    power = {tid: [{p: float(rng.uniform(0.0, 0.05)) for p in PARTS} for _ in segs] for tid, segs in catalog.items()}
    first = Searcher(tmp_path / "data", flush_rows=8)
    try:
        for tid, segs in catalog.items():
            req = upsert_request(tid, segs)
            for seg, pw in zip(req.segments, power[tid]):
                for pv in seg.parts:
                    pv.power = pw[pv.part]
            first.stub.UpsertTrack(req, timeout=30)
    finally:
        first.stop()
    second = Searcher(tmp_path / "data")
    try:
        absent = 0
        for tid, segs in catalog.items():
            for s, pw in zip(segs, power[tid]):
                got = second.stub.GetSegment(
                    searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=s["index"]), timeout=30
                ).segment
                assert [pv.part for pv in got.parts] == PARTS
                for pv in got.parts:
                    assert np.array_equal(np.asarray(pv.vector, dtype=np.float32), s["vectors"][pv.part]), (
                        tid,
                        pv.part,
                    )
                    assert pv.present == s["present"][pv.part]
                    assert pv.HasField("power") and pv.power == np.float32(pw[pv.part])
                    assert pv.norm == pytest.approx(float(np.linalg.norm(s["vectors"][pv.part])), rel=1e-6)
                    absent += not pv.present
        assert absent > 0  # the case that matters: absent parts keep their raw vectors
    finally:
        second.stop()


@pytest.mark.slow
def test_a_kept_raw_vector_of_an_absent_part_never_enters_the_search(searcher):
    """Search reads unit vectors with zeros where a part is absent (its eq. 6.2 term is 1), whatever raw
    vector the catalog keeps: even the absent part's own raw vector as the query finds distance 1 there."""
    catalog = make_tracks(6, seed=23)
    searcher.upsert(catalog)
    tid, s, part = next((t, s, p) for t, segs in catalog.items() for s in segs for p in PARTS if not s["present"][p])
    q = searcher_pb2.PartQuery(part=part, vector=s["vectors"][part].tolist())
    hits = searcher.stub.SearchStems(searcher_pb2.SearchStemsRequest(query=q, top_k=1000, mode=EXACT)).hits
    there = [h.distance for h in hits if (h.track.track_id, h.segment.index) == (tid, s["index"])]
    assert there == [pytest.approx(1.0, abs=1e-6)]
    mix = searcher.stub.SearchMix(searcher_pb2.SearchMixRequest(parts=[q], top_k=1000, mode=EXACT)).hits
    own = catalog[tid]
    best = min(
        1.0
        - (
            0.0
            if not x["present"][part]
            else float(
                np.dot(x["vectors"][part], s["vectors"][part])
                / np.linalg.norm(x["vectors"][part])
                / np.linalg.norm(s["vectors"][part])
            )
        )
        for x in own
    )
    assert [h.distance for h in mix if h.track.track_id == tid] == [pytest.approx(best, abs=1e-5)]


@pytest.mark.slow
def test_persistence(tmp_path):
    catalog = make_tracks(25, seed=13)
    rng = np.random.default_rng(14)
    queries = [random_query(rng, ["drums", "bass"]), random_query(rng, ["piano"])]

    def snapshot(s: Searcher):
        out = [
            s.stub.GetStats(searcher_pb2.GetStatsRequest()),
            s.stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id="t011", segment_index=0)),
            s.stub.ListTracks(searcher_pb2.ListTracksRequest(page_size=100)),
        ]
        for q in queries:
            for mode in (EXACT, APPROX):
                out.append(s.stub.SearchMix(mix_request(q, top_k=10, mode=mode)))
        return out

    first = Searcher(tmp_path / "data", flush_rows=40)
    try:
        first.upsert(catalog)
        first.stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id="t020"))
        before = snapshot(first)
    finally:
        first.stop()
    second = Searcher(tmp_path / "data")
    try:
        after = snapshot(second)
    finally:
        second.stop()
    assert after[0].tracks == 24
    for a, b in zip(before, after):
        if isinstance(a, searcher_pb2.SearchMixResponse):
            assert [(h.track.track_id, h.best_segment.index) for h in a.hits] == [
                (h.track.track_id, h.best_segment.index) for h in b.hits
            ]
            assert [h.distance for h in a.hits] == pytest.approx([h.distance for h in b.hits], abs=1e-6)
        else:
            assert a == b
