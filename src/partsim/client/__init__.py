"""Python clients of the partsim gateway (installed as ``partsim.client``)."""

from .client import MixHit, PartsimClient, QueryWarning, SearchResult, Stem, StemHit

__all__ = ["MixHit", "PartsimClient", "QueryWarning", "SearchResult", "Stem", "StemHit"]
