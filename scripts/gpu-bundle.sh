#!/usr/bin/env bash
# Pack what scripts/gpu-train.sh needs on a GPU machine that has Python 3.12 and PyTorch but no
# FluidSynth, no SoundFonts and no network: libfluidsynth with its libraries, the training
# SoundFonts and the wheels PyTorch images lack. Writes .devbundle/ (git-ignored, ~36 MB).
# Run on a Debian machine after scripts/bootstrap.sh (and `apt-get install fluidr3mono-gm-soundfont
# csound-soundfont`).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.devbundle
rm -rf "$B" && mkdir -p "$B/whl"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/lib" "$T/sf"
LIB=$(ldconfig -p | awk '/libfluidsynth\.so\.3 .*x86-64/{print $NF; exit}')
[ -n "$LIB" ] || { echo "libfluidsynth.so.3 not found (apt-get install libfluidsynth3)" >&2; exit 1; }
cp -L "$LIB" "$T/lib/"
# every library it needs except the C runtime, which the target has in a newer version
for f in $(ldd "$LIB" | awk '$3 ~ /^\//{print $3}'); do
  case $(basename "$f") in libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
    *) cp -L "$f" "$T/lib/" ;;
  esac
done
for sf in /usr/share/sounds/sf2/TimGM6mb.sf2 /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 /usr/share/sounds/sf2/sf_GMbank.sf2; do
  cp -L "$sf" "$T/sf/"
done
tar -C "$T" -cJf "$B/fs.tar.xz" lib sf
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$B/whl" soundfile==0.14.0 soxr==1.1.0 mido==1.3.3 pyfluidsynth==1.4.0
du -sh "$B"
