"""The separator's admission and start-up with a tiny Demucs model (random weights): a busy server refuses at
once, the line keeps its order and drops the cancelled; NOT_SERVING until the model is loaded; the process
serves until SIGTERM and exits naming a missing model or a bad mapping; ``partsim up`` starts it before the
gateway and tells the gateway its address.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from partsim.errors import ResourceExhausted, Unavailable
from partsim.internal.v1 import separator_pb2, separator_pb2_grpc
from partsim.services.separator.client import collect
from partsim.services.separator.engine import CancelToken
from partsim.services.separator.server import Admission, SeparatorServer
from partsim.v1 import types_pb2

from .audio import SR, make_audio, pcm
from .tiny_separator import MAPPING, STOCK, make_tiny_repo, tiny_server_config
from .util import serves_until_sigterm


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_tiny_repo(tmp_path_factory.mktemp("seprepo"), sources=STOCK)


# -- admission --------------------------------------------------------------------------------
@pytest.mark.slow
def test_busy_server_answers_resource_exhausted(repo):
    """One slot, no queue: a second request while one runs is refused at once; then it is served."""
    cfg = tiny_server_config(repo, metrics_port=-1, max_concurrent=1, max_queued=0, workers=4)
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
        assert stub.GetSeparatorModel(separator_pb2.GetSeparatorModelRequest(), timeout=10).model.name == "tiny-sep"
        header, stems = collect(
            [separator_pb2.SeparateResponse(header=types_pb2.SeparationHeader(stems=[types_pb2.StemInfo()] * 4))]
            + list(first)
        )
        assert all(len(s) == 6 * SR * 4 for s in stems)
        assert len(list(stub.Separate(separator_pb2.SeparateRequest(audio=pcm(make_audio(0.5, 13)))))) > 1
        assert srv.rt.registry.get_sample_value("partsim_separator_rejected_total") == 1
        channel.close()
    finally:
        srv.stop(0)


@pytest.mark.slow
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


# -- start-up and processes -------------------------------------------------------------------
def test_not_serving_until_model_loaded(repo):
    srv = SeparatorServer(tiny_server_config(repo, metrics_port=-1)).serve()
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


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "partsim.services.separator", "--address", "127.0.0.1:0", "--metrics-port", "-1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_module_runs_turns_serving_and_stops_on_sigterm(repo):
    serves_until_sigterm(_start(["--repo", str(repo), "--model", "tiny-sep", "--parts", MAPPING]), "separator")


def test_module_with_a_missing_model_or_bad_mapping_exits_naming_it(repo, tmp_path):
    for args, code, message in (
        (
            ["--repo", str(tmp_path), "--model", "partsim-sep-v9"],
            1,
            f"separator model 'partsim-sep-v9' is not in {tmp_path}",
        ),
        (["--repo", str(repo), "--model", "tiny-sep", "--parts", "piano=keys"], 1, "no source 'piano'"),
        (["--repo", str(repo), "--overlap", "2"], 2, "PARTSIM_SEPARATOR_OVERLAP"),
    ):
        proc = _start(args)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == code and message in out, out


# -- partsim up -------------------------------------------------------------------------------
def test_cluster_starts_the_separator_before_the_gateway_and_tells_it_the_address(tmp_path):
    from partsim.cluster import Cluster, Service

    calls = []

    class Recorded(Cluster):
        def _start(self, name, env, timeout=300.0):
            calls.append((name, self._env(name, env)))  # what the process would get
            return Service(name, None, address=f"127.0.0.1:{5000 + len(calls)}")

    Recorded(tmp_path, separator=True).start()
    assert [c[0] for c in calls] == ["searcher", "embedder", "separator", "gateway"]
    env = calls[2][1]
    assert (env["PARTSIM_SEPARATOR_ADDRESS"], env["PARTSIM_SEPARATOR_METRICS_PORT"]) == ("127.0.0.1:0", "0")
    assert calls[3][1]["PARTSIM_GATEWAY_SEPARATOR"] == "127.0.0.1:5003"
    calls.clear()
    Recorded(tmp_path, separator=False).start()
    assert [c[0] for c in calls] == ["searcher", "embedder", "gateway"]
    assert "PARTSIM_GATEWAY_SEPARATOR" not in calls[-1][1]
