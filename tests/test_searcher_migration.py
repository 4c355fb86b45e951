"""A catalog on disk that an earlier searcher wrote, or that a crash left half-written, is put right when the
store opens: the layout from before raw vectors were kept is migrated and searches the same (a migration
interrupted half-way is redone or finished), Milvus rows whose metadata never committed are removed, and a
changed dimension is refused.
"""

from __future__ import annotations

import numpy as np
import pytest

from partsim.internal.v1 import searcher_pb2
from partsim.services.searcher.store import SearchStore

from .searcher_harness import (
    DIM,
    PARTS,
    Searcher,
    make_tracks,
    mix_request,
    random_query,
    reference_mix,
    upsert_request,
    write_legacy_catalog,
)


@pytest.mark.slow
def test_a_catalog_from_before_raw_vectors_is_migrated_when_opened_and_searches_the_same(tmp_path):
    catalog = make_tracks(12, seed=24)
    write_legacy_catalog(tmp_path / "data", catalog)
    rng = np.random.default_rng(25)
    queries = [random_query(rng, ["drums", "bass"]), random_query(rng, ["guitar"])]
    s = Searcher(tmp_path / "data")
    try:
        names = s.servicer.store.milvus.client.list_collections()
        # no migration copy left behind; the track records moved from SQLite into their collection
        assert sorted(names) == sorted([*(f"partsim_{p}" for p in PARTS), "partsim_tracks"])
        assert not (tmp_path / "data" / "tracks.sqlite").exists()
        assert (tmp_path / "data" / "tracks.sqlite.migrated").is_file()
        assert s.stub.GetStats(searcher_pb2.GetStatsRequest()).tracks == 12
        for q in queries:  # every track searches exactly as before: the search fields were copied unchanged
            ref = reference_mix(catalog, q, {p: 1.0 for p in q})[:10]
            got = s.stub.SearchMix(mix_request(q, top_k=10)).hits
            assert [(h.track.track_id, h.best_segment.index) for h in got] == [(r[1], r[2]) for r in ref]
            assert [h.distance for h in got] == pytest.approx([r[0] for r in ref], abs=1e-5)
        # what an old row can say: raw = unit x norm where present, nothing where absent, power unknown
        tid, seg = next((t, x) for t, segs in catalog.items() for x in segs if not all(x["present"].values()))
        got = s.stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=seg["index"])).segment
        for pv in got.parts:
            assert not pv.HasField("power")
            if seg["present"][pv.part]:
                assert np.allclose(pv.vector, seg["vectors"][pv.part], rtol=1e-5, atol=1e-6)
            else:
                assert len(pv.vector) == 0
        # re-indexing the track writes the current schema's row: raw vectors and power kept
        req = upsert_request(tid, catalog[tid])
        for x in req.segments:
            for pv in x.parts:
                pv.power = 0.01
        assert s.stub.UpsertTrack(req).replaced
        got = s.stub.GetSegment(searcher_pb2.GetSegmentRequest(track_id=tid, segment_index=seg["index"])).segment
        for pv in got.parts:
            assert np.array_equal(np.asarray(pv.vector, dtype=np.float32), seg["vectors"][pv.part])
            assert pv.power == np.float32(0.01)
    finally:
        s.stop()


@pytest.mark.slow
def test_an_interrupted_migration_is_redone_or_finished_at_the_next_open(tmp_path):
    from pymilvus import MilvusClient

    from partsim.services.searcher.migrate import MIGRATING

    catalog = make_tracks(5, seed=26)
    write_legacy_catalog(tmp_path / "data", catalog)

    def open_store():
        return SearchStore(
            str(tmp_path / "data" / "milvus.db"), tmp_path / "data" / "tracks.sqlite", PARTS, DIM, index_type="FLAT"
        ).open(wait=True)

    store = open_store()
    segments = store.stats()["segments"]
    # as if a crash came (a) in the middle of drums' copy: the old collection is still there beside a partial
    # copy; (b) between dropping bass's old collection and renaming its complete copy
    client = store.milvus.client
    assert isinstance(client, MilvusClient)
    client.rename_collection("partsim_bass", "partsim_bass" + MIGRATING)
    store.milvus.create("partsim_drums" + MIGRATING)  # an empty (partial) copy
    store.close()
    store = open_store()
    try:
        assert sorted(store.milvus.client.list_collections()) == sorted(
            [*(f"partsim_{p}" for p in PARTS), "partsim_tracks"]
        )
        assert store.stats()["segments"] == segments
        assert store.mirror.present_counts() == {
            p: sum(x["present"][p] for segs in catalog.values() for x in segs) for p in PARTS
        }
    finally:
        store.close()


def test_store_reconciles_an_interrupted_write_and_checks_the_dimension(tmp_path):
    """Rows written to Milvus whose track record never switched to them are removed at open (once their write
    began ``orphan_grace_seconds`` ago: 0 here); a dim change is refused."""
    from partsim.errors import FailedPrecondition
    from partsim.services.searcher.meta import TrackInfo
    from partsim.services.searcher.store import Segments

    def open_store(dim=4):
        return SearchStore(
            str(tmp_path / "milvus.db"), None, ["drums", "bass"], dim, index_type="FLAT", orphan_grace_seconds=0
        ).open(wait=True)

    rng = np.random.default_rng(17)
    segs = Segments(
        np.arange(3),
        np.arange(3) * 10.0,
        np.arange(3) * 10.0 + 10,
        rng.standard_normal((2, 3, 4)),
        np.ones((2, 3), dtype=bool),
    )
    store = open_store()
    try:
        store.upsert_many([(TrackInfo("kept"), segs), (TrackInfo("lost"), segs)])
        # as if the process died before the switch: no record of "lost" names its rows
        store.milvus.client.delete(store.tracks.name, ids=["lost"])
    finally:
        store.close()
    store = open_store()
    try:
        assert sorted(store.mirror.rows) == ["kept"] and store.stats()["segments"] == 3
        for name in store.collections.values():
            assert {
                r["track_id"]
                for r in store.milvus.client.query(name, filter="segment >= 0", output_fields=["track_id"])
            } == {"kept"}
    finally:
        store.close()
    with pytest.raises(FailedPrecondition, match="holds 4-d vectors but the model's subspace_dim is 8"):
        open_store(dim=8)
