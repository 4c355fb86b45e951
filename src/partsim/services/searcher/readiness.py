"""Whether a Milvus server serves the vector index it reports built: what benchmarks, tests and anyone about to
switch to approximate search wait for (:meth:`.store.SearchStore.wait_for_index`).

- :func:`wait_for_index`: until Milvus has indexed every sealed row (a server: describe_index's pending rows;
  Milvus Lite: its background index thread, drained).
- :func:`wait_until_served`: then by what the server answers: the index's progress (indexed_rows vs total_rows),
  every flushed segment served with its index by a query node (:func:`unserved_segments`: a 2.3 server reports
  the index built some 15 s before its query node loads the indexed segment, and meanwhile searches the rows
  through an interim index of lower recall), and probe searches, 9 in 10 of which must find the probed row.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np

from partsim.errors import Unavailable

from .milvus import STRONG, Milvus

# HNSW's search ef for the probes. A probe asks for the row's own vector's 10 nearest; at the searches' own
# ef (64 and up) a served HNSW index of a clustered catalog can miss the row itself: 1 probe of 24 at
# 100,000 songs (200,000 rows a segment) was never found at ef 64, so readiness never came.
PROBE_EF = 512


def wait_for_index(m: Milvus, names: Iterable[str], timeout: float) -> None:
    """Wait until Milvus has indexed every sealed row of these collections.

    Milvus server: polls describe_index. Milvus Lite builds indexes on a background thread
    inside this process and reports no progress, so this drains that thread through its
    (private) collection object, best effort.
    """
    deadline = time.monotonic() + timeout
    for name in names:
        if m.lite:
            col = _lite_collection(m, name)
            if col is not None and hasattr(col, "_wait_for_bg"):
                col._wait_for_bg(timeout=max(1.0, deadline - time.monotonic()))
            continue
        while time.monotonic() < deadline:
            d = m.call(f"describe index of {name}", m.client.describe_index, name, "vector")
            if not d or int(d.get("pending_index_rows", 0)) == 0:
                break
            time.sleep(0.5)


def wait_until_served(
    m: Milvus,
    names: Iterable[str],
    timeout: float,
    probe_keys: Sequence[str] = (),
    probes: int = 8,
    level: str = STRONG,
) -> float:
    """After :func:`wait_for_index`: wait until the server *serves* the index, by what it answers, not by
    what ``wait_for_index`` says (a Milvus 2.3 server returns from it before searches use the new index).

    Per collection: its index's progress (describe_index: ``indexed_rows`` == ``total_rows`` and no
    pending rows; ``milvus-lite server`` always reports them equal), every flushed segment served with its
    index (:func:`unserved_segments`), then probe searches (HNSW at ef :data:`PROBE_EF`), of which 9 in 10
    must return the probed row itself among its 10 nearest: the rows ``probe_keys`` name (the caller's,
    spread over the catalog) and ``probes`` present rows the collection gives. Unavailable if that is not
    so within ``timeout`` seconds. Returns the seconds it waited.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    for name in names:
        if not m.lite:
            while True:
                d = m.call(f"describe index of {name}", m.client.describe_index, name, "vector") or {}
                indexed, total = int(d.get("indexed_rows", 0)), int(d.get("total_rows", 0))
                if indexed >= total and int(d.get("pending_index_rows", 0)) == 0:
                    break
                if time.monotonic() > deadline:
                    raise Unavailable(f"Milvus ({m.backend}): {name} indexed {indexed} of {total} rows")
                time.sleep(0.2)
            while (unserved := unserved_segments(m, name)) is not None and unserved:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"Milvus ({m.backend}): {name}: the query nodes do not serve the index of "
                        f"{len(unserved)} flushed segments ({sorted(unserved)[:3]}) after {timeout:.0f} s"
                    )
                time.sleep(0.2)
        rows = m.get(name, list(probe_keys), ["vector", "present"], level) if probe_keys else []
        rows += m.query(name, "present == true", ["vector", "present"], level, limit=probes)
        rows = [r for r in rows if r["present"]]
        pending = {r["pk"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}
        allowed = len(pending) // 10  # an approximate index may miss a row even when served: allow 1 in 10
        while len(pending) > allowed:
            for key, vec in list(pending.items()):
                hits = m.search(name, vec, 10, (), level, vectors=False, ef=PROBE_EF)
                if any((h.get("pk") or h.get("id")) == key for h in hits):
                    del pending[key]
            if len(pending) > allowed and time.monotonic() > deadline:
                raise Unavailable(
                    f"Milvus ({m.backend}): searches of {name} do not find {len(pending)} indexed rows "
                    f"({sorted(pending)[:3]}) after {timeout:.0f} s"
                )
            if len(pending) > allowed:
                time.sleep(0.2)
    return time.monotonic() - t0


def unserved_segments(m: Milvus, name: str) -> set[int] | None:
    """The flushed segments of ``name`` that no query node serves with its index yet (a 2.3 server reports
    the index built some 15 s before its query node loads the indexed segment; meanwhile the rows are
    searched through an interim index of lower recall). None: the server cannot say (milvus-lite)."""
    from pymilvus.client.types import SegmentState

    try:
        flushed = m.client.list_persistent_segments(name, states=[SegmentState.Flushed])
        loaded = m.client.list_loaded_segments(name)
    except Exception:  # noqa: BLE001 - a server without these calls (milvus-lite server): nothing to wait for
        return None
    served = {s.segment_id for s in loaded if s.index_id and s.state == SegmentState.Sealed}
    return {s.segment_id for s in flushed if s.num_rows > 0} - served


def _lite_collection(m: Milvus, name: str):
    try:
        from milvus_lite.server_manager import server_manager_instance as mgr

        entry = mgr._servers.get(m.uri)
        return entry[1].get_collection(name) if entry else None
    except Exception:  # noqa: BLE001 - another milvus-lite version: nothing to wait for
        return None
