"""Searcher configuration (env ``PARTSIM_SEARCHER_*``, flags override), validated at start-up."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from partsim.errors import InvalidArgument

from ..config import InternalServerConfig, require, server_field
from .store import CONSISTENCY_LEVELS, FRESHNESS_SECONDS, INDEX_TYPES, MILVUS_MAX_LIMIT, MIRROR_BYTES, REMOTE_SCHEMES

PREFIX = "PARTSIM_SEARCHER"

MAX_TOP_K = 1000  # documented in protos/partsim/v1/searcher.proto
MAX_EXCLUDE = 10000  # exclude_track_ids per search


@dataclass
class SearcherConfig(InternalServerConfig):
    """partsim searcher: the catalog index (Milvus, one collection per part) and MixQuery search (internal)."""

    prefix: ClassVar[str] = PREFIX
    address: str = server_field("address", "127.0.0.1:50053")
    metrics_port: int = server_field("metrics_port", 9093)
    data_dir: str = field(
        default="",
        metadata={
            "help": "folder for the Milvus Lite database (milvus.db) without --milvus-uri; a tracks.sqlite "
            "there (an older catalog's track records) is imported into Milvus once"
        },
    )
    milvus_uri: str = field(
        default="",
        metadata={
            "help": "Milvus server URI (http://host:19530) or a Milvus Lite "
            "path ending in .db; empty: DATA_DIR/milvus.db"
        },
    )
    model: str = field(
        default="",
        metadata={
            "help": "model manifest.json giving the parts and subspace_dim "
            "(empty: the shipped model, or $PARTSIM_MODEL)"
        },
    )
    parts: str = field(default="", metadata={"help": "comma-separated part names (empty: the manifest's)"})
    subspace_dim: int = field(default=0, metadata={"help": "vector size per part (0: the manifest's)"})
    index_type: str = field(
        default="HNSW",
        metadata={
            "help": "Milvus vector index: FLAT, IVF_FLAT, IVF_SQ8 (8-bit scalar quantised, 1/4 the memory) or HNSW"
        },
    )
    ann_candidates: int = field(
        default=1000,
        metadata={"help": "approximate path: neighbours per query part (K') of a multi-part query, re-ranked exactly"},
    )
    ann_grouping: bool = field(
        default=True,
        metadata={
            "help": "approximate one-part SearchMix as one Milvus grouping search by track id (where Milvus has "
            "it: Lite 3.x, server 2.4+); off: per-part candidates and re-rank as for multi-part queries"
        },
    )
    hnsw_m: int = field(default=16, metadata={"help": "HNSW graph degree M (build; memory ~ M x 8 bytes a row)"})
    hnsw_ef_construction: int = field(default=100, metadata={"help": "HNSW efConstruction (build)"})
    hnsw_ef: int = field(
        default=0, metadata={"help": "HNSW search ef (0: the search limit; raised to the search limit when smaller)"}
    )
    ivf_nlist: int = field(default=256, metadata={"help": "IVF_FLAT / IVF_SQ8 nlist: clusters (build)"})
    ivf_nprobe: int = field(default=32, metadata={"help": "IVF_FLAT / IVF_SQ8 search nprobe: clusters searched"})
    flush_rows: int = field(default=4096, metadata={"help": "seal Milvus segments after this many written rows"})
    default_mode: str = field(
        default="exact", metadata={"help": "mode of searches that leave it unset: exact or approximate"}
    )
    mirror_bytes: int = field(
        default=MIRROR_BYTES,
        metadata={
            "help": "memory budget (bytes) of the in-memory mirror that answers exact searches; a catalog "
            "beyond it, or 0, is searched exactly by reading Milvus (slow)"
        },
    )
    search_consistency: str = field(
        default="Bounded",
        metadata={"help": f"Milvus consistency level of searches and GetStats: {', '.join(CONSISTENCY_LEVELS)}"},
    )
    freshness_seconds: float = field(
        default=FRESHNESS_SECONDS,
        metadata={
            "help": "how long the mirror answers searches of a level other than Strong before it asks Milvus again "
            "what other searchers changed (0: before every answer; Strong searches always ask)"
        },
    )

    def validate(self) -> None:
        super().validate()
        p = PREFIX
        require(bool(self.data_dir), p, "data_dir", "needed: Milvus Lite (and an older catalog's records) live there")
        require(
            self.milvus_uri == "" or self.milvus_uri.startswith(REMOTE_SCHEMES) or self.milvus_uri.endswith(".db"),
            p,
            "milvus_uri",
            f"expected http://host:19530 (a Milvus server) or a Milvus Lite path ending in .db, "
            f"got {self.milvus_uri!r}",
        )
        require(self.model == "" or Path(self.model).is_file(), p, "model", f"no such manifest: {self.model}")
        require(self.subspace_dim >= 0, p, "subspace_dim", "must be positive (or 0: the manifest's)")
        require(
            self.index_type in INDEX_TYPES,
            p,
            "index_type",
            f"must be one of {', '.join(INDEX_TYPES)}, got {self.index_type!r}",
        )
        require(
            1 <= self.ann_candidates <= MILVUS_MAX_LIMIT,
            p,
            "ann_candidates",
            f"must be within 1..{MILVUS_MAX_LIMIT} (Milvus's largest search limit)",
        )
        require(2 <= self.hnsw_m <= 2048, p, "hnsw_m", "must be within 2..2048")
        require(1 <= self.hnsw_ef_construction <= 10000, p, "hnsw_ef_construction", "must be within 1..10000")
        require(0 <= self.hnsw_ef <= 32768, p, "hnsw_ef", "must be within 0..32768")
        require(1 <= self.ivf_nlist <= 65536, p, "ivf_nlist", "must be within 1..65536")
        require(1 <= self.ivf_nprobe <= 65536, p, "ivf_nprobe", "must be within 1..65536")
        require(self.ivf_nprobe <= self.ivf_nlist, p, "ivf_nprobe", f"must be at most IVF_NLIST ({self.ivf_nlist})")
        require(self.flush_rows >= 1, p, "flush_rows", "must be 1 or more")
        require(self.mirror_bytes >= 0, p, "mirror_bytes", "must be 0 (no mirror) or more")
        require(0 <= self.freshness_seconds <= 60, p, "freshness_seconds", "must be within 0..60 seconds")
        require(
            self.search_consistency in CONSISTENCY_LEVELS,
            p,
            "search_consistency",
            f"must be one of {', '.join(CONSISTENCY_LEVELS)}, got {self.search_consistency!r}",
        )
        require(
            self.default_mode in ("exact", "approximate"),
            p,
            "default_mode",
            f"must be exact or approximate, got {self.default_mode!r}",
        )
        parts, dim = self.model_parts()
        require(len(parts) == len(set(parts)) and all(parts), p, "parts", f"need distinct non-empty names, got {parts}")
        require(dim > 0, p, "subspace_dim", f"must be positive, got {dim}")

    def model_parts(self) -> tuple[list[str], int]:
        """The part list and subspace dimension: explicit settings, else the model manifest's."""
        parts = [s.strip() for s in self.parts.split(",")] if self.parts.strip() else None
        dim = self.subspace_dim or None
        if parts is None or dim is None:
            from partsim.assets import default_manifest

            path = Path(self.model) if self.model else default_manifest()
            try:
                manifest = json.loads(path.read_text())
                parts = parts or [str(x) for x in manifest["parts"]]
                dim = dim or int(manifest["subspace_dim"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InvalidArgument(
                    f"{PREFIX}_PARTS / {PREFIX}_SUBSPACE_DIM unset and the model manifest "
                    f"{path} cannot give them: {exc}"
                ) from None
        return parts, int(dim)

    @property
    def uri(self) -> str:
        return self.milvus_uri or str(Path(self.data_dir) / "milvus.db")
