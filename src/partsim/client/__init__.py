"""Python clients of the partsim gateway (installed as ``partsim.client``)."""

from .client import Connection, MixHit, PartsimClient, QueryWarning, SearchResult, Stem, StemHit

__all__ = ["Connection", "MixHit", "PartsimClient", "QueryWarning", "SearchResult", "Stem", "StemHit"]
