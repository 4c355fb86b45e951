#!/usr/bin/env bash
# On a GPU machine with Python 3.12 + PyTorch (no network): unpack .devbundle/ (scripts/gpu-bundle.sh),
# render the training corpus with FluidSynth, train the CSN on the GPU, copy the run to OUT_DIR.
# Usage: scripts/gpu-train.sh OUT_DIR MINUTES     (the corpus and model settings are below)
# The corpus is the one scripts/make-model.sh renders on the CPU (same seed, same SoundFonts):
# its test split is evaluated there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: gpu-train.sh OUT_DIR MINUTES}
MINUTES=${2:?usage: gpu-train.sh OUT_DIR MINUTES}
PY=${PY:-python3}
B=${BUNDLE:-.devbundle}
W=${WORK:-/tmp/partsim-gpu}
SONGS=${SONGS:-800}
SECONDS_PER_SONG=${SECONDS_PER_SONG:-30}
WIDTHS=${WIDTHS:-16,32,64,128,256}
BATCH=${BATCH:-128}
mkdir -p "$W/fsb" "$W/site" "$W/fsl" "$OUT_DIR"
t0=$(date +%s)
$PY -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$B/fs.tar.xz" "$W/fsb"
if [ -z "${SKIP_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" "$B"/whl/*.whl
fi
# Only the libraries this machine lacks go on LD_LIBRARY_PATH, and only for rendering.
cp "$W/fsb/lib/libfluidsynth.so.3" "$W/fsl/"
for _ in 1 2 3 4 5 6 7 8; do
  missing=$(LD_LIBRARY_PATH="$W/fsl" ldd "$W/fsl/libfluidsynth.so.3" | awk '/not found/{print $1}' | sort -u)
  [ -z "$missing" ] && break
  for m in $missing; do cp "$W/fsb/lib/$m" "$W/fsl/"; done
done
echo "libraries taken from the bundle: $(ls "$W/fsl" | tr '\n' ' ')"
# pyfluidsynth looks the library up with ctypes.util.find_library, which ignores LD_LIBRARY_PATH.
cat > "$W/site/sitecustomize.py" <<PYEOF
import ctypes.util
_find = ctypes.util.find_library
def _find_fluidsynth(name):
    return "$W/fsl/libfluidsynth.so.3" if "fluidsynth" in name else _find(name)
ctypes.util.find_library = _find_fluidsynth
PYEOF
export PYTHONPATH="$W/site:$PWD" PYTHONUNBUFFERED=1
SF=$W/fsb/sf
LD_LIBRARY_PATH="$W/fsl" $PY -m partsim corpus make --out "$W/corpus" --songs "$SONGS" --seconds "$SECONDS_PER_SONG" \
  --seed 200 --soundfont "$SF/TimGM6mb.sf2" "$SF/FluidR3Mono_GM.sf3" "$SF/sf_GMbank.sf2" --workers "$(nproc)" --quiet
echo "corpus rendered after $(( $(date +%s) - t0 )) s"
$PY -m partsim train --corpus "$W/corpus" --out "$W/run" --widths "$WIDTHS" --batch "$BATCH" \
  --epochs 10000 --steps-per-epoch ${STEPS_PER_EPOCH:-200} --partnet-steps ${PARTNET_STEPS:-400} \
  --pretrain-steps ${PRETRAIN_STEPS:-400} --val-draws 256 --time-limit "$MINUTES" --quiet ${TRAIN_ARGS:-}
cp "$W/run/model.pt" "$W/run/run.json" "$OUT_DIR/"
echo "done after $(( $(date +%s) - t0 )) s"
