#!/usr/bin/env bash
# Train csn-v3 on a lent GPU machine (one H200; Python 3.12 + PyTorch; no FluidSynth, mma,
# SoundFonts or network; each device call carries 64 MiB at most, files survive between calls
# only while the machine stays warm, ~30 s; ~15 minutes of device time in all, start-up included;
# one command runs 600 s at most).
#
# The procedure
#   Here (once, minutes):  scripts/gpu-bundle.sh
#     packs libfluidsynth, mma, the five training SoundFonts, the wheels and the CPU corpus's
#     fingerprint into .devbundle/bundle.tar (179 MiB) and cuts it into parts that fit one call
#     beside the working tree as it is now (4 parts of <= 48 MiB with the 13.3 MiB tree of
#     2026-11-30; 5 parts once the tree passes ~17 MiB); it prints the calls. Re-split with
#     `scripts/gpu-bundle.sh split` (seconds) if the tree grew since.
#   There, device calls back to back (a gap over ~30 s returns the machine and loses the parts:
#   start again at call 1), each carrying its part and .devbundle/SHA256SUMS:
#     calls 1..N-1  carry [".devbundle/part-00", ".devbundle/SHA256SUMS"] (then part-01, ...)
#                   command: scripts/gpu-assemble.sh          (keeps the part in /tmp/partsim-gpu)
#     call N        carry [".devbundle/part-0N-1", ".devbundle/SHA256SUMS"]  timeout_s 600
#                   command: scripts/gpu-train.sh "$OUT" 0     (0: train as long as the call allows)
#                   The machine goes back, with $OUT unreturned, when the session's device time is
#                   spent: if `status` says less than ~11 min are left before call N, prefix
#                   CALL_BUDGET_S=<budget_left_s - 60> (the script trains less; under ~4 min there
#                   is no time to train: it renders and benches, then exits 3).
#   Call N assembles and checks the bundle (10 s on the 2 busy cores here), renders the training
#   corpus (the CPU took 310 s on 2 cores: expect ~1 min on 16), compares it with the CPU corpus
#   (ref/corpus.json: song.mid must match; a share of the mixes differ ~60 dB down, see
#   src/partsim/corpus/render.py), prints `partsim bench-train --device cuda --compile` once (csn-v2's
#   configuration vs csn-v3's at batch 256; not yet timed there, guess ~1 min), then trains from src/partsim/assets/models/csn-v2 (--init) until CALL_BUDGET_S (570 s) after the call's
#   start, and leaves in $OUT: model.pt, run.json, checkpoint.pt (~7.4 MB each: a CSN of widths
#   16..256 has 1.8 M parameters), train.log, bench.json, corpus.log.
#   Here, afterwards: scripts/make-model-v3.sh WORK OUT/model.pt (evaluation and export).
#   To go on in a later session: copy the returned checkpoint.pt to .devbundle/resume/checkpoint.pt,
#   add it to call N's carry (gpu-bundle.sh prints the room left) and run call N with
#   RESUME=.devbundle/resume/checkpoint.pt (the same run goes on: its log, RNG and cosine schedule,
#   whose time limit becomes its wall time so far plus this call's minutes) or with
#   INIT=.devbundle/resume/checkpoint.pt (a new run from those weights, a fresh cosine schedule;
#   also how to start from the CPU run's checkpoint).
#
# Usage: scripts/gpu-train.sh OUT_DIR [MINUTES]   (MINUTES of training; 0 or none: what the call allows)
# Settings (environment): SONGS (480), SECONDS_PER_SONG (30), SEED (300) - the CPU corpus's;
# WORKERS (nproc), WIDTHS (16,32,64,128,256), BATCH (256), LR (1e-4, as the CPU fine-tuning run of csn-v3; batch norms frozen),
# INIT (src/partsim/assets/models/csn-v2; empty: from scratch with pre-training, needed for other widths), RESUME,
# DEVICE (cuda), COMPILE (1), BENCH (1), BENCH_STEPS (4), STEPS_PER_EPOCH (default: epochs of
# ~EPOCH_S=30 s from the bench's rate, else 100), VAL_DRAWS (256), CALL_BUDGET_S (570),
# SETUP_S (60: trainer start-up, stems and --init calibration), STEPS ("render bench train"),
# TRAIN_ARGS (more `partsim train` options), PY (python3), WORK (/tmp/partsim-gpu).
# A dry run on a CPU (about a minute; it assembles the bundle from .devbundle/), after gpu-bundle.sh:
#   WORK=/tmp/g PY=.venv/bin/python DEVICE=cpu COMPILE=0 SONGS=8 SECONDS_PER_SONG=8 WORKERS=1 BATCH=8 \
#   BENCH_STEPS=1 STEPS_PER_EPOCH=5 VAL_DRAWS=16 scripts/gpu-train.sh /tmp/g/out 0.2
# (csn-v2 was trained with this script's earlier version: git show d9bcb7c:scripts/gpu-train.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${1:?usage: gpu-train.sh OUT_DIR [MINUTES]}
MINUTES=${2:-0}
PY=${PY:-python3}
W=${WORK:-/tmp/partsim-gpu}
BUNDLE=${BUNDLE:-$W/bundle}
SONGS=${SONGS:-480}
SECONDS_PER_SONG=${SECONDS_PER_SONG:-30}
SEED=${SEED:-300}
WORKERS=${WORKERS:-$(nproc)}
WIDTHS=${WIDTHS:-16,32,64,128,256}
BATCH=${BATCH:-256}
LR=${LR:-1e-4}
INIT=${INIT-src/partsim/assets/models/csn-v2}
RESUME=${RESUME:-}
DEVICE=${DEVICE:-cuda}
COMPILE=${COMPILE:-1}
BENCH=${BENCH:-1}
BENCH_STEPS=${BENCH_STEPS:-4}
EPOCH_S=${EPOCH_S:-30}
VAL_DRAWS=${VAL_DRAWS:-256}
CALL_BUDGET_S=${CALL_BUDGET_S:-570}
SETUP_S=${SETUP_S:-60}
STEPS=${STEPS:-render bench train}
SF_NAMES=(FluidR3_GM.sf2 TimGM6mb.sf2 FluidR3Mono_GM.sf3 sf_GMbank.sf2 OPL-3_FM_128M.sf2)
step() { [[ " $STEPS " == *" $1 "* ]]; }
say() { echo "[gpu-train $(( SECONDS - T0 )) s] $*"; }
T0=$SECONDS
mkdir -p "$OUT_DIR" "$W"
COMPILE_FLAG=$([ "$COMPILE" = 1 ] && echo --compile || true)
echo "python: $("$PY" --version 2>&1); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi: none')"

# 1. the bundle (assembled by earlier calls' gpu-assemble.sh, or now from the parts this call carried)
WORK=$W BUNDLE=$BUNDLE PY=$PY scripts/gpu-assemble.sh --require
say "bundle ready in $BUNDLE"

# 2. wheels (only for the Python they were built for), FluidSynth, mma
mkdir -p "$W/site" "$W/fsl"
if [ -z "${SKIP_WHEELS:-}" ] && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  if ! cmp -s "$BUNDLE/READY" "$W/site/.bundle" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" "$BUNDLE"/whl/*.whl
    cp "$BUNDLE/READY" "$W/site/.bundle"
  fi
else
  echo "wheels not installed ($("$PY" --version 2>&1), SKIP_WHEELS=${SKIP_WHEELS:-}): the interpreter's own packages are used"
fi
# Only the libraries this machine lacks go on LD_LIBRARY_PATH, and only for rendering.
cp "$BUNDLE/lib/libfluidsynth.so.3" "$W/fsl/"
for _ in 1 2 3 4 5 6 7 8; do
  missing=$(LD_LIBRARY_PATH="$W/fsl" ldd "$W/fsl/libfluidsynth.so.3" | awk '/not found/{print $1}' | sort -u)
  [ -z "$missing" ] && break
  for m in $missing; do cp "$BUNDLE/lib/$m" "$W/fsl/"; done
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
export PYTHONPATH="$W/site:$ROOT/src" PYTHONUNBUFFERED=1
# partsim runs this mma: a `#!/usr/bin/env python3` script (standard library only) that finds its
# MMA/ modules and lib/ groove library beside it; python3 is $PY here
mkdir -p "$W/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$("$PY" -c 'import sys; print(sys.executable)')" > "$W/bin/python3"
chmod 755 "$W/bin/python3"
export PATH="$W/bin:$PATH" PARTSIM_MMA="$BUNDLE/mma/mma"
echo "mma: $("$PARTSIM_MMA" -v 2>&1 | tr -s '\n' ' ')"

# 3. the training corpus: the CPU run's settings, rendered here (resumable)
if step render; then
  SF=()
  for n in "${SF_NAMES[@]}"; do SF+=("$BUNDLE/sf/$n"); done
  LD_LIBRARY_PATH="$W/fsl" "$PY" -m partsim corpus make --out "$W/corpus" --songs "$SONGS" \
    --seconds "$SECONDS_PER_SONG" --seed "$SEED" --composer mixed --soundfont "${SF[@]}" --workers "$WORKERS" \
    --quiet > "$W/corpus.log"
  sed -n 1,2p "$W/corpus.log"
  cp "$W/corpus.log" "$OUT_DIR/"
  if [ -f "$BUNDLE/ref/corpus.json" ]; then
    "$PY" scripts/gpu_bundle.py corpus-compare "$W/corpus" "$BUNDLE/ref/corpus.json" || true
  fi
  say "corpus rendered"
fi

# 4. training draws/s: csn-v2's configuration vs csn-v3's (once per machine)
if step bench && [ "$BENCH" = 1 ] && [ ! -f "$W/bench.json" ]; then
  if "$PY" -m partsim bench-train --corpus "$W/corpus" --widths "$WIDTHS" --batch "$BATCH" --steps "$BENCH_STEPS" \
      --device "$DEVICE" $COMPILE_FLAG --out "$W/bench.tmp"; then
    mv "$W/bench.tmp" "$W/bench.json"
    cp "$W/bench.json" "$OUT_DIR/"
  else
    echo "bench-train failed; training goes on${COMPILE_FLAG:+ without --compile}" >&2
    COMPILE_FLAG=
  fi
  say "bench done"
fi

# 5. train: from the shipped model (or a carried-in checkpoint), until the call's budget
if step train; then
  mkdir -p "$W/run"
  if [ -n "$RESUME" ]; then
    [ -f "$RESUME" ] || { echo "gpu-train.sh: RESUME=$RESUME: no such file" >&2; exit 2; }
    cmp -s "$RESUME" "$W/run/checkpoint.pt" || cp "$RESUME" "$W/run/checkpoint.pt"
  fi
  PRIOR_S=0
  if [ -f "$W/run/checkpoint.pt" ]; then
    PRIOR_S=$("$PY" -c 'import sys, torch; print(torch.load(sys.argv[1], map_location="cpu", weights_only=False)["log"]["wall_seconds"])' "$W/run/checkpoint.pt")
    say "resuming $W/run/checkpoint.pt after $PRIOR_S s of training"
  fi
  read -r SPE LIMIT < <("$PY" - "$W/bench.json" "$BATCH" "$EPOCH_S" "${STEPS_PER_EPOCH:-}" "$MINUTES" \
      "$CALL_BUDGET_S" "$(( SECONDS - T0 ))" "$SETUP_S" "$PRIOR_S" <<'PYEOF'
import json, sys
bench, batch, epoch_s, spe, minutes, budget, elapsed, setup, prior = sys.argv[1:]
batch, epoch_s, minutes, budget, elapsed, setup, prior = (float(v) for v in (batch, epoch_s, minutes, budget,
                                                                              elapsed, setup, prior))
try:
    rate = json.load(open(bench))["csn-v3 configuration"]["draws_per_second"]
except (OSError, ValueError, KeyError):
    rate = None
if spe:
    spe = int(spe)
else:
    spe = max(10, min(400, round(epoch_s * rate / batch))) if rate else 100
epoch = spe * batch / rate * 1.2 if rate else 2 * epoch_s  # validation and slack
left = (budget - elapsed - setup - epoch - 20) / 60  # the run ends after the epoch in flight
limit = min(minutes, left) if minutes > 0 else left
print(spe, f"{limit + prior / 60:.2f}" if limit >= 0.1 else 0)  # --time-limit counts the run's whole wall time
PYEOF
  )
  if [ "$LIMIT" = 0 ]; then
    echo "gpu-train.sh: no time left in this call to train (CALL_BUDGET_S=$CALL_BUDGET_S): in the next call, while" \
         "the machine is warm, run STEPS=train scripts/gpu-train.sh \"\$OUT\"" >&2
    exit 3
  fi
  say "training: batch $BATCH, $SPE steps per epoch, time limit $LIMIT min (wall time in all), init ${INIT:-none}"
  train() {
    "$PY" -m partsim train --corpus "$W/corpus" --out "$W/run" --widths "$WIDTHS" --batch "$BATCH" --lr "$LR" \
      --epochs 100000 --steps-per-epoch "$SPE" --val-draws "$VAL_DRAWS" --time-limit "$LIMIT" --schedule cosine \
      --precision auto --freeze-bn --device "$DEVICE" "$@" ${INIT:+--init "$INIT"} --quiet ${TRAIN_ARGS:-} 2>&1 | tee -a "$W/train.log"
  }
  # Every epoch's checkpoint goes to OUT_DIR as it is written: a command stopped at its limit still
  # returns the last one.
  ( while sleep 10; do
      for f in checkpoint.pt run.json; do
        if [ "$W/run/$f" -nt "$OUT_DIR/$f" ]; then cp "$W/run/$f" "$OUT_DIR/$f.part" && mv "$OUT_DIR/$f.part" "$OUT_DIR/$f"; fi
      done
    done ) &
  SAVER=$!
  trap 'kill $SAVER 2>/dev/null || true' EXIT
  t_train=$SECONDS
  if ! train $COMPILE_FLAG; then
    [ -n "$COMPILE_FLAG" ] || exit 1
    LIMIT=$(awk -v l="$LIMIT" -v s=$(( SECONDS - t_train )) 'BEGIN{printf "%.2f", l - s / 60}')
    awk -v l="$LIMIT" 'BEGIN{exit !(l >= 0.1)}' || { echo "training failed with --compile; no time left to retry" >&2; exit 1; }
    say "training failed with --compile: once more without it, $LIMIT min (resuming its last checkpoint, if any)"
    train
  fi
  kill $SAVER 2>/dev/null || true
  wait $SAVER 2>/dev/null || true
  rm -f "$OUT_DIR"/*.part
  cp "$W/run/model.pt" "$W/run/run.json" "$W/run/checkpoint.pt" "$W/train.log" "$OUT_DIR/"
  for f in model.pt run.json checkpoint.pt; do
    size=$(stat -c %s "$OUT_DIR/$f")
    echo "$OUT_DIR/$f: $size bytes"
    [ "$size" -lt 16000000 ] || echo "gpu-train.sh: WARNING: $f is over the 16 MB a device call returns" >&2
  done
fi
say "done"
