#!/usr/bin/env bash
# Reproduce the shipped model models/csn-v1 from nothing: the training corpus, the held-out
# corpus (another synthesizer), training, evaluation on both, figures, export.
# On the 2-core development machine this takes about 1.5 hours (training ~80 min).
# Usage: scripts/make-model.sh [WORK_DIR]   (default: ./work)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-work}
P=.venv/bin/partsim
SF2=/usr/share/sounds/sf2
SF3=/usr/share/sounds/sf3
mkdir -p "$W"

# Training corpus: FluidR3 and MuseScore only, so TimGM6mb stays unseen for the held-out test.
$P corpus make --out "$W/train400" --songs 400 --seconds 20 --seed 100 \
  --soundfont $SF2/FluidR3_GM.sf2 $SF3/MuseScore_General.sf3 --workers 2 --quiet
# Held-out corpus: other songs (seed), rendered by a synthesizer the model never heard.
$P corpus make --out "$W/heldout-tim" --songs 60 --seconds 20 --seed 777 \
  --soundfont $SF2/TimGM6mb.sf2 --split 0,0,1 --quiet

$P train --corpus "$W/train400" --out "$W/csn1" --widths 8,16,32,64,128 --batch 16 \
  --epochs 53 --steps-per-epoch 50 --partnet-steps 200 --pretrain-steps 200 --threads 2

$P evaluate "$W/csn1/model.pt" --corpus "$W/train400" --out "$W/eval-test.json" --figures "$W/figures"
$P evaluate "$W/csn1/model.pt" --corpus "$W/heldout-tim" --out "$W/eval-heldout.json"
.venv/bin/python - "$W" <<'PY'
import json, sys
w = sys.argv[1]
json.dump({"test_split": json.load(open(f"{w}/eval-test.json")),
           "heldout_synth": json.load(open(f"{w}/eval-heldout.json"))},
          open(f"{w}/evaluation.json", "w"), indent=1)
PY
$P export "$W/csn1/model.pt" --out models/csn-v1 --evaluation "$W/evaluation.json" --name csn-v1
cp "$W/csn1/run.json" models/csn-v1/run.json
cp "$W/evaluation.json" models/csn-v1/evaluation.json
mkdir -p models/csn-v1/figures && cp "$W"/figures/*.png models/csn-v1/figures/
$P bench-embed "$W/csn1/model.pt" models/csn-v1/manifest.json
