"""One catalog's Milvus connection: the collection schema, its vector index, and every raw Milvus call.

:class:`Milvus` owns the ``MilvusClient``; the rest of the searcher never calls pymilvus itself.
Every call goes through :meth:`Milvus.call`, which turns a Milvus failure into ``Unavailable``
naming the backend (a full disk into ``ResourceExhausted``, reason STORAGE_FULL).

Collection schema (one collection per part): one row per (track, segment) with primary key
``"<track_id>#<segment>~<generation>"`` (:func:`pk`: the generation, base 36, is the write's, so a
replace writes its rows beside the old version's; generation 0, of catalogs written before, has no
``~`` part), fields track_id,
segment, start, end, present (the model's judgement, eq. 4.4), norm (the raw subspace norm),
vector: the L2-normalised subspace vector (a zero vector where the part is absent), metric IP,
so IP = cosine, the only field searches read; raw: the subspace vector as indexed (float32,
present or not, so nothing the model said is lost); power: the mean power of the segment's
audio that vector came from (the mix, or the part's stem at signal level), ``-1`` unknown; and
the track's filter fields, copied into each of its rows at every write so that a search filter is
a Milvus expression on the rows themselves (:mod:`partsim.services.filters`): tags (ARRAY of
VARCHAR ``key=value``), bpm (FLOAT, 0.0 when not known: Milvus 2.3 servers have no nullable fields), key (VARCHAR, empty when not known), duration and
indexed_at (DOUBLE).

- Milvus URI: a local path ending in ``.db`` is Milvus Lite (embedded); ``http://host:19530``
  a Milvus server. Collections are created with Strong consistency (a read without a level sees
  every write before it); each read may pass its own level (:data:`CONSISTENCY_LEVELS`): searches
  use the searcher's configured one (Bounded by default), reads that must see the caller's own
  or another replica's finished writes (GetTrack, the switch of a replace) Strong.
- Index: FLAT, IVF_FLAT, IVF_SQ8 or HNSW on ``vector``, metric IP.
- Grouping search (:meth:`Milvus.search` with ``group_by``; :meth:`Milvus.supports_grouping`): Milvus
  returns the best row per track (group size 1), i.e. the min over a track's segments. Milvus Lite 3.x
  and Milvus server 2.4+ have it; a Milvus 2.3 server does not (it ignores the parameter).
- Readiness (whether the server serves the index it reports built): :mod:`.readiness`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from partsim.errors import InvalidArgument, Unavailable, is_disk_full, storage_error

from ..filters import TAG_ELEMENT_BYTES, combine, quote
from ..tracks import MAX_TAGS, MAX_TRACK_ID

log = logging.getLogger("partsim.searcher")

INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW")
IVF_TYPES = ("IVF_FLAT", "IVF_SQ8")  # the index types built with nlist, searched with nprobe
QUANTISED = ("IVF_SQ8",)  # index types whose search distances are approximate (8-bit codes)
POWER_UNKNOWN = -1.0  # the power field of a row whose audio power was not recorded
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")
MILVUS_MAX_LIMIT = 16384  # Milvus's largest search limit (topk)
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
STRONG = "Strong"
BATCH = 4096  # rows per insert / get / delete call
# A grouping search of ``limit`` groups reads about this many rows per group (Milvus Lite 3.x reads 10 x limit
# rows, then groups them); HNSW's ef is raised to limit x GROUP_READ, or the groups' best rows are missed
# (measured: recall@100 0.92-0.99 with ef = limit, 1.0 with ef = 10 x limit, 2,000 songs x 4 segments).
GROUP_READ = 10

T = TypeVar("T")


def pk(track_id: str, segment: int, generation: int = 0) -> str:
    """Primary key of one (track, segment) row of a write's generation (the last '#' separates the
    track id from the rest; generation 0 is the key written before generations were kept)."""
    return f"{track_id}#{int(segment)}" + (f"~{np.base_repr(generation, 36).lower()}" if generation else "")


def generation_of(key: str) -> int:
    """The generation a row's primary key carries (0: a key from before generations)."""
    tail = key[key.rfind("#") + 1 :]
    return int(tail.split("~", 1)[1], 36) if "~" in tail else 0


def excluding(track_ids: Sequence[str]) -> str:
    """Filter leaving out the rows of these tracks ('' for none)."""
    return f"track_id not in [{', '.join(quote(t) for t in track_ids)}]" if track_ids else ""


def by_keys(keys: Sequence[str]) -> str:
    """Filter selecting rows by primary key (pymilvus's ``ids=`` mis-quotes keys holding ' or \\)."""
    return f"pk in [{', '.join(quote(k) for k in keys)}]"


def grouping_in(version: str) -> bool:
    """Whether a Milvus of this version string has grouping search: ``milvus_lite-3.x`` (or later), or a
    server ``v2.4`` or later (``v2.3.5``: no; an unknown string: no)."""
    import re

    lite = version.startswith("milvus_lite")
    m = re.search(r"(\d+)\.(\d+)", version)
    if m is None:
        return False
    major, minor = int(m.group(1)), int(m.group(2))
    return major >= 3 if lite else (major, minor) >= (2, 4)


class _NoLiteMvccWarning(logging.Filter):
    """pymilvus warns on every query iterator that Milvus Lite has no MVCC timestamp: expected, drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


class Milvus:
    """A connection to the Milvus holding one catalog's collections (:meth:`connect` opens it).

    Args:
        uri: Milvus URI (a path ending in ``.db``: Milvus Lite; ``http://host:19530``: a server).
        dim: the subspace dimension D (the vector and raw fields).
        index_type: FLAT, IVF_FLAT, IVF_SQ8 or HNSW.
        hnsw: ``M``, ``efConstruction`` (build) and ``ef`` (search; raised to the search limit when smaller).
        ivf: ``nlist`` (build) and ``nprobe`` (search), of IVF_FLAT and IVF_SQ8.
    """

    def __init__(self, uri: str, dim: int, index_type: str, hnsw: dict[str, int], ivf: dict[str, int]):
        self.uri = uri
        self.lite = not uri.startswith(REMOTE_SCHEMES)
        if self.lite and not uri.endswith(".db"):
            raise InvalidArgument(
                f"Milvus URI {uri!r}: expected http://host:port (a Milvus server) or a Milvus Lite path ending in .db"
            )
        if self.lite:
            self.uri = os.path.abspath(uri)
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.index_type = index_type
        self.hnsw = hnsw
        self.ivf = ivf
        self.client: Any = None  # a pymilvus MilvusClient once connected
        self._grouping: bool | None = None  # whether the server has grouping search (asked once)

    @property
    def backend(self) -> str:
        return f"milvus-lite {self.uri}" if self.lite else f"milvus {self.uri}"

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``; a Milvus failure becomes Unavailable saying what failed where."""
        from pymilvus.exceptions import MilvusException

        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            if is_disk_full(exc):  # not an outage: retrying does not help until space is freed
                raise storage_error(exc, f"the searcher's vector store could not {what}") from exc
            raise Unavailable(f"Milvus ({self.backend}) failed to {what}: {exc}") from exc

    def connect(self) -> None:
        from pymilvus import MilvusClient

        if self.lite:
            quiet = logging.getLogger("pymilvus.client.iterator.query_iterator")
            if not any(isinstance(f, _NoLiteMvccWarning) for f in quiet.filters):
                quiet.addFilter(_NoLiteMvccWarning())
        try:
            self.client = MilvusClient(uri=self.uri)
        except Exception as exc:  # any connection failure: say which URI
            raise Unavailable(f"cannot open Milvus at {self.uri}: {exc}") from exc

    # ---------------------------------------------------------------- collections

    def has(self, name: str) -> bool:
        return self.call("list collections", self.client.has_collection, name)

    def load(self, name: str) -> None:
        """Load a collection for searching (:meth:`load_all`)."""
        self.load_all([name])

    def load_all(self, names: Sequence[str], timeout: float = 300.0) -> None:
        """Load these collections for searching. On a server, those another searcher (replica) loaded already
        are left as they are, and the rest are asked for without waiting, then awaited together (a 2.3 server's
        load_collection takes about a second a collection, even for one already loaded)."""
        from pymilvus.client.types import LoadState

        if self.lite:  # in process: nothing to overlap
            for name in names:
                self.call(f"load {name}", self.client.load_collection, name)
            return

        def state(name: str) -> object:
            return self.call(f"ask the load state of {name}", self.client.get_load_state, name).get("state")

        pending = [name for name in names if state(name) != LoadState.Loaded]
        for name in pending:
            self.call(f"load {name}", self.client.load_collection, name, _async=True)
        deadline = time.monotonic() + timeout
        while pending := [name for name in pending if state(name) != LoadState.Loaded]:
            if time.monotonic() > deadline:
                raise Unavailable(f"Milvus ({self.backend}): {pending} not loaded after {timeout:.0f} s")
            time.sleep(0.1)

    def describe(self, name: str) -> dict:
        return self.call(f"describe {name}", self.client.describe_collection, name)

    def _index_params(self):
        params = self.client.prepare_index_params()
        build = (
            {"M": self.hnsw["M"], "efConstruction": self.hnsw["efConstruction"]}
            if self.index_type == "HNSW"
            else {"nlist": self.ivf["nlist"]}
            if self.index_type in IVF_TYPES
            else {}
        )
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP", params=build)
        if self.lite and build:
            # pymilvus 3 sends build parameters as flat key/value pairs (what a Milvus server reads);
            # milvus-lite 3.2 reads only the older JSON "params" pair, so send both.
            params[0].get_index_configs()["params"] = build
        return params

    def create(self, name: str) -> None:
        """Create an empty collection of the current schema, with its vector index."""
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=MAX_TRACK_ID * 4 + 32)
        s.add_field("track_id", DataType.VARCHAR, max_length=MAX_TRACK_ID * 4)
        s.add_field("segment", DataType.INT32)
        s.add_field("start", DataType.DOUBLE)
        s.add_field("end", DataType.DOUBLE)
        s.add_field("present", DataType.BOOL)
        s.add_field("norm", DataType.FLOAT)
        s.add_field("power", DataType.FLOAT)
        s.add_field("raw", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=self.dim)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        # the track's filter fields (partsim.services.filters.row_fields)
        s.add_field(
            "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS, max_length=TAG_ELEMENT_BYTES
        )
        s.add_field("bpm", DataType.FLOAT)  # 0.0: unknown
        s.add_field("key", DataType.VARCHAR, max_length=16)
        s.add_field("duration", DataType.DOUBLE)
        s.add_field("indexed_at", DataType.DOUBLE)
        self.call(f"create {name}", self.client.create_collection, name, schema=s, consistency_level="Strong")
        # sync=False: the collection is empty, nothing to wait for (pymilvus would poll every 0.5 s)
        self.call(f"index {name}", self.client.create_index, name, self._index_params(), sync=False)
        log.info("created collection %s (dim %d, %s, IP)", name, self.dim, self.index_type)

    # ---------------------------------------------------------------- rows

    def insert(self, name: str, rows: list[dict]) -> None:
        for i in range(0, len(rows), BATCH):
            self.call(f"insert into {name}", self.client.insert, name, rows[i : i + BATCH])

    def delete_keys(self, name: str, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), BATCH):
            self.call(f"delete from {name}", self.client.delete, name, filter=by_keys(keys[i : i + BATCH]))

    def delete_tracks(self, name: str, track_ids: Sequence[str]) -> None:
        """Delete every row of the given tracks (a sweep by track id, whatever their keys)."""
        for i in range(0, len(track_ids), 256):
            expr = f"track_id in [{', '.join(quote(t) for t in track_ids[i : i + 256])}]"
            self.call(f"delete from {name}", self.client.delete, name, filter=expr)

    def delete_stale(self, name: str, track_id: str, keep: int | None, old: int | None, before_ms: float) -> None:
        """Delete a track's rows of generation ``old`` and of any generation but ``keep`` that began before
        ``before_ms`` (ms since the epoch): rows of a generation newer than that, not ``old``, may be another
        replica's write in flight, so they stay (the open-time sweep takes them once they are old)."""
        from .tracktable import generation_ms

        rows = self.query(name, f"track_id == {quote(track_id)}", ["segment"])
        gone = []
        for r in rows:
            g = generation_of(r["pk"])
            if g != keep and (g == old or generation_ms(g) < before_ms):
                gone.append(r["pk"])
        self.delete_keys(name, gone)

    def upsert(self, name: str, rows: list[dict]) -> None:
        """Insert or replace rows by primary key."""
        for i in range(0, len(rows), BATCH):
            self.call(f"write {name}", self.client.upsert, name, rows[i : i + BATCH])

    def get(self, name: str, keys: Sequence[str], fields: list[str], level: str = STRONG) -> list[dict]:
        """The rows with these primary keys (missing keys are left out), with ``pk`` and ``fields``."""
        out: list[dict] = []
        for i in range(0, len(keys), BATCH):
            out += self.query(name, by_keys(keys[i : i + BATCH]), fields, level)
        return out

    def query(self, name: str, expr: str, fields: list[str], level: str = STRONG, limit: int | None = None) -> list:
        """The rows matching a filter expression (``limit``: at most that many, in no given order)."""
        kw: dict[str, Any] = {"limit": limit} if limit is not None else {}
        return list(
            self.call(
                f"read {name}",
                self.client.query,
                name,
                filter=expr,
                output_fields=fields,
                consistency_level=level,
                **kw,
            )
        )

    def scan(
        self, name: str, fields: list[str], expr: str = "", level: str = STRONG, batch: int = MILVUS_MAX_LIMIT // 2
    ) -> Generator[dict, None, None]:
        """Every row of a collection (matching ``expr``), with its primary key and ``fields``, in batches under
        Milvus's limit, in ascending primary-key order (a query iterator pages by primary key)."""
        for rows in self.scan_batches(name, fields, expr, level, batch):
            yield from rows

    def scan_batches(
        self, name: str, fields: list[str], expr: str = "", level: str = STRONG, batch: int = MILVUS_MAX_LIMIT // 2
    ) -> Generator[list[dict], None, None]:
        """:meth:`scan`, a batch (list of rows) at a time."""
        it = self.call(
            f"read {name}",
            self.client.query_iterator,
            name,
            batch_size=batch,
            filter=expr,
            output_fields=fields,
            consistency_level=level,
        )
        try:
            while True:
                rows = self.call(f"read {name}", it.next)
                if not rows:
                    return
                yield rows
        finally:
            it.close()

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        exclude: Sequence[str],
        level: str = STRONG,
        where: str = "",
        group_by: str | None = None,
        vectors: bool = True,
        ef: int = 0,
    ) -> list[dict]:
        """The ``limit`` nearest rows to ``vector`` (by IP on the unit vectors), without the excluded tracks,
        among the rows matching the filter expression ``where`` (all when empty).

        Each hit: ``pk``, ``distance`` (the IP) and ``entity`` (track_id, segment, start, end, vector).
        ``group_by`` (a scalar field, e.g. track_id): a grouping search, the ``limit`` best groups with their
        best row each (group size 1); only where :meth:`supports_grouping`. ``vectors`` False: the entities
        without ``vector`` (Milvus Lite builds every row it reads for a grouping search, 10 x limit). ``ef``:
        HNSW's search ef at least this (else the configured one, at least the limit and 64).
        """
        expr = combine(excluding(exclude), where)
        grouping: dict[str, Any] = {"group_by_field": group_by, "group_size": 1} if group_by else {}
        res = self.call(
            f"search {name}",
            self.client.search,
            name,
            data=[vector.tolist()],
            anns_field="vector",
            limit=limit,
            filter=expr,
            search_params=self._search_params(limit * GROUP_READ if group_by else limit, ef),
            output_fields=["track_id", "segment", "start", "end", *(["vector"] if vectors else [])],
            consistency_level=level,
            **grouping,
        )
        return list(res[0]) if res else []

    def supports_grouping(self) -> bool:
        """Whether this Milvus has grouping search (``group_by_field``): Milvus Lite 3.x (in process or
        ``milvus-lite server``) and Milvus server 2.4 or later; a Milvus 2.3 server ignores the parameter.
        Asked once per connection (the server's version)."""
        if self._grouping is None:
            if self.lite:
                from milvus_lite import __version__ as lite_version

                version = f"milvus_lite-{lite_version}"
            else:
                version = str(self.call("ask the server version", self.client.get_server_version))
            self._grouping = grouping_in(version)
            log.info("Milvus %s: grouping search %s", version, "available" if self._grouping else "unavailable")
        return self._grouping

    def no_grouping(self) -> None:
        """The server answered a grouping search with ungrouped rows: stop asking for it."""
        if self._grouping:
            log.warning("Milvus (%s) ignored group_by_field: grouping search turned off", self.backend)
        self._grouping = False

    def _search_params(self, limit: int, ef: int = 0) -> dict:
        if self.index_type == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(self.hnsw["ef"], limit, 64, ef)}}
        if self.index_type in IVF_TYPES:
            return {"metric_type": "IP", "params": {"nprobe": self.ivf["nprobe"]}}
        return {"metric_type": "IP", "params": {}}

    # ---------------------------------------------------------------- sealing, indexing, closing

    def flush(self, names: Iterable[str]) -> None:
        """Seal what was written so far (Milvus builds its index on sealed segments)."""
        for name in names:
            self.call(f"flush {name}", self.client.flush, name)

    def close(self) -> None:
        """Disconnect and (Milvus Lite) stop the embedded database so its files are closed."""
        if self.client is None:
            return
        self.client.close()
        self.client = None
        if self.lite:
            try:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)
            except Exception:
                log.exception("stopping Milvus Lite at %s failed", self.uri)
