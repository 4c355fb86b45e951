#!/usr/bin/env bash
# Regenerate the Python stubs in src/partsim/v1/ from protos/ (the only source of the API).
# tests/test_protos.py fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-src}
${PYTHON:-.venv/bin/python} -m grpc_tools.protoc -Iprotos --python_out="$OUT" --grpc_python_out="$OUT" \
  --pyi_out="$OUT" protos/partsim/v1/*.proto
