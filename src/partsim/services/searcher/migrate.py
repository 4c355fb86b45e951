"""Schema versions of the searcher's collections: check an existing one, migrate an old one.

Catalogs whose track records were in a SQLite file beside the vectors (``tracks.sqlite``, before
they moved to Milvus) are imported into the ``tracks`` collection once when opened, and the file
renamed ``tracks.sqlite.migrated`` (:func:`import_sqlite`).

Catalogs written before raw and power were kept (no such fields) are migrated when opened: each
collection is copied into a new one (``<name>__migrating``, raw = unit vector x norm where the
part is present, empty where it is absent, power -1), which then replaces it. An interrupted
migration is finished or redone on the next open (:func:`recover`); the search fields are
copied unchanged, so search results are identical.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from partsim.errors import FailedPrecondition

from .milvus import BATCH, POWER_UNKNOWN, Milvus, pk, quote
from .tracktable import TrackTable

log = logging.getLogger("partsim.searcher")

MIGRATING = "__migrating"  # suffix of the collection a migration copies into

# the fields of every collection partsim's searcher has written (raw and power came later)
LEGACY_FIELDS = {"pk", "track_id", "segment", "start", "end", "present", "norm", "vector"}


def is_legacy(milvus: Milvus, name: str) -> bool:
    """Check an existing collection; True when it predates the raw and power fields (to migrate).

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
    new = have & {"raw", "power"}
    if new == {"raw", "power"}:
        return False
    if new:
        raise FailedPrecondition(
            f"collection {name} at {milvus.uri} has {sorted(new)} but not "
            f"{sorted({'raw', 'power'} - new)}: a schema partsim never wrote; drop it"
        )
    return True


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


def migrate(milvus: Milvus, name: str) -> None:
    """Copy a collection written before raw vectors and audio power were kept into the current
    schema, then put the copy in its place. Search fields are copied as they are; raw = unit
    vector x norm where the part is present, empty where it is absent (that direction was not
    kept); power unknown."""
    tmp = name + MIGRATING
    t0 = time.perf_counter()
    log.warning(
        "%s predates raw vectors and audio power: migrating it (rows keep their search fields; "
        "re-index tracks to query their absent parts)",
        name,
    )
    milvus.load(name)
    milvus.create(tmp)
    milvus.load(tmp)
    copied, batch = 0, []
    for r in milvus.scan(name, ["track_id", "segment", "start", "end", "present", "norm", "vector"]):
        vec = np.asarray(r["vector"], dtype=np.float32)
        raw = (vec * np.float32(r["norm"])).tolist() if r["present"] else []
        batch.append(
            {
                "pk": r["pk"],
                "track_id": r["track_id"],
                "segment": int(r["segment"]),
                "start": float(r["start"]),
                "end": float(r["end"]),
                "present": bool(r["present"]),
                "norm": float(r["norm"]),
                "power": POWER_UNKNOWN,
                "raw": raw,
                "vector": vec,
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
