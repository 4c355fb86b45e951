#!/usr/bin/env bash
# Reproduce the shipped model src/partsim/assets/models/csn-v2.
#
# Training ran on a lent GPU machine (one H200) with scripts/gpu-train.sh, which renders the
# training corpus there (same seed and SoundFonts as below) and trains for a fixed wall-clock
# budget; evaluation and export run here on the CPU. Steps:
#   1. here:  scripts/gpu-bundle.sh                 (libfluidsynth, SoundFonts, wheels -> .devbundle/)
#   2. GPU:   scripts/gpu-train.sh OUT 6.5          then resume once to 9.3 minutes (see the model card)
#   3. here:  scripts/make-model.sh WORK OUT/model.pt   (this script: corpora, evaluation, export)
# Without a GPU, step 2 can run here too (`partsim train ... --device cpu`), much slower.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-work}
MODEL=${2:?usage: make-model.sh WORK_DIR MODEL.pt}
P=.venv/bin/partsim
mkdir -p "$W"
if [ "$(id -u)" = 0 ]; then
  apt-get install -y -q fluidr3mono-gm-soundfont csound-soundfont musescore-general-soundfont >/dev/null
fi
# The training corpus (its test split is the "test split" of the tables): three GM SoundFonts.
$P corpus make --out "$W/c800" --songs 800 --seconds 30 --seed 200 \
  --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 \
  /usr/share/sounds/sf2/sf_GMbank.sf2 --workers 2 --quiet
# Held out: other songs, rendered by a synthesizer the model never heard (MuseScore General).
$P corpus make --out "$W/heldout-ms" --songs 60 --seconds 30 --seed 778 \
  --soundfont /usr/share/sounds/sf3/MuseScore_General.sf3 --split 0,0,1 --quiet

$P evaluate "$MODEL" --corpus "$W/c800" --out "$W/eval-test.json" --figures "$W/figures"
$P evaluate "$MODEL" --corpus "$W/heldout-ms" --quick --out "$W/eval-heldout.json"
.venv/bin/python - "$W" <<'PY'
import json, sys
w = sys.argv[1]
json.dump({"test_split": json.load(open(f"{w}/eval-test.json")),
           "heldout_synth": json.load(open(f"{w}/eval-heldout.json"))},
          open(f"{w}/evaluation.json", "w"), indent=1)
PY
rm -rf src/partsim/assets/models/csn-v2
$P export "$MODEL" --out src/partsim/assets/models/csn-v2 --evaluation "$W/evaluation.json" --name csn-v2
cp "$(dirname "$MODEL")/run.json" src/partsim/assets/models/csn-v2/run.json
cp "$W/evaluation.json" src/partsim/assets/models/csn-v2/evaluation.json
mkdir -p src/partsim/assets/models/csn-v2/figures && cp "$W"/figures/*.png src/partsim/assets/models/csn-v2/figures/
$P bench-embed "$MODEL" src/partsim/assets/models/csn-v2/manifest.json
