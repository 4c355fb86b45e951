"""Search filters through the gateway (issue 15): over gRPC, over HTTP (the JSON filter) and through ``partsim
search-mix --filter`` / ``search-stems --filter``, each answer the unfiltered ranking restricted to the matching
tracks; a bad filter is INVALID_ARGUMENT (HTTP 400) naming the field, or one line and exit status 2 from the CLI;
IndexTrack keeps a track's BPM and key. A real embedder (the shipped model), searcher (Milvus Lite) and gateway."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partsim.cli import main as cli_main
from partsim.client import PartsimClient, SearchFilter, Stem
from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from .http_util import http
from .limits_harness import Stack, details, rpc_error, wav

N = 16
GENRES = ["rock", "jazz", "pop", "folk"]
KEYS = ["A minor", "C major", "", "F# major"]

pytestmark = pytest.mark.slow


def meta(i: int) -> dict:
    return {
        "tags": {"genre": GENRES[i % 4], "era": "80s" if i % 3 == 0 else "90s"},
        "bpm": None if i % 5 == 4 else 70.0 + 7.0 * i,
        "key": KEYS[i % 4],
        "duration": 30.0 + 15.0 * i,
        "indexed_at": 1_767_225_600.0 + 86_400.0 * (i - N // 2),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("filters-gw"))
    gw = s.gateway(http_port=0, ingest_workers=0)
    parts, dim = s.searcher.servicer.parts, s.searcher.servicer.dim
    rng = np.random.default_rng(15)
    import grpc

    with grpc.insecure_channel(s.searcher.address) as ch:
        stub = searcher_pb2_grpc.SearcherServiceStub(ch)
        for i in range(N):
            m = meta(i)
            track = types_pb2.Track(
                track_id=f"song{i:02d}",
                metadata=types_pb2.TrackMetadata(title=f"Song {i}", tags=m["tags"], bpm=m["bpm"], key=m["key"]),
                duration_seconds=m["duration"],
                segment_seconds=10.0,
                model_version="test",
                indexed_at=m["indexed_at"],
            )
            segs = [
                types_pb2.SegmentEmbedding(
                    index=j,
                    start_seconds=10.0 * j,
                    end_seconds=10.0 * j + 10,
                    parts=[
                        types_pb2.PartVector(
                            part=p, vector=rng.standard_normal(dim).tolist(), norm=1.0, present=True, power=0.1
                        )
                        for p in parts
                    ],
                )
                for j in range(1 + i % 3)
            ]
            stub.UpsertTrack(searcher_pb2.UpsertTrackRequest(track=track, segments=segs), timeout=30)
    yield s, gw, parts, dim
    s.close()


def matches(m: dict, f: SearchFilter) -> bool:
    tags = set(m["tags"].items())
    if f.tags_any and not tags & set(f.tags_any):
        return False
    if f.bpm_min is not None and (m["bpm"] is None or m["bpm"] < f.bpm_min):
        return False
    if f.bpm_max is not None and (m["bpm"] is None or m["bpm"] > f.bpm_max):
        return False
    if f.keys and m["key"] not in f.keys:
        return False
    if f.duration_max is not None and m["duration"] > f.duration_max:
        return False
    return f.indexed_after is None or m["indexed_at"] > f.indexed_after


FILTERS = [
    SearchFilter(tags_any=[("genre", "rock"), ("genre", "pop")]),
    SearchFilter(bpm_min=90.0, bpm_max=150.0),
    SearchFilter(keys=["A minor", "F# major"]),
    SearchFilter(duration_max=150.0),
    SearchFilter(indexed_after=1_767_225_600.0),
    SearchFilter(tags_any=[("era", "90s")], bpm_min=80.0, keys=["C major", "F# major"], duration_max=250.0),
]
ID = {i: f"song{i:02d}" for i in range(N)}
META = {ID[i]: meta(i) for i in range(N)}


def _ids(hits) -> list[tuple[str, int]]:
    return [(h.track_id, getattr(h, "best_segment", getattr(h, "segment", None))) for h in hits]


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_search_mix_and_search_stems_through_the_gateway_are_the_unfiltered_rankings_restricted(stack, mode):
    s, gw, parts, dim = stack
    rng = np.random.default_rng(1)
    with PartsimClient(gw.address) as c:
        for f in FILTERS:
            stems = [Stem(parts[0], vector=rng.standard_normal(dim).tolist())]
            everything = c.search_mix(stems, top_k=N, mode=mode)
            assert len(everything) == N
            got = c.search_mix(stems, top_k=N, mode=mode, filter=f)
            want = [h for h in everything if matches(META[h.track_id], f)]
            assert 0 < len(got) < N and [h.track_id for h in got] == [h.track_id for h in want]
            np.testing.assert_allclose([h.distance for h in got], [h.distance for h in want], atol=1e-6)
            stem = Stem(parts[1], vector=rng.standard_normal(dim).tolist())
            all_segments = c.search_stems(stem, top_k=1000, mode=mode)
            got_s = c.search_stems(stem, top_k=1000, mode=mode, filter=f)
            want_s = [h for h in all_segments if matches(META[h.track_id], f)]
            assert [(h.track_id, h.segment) for h in got_s] == [(h.track_id, h.segment) for h in want_s]


def test_a_bad_filter_is_invalid_argument_naming_the_field_over_grpc_and_http(stack):
    import grpc

    s, gw, parts, dim = stack
    query = gateway_pb2.StemQuery(part=parts[0], vector=gateway_pb2.VectorQuery(vector=[1.0] * dim))
    cases = [
        (types_pb2.SearchFilter(bpm_min=150, bpm_max=90), "filter.bpm_min"),
        (types_pb2.SearchFilter(keys=["X major"]), "filter.keys[0]"),
        (
            types_pb2.SearchFilter(tags_any=[types_pb2.TagMatch(key=f"k{i}", value="v") for i in range(65)]),
            "filter.tags_any",
        ),
    ]
    with grpc.insecure_channel(gw.address) as ch:
        stub = gateway_pb2_grpc.PartsimServiceStub(ch)
        for f, field in cases:
            for call, req in (
                (stub.SearchMix, gateway_pb2.SearchMixRequest(queries=[query], filter=f)),
                (stub.SearchStems, gateway_pb2.SearchStemsRequest(query=query, filter=f)),
            ):
                exc = rpc_error(call, req, timeout=30)
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert field in [v.field for v in details(exc)["BadRequest"].field_violations]
    body = {"queries": [{"part": parts[0], "vector": {"vector": [1.0] * dim}}], "filter": {"bpmMin": 150, "bpmMax": 90}}
    answer = http(gw.http_url, "POST", "/v1/search:mix", body)
    assert answer.status == 400
    bad = next(d for d in answer.json()["details"] if d["@type"].endswith("BadRequest"))
    assert bad["fieldViolations"][0]["field"] == "filter.bpm_min"


def test_the_http_api_takes_the_filter_as_json(stack):
    s, gw, parts, dim = stack
    vector = np.random.default_rng(2).standard_normal(dim).tolist()
    f = SearchFilter(tags_any=[("genre", "jazz"), ("genre", "folk")], bpm_min=75.0, duration_max=200.0)
    with PartsimClient(gw.address) as c:
        want = [h.track_id for h in c.search_mix([Stem(parts[0], vector=vector)], top_k=N, mode="exact", filter=f)]
    assert want and set(want) == {t for t, m in META.items() if matches(m, f)}
    body = {
        "queries": [{"part": parts[0], "vector": {"vector": vector}}],
        "topK": N,
        "mode": "SEARCH_MODE_EXACT",
        "filter": {
            "tagsAny": [{"key": "genre", "value": "jazz"}, {"key": "genre", "value": "folk"}],
            "bpmMin": 75,
            "durationMaxSeconds": 200,
        },
    }
    answer = http(gw.http_url, "POST", "/v1/search:mix", body)
    assert answer.status == 200, answer.body
    assert [h["track"]["trackId"] for h in answer.json()["hits"]] == want
    stems = {"query": body["queries"][0], "topK": 100, "filter": body["filter"]}
    answer = http(gw.http_url, "POST", "/v1/search:stems", stems)
    assert answer.status == 200 and {h["track"]["trackId"] for h in answer.json()["hits"]} <= set(want)


def test_partsim_search_mix_and_search_stems_filter(stack, capsys):
    s, gw, parts, dim = stack
    stem = f"{parts[0]}:song05@5"
    base = ["--stem", stem, "--top-k", str(N), "--exact", "--json", "--gateway", gw.address]
    assert cli_main(["search-mix", *base]) == 0
    everything = [h["track_id"] for h in json.loads(capsys.readouterr().out)]
    specs = ["tag:era=90s", "bpm:80..", "key:C", "key:F#", "duration:..250", "indexed-after:2025-12-01"]
    assert cli_main(["search-mix", *base, *[x for sp in specs for x in ("--filter", sp)]]) == 0
    got = [h["track_id"] for h in json.loads(capsys.readouterr().out)]
    f = SearchFilter.parse(specs)
    f.keys = ["C major", "F# major"]
    assert got and got == [t for t in everything if matches(META[t], f)]
    assert cli_main(["search-stems", *base, "--filter", "tag:genre=jazz"]) == 0
    assert {h["track_id"] for h in json.loads(capsys.readouterr().out)} == {
        t for t, m in META.items() if m["tags"]["genre"] == "jazz"
    }
    for bad in ("bpm:fast", "bpm:200..100", "key:H"):
        assert cli_main(["search-mix", *base, "--filter", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("partsim: error:") and err.count("\n") == 1, err


def test_index_track_keeps_bpm_and_key_in_normal_form_and_refuses_bad_ones(stack):
    s, gw, parts, dim = stack
    audio = wav((np.random.default_rng(3).standard_normal(44100 * 11) * 3000).astype(np.int16), 44100)
    with PartsimClient(gw.address) as c:
        from partsim.errors import InvalidArgument

        with pytest.raises(InvalidArgument) as info:
            c.index_bytes(audio, "badbpm", bpm=0.5, key="Q minor")
        assert {f for f, _ in info.value.field_violations} == {"header.metadata.bpm", "header.metadata.key"}
        c.index_bytes(audio, "tempo", bpm=123.0, key="Bbm")
        t = c.get_track("tempo")
        assert (t.bpm, t.key) == (123.0, "A# minor")
        c.delete_track("tempo")
