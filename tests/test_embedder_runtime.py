"""The embedder below its answers: the batcher (splitting, errors, closing, PCM rows), start-up (NOT_SERVING
until the model is loaded; ``python -m partsim.services.embedder`` until SIGTERM), configuration errors that
name the variable, and the ONNX Runtime session (CUDA without its provider, threads that do not spin).
"""

from __future__ import annotations

import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from partsim.assets import default_manifest
from partsim.errors import FailedPrecondition, InvalidArgument, Unavailable
from partsim.internal.v1 import embedder_pb2, embedder_pb2_grpc
from partsim.services.config import parse
from partsim.services.embedder.batcher import Batcher
from partsim.services.embedder.config import PREFIX, EmbedderConfig
from partsim.services.embedder.engine import make_session
from partsim.services.embedder.server import EmbedderServer

from .audio import make_audio, pcm
from .util import serves_until_sigterm


# -- batcher ----------------------------------------------------------------------------------
def _rowsum(x: np.ndarray) -> np.ndarray:
    """A fake model: ``(b, m, t)`` -> ``(b, 1, 2)`` (row sum, frames)."""
    return np.stack([x.sum(axis=(1, 2)), np.full(len(x), x.shape[2], np.float32)], axis=1)[:, None, :]


def test_batcher_splits_large_requests_and_keeps_shapes_apart():
    calls = []

    def run(x):
        calls.append(x.shape)
        return _rowsum(x)

    b = Batcher(run, max_batch=4, max_wait_ms=20, registry=CollectorRegistry())
    try:
        rng = np.random.default_rng(0)
        big, other = rng.random((10, 3, 5), np.float32), rng.random((3, 3, 7), np.float32)
        f1, f2 = b.submit(big), b.submit(other)
        np.testing.assert_allclose(f1.result(5), _rowsum(big), rtol=1e-6)
        np.testing.assert_allclose(f2.result(5), _rowsum(other), rtol=1e-6)
        assert all(s[0] <= 4 for s in calls) and sum(s[0] for s in calls) == 13
        assert {s[2] for s in calls} == {5, 7}
    finally:
        b.close()


def test_batcher_model_error_reaches_every_caller_and_worker_survives():
    fail = threading.Event()
    fail.set()

    def run(x):
        if fail.is_set():
            raise RuntimeError("model exploded")
        return _rowsum(x)

    b = Batcher(run, max_batch=8, max_wait_ms=100, registry=CollectorRegistry())
    try:
        futures = [b.submit(np.ones((2, 2, 3), np.float32)) for _ in range(3)]
        for f in futures:
            with pytest.raises(RuntimeError, match="model exploded"):
                f.result(5)
        fail.clear()
        np.testing.assert_allclose(b.submit(np.ones((1, 2, 3), np.float32)).result(5), [[[6.0, 3.0]]])
    finally:
        b.close()


def test_batcher_close_fails_waiting_jobs_and_does_not_hang():
    release, started = threading.Event(), threading.Event()

    def run(x):
        started.set()
        release.wait(10)
        return _rowsum(x)

    b = Batcher(run, max_batch=1, max_wait_ms=0, registry=CollectorRegistry())
    running = b.submit(np.ones((1, 2, 3), np.float32))
    assert started.wait(5)
    waiting = b.submit(np.ones((1, 2, 3), np.float32))
    cancelled = b.submit(np.ones((1, 2, 3), np.float32))
    assert cancelled.cancel()
    closer = threading.Thread(target=b.close)
    closer.start()
    with pytest.raises(Unavailable, match="shutting down"):
        waiting.result(5)
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    np.testing.assert_allclose(running.result(1), [[[6.0, 3.0]]])
    with pytest.raises(Unavailable):
        b.submit(np.ones((1, 2, 3), np.float32))


def test_batcher_takes_pcm_rows_and_caps_a_batch_by_its_length():
    calls = []

    def run(x):
        calls.append(x.shape)
        return x.sum(axis=1)[:, None, None]

    b = Batcher(run, max_batch=8, max_wait_ms=20, max_batch_length=300, registry=CollectorRegistry())
    try:
        rows = np.random.default_rng(0).random((10, 100), np.float32)
        np.testing.assert_allclose(b.submit(rows).result(5)[:, 0, 0], rows.sum(axis=1), rtol=1e-6)
        assert max(s[0] for s in calls) == 3 and sum(s[0] for s in calls) == 10  # 300 samples a batch
    finally:
        b.close()


# -- start-up, configuration and process ------------------------------------------------------
def test_not_serving_until_model_loaded():
    srv = EmbedderServer(EmbedderConfig(address="127.0.0.1:0", metrics_port=-1, max_batch=2)).serve()
    try:
        channel = grpc.insecure_channel(srv.address)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            embedder_pb2_grpc.EmbedderServiceStub(channel).Embed(embedder_pb2.EmbedRequest(audio=pcm(make_audio(1, 0))))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in info.value.details()
        srv.load()
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        assert srv.rt.registry.get_sample_value("partsim_embedder_batch_size_count") == 1  # the warm-up batch
        channel.close()
    finally:
        srv.stop(0)


def test_config_validation_names_the_variable():
    with pytest.raises(InvalidArgument, match="PARTSIM_EMBEDDER_DEVICE"):
        parse(EmbedderConfig, PREFIX, ["--device", "tpu"], environ={})
    with pytest.raises(InvalidArgument, match="PARTSIM_EMBEDDER_MAX_BATCH"):
        parse(EmbedderConfig, PREFIX, [], environ={"PARTSIM_EMBEDDER_MAX_BATCH": "0"})
    cfg = parse(EmbedderConfig, PREFIX, ["--max-wait-ms", "2.5"], environ={"PARTSIM_EMBEDDER_MAX_BATCH": "16"})
    assert (cfg.max_batch, cfg.max_wait_ms, cfg.address, cfg.metrics_port) == (16, 2.5, "127.0.0.1:50052", 9092)


def test_cuda_without_provider_fails_clearly():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    onnx = default_manifest().parent / "csn.onnx"
    with pytest.raises(FailedPrecondition, match="no CUDAExecutionProvider.*device=cpu"):
        make_session(onnx, device="cuda")


def test_onnxruntime_threads_do_not_spin():
    onnx = default_manifest().parent / "csn.onnx"
    opts = make_session(onnx).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"


@pytest.mark.slow
def test_module_runs_turns_serving_and_stops_on_sigterm():
    serves_until_sigterm(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "partsim.services.embedder",
                "--address",
                "127.0.0.1:0",
                "--metrics-port",
                "-1",
                "--max-batch",
                "4",
                "--intra-op-threads",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        "embedder",
    )
