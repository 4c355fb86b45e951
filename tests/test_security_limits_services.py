"""Limits and errors a caller can act on (issue 12), on real services over loopback: an embedder with the shipped
model, a searcher on Milvus Lite, a gateway in front of them whose searcher is reached through a TCP relay these
tests stall or close (a partition, a dead host) - metadata limits at both services, precise codes, google.rpc.Status
details on every error, no internal address or path in a message, the caller's deadline bounding the gateway's
calls, a full disk (a real tmpfs; root only) answered as STORAGE_FULL and never retried. The rules as functions:
tests/test_security_limits.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from partsim.client import PartsimClient
from partsim.errors import InvalidArgument, ResourceExhausted, Unavailable
from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from .limits_harness import (
    HUGE_TITLE,
    MANY_TAGS,
    Relay,
    Stack,
    assert_says_nothing_internal,
    details,
    fill,
    rpc_error,
    wav,
)
from .searcher_harness import make_tracks, upsert_request
from .util import handled_calls, scrape_metrics

Code = grpc.StatusCode


@pytest.mark.slow
def test_a_searcher_on_a_full_disk_answers_storage_full_keeps_serving_and_recovers(tiny_fs):
    from .searcher_harness import Searcher

    folder = tiny_fs("6m")
    searcher = Searcher(folder / "data", flush_rows=64)
    try:
        tracks = list(make_tracks(1000, seed=3).items())
        n = 0
        with pytest.raises(grpc.RpcError) as info:
            for n, (tid, segs) in enumerate(tracks):  # noqa: B007 - n: how many were written before the disk filled
                searcher.stub.UpsertTrack(upsert_request(tid, segs, title="x" * 500), timeout=30)
        exc = info.value
        assert exc.code() == Code.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
        assert details(exc)["ErrorInfo"].reason == "STORAGE_FULL"
        assert "no space left on the device" in exc.details() and str(folder) not in exc.details()
        stats = searcher.stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=5)
        assert stats.tracks == n  # the failed write left the catalog as it was
        tiny_fs.grow(folder, "64m")
        for tid, segs in tracks[n : n + 3]:
            searcher.stub.UpsertTrack(upsert_request(tid, segs), timeout=30)
        assert searcher.stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=5).tracks == n + 3
    finally:
        searcher.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("limits"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def relay(stack):
    r = Relay(stack.searcher.address)
    yield r
    r.close()


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    (folder / "garbage.flac").write_bytes(b"not audio at all")
    return folder


@pytest.fixture(scope="module")
def gateway(stack, relay, music):
    return stack.gateway(relay.address, allowed_roots=str(music), ingest_workers=1)


@pytest.fixture(scope="module")
def stub(gateway):
    with grpc.insecure_channel(gateway.address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        yield gateway_pb2_grpc.PartsimServiceStub(ch)


@pytest.fixture(scope="module")
def searcher_stub(stack):
    with grpc.insecure_channel(stack.searcher.address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        yield searcher_pb2_grpc.SearcherServiceStub(ch)


def model(gateway) -> types_pb2.ModelInfo:
    return gateway.servicer.backends.require_model()


def vector_search(gateway, values: list[float] | None = None) -> gateway_pb2.SearchMixRequest:
    m = model(gateway)
    q = gateway_pb2.StemQuery(part=m.parts[0])
    q.vector.vector.extend(values if values is not None else [1.0] * m.subspace_dim)
    return gateway_pb2.SearchMixRequest(queries=[q])


def index_request(track_id: str, meta: types_pb2.TrackMetadata, data: bytes = b"") -> list:
    return [gateway_pb2.IndexTrackRequest(header=gateway_pb2.IndexTrackHeader(track_id=track_id, metadata=meta))] + (
        [gateway_pb2.IndexTrackRequest(chunk=data)] if data else []
    )


@pytest.mark.slow
def test_an_8_mb_title_and_50000_tags_are_refused_by_the_gateway_and_by_the_searcher(
    gateway, stub, searcher_stub, stack
):
    song = wav(np.zeros(44100, np.int16), 44100)
    for meta, field in [
        (types_pb2.TrackMetadata(title=HUGE_TITLE), "metadata.title"),
        (types_pb2.TrackMetadata(tags=MANY_TAGS), "metadata.tags"),
    ]:
        exc = rpc_error(stub.IndexTrack, iter(index_request("big", meta, song)), timeout=30)
        assert exc.code() == Code.INVALID_ARGUMENT and "the limit is" in exc.details()
        got = details(exc)
        assert got["ErrorInfo"].reason == "METADATA_TOO_LARGE"
        assert got["BadRequest"].field_violations[0].field == f"header.{field}"
        job = gateway_pb2.SubmitIngestJobRequest(
            items=[gateway_pb2.IngestItem(track_id="big", uri="/x", metadata=meta)]
        )
        exc = rpc_error(stub.SubmitIngestJob, job, timeout=30)
        assert exc.code() == Code.INVALID_ARGUMENT and details(exc)["BadRequest"].field_violations[0].field == (
            f"items[0].{field}"
        )
        # straight to the searcher, past the gateway: the same limits
        up = upsert_request("big", make_tracks(1, seed=1, max_segments=1)["t000"])
        up.track.metadata.CopyFrom(meta)
        exc = rpc_error(searcher_stub.UpsertTrack, up, timeout=30)
        assert exc.code() == Code.INVALID_ARGUMENT and details(exc)["ErrorInfo"].reason == "METADATA_TOO_LARGE"
        assert details(exc)["BadRequest"].field_violations[0].field == f"track.{field}"
    with PartsimClient(gateway.address) as c:  # the Python client exposes the details
        with pytest.raises(InvalidArgument) as info:
            c.index_bytes(song, "big", title=HUGE_TITLE)
        assert info.value.reason == "METADATA_TOO_LARGE"
        assert info.value.field_violations[0][0] == "header.metadata.title"
        with pytest.raises(Exception) as info:
            c.get_track("big")
        assert info.value.reason == "TRACK_NOT_FOUND"  # nothing of it was stored


@pytest.mark.slow
def test_a_1_hz_wav_a_nul_in_a_uri_and_a_3e38_vector_get_precise_codes(gateway, stub, searcher_stub):
    t0 = time.perf_counter()
    exc = rpc_error(
        stub.EmbedParts,
        gateway_pb2.EmbedPartsRequest(audio=types_pb2.Audio(encoded=wav(np.zeros(2_000_000, np.int16), 1))),
        timeout=30,
    )
    assert exc.code() == Code.INVALID_ARGUMENT and "sample rate 1 Hz is outside 1000..384000 Hz" in exc.details()
    assert time.perf_counter() - t0 < 2 and details(exc)["ErrorInfo"].reason == "INVALID_AUDIO"
    job = gateway_pb2.SubmitIngestJobRequest(items=[gateway_pb2.IngestItem(track_id="a", uri="/music/a\x00.flac")])
    exc = rpc_error(stub.SubmitIngestJob, job, timeout=30)
    assert exc.code() == Code.INVALID_ARGUMENT and "control character" in exc.details()
    exc = rpc_error(stub.SearchMix, vector_search(gateway, [3e38] * model(gateway).subspace_dim), timeout=30)
    assert exc.code() == Code.INVALID_ARGUMENT and "overflows float32" in exc.details()
    part = model(gateway).parts[0]
    pq = searcher_pb2.PartQuery(part=part, vector=[3e38] * model(gateway).subspace_dim)
    exc = rpc_error(searcher_stub.SearchMix, searcher_pb2.SearchMixRequest(parts=[pq], top_k=3), timeout=30)
    assert exc.code() == Code.INVALID_ARGUMENT and "overflows float32" in exc.details()


@pytest.mark.slow
def test_every_error_carries_status_details_and_no_internal_address_or_path(stack, gateway, stub, music):
    outside = str(music.parent / "elsewhere.flac")
    calls = [
        (stub.GetTrack, searcher_pb2.GetTrackRequest(track_id="nobody"), Code.NOT_FOUND, ""),
        (stub.GetTrack, searcher_pb2.GetTrackRequest(track_id=""), Code.INVALID_ARGUMENT, ""),
        (
            stub.SubmitIngestJob,
            gateway_pb2.SubmitIngestJobRequest(items=[gateway_pb2.IngestItem(track_id="a", uri=outside)]),
            Code.PERMISSION_DENIED,
            outside,
        ),
        (
            stub.SubmitIngestJob,
            gateway_pb2.SubmitIngestJobRequest(
                items=[gateway_pb2.IngestItem(track_id="a", uri="file://db.internal/x")]
            ),
            Code.INVALID_ARGUMENT,
            "file://db.internal/x",
        ),
        (
            stub.EmbedParts,
            gateway_pb2.EmbedPartsRequest(audio=types_pb2.Audio(encoded=b"garbage bytes")),
            Code.INVALID_ARGUMENT,
            "",
        ),
        (stub.SearchMix, gateway_pb2.SearchMixRequest(), Code.INVALID_ARGUMENT, ""),
    ]
    for method, request, code, sent in calls:
        exc = rpc_error(method, request, timeout=30)
        assert exc.code() == code, (exc.code(), exc.details())
        info = details(exc)["ErrorInfo"]
        assert info.domain == "partsim.v1" and re.fullmatch(r"[A-Z][A-Z_]+", info.reason), info
        assert_says_nothing_internal(exc.details(), sent)
    # a job item that fails while it runs: its failure message, as GetIngestJob answers it
    job = stub.SubmitIngestJob(
        gateway_pb2.SubmitIngestJobRequest(
            items=[gateway_pb2.IngestItem(track_id="g", uri=str(music / "garbage.flac"))]
        ),
        timeout=30,
    ).job_id
    deadline = time.monotonic() + 60
    while (st := stub.GetIngestJob(gateway_pb2.GetIngestJobRequest(job_id=job), timeout=30).job).failed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "decode" in st.failures[0].error
    assert_says_nothing_internal(st.failures[0].error)
    # backends gone: a gateway whose searcher's host refuses connections names it by its role only
    dead = Relay(stack.searcher.address)
    lonely = stack.gateway(dead.address, ingest_workers=0)
    dead.close()
    with grpc.insecure_channel(lonely.address) as ch:
        exc = rpc_error(gateway_pb2_grpc.PartsimServiceStub(ch).SearchMix, vector_search(lonely), timeout=30)
    assert exc.code() == Code.UNAVAILABLE and exc.details() == "the searcher is unavailable", exc.details()
    assert details(exc)["ErrorInfo"].reason == "BACKEND_UNAVAILABLE"


@pytest.mark.slow
def test_a_gateway_looking_for_its_backends_says_when_to_retry(tmp_path):
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder="127.0.0.1:1",
        searcher="127.0.0.1:1",
        data_dir=str(tmp_path),
        metrics_port=-1,
        ingest_workers=0,
    )
    server = GatewayServer(cfg).start()
    try:
        with PartsimClient(server.address) as c:
            with pytest.raises(Unavailable) as info:
                c.stats()
        assert info.value.reason == "BACKEND_UNAVAILABLE" and info.value.retry_after_seconds == 1.0
        assert_says_nothing_internal(str(info.value))
    finally:
        server.stop(0)


@pytest.mark.slow
def test_the_callers_deadline_bounds_the_gateways_call_to_a_stalled_searcher(gateway, stub, relay):
    """The gateway's configured backend deadline is 30 s; a SearchMix with a 0.5-s deadline while the searcher's
    host stops answering ends, in the gateway too, after about 0.5 s."""
    request = vector_search(gateway)
    stub.SearchMix(request, timeout=30)  # the path works
    before = handled_calls(scrape_metrics(gateway.rt.metrics_port), "SearchMix")
    relay.hold()
    try:
        t0 = time.monotonic()
        exc = rpc_error(stub.SearchMix, request, timeout=0.5)
        assert exc.code() == Code.DEADLINE_EXCEEDED and time.monotonic() - t0 < 1.5
        while (after := handled_calls(scrape_metrics(gateway.rt.metrics_port), "SearchMix")) == before:
            assert time.monotonic() - t0 < 3, "the gateway is still waiting for the searcher"
            time.sleep(0.05)
        assert after.get("DEADLINE_EXCEEDED", 0) == before.get("DEADLINE_EXCEEDED", 0) + 1, (before, after)
    finally:
        relay.release()
    stub.SearchMix(request, timeout=30)


@pytest.mark.slow
def test_a_full_audio_store_fails_an_ingest_item_at_once_without_retries(stack, tiny_fs):
    """The gateway keeps audio on a full disk: IndexTrack is RESOURCE_EXHAUSTED (STORAGE_FULL); a job's item fails
    with that message on its first attempt (no backoff: retrying does not free space)."""
    folder = tiny_fs("256k")
    fill(folder)
    gw = stack.gateway(audio_dir=str(folder), ingest_workers=1)
    song = wav(np.random.default_rng(0).standard_normal(44100 * 12).astype(np.float32) * 0.1, 44100)
    with PartsimClient(gw.address) as c:
        with pytest.raises(ResourceExhausted) as info:
            c.index_bytes(song, "full")
        assert info.value.reason == "STORAGE_FULL" and str(folder) not in str(info.value)
        t0 = time.monotonic()
        job = c.submit_job([{"track_id": "full", "audio": song}])
        while (st := c.get_job(job)).state != gateway_pb2.JOB_STATE_DONE:
            assert time.monotonic() - t0 < 20, "the item is being retried"
            time.sleep(0.2)
        assert (st.failed, st.failures[0].error) == (1, "cannot store the audio of full: no space left on the device")
    retries = re.search(r"^partsim_ingest_retries_total (\S+)$", scrape_metrics(gw.rt.metrics_port), re.M)
    assert retries is None or float(retries.group(1)) == 0.0
