#!/usr/bin/env bash
# Regenerate the Python stubs in src/partsim/v1/ from protos/ (the only source of the API).
#
#   scripts/gen-protos.sh            # rewrite src/partsim/v1/*_pb2*.py[i]
#   scripts/gen-protos.sh DIR        # write them under DIR/partsim/v1 instead
#   scripts/gen-protos.sh --check    # exit 1 when the committed stubs differ from a fresh generation
#
# tests/test_protos.py runs the check; `make generate` / `make check-generated` run this with the other generators.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
gen() {
  "$PY" -m grpc_tools.protoc -Iprotos --python_out="$1" --grpc_python_out="$1" --pyi_out="$1" protos/partsim/v1/*.proto
}
if [[ ${1:-} == --check ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  stale=0
  for f in "$tmp"/partsim/v1/*; do
    n=$(basename "$f")
    cmp -s "$f" "src/partsim/v1/$n" || { echo "stale: src/partsim/v1/$n (run scripts/gen-protos.sh)" >&2; stale=1; }
  done
  for f in src/partsim/v1/*_pb2*.py src/partsim/v1/*_pb2*.pyi; do
    [[ -e $tmp/partsim/v1/$(basename "$f") ]] || { echo "not generated from protos/: $f" >&2; stale=1; }
  done
  exit $stale
fi
gen "${1:-src}"
