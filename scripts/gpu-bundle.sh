#!/usr/bin/env bash
# Pack what scripts/gpu-train.sh needs on a lent GPU machine (Python 3.12 + PyTorch; no FluidSynth,
# no mma, no SoundFonts, no network) and cut it into parts that each fit one device call.
#
#   scripts/gpu-bundle.sh          build .devbundle/bundle.tar, then split it (below)
#   scripts/gpu-bundle.sh split    only re-split .devbundle/bundle.tar (the working tree grew)
#
# bundle.tar holds MANIFEST.json (the SHA-256 of every SoundFont as the corpus uses it), the
# training SoundFonts (.sf2 in scripts/gpu_bundle.py's PCM2 coding, 52 % of their size; .sf3 as
# they are) and base.tar.xz: libfluidsynth with the libraries it links (lib/), the wheels the
# PyTorch image lacks (whl/), Debian's mma as an unpacked MMA (mma/: the mma script, run by any
# python3, beside its MMA/ modules, lib/ groove library and includes/; COPYRIGHT) and, when
# REF_CORPUS (default /work/data/train) holds a corpus, ref/corpus.json: that corpus's settings
# and the SHA-256 of each song.mid and mix.flac, so that gpu-train.sh can tell whether the GPU
# machine rendered the same corpus as the CPU did.
#
# One device call sends the working tree (tracked and untracked-not-ignored files) plus the carried
# paths, 64 MiB at most; the parts are sized to fit beside the tree as it is now:
# PART_MIB = 64 - tree - 2 (at most 60; set PART_MIB to choose). Each call carries one part and
# .devbundle/SHA256SUMS; the plan printed at the end lists the calls (see scripts/gpu-train.sh).
# Run on a Debian machine after scripts/bootstrap.sh (it installs mma, libfluidsynth3 and the
# SoundFonts). Took 5 min on 2 busy cores (xz); writes .devbundle/bundle.tar (179 MiB) and its
# parts (179 MiB again) under the git-ignored .devbundle/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${BUNDLE_PY:-.venv/bin/python}
B=.devbundle
REF_CORPUS=${REF_CORPUS:-/work/data/train}
SOUNDFONTS=(/usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/TimGM6mb.sf2
            /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 /usr/share/sounds/sf2/sf_GMbank.sf2
            /usr/share/sounds/sf2/OPL-3_FM_128M.sf2)
WHEELS=(soundfile==0.14.0 soxr==1.1.0 mido==1.3.3 pyfluidsynth==1.4.0 cffi==2.1.1 pycparser==3.12)
MODE=${1:-build}
case $MODE in build|split) ;; *) echo "usage: gpu-bundle.sh [build|split]" >&2; exit 2 ;; esac
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b / 1048576}'; }

if [ "$MODE" = build ]; then
  for f in "${SOUNDFONTS[@]}" /usr/bin/mma /usr/share/mma/lib/stdlib; do
    [ -e "$f" ] || { echo "gpu-bundle.sh: $f missing (scripts/bootstrap.sh installs it)" >&2; exit 1; }
  done
  rm -rf "$B" && mkdir -p "$B"
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  mkdir -p "$T/base/lib" "$T/base/whl" "$T/base/mma" "$T/outer/sf"

  # libfluidsynth and every library it needs except the C runtime (the target has a newer one)
  LIB=$(ldconfig -p | awk '/libfluidsynth\.so\.3 .*x86-64/{print $NF; exit}')
  [ -n "$LIB" ] || { echo "libfluidsynth.so.3 not found (apt-get install libfluidsynth3)" >&2; exit 1; }
  cp -L "$LIB" "$T/base/lib/"
  for f in $(ldd "$LIB" | awk '$3 ~ /^\//{print $3}'); do
    case $(basename "$f") in libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
      *) cp -L "$f" "$T/base/lib/" ;;
    esac
  done

  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$T/base/whl" "${WHEELS[@]}"

  # mma: the script (any python3 runs it; MMA finds MMA/, lib/ and includes/ beside it) without the
  # groove databases (.mmaDB name /usr/share/mma paths; partsim's charts name their style files)
  sed '1s|^#!.*|#!/usr/bin/env python3|' /usr/bin/mma > "$T/base/mma/mma"
  chmod 755 "$T/base/mma/mma"
  (cd /usr/share/mma && tar -cf - --exclude=__pycache__ --exclude=.mmaDB MMA lib includes) | tar -C "$T/base/mma" -xf -
  cp /usr/share/doc/mma/copyright "$T/base/mma/COPYRIGHT"
  dpkg-query -W -f='${Version}\n' mma > "$T/base/mma/DEBIAN_VERSION" 2>/dev/null || true

  if [ -f "$REF_CORPUS/index.json" ]; then
    mkdir -p "$T/base/ref"
    nice "$PY" scripts/gpu_bundle.py corpus-ref "$REF_CORPUS" "$T/base/ref/corpus.json"
    echo "reference corpus: $REF_CORPUS"
  fi
  tar -C "$T/base" -cf - lib whl mma $( [ -d "$T/base/ref" ] && echo ref ) | nice xz -T1 -6 > "$T/outer/base.tar.xz"

  # SoundFonts: .sf2 coded (checked: it decodes to the same bytes), .sf3 (Ogg inside) as they are
  files="{"
  for sf in "${SOUNDFONTS[@]}"; do
    name=$(basename "$sf")
    digest=$(sha256sum "$(readlink -f "$sf")" | cut -d' ' -f1)
    case $name in
      *.sf2) nice "$PY" scripts/gpu_bundle.py encode "$sf" "$T/outer/sf/$name.pcm2.xz"
             nice "$PY" scripts/gpu_bundle.py decode "$T/outer/sf/$name.pcm2.xz" "$T/check"
             [ "$(sha256sum "$T/check" | cut -d' ' -f1)" = "$digest" ] || { echo "$name: coding is not lossless" >&2; exit 1; }
             rm -f "$T/check"
             echo "$name: $(mib "$(stat -c %s "$(readlink -f "$sf")")") MiB -> $(mib "$(stat -c %s "$T/outer/sf/$name.pcm2.xz")") MiB" ;;
      *) cp -L "$sf" "$T/outer/sf/$name" ;;
    esac
    files="$files\"sf/$name\": \"$digest\", "
  done
  files="${files%, }}"
  cat > "$T/outer/MANIFEST.json" <<EOF
{"format": "partsim-gpu-bundle/1", "files": $files,
 "mma": "$(cat "$T/base/mma/DEBIAN_VERSION" 2>/dev/null)", "wheels": "$(ls "$T/base/whl" | tr '\n' ' ' | sed 's/ $//')",
 "fluidsynth": "$(basename "$LIB")", "libraries": "$(ls "$T/base/lib" | tr '\n' ' ' | sed 's/ $//')"}
EOF
  "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$T/outer/MANIFEST.json"
  tar -C "$T/outer" -cf "$B/bundle.tar" MANIFEST.json base.tar.xz sf
  echo "base.tar.xz (libraries, wheels, mma, reference): $(mib "$(stat -c %s "$T/outer/base.tar.xz")") MiB"
fi

[ -f "$B/bundle.tar" ] || { echo "gpu-bundle.sh: no $B/bundle.tar (run scripts/gpu-bundle.sh first)" >&2; exit 1; }
TREE=$("$PY" scripts/gpu_bundle.py tree-bytes)
if [ -z "${PART_MIB:-}" ]; then
  PART_MIB=$(( (64 * 1048576 - TREE) / 1048576 - 2 ))
  [ "$PART_MIB" -gt 60 ] && PART_MIB=60
fi
[ "$PART_MIB" -ge 4 ] || { echo "gpu-bundle.sh: the working tree ($(mib "$TREE") MiB) leaves no room for parts" >&2; exit 1; }
"$PY" scripts/gpu_bundle.py split "$B/bundle.tar" "$B" $(( PART_MIB * 1048576 )) > /dev/null
N=$(ls "$B"/part-* | wc -l)
TOTAL=$(stat -c %s "$B/bundle.tar")
echo "bundle: $(mib "$TOTAL") MiB in $N parts of at most $PART_MIB MiB; the working tree is $(mib "$TREE") MiB now"
echo "device calls, back to back (the machine keeps files only while warm: < 30 s between calls):"
i=0
for p in "$B"/part-*; do
  i=$((i + 1))
  sent=$(( TREE + $(stat -c %s "$p") + $(stat -c %s "$B/SHA256SUMS") ))
  if [ "$i" -lt "$N" ]; then cmd="scripts/gpu-assemble.sh"; else cmd='scripts/gpu-train.sh "$OUT" 0   (timeout_s 600)'; fi
  echo "  $i. carry [\"$p\", \"$B/SHA256SUMS\"] ($(mib "$sent") MiB sent)  command: $cmd"
done
echo "  (room left in the last call, e.g. for RESUME=.devbundle/resume/checkpoint.pt: $(mib $(( 64 * 1048576 - sent ))) MiB)"
