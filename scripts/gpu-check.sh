#!/usr/bin/env bash
# The separator's CUDA path against its CPU path on a GPU machine (issue 6's GPU image): see
# scripts/gpu_check.py for what is measured. Two steps:
#
#   scripts/gpu-check.sh bundle [MIX.flac]   here (with network and the project's .venv): the wheels a
#       bare PyTorch machine lacks (py3.12, manylinux) and the test audio -> .gpucheck/ (git-ignored
#       through .git/info/exclude, ~10 MB). The audio is one corpus song: MIX.flac if given, else a
#       120-s song rendered with `partsim corpus make` (FluidSynth), made stereo (right channel
#       0.9 x the mix, 5 ms later), and the first 30 s of its stems (truth30/, for separation quality
#       against the truth); without FluidSynth the check falls back to synthetic audio.
#   scripts/gpu-check.sh [--cpu-only] [gpu_check.py options]   there: installs .gpucheck/whl into
#       /tmp/gpuc-site when the python is 3.12, puts src/ (the package as installed) on the path and
#       writes $OUT/gpu-check.json (OUT defaults to ./out/). PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=.gpucheck
PY=${PYTHON:-python3}

if [ "${1:-}" = bundle ]; then
  set -e
  mkdir -p "$B/whl"
  grep -qx '/.gpucheck/' .git/info/exclude 2>/dev/null || echo '/.gpucheck/' >> .git/info/exclude
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$B/whl" \
    demucs==4.1.0 julius==0.2.8 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 \
    protobuf==7.36.2 grpcio==1.85.3 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
  MIX=${2:-}
  if [ -z "$MIX" ]; then
    T=$(mktemp -d)
    if .venv/bin/partsim corpus make --out "$T/c" --songs 1 --seconds 120 --seed 7 --quiet; then
      MIX="$T/c/song00000/mix.flac"
    else
      echo "no corpus render (FluidSynth?): the check will use synthetic audio" >&2
    fi
  fi
  if [ -n "$MIX" ]; then
    .venv/bin/python - "$MIX" "$B/song.flac" <<'EOF'
import sys
import numpy as np
import soundfile as sf
from pathlib import Path
x, sr = sf.read(sys.argv[1], dtype="float32", always_2d=True)
m = x.mean(axis=1)
d = int(0.005 * sr)
right = np.concatenate([np.zeros(d, np.float32), 0.9 * m[:-d]])
sf.write(sys.argv[2], np.stack([m, right], 1), sr, format="FLAC", subtype="PCM_24")
print(f"{sys.argv[2]}: {len(m) / sr:.1f} s stereo at {sr} Hz from {sys.argv[1]}")
# the song's own stems (the mix is their sum), first 30 s: separation quality on each device
stems = Path(sys.argv[1]).parent / "stems"
out = Path(sys.argv[2]).parent / "truth30"
if stems.is_dir():
    out.mkdir(exist_ok=True)
    for f in sorted(stems.glob("*.flac")):
        s, r = sf.read(f, dtype="int16", always_2d=True)
        sf.write(out / f.name, s[:30 * r], r, format="FLAC", subtype="PCM_16")
    print(f"{out}: {', '.join(p.stem for p in sorted(out.glob('*.flac')))}")
EOF
  fi
  du -sh "$B"
  exit 0
fi

SITE=
if ls "$B"/whl/*.whl >/dev/null 2>&1 && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  rm -rf /tmp/gpuc-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpuc-site \
    "$B"/whl/*.whl || { echo "installing $B/whl failed" >&2; exit 1; }
  SITE=/tmp/gpuc-site
  # make the carried protobuf win even if the image's google/ is a regular package (it would take
  # precedence over a namespace portion further up the path): partsim/v1's stubs need protobuf >= 7.35
  [ -d $SITE/google ] && touch $SITE/google/__init__.py
fi
export PYTHONPATH="$ROOT/src${SITE:+:$SITE}" PYTHONUNBUFFERED=1
OUT=${OUT:-$ROOT/out}
echo "python: $("$PY" --version 2>&1); PYTHONPATH=$PYTHONPATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda available", torch.cuda.is_available())'
exec "$PY" scripts/gpu_check.py --out "$OUT/gpu-check.json" --audio "$B/song.flac" --truth "$B/truth30" "$@"
