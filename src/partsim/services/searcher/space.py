"""Free space under an embedded Milvus Lite catalog, checked before every write.

Milvus Lite buffers rows in memory and writes them to its folder later (at a flush), so on a full disk
an insert or upsert can be accepted and only the flush fail, or fail half-way through a write that
touches several collections (the part rows, then the track record). A write is therefore refused up
front, with nothing written, while the folder's file system has less than :data:`MIN_FREE_BYTES` free
or less than four times the write's estimated size: ResourceExhausted with reason STORAGE_FULL, as a
full disk is elsewhere in partsim (:func:`partsim.errors.storage_error`). A Milvus server keeps its
own storage (and its own limits); this check is for the Lite folder only.
"""

from __future__ import annotations

import os
from pathlib import Path

from partsim.errors import ResourceExhausted

MIN_FREE_BYTES = 16 << 20  # room for Milvus Lite's flushes and compactions beside the write itself


def free_bytes(folder: str | Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_space(folder: str | Path, write_bytes: int) -> None:
    """ResourceExhausted (STORAGE_FULL; the message names no path) unless ``folder``'s file system has room
    for a write of about ``write_bytes``."""
    free = free_bytes(folder)
    need = max(MIN_FREE_BYTES, 4 * write_bytes)
    if free < need:
        raise ResourceExhausted(
            f"the catalog: no space left on the device ({free >> 20} MiB free; a write needs {need >> 20} MiB)",
            reason="STORAGE_FULL",
        )
