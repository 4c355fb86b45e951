"""Schema versions of the searcher's collections: check an existing one, migrate an old one.

Catalogs written before raw and power were kept (no such fields) are migrated when opened: each
collection is copied into a new one (``<name>__migrating``, raw = unit vector x norm where the
part is present, empty where it is absent, power -1), which then replaces it. An interrupted
migration is finished or redone on the next open (:func:`recover`); the search fields are
copied unchanged, so search results are identical.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from partsim.errors import FailedPrecondition

from .milvus import BATCH, POWER_UNKNOWN, Milvus

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
