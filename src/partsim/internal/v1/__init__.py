"""Generated from protos/partsim/internal/v1 by scripts/gen-protos.sh: the internal services' gRPC stubs."""
