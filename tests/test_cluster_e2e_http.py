"""The HTTP/JSON API against the shared cluster (issue 13): every public RPC answers over HTTP with what it
answers over gRPC; uploads as multipart and raw audio; the indexed audio as a playable WAV; errors with the
gRPC reason. The cluster, its catalog and the songs' vectors are tests/e2e_cluster.py's session fixtures."""

from __future__ import annotations

import base64
import io
import json
import time
from urllib.parse import quote

import grpc
import numpy as np
import pytest
import soundfile as sf
from google.protobuf import json_format

from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from .e2e_cluster import SEG, songs, wav_clip
from .http_util import http, multipart

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stub(cluster):
    channel = grpc.insecure_channel(cluster.gateway, options=[("grpc.max_receive_message_length", 256 << 20)])
    yield gateway_pb2_grpc.PartsimServiceStub(channel)
    channel.close()


def same(answer, expected, cls=None):
    """The HTTP answer parsed back by protobuf's JSON mapping equals the gRPC answer."""
    assert answer.status == 200, answer.body[:500]
    got = answer.message(cls or type(expected))
    assert got == expected, (got, expected)


def test_catalog_reads_are_the_same_over_http_and_grpc(cluster, stub, indexed, catalog):
    base = cluster.http
    song = songs(catalog)[0].name
    same(http(base, "GET", "/v1/tracks?pageSize=3"), stub.ListTracks(gateway_pb2.ListTracksRequest(page_size=3)))
    same(
        http(base, "GET", f"/v1/tracks/{quote(song, safe='')}"),
        stub.GetTrack(gateway_pb2.GetTrackRequest(track_id=song)),
    )
    same(http(base, "GET", "/v1/catalog/stats"), stub.GetCatalogStats(gateway_pb2.GetCatalogStatsRequest()))


def test_search_mix_and_search_stems_are_the_same_over_http_and_grpc(cluster, stub, indexed, catalog):
    base = cluster.http
    a, b = songs(catalog)[1].name, songs(catalog)[2].name
    clip = wav_clip(songs(catalog)[3] / "mix.flac", 0.0, SEG)
    vector = indexed[a][0][1, 1].tolist()  # segment 1, part 1 (bass)
    body = {
        "queries": [
            {"part": "drums", "indexed": {"trackId": a, "seconds": 5}},
            {"part": "bass", "vector": {"vector": vector}},
            {"part": "piano", "audio": {"encoded": base64.b64encode(clip).decode()}},
        ],
        "topK": 5,
        "partWeights": {"drums": 2.0},
        "excludeTrackIds": [b],
        "mode": "SEARCH_MODE_EXACT",
    }
    request = json_format.ParseDict(body, gateway_pb2.SearchMixRequest())
    t = time.perf_counter()
    expected = stub.SearchMix(request, timeout=300)
    grpc_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    answer = http(base, "POST", "/v1/search:mix", body=body)
    http_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    stub.SearchMix(request, timeout=300)  # again, now that the clip's embedding is cached as for HTTP's call
    grpc_ms = (time.perf_counter() - t) * 1000
    print(f"SearchMix (3 stem queries, one an uploaded clip): gRPC {grpc_ms:.0f} ms, HTTP {http_ms:.0f} ms")
    same(answer, expected)
    assert len(expected.hits) == 5 and answer.json()["candidates"] == str(expected.candidates)  # int64: a string
    stems = {"query": {"part": "bass", "indexed": {"trackId": a, "segmentIndex": 1}}, "topK": 4}
    same(
        http(base, "POST", "/v1/search:stems", body=stems),
        stub.SearchStems(json_format.ParseDict(stems, gateway_pb2.SearchStemsRequest()), timeout=300),
    )


def test_embed_parts_is_the_same_over_http_and_grpc(cluster, stub, catalog):
    clip = wav_clip(songs(catalog)[0] / "mix.flac", 0.0, 2 * SEG)
    body = {"audio": {"encoded": base64.b64encode(clip).decode()}, "segmentSeconds": SEG, "hopSeconds": SEG}
    expected = stub.EmbedParts(json_format.ParseDict(body, gateway_pb2.EmbedPartsRequest()), timeout=300)
    same(http(cluster.http, "POST", "/v1/parts:embed", body=body), expected)


def test_index_track_as_multipart_and_raw_audio_then_get_and_delete(cluster, stub, catalog):
    base = cluster.http
    song = songs(catalog)[4]
    data = (song / "mix.flac").read_bytes()
    header = gateway_pb2.IndexTrackHeader(
        track_id="http/grpc", metadata=types_pb2.TrackMetadata(title="T", artist="A", tags={"k": "v"})
    )
    by_grpc = stub.IndexTrack(
        iter([gateway_pb2.IndexTrackRequest(header=header), gateway_pb2.IndexTrackRequest(chunk=data)]), timeout=300
    )
    form, ctype = multipart(
        {"track_id": "http/form", "title": "T", "artist": "A", "tags": json.dumps({"k": "v"})},
        {"audio": ("mix.flac", data)},
    )
    by_form = http(base, "POST", "/v1/tracks:index", body=form, headers={"Content-Type": ctype})
    raw_query = "track_id=http%2Fraw&title=T&artist=A&tags=" + quote(json.dumps({"k": "v"}))
    by_raw = http(base, "POST", f"/v1/tracks:index?{raw_query}", body=data, headers={"Content-Type": "audio/flac"})
    by_json = http(base, "POST", "/v1/tracks:index", body={
        "header": json_format.MessageToDict(gateway_pb2.IndexTrackHeader(track_id="http/json", metadata=header.metadata)),
        "audio": base64.b64encode(data).decode(),
    })  # fmt: skip
    for answer, tid in ((by_form, "http/form"), (by_raw, "http/raw"), (by_json, "http/json")):
        got = answer.message(gateway_pb2.IndexTrackResponse) if answer.status == 200 else None
        assert got is not None, answer.body[:500]
        for f in ("metadata", "num_segments", "duration_seconds", "segment_seconds", "model_version"):
            assert getattr(got.track, f) == getattr(by_grpc.track, f), f
        assert got.track.track_id == tid and got.replaced == by_grpc.replaced
        same(
            http(base, "GET", f"/v1/tracks/{quote(tid, safe='')}"),
            stub.GetTrack(gateway_pb2.GetTrackRequest(track_id=tid)),
        )
    # the indexed audio, clipped, plays as a WAV of the right length and rate; a Range request is answered
    original, sr = sf.read(io.BytesIO(data), dtype="float32")
    wav = http(base, "GET", "/v1/tracks/http%2Fform/audio.wav?start=2&end=5")
    assert wav.status == 200 and wav.headers["content-type"] == "audio/wav"
    assert wav.headers["content-disposition"].startswith("inline")
    samples, rate = sf.read(io.BytesIO(wav.body), dtype="float32")
    assert rate == sr and len(samples) == 3 * sr
    assert np.max(np.abs(samples - original[2 * sr : 5 * sr])) < 1e-3  # 16-bit
    whole = http(base, "GET", "/v1/tracks/http%2Fform/audio.flac")
    assert whole.headers["content-type"] == "audio/flac" and sf.info(io.BytesIO(whole.body)).frames == len(original)
    part = http(base, "GET", "/v1/tracks/http%2Fform/audio.wav?start=2&end=5", headers={"Range": "bytes=0-99"})
    assert part.status == 206 and part.body == wav.body[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(wav.body)}"
    # deletes: the version of the deleted upload, as gRPC answers it
    versions = {tid: a.message(gateway_pb2.IndexTrackResponse).track.version for a, tid in
                ((by_form, "http/form"), (by_raw, "http/raw"), (by_json, "http/json"))}  # fmt: skip
    for tid, version in versions.items():
        answer = http(base, "DELETE", f"/v1/tracks/{quote(tid, safe='')}")
        assert answer.message(gateway_pb2.DeleteTrackResponse).version == version
    expected = stub.DeleteTrack(gateway_pb2.DeleteTrackRequest(track_id="http/grpc"))
    assert expected.version == by_grpc.track.version
    assert http(base, "GET", "/v1/tracks/http%2Fform").status == 404


def test_not_found_is_404_with_the_grpc_reason(cluster, stub):
    try:
        stub.GetTrack(gateway_pb2.GetTrackRequest(track_id="no-such-track"))
        assert False, "GetTrack of an unknown track answered"
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details()
    answer = http(cluster.http, "GET", "/v1/tracks/no-such-track")
    assert answer.status == 404 and code == grpc.StatusCode.NOT_FOUND
    assert answer.json()["code"] == code.value[0] and answer.json()["message"] == message
    assert answer.reason() == "NOT_FOUND" or answer.reason().endswith("NOT_FOUND")
    assert http(cluster.http, "GET", "/v1/ingestJobs/no-such-job").status == 404


def test_ingest_jobs_over_http_are_the_grpc_jobs(cluster, stub, catalog):
    base = cluster.http
    uri = str(songs(catalog)[5] / "mix.flac")
    body = {"items": [{"trackId": "http-job", "uri": uri}, {"trackId": "http-job-bad", "uri": "/nowhere/x.flac"}]}
    answer = http(base, "POST", "/v1/ingestJobs", body=body)
    assert answer.status in (200, 400, 403), answer.body
    if answer.status != 200:  # a URI outside the allowed roots is refused up front: submit the good one only
        body = {"items": body["items"][:1]}
        answer = http(base, "POST", "/v1/ingestJobs", body=body)
    job_id = answer.message(gateway_pb2.SubmitIngestJobResponse).job_id
    deadline = time.monotonic() + 300
    while True:
        got = http(base, "GET", f"/v1/ingestJobs/{job_id}")
        expected = stub.GetIngestJob(gateway_pb2.GetIngestJobRequest(job_id=job_id))
        if got.message(gateway_pb2.GetIngestJobResponse).job.state == expected.job.state == gateway_pb2.JOB_STATE_DONE:
            same(got, expected)
            break
        assert time.monotonic() < deadline, got.body
        time.sleep(0.5)
    retried = http(base, "POST", f"/v1/ingestJobs/{job_id}:retry", body={})
    expected = stub.RetryIngestJob(gateway_pb2.RetryIngestJobRequest(job_id=job_id))
    assert retried.message(gateway_pb2.RetryIngestJobResponse).requeued == expected.requeued == 0
    listed = http(base, "GET", "/v1/ingestJobs?pageSize=100")
    assert listed.status in (200, 501)
    if listed.status == 200:
        assert job_id in [j["jobId"] for j in listed.json()["jobs"]]
    assert http(base, "DELETE", "/v1/tracks/http-job").status == 200


def test_get_stems_without_a_separator_fails_as_over_grpc(cluster, stub, indexed, catalog):
    song = songs(catalog)[0].name
    try:
        list(stub.GetStems(gateway_pb2.GetStemsRequest(segment=gateway_pb2.IndexedSegment(track_id=song, seconds=5))))
        assert False, "GetStems answered without a separator"
    except grpc.RpcError as exc:
        code = exc.code()
    answer = http(cluster.http, "GET", f"/v1/tracks/{song}/stems?segment.seconds=5")
    assert answer.json()["code"] == code.value[0]
    assert http(cluster.http, "GET", f"/v1/tracks/{song}/stems/drums.wav?seconds=5").json()["code"] == code.value[0]


# ------------------------------------------------------------------------------------------ with a separator
def test_get_stems_and_stem_files_over_http_are_the_grpc_stems(cluster_with_separator, catalog):
    """GetStems over HTTP answers gRPC's messages (float32 and FLAC); the stem files play the same samples."""
    c = cluster_with_separator
    song = songs(catalog)[2].name
    channel = grpc.insecure_channel(c.gateway, options=[("grpc.max_receive_message_length", 256 << 20)])
    try:
        stub = gateway_pb2_grpc.PartsimServiceStub(channel)
        stub.IndexTrack(
            iter([
                gateway_pb2.IndexTrackRequest(header=gateway_pb2.IndexTrackHeader(track_id=song)),
                gateway_pb2.IndexTrackRequest(chunk=(songs(catalog)[2] / "mix.flac").read_bytes()),
            ]),
            timeout=300,
        )  # fmt: skip
        segment = gateway_pb2.IndexedSegment(track_id=song, seconds=12.0)
        expected = {}
        for encoding in (types_pb2.STEM_ENCODING_FLOAT32LE, types_pb2.STEM_ENCODING_FLAC):
            request = gateway_pb2.GetStemsRequest(segment=segment, encoding=encoding)
            expected[encoding] = list(stub.GetStems(request, timeout=300))
    finally:
        channel.close()
    t = time.perf_counter()
    raw = http(c.http, "GET", f"/v1/tracks/{song}/stems?segment.seconds=12")
    print(f"GetStems over HTTP (5 stems x 10 s as float32 in base64): {(time.perf_counter() - t) * 1000:.0f} ms")
    flac = http(c.http, "GET", f"/v1/tracks/{song}/stems?segment.seconds=12&encoding=STEM_ENCODING_FLAC")
    for answer, encoding in ((raw, types_pb2.STEM_ENCODING_FLOAT32LE), (flac, types_pb2.STEM_ENCODING_FLAC)):
        assert answer.status == 200 and isinstance(answer.json(), list), answer.body[:500]
        got = [json_format.ParseDict(m, gateway_pb2.GetStemsResponse()) for m in answer.json()]
        assert got[0] == expected[encoding][0]  # the header: the segment, rate, channels, the stems' names
        assert [m.SerializeToString() for m in got] == [m.SerializeToString() for m in expected[encoding]]
    header = expected[types_pb2.STEM_ENCODING_FLOAT32LE][0].header
    sep = header.separation
    assert (header.segment_index, header.start_seconds, header.end_seconds) == (1, 10.0, 20.0)
    assert all(m.chunk.data[:4] == b"fLaC" for m in expected[types_pb2.STEM_ENCODING_FLAC][1:])
    pcm: dict[int, bytearray] = {}
    for m in expected[types_pb2.STEM_ENCODING_FLOAT32LE][1:]:
        pcm.setdefault(m.chunk.stem, bytearray()).extend(m.chunk.data)

    # each stem as a playable 16-bit file: the segment's length, the separator's rate and channels, gRPC's samples
    for i, stem in enumerate(sep.stems):
        want = np.frombuffer(bytes(pcm[i]), dtype="<f4").reshape(-1, sep.channels)
        for fmt, ctype in (("wav", "audio/wav"), ("flac", "audio/flac")):
            name = stem.part or stem.name
            answer = http(c.http, "GET", f"/v1/tracks/{song}/stems/{name}.{fmt}?seconds=12")
            assert answer.status == 200 and answer.headers["content-type"] == ctype, answer.body[:300]
            assert answer.headers["content-disposition"] == f'inline; filename="{song}-1-{name}.{fmt}"'
            samples, rate = sf.read(io.BytesIO(answer.body), dtype="float32", always_2d=True)
            assert rate == sep.sample_rate and samples.shape == (sep.total_frames, sep.channels) == want.shape
            assert sf.info(io.BytesIO(answer.body)).subtype == "PCM_16"
            assert np.max(np.abs(samples - np.clip(want, -1, 1))) <= 1.0 / 32768 + 1e-6, (name, fmt)
    by_index = http(c.http, "GET", f"/v1/tracks/{song}/stems/{sep.stems[0].name}.wav?segment_index=1")
    by_time = http(c.http, "GET", f"/v1/tracks/{song}/stems/{sep.stems[0].name}.wav?seconds=12")
    assert by_index.status == 200 and by_index.body == by_time.body

    # an unknown stem: 404 naming it and the stems there are; another file type: 404 naming the two
    unknown = http(c.http, "GET", f"/v1/tracks/{song}/stems/kazoo.wav?seconds=12")
    names = sorted({s.part for s in sep.stems if s.part} | {s.name for s in sep.stems})
    assert unknown.status == 404 and unknown.reason() == "STEM_NOT_FOUND"
    assert unknown.json()["message"] == f"no stem 'kazoo' in the separation; stems: {', '.join(names)}"
    mp3 = http(c.http, "GET", f"/v1/tracks/{song}/stems/drums.mp3?seconds=12")
    assert mp3.status == 404 and "ask for <name>.wav or <name>.flac" in mp3.json()["message"]
    beyond = http(c.http, "GET", f"/v1/tracks/{song}/stems/drums.wav?segment_index=9")
    assert beyond.status == 404 and beyond.json()["code"] == grpc.StatusCode.NOT_FOUND.value[0]

    # Range on a stem file: 206 with the bytes asked for (a suffix too), 416 beyond the end
    whole = http(c.http, "GET", f"/v1/tracks/{song}/stems/bass.flac?seconds=12")
    size = len(whole.body)
    first = http(c.http, "GET", f"/v1/tracks/{song}/stems/bass.flac?seconds=12", headers={"Range": "bytes=0-1023"})
    assert first.status == 206 and first.body == whole.body[:1024]
    assert first.headers["content-range"] == f"bytes 0-1023/{size}" and first.headers["accept-ranges"] == "bytes"
    tail = http(c.http, "GET", f"/v1/tracks/{song}/stems/bass.flac?seconds=12", headers={"Range": "bytes=-100"})
    assert tail.status == 206 and tail.body == whole.body[-100:]
    assert tail.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    past = http(c.http, "GET", f"/v1/tracks/{song}/stems/bass.flac?seconds=12", headers={"Range": f"bytes={size}-"})
    assert past.status == 416 and past.headers["content-range"] == f"bytes */{size}"


def test_a_client_deadline_in_x_server_timeout_ends_a_slow_call_with_504(cluster, catalog):
    clip = wav_clip(songs(catalog)[6] / "mix.flac", 0.37, 31.0)  # a clip no call has embedded yet: no cache hit
    body = {"audio": {"encoded": base64.b64encode(clip).decode()}, "segmentSeconds": SEG, "hopSeconds": 1.0}
    t = time.perf_counter()
    late = http(cluster.http, "POST", "/v1/parts:embed", body=body, headers={"X-Server-Timeout": "0.02"})
    took = time.perf_counter() - t
    assert late.status == 504, late.body[:500]
    assert late.json()["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], late.json()
    assert late.json()["message"] and isinstance(late.json()["details"], list)
    answered = http(cluster.http, "POST", "/v1/parts:embed", body=body, headers={"X-Server-Timeout": "300"})
    assert answered.status == 200 and len(answered.json()["segments"]) >= 21, answered.body[:300]
    print(f"EmbedParts of a 31-s clip: 504 after {took * 1000:.0f} ms with X-Server-Timeout: 0.02")
