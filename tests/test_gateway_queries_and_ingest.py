"""The gateway's rules without a server: the inputs of the retrieval function (``gateway/queries.py``:
eq. 6.1 per-part means and weights, normalisation, silence and presence) and the sandbox of ingest
URIs and uploads (``gateway/ingest.py``), on real protobuf messages and real files."""

from __future__ import annotations

import numpy as np
import pytest

from partsim.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from partsim.internal.v1 import embedder_pb2
from partsim.model.features import SILENCE_POWER
from partsim.services.gateway.config import DEFAULT_TOP_K, MAX_TOP_K
from partsim.services.gateway.ingest import job_items, resolve_uri, upload
from partsim.services.gateway.queries import (
    clip_query,
    indexed_query,
    part_index,
    part_queries,
    segment_index,
    segment_powers,
    top_k,
    unit,
    vector_query,
)
from partsim.services.gateway.stems import pack, unpack
from partsim.services.separator.client import header_and_chunks
from partsim.v1 import gateway_pb2, types_pb2

PARTS = ["drums", "bass", "piano", "guitar", "others"]
LOUD = 10 * SILENCE_POWER
QUIET = SILENCE_POWER / 10


def segment(
    index: int, vectors: dict[str, list[float]], present: set[str], power: float | None = LOUD, seconds: float = 10.0
) -> types_pb2.SegmentEmbedding:
    """A segment in the model's part order; parts not in ``vectors`` get a small vector."""
    seg = types_pb2.SegmentEmbedding(index=index, start_seconds=index * seconds, end_seconds=(index + 1) * seconds)
    for p in PARTS:
        v = vectors.get(p, [0.1, 0.0, 0.0])
        pv = seg.parts.add(part=p, vector=v, norm=float(np.linalg.norm(v)), present=p in present)
        if power is not None:
            pv.power = power
    return seg


# ---------------------------------------------------------------------------------------------
# queries: eq. 6.1 inputs


def test_a_query_embedding_has_unit_length_so_a_loud_and_a_quiet_clip_weigh_the_same():
    loud, quiet = unit(np.array([30.0, 40.0])), unit(np.array([0.3, 0.4]))
    np.testing.assert_allclose(loud, [0.6, 0.8])
    np.testing.assert_allclose(quiet, loud)
    assert unit(np.zeros(2)) is None and unit(np.array([np.inf, 1.0])) is None


def test_each_part_queries_with_the_mean_of_its_unit_embeddings_in_the_model_order():
    per_part = {"piano": [np.array([1.0, 0.0]), np.array([0.0, 1.0])], "drums": [np.array([0.6, 0.8])]}
    queries, total = part_queries(per_part, {}, PARTS, max_query_segments=64)
    assert total == 3
    assert [q.part for q in queries] == ["drums", "piano"]
    np.testing.assert_allclose(queries[0].vector, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(queries[1].vector, [0.5, 0.5])
    assert [q.weight for q in queries] == [1.0, 1.0]


def test_a_part_weight_is_passed_on_and_the_others_stay_one():
    per_part = {"bass": [np.array([1.0, 0.0])], "drums": [np.array([0.0, 1.0])]}
    queries, _ = part_queries(per_part, {"bass": 2.5}, PARTS, max_query_segments=64)
    assert {q.part: q.weight for q in queries} == {"drums": 1.0, "bass": 2.5}


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"vocals": 1.0}, "unknown part 'vocals'"),
        ({"piano": 1.0}, "piano has a weight but no query"),
        ({"bass": 0.0}, "must be a positive number"),
        ({"bass": -1.0}, "must be a positive number"),
        ({"bass": float("nan")}, "must be a positive number"),
    ],
)
def test_a_weight_for_an_unknown_or_unqueried_part_or_not_positive_is_refused(weights, message):
    with pytest.raises(InvalidArgument, match=message):
        part_queries({"bass": [np.array([1.0, 0.0])]}, weights, PARTS, max_query_segments=64)


def test_more_query_embeddings_than_the_limit_is_resource_exhausted():
    per_part = {"bass": [np.array([1.0, 0.0])] * 3, "drums": [np.array([0.0, 1.0])] * 2}
    assert part_queries(per_part, {}, PARTS, max_query_segments=5)[1] == 5
    with pytest.raises(ResourceExhausted, match="5 query embeddings; at most 4"):
        part_queries(per_part, {}, PARTS, max_query_segments=4)


def test_a_given_vector_is_normalised_and_must_fit_the_subspace():
    [u] = vector_query([3.0, 0.0, 4.0], 3, "bass", "query 0")
    np.testing.assert_allclose(u, [0.6, 0.0, 0.8], rtol=1e-6)
    with pytest.raises(InvalidArgument, match="vector has 2 values; the bass subspace has 3"):
        vector_query([1.0, 2.0], 3, "bass", "query 0")
    with pytest.raises(InvalidArgument, match="zero or not finite"):
        vector_query([0.0, 0.0, 0.0], 3, "bass", "query 0")


def test_a_query_part_must_be_one_of_the_model_parts():
    assert part_index("piano", PARTS, "query 0") == 2
    with pytest.raises(InvalidArgument, match="part is empty"):
        part_index("", PARTS, "query 0")
    with pytest.raises(InvalidArgument, match="unknown part 'vocals'"):
        part_index("vocals", PARTS, "query 0")


def test_a_catalog_segment_where_the_part_plays_is_one_query_without_warnings():
    seg = segment(2, {"bass": [0.0, 3.0, 4.0]}, present={"bass"})
    vectors, warnings = indexed_query(seg, PARTS.index("bass"), "bass", "song", "query 0", 0)
    np.testing.assert_allclose(vectors[0], [0.0, 0.6, 0.8], rtol=1e-6)
    assert warnings == []


def test_a_part_judged_absent_where_the_audio_plays_queries_with_its_raw_vector_and_a_warning():
    seg = segment(3, {"guitar": [0.0, 0.0, 0.02]}, present=set())
    vectors, warnings = indexed_query(seg, PARTS.index("guitar"), "guitar", "song", "query 1", 1)
    np.testing.assert_allclose(vectors[0], [0.0, 0.0, 1.0])
    [w] = warnings
    assert w.code == gateway_pb2.WARNING_CODE_PART_JUDGED_ABSENT
    assert (w.query_index, w.part, w.track_id, w.segment_index) == (1, "guitar", "song", 3)
    assert (w.start_seconds, w.end_seconds) == (30.0, 40.0)
    assert w.norm == pytest.approx(0.02) and w.power == pytest.approx(LOUD)
    assert "judges the guitar part absent in segment 3 (30-40 s) of track song" in w.message


def test_a_silent_catalog_segment_is_never_a_query():
    seg = segment(0, {"bass": [1.0, 0.0, 0.0]}, present={"bass"}, power=QUIET)
    with pytest.raises(InvalidArgument, match="is silent"):
        indexed_query(seg, PARTS.index("bass"), "bass", "song", "query 0", 0)


def test_an_absent_part_in_a_row_without_power_is_refused_until_the_track_is_reindexed():
    seg = segment(0, {"bass": []}, present=set(), power=None)
    with pytest.raises(InvalidArgument, match="re-index track song"):
        indexed_query(seg, PARTS.index("bass"), "bass", "song", "query 0", 0)


def test_a_clip_queries_with_its_present_segments_only_and_skips_silent_ones():
    resp = embedder_pb2.EmbedResponse(
        segments=[
            segment(0, {"piano": [1.0, 0.0, 0.0]}, present={"piano"}),
            segment(1, {"piano": [0.0, 1.0, 0.0]}, present=set()),  # judged absent: not needed
            segment(2, {"piano": [0.0, 0.0, 1.0]}, present={"piano"}, power=QUIET),  # silent
            segment(3, {"piano": [0.0, 2.0, 0.0]}, present={"piano"}),
        ]
    )
    vectors, warnings = clip_query(resp, PARTS.index("piano"), "piano", "query 0", 0, 10.0)
    np.testing.assert_allclose(np.array(vectors), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert warnings == []


def test_a_clip_where_the_part_is_never_judged_present_uses_its_audible_segments_with_a_warning_each():
    resp = embedder_pb2.EmbedResponse(
        segments=[
            segment(0, {"bass": [1.0, 0.0, 0.0]}, present=set()),
            segment(1, {"bass": [0.0, 1.0, 0.0]}, present=set(), power=QUIET),
            segment(2, {"bass": [0.0, 0.0, 1.0]}, present=set()),
        ]
    )
    vectors, warnings = clip_query(resp, PARTS.index("bass"), "bass", "query 2", 2, 10.0)
    assert len(vectors) == 2
    assert [(w.segment_index, w.track_id, w.query_index) for w in warnings] == [(0, "", 2), (2, "", 2)]
    assert "of the clip" in warnings[0].message


def test_a_clip_silent_in_every_segment_is_refused():
    resp = embedder_pb2.EmbedResponse(segments=[segment(i, {}, present=set(PARTS), power=QUIET) for i in range(2)])
    with pytest.raises(InvalidArgument, match="silent in every 10-s segment"):
        clip_query(resp, 0, "drums", "query 0", 0, 10.0)


def test_segment_power_is_the_mean_square_of_the_samples_in_each_span():
    sr = 100
    samples = np.concatenate([np.full(sr, 0.5), np.zeros(sr)]).astype(np.float32)
    spans = [
        types_pb2.SegmentEmbedding(start_seconds=0, end_seconds=1),
        types_pb2.SegmentEmbedding(start_seconds=1, end_seconds=2),
        types_pb2.SegmentEmbedding(start_seconds=2, end_seconds=2),
    ]
    assert segment_powers(samples, sr, spans) == pytest.approx([0.25, 0.0, 0.0])


def test_top_k_defaults_when_unset_and_must_be_within_the_limit():
    assert top_k(gateway_pb2.SearchMixRequest()) == DEFAULT_TOP_K
    assert top_k(gateway_pb2.SearchMixRequest(top_k=MAX_TOP_K)) == MAX_TOP_K
    for k in (0, MAX_TOP_K + 1):
        with pytest.raises(InvalidArgument, match=f"top_k must be within 1..{MAX_TOP_K}"):
            top_k(gateway_pb2.SearchStemsRequest(top_k=k))


def test_an_indexed_segment_is_found_by_index_or_by_time_within_the_track():
    track = types_pb2.Track(track_id="song", num_segments=3, segment_seconds=10.0)
    assert segment_index(track, gateway_pb2.IndexedSegment(track_id="song", segment_index=2), "q") == 2
    assert segment_index(track, gateway_pb2.IndexedSegment(track_id="song", seconds=19.9), "q") == 1
    with pytest.raises(NotFound, match="there is no segment 3"):
        segment_index(track, gateway_pb2.IndexedSegment(track_id="song", segment_index=3), "q")
    with pytest.raises(NotFound, match="30 s is outside track song"):
        segment_index(track, gateway_pb2.IndexedSegment(track_id="song", seconds=30.0), "q")


# ---------------------------------------------------------------------------------------------
# ingest: URIs, job items, uploads


@pytest.fixture
def root(tmp_path):
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "song.flac").write_bytes(b"fLaC")
    (tmp_path / "secret.flac").write_bytes(b"fLaC")
    return (tmp_path / "music").resolve()


def test_a_file_inside_an_allowed_root_resolves_as_a_path_or_a_file_uri(root):
    assert resolve_uri(str(root / "song.flac"), [root]) == root / "song.flac"
    assert resolve_uri(f"file://{root}/song.flac", [root]) == root / "song.flac"
    assert resolve_uri(f"file://localhost{root}/so%6Eg.flac", [root]) == root / "song.flac"


def test_a_file_outside_the_allowed_roots_is_refused(root):
    with pytest.raises(PermissionDenied, match="outside the allowed roots"):
        resolve_uri(str(root.parent / "secret.flac"), [root])


def test_a_path_that_climbs_out_of_a_root_is_refused(root):
    with pytest.raises(PermissionDenied, match="outside the allowed roots"):
        resolve_uri(f"{root}/../secret.flac", [root])
    with pytest.raises(PermissionDenied, match="outside the allowed roots"):
        resolve_uri(f"file://{root}/%2E%2E/secret.flac", [root])


def test_a_symbolic_link_inside_a_root_to_a_file_outside_is_refused(root):
    (root / "link.flac").symlink_to(root.parent / "secret.flac")
    with pytest.raises(PermissionDenied):
        resolve_uri(str(root / "link.flac"), [root])


def test_without_allowed_roots_every_uri_is_refused(root):
    with pytest.raises(PermissionDenied, match="none configured"):
        resolve_uri(str(root / "song.flac"), [])


@pytest.mark.parametrize(
    "uri, message",
    [
        ("music/song.flac", "must be an absolute path"),
        ("https://example.com/song.flac", "only file paths and file:// URIs"),
        ("file://elsewhere/music/song.flac", "only local file:// URIs"),
    ],
)
def test_relative_paths_remote_hosts_and_other_schemes_are_invalid(root, uri, message):
    with pytest.raises(InvalidArgument, match=message):
        resolve_uri(uri, [root])


def test_a_missing_file_inside_a_root_is_not_found(root):
    with pytest.raises(NotFound, match="no such file"):
        resolve_uri(str(root / "gone.flac"), [root])


def test_job_items_keep_uris_uploads_and_metadata(root):
    meta = types_pb2.TrackMetadata(title="Song", artist="Band", tags={"genre": "jazz"})
    items = job_items(
        [
            gateway_pb2.IngestItem(track_id="a", metadata=meta, uri=str(root / "song.flac")),
            gateway_pb2.IngestItem(track_id="b", audio=types_pb2.Audio(encoded=b"RIFF")),
        ],
        [root],
    )
    assert [(i.track_id, i.uri, i.audio) for i in items] == [("a", str(root / "song.flac"), None), ("b", None, b"RIFF")]
    assert items[0].metadata == {"title": "Song", "artist": "Band", "tags": {"genre": "jazz"}}


@pytest.mark.parametrize(
    "items, error, message",
    [
        ([], InvalidArgument, "no items"),
        (
            [gateway_pb2.IngestItem(track_id="a", audio=types_pb2.Audio(encoded=b"x"))] * 2,
            InvalidArgument,
            "appears twice",
        ),
        ([gateway_pb2.IngestItem(track_id="a")], InvalidArgument, "set uri or audio"),
        (
            [gateway_pb2.IngestItem(track_id="a", audio=types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"x")))],
            InvalidArgument,
            "must be encoded audio bytes",
        ),
        ([gateway_pb2.IngestItem(track_id="a", uri="/etc/passwd")], PermissionDenied, "outside the allowed roots"),
    ],
)
def test_a_job_with_no_items_a_repeated_track_a_missing_source_or_a_uri_outside_the_roots_is_refused(
    root, items, error, message
):
    with pytest.raises(error, match=message):
        job_items(items, [root])


def test_an_upload_joins_its_chunks_up_to_the_limit():
    header = gateway_pb2.IndexTrackHeader(track_id="a")
    assert upload(header, [b"ab", b"cd"], max_bytes=4) == types_pb2.Audio(encoded=b"abcd")
    with pytest.raises(ResourceExhausted, match="limit of 3 bytes"):
        upload(header, [b"ab", b"cd"], max_bytes=3)
    pcm = gateway_pb2.IndexTrackHeader(track_id="a", pcm_format=types_pb2.RawPcm(sample_rate=8000, channels=1))
    audio = upload(pcm, [b"\0\0"], max_bytes=4)
    assert (audio.pcm.sample_rate, audio.pcm.channels, audio.pcm.data) == (8000, 1, b"\0\0")


def test_a_stream_must_start_with_its_header_and_carry_only_chunks_after_it():
    msgs = [
        gateway_pb2.IndexTrackRequest(header=gateway_pb2.IndexTrackHeader(track_id="a")),
        gateway_pb2.IndexTrackRequest(chunk=b"ab"),
        gateway_pb2.IndexTrackRequest(chunk=b"cd"),
    ]
    header, chunks = header_and_chunks(msgs, "the upload")
    assert header.track_id == "a" and list(chunks) == [b"ab", b"cd"]
    with pytest.raises(InvalidArgument, match="the upload was empty"):
        header_and_chunks([], "the upload")
    with pytest.raises(InvalidArgument, match="did not start with a header"):
        header_and_chunks(msgs[1:], "the upload")
    with pytest.raises(InvalidArgument, match="a second header in the upload"):
        list(header_and_chunks(msgs + msgs[:1], "the upload")[1])


def test_a_stems_stream_comes_back_from_the_cache_unchanged():
    msgs = [
        gateway_pb2.GetStemsResponse(header=gateway_pb2.GetStemsHeader(track_id="a", segment_index=1)),
        gateway_pb2.GetStemsResponse(chunk=types_pb2.StemChunk(stem=0, offset=0, data=b"\1" * 300)),
        gateway_pb2.GetStemsResponse(chunk=types_pb2.StemChunk(stem=1, offset=0, data=b"")),
    ]
    assert unpack(pack(msgs)) == msgs
