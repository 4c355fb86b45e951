"""Python clients of the partsim gateway (installed as ``partsim.clients``)."""

from .client import MixHit, PartsimClient, Stem, StemHit

__all__ = ["MixHit", "PartsimClient", "Stem", "StemHit"]
