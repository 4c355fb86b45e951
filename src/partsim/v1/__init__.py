"""Generated from protos/partsim/v1 by scripts/gen-protos.sh (grpcio-tools); do not edit."""
