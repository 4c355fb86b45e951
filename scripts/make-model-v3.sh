#!/usr/bin/env bash
# Evaluate and ship src/partsim/assets/models/csn-v3 (issue 11): the four evaluation sets, the tables side by side
# with the untrained log-spectrum baseline, the export.
#
# Usage: scripts/make-model-v3.sh WORK_DIR RUN/model.pt
#
#   1. corpora (partsim corpus make; resumable: rerun the same command after an interruption)
#        WORK/train       the training corpus: both composers (--composer mixed, training groove
#                         families), the five training SoundFonts; its test split is the "test split" set
#                         and must be the corpus the model trained on (same seed, songs, seconds and
#                         SoundFonts as the training run; TRAIN_SONGS/TRAIN_SEED/SONG_SECONDS)
#        WORK/ho-composer held-out composer: MMA's held-out groove families, training SoundFonts
#        WORK/ho-synth    held-out synthesizer: training composers, MuseScore_General only
#        WORK/ho-both     both at once: held-out groove families rendered with MuseScore_General
#      (the held-out corpora use --split 0,0,1: every song is in the test split)
#   2. partsim evaluate on the four sets plus the untrained log-spectrum baseline:
#      WORK/evaluation.json (every set's tables and definitions), WORK/evaluation.txt, WORK/figures
#   3. partsim export -> DEST (default src/partsim/assets/models/csn-v3) with the evaluation JSON in the manifest;
#      run.json, evaluation.json, evaluation.txt and the figures beside it; embedding benchmark.
#
# Sizes: TRAIN_SONGS (480), HELDOUT_SONGS (40 per held-out set), SONG_SECONDS (30), WORKERS (2).
# The steps can be run alone: STEPS="corpora evaluate export" (default: all three).
# mma and the SoundFonts come from scripts/bootstrap.sh (Debian packages).
# A tiny dry run (a few minutes):
#   TRAIN_SONGS=10 HELDOUT_SONGS=4 SONG_SECONDS=8 DEST=/tmp/csn-v3-try scripts/make-model-v3.sh /tmp/w RUN/model.pt
#
# csn-v3 itself was trained on WORK/train (made by step 1) on the 2-core development machine:
#   partsim train --corpus WORK/train --out RUN --widths 16,32,64,128,256 --init src/partsim/assets/models/csn-v2 \
#     --batch 32 --lr 1e-4 --schedule cosine --freeze-bn --time-limit 62 --epochs 10000 \
#     --steps-per-epoch 20 --val-draws 64
# (scripts/gpu-train.sh does the same on a lent GPU, with larger batches and torch.compile.)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: make-model-v3.sh WORK_DIR MODEL.pt}
MODEL=${2:?usage: make-model-v3.sh WORK_DIR MODEL.pt}
P=${PARTSIM:-.venv/bin/partsim}
DEST=${DEST:-src/partsim/assets/models/csn-v3}
NAME=${NAME:-$(basename "$DEST")}
TRAIN_SONGS=${TRAIN_SONGS:-480}
TRAIN_SEED=${TRAIN_SEED:-300}
HELDOUT_SONGS=${HELDOUT_SONGS:-40}
SONG_SECONDS=${SONG_SECONDS:-30}
WORKERS=${WORKERS:-2}
STEPS=${STEPS:-corpora evaluate export}
TRAIN_SF=(/usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/TimGM6mb.sf2
          /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 /usr/share/sounds/sf2/sf_GMbank.sf2
          /usr/share/sounds/sf2/OPL-3_FM_128M.sf2)
HELDOUT_SF=/usr/share/sounds/sf3/MuseScore_General.sf3
mkdir -p "$W"
step() { [[ " $STEPS " == *" $1 "* ]]; }
[ -f "$MODEL" ] || { echo "make-model-v3.sh: model not found: $MODEL" >&2; exit 2; }

if step corpora; then
  for f in "${TRAIN_SF[@]}" "$HELDOUT_SF"; do
    [ -f "$f" ] || { echo "make-model-v3.sh: SoundFont missing: $f (scripts/bootstrap.sh installs it)" >&2; exit 2; }
  done
  command -v mma >/dev/null || { echo "make-model-v3.sh: mma missing (scripts/bootstrap.sh installs it)" >&2; exit 2; }
  corpus() {  # corpus NAME ARGS...: WORK/NAME, its song table in WORK/NAME.log
    local name=$1; shift
    $P corpus make --out "$W/$name" --seconds "$SONG_SECONDS" --workers "$WORKERS" --quiet "$@" > "$W/$name.log"
    sed -n 1,2p "$W/$name.log"
  }
  corpus train --songs "$TRAIN_SONGS" --seed "$TRAIN_SEED" --composer mixed --soundfont "${TRAIN_SF[@]}"
  corpus ho-composer --songs "$HELDOUT_SONGS" --seed 779 --composer mma --grooves heldout \
    --soundfont "${TRAIN_SF[@]}" --split 0,0,1
  corpus ho-synth --songs "$HELDOUT_SONGS" --seed 781 --composer mixed --soundfont "$HELDOUT_SF" --split 0,0,1
  corpus ho-both --songs "$HELDOUT_SONGS" --seed 783 --composer mma --grooves heldout \
    --soundfont "$HELDOUT_SF" --split 0,0,1
fi

if step evaluate; then
  # Tables 4.1-4.3 on each set (4.4/4.5 and the figures on the test split), one row per set, with
  # the baseline's rows; the same command prints what the model card shows.
  $P evaluate "$MODEL" --set test="$W/train:test" --set composer="$W/ho-composer" --set synth="$W/ho-synth" \
    --set both="$W/ho-both" --baseline --figures "$W/figures" --out "$W/evaluation.json" | tee "$W/evaluation.txt"
fi

if step export; then
  rm -rf "$DEST"
  $P export "$MODEL" --out "$DEST" --evaluation "$W/evaluation.json" --name "$NAME"
  run_json="$(dirname "$MODEL")/run.json"
  [ -f "$run_json" ] && cp "$run_json" "$DEST/run.json"
  cp "$W/evaluation.json" "$W/evaluation.txt" "$DEST/"
  if compgen -G "$W/figures/*.png" >/dev/null; then
    mkdir -p "$DEST/figures" && cp "$W"/figures/*.png "$DEST/figures/"
  fi
  $P bench-embed "$MODEL" "$DEST/manifest.json"
fi
