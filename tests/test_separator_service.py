"""The separator service with real parts: a tiny Demucs model saved in demucs's own repository format,
real gRPC on loopback, real metrics, the ``partsim separate`` command as a process.

The tiny models have random weights (they separate nothing well); what is checked is the plumbing:
one stem per source, lengths, streaming that reassembles bit-exactly to the engine's output, the
engine equal to ``demucs.apply.apply_model(split=True)``, encodings, channel/rate conversion, limits,
errors with their status codes, start-up failures that name the model and the folder.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from partsim.assets import shipped_separator_repo as shipped_repo
from partsim.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from partsim.services.config import parse
from partsim.services.separator.client import collect, decode_stems
from partsim.services.separator.config import PREFIX, SeparatorConfig, parse_parts
from partsim.services.separator.engine import CancelToken, Engine, load_model
from partsim.services.separator.server import Admission, SeparatorServer
from partsim.v1 import separator_pb2, separator_pb2_grpc, types_pb2

from .audio import SR, encode, make_audio, pcm
from .tiny_separator import MAPPING, PARTS5, STOCK, make_tiny_repo
from .util import run_cli, serves_until_sigterm

MAX_AUDIO = 8.0
FLOAT, FLAC = separator_pb2.STEM_ENCODING_FLOAT32LE, separator_pb2.STEM_ENCODING_FLAC


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_tiny_repo(tmp_path_factory.mktemp("seprepo"), sources=STOCK)


@pytest.fixture(scope="module")
def server(repo):
    cfg = SeparatorConfig(address="127.0.0.1:0", repo=str(repo), model="tiny-sep", parts=MAPPING,
                          segment_seconds=1.0, max_audio_seconds=MAX_AUDIO, chunk_kb=64, metrics_port=0,
                          metrics_host="127.0.0.1", grace_seconds=1, max_queued=8, workers=12)
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


def call(stub, audio: types_pb2.Audio, encoding: int = FLOAT, **fields) -> tuple[list, separator_pb2.SeparationHeader,
                                                                                 list[bytes]]:
    """One Separate call: (all messages, header, per-stem bytes)."""
    msgs = list(stub.Separate(separator_pb2.SeparateRequest(audio=audio, encoding=encoding, **fields), timeout=120))
    header, stems = collect(msgs)
    return msgs, header, stems


# -- service ----------------------------------------------------------------------------------
def test_health_serving_and_model_info(server, stub):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for name in ("", "partsim.v1.SeparatorService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == \
            health_pb2.HealthCheckResponse.SERVING
    m = stub.GetModel(separator_pb2.GetSeparatorModelRequest()).model
    assert m.name == "tiny-sep" and list(m.sources) == STOCK
    assert (m.sample_rate, m.channels, m.segment_seconds, m.overlap) == (SR, 1, 1.0, 0.25)
    # a source mapped to nothing stays a stem (for listening), unnamed sources keep their own name
    assert dict(m.parts) == {"drums": "drums", "bass": "bass", "other": "others", "vocals": ""}
    assert (m.default_shifts, m.max_shifts, m.max_audio_seconds) == (0, 4, MAX_AUDIO)


def test_float_stream_reassembles_the_engine_output_exactly(stub, engine):
    audio = make_audio(2.7, seed=1)
    msgs, header, stems = call(stub, pcm(audio))
    assert msgs[0].WhichOneof("payload") == "header" and len(msgs) > 1 + len(STOCK)  # several chunks per stem
    assert [(s.name, s.part) for s in header.stems] == [("drums", "drums"), ("bass", "bass"), ("other", "others"),
                                                         ("vocals", "")]
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
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == \
            ("FLAC", "PCM_24", SR, 1, len(audio))
    # stems follow one another, each one complete FLAC file
    order = [m.chunk.stem for m in msgs[1:]]
    assert order == sorted(order)
    decoded, _ = sf.read(io.BytesIO(encode(audio, "FLAC", "PCM_24")), dtype="float32", always_2d=True)
    want = np.clip(engine.separate(decoded), -1, 1)
    np.testing.assert_allclose(decode_stems(header, stems), want, atol=2.0 ** -23)


def test_stereo_and_48k_inputs_become_the_model_rate_and_channels(stub, engine):
    stereo = make_audio(2.0, seed=4, sr=48000, channels=2)
    mono44 = soxr.resample(stereo, 48000, SR, quality="HQ").astype(np.float32).mean(axis=1, keepdims=True,
                                                                                      dtype=np.float32)
    for audio in (pcm(stereo, sr=48000), types_pb2.Audio(encoded=encode(stereo, "WAV", "FLOAT", 48000))):
        _, header, stems = call(stub, audio)
        assert (header.sample_rate, header.channels, header.total_frames) == (SR, 1, len(mono44)) == (SR, 1, 88200)
        np.testing.assert_allclose(decode_stems(header, stems), engine.separate(mono44), atol=1e-5)
    ints = (make_audio(1.5, seed=5) * 20000).astype(np.int16)
    _, header, stems = call(stub, types_pb2.Audio(pcm=types_pb2.RawPcm(
        data=ints.tobytes(), sample_rate=SR, channels=1, format=types_pb2.SAMPLE_FORMAT_INT16LE)))
    assert header.total_frames == len(ints)
    np.testing.assert_array_equal(decode_stems(header, stems), engine.separate((ints / np.float32(32768))[:, None]
                                                                               .astype(np.float32)))


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


def test_shifts_average_random_shifts(stub, engine):
    audio = make_audio(1.5, seed=7)
    _, header, stems = call(stub, pcm(audio), shifts=2)
    got = decode_stems(header, stems)
    assert header.shifts == 2 and got.shape == (len(STOCK), 1, len(audio)) and np.all(np.isfinite(got))
    assert not np.array_equal(got, engine.separate(audio[:, None]))


BAD = [
    ("undecodable", dict(audio=types_pb2.Audio(encoded=b"not audio at all" * 64)), grpc.StatusCode.INVALID_ARGUMENT,
     "cannot decode"),
    ("empty bytes", dict(audio=types_pb2.Audio(encoded=b"")), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("no source", dict(audio=types_pb2.Audio()), grpc.StatusCode.INVALID_ARGUMENT, "set audio.encoded or audio.pcm"),
    ("empty wav", dict(audio=types_pb2.Audio(encoded=encode(np.zeros(0, np.float32)))),
     grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("nan pcm", dict(audio=pcm(np.full(SR, np.nan, np.float32))), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    ("inf wav", dict(audio=types_pb2.Audio(encoded=encode(np.r_[np.zeros(SR), np.inf].astype(np.float32)))),
     grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    ("too long pcm", dict(audio=pcm(np.zeros(int((MAX_AUDIO + 1) * SR), np.float32))),
     grpc.StatusCode.RESOURCE_EXHAUSTED, f"longer than the limit of {MAX_AUDIO:g} s"),
    ("too long flac", dict(audio=types_pb2.Audio(encoded=encode(np.zeros(int((MAX_AUDIO + 1) * SR), np.int16),
                                                                "FLAC", "PCM_16"))),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "longer than the limit"),
    ("no pcm format", dict(audio=types_pb2.Audio(pcm=types_pb2.RawPcm(data=b"\0" * 400, sample_rate=SR,
                                                                      channels=1))),
     grpc.StatusCode.INVALID_ARGUMENT, "SAMPLE_FORMAT_UNSPECIFIED"),
    ("unknown encoding", dict(audio=pcm(np.zeros(100, np.float32)), encoding=7), grpc.StatusCode.INVALID_ARGUMENT,
     "not a StemEncoding"),
    ("too many shifts", dict(audio=pcm(np.zeros(100, np.float32)), shifts=5), grpc.StatusCode.INVALID_ARGUMENT,
     "shifts must be within 0..4"),
    ("negative start", dict(audio=pcm(np.zeros(100, np.float32)), start_seconds=-1),
     grpc.StatusCode.INVALID_ARGUMENT, "start_seconds must be a finite number >= 0"),
    ("nan end", dict(audio=pcm(np.zeros(100, np.float32)), end_seconds=float("nan")),
     grpc.StatusCode.INVALID_ARGUMENT, "end_seconds must be a finite number"),
    ("end before start", dict(audio=pcm(np.zeros(100, np.float32)), start_seconds=2, end_seconds=1),
     grpc.StatusCode.INVALID_ARGUMENT, "must be after start_seconds"),
    ("start past the end", dict(audio=pcm(np.zeros(SR, np.float32)), start_seconds=1.5),
     grpc.StatusCode.INVALID_ARGUMENT, "past the end of the audio (1.000 s)"),
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
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.rt.metrics_port}/metrics", timeout=10).read().decode()
    handled = [line for line in text.splitlines()
               if line.startswith("grpc_server_handled_total{") and 'grpc_method="Separate"' in line]
    for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"):
        assert any(f'grpc_code="{code}"' in line and float(line.split()[-1]) >= 1 for line in handled), code
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


def test_busy_server_answers_resource_exhausted(repo):
    """One slot, no queue: a second request while one runs is refused at once; then it is served."""
    cfg = SeparatorConfig(address="127.0.0.1:0", repo=str(repo), model="tiny-sep", parts=MAPPING,
                          segment_seconds=1.0, metrics_port=-1, max_concurrent=1, max_queued=0, workers=4)
    srv = SeparatorServer(cfg, CollectorRegistry()).start()
    try:
        channel = grpc.insecure_channel(srv.address)
        stub = separator_pb2_grpc.SeparatorServiceStub(channel)
        first = stub.Separate(separator_pb2.SeparateRequest(audio=pcm(make_audio(6.0, 12))), timeout=60)
        assert next(first).WhichOneof("payload") == "header"  # running now (holds the slot until drained)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Separate(separator_pb2.SeparateRequest(audio=pcm(make_audio(0.5, 13))), timeout=60))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "busy: 1 separations running and 0 waiting" in info.value.details()
        assert stub.GetModel(separator_pb2.GetSeparatorModelRequest(), timeout=10).model.name == "tiny-sep"
        header, stems = collect([separator_pb2.SeparateResponse(header=separator_pb2.SeparationHeader(
            stems=[separator_pb2.StemInfo()] * 4))] + list(first))
        assert all(len(s) == 6 * SR * 4 for s in stems)
        assert len(list(stub.Separate(separator_pb2.SeparateRequest(audio=pcm(make_audio(0.5, 13)))))) > 1
        assert srv.rt.registry.get_sample_value("partsim_separator_rejected_total") == 1
        channel.close()
    finally:
        srv.stop(0)


def test_admission_queues_in_order_refuses_beyond_and_drops_the_cancelled():
    adm = Admission(running=1, queued=2, registry=CollectorRegistry())
    order, release = [], threading.Event()
    tokens = [CancelToken() for _ in range(3)]

    def job(i):
        try:
            with adm.admit(), adm.turn(tokens[i]):
                order.append(i)
                release.wait(10)
        except Unavailable:
            order.append(f"cancelled {i}")

    threads = [threading.Thread(target=job, args=(i,)) for i in range(3)]
    for t in threads:  # start one by one so that the line's order is known
        t.start()
        deadline = time.monotonic() + 5
        while adm._running + len(adm._line) < threads.index(t) + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(0.1)
    with pytest.raises(ResourceExhausted, match="busy: 1 separations running and 2 waiting"):
        with adm.admit():
            pass
    tokens[1].cancel()
    time.sleep(0.5)
    release.set()
    for t in threads:
        t.join(10)
    assert order == [0, "cancelled 1", 2]
    assert (adm._running, adm._admitted, len(adm._line)) == (0, 0, 0)


def test_not_serving_until_model_loaded(repo):
    srv = SeparatorServer(SeparatorConfig(address="127.0.0.1:0", repo=str(repo), model="tiny-sep", parts=MAPPING,
                                          segment_seconds=1.0, metrics_port=-1)).serve()
    try:
        channel = grpc.insecure_channel(srv.address)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = separator_pb2_grpc.SeparatorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Separate(separator_pb2.SeparateRequest(audio=pcm(make_audio(0.5, 0)))))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in info.value.details()
        srv.load()
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        srv.stop(0)


# -- engine: models, channels, start-up errors ------------------------------------------------
def test_stereo_model_takes_mono_and_multichannel_input(tmp_path):
    engine = Engine(make_tiny_repo(tmp_path / "r", name="st", sources=["a", "b"], channels=2), "st",
                    segment_seconds=1.0)
    assert (engine.channels, engine.parts) == (2, {"a": "a", "b": "b"})
    mono = make_audio(0.5, 20)[:, None]
    assert np.array_equal(engine.to_model_channels(mono), np.repeat(mono, 2, axis=1))
    six = make_audio(0.5, 21, channels=6)
    np.testing.assert_allclose(engine.to_model_channels(six)[:, 1], six.mean(axis=1), rtol=1e-6)
    stereo = make_audio(1.2, 22, channels=2)
    assert np.array_equal(engine.decode(pcm(stereo)), stereo)
    out = engine.separate(engine.decode(types_pb2.Audio(encoded=encode(mono[:, 0]))))
    assert out.shape == (2, 2, len(mono))


def test_model_loads_by_signature_too(tmp_path):
    repo = make_tiny_repo(tmp_path / "r", seed=3)
    sig = next(repo.glob("*.th")).stem.split("-")[0]
    assert list(load_model(repo, sig).sources) == PARTS5


def test_corrupt_checkpoint_is_refused_at_start_up(tmp_path):
    repo = make_tiny_repo(tmp_path / "r")
    th = next(repo.glob("*.th"))
    data = bytearray(th.read_bytes())
    data[len(data) // 2] ^= 0xFF
    th.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match=rf"'tiny-sep' from {re.escape(str(repo))}: Invalid checksum"):
        Engine(repo, "tiny-sep")
    # the right checksum of a file that is not a model
    th.unlink()
    (repo / f"a1b2c3d0-{hashlib.sha256(b'garbage').hexdigest()[:8]}.th").write_bytes(b"garbage")
    with pytest.raises(FailedPrecondition, match=f"cannot load separator model 'tiny-sep' from {re.escape(str(repo))}"):
        Engine(repo, "tiny-sep")


def test_missing_model_or_folder_names_both(tmp_path):
    repo = make_tiny_repo(tmp_path / "r")
    with pytest.raises(NotFound, match=rf"'nope' is not in {re.escape(str(repo))}: expected nope.yaml .* has "
                                       rf"tiny-sep, "):
        Engine(repo, "nope")
    with pytest.raises(NotFound, match=rf"'tiny-sep': the model repository folder {re.escape(str(tmp_path))}/gone "
                                       rf"does not exist"):
        Engine(tmp_path / "gone", "tiny-sep")
    (repo / "tiny-sep.yaml").write_text("models: ['0badc0de']\n")  # a bag naming a model the folder lacks
    with pytest.raises(FailedPrecondition, match="0badc0de"):
        Engine(repo, "tiny-sep")


def test_parts_mapping_errors(tmp_path):
    repo = make_tiny_repo(tmp_path / "r")
    with pytest.raises(InvalidArgument, match=r"no source 'vocals' \(its sources: drums, bass, piano, guitar, "
                                              r"others\)"):
        Engine(repo, "tiny-sep", parts=parse_parts("vocals="))
    with pytest.raises(InvalidArgument, match="part 'drums' would come from more than one source"):
        Engine(repo, "tiny-sep", parts={"bass": "drums"})
    assert Engine(repo, "tiny-sep", parts=parse_parts("others=,piano=keys")).parts == \
        {"drums": "drums", "bass": "bass", "piano": "keys", "guitar": "guitar", "others": ""}
    for text, message in (("drums", "expected SOURCE=PART"), ("a=x,a=y", "mapped twice"),
                          ("a=x,b=x", "comes from more than one source"), ("a b=x", "bad name")):
        with pytest.raises(InvalidArgument, match=message):
            parse_parts(text)


def test_config_validation_names_the_variable():
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_DEVICE"):
        parse(SeparatorConfig, PREFIX, ["--device", "tpu"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_PARTS .*mapped twice"):
        parse(SeparatorConfig, PREFIX, [], environ={"PARTSIM_SEPARATOR_PARTS": "a=b,a=c"})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_OVERLAP"):
        parse(SeparatorConfig, PREFIX, ["--overlap", "1"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_WORKERS"):
        parse(SeparatorConfig, PREFIX, ["--max-queued", "20"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_SEPARATOR_SHIFTS"):
        parse(SeparatorConfig, PREFIX, ["--shifts", "5"], environ={})
    cfg = parse(SeparatorConfig, PREFIX, ["--segment-seconds", "7.5"], environ={"PARTSIM_SEPARATOR_MODEL": "m1"})
    assert (cfg.model, cfg.segment_seconds, cfg.address, cfg.metrics_port, cfg.max_audio_seconds) == \
        ("m1", 7.5, "0.0.0.0:50054", 9094, 900.0)
    assert cfg.repo_path == shipped_repo() and shipped_repo().name == "separator"


def test_cuda_without_gpu_fails_clearly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FailedPrecondition, match="device=cuda, but torch .* sees no CUDA device.*device=cpu"):
        Engine(make_tiny_repo(tmp_path / "r"), "tiny-sep", device="cuda")


# -- processes --------------------------------------------------------------------------------
def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "partsim.services.separator", "--address", "127.0.0.1:0",
                             "--metrics-port", "-1", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_module_runs_turns_serving_and_stops_on_sigterm(repo):
    serves_until_sigterm(_start(["--repo", str(repo), "--model", "tiny-sep", "--parts", MAPPING]), "separator")


def test_module_with_a_missing_model_or_bad_mapping_exits_naming_it(repo, tmp_path):
    for args, code, message in (
            (["--repo", str(tmp_path), "--model", "partsim-sep-v9"], 1,
             f"separator model 'partsim-sep-v9' is not in {tmp_path}"),
            (["--repo", str(repo), "--model", "tiny-sep", "--parts", "piano=keys"], 1, "no source 'piano'"),
            (["--repo", str(repo), "--overlap", "2"], 2, "PARTSIM_SEPARATOR_OVERLAP")):
        proc = _start(args)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == code and message in out, out


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
    proc = run_cli("separate", str(src), "-o", str(tmp_path / "svc"), "--separator", server.address,
                   "--start", "0.5")
    assert proc.returncode == 0, proc.stderr
    for stem, part in (("drums", "drums"), ("other", "others"), ("vocals", "-")):
        assert sf.info(str(tmp_path / "svc" / f"{stem}.flac")).frames == SR
        assert f"{stem}.flac  (part {part})" in proc.stdout


def test_partsim_separate_user_errors(tmp_path, server):
    repo = make_tiny_repo(tmp_path / "r")
    src = tmp_path / "a.wav"
    sf.write(src, make_audio(0.5, 31), SR)
    for args, fragment in (
            ([str(tmp_path / "none.wav"), "-o", str(tmp_path)], "audio file not found"),
            ([str(src), "-o", str(tmp_path), "--repo", str(repo)], "'partsim-sep-v1' is not in"),
            ([str(src), "-o", str(tmp_path), "--repo", str(repo), "--model", "tiny-sep", "--parts", "x="],
             "no source 'x'"),
            ([str(src), "-o", str(tmp_path), "--separator", server.address, "--model", "x"],
             "--model apply to local separation"),
            ([str(src), "-o", str(tmp_path), "--separator", server.address, "--shifts", "9"], "shifts must be")):
        proc = run_cli("separate", *args)
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("partsim: error: "), proc.stderr
        assert fragment in lines[0], (fragment, lines[0])


# -- the shipped model ------------------------------------------------------------------------
SHIPPED = shipped_repo() / "partsim-sep-v1.yaml"


def test_shipped_model_separates_into_the_catalog_parts():
    assert SHIPPED.is_file(), f"{SHIPPED} is shipped with partsim"
    engine = Engine(shipped_repo(), "partsim-sep-v1", segment_seconds=0.0)
    assert engine.sources == PARTS5 and engine.sample_rate == SR and engine.channels == 1
    assert engine.parts == {p: p for p in PARTS5}
    audio = make_audio(3.0, seed=40)[:, None]
    out = engine.separate(audio)
    assert out.shape == (5, 1, len(audio)) and np.all(np.isfinite(out)) and np.abs(out).max() > 0
    silent = engine.separate(np.zeros((SR, 1), np.float32))
    assert np.abs(silent).max() < 1e-4


# -- partsim up -------------------------------------------------------------------------------
def test_cluster_starts_the_separator_before_the_gateway_and_tells_it_the_address(tmp_path):
    from partsim.cluster import Cluster, Service

    calls = []

    class Recorded(Cluster):
        def _start(self, name, module, env, timeout=300.0):
            calls.append((name, module, env))
            return Service(name, None, address=f"127.0.0.1:{5000 + len(calls)}")

    Recorded(tmp_path, separator=True).start()
    assert [c[0] for c in calls] == ["searcher", "embedder", "separator", "gateway"]
    assert calls[2][1] == "partsim.services.separator"
    env = calls[2][2]
    assert (env["PARTSIM_SEPARATOR_ADDRESS"], env["PARTSIM_SEPARATOR_METRICS_PORT"]) == ("127.0.0.1:0", "0")
    assert calls[3][2]["PARTSIM_GATEWAY_SEPARATOR"] == "127.0.0.1:5003"
    calls.clear()
    Recorded(tmp_path, separator=False).start()
    assert [c[0] for c in calls] == ["searcher", "embedder", "gateway"]
    assert "PARTSIM_GATEWAY_SEPARATOR" not in calls[-1][2]


def test_the_dc_bin_is_made_real_before_the_inverse_stft(tmp_path):
    """real_dc_bins: the inverse STFT gets a spectrum whose DC bin has no imaginary part (cuFFT
    does not ignore it, CPU's irfft does), and on the CPU the stems do not change at all."""
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    make_tiny_repo(tmp_path, name="tiny-sep")
    patched, plain = load_model(tmp_path, "tiny-sep"), get_model("tiny-sep", repo=tmp_path).eval()
    inner = patched.models[0] if hasattr(patched, "models") else patched
    seen = []
    wrapped = inner._ispec.ispec
    inner._ispec.ispec = lambda z, length=None, scale=0: seen.append(z) or wrapped(z, length, scale)
    x = torch.from_numpy(make_audio(4.0, seed=9)).reshape(1, 1, -1).float()
    with torch.no_grad():
        a = apply_model(patched, x, shifts=0, split=False)
        b = apply_model(plain, x, shifts=0, split=False)
    assert seen and all(float(z[..., 0, :].imag.abs().max()) == 0.0 for z in seen)
    assert float(seen[0][..., 1, :].imag.abs().max()) > 0  # only the DC bin is touched
    assert torch.equal(a, b)
