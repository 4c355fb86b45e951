"""Client libraries for partsim's public gRPC API (installed as ``partsim.clients``)."""
