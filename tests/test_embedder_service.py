"""The embedder service with real parts: the shipped ONNX model, real gRPC on loopback, real metrics.

Every Embed result is checked against :class:`partsim.model.inference.OnnxEmbedder` run on the
same segments (the ``partsim embed`` path). A PCM-input model (the features inside the graph):
tests/test_embedder_pcm_model.py.
The batcher, start-up, configuration and the ONNX Runtime session: tests/test_embedder_runtime.py.
"""

from __future__ import annotations

import io
import json
import shutil
import threading

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from partsim.assets import default_manifest
from partsim.internal.v1 import embedder_pb2, embedder_pb2_grpc
from partsim.model.inference import OnnxEmbedder
from partsim.services.embedder.config import EmbedderConfig
from partsim.services.embedder.engine import Engine
from partsim.services.embedder.server import EmbedderServer
from partsim.v1 import types_pb2

from .audio import SR, encode, make_audio, pcm
from .embedder_answers import MAX_AUDIO, MAX_SEGMENTS, embed, expected, vectors
from .util import handled_calls, scrape_metrics

MAX_BATCH = 8


@pytest.fixture(scope="module")
def ref() -> OnnxEmbedder:
    return OnnxEmbedder(default_manifest())


@pytest.fixture(scope="module")
def server():
    cfg = EmbedderConfig(
        address="127.0.0.1:0",
        metrics_port=0,
        metrics_host="127.0.0.1",
        max_batch=MAX_BATCH,
        max_wait_ms=50,
        max_audio_seconds=MAX_AUDIO,
        max_segments=MAX_SEGMENTS,
        grace_seconds=1,
    )
    srv = EmbedderServer(cfg, CollectorRegistry()).start()
    yield srv
    srv.stop(1)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)])
    yield embedder_pb2_grpc.EmbedderServiceStub(channel)
    channel.close()


# -- service ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_health_serving_and_model_info(server, stub, ref):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for name in ("", "partsim.internal.v1.EmbedderService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
        )
    info = stub.GetModel(embedder_pb2.GetModelRequest()).model
    assert info.model_version == ref.manifest["model_version"]
    assert list(info.parts) == ref.parts and info.subspace_dim == ref.subspace_dim
    assert info.model_segment_seconds == ref.segment_seconds and info.sample_rate == SR


def test_encoded_flac_and_wav_match_onnx_embedder(stub, ref):
    audio = make_audio(5.0, seed=1)  # 9 one-second segments every 0.5 s: more than one batch of 8
    for fmt, subtype in (("FLAC", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "PCM_16")):
        data = encode(audio, fmt, subtype)
        resp = embed(stub, types_pb2.Audio(encoded=data), seg=1.0, hop=0.5)
        decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
        want, starts = expected(ref, decoded, 1.0, 0.5)
        assert len(resp.segments) == 9 == len(want)
        np.testing.assert_allclose(vectors(resp), want, atol=1e-4, err_msg=f"{fmt}/{subtype}")
        assert [s.index for s in resp.segments] == list(range(9))
        np.testing.assert_allclose([s.start_seconds for s in resp.segments], starts)
        np.testing.assert_allclose([s.end_seconds - s.start_seconds for s in resp.segments], 1.0)
        assert resp.duration_seconds == pytest.approx(5.0)
        assert [p.part for p in resp.segments[0].parts] == ref.parts


def test_raw_pcm_float32_and_int16_match(stub, ref):
    audio = make_audio(3.0, seed=2)
    resp = embed(stub, pcm(audio))
    np.testing.assert_allclose(vectors(resp), expected(ref, audio, 1.0, 1.0)[0], atol=1e-4)
    ints = np.round(audio * 32767).astype(np.int16)
    resp = embed(stub, pcm(ints, fmt="s16"))
    np.testing.assert_allclose(vectors(resp), expected(ref, ints / np.float32(32768), 1.0, 1.0)[0], atol=1e-4)
    # the same samples as a 16-bit WAV give the same vectors
    wav = embed(stub, types_pb2.Audio(encoded=encode(ints, "WAV", "PCM_16")))
    np.testing.assert_allclose(vectors(wav), vectors(resp), atol=1e-5)


def test_stereo_is_averaged_and_other_rates_resampled(stub, ref):
    stereo = make_audio(3.0, seed=3, sr=48000, channels=2)
    mono44 = soxr.resample(stereo.mean(axis=1), 48000, SR, quality="HQ").astype(np.float32)
    want = expected(ref, mono44, 1.0, 1.0)[0]
    np.testing.assert_allclose(vectors(embed(stub, pcm(stereo, sr=48000))), want, atol=1e-4)
    np.testing.assert_allclose(
        vectors(embed(stub, types_pb2.Audio(encoded=encode(stereo, "WAV", "FLOAT", 48000)))), want, atol=1e-4
    )
    low = make_audio(2.5, seed=4, sr=22050)
    resp = embed(stub, pcm(low, sr=22050))
    np.testing.assert_allclose(
        vectors(resp), expected(ref, soxr.resample(low, 22050, SR, quality="HQ"), 1.0, 1.0)[0], atol=1e-4
    )
    assert len(resp.segments) == 2 and resp.duration_seconds == pytest.approx(2.5)


def test_segment_hop_defaults_and_tail_dropped(stub, ref):
    audio = make_audio(12.5, seed=5)
    resp = embed(stub, pcm(audio), seg=0, hop=0)  # defaults: 10 s, hop = segment; 2.5 s tail dropped
    assert [(s.start_seconds, s.end_seconds) for s in resp.segments] == [(0.0, 10.0)]
    np.testing.assert_allclose(vectors(resp), expected(ref, audio, 10.0, 10.0)[0], atol=1e-4)
    resp = embed(stub, pcm(audio[: 9 * SR]), seg=2.0, hop=3.0)  # starts 0, 3, 6; 8..9 s dropped
    assert [(s.start_seconds, s.end_seconds) for s in resp.segments] == [(0, 2), (3, 5), (6, 8)]
    np.testing.assert_allclose(vectors(resp), expected(ref, audio[: 9 * SR], 2.0, 3.0)[0], atol=1e-4)
    resp = embed(stub, pcm(audio[: int(3.9 * SR)]), seg=1.5, hop=0)  # hop = segment: 0, 1.5; 3..3.9 dropped
    assert [s.start_seconds for s in resp.segments] == [0.0, 1.5]


def test_presence_follows_norms_and_fallback_rule(stub, ref):
    audio = make_audio(4.0, seed=6)
    audio[2 * SR :] = 0  # digital silence in the second half
    resp = embed(stub, pcm(audio))
    v = vectors(resp)
    norms = np.array([[p.norm for p in s.parts] for s in resp.segments])
    present = np.array([[p.present for p in s.parts] for s in resp.segments])
    np.testing.assert_allclose(norms, np.linalg.norm(v, axis=-1), rtol=1e-5)
    bias = (ref.manifest.get("presence") or {}).get("norm_bias")
    rule = norms > 1e-3 if bias is None else np.log(norms) + np.asarray(bias) > 0
    np.testing.assert_array_equal(present, rule)


def test_presence_uses_manifest_norm_bias(tmp_path, ref):
    """A manifest with ``presence.norm_bias``: present iff log(norm) + b > 0."""
    src = default_manifest()
    manifest = json.loads(src.read_text())
    shutil.copy(src.parent / manifest["onnx"]["file"], tmp_path / manifest["onnx"]["file"])
    audio = make_audio(6.0, seed=7)
    audio[: 2 * SR] *= 0.01
    norms = np.linalg.norm(expected(ref, audio, 1.0, 1.0)[0], axis=-1)  # (6, P)
    bias = -np.log(np.median(norms, axis=0))  # half the segments above, half below
    manifest["presence"] = {"norm_bias": bias.tolist(), "rule": "present when log(norm) + norm_bias > 0"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    engine = Engine(tmp_path / "manifest.json", max_batch=4, max_wait_ms=0)
    try:
        emb = engine.embed(audio, 1.0, 1.0)
    finally:
        engine.close()
    np.testing.assert_array_equal(emb.present, np.log(emb.norms) + bias > 0)
    assert emb.present.any() and not emb.present.all()


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_correct(server, stub):
    """8 threads of one-segment requests: same answers as sequentially, and some batches hold several."""
    audios = [pcm(make_audio(1.2, seed=100 + i)) for i in range(8)]
    sequential = [vectors(embed(stub, a)) for a in audios]
    registry = server.rt.registry

    def multi_batches() -> float:
        return registry.get_sample_value("partsim_embedder_batch_size_count") - registry.get_sample_value(
            "partsim_embedder_batch_size_bucket", {"le": "1.0"}
        )

    before = multi_batches()
    for _ in range(3):  # a loaded CI machine may spread one round's arrivals over more than max_wait
        results: list = [None] * 8
        barrier = threading.Barrier(8)

        def call(i, barrier=barrier, results=results):
            barrier.wait()
            results[i] = vectors(embed(stub, audios[i]))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for got, want in zip(results, sequential):
            np.testing.assert_allclose(got, want, atol=1e-4)
        if multi_batches() > before:
            break
    assert multi_batches() > before, "no batch of more than one segment from 8 concurrent requests"


BAD = [
    (
        "undecodable",
        types_pb2.Audio(encoded=b"not audio at all" * 64),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot decode",
    ),
    ("empty bytes", types_pb2.Audio(encoded=b""), 1.0, 0.0, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("no source", types_pb2.Audio(), 1.0, 0.0, grpc.StatusCode.INVALID_ARGUMENT, "set audio.encoded or audio.pcm"),
    (
        "empty wav",
        types_pb2.Audio(encoded=encode(np.zeros(0, np.float32), "WAV", "FLOAT")),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty",
    ),
    (
        "empty pcm",
        types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"", sample_rate=SR, channels=1, format=1)),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty",
    ),
    ("nan pcm", pcm(np.full(2 * SR, np.nan, np.float32)), 1.0, 0.0, grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    (
        "inf wav",
        types_pb2.Audio(encoded=encode(np.r_[np.zeros(SR), np.inf, np.zeros(SR)].astype(np.float32), "WAV", "FLOAT")),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN",
    ),
    (
        "shorter than a segment",
        pcm(make_audio(0.5, 8)),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "lasts 0.50 s, shorter than one 1-s segment",
    ),
    (
        "default segment too long",
        pcm(make_audio(4.0, 8)),
        0.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "shorter than one 10-s segment",
    ),
    (
        "too long pcm",
        pcm(np.zeros(int((MAX_AUDIO + 1) * SR), np.int16), fmt="s16"),
        1.0,
        0.0,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"longer than the limit of {MAX_AUDIO:g} s",
    ),
    (
        "too long flac",
        types_pb2.Audio(encoded=encode(np.zeros(int((MAX_AUDIO + 1) * SR), np.int16), "FLAC", "PCM_16")),
        1.0,
        0.0,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "longer than the limit",
    ),
    (
        "too many segments",
        pcm(np.zeros(25 * SR, np.int16), fmt="s16"),
        0.5,
        0.5,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"more than the limit of {MAX_SEGMENTS} per request",
    ),
    (
        "rate 0",
        types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"\0" * 400, sample_rate=0, channels=1, format=1)),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "sample rate 0 Hz",
    ),
    (
        "channels 0",
        types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"\0" * 400, sample_rate=SR, channels=0, format=1)),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "channels 0",
    ),
    (
        "partial frame",
        types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"\0" * 10, sample_rate=SR, channels=2, format=1)),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a whole number of 8-byte frames",
    ),
    (
        "no format",
        types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"\0" * 400, sample_rate=SR, channels=1)),
        1.0,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "SAMPLE_FORMAT_UNSPECIFIED",
    ),
    ("negative hop", pcm(make_audio(2.0, 8)), 1.0, -0.5, grpc.StatusCode.INVALID_ARGUMENT, "hop_seconds"),
    ("nan segment", pcm(make_audio(2.0, 8)), float("nan"), 0.0, grpc.StatusCode.INVALID_ARGUMENT, "segment_seconds"),
    (
        "segment too short for the model",
        pcm(make_audio(2.0, 8)),
        0.2,
        0.0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs at least 32",
    ),
    (
        "hop under a sample",
        pcm(make_audio(2.0, 8)),
        1.0,
        1e-6,
        grpc.StatusCode.INVALID_ARGUMENT,
        "shorter than one sample",
    ),
]


@pytest.mark.parametrize("audio,seg,hop,code,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_clearly(stub, audio, seg, hop, code, message):
    with pytest.raises(grpc.RpcError) as info:
        embed(stub, audio, seg, hop)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()


def test_still_serving_after_bad_input_and_metrics_scrape(server, stub):
    with pytest.raises(grpc.RpcError):
        embed(stub, types_pb2.Audio(encoded=b"junk" * 100))
    assert len(embed(stub, pcm(make_audio(2.0, 9))).segments) == 2
    text = scrape_metrics(server.rt.metrics_port)
    handled = handled_calls(text, "Embed")
    assert all(handled.get(code, 0) >= 1 for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")), handled
    for name in (
        "partsim_embedder_segments_total",
        "partsim_embedder_batch_size_bucket",
        "partsim_embedder_queue_wait_seconds_bucket",
        "partsim_embedder_model_seconds_bucket",
        "partsim_embedder_queue_segments",
    ):
        assert name in text, name
