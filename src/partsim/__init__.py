"""partsim: part-level music similarity search (Hashizume's thesis, as a gRPC cluster)."""

__version__ = "0.1.0"
