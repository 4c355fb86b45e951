"""The embedder service with a PCM-input model (the feature front end inside the ONNX graph): it feeds
raw PCM to the graph and answers what the same network answers through the mel path."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
import soundfile as sf
from prometheus_client import CollectorRegistry

from partsim import assets
from partsim.internal.v1 import embedder_pb2, embedder_pb2_grpc
from partsim.model.inference import OnnxEmbedder
from partsim.services.embedder.config import EmbedderConfig
from partsim.services.embedder.server import EmbedderServer
from partsim.v1 import types_pb2

from .audio import SR, encode, make_audio, pcm
from .embedder_answers import MAX_AUDIO, MAX_SEGMENTS, embed, expected, vectors

# -- a PCM-input model (the features inside the ONNX graph) ------------------------------------
CSN_V2 = assets.shipped_model("csn-v2") / "manifest.json"


@pytest.fixture(scope="module")
def pcm_manifest(tmp_path_factory):
    """The shipped csn-v2 with the feature front end prepended to its graph (PCM in)."""
    from partsim.model.export import add_frontend

    out = tmp_path_factory.mktemp("pcm") / "csn-v2-pcm"
    add_frontend(CSN_V2, out)
    return out / "manifest.json"


@pytest.fixture(scope="module")
def mel_ref() -> OnnxEmbedder:
    """csn-v2, kept in the package as the last mel-input model."""
    return OnnxEmbedder(CSN_V2)


class _NoFeatures:
    """Stands in for LogMel: the feature parameters, but computing features is an error."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, audio):
        raise AssertionError("a PCM-input model must not get NumPy features")


@pytest.mark.slow
def test_serves_a_pcm_input_model_with_the_mel_models_answers(pcm_manifest, mel_ref):
    """The service feeds PCM segments to a PCM-input graph (no NumPy features) and answers what
    the same network answers through the mel path."""
    cfg = EmbedderConfig(
        address="127.0.0.1:0",
        metrics_port=-1,
        model=str(pcm_manifest),
        max_batch=4,
        max_wait_ms=20,
        max_audio_seconds=MAX_AUDIO,
        max_segments=MAX_SEGMENTS,
        grace_seconds=1,
    )
    srv = EmbedderServer(cfg, CollectorRegistry()).start()
    channel = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", 64 << 20)])
    try:
        engine = srv.servicer.engine
        assert engine.input == "pcm" and engine.session.get_inputs()[0].shape == ["batch", "samples"]
        engine.features = _NoFeatures(engine.features.cfg)
        pcm_stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        info = pcm_stub.GetModel(embedder_pb2.GetModelRequest()).model
        assert (
            info.model_version
            == json.loads(pcm_manifest.read_text())["model_version"]
            != mel_ref.manifest["model_version"]
        )
        audio = make_audio(5.0, seed=11)
        data = encode(audio, "FLAC", "PCM_16")
        resp = embed(pcm_stub, types_pb2.Audio(encoded=data), seg=1.0, hop=0.5)  # 9 segments, 3 batches of <= 4
        decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
        want, starts = expected(mel_ref, decoded, 1.0, 0.5)
        assert len(resp.segments) == 9
        np.testing.assert_allclose(vectors(resp), want, atol=1e-4)
        np.testing.assert_allclose([s.start_seconds for s in resp.segments], starts)
        norms = np.array([[p.norm for p in s.parts] for s in resp.segments])
        present = np.array([[p.present for p in s.parts] for s in resp.segments])
        np.testing.assert_array_equal(
            present, np.log(norms) + np.asarray(mel_ref.manifest["presence"]["norm_bias"]) > 0
        )
        resp = embed(pcm_stub, pcm(audio[: 3 * SR]), seg=3.0)  # raw PCM, one 3-s segment
        np.testing.assert_allclose(vectors(resp), expected(mel_ref, audio[: 3 * SR], 3.0, 3.0)[0], atol=1e-4)
        with pytest.raises(grpc.RpcError) as info_err:  # the model's minimum length holds as before
            embed(pcm_stub, pcm(audio), seg=0.2)
        assert (
            info_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "needs at least 32" in info_err.value.details()
        )
    finally:
        channel.close()
        srv.stop(0)
