"""The embedder: ``partsim.internal.v1.EmbedderService`` (Embed, GetModel) on a :class:`~..runtime.ServiceRuntime`.

Lifecycle: the server listens at once with health NOT_SERVING (Embed answers UNAVAILABLE), loads
the model, runs a warm-up batch, then turns SERVING. SIGTERM/SIGINT: NOT_SERVING, running RPCs
get ``grace_seconds`` to finish, then the batcher stops.
"""

from __future__ import annotations

import logging
from pathlib import Path

from partsim.assets import default_manifest
from partsim.errors import Unavailable
from partsim.internal.v1 import embedder_pb2, embedder_pb2_grpc
from partsim.v1 import types_pb2

from ..cancel import CancelToken
from ..runtime import ServiceRuntime
from ..service import Service
from .config import EmbedderConfig
from .engine import Embedding, Engine

log = logging.getLogger("partsim.embedder")

SERVICE = "partsim.internal.v1.EmbedderService"


def response(engine: Engine, emb: Embedding) -> embedder_pb2.EmbedResponse:
    """An :class:`Embedding` as an ``EmbedResponse`` (segments in order, parts in the model's order)."""
    sr = engine.sample_rate
    resp = embedder_pb2.EmbedResponse(model=engine.model_info(), duration_seconds=emb.duration_seconds)
    vectors, norms, present = emb.vectors.tolist(), emb.norms.tolist(), emb.present.tolist()
    for i, start in enumerate(emb.starts.tolist()):
        seg = resp.segments.add(index=i, start_seconds=start / sr, end_seconds=(start + emb.segment_samples) / sr)
        seg.parts.extend(
            types_pb2.PartVector(part=part, vector=vectors[i][j], norm=norms[i][j], present=present[i][j])
            for j, part in enumerate(engine.parts)
        )
    return resp


class EmbedderService(embedder_pb2_grpc.EmbedderServiceServicer):
    """Answers UNAVAILABLE until :attr:`engine` is set (model loaded and warmed up)."""

    def __init__(self):
        self.engine: Engine | None = None

    def _engine(self) -> Engine:
        engine = self.engine
        if engine is None:
            raise Unavailable("the embedder is loading its model; retry shortly")
        return engine

    def Embed(self, request, context):
        engine = self._engine()
        token = CancelToken()
        context.add_callback(token.cancel)
        engine.segment_lengths(request.segment_seconds, request.hop_seconds)  # cheap checks before decoding
        audio = engine.decode(request.audio)
        return response(engine, engine.embed(audio, request.segment_seconds, request.hop_seconds, token))

    def GetModel(self, request, context):
        return embedder_pb2.GetModelResponse(model=self._engine().model_info())


class EmbedderServer(Service[EmbedderConfig]):
    """The embedder: gRPC, health and metrics from :meth:`serve`, the model from :meth:`load`."""

    name = "embedder"
    grpc_service = SERVICE
    config = EmbedderConfig

    def add_servicer(self, rt: ServiceRuntime) -> EmbedderService:
        servicer = EmbedderService()
        embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(servicer, rt.server)
        return servicer

    def load(self) -> None:
        """Load the model, run a warm-up batch, turn SERVING."""
        cfg = self.cfg
        manifest = Path(cfg.model) if cfg.model else default_manifest()
        engine = Engine(
            manifest,
            device=cfg.device,
            intra_op_threads=cfg.intra_op_threads,
            max_batch=cfg.max_batch,
            max_wait_ms=cfg.max_wait_ms,
            max_audio_seconds=cfg.max_audio_seconds,
            max_segments=cfg.max_segments,
            registry=self.registry,
            spinning=cfg.spinning,
        )
        try:
            engine.warm_up()
        except BaseException:
            engine.close()
            raise
        self.servicer.engine = engine
        log.info(
            "model %s loaded from %s on %s (providers %s); serving",
            engine.model_version,
            manifest,
            cfg.device,
            ", ".join(engine.session.get_providers()),
        )
        self._runtime().set_serving(True)

    def close(self) -> None:
        if self.servicer.engine is not None:
            self.servicer.engine.close()


def main(argv: list[str] | None = None) -> int:
    return EmbedderServer.main(argv)
