"""The searcher as a service: bad input gets its status code and a message that names the problem while the
server keeps serving; health, metrics, configuration from the manifest and the environment, and the process
(``python -m partsim.services.searcher``) until SIGTERM.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.config import parse
from partsim.services.searcher.config import PREFIX, SearcherConfig

from .searcher_harness import APPROX, DIM, EXACT, PARTS, Code, make_tracks, mix_request, upsert_request
from .util import handled_calls, scrape_metrics


def bad_requests():
    seg = make_tracks(1, seed=15, max_segments=2)["t000"]
    good = upsert_request("ok", seg)
    v = [0.5] * DIM

    def edit(fn):
        r = searcher_pb2.UpsertTrackRequest()
        r.CopyFrom(good)
        fn(r)
        return r

    def pq(part="drums", vector=v, weight=0.0):
        return searcher_pb2.PartQuery(part=part, vector=vector, weight=weight)

    mix = searcher_pb2.SearchMixRequest
    stems = searcher_pb2.SearchStemsRequest
    inv, nf = Code.INVALID_ARGUMENT, Code.NOT_FOUND
    return [
        ("UpsertTrack", edit(lambda r: setattr(r.track, "track_id", "")), inv, "track_id is empty"),
        ("UpsertTrack", edit(lambda r: r.ClearField("segments")), inv, "segments is empty"),
        (
            "UpsertTrack",
            edit(lambda r: r.segments[0].parts[1].vector.append(1.0)),
            inv,
            f"has {DIM + 1} values, expected subspace_dim {DIM}",
        ),
        ("UpsertTrack", edit(lambda r: setattr(r.segments[0].parts[2], "part", "vocals")), inv, "unknown ['vocals']"),
        ("UpsertTrack", edit(lambda r: r.segments[1].parts.pop()), inv, "missing ['others']"),
        ("UpsertTrack", edit(lambda r: setattr(r.segments[1], "index", 0)), inv, "distinct"),
        ("UpsertTrack", edit(lambda r: setattr(r.track, "num_segments", 7)), inv, "num_segments is 7"),
        ("UpsertTrack", edit(lambda r: setattr(r.track, "track_id", "x" * 300)), inv, "the limit is 256"),
        ("DeleteTrack", searcher_pb2.DeleteTrackRequest(track_id="nope"), nf, "'nope' is not indexed"),
        ("GetTrack", searcher_pb2.GetTrackRequest(track_id="nope"), nf, "'nope' is not indexed"),
        ("GetSegment", searcher_pb2.GetSegmentRequest(track_id="nope"), nf, "'nope' is not indexed"),
        ("GetSegment", searcher_pb2.GetSegmentRequest(track_id="t000", segment_index=99), nf, "no segment 99"),
        ("GetSegment", searcher_pb2.GetSegmentRequest(track_id="t000", segment_index=-1), nf, "no segment -1"),
        (
            "ListTracks",
            searcher_pb2.ListTracksRequest(page_token="garbage!"),
            inv,
            "page_token is not one this searcher",
        ),
        ("ListTracks", searcher_pb2.ListTracksRequest(page_size=-1), inv, "page_size -1: must be >= 0 (0 means 50"),
        ("SearchMix", mix(top_k=10), inv, "parts is empty"),
        ("SearchMix", mix(parts=[pq("vocals")], top_k=10), inv, "unknown part 'vocals'"),
        ("SearchMix", mix(parts=[pq(vector=v[:-1])], top_k=10), inv, f"has {DIM - 1} values, expected"),
        ("SearchMix", mix(parts=[pq()], top_k=0), inv, "top_k 0: must be within 1..1000"),
        ("SearchMix", mix(parts=[pq()], top_k=1001), inv, "top_k 1001: must be within 1..1000"),
        ("SearchMix", mix(parts=[pq(weight=-1.0)], top_k=10), inv, "weight -1.0"),
        ("SearchMix", mix(parts=[pq(), pq()], top_k=10), inv, "given twice"),
        ("SearchMix", mix(parts=[pq(vector=[0.0] * DIM)], top_k=10), inv, "all zeros"),
        ("SearchMix", mix(parts=[pq(vector=[float("nan")] * DIM)], top_k=10), inv, "NaN"),
        ("SearchStems", stems(top_k=10), inv, "query is unset"),
        ("SearchStems", stems(query=pq("vocals"), top_k=10), inv, "unknown part 'vocals'"),
        ("SearchStems", stems(query=pq(vector=v * 2), top_k=10), inv, f"has {2 * DIM} values"),
        ("SearchStems", stems(query=pq(), top_k=0), inv, "top_k 0"),
        ("SearchStems", stems(query=pq(weight=-0.5), top_k=5), inv, "weight -0.5"),
    ]


@pytest.mark.slow
def test_bad_inputs_get_status_codes_and_the_server_keeps_serving(searcher):
    searcher.upsert(make_tracks(1, seed=15, max_segments=2))
    for method, request, code, text in bad_requests():
        with pytest.raises(grpc.RpcError) as e:
            getattr(searcher.stub, method)(request, timeout=10)
        assert e.value.code() == code, (method, text, e.value.details())
        assert text in e.value.details(), (method, e.value.details())
    stats = searcher.stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=10)
    assert (stats.tracks, stats.present_segments_by_part.keys() <= set(PARTS)) == (1, True)
    assert "milvus-lite" in stats.backend
    # weight 0 (unset) means 1: the same result as explicit equal weights
    q = {"drums": [np.ones(DIM, np.float32)], "bass": [np.arange(DIM, dtype=np.float32)]}
    a = searcher.stub.SearchMix(mix_request(q, {}, mode=EXACT))
    b = searcher.stub.SearchMix(mix_request(q, {"drums": 1.0, "bass": 1.0}, mode=EXACT))
    assert a == b


@pytest.mark.slow
def test_health_and_metrics(searcher):
    health = health_pb2_grpc.HealthStub(searcher.channel)
    for service in ("", "partsim.internal.v1.SearcherService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    searcher.upsert(make_tracks(3, seed=16))
    q = {"drums": [np.ones(DIM, np.float32)]}
    searcher.stub.SearchMix(mix_request(q, mode=EXACT))
    searcher.stub.SearchMix(mix_request(q, mode=APPROX))
    with pytest.raises(grpc.RpcError):
        searcher.stub.SearchMix(mix_request(q, top_k=0))
    text = scrape_metrics(searcher.rt.metrics_port)
    handled = handled_calls(text, "SearchMix")
    assert handled.get("OK") == 2 and handled.get("INVALID_ARGUMENT") == 1, handled
    assert re.search(r'^partsim_search_seconds_count\{kind="mix",mode="exact"\} 1\.0$', text, re.M)
    assert re.search(r'^partsim_search_seconds_count\{kind="mix",mode="approximate"\} 1\.0$', text, re.M)
    assert re.search(r'^partsim_search_candidates_count\{mode="approximate"\} 1\.0$', text, re.M)
    assert re.search(r"^partsim_index_tracks 3\.0$", text, re.M)


def test_config_defaults_come_from_the_manifest(tmp_path):
    cfg = parse(SearcherConfig, PREFIX, [], environ={f"{PREFIX}_DATA_DIR": str(tmp_path)})
    assert (cfg.address, cfg.metrics_port, cfg.index_type) == ("127.0.0.1:50053", 9093, "HNSW")
    assert cfg.model_parts() == (PARTS, 128)
    assert cfg.uri == str(tmp_path / "milvus.db")
    cfg = parse(
        SearcherConfig,
        PREFIX,
        ["--parts", "a,b", "--subspace-dim", "8", "--index-type", "FLAT"],
        environ={f"{PREFIX}_DATA_DIR": str(tmp_path), f"{PREFIX}_MILVUS_URI": "http://milvus:19530"},
    )
    assert cfg.model_parts() == (["a", "b"], 8) and cfg.uri == "http://milvus:19530"
    for argv, text in [
        (["--index-type", "IVF_PQ"], "PARTSIM_SEARCHER_INDEX_TYPE"),
        (["--ann-candidates", "20000"], "PARTSIM_SEARCHER_ANN_CANDIDATES"),
        (["--parts", "a,a"], "PARTSIM_SEARCHER_PARTS"),
    ]:
        with pytest.raises(Exception, match=text):
            parse(SearcherConfig, PREFIX, argv, environ={f"{PREFIX}_DATA_DIR": str(tmp_path)})
    with pytest.raises(Exception, match="PARTSIM_SEARCHER_DATA_DIR"):
        parse(SearcherConfig, PREFIX, [], environ={})


@pytest.mark.slow
def test_main_serves_until_sigterm(tmp_path):
    """``python -m partsim.services.searcher``: prints its address, turns SERVING, stops on SIGTERM."""
    env = {
        f"{PREFIX}_ADDRESS": "127.0.0.1:0",
        f"{PREFIX}_DATA_DIR": str(tmp_path / "d"),
        f"{PREFIX}_METRICS_PORT": "-1",
        f"{PREFIX}_PARTS": "drums,bass",
        f"{PREFIX}_SUBSPACE_DIM": "4",
    }
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "partsim.services.searcher"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        address, deadline = None, time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"serving on (\S+:\d+)", line)
            address = m.group(1) if m else None
            assert line or proc.poll() is None, "searcher exited"
        with grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                != health_pb2.HealthCheckResponse.SERVING
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            stub = searcher_pb2_grpc.SearcherServiceStub(ch)
            assert stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=10).tracks == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
