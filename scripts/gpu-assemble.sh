#!/usr/bin/env bash
# On the GPU machine: gather the parts of the bundle (scripts/gpu-bundle.sh) that this device call
# carried, keep them in STASH (default /tmp/partsim-gpu/parts) while the machine stays warm, and once
# all have come, join them, check every part's, the whole's and each SoundFont's SHA-256, and unpack
# into DEST (default /tmp/partsim-gpu/bundle; DEST/READY names the bundle). Safe to run in every
# call: a part is kept only if its SHA-256 matches .devbundle/SHA256SUMS (carry that file with
# every part); a bundle already unpacked is left as it is.
#
#   scripts/gpu-assemble.sh [--require]   --require: exit 3 while parts are still missing
#
# Exit 0: parts kept (or all there and unpacked); 2: no SHA256SUMS; 3: parts missing (--require)
# or a part did not match (re-send it); 4: the joined bundle or a SoundFont did not match.
# Needs python3 with NumPy (PY to choose; the SoundFonts decode with it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
W=${WORK:-/tmp/partsim-gpu}
exec "$PY" scripts/gpu_bundle.py assemble --parts "${BUNDLE_PARTS:-.devbundle}" --stash "${STASH:-$W/parts}" \
  --dest "${BUNDLE:-$W/bundle}" "$@"
