"""partsim's gRPC services (installed as ``partsim.services``): gateway, embedder, separator, searcher."""
