#!/usr/bin/env bash
# Regenerate, from protos/ (the only source of the API):
#   - the Python stubs: src/partsim/v1/ (the public API, package partsim.v1) and src/partsim/internal/v1/
#     (the services behind the gateway, package partsim.internal.v1);
#   - protos/partsim-v1.binpb: a FileDescriptorSet of the public API with its imports and comments, for
#     other languages' code generators (`buf generate protos/partsim-v1.binpb`, `protoc --descriptor_set_in`).
#
#   scripts/gen-protos.sh            # rewrite them
#   scripts/gen-protos.sh DIR        # write the stubs under DIR/partsim/... and the descriptor set in DIR
#   scripts/gen-protos.sh --check    # exit 1 when a committed file differs from a fresh generation
#
# tests/test_protos.py runs the check; `make generate` / `make check-generated` run this with the other generators.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PUBLIC=(protos/partsim/v1/*.proto)
INTERNAL=(protos/partsim/internal/v1/*.proto)
DESCRIPTORS=partsim-v1.binpb
gen() {  # gen STUB_ROOT DESCRIPTOR_DIR
  "$PY" -m grpc_tools.protoc -Iprotos --python_out="$1" --grpc_python_out="$1" --pyi_out="$1" "${PUBLIC[@]}" "${INTERNAL[@]}"
  "$PY" -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
    --descriptor_set_out="$2/$DESCRIPTORS" "${PUBLIC[@]}"
}
if [[ ${1:-} == --check ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  gen "$tmp" "$tmp"
  stale=0
  for pkg in v1 internal/v1; do
    for f in "$tmp"/partsim/$pkg/*; do
      n=$(basename "$f")
      cmp -s "$f" "src/partsim/$pkg/$n" || { echo "stale: src/partsim/$pkg/$n (run scripts/gen-protos.sh)" >&2; stale=1; }
    done
    for f in src/partsim/$pkg/*_pb2*.py src/partsim/$pkg/*_pb2*.pyi; do
      [[ -e $tmp/partsim/$pkg/$(basename "$f") ]] || { echo "not generated from protos/: $f" >&2; stale=1; }
    done
  done
  cmp -s "$tmp/$DESCRIPTORS" "protos/$DESCRIPTORS" || { echo "stale: protos/$DESCRIPTORS (run scripts/gen-protos.sh)" >&2; stale=1; }
  exit $stale
fi
if [[ -n ${1:-} ]]; then
  gen "$1" "$1"
else
  rm -f src/partsim/v1/{embedder,searcher,separator}_pb2*  # moved to partsim.internal.v1
  gen src protos
fi
