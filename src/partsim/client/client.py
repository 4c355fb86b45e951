"""A small typed Python client of the partsim gateway (``partsim.v1.PartsimService``).

    from partsim.client import PartsimClient, Stem
    with PartsimClient("localhost:50051") as c:
        c.index_file("song.flac", track_id="song-1", title="Song 1")
        hits = c.search_mix([Stem("drums", track_id="song-1", seconds=30),
                             Stem("bass", track_id="song-7", seconds=70)], top_k=10)
        for h in hits: print(h.track_id, h.distance, h.best_start)

Over TLS and with a token (each also from the environment: PARTSIM_TLS_CA, PARTSIM_TOKEN; see
:class:`Connection`)::

    with PartsimClient("partsim.example.org:50051", tls_ca="ca.crt", token="psk_...") as c: ...

Errors arrive as :class:`partsim.errors.PartsimError` subclasses (InvalidArgument, NotFound,
...) carrying the server's message, so callers need not know gRPC status codes; each also carries
``reason`` (a stable name such as ``TRACK_NOT_FOUND`` or ``RATE_LIMITED``), ``field_violations``
(``(field, description)`` pairs) and ``retry_after_seconds`` (None unless retrying later helps).

Searches return a list of hits with ``.warnings`` (:class:`QueryWarning`): caveats about a query
that was answered all the same, e.g. ``PART_JUDGED_ABSENT`` when the model judges the queried part
absent in a segment whose audio plays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from partsim.errors import InvalidArgument, PartsimError
from partsim.hits import StemHit
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, searcher_pb2, types_pb2

CHUNK = 1 << 20  # IndexTrack upload chunk size
MAX_MESSAGE = 256 << 20

MODES = {
    "exact": searcher_pb2.SEARCH_MODE_EXACT,
    "approximate": searcher_pb2.SEARCH_MODE_APPROXIMATE,
    None: searcher_pb2.SEARCH_MODE_UNSPECIFIED,
}


@dataclass
class Stem:
    """One stem query: a part and exactly one source (an indexed segment, a clip, or a vector)."""

    part: str
    track_id: str | None = None
    seconds: float | None = None
    segment_index: int | None = None
    audio: bytes | None = None
    vector: list[float] | None = None

    def to_proto(self) -> gateway_pb2.StemQuery:
        q = gateway_pb2.StemQuery(part=self.part)
        given = [self.track_id is not None, self.audio is not None, self.vector is not None]
        if sum(given) != 1:
            raise ValueError("a Stem needs exactly one of track_id (with seconds or segment_index), audio, vector")
        if self.track_id is not None:
            q.indexed.track_id = self.track_id
            if self.segment_index is not None:
                q.indexed.segment_index = self.segment_index
            else:
                q.indexed.seconds = float(self.seconds or 0.0)
        elif self.audio is not None:
            q.audio.encoded = self.audio
        else:
            q.vector.vector.extend(self.vector)
        return q


@dataclass
class QueryWarning:
    """A caveat about one stem query of an answered search (gateway.proto QueryWarning)."""

    code: str  # e.g. "PART_JUDGED_ABSENT" (WarningCode without its prefix)
    message: str
    query_index: int
    part: str
    track_id: str  # empty for an uploaded clip
    segment_index: int
    start: float
    end: float
    norm: float
    power: float

    @classmethod
    def from_proto(cls, w: gateway_pb2.QueryWarning) -> QueryWarning:
        name = gateway_pb2.WarningCode.Name(w.code) if w.code in gateway_pb2.WarningCode.values() else str(w.code)
        return cls(
            name.removeprefix("WARNING_CODE_"),
            w.message,
            w.query_index,
            w.part,
            w.track_id,
            w.segment_index,
            w.start_seconds,
            w.end_seconds,
            w.norm,
            w.power,
        )

    def to_json(self) -> dict:
        return asdict(self)


class SearchResult(list):
    """The hits of a search, best first (a plain list of them), plus ``warnings`` about the query."""

    def __init__(self, hits: Iterable = (), warnings: Iterable[QueryWarning] = (), model_version: str = ""):
        super().__init__(hits)
        self.warnings: list[QueryWarning] = list(warnings)
        self.model_version = model_version


@dataclass
class MixHit:
    track_id: str
    distance: float
    best_segment: int
    best_start: float
    best_end: float
    per_part: dict[str, float]
    metadata: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _metadata(m: types_pb2.TrackMetadata) -> dict:
    return {"title": m.title, "artist": m.artist, "tags": dict(m.tags)}


@dataclass(frozen=True)
class Connection:
    """How to reach a partsim server: TLS trusting the CA ``tls_ca`` (a PEM file; empty: plaintext),
    presenting ``tls_cert``/``tls_key`` when given (mTLS: the internal services), and a bearer ``token``
    sent with every call as ``authorization: Bearer <token>``. A field left None comes from the
    environment: ``PARTSIM_TLS_CA``, ``PARTSIM_TOKEN``, ``PARTSIM_TLS_CERT``, ``PARTSIM_TLS_KEY``."""

    tls_ca: str | None = None
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def resolved(self) -> Connection:
        """Every field set: the given value, else its environment variable, else empty."""
        env = {f: os.environ.get(f"PARTSIM_{f.upper()}", "") for f in ("tls_ca", "token", "tls_cert", "tls_key")}
        return Connection(**{f: str(v) if v is not None else env[f] for f, v in asdict(self).items()})

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (the token as call credentials) when there is a CA; None: plaintext.

        Raises:
            InvalidArgument: a client certificate without a CA or without its key; a file that does not load.
        """
        from partsim.services.tls import channel_credentials

        c = self.resolved()
        if not c.tls_ca:
            if c.tls_cert or c.tls_key:
                raise InvalidArgument("--tls-cert/--tls-key (PARTSIM_TLS_CERT/_KEY) need --tls-ca (PARTSIM_TLS_CA)")
            return None
        names = ("--tls-ca (PARTSIM_TLS_CA)", "--tls-cert (PARTSIM_TLS_CERT)", "--tls-key (PARTSIM_TLS_KEY)")
        creds = channel_credentials(c.tls_ca, c.tls_cert or "", c.tls_key or "", names)
        if c.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(c.token))
        return creds

    def channel(self, address: str, options: Iterable[tuple] = ()) -> grpc.Channel:
        """A channel to ``address`` with :meth:`credentials` (TLS, or plaintext without a CA)."""
        from partsim.services.tls import open_channel

        return open_channel(address, self.credentials(), list(options))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What each call on a plaintext channel carries (gRPC sends call credentials over TLS only)."""
        c = self.resolved()
        return (("authorization", f"Bearer {c.token}"),) if c.token and not c.tls_ca else ()


def _raise(exc: grpc.RpcError) -> PartsimError:
    """The domain error of a failed call, with ``.reason``, ``.field_violations`` and ``.retry_after_seconds``
    from the status details."""
    from partsim.services.status import error_from_rpc

    return error_from_rpc(exc)


class PartsimClient:
    """A connection to the gateway at ``address``; ``tls_ca``, ``token``, ``tls_cert``, ``tls_key``: see
    :class:`Connection` (None: from the environment)."""

    def __init__(
        self,
        address: str = "localhost:50051",
        timeout: float = 300.0,
        tls_ca: str | None = None,
        token: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ):
        self.address = address
        self.timeout = timeout
        self.connection = Connection(tls_ca, token, tls_cert, tls_key).resolved()
        self.channel = self.connection.channel(
            address, [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        )
        self.metadata = self.connection.metadata()
        self.stub = gateway_pb2_grpc.PartsimServiceStub(self.channel)

    def __enter__(self) -> PartsimClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request, **kw):
        try:
            return method(request, timeout=kw.pop("timeout", self.timeout), metadata=self.metadata, **kw)
        except grpc.RpcError as exc:
            raise _raise(exc) from None

    def wait_ready(self, timeout: float = 60.0, backend: str = "") -> None:
        """Block until the gateway's health check says SERVING: the gateway and its required backends
        (embedder, searcher), or with ``backend`` ("separator", "embedder", "searcher") that backend as the
        gateway sees it (the separator is optional, so the gateway serves without it)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        service = "partsim.v1.PartsimService" + (f"/{backend}" if backend else "")
        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                r = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=2,
                    metadata=self.metadata,
                )
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.2)
        what = f"{backend} behind gateway" if backend else "gateway"
        raise TimeoutError(f"{what} {self.address} not serving after {timeout:.0f} s ({last})")

    # -- embedding and indexing ----------------------------------------------------------------
    def embed_parts(self, audio: bytes, segment_seconds: float = 0.0, hop_seconds: float = 0.0):
        return self._call(
            self.stub.EmbedParts,
            gateway_pb2.EmbedPartsRequest(
                audio=types_pb2.Audio(encoded=audio), segment_seconds=segment_seconds, hop_seconds=hop_seconds
            ),
        )

    def index_bytes(
        self, data: bytes, track_id: str, title: str = "", artist: str = "", tags: dict[str, str] | None = None
    ):
        def messages() -> Iterator[gateway_pb2.IndexTrackRequest]:
            yield gateway_pb2.IndexTrackRequest(
                header=gateway_pb2.IndexTrackHeader(
                    track_id=track_id, metadata=types_pb2.TrackMetadata(title=title, artist=artist, tags=tags or {})
                )
            )
            for i in range(0, len(data), CHUNK):
                yield gateway_pb2.IndexTrackRequest(chunk=data[i : i + CHUNK])

        try:
            return self.stub.IndexTrack(messages(), timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _raise(exc) from None

    def index_file(self, path: str | os.PathLike, track_id: str | None = None, **meta):
        path = Path(path)
        return self.index_bytes(path.read_bytes(), track_id or path.stem, **meta)

    def submit_job(self, items: Iterable[dict]) -> str:
        """items: dicts with track_id, uri or audio (bytes), and optional title/artist/tags."""
        req = gateway_pb2.SubmitIngestJobRequest()
        for it in items:
            m = req.items.add(
                track_id=it["track_id"],
                metadata=types_pb2.TrackMetadata(
                    title=it.get("title", ""), artist=it.get("artist", ""), tags=it.get("tags", {})
                ),
            )
            if "uri" in it:
                m.uri = str(it["uri"])
            else:
                m.audio.encoded = it["audio"]
        return self._call(self.stub.SubmitIngestJob, req).job_id

    def get_job(self, job_id: str):
        return self._call(self.stub.GetIngestJob, gateway_pb2.GetIngestJobRequest(job_id=job_id))

    def retry_ingest_job(self, job_id: str):
        """Queue the job's failed items again; the response's ``requeued`` and ``job`` (its status)."""
        return self._call(self.stub.RetryIngestJob, gateway_pb2.RetryIngestJobRequest(job_id=job_id))

    # -- search --------------------------------------------------------------------------------
    def search_mix(
        self,
        stems: list[Stem],
        top_k: int | None = None,
        weights: dict[str, float] | None = None,
        exclude: list[str] | None = None,
        mode: str | None = None,
    ) -> SearchResult:
        """Songs ranked by eq. 6.2: a list of :class:`MixHit` with ``.warnings``."""
        req = gateway_pb2.SearchMixRequest(
            queries=[s.to_proto() for s in stems],
            part_weights=weights or {},
            exclude_track_ids=exclude or [],
            mode=MODES[mode],
        )
        if top_k is not None:
            req.top_k = top_k
        resp = self._call(self.stub.SearchMix, req)
        return SearchResult(
            (
                MixHit(
                    h.track.track_id,
                    h.distance,
                    h.best_segment.index,
                    h.best_segment.start_seconds,
                    h.best_segment.end_seconds,
                    {p.part: p.distance for p in h.part_distances},
                    _metadata(h.track.metadata),
                )
                for h in resp.hits
            ),
            map(QueryWarning.from_proto, resp.warnings),
            resp.model_version,
        )

    def search_stems(
        self, stem: Stem, top_k: int | None = None, exclude: list[str] | None = None, mode: str | None = None
    ) -> SearchResult:
        """Segments of one part ranked by cosine distance: a list of :class:`StemHit` with ``.warnings``."""
        req = gateway_pb2.SearchStemsRequest(query=stem.to_proto(), exclude_track_ids=exclude or [], mode=MODES[mode])
        if top_k is not None:
            req.top_k = top_k
        resp = self._call(self.stub.SearchStems, req)
        return SearchResult(
            (
                StemHit(h.track.track_id, h.segment.index, h.segment.start_seconds, h.segment.end_seconds, h.distance)
                for h in resp.hits
            ),
            map(QueryWarning.from_proto, resp.warnings),
            resp.model_version,
        )

    # -- catalog -------------------------------------------------------------------------------
    def get_track(self, track_id: str):
        return self._call(self.stub.GetTrack, searcher_pb2.GetTrackRequest(track_id=track_id)).track

    def list_tracks(self, page_size: int = 100) -> Iterator:
        token = ""
        while True:
            resp = self._call(
                self.stub.ListTracks, searcher_pb2.ListTracksRequest(page_size=page_size, page_token=token)
            )
            yield from resp.tracks
            token = resp.next_page_token
            if not token:
                return

    def delete_track(self, track_id: str) -> None:
        self._call(self.stub.DeleteTrack, searcher_pb2.DeleteTrackRequest(track_id=track_id))

    def stats(self):
        return self._call(self.stub.GetCatalogStats, gateway_pb2.GetCatalogStatsRequest())
