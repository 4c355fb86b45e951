"""The Python client of the partsim gateway: :class:`PartsimClient` and the dataclasses it returns."""

from ..hits import StemHit
from .client import Connection, PartsimClient, rpc_code
from .types import (
    CatalogStats,
    Embedding,
    IndexResult,
    IngestJob,
    IngestJobPage,
    ItemFailure,
    JobState,
    MixHit,
    ModelInfo,
    PartEmbedding,
    QueryWarning,
    RetryResult,
    SearchResult,
    SegmentEmbedding,
    Stem,
    StemAudio,
    Stems,
    Track,
)

__all__ = [
    "CatalogStats",
    "Connection",
    "Embedding",
    "IndexResult",
    "IngestJob",
    "IngestJobPage",
    "ItemFailure",
    "JobState",
    "MixHit",
    "ModelInfo",
    "PartEmbedding",
    "PartsimClient",
    "QueryWarning",
    "RetryResult",
    "SearchResult",
    "SegmentEmbedding",
    "Stem",
    "StemAudio",
    "StemHit",
    "Stems",
    "Track",
    "rpc_code",
]
