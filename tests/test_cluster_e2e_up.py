"""``partsim up`` end to end: the command as a process (serves, stops on SIGINT), and a cluster with a tiny
separator (no Redis: the embedded defaults; tests/e2e_cluster.py's ``cluster_with_separator``) that answers
GetStems and the signal-level EmbedParts mode; the shared cluster (no separator) says why it cannot.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from partsim.client import PartsimClient
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from .e2e_cluster import SEG, songs

# every test here talks to a whole cluster (processes, Milvus, Redis): left out of make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_partsim_up_serves_and_stops_on_sigint(tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "partsim", "up", "--data", str(tmp_path / "d"), "--gateway", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        address = None
        for line in proc.stdout:
            if "partsim is serving on" in line:
                address = line.split("serving on ")[1].split(";")[0]
                break
        assert address, "partsim up did not come up"
        with PartsimClient(address) as c:
            assert c.stats().tracks == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read()
        assert "stopping" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_get_stems_and_the_signal_level_mode(cluster_with_separator, catalog):
    song = songs(catalog)[2]
    data = (song / "mix.flac").read_bytes()
    stub = gateway_pb2_grpc.PartsimServiceStub(grpc.insecure_channel(cluster_with_separator.gateway))
    with PartsimClient(cluster_with_separator.gateway) as c:
        c.index_bytes(data, song.name)
        feature = c.embed_parts(data, SEG, SEG)
    signal = stub.EmbedParts(
        gateway_pb2.EmbedPartsRequest(
            audio=types_pb2.Audio(encoded=data),
            segment_seconds=SEG,
            hop_seconds=SEG,
            mode=gateway_pb2.EMBED_MODE_SIGNAL,
        ),
        timeout=300,
    )
    # same shape as the feature-level answer, different vectors (each part from its own stem)
    assert [len(s.parts) for s in signal.segments] == [len(s.parts) for s in feature.segments]
    assert [p.part for p in signal.segments[0].parts] == [p.part for p in feature.segments[0].parts]
    assert all(len(p.vector) == 128 for s in signal.segments for p in s.parts)
    assert not np.allclose([p.vector for p in signal.segments[0].parts], [p.vector for p in feature.segments[0].parts])
    # each part's audio power is its own separated stem's, not the mix's
    assert all(p.HasField("power") for s in signal.segments for p in s.parts)
    sig_power = np.array([[p.power for p in s.parts] for s in signal.segments])
    mix_power = np.array([[p.power for p in s.parts] for s in feature.segments])
    assert not np.allclose(sig_power, mix_power, rtol=1e-3) and np.all(sig_power >= 0)
    # the stems of segment 1 (10-20 s), twice: the second answer comes from the cache, identical
    answers = []
    for _ in range(2):
        msgs = list(
            stub.GetStems(
                gateway_pb2.GetStemsRequest(segment=gateway_pb2.IndexedSegment(track_id=song.name, seconds=12.0)),
                timeout=300,
            )
        )
        answers.append(msgs)
    header = answers[0][0].header
    assert (header.track_id, header.segment_index, header.start_seconds, header.end_seconds) == (
        song.name,
        1,
        10.0,
        20.0,
    )
    stems = {}
    for m in answers[0][1:]:
        stems.setdefault(m.chunk.stem, bytearray()).extend(m.chunk.data)
    sep = header.separation
    assert [s.name for s in sep.stems] == ["drums", "bass", "piano", "guitar", "others"]
    for i in range(len(sep.stems)):
        assert len(stems[i]) == sep.total_frames * sep.channels * 4 and sep.total_frames == 10 * sep.sample_rate
    assert [m.SerializeToString() for m in answers[1]] == [m.SerializeToString() for m in answers[0]]
    with PartsimClient(cluster_with_separator.gateway) as c:  # the client's Stems: audio by part, and its format
        raw = c.get_stems(song.name, seconds=12.0, format="float32le")
        flac = c.get_stems(song.name, segment_index=1)
    assert [s.data for s in raw.stems] == [bytes(stems[i]) for i in range(len(sep.stems))]
    assert (raw.format, flac.format, flac.segment_index, flac.start_seconds, flac.end_seconds) == (
        "float32le",
        "flac",
        1,
        10.0,
        20.0,
    )
    assert set(flac.by_part()) == {"drums", "bass", "piano", "guitar", "others"}
    assert all(data[:4] == b"fLaC" for data in flac.by_part().values())
    with pytest.raises(grpc.RpcError) as info:
        list(
            stub.GetStems(
                gateway_pb2.GetStemsRequest(segment=gateway_pb2.IndexedSegment(track_id=song.name, segment_index=9)),
                timeout=60,
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_without_a_separator_the_signal_mode_says_why(client, catalog, indexed):
    stub = client.stub
    data = (songs(catalog)[0] / "mix.flac").read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub.EmbedParts(
            gateway_pb2.EmbedPartsRequest(audio=types_pb2.Audio(encoded=data), mode=gateway_pb2.EMBED_MODE_SIGNAL),
            timeout=60,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "separator" in info.value.details()


def test_partsim_demo_prints_the_web_app_that_answers_while_it_serves(tmp_path):
    """``partsim demo --no-serve`` on 4 short songs: the ``web app: http://…/`` line comes when the cluster is up
    (before indexing), and that address serves the web app and the API until the demo ends."""
    import subprocess
    import sys

    from .http_util import http

    cmd = [sys.executable, "-m", "partsim", "demo", "--data", str(tmp_path / "demo"), "--songs", "4", "--seconds", "20",
           "--gateway", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-serve"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, answers = [], {}
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if line.startswith("web app: ") and not answers:
                url = line.split("web app: ", 1)[1].strip()
                answers = {path: http(url, "GET", path, timeout=30) for path in ("/", "/v1/catalog/stats")}
        assert proc.wait(timeout=600) == 0, "\n".join(lines[-30:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    web = [line for line in lines if line.startswith("web app: ")]
    assert len(web) == 1 and web[0].startswith("web app: http://127.0.0.1:") and web[0].endswith("/"), lines
    assert int(web[0].rstrip("/").rsplit(":", 1)[1]) > 0  # the port the OS picked for --http 127.0.0.1:0
    assert answers["/"].status == 200 and b"MixQuery" in answers["/"].body
    assert answers["/v1/catalog/stats"].status == 200 and "stats" in answers["/v1/catalog/stats"].json()
    assert lines.index(web[0]) < next(i for i, line in enumerate(lines) if line.startswith("SearchMix:"))
    assert any(line.startswith("SearchStems:") for line in lines)
