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
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from partsim.errors import InvalidArgument, PartsimError
from partsim.hits import StemHit
from partsim.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

from .types import (
    STEM_FORMATS,
    CatalogStats,
    Embedding,
    IndexResult,
    IngestJob,
    IngestJobPage,
    MixHit,
    QueryWarning,
    RetryResult,
    SearchFilter,
    SearchResult,
    Stem,
    Stems,
    Track,
    _metadata,
)

CHUNK = 1 << 20  # IndexTrack upload chunk size
MAX_MESSAGE = 256 << 20
TIMEOUT = 30.0  # seconds: the default deadline of a call
LONG_TIMEOUT = 600.0  # seconds: the default deadline of indexing, signal-level embedding and GetStems
SERVER_CODE_ATTR = "partsim_rpc_code"  # set on an error a call raised: the call's status code name
EMBED_MODES = {"feature": gateway_pb2.EMBED_MODE_FEATURE, "signal": gateway_pb2.EMBED_MODE_SIGNAL}

MODES = {
    "exact": types_pb2.SEARCH_MODE_EXACT,
    "approximate": types_pb2.SEARCH_MODE_APPROXIMATE,
    None: types_pb2.SEARCH_MODE_UNSPECIFIED,
}


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
    from the status details, and the call's status code name (:func:`rpc_code`)."""
    from partsim.services.status import error_from_rpc

    err = error_from_rpc(exc)
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    setattr(err, SERVER_CODE_ATTR, code.name)
    return err


def rpc_code(err: BaseException) -> str | None:
    """The gRPC status code name ("NOT_FOUND", "UNAVAILABLE", ...) of an error a call of this client raised;
    None for an error raised before any call (bad arguments, an unreadable file)."""
    return getattr(err, SERVER_CODE_ATTR, None)


class PartsimClient:
    """A connection to the gateway at ``address``; ``tls_ca``, ``token``, ``tls_cert``, ``tls_key``: see
    :class:`Connection` (None: from the environment). ``timeout``: the deadline of each call in seconds;
    ``long_timeout`` (at least ``timeout``) that of the long ones: indexing, signal-level embedding, GetStems;
    a method's own ``timeout`` overrides both."""

    def __init__(
        self,
        address: str = "localhost:50051",
        timeout: float = TIMEOUT,
        tls_ca: str | None = None,
        token: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        long_timeout: float = LONG_TIMEOUT,
    ):
        self.address = address
        self.timeout = timeout
        self.long_timeout = max(long_timeout, timeout)
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
        from . import health

        service = "partsim.v1.PartsimService" + (f"/{backend}" if backend else "")
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status = health.check(self.channel, service, timeout=2, metadata=self.metadata)
                if status == health.SERVING:
                    return
                last = health.status_name(status)
            except grpc.RpcError as exc:
                last = exc.code().name
            time.sleep(0.2)
        what = f"{backend} behind gateway" if backend else "gateway"
        raise TimeoutError(f"{what} {self.address} not serving after {timeout:.0f} s ({last})")

    # -- embedding and indexing ----------------------------------------------------------------
    def embed_parts(
        self,
        audio: bytes,
        segment_seconds: float = 0.0,
        hop_seconds: float = 0.0,
        mode: str = "feature",
        timeout: float | None = None,
    ) -> Embedding:
        """Per segment and part of ``audio`` (any format libsndfile reads) the embedding and presence.
        ``mode``: "feature" (the CSN on the mix) or "signal" (separate first: needs a separator, takes
        ``long_timeout``)."""
        if mode not in EMBED_MODES:
            raise InvalidArgument(f"mode must be one of {', '.join(EMBED_MODES)}, got {mode!r}")
        req = gateway_pb2.EmbedPartsRequest(
            audio=types_pb2.Audio(encoded=audio),
            segment_seconds=segment_seconds,
            hop_seconds=hop_seconds,
            mode=EMBED_MODES[mode],
        )
        long = mode == "signal"
        return Embedding.from_proto(self._call(self.stub.EmbedParts, req, timeout=self._timeout(timeout, long)))

    def _timeout(self, given: float | None, long: bool = False) -> float:
        return given if given is not None else (self.long_timeout if long else self.timeout)

    def index_bytes(
        self,
        data: bytes,
        track_id: str,
        title: str = "",
        artist: str = "",
        tags: dict[str, str] | None = None,
        timeout: float | None = None,
        bpm: float | None = None,
        key: str = "",
    ) -> IndexResult:
        """Index audio bytes under ``track_id`` with its metadata (``bpm`` and musical ``key`` where known)."""
        meta = types_pb2.TrackMetadata(title=title, artist=artist, tags=tags or {}, bpm=bpm, key=key)

        def messages() -> Iterator[gateway_pb2.IndexTrackRequest]:
            yield gateway_pb2.IndexTrackRequest(header=gateway_pb2.IndexTrackHeader(track_id=track_id, metadata=meta))
            for i in range(0, len(data), CHUNK):
                yield gateway_pb2.IndexTrackRequest(chunk=data[i : i + CHUNK])

        resp = self._call(self.stub.IndexTrack, messages(), timeout=self._timeout(timeout, long=True))
        return IndexResult(Track.from_proto(resp.track), resp.replaced)

    def index_file(self, path: str | os.PathLike, track_id: str | None = None, **meta) -> IndexResult:
        path = Path(path)
        return self.index_bytes(path.read_bytes(), track_id or path.stem, **meta)

    def submit_job(self, items: Iterable[dict]) -> str:
        """items: dicts with track_id, uri or audio (bytes), and optional title/artist/tags/bpm/key; the job's id."""
        req = gateway_pb2.SubmitIngestJobRequest()
        for it in items:
            m = req.items.add(
                track_id=it["track_id"],
                metadata=types_pb2.TrackMetadata(
                    title=it.get("title", ""),
                    artist=it.get("artist", ""),
                    tags=it.get("tags", {}),
                    bpm=it.get("bpm"),
                    key=it.get("key", ""),
                ),
            )
            if "uri" in it:
                m.uri = str(it["uri"])
            else:
                m.audio.encoded = it["audio"]
        return self._call(self.stub.SubmitIngestJob, req).job_id

    def get_job(self, job_id: str) -> IngestJob:
        return IngestJob.from_proto(
            self._call(self.stub.GetIngestJob, gateway_pb2.GetIngestJobRequest(job_id=job_id)).job
        )

    def list_ingest_jobs(self, page_size: int = 0, page_token: str = "") -> IngestJobPage:
        """One page of the ingest jobs the gateway still keeps (unexpired), newest first. ``page_size`` 0 means
        the gateway's default (50), above 1000 means 1000; ``page_token`` is "" for the first page, else the
        previous page's ``next_page_token`` (it is "" after the last page)."""
        req = gateway_pb2.ListIngestJobsRequest(page_size=page_size, page_token=page_token)
        return IngestJobPage.from_proto(self._call(self.stub.ListIngestJobs, req))

    def iter_ingest_jobs(self, page_size: int = 100) -> Iterator[IngestJob]:
        """Every ingest job the gateway still keeps, newest first, fetched ``page_size`` at a time as the
        iterator is consumed (a job submitted meanwhile is newer than the pages still to come: not among them)."""
        token = ""
        while True:
            page = self.list_ingest_jobs(page_size, token)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def retry_ingest_job(self, job_id: str) -> RetryResult:
        """Queue the job's failed items again: how many (``requeued``) and the ``job`` after the call."""
        resp = self._call(self.stub.RetryIngestJob, gateway_pb2.RetryIngestJobRequest(job_id=job_id))
        return RetryResult(resp.requeued, IngestJob.from_proto(resp.job))

    # -- search --------------------------------------------------------------------------------
    def search_mix(
        self,
        stems: list[Stem],
        top_k: int | None = None,
        weights: dict[str, float] | None = None,
        exclude: list[str] | None = None,
        mode: str | None = None,
        filter: SearchFilter | None = None,
    ) -> SearchResult:
        """Songs ranked by eq. 6.2: a list of :class:`MixHit` with ``.warnings``; only tracks matching
        ``filter`` (:class:`SearchFilter`) when given."""
        req = gateway_pb2.SearchMixRequest(
            queries=[s.to_proto() for s in stems],
            part_weights=weights or {},
            exclude_track_ids=exclude or [],
            mode=MODES[mode],
            filter=filter.to_proto() if filter is not None else None,
        )
        if top_k is not None:
            req.top_k = top_k
        resp = self._call(self.stub.SearchMix, req)
        return SearchResult(
            map(MixHit.from_proto, resp.hits), map(QueryWarning.from_proto, resp.warnings), resp.model_version
        )

    def search_stems(
        self,
        stem: Stem,
        top_k: int | None = None,
        exclude: list[str] | None = None,
        mode: str | None = None,
        filter: SearchFilter | None = None,
    ) -> SearchResult:
        """Segments of one part ranked by cosine distance: a list of :class:`StemHit` (with the track's
        ``metadata``) with ``.warnings``; only segments of tracks matching ``filter`` when given."""
        req = gateway_pb2.SearchStemsRequest(
            query=stem.to_proto(),
            exclude_track_ids=exclude or [],
            mode=MODES[mode],
            filter=filter.to_proto() if filter is not None else None,
        )
        if top_k is not None:
            req.top_k = top_k
        resp = self._call(self.stub.SearchStems, req)
        return SearchResult(
            (
                StemHit(
                    h.track.track_id,
                    h.segment.index,
                    h.segment.start_seconds,
                    h.segment.end_seconds,
                    h.distance,
                    _metadata(h.track.metadata),
                )
                for h in resp.hits
            ),
            map(QueryWarning.from_proto, resp.warnings),
            resp.model_version,
        )

    # -- catalog -------------------------------------------------------------------------------
    def get_track(self, track_id: str) -> Track:
        return Track.from_proto(self._call(self.stub.GetTrack, gateway_pb2.GetTrackRequest(track_id=track_id)).track)

    def list_tracks(self, page_size: int = 100) -> Iterator[Track]:
        """Every track of the catalog by track id, fetched ``page_size`` at a time as the iterator is consumed."""
        token = ""
        while True:
            resp = self._call(
                self.stub.ListTracks, gateway_pb2.ListTracksRequest(page_size=page_size, page_token=token)
            )
            yield from map(Track.from_proto, resp.tracks)
            token = resp.next_page_token
            if not token:
                return

    def delete_track(self, track_id: str) -> None:
        self._call(self.stub.DeleteTrack, gateway_pb2.DeleteTrackRequest(track_id=track_id))

    def stats(self) -> CatalogStats:
        return CatalogStats.from_proto(self._call(self.stub.GetCatalogStats, gateway_pb2.GetCatalogStatsRequest()))

    def get_stems(
        self,
        track_id: str,
        seconds: float | None = None,
        segment_index: int | None = None,
        format: str = "flac",
        timeout: float | None = None,
    ) -> Stems:
        """The separated stems of one indexed segment (the one containing ``seconds``, or by ``segment_index``),
        to listen to: ``format`` "flac" (a FLAC file per stem) or "float32le" (raw frames). Needs a separator
        behind the gateway (FailedPrecondition otherwise)."""
        from partsim.services.separator.client import collect

        if format not in STEM_FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(STEM_FORMATS)}, got {format!r}")
        req = gateway_pb2.GetStemsRequest(encoding=STEM_FORMATS[format])
        req.segment.track_id = track_id
        if segment_index is not None:
            req.segment.segment_index = segment_index
        else:
            req.segment.seconds = float(seconds or 0.0)
        t = self._timeout(timeout, long=True)
        try:
            header, data = collect(self.stub.GetStems(req, timeout=t, metadata=self.metadata))
        except grpc.RpcError as exc:
            raise _raise(exc) from None
        return Stems.from_proto(header, data)
