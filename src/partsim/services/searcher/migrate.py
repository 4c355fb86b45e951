"""Schema versions of the searcher's collections: check an existing one, migrate an old one.

Catalogs whose track records were in a SQLite file beside the vectors (``tracks.sqlite``, before
they moved to Milvus) are imported into the ``tracks`` collection once when opened, and the file
renamed ``tracks.sqlite.migrated`` (:func:`import_sqlite`).

Collections of an older schema are migrated when opened: each is copied into a new one of the
current schema (``<name>__migrating``), which then replaces it. An interrupted migration is finished
or redone on the next open (:func:`recover`); the search fields are copied unchanged, so search
results are identical. The schemas, oldest first:

1. no raw and power fields (before they were kept): raw = unit vector x norm where the part is
   present, empty where it is absent, power -1;
2. no filter fields (before search filters): each row gets its track's (tags, bpm, key, duration,
   indexed_at: :func:`partsim.services.filters.row_fields`) from the track records (the ``tracks``
   collection, or an older catalog's SQLite file not imported yet); a track with no BPM or key
   known gets null / empty, a row of no known track empty tags and zeros.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from partsim.errors import FailedPrecondition

from ..filters import FIELDS as FILTER_FIELDS
from ..filters import row_fields
from .meta import TrackInfo
from .milvus import BATCH, POWER_UNKNOWN, Milvus, pk, quote
from .tracktable import TrackTable

log = logging.getLogger("partsim.searcher")

MIGRATING = "__migrating"  # suffix of the collection a migration copies into

# the fields of every collection partsim's searcher has written (raw and power came later)
LEGACY_FIELDS = {"pk", "track_id", "segment", "start", "end", "present", "norm", "vector"}


def is_legacy(milvus: Milvus, name: str) -> bool:
    """Check an existing collection; True when it predates the current schema (to :func:`migrate`).

    FailedPrecondition if it holds vectors of another dimension or was not written by partsim's searcher.
    """
    desc = milvus.describe(name)
    vec = next((f for f in desc["fields"] if f["name"] == "vector"), None)
    dim = int(vec["params"]["dim"]) if vec else None
    if dim != milvus.dim:
        raise FailedPrecondition(
            f"collection {name} at {milvus.uri} holds {dim}-d vectors but the model's "
            f"subspace_dim is {milvus.dim}: use another data dir / Milvus URI or drop it"
        )
    have = {f["name"] for f in desc["fields"]}
    missing = sorted(LEGACY_FIELDS - have)
    if missing:
        raise FailedPrecondition(
            f"collection {name} at {milvus.uri} lacks the fields {missing}: it was not "
            "written by partsim's searcher; use another data dir / Milvus URI or drop it"
        )
    for added in ({"raw", "power"}, set(FILTER_FIELDS)):
        new = have & added
        if new and new != added:
            raise FailedPrecondition(
                f"collection {name} at {milvus.uri} has {sorted(new)} but not "
                f"{sorted(added - new)}: a schema partsim never wrote; drop it"
            )
    return not set(FILTER_FIELDS) <= have


def recover(milvus: Milvus, name: str) -> None:
    """Finish or undo a migration of ``name`` that a crash interrupted."""
    tmp = name + MIGRATING
    if not milvus.has(tmp):
        return
    if milvus.has(name):
        # the copy may be partial (the old collection is dropped only after it completes): redo it
        log.warning("%s: dropping %s, an interrupted migration's partial copy", name, tmp)
        milvus.call(f"drop {tmp}", milvus.client.drop_collection, tmp)
    else:
        log.warning("%s: finishing an interrupted migration (renaming %s)", name, tmp)
        milvus.call(f"rename {tmp}", milvus.client.rename_collection, tmp, name)


def track_records(tracks: TrackTable, legacy: Path | None) -> dict[str, TrackInfo]:
    """Every live track's record, for :func:`migrate`: the ``tracks`` collection's, and for tracks it lacks,
    those of an older catalog's SQLite file not imported yet."""
    from .meta import MetaDB
    from .tracktable import INFO_FIELDS, _info

    out: dict[str, TrackInfo] = {}
    if legacy is not None and legacy.is_file():
        db = MetaDB(legacy)
        try:
            out = {i.track_id: i for i in db.page("", 1 << 62)}
        finally:
            db.close()
    for r in tracks.milvus.scan(tracks.name, INFO_FIELDS, "deleted == false"):
        out[r["track_id"]] = _info(r)
    return out


NO_TRACK = row_fields({}, None, None, 0.0, 0.0)  # the filter fields of a row of no known track


def migrate(milvus: Milvus, name: str, records: dict[str, TrackInfo]) -> None:
    """Copy a collection of an older schema (see the module doc) into the current one, then put the copy in
    its place. Search fields are copied as they are; where raw vectors and audio power were not kept, raw
    = unit vector x norm where the part is present, empty where it is absent (that direction was not
    kept), power unknown; the filter fields are those of the row's track in ``records``."""
    tmp = name + MIGRATING
    t0 = time.perf_counter()
    have = {f["name"] for f in milvus.describe(name)["fields"]}
    kept = {"raw", "power"} <= have
    log.warning(
        "%s predates %s: migrating it (rows keep their search fields%s)",
        name,
        "search filters" if kept else "raw vectors, audio power and search filters",
        "" if kept else "; re-index tracks to query their absent parts",
    )
    milvus.load(name)
    milvus.create(tmp)
    milvus.load(tmp)
    copied, batch = 0, []
    fields = {}
    extra = ["raw", "power"] if kept else []
    for r in milvus.scan(name, ["track_id", "segment", "start", "end", "present", "norm", "vector", *extra]):
        vec = np.asarray(r["vector"], dtype=np.float32)
        if kept:
            raw, power = list(r["raw"]), float(r["power"])
        else:
            raw, power = (vec * np.float32(r["norm"])).tolist() if r["present"] else [], POWER_UNKNOWN
        tid = r["track_id"]
        if tid not in fields:
            info = records.get(tid)
            fields[tid] = (
                NO_TRACK
                if info is None
                else row_fields(info.tags, info.bpm, info.key, info.duration_seconds, info.indexed_at)
            )
        batch.append(
            {
                "pk": r["pk"],
                "track_id": r["track_id"],
                "segment": int(r["segment"]),
                "start": float(r["start"]),
                "end": float(r["end"]),
                "present": bool(r["present"]),
                "norm": float(r["norm"]),
                "power": power,
                "raw": raw,
                "vector": vec,
                **fields[tid],
            }
        )
        if len(batch) >= BATCH:
            milvus.insert(tmp, batch)
            copied += len(batch)
            batch = []
    if batch:
        milvus.insert(tmp, batch)
        copied += len(batch)
    milvus.flush([tmp])
    milvus.call(f"drop {name}", milvus.client.drop_collection, name)
    milvus.call(f"rename {tmp}", milvus.client.rename_collection, tmp, name)
    log.warning("%s migrated: %d rows in %.1f s", name, copied, time.perf_counter() - t0)


def count_present(milvus: Milvus, collections: dict[str, str], gens: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per track (of generation ``gens[track]``), the number of its segments where each part is present."""
    out = {t: dict.fromkeys(collections, 0) for t in gens}
    for part, name in collections.items():
        for r in milvus.scan(name, ["track_id", "segment", "present"], "present == true"):
            tid = r["track_id"]
            if tid in gens and r["pk"] == pk(tid, int(r["segment"]), gens[tid]):
                out[tid][part] += 1
    return out


def import_sqlite(tracks: TrackTable, path: Path, collections: dict[str, str]) -> None:
    """Import the track records of an older catalog's SQLite file into the ``tracks`` collection, once.

    Tracks the collection already has (a record or a tombstone, e.g. written by another replica since, or by
    an import a crash interrupted) are left as they are; the rest keep their generation, so they name the
    rows they named. Then the file is renamed ``<name>.migrated`` (the import is not done again; the file
    stays for a downgrade by hand). The present segments per part, which the file did not keep, are
    counted in the part collections.
    """
    from .meta import MetaDB

    t0 = time.perf_counter()
    db = MetaDB(path)
    try:
        infos = db.page("", 1 << 62)
    finally:
        db.close()
    have = set()
    ids = [i.track_id for i in infos]
    for i in range(0, len(ids), 1024):
        expr = f"track_id in [{', '.join(quote(t) for t in ids[i : i + 1024])}]"
        have |= {r["track_id"] for r in tracks.milvus.query(tracks.name, expr, ["deleted"])}
    todo = [i for i in infos if i.track_id not in have]
    present = count_present(tracks.milvus, collections, {t.track_id: t.generation for t in todo})
    for i in range(0, len(todo), 1024):
        tracks.put_many([(t, present[t.track_id]) for t in todo[i : i + 1024]])
    done = path.with_name(path.name + ".migrated")
    for suffix in ("-wal", "-shm"):  # SQLite's side files (empty after a clean close)
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.unlink()
    path.rename(done)
    log.warning(
        "imported %d track records from %s into Milvus (%d were there already) in %.1f s; the file is now %s",
        len(todo),
        path,
        len(infos) - len(todo),
        time.perf_counter() - t0,
        done.name,
    )
