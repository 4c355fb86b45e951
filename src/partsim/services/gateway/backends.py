"""The gateway's channels to the embedder, searcher and (optional) separator, and the model they serve.

Every channel balances over all addresses its target resolves to (``round_robin`` over the pods
behind a headless Service) and retries UNAVAILABLE with backoff; every call carries the configured
deadline. :meth:`Backends.wait_ready` blocks until all of them answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import grpc

from partsim.errors import FailedPrecondition, InvalidArgument, Unavailable
from partsim.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
    separator_pb2,
    separator_pb2_grpc,
    types_pb2,
)

from ..separator.client import collect
from ..tracks import check_track_id
from .config import PREFIX, GatewayConfig

log = logging.getLogger("partsim.gateway")

EMBEDDER = "partsim.v1.EmbedderService"
SEARCHER = "partsim.v1.SearcherService"
SEPARATOR = "partsim.v1.SeparatorService"


def service_config(services: list[str], lb_policy: str = "round_robin") -> str:
    """gRPC service config: balance over every address the target resolves to (``round_robin``
    spreads calls over the pods behind a headless Service), and retry UNAVAILABLE (all these calls
    are idempotent) with backoff."""
    return json.dumps(
        {
            "loadBalancingConfig": [{lb_policy: {}}],
            "methodConfig": [
                {
                    "name": [{"service": s} for s in services],
                    "retryPolicy": {
                        "maxAttempts": 4,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def channel(address: str, max_message_bytes: int, services: list[str], lb_policy: str = "round_robin") -> grpc.Channel:
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", service_config(services, lb_policy)),
        ],
    )


class Backends:
    """Stubs to the three services; ``model`` is the embedder's model once :meth:`wait_ready` succeeded.

    ``ready`` is set by the gateway once it serves (after its ingest workers started); until then
    :meth:`require_model` answers UNAVAILABLE.
    """

    def __init__(self, cfg: GatewayConfig):
        self.deadline = cfg.deadline_seconds
        msg = cfg.max_upload_bytes + (4 << 20)
        self._channels = [
            channel(cfg.embedder, msg, [EMBEDDER], cfg.lb_policy),
            channel(cfg.searcher, msg, [SEARCHER], cfg.lb_policy),
        ]
        self.embedder = embedder_pb2_grpc.EmbedderServiceStub(self._channels[0])
        self.searcher = searcher_pb2_grpc.SearcherServiceStub(self._channels[1])
        self.separator: separator_pb2_grpc.SeparatorServiceStub | None = None
        if cfg.separator:
            self._channels.append(channel(cfg.separator, msg, [SEPARATOR], cfg.lb_policy))
            self.separator = separator_pb2_grpc.SeparatorServiceStub(self._channels[-1])
        self.model: types_pb2.ModelInfo | None = None
        self.separator_model = ""
        self.ready = threading.Event()

    def wait_ready(self, stopping: threading.Event, timeout: float | None = None) -> bool:
        """Ask each backend once a second until all answer; False if ``stopping`` is set or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stopping.is_set():
            try:
                self.model = self.embedder.GetModel(embedder_pb2.GetModelRequest(), timeout=5).model
                self.searcher.GetStats(searcher_pb2.GetStatsRequest(), timeout=5)
                if self.separator is not None:
                    self.separator_model = self.separator.GetModel(
                        separator_pb2.GetSeparatorModelRequest(), timeout=5
                    ).model.name
                return True
            except grpc.RpcError as exc:
                log.info("waiting for backends: %s", exc.details() if hasattr(exc, "details") else exc)
                if deadline is not None and time.monotonic() > deadline:
                    return False
                stopping.wait(1.0)
        return False

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    def require_model(self) -> types_pb2.ModelInfo:
        if not self.ready.is_set() or self.model is None:
            raise Unavailable("the gateway is starting: the embedder or searcher is not reachable yet")
        return self.model

    def require_separator(self, what: str) -> separator_pb2_grpc.SeparatorServiceStub:
        if self.separator is None:
            raise FailedPrecondition(f"{what} needs a separator; none is configured ({PREFIX}_SEPARATOR=host:port)")
        return self.separator

    def embed(self, audio: types_pb2.Audio, segment: float, hop: float) -> embedder_pb2.EmbedResponse:
        """One Embed call (no cache, no power: see :mod:`.embedding`)."""
        return self.embedder.Embed(
            embedder_pb2.EmbedRequest(audio=audio, segment_seconds=segment, hop_seconds=hop), timeout=self.deadline
        )

    def separate(self, request: separator_pb2.SeparateRequest) -> tuple[separator_pb2.SeparationHeader, list[bytes]]:
        """The separator's stream, collected: (header, [bytes of each stem])."""
        sep = self.require_separator("separation")
        try:
            return collect(sep.Separate(request, timeout=self.deadline * 5))
        except InvalidArgument as exc:  # a malformed stream is the separator's fault, not the caller's
            raise Unavailable(f"the separator sent an inconsistent stream: {exc}") from None

    def track(self, track_id: str) -> searcher_pb2.Track:
        """The catalog's record of ``track_id`` (checked first); NOT_FOUND from the searcher if unknown."""
        check_track_id(track_id)
        return self.searcher.GetTrack(searcher_pb2.GetTrackRequest(track_id=track_id), timeout=self.deadline).track

    def segment(self, track_id: str, index: int) -> types_pb2.SegmentEmbedding:
        return self.searcher.GetSegment(
            searcher_pb2.GetSegmentRequest(track_id=track_id, segment_index=index), timeout=self.deadline
        ).segment
