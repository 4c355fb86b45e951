"""The separator service with real parts: a tiny Demucs model saved in demucs's own repository format,
real gRPC on loopback, real metrics, the ``partsim separate`` command as a process.

The tiny models have random weights (they separate nothing well); what is checked is the plumbing:
one stem per source, lengths, streaming that reassembles bit-exactly to the engine's output, the
engine equal to ``demucs.apply.apply_model(split=True)``, encodings, channel/rate conversion, limits,
errors with their status codes, a cancelled stream's slot freed. Admission and start-up:
tests/test_separator_lifecycle.py; the engine's models and start-up errors: tests/test_separator_engine.py.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from partsim.internal.v1 import separator_pb2, separator_pb2_grpc
from partsim.services.separator.client import collect, decode_stems
from partsim.services.separator.engine import Engine
from partsim.services.separator.server import SeparatorServer
from partsim.v1 import types_pb2

from .audio import SR, encode, make_audio, pcm
from .tiny_separator import PARTS5, STOCK, make_tiny_repo, tiny_server_config
from .util import handled_calls, run_cli, scrape_metrics

MAX_AUDIO = 8.0
FLOAT, FLAC = types_pb2.STEM_ENCODING_FLOAT32LE, types_pb2.STEM_ENCODING_FLAC


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_tiny_repo(tmp_path_factory.mktemp("seprepo"), sources=STOCK)


@pytest.fixture(scope="module")
def server(repo):
    cfg = tiny_server_config(
        repo,
        max_audio_seconds=MAX_AUDIO,
        chunk_kb=64,
        metrics_port=0,
        metrics_host="127.0.0.1",
        grace_seconds=1,
        max_queued=8,
        workers=12,
    )
    srv = SeparatorServer(cfg, CollectorRegistry()).start()
    yield srv
    srv.stop(1)


@pytest.fixture(scope="module")
def engine(server) -> Engine:
    return server.servicer.engine


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 << 20)])
    yield separator_pb2_grpc.SeparatorServiceStub(channel)
    channel.close()


def call(
    stub, audio: types_pb2.Audio, encoding: int = FLOAT, **fields
) -> tuple[list, types_pb2.SeparationHeader, list[bytes]]:
    """One Separate call: (all messages, header, per-stem bytes)."""
    msgs = list(stub.Separate(separator_pb2.SeparateRequest(audio=audio, encoding=encoding, **fields), timeout=120))
    header, stems = collect(msgs)
    return msgs, header, stems


# -- service ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_health_serving_and_model_info(server, stub):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for name in ("", "partsim.internal.v1.SeparatorService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
        )
    m = stub.GetSeparatorModel(separator_pb2.GetSeparatorModelRequest()).model
    assert m.name == "tiny-sep" and list(m.sources) == STOCK
    assert (m.sample_rate, m.channels, m.segment_seconds, m.overlap) == (SR, 1, 1.0, 0.25)
    # a source mapped to nothing stays a stem (for listening), unnamed sources keep their own name
    assert dict(m.parts) == {"drums": "drums", "bass": "bass", "other": "others", "vocals": ""}
    assert (m.default_shifts, m.max_shifts, m.max_audio_seconds) == (0, 4, MAX_AUDIO)


@pytest.mark.slow
def test_float_stream_reassembles_the_engine_output_exactly(stub, engine):
    audio = make_audio(2.7, seed=1)
    msgs, header, stems = call(stub, pcm(audio))
    assert msgs[0].WhichOneof("payload") == "header" and len(msgs) > 1 + len(STOCK)  # several chunks per stem
    assert [(s.name, s.part) for s in header.stems] == [
        ("drums", "drums"),
        ("bass", "bass"),
        ("other", "others"),
        ("vocals", ""),
    ]
    n = len(audio)
    assert (header.model, header.sample_rate, header.channels, header.total_frames) == ("tiny-sep", SR, 1, n)
    assert (header.encoding, header.start_seconds, header.shifts) == (FLOAT, 0.0, 0)
    assert header.end_seconds == pytest.approx(n / SR)
    assert all(len(m.chunk.data) <= 64 * 1024 for m in msgs[1:])
    got = decode_stems(header, stems)
    want = engine.separate(audio[:, None])
    assert got.shape == (len(STOCK), 1, n)
    np.testing.assert_array_equal(got, want)
    # float32 chunks arrive interleaved, block after block, as the separation proceeds
    order = [m.chunk.stem for m in msgs[1:]]
    assert order != sorted(order)


@pytest.mark.slow
def test_engine_equals_demucs_apply_model(engine):
    import torch
    from demucs.apply import apply_model

    audio = make_audio(3.3, seed=2)[:, None]
    ref = torch.from_numpy(audio.mean(axis=1, dtype=np.float32))
    mean, std = ref.mean(), ref.std() + 1e-8
    mix = (torch.from_numpy(np.ascontiguousarray(audio.T))[None] - mean) / std
    with torch.no_grad():
        want = apply_model(engine.model, mix, split=True, overlap=0.25, segment=1.0, shifts=0)[0] * std + mean
    got = engine.separate(audio)
    np.testing.assert_array_equal(got, want.numpy())
    # streamed in blocks that tile the span, each as soon as no later split touches it
    blocks = list(engine.blocks(audio))
    assert [o for o, _ in blocks] == list(np.cumsum([0] + [b.shape[-1] for _, b in blocks[:-1]]))
    assert max(b.shape[-1] for _, b in blocks) <= engine.segment_length


def test_flac_encoding_is_24_bit_of_the_same_stems(stub, engine):
    audio = make_audio(2.0, seed=3)
    msgs, header, stems = call(stub, types_pb2.Audio(encoded=encode(audio, "FLAC", "PCM_24")), FLAC)
    assert header.encoding == FLAC and header.total_frames == len(audio)
    for data in stems:
        info = sf.info(io.BytesIO(data))
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
            "FLAC",
            "PCM_24",
            SR,
            1,
            len(audio),
        )
    # stems follow one another, each one complete FLAC file
    order = [m.chunk.stem for m in msgs[1:]]
    assert order == sorted(order)
    decoded, _ = sf.read(io.BytesIO(encode(audio, "FLAC", "PCM_24")), dtype="float32", always_2d=True)
    want = np.clip(engine.separate(decoded), -1, 1)
    np.testing.assert_allclose(decode_stems(header, stems), want, atol=2.0**-23)


@pytest.mark.slow
def test_stereo_and_48k_inputs_become_the_model_rate_and_channels(stub, engine):
    stereo = make_audio(2.0, seed=4, sr=48000, channels=2)
    mono44 = (
        soxr.resample(stereo, 48000, SR, quality="HQ").astype(np.float32).mean(axis=1, keepdims=True, dtype=np.float32)
    )
    for audio in (pcm(stereo, sr=48000), types_pb2.Audio(encoded=encode(stereo, "WAV", "FLOAT", 48000))):
        _, header, stems = call(stub, audio)
        assert (header.sample_rate, header.channels, header.total_frames) == (SR, 1, len(mono44)) == (SR, 1, 88200)
        np.testing.assert_allclose(decode_stems(header, stems), engine.separate(mono44), atol=1e-5)
    ints = (make_audio(1.5, seed=5) * 20000).astype(np.int16)
    _, header, stems = call(
        stub,
        types_pb2.Audio(
            pcm=types_pb2.RawPcm(
                data=ints.tobytes(), sample_rate=SR, channels=1, format=types_pb2.SAMPLE_FORMAT_INT16LE
            )
        ),
    )
    assert header.total_frames == len(ints)
    np.testing.assert_array_equal(
        decode_stems(header, stems), engine.separate((ints / np.float32(32768))[:, None].astype(np.float32))
    )


@pytest.mark.slow
def test_silence_gives_silent_stems(stub):
    for n in (1, 1000, 2 * SR):
        _, header, stems = call(stub, pcm(np.zeros(n, np.float32)))
        got = decode_stems(header, stems)
        assert got.shape == (len(STOCK), 1, n) and np.abs(got).max() < 1e-6


def test_span_uses_the_audio_around_it(stub, engine):
    audio = make_audio(4.0, seed=6)
    _, header, stems = call(stub, pcm(audio), start_seconds=1.25, end_seconds=2.5)
    a, b = int(1.25 * SR), int(2.5 * SR)
    assert (header.total_frames, header.start_seconds, header.end_seconds) == (b - a, 1.25, 2.5)
    got = decode_stems(header, stems)
    np.testing.assert_array_equal(got, engine.separate(audio[:, None], a, b))
    assert not np.array_equal(got, engine.separate(audio[a:b, None]))  # context made a difference
    # an end past the audio is the audio's end; only a start
    _, header, _ = call(stub, pcm(audio), start_seconds=3.0, end_seconds=60.0)
    assert (header.total_frames, header.end_seconds) == (SR, 4.0)
    _, header, _ = call(stub, pcm(audio), start_seconds=3.5)
    assert header.total_frames == SR // 2


@pytest.mark.slow
def test_shifts_average_random_shifts(stub, engine):
    audio = make_audio(1.5, seed=7)
    _, header, stems = call(stub, pcm(audio), shifts=2)
    got = decode_stems(header, stems)
    assert header.shifts == 2 and got.shape == (len(STOCK), 1, len(audio)) and np.all(np.isfinite(got))
    assert not np.array_equal(got, engine.separate(audio[:, None]))


BAD = [
    (
        "undecodable",
        dict(audio=types_pb2.Audio(encoded=b"not audio at all" * 64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot decode",
    ),
    ("empty bytes", dict(audio=types_pb2.Audio(encoded=b"")), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("no source", dict(audio=types_pb2.Audio()), grpc.StatusCode.INVALID_ARGUMENT, "set audio.encoded or audio.pcm"),
    (
        "empty wav",
        dict(audio=types_pb2.Audio(encoded=encode(np.zeros(0, np.float32)))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty",
    ),
    ("nan pcm", dict(audio=pcm(np.full(SR, np.nan, np.float32))), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    (
        "inf wav",
        dict(audio=types_pb2.Audio(encoded=encode(np.r_[np.zeros(SR), np.inf].astype(np.float32)))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN",
    ),
    (
        "too long pcm",
        dict(audio=pcm(np.zeros(int((MAX_AUDIO + 1) * SR), np.float32))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"longer than the limit of {MAX_AUDIO:g} s",
    ),
    (
        "too long flac",
        dict(audio=types_pb2.Audio(encoded=encode(np.zeros(int((MAX_AUDIO + 1) * SR), np.int16), "FLAC", "PCM_16"))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "longer than the limit",
    ),
    (
        "no pcm format",
        dict(audio=types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"\0" * 400, sample_rate=SR, channels=1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SAMPLE_FORMAT_UNSPECIFIED",
    ),
    (
        "unknown encoding",
        dict(audio=pcm(np.zeros(100, np.float32)), encoding=7),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a StemEncoding",
    ),
    (
        "too many shifts",
        dict(audio=pcm(np.zeros(100, np.float32)), shifts=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shifts must be within 0..4",
    ),
    (
        "negative start",
        dict(audio=pcm(np.zeros(100, np.float32)), start_seconds=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "start_seconds must be a finite number >= 0",
    ),
    (
        "nan end",
        dict(audio=pcm(np.zeros(100, np.float32)), end_seconds=float("nan")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "end_seconds must be a finite number",
    ),
    (
        "end before start",
        dict(audio=pcm(np.zeros(100, np.float32)), start_seconds=2, end_seconds=1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be after start_seconds",
    ),
    (
        "start past the end",
        dict(audio=pcm(np.zeros(SR, np.float32)), start_seconds=1.5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "past the end of the audio (1.000 s)",
    ),
]


@pytest.mark.parametrize("fields,code,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_clearly(stub, fields, code, message):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Separate(separator_pb2.SeparateRequest(**fields), timeout=60))
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()


def test_still_serving_after_bad_input_and_metrics_scrape(server, stub):
    with pytest.raises(grpc.RpcError):
        list(stub.Separate(separator_pb2.SeparateRequest(audio=types_pb2.Audio(encoded=b"junk" * 100))))
    _, header, _ = call(stub, pcm(make_audio(0.5, 9)))
    assert header.total_frames == SR // 2
    text = scrape_metrics(server.rt.metrics_port)
    handled = handled_calls(text, "Separate")
    assert all(handled.get(code, 0) >= 1 for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")), handled
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("partsim_")}
    assert values["partsim_separator_audio_seconds_total"] >= 0.5
    assert values["partsim_separator_realtime_factor_count"] >= 1
    assert 0 < values["partsim_separator_model_load_seconds"] < 60
    assert values["partsim_separator_running"] == 0 and values["partsim_separator_waiting"] == 0


def test_cancelled_stream_frees_its_slot(server, stub):
    registry = server.rt.registry
    stream = stub.Separate(separator_pb2.SeparateRequest(audio=pcm(make_audio(MAX_AUDIO - 1, 10))), timeout=60)
    assert next(stream).WhichOneof("payload") == "header"
    assert registry.get_sample_value("partsim_separator_running") == 1
    stream.cancel()
    deadline = time.monotonic() + 20
    while registry.get_sample_value("partsim_separator_running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.get_sample_value("partsim_separator_running") == 0
    assert call(stub, pcm(make_audio(0.3, 11)))[1].total_frames == int(0.3 * SR)


# -- partsim separate -------------------------------------------------------------------------
@pytest.mark.slow
def test_partsim_separate_writes_one_flac_per_stem(tmp_path, server):
    repo = make_tiny_repo(tmp_path / "r", name="partsim-sep-v1")
    audio = make_audio(1.5, seed=30, sr=22050, channels=2)
    src = tmp_path / "song.wav"
    sf.write(src, audio, 22050, subtype="FLOAT")
    proc = run_cli("separate", str(src), "-o", str(tmp_path / "out"), "--repo", str(repo), "--segment-seconds", "1")
    assert proc.returncode == 0, proc.stderr
    for stem in PARTS5:
        info = sf.info(str(tmp_path / "out" / f"{stem}.flac"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, int(1.5 * SR), "PCM_24")
        assert f"{stem}.flac  (part {stem})" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{s}.flac" for s in PARTS5)
    # through the service: the service's stems (its model), same layout
    proc = run_cli("separate", str(src), "-o", str(tmp_path / "svc"), "--separator", server.address, "--start", "0.5")
    assert proc.returncode == 0, proc.stderr
    for stem, part in (("drums", "drums"), ("other", "others"), ("vocals", "-")):
        assert sf.info(str(tmp_path / "svc" / f"{stem}.flac")).frames == SR
        assert f"{stem}.flac  (part {part})" in proc.stdout


@pytest.mark.slow
def test_partsim_separate_user_errors(tmp_path, server):
    repo = make_tiny_repo(tmp_path / "r")
    src = tmp_path / "a.wav"
    sf.write(src, make_audio(0.5, 31), SR)
    for args, fragment in (
        ([str(tmp_path / "none.wav"), "-o", str(tmp_path)], "audio file not found"),
        ([str(src), "-o", str(tmp_path), "--repo", str(repo)], "'partsim-sep-v1' is not in"),
        ([str(src), "-o", str(tmp_path), "--repo", str(repo), "--model", "tiny-sep", "--parts", "x="], "no source 'x'"),
        (
            [str(src), "-o", str(tmp_path), "--separator", server.address, "--model", "x"],
            "--model apply to local separation",
        ),
        ([str(src), "-o", str(tmp_path), "--separator", server.address, "--shifts", "9"], "shifts must be"),
    ):
        proc = run_cli("separate", *args)
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("partsim: error: "), proc.stderr
        assert fragment in lines[0], (fragment, lines[0])
