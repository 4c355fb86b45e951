"""The catalog's state lives in Milvus (issue 15): searcher replicas on one Milvus server share it, a searcher on
an empty data folder serves an existing catalog at once, a replica's mirror notices another replica's writes,
and a catalog whose track records were in SQLite (the layout of the previous release) moves them into Milvus once.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from partsim.errors import InvalidArgument
from partsim.internal.v1 import searcher_pb2
from partsim.services.searcher.config import SearcherConfig
from partsim.services.searcher.meta import MetaDB, TrackInfo
from partsim.services.searcher.records import Segments
from partsim.services.searcher.retrieval import Query
from partsim.services.searcher.store import FRESHNESS_SECONDS, SearchStore
from partsim.services.searcher.tracktable import generation_ms, new_generation

from .milvus_servers import (  # noqa: F401 - fixtures: a Milvus server process each (lite-server, standalone-2.3)
    milvus_server_fixture,
    milvus_standalone_bin_fixture,
    milvus_uri_fixture,
)
from .searcher_harness import APPROX, DIM, EXACT, PARTS, Searcher, make_tracks, mix_request, random_query

pytestmark = pytest.mark.timeout(600)


def answers(s: Searcher, ids: list[str], queries) -> list:
    """What a client sees of the catalog: stats, some tracks, a page of the listing, searches in both modes."""
    out: list = [s.stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=60)]
    out += [s.stub.GetTrack(searcher_pb2.GetTrackRequest(track_id=t), timeout=60).track for t in ids]
    out.append(s.stub.ListTracks(searcher_pb2.ListTracksRequest(page_size=1000), timeout=60))
    for q in queries:
        for mode in (EXACT, APPROX):
            r = s.stub.SearchMix(mix_request(q, top_k=10, mode=mode), timeout=120)
            out.append([(h.track.track_id, h.best_segment.index, round(h.distance, 5), h.track) for h in r.hits])
    stats = out[0]
    out[0] = (stats.tracks, stats.segments, dict(stats.present_segments_by_part))
    return out


@pytest.mark.slow
def test_a_searcher_on_an_empty_data_folder_serves_an_existing_milvus_catalog_at_once(milvus_uri, tmp_path):
    catalog = make_tracks(30, seed=31)
    rng = np.random.default_rng(32)
    queries = [random_query(rng, ["drums"]), random_query(rng, ["bass", "piano", "others"])]
    ids = ["t000", "t007", "t029"]
    a = Searcher(tmp_path / "a", milvus_uri=milvus_uri)  # no flush between writes: a 2.3 flush takes seconds
    b = c = None
    try:
        a.upsert(catalog)
        assert a.servicer.store.cache.wait(60) and a.servicer.store.cache.state == "complete"
        want = answers(a, ids, queries)
        assert want[0][:2] == (30, sum(len(s) for s in catalog.values()))
        # B: an empty data folder, no mirror at all (every exact answer read from Milvus), serving at once
        t0 = time.monotonic()
        b = Searcher(tmp_path / "b", milvus_uri=milvus_uri, mirror_bytes=0)
        assert answers(b, ids, queries) == want
        assert time.monotonic() - t0 < 60
        assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []  # nothing on its disk
        # C: an empty data folder, its mirror filled in the background: the same answers once it is complete
        c = Searcher(tmp_path / "c", milvus_uri=milvus_uri)
        assert c.servicer.store.cache.wait(60) and c.servicer.store.cache.state == "complete"
        assert answers(c, ids, queries) == want

        # writes through B (new, replaced, deleted) are seen by A and C (their mirrors notice) within the freshness
        # interval
        new = make_tracks(2, seed=33, prefix="n")
        b.upsert(new)
        b.upsert({"t007": new["n000"]})
        b.stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id="t029"))
        time.sleep(FRESHNESS_SECONDS)  # the promise under Bounded: other searchers see a write within this
        target = new["n001"][0]["vectors"]["drums"]
        for s in (a, c, b):
            got = s.stub.GetTrack(searcher_pb2.GetTrackRequest(track_id="n001"), timeout=60).track
            assert got.num_segments == len(new["n001"])
            assert s.stub.GetTrack(searcher_pb2.GetTrackRequest(track_id="t007")).track.num_segments == len(new["n000"])
            for mode in (EXACT, APPROX):
                hits = s.stub.SearchMix(mix_request({"drums": [target]}, top_k=40, mode=mode), timeout=60).hits
                found = [h.track.track_id for h in hits]
                assert found[0] == "n001" and hits[0].distance == pytest.approx(0.0, abs=1e-5)
                assert "t029" not in found
                seven = [h for h in hits if h.track.track_id == "t007"]
                assert seven and seven[0].best_segment.index < len(new["n000"])
            stats = s.stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=60)
            assert stats.tracks == 31
        assert a.servicer.store.cache.state == "complete"  # A answered from its mirror, kept current
    finally:
        for s in (a, b, c):
            if s is not None:
                s.stop()


@pytest.mark.slow
def test_a_catalog_whose_track_records_were_in_sqlite_moves_them_into_milvus_once(tmp_path):
    """The previous release's layout: part collections of the current schema (keys with generations) and the
    track records in tracks.sqlite. Made here by writing a catalog, copying its records (generations kept) into
    a SQLite file and dropping the tracks collection."""
    folder = tmp_path / "data"
    catalog = make_tracks(15, seed=34)
    rng = np.random.default_rng(35)
    queries = [random_query(rng, ["guitar"]), random_query(rng, ["drums", "bass"])]
    ids = ["t001", "t014"]
    s = Searcher(folder)
    try:
        s.upsert(catalog)
        s.upsert({"t001": catalog["t002"]})  # a replaced track: its generation is not the first
        want = answers(s, ids, queries)
        store = s.servicer.store
        records = store.tracks.get_many(list(catalog))
        assert records["t001"].generation != records["t000"].generation
        store.milvus.client.drop_collection(store.tracks.name)
    finally:
        s.stop()
    meta = MetaDB(folder / "tracks.sqlite")
    meta.put_many(list(records.values()))
    meta.close()
    s = Searcher(folder)
    try:
        assert not (folder / "tracks.sqlite").exists() and (folder / "tracks.sqlite.migrated").is_file()
        assert answers(s, ids, queries) == want
        got = s.servicer.store.tracks.get_many(list(catalog))
        assert {t: i.generation for t, i in got.items()} == {t: i.generation for t, i in records.items()}
        s.stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id="t003"))
    finally:
        s.stop()
    s = Searcher(folder)  # not imported again: the deleted track stays deleted
    try:
        assert s.stub.GetStats(searcher_pb2.GetStatsRequest()).tracks == 14
    finally:
        s.stop()


def test_generations_increase_never_repeat_and_say_when_their_write_began():
    gens = [new_generation() for _ in range(20000)]
    assert gens == sorted(set(gens)) and max(gens) < 2**63
    assert abs(generation_ms(gens[-1]) - time.time() * 1000) < 5000


@pytest.mark.slow
def test_exact_search_without_the_mirror_equals_the_mirrors_and_skips_rows_of_no_current_version(tmp_path):
    catalog = make_tracks(20, seed=36)
    rng = np.random.default_rng(37)
    store = SearchStore(str(tmp_path / "milvus.db"), None, PARTS, DIM, index_type="FLAT").open(wait=True)
    try:

        def segments(segs):
            return Segments(
                np.array([x["index"] for x in segs]),
                np.array([x["start"] for x in segs]),
                np.array([x["end"] for x in segs]),
                np.stack([np.stack([x["vectors"][p] for x in segs]) for p in PARTS]),
                np.array([[x["present"][p] for x in segs] for p in PARTS]),
            )

        store.upsert_many([(TrackInfo(t, num_segments=len(s)), segments(s)) for t, s in catalog.items()])
        # rows of a write in flight (another replica's, not switched yet): never served
        store.milvus.insert(
            store.collections["drums"],
            segments(catalog["t004"]).rows("t004", new_generation())[0][0],
        )
        assert store.cache.state == "complete"
        for parts in (["drums"], ["bass", "guitar"], PARTS):
            q = [Query(p, v[0]) for p, v in random_query(rng, parts, k=1).items()]
            fast = store.search_mix(q, 25, exclude=["t009"])
            slow = store.exact.search_mix(q, 25, exclude=["t009"])
            assert [(h.track_id, h.segment) for h in slow.hits] == [(h.track_id, h.segment) for h in fast.hits]
            assert [h.distance for h in slow.hits] == pytest.approx([h.distance for h in fast.hits], abs=1e-6)
            stems = store.exact.search_stems(q[0], 50, exclude=[])
            assert [(h.track_id, h.segment) for h in stems] == [
                (h.track_id, h.segment) for h in store.search_stems(q[0], 50)
            ]
            assert len({(h.track_id, h.segment) for h in stems}) == len(stems)
    finally:
        store.close()


def test_search_consistency_and_mirror_budget_are_validated_naming_the_variable(tmp_path):
    base = {"data_dir": str(tmp_path), "parts": "drums", "subspace_dim": 4}
    with pytest.raises(InvalidArgument, match="PARTSIM_SEARCHER_SEARCH_CONSISTENCY.*Strong, Bounded"):
        SearcherConfig(search_consistency="Sometimes", **base).validate()
    with pytest.raises(InvalidArgument, match="PARTSIM_SEARCHER_MIRROR_BYTES"):
        SearcherConfig(mirror_bytes=-1, **base).validate()
    with pytest.raises(InvalidArgument, match="PARTSIM_SEARCHER_FRESHNESS_SECONDS.*0..60"):
        SearcherConfig(freshness_seconds=-0.5, **base).validate()
    cfg = SearcherConfig(**base)
    cfg.validate()
    assert (cfg.search_consistency, cfg.mirror_bytes, cfg.freshness_seconds) == ("Bounded", 1536 << 20, 1.0)


def test_the_mirror_asks_for_other_searchers_writes_at_most_once_per_freshness_interval(tmp_path):
    """Under Bounded consistency the mirror answers for FRESHNESS_SECONDS after a look without another (a look is a
    query of the tracks collection); Strong searches, and an interval of 0, look before every answer."""
    catalog = make_tracks(6, seed=41)
    query = random_query(np.random.default_rng(42), ["drums"])
    for level, interval, most in (("Bounded", 1.0, 2), ("Bounded", 0.0, 12), ("Strong", 1.0, 12)):
        s = Searcher(tmp_path / f"{level}{interval}", search_consistency=level, freshness_seconds=interval)
        try:
            s.upsert(catalog)
            cache = s.servicer.store.cache
            assert cache.wait(60) and cache.state == "complete"
            looks = []
            changed_since = cache.tracks.changed_since
            cache.tracks.changed_since = lambda *a, f=changed_since, n=looks: n.append(1) or f(*a)
            t0 = time.monotonic()
            for _ in range(12):
                assert s.stub.SearchMix(mix_request(query, top_k=3, mode=EXACT), timeout=30).hits
            if time.monotonic() - t0 < interval:  # all 12 within one interval
                assert len(looks) <= most, (level, interval, len(looks))
            if most == 12:
                assert len(looks) == 12, (level, interval, len(looks))
            if interval:
                time.sleep(interval)
                before = len(looks)
                s.stub.SearchMix(mix_request(query, top_k=3, mode=EXACT), timeout=30)
                assert len(looks) == before + 1  # the interval over: the next answer looks
        finally:
            s.stop()
