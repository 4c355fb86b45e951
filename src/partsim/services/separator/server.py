"""The separator: ``partsim.internal.v1.SeparatorService`` (Separate, GetSeparatorModel) on a :class:`~..runtime.ServiceRuntime`.

Lifecycle: the server listens at once with health NOT_SERVING (Separate answers UNAVAILABLE), loads
the model (a missing model or a bad checkpoint ends the process with a message naming the model and
the folder), runs a short warm-up separation, then turns SERVING. SIGTERM/SIGINT: NOT_SERVING,
running separations get ``grace_seconds`` to finish, then they are cancelled.

Concurrency: at most ``max_concurrent`` separations run at once (each uses every torch thread); up
to ``max_queued`` more are admitted and wait in arrival order (decoding their audio meanwhile) until
a slot frees or their deadline passes; a request beyond that gets RESOURCE_EXHAUSTED at once, so a
caller (the gateway) can back off instead of piling up memory here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge

from partsim.errors import InvalidArgument, ResourceExhausted, Unavailable
from partsim.internal.v1 import separator_pb2, separator_pb2_grpc
from partsim.v1 import types_pb2

from ..cancel import CancelToken
from ..runtime import ServiceRuntime
from ..service import Service
from .config import SeparatorConfig
from .engine import Engine

log = logging.getLogger("partsim.separator")

SERVICE = "partsim.internal.v1.SeparatorService"
ENCODINGS = {
    types_pb2.STEM_ENCODING_UNSPECIFIED: types_pb2.STEM_ENCODING_FLOAT32LE,
    types_pb2.STEM_ENCODING_FLOAT32LE: types_pb2.STEM_ENCODING_FLOAT32LE,
    types_pb2.STEM_ENCODING_FLAC: types_pb2.STEM_ENCODING_FLAC,
}


class Admission:
    """At most ``running`` separations at once, ``queued`` more waiting (first come, first served), the
    rest refused."""

    def __init__(self, running: int, queued: int, registry: CollectorRegistry):
        self.max_running, self.max_queued = running, queued
        self._cond = threading.Condition()
        self._running = 0
        self._admitted = 0
        self._line: deque[object] = deque()
        self.g_running = Gauge("partsim_separator_running", "Separations running.", registry=registry)
        self.g_waiting = Gauge(
            "partsim_separator_waiting", "Separations admitted and not yet running.", registry=registry
        )
        self.rejected = Counter(
            "partsim_separator_rejected", "Separate requests refused because the queue was full.", registry=registry
        )

    def _gauges(self) -> None:
        self.g_running.set(self._running)
        self.g_waiting.set(self._admitted - self._running)

    @contextmanager
    def admit(self) -> Iterator[None]:
        """A place among the admitted (RESOURCE_EXHAUSTED when ``running + queued`` are taken)."""
        with self._cond:
            if self._admitted >= self.max_running + self.max_queued:
                self.rejected.inc()
                raise ResourceExhausted(
                    f"the separator is busy: {self._running} separations running and "
                    f"{self._admitted - self._running} waiting (limits {self.max_running} and "
                    f"{self.max_queued}); retry later"
                )
            self._admitted += 1
            self._gauges()
        try:
            yield
        finally:
            with self._cond:
                self._admitted -= 1
                self._gauges()

    @contextmanager
    def turn(self, token: CancelToken) -> Iterator[None]:
        """Wait in line for a free slot (Unavailable when the request is cancelled meanwhile), hold it."""
        me = object()
        with self._cond:
            self._line.append(me)
            try:
                while not (self._line[0] is me and self._running < self.max_running):
                    if token.cancelled:
                        raise Unavailable("the request was cancelled while waiting for a separation slot")
                    self._cond.wait(0.25)
            except BaseException:
                self._line.remove(me)
                self._cond.notify_all()
                raise
            self._line.popleft()
            self._running += 1
            self._gauges()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._gauges()
                self._cond.notify_all()


class SeparatorService(separator_pb2_grpc.SeparatorServiceServicer):
    """Answers UNAVAILABLE until :attr:`engine` is set (model loaded and warmed up)."""

    def __init__(self, cfg: SeparatorConfig, admission: Admission):
        self.cfg = cfg
        self.admission = admission
        self.engine: Engine | None = None

    def _engine(self) -> Engine:
        engine = self.engine
        if engine is None:
            raise Unavailable("the separator is loading its model; retry shortly")
        return engine

    def Separate(self, request, context):
        engine = self._engine()
        encoding = ENCODINGS.get(request.encoding)
        if encoding is None:
            raise InvalidArgument(f"encoding {request.encoding} is not a StemEncoding (FLOAT32LE or FLAC)")
        shifts = engine.check_shifts(request.shifts if request.HasField("shifts") else None)
        start = request.start_seconds if request.HasField("start_seconds") else None
        end = request.end_seconds if request.HasField("end_seconds") else None
        engine.check_times(start, end)  # cheap checks before decoding
        token = CancelToken()
        context.add_callback(token.cancel)
        with self.admission.admit():
            audio = engine.decode(request.audio)
            a, b = engine.span(len(audio), start, end)
            with self.admission.turn(token):
                sr = engine.sample_rate
                yield separator_pb2.SeparateResponse(
                    header=types_pb2.SeparationHeader(
                        model=engine.name,
                        stems=engine.stem_infos(),
                        sample_rate=sr,
                        channels=engine.channels,
                        total_frames=b - a,
                        encoding=encoding,
                        start_seconds=a / sr,
                        end_seconds=b / sr,
                        shifts=shifts,
                    )
                )
                t0 = time.perf_counter()
                for chunk in engine.stream(audio, a, b, shifts, encoding, self.cfg.chunk_bytes, token):
                    yield separator_pb2.SeparateResponse(chunk=chunk)
                log.info(
                    "separated %.1f s (%s, shifts %d) in %.2f s",
                    (b - a) / sr,
                    types_pb2.StemEncoding.Name(encoding),
                    shifts,
                    time.perf_counter() - t0,
                )

    def GetSeparatorModel(self, request, context):
        return separator_pb2.GetSeparatorModelResponse(model=self._engine().model_info())


class SeparatorServer(Service[SeparatorConfig]):
    """The separator: gRPC, health and metrics from :meth:`serve`, the model from :meth:`load`."""

    name = "separator"
    grpc_service = SERVICE
    config = SeparatorConfig

    def add_servicer(self, rt: ServiceRuntime) -> SeparatorService:
        servicer = SeparatorService(self.cfg, Admission(self.cfg.max_concurrent, self.cfg.max_queued, rt.registry))
        separator_pb2_grpc.add_SeparatorServiceServicer_to_server(servicer, rt.server)
        return servicer

    def load(self) -> None:
        """Load the model, run a warm-up separation, turn SERVING."""
        cfg = self.cfg
        engine = Engine(
            cfg.repo_path,
            cfg.model,
            device=cfg.device,
            segment_seconds=cfg.segment_seconds,
            overlap=cfg.overlap,
            shifts=cfg.shifts,
            max_shifts=cfg.max_shifts,
            max_audio_seconds=cfg.max_audio_seconds,
            parts=cfg.parts_map,
            threads=cfg.threads,
            registry=self.registry,
        )
        engine.warm_up()
        self.servicer.engine = engine
        log.info(
            "model %s loaded from %s on %s in %.2f s: %d Hz, %d channel(s), stems %s; serving",
            engine.name,
            engine.repo,
            cfg.device,
            engine.load_seconds,
            engine.sample_rate,
            engine.channels,
            ", ".join(f"{s}->{p or '-'}" for s, p in engine.parts.items()),
        )
        self._runtime().set_serving(True)


def main(argv: list[str] | None = None) -> int:
    return SeparatorServer.main(argv)
