"""Search filters in the searcher (tags any/all, BPM range, key, duration, indexed after): applied inside Milvus
(the approximate path's search and the exact path's query iterators) and on the mirror, each the unfiltered
ranking restricted to the matching tracks; the Milvus expression and the Python predicate agree; bad filters
are refused with the field; a catalog of the schema before filters is migrated and becomes filterable."""

from __future__ import annotations

import numpy as np
import pytest

from partsim.internal.v1 import searcher_pb2
from partsim.services import filters
from partsim.services.filters import from_proto, row_fields, tag_element
from partsim.services.tracks import normal_key
from partsim.v1 import types_pb2

from .limits_harness import details, rpc_error
from .milvus_servers import (  # noqa: F401 - fixtures: a Milvus server process each (lite-server, standalone-2.3)
    milvus_server_fixture,
    milvus_standalone_bin_fixture,
    milvus_uri_fixture,
)
from .searcher_harness import (
    APPROX,
    DIM,
    EXACT,
    PARTS,
    Code,
    Searcher,
    make_tracks,
    mix_request,
    random_query,
    upsert_request,
)

N = 36
ODD_TAG = 'q"u\\ote\'s \\" ] ) or 1==1\r\nnext\tline\x01'  # a tag value made of expression syntax
GENRES = ["rock", "jazz", "pop"]
KEYS = ["A minor", "C major", "F# minor", ""]  # "" : not known


def metadata(i: int) -> dict:
    """Varied metadata of track i: tags, BPM (every 5th unknown), key, duration, indexing time."""
    tags = {"genre": GENRES[i % 3], "mood": "calm" if i % 2 else "loud"}
    if i % 7 == 0:
        tags["quote"] = ODD_TAG
    if i % 4 == 1:
        tags["a=b"] = "c"  # a key holding '=': not the tag {"a": "b=c"}
    if i % 4 == 2:
        tags["a"] = "b=c"
    return {
        "tags": tags,
        "bpm": None if i % 5 == 0 else 60.0 + 4.5 * i,
        "key": KEYS[i % 4],
        "duration": 60.0 + 10.0 * i,
        "indexed_at": 1_767_225_600.0 + 86_400.0 * (i - N // 2),  # 2026-01-01 +- days
    }


def catalog_request(tid: str, segs: list[dict], meta: dict) -> searcher_pb2.UpsertTrackRequest:
    req = upsert_request(tid, segs)
    m = req.track.metadata
    m.tags.clear()
    m.tags.update(meta["tags"])
    if meta["bpm"] is not None:
        m.bpm = meta["bpm"]
    m.key = meta["key"]
    req.track.duration_seconds = meta["duration"]
    req.track.indexed_at = meta["indexed_at"]
    return req


def matches(meta: dict, f: dict) -> bool:
    """The filter's meaning, written out on the test's own metadata."""
    tags = set(meta["tags"].items())
    if f.get("tags_any") and not tags & set(f["tags_any"]):
        return False
    if f.get("tags_all") and not tags >= set(f["tags_all"]):
        return False
    bpm = None if meta["bpm"] is None else float(np.float32(meta["bpm"]))
    if "bpm_min" in f and (bpm is None or bpm < f["bpm_min"]):
        return False
    if "bpm_max" in f and (bpm is None or bpm > f["bpm_max"]):
        return False
    if "keys" in f and meta["key"] not in {normal_key(k) for k in f["keys"]}:
        return False
    if "duration_min_seconds" in f and meta["duration"] < f["duration_min_seconds"]:
        return False
    if "duration_max_seconds" in f and meta["duration"] > f["duration_max_seconds"]:
        return False
    return not ("indexed_after" in f and meta["indexed_at"] <= f["indexed_after"])


def filter_proto(f: dict) -> types_pb2.SearchFilter:
    kw = {k: v for k, v in f.items() if k not in ("tags_any", "tags_all")}
    return types_pb2.SearchFilter(
        tags_any=[types_pb2.TagMatch(key=k, value=v) for k, v in f.get("tags_any", [])],
        tags_all=[types_pb2.TagMatch(key=k, value=v) for k, v in f.get("tags_all", [])],
        **kw,
    )


# each filter kind alone, then combined
FILTERS = {
    "tags_any": {"tags_any": [("genre", "rock"), ("genre", "pop")]},
    "tags_all": {"tags_all": [("genre", "jazz"), ("mood", "calm")]},
    "tag_with_quotes": {"tags_any": [("quote", ODD_TAG)]},
    "tag_key_with_equals": {"tags_any": [("a=b", "c")]},
    "bpm_range": {"bpm_min": 90.0, "bpm_max": 180.5},
    "bpm_min_only": {"bpm_min": 150.0},
    "key": {"keys": ["am", "Gb minor"]},
    "duration": {"duration_min_seconds": 100.0, "duration_max_seconds": 300.0},
    "indexed_after": {"indexed_after": 1_767_225_600.0},
    "combined": {
        "tags_any": [("mood", "calm")],
        "bpm_min": 70.0,
        "keys": ["A minor", "C major", "F# minor"],
        "duration_max_seconds": 400.0,
        "indexed_after": 1_766_000_000.0,
    },
    "nothing_matches": {"tags_all": [("genre", "rock"), ("genre", "jazz")]},
}


@pytest.fixture(scope="module")
def catalog():
    tracks = make_tracks(N, seed=15, max_segments=4)
    meta = {tid: metadata(i) for i, tid in enumerate(tracks)}
    return tracks, meta


@pytest.fixture(scope="module")
def filtered(tmp_path_factory, catalog):
    """A searcher holding the catalog, its mirror filled."""
    tracks, meta = catalog
    s = Searcher(tmp_path_factory.mktemp("filters") / "data", flush_rows=64)
    for tid, segs in tracks.items():
        s.stub.UpsertTrack(catalog_request(tid, segs, meta[tid]), timeout=30)
    s.servicer.store.flush()
    assert s.servicer.store.cache.wait(60)
    yield s
    s.stop()


def _path(s: Searcher, path: str):
    """Use the mirror ("mirror"; "approx": the approximate path re-ranking on it), or do without it ("milvus":
    the exact path reads Milvus; "approx-milvus": the approximate path reads the candidates' vectors)."""
    cache = s.servicer.store.cache
    cache.state = "complete" if path in ("mirror", "approx") else "off"


def _mix(s, query, mode, f=None):
    req = mix_request(query, top_k=N, mode=mode)
    if f is not None:
        req.filter.CopyFrom(filter_proto(f))
    resp = s.stub.SearchMix(req, timeout=60)
    return [(h.track.track_id, h.best_segment.index, h.distance) for h in resp.hits]


def _stems(s, vector, part, mode, f=None):
    req = searcher_pb2.SearchStemsRequest(
        query=searcher_pb2.PartQuery(part=part, vector=vector.tolist()), top_k=1000, mode=mode
    )
    if f is not None:
        req.filter.CopyFrom(filter_proto(f))
    resp = s.stub.SearchStems(req, timeout=60)
    return [(h.track.track_id, h.segment.index, h.distance) for h in resp.hits]


def same(got: list[tuple], want: list[tuple]) -> bool:
    """The same hits in the same order, distances equal up to float32 rounding (the exact path reading
    Milvus computes them a batch at a time, and the batches differ with the filter)."""
    return [h[:2] for h in got] == [h[:2] for h in want] and np.allclose(
        [h[2] for h in got], [h[2] for h in want], rtol=0, atol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", ["mirror", "milvus", "approx", "approx-milvus"])
def test_a_filtered_search_mix_is_the_unfiltered_ranking_restricted_to_matching_tracks(filtered, catalog, path):
    tracks, meta = catalog
    _path(filtered, path)
    mode = APPROX if path.startswith("approx") else EXACT
    rng = np.random.default_rng(3)
    try:
        for name, f in FILTERS.items():
            query = random_query(rng, ["drums", "bass"], k=2)
            everything = _mix(filtered, query, mode)
            assert len(everything) == N
            want = [h for h in everything if matches(meta[h[0]], f)]
            got = _mix(filtered, query, mode, f)
            assert same(got, want), name
            if name != "nothing_matches":
                assert 0 < len(got) < N, name  # the catalog makes each filter select some tracks, not all
            else:
                assert got == []
    finally:
        _path(filtered, "mirror")


@pytest.mark.slow
@pytest.mark.parametrize("path", ["mirror", "milvus", "approx"])
def test_a_filtered_search_stems_is_the_unfiltered_ranking_restricted_to_matching_tracks(filtered, catalog, path):
    tracks, meta = catalog
    _path(filtered, path)
    mode = APPROX if path == "approx" else EXACT
    segments = sum(len(s) for s in tracks.values())
    rng = np.random.default_rng(4)
    try:
        for name, f in FILTERS.items():
            vector = rng.standard_normal(DIM).astype(np.float32)
            everything = _stems(filtered, vector, "piano", mode)
            assert len(everything) == segments
            want = [h for h in everything if matches(meta[h[0]], f)]
            assert same(_stems(filtered, vector, "piano", mode, f), want), name
    finally:
        _path(filtered, "mirror")


@pytest.mark.slow
def test_the_milvus_expression_and_the_python_predicate_agree_on_every_row(filtered, catalog):
    tracks, meta = catalog
    store = filtered.servicer.store
    name = store.collections["drums"]
    for label, f in FILTERS.items():
        where = from_proto(filter_proto(f))
        in_milvus = {r["track_id"] for r in store.milvus.query(name, where.expression(), ["track_id"])}
        rows = {
            tid: row_fields(m["tags"], m["bpm"], m["key"], m["duration"], m["indexed_at"]) for tid, m in meta.items()
        }
        in_python = {tid for tid, r in rows.items() if where.matches(r)}
        assert in_milvus == in_python == {t for t in tracks if matches(meta[t], f)}, label
    # the rows as Milvus answers them (the mirror's source) hold the same fields
    got = {r["track_id"]: r for r in store.milvus.query(name, "", ["track_id", *filters.FIELDS])}
    for label, f in FILTERS.items():
        where = from_proto(filter_proto(f))
        assert {t for t, r in got.items() if where.matches(r)} == {t for t in tracks if matches(meta[t], f)}, label


def test_filter_values_are_literals_never_expression_syntax():
    f = from_proto(types_pb2.SearchFilter(tags_any=[types_pb2.TagMatch(key='g"]) or (1==1', value="x\\")]))
    assert f.expression() == '(array_contains_any(tags, ["g\\"]) or (1\\\\=\\\\=1=x\\\\"]))'
    assert tag_element("a=b", "c") != tag_element("a", "b=c")
    assert from_proto(types_pb2.SearchFilter(keys=["Db", "c#"])).keys == ("C# major",)
    assert not from_proto(types_pb2.SearchFilter())


@pytest.mark.slow
@pytest.mark.parametrize(
    "f, field",
    [
        (types_pb2.SearchFilter(bpm_min=140, bpm_max=90), "filter.bpm_min"),
        (types_pb2.SearchFilter(bpm_max=900), "filter.bpm_max"),
        (types_pb2.SearchFilter(keys=["C major", "H minor"]), "filter.keys[1]"),
        (
            types_pb2.SearchFilter(tags_all=[types_pb2.TagMatch(key=f"k{i}", value="v") for i in range(65)]),
            "filter.tags_any",
        ),
        (types_pb2.SearchFilter(duration_min_seconds=-1), "filter.duration_min_seconds"),
        (types_pb2.SearchFilter(duration_min_seconds=300, duration_max_seconds=200), "filter.duration_min_seconds"),
        (types_pb2.SearchFilter(indexed_after=float("nan")), "filter.indexed_after"),
    ],
)
def test_a_bad_filter_is_invalid_argument_naming_the_field(filtered, f, field):
    rng = np.random.default_rng(5)
    mix = mix_request(random_query(rng, ["drums"]), top_k=5)
    mix.filter.CopyFrom(f)
    stems = searcher_pb2.SearchStemsRequest(
        query=searcher_pb2.PartQuery(part="bass", vector=rng.standard_normal(DIM).tolist()), top_k=5, filter=f
    )
    for call, req in ((filtered.stub.SearchMix, mix), (filtered.stub.SearchStems, stems)):
        exc = rpc_error(call, req, timeout=30)
        assert exc.code() == Code.INVALID_ARGUMENT
        got = details(exc)
        assert got["ErrorInfo"].reason == "INVALID_FILTER"
        assert field in [v.field for v in got["BadRequest"].field_violations]


@pytest.mark.slow
def test_bpm_and_key_are_checked_kept_in_normal_form_and_answered(filtered):
    segs = make_tracks(1, seed=9, max_segments=1)["t000"]
    req = upsert_request("keyed", segs)
    req.track.metadata.bpm = 401
    req.track.metadata.key = "Z major"
    exc = rpc_error(filtered.stub.UpsertTrack, req, timeout=30)
    assert exc.code() == Code.INVALID_ARGUMENT
    assert {v.field for v in details(exc)["BadRequest"].field_violations} == {
        "track.metadata.bpm",
        "track.metadata.key",
    }
    req.track.metadata.bpm, req.track.metadata.key = 128.5, "ebm"
    filtered.stub.UpsertTrack(req, timeout=30)
    try:
        got = filtered.stub.GetTrack(searcher_pb2.GetTrackRequest(track_id="keyed"), timeout=30).track.metadata
        assert (got.bpm, got.key) == (128.5, "D# minor")
        unknown = filtered.stub.GetTrack(
            searcher_pb2.GetTrackRequest(track_id="t015"), timeout=30
        ).track.metadata  # i=15: no BPM, no key
        assert not unknown.HasField("bpm") and unknown.key == ""
    finally:
        filtered.stub.DeleteTrack(searcher_pb2.DeleteTrackRequest(track_id="keyed"), timeout=30)


def _previous_schema_catalog(folder, tracks, meta) -> None:
    """A catalog as the searcher wrote it before filters: the current one with the filter fields dropped
    from each part's collection (rows copied without them)."""
    from pymilvus import DataType, MilvusClient

    from partsim.services.searcher.store import SearchStore

    store = SearchStore(str(folder / "milvus.db"), None, PARTS, DIM, orphan_grace_seconds=0).open(wait=True)
    for tid, segs in tracks.items():
        store.upsert(*_info_and_segments(tid, segs, meta[tid]))
    store.flush()
    m = store.milvus
    keep = ["pk", "track_id", "segment", "start", "end", "present", "norm", "power", "raw", "vector"]
    for name in store.collections.values():
        rows = [{k: r[k] for k in keep} for r in m.scan(name, keep[1:])]
        m.call("drop", m.client.drop_collection, name)
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=1100)
        s.add_field("track_id", DataType.VARCHAR, max_length=1024)
        s.add_field("segment", DataType.INT32)
        s.add_field("start", DataType.DOUBLE)
        s.add_field("end", DataType.DOUBLE)
        s.add_field("present", DataType.BOOL)
        s.add_field("norm", DataType.FLOAT)
        s.add_field("power", DataType.FLOAT)
        s.add_field("raw", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=DIM)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        m.client.create_collection(name, schema=s, consistency_level="Strong")
        m.client.create_index(name, m._index_params())
        m.client.load_collection(name)
        for r in rows:
            r["raw"] = list(r["raw"])
        m.insert(name, rows)
    store.close()


def _info_and_segments(tid, segs, meta):
    from partsim.services.searcher.meta import TrackInfo
    from partsim.services.searcher.store import Segments

    info = TrackInfo(
        tid,
        tags=meta["tags"],
        num_segments=len(segs),
        duration_seconds=meta["duration"],
        segment_seconds=10.0,
        indexed_at=meta["indexed_at"],
        bpm=meta["bpm"],
        key=meta["key"] or None,
    )
    seg = Segments(
        np.array([s["index"] for s in segs]),
        np.array([s["start"] for s in segs]),
        np.array([s["end"] for s in segs]),
        np.stack([np.stack([s["vectors"][p] for s in segs]) for p in PARTS]),
        np.array([[s["present"][p] for s in segs] for p in PARTS]),
    )
    return info, seg


@pytest.mark.slow
def test_a_catalog_from_before_filters_is_migrated_and_its_tracks_become_filterable(tmp_path, catalog, filtered):
    tracks, meta = catalog
    data = tmp_path / "data"
    data.mkdir()
    _previous_schema_catalog(data, tracks, meta)
    s = Searcher(data, flush_rows=64)
    try:
        store = s.servicer.store
        fields = {f["name"] for f in store.milvus.describe(store.collections["bass"])["fields"]}
        assert set(filters.FIELDS) <= fields
        assert s.stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=30).tracks == N
        rng = np.random.default_rng(6)
        for name in ("tags_any", "tags_all", "duration", "bpm_range", "key", "combined"):
            f = FILTERS[name]
            query = random_query(rng, ["drums", "guitar"], k=2)
            for mode in (EXACT, APPROX):
                # the same answers as the catalog written with filter fields from the start
                assert same(_mix(s, query, mode, f), _mix(filtered, query, mode, f)), name
                assert {h[0] for h in _mix(s, query, mode, f)} == {t for t in tracks if matches(meta[t], f)}
    finally:
        s.stop()


@pytest.mark.slow
def test_filters_work_on_a_milvus_server(milvus_uri, tmp_path, catalog):
    tracks, meta = catalog
    some = dict(list(tracks.items())[:12])
    s = Searcher(tmp_path / "data", milvus_uri=milvus_uri, flush_rows=64, mirror_bytes=0)
    try:
        for tid, segs in some.items():
            s.stub.UpsertTrack(catalog_request(tid, segs, meta[tid]), timeout=30)
        rng = np.random.default_rng(7)
        # "combined" has a key list, a duration range and indexed_after beside a tag and a BPM range
        for name in ("tags_any", "tag_with_quotes", "bpm_range", "combined"):
            f = FILTERS[name]
            query = random_query(rng, ["drums"], k=1)
            for mode in (EXACT, APPROX):
                everything = _mix(s, query, mode)
                assert same(_mix(s, query, mode, f), [h for h in everything if matches(meta[h[0]], f)]), name
    finally:
        s.stop()
