#!/usr/bin/env bash
# Install what partsim needs on a fresh Debian machine, idempotently:
#   1. system packages (FluidSynth, the General MIDI SoundFonts, MMA, libsndfile, redis-server, prometheus
#      and chromium with its chromedriver for the tests) with apt-get when root;
#   2. a virtual environment .venv with partsim installed in editable mode (plus extras, e.g. "test").
# Usage: scripts/bootstrap.sh [EXTRA]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont
  fluidr3mono-gm-soundfont csound-soundfont opl3-soundfont mma libsndfile1 redis-server prometheus
  chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "bootstrap: partsim needs Python 3.11 (torch==2.13.0 ships for it); $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  echo "bootstrap: set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
extra=${1:-}
spec="."
[[ -n $extra ]] && spec=".[$extra]"
# pip resolves torch==2.13.0 to the CPU wheel kept on the project machines.
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" >.venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2
  echo "bootstrap: pip install -e '$spec' failed (log above, also in .venv/pip-install.log)" >&2
  exit 1
fi
.venv/bin/python -c "import partsim, fluidsynth, soundfile, soxr" \
  || { echo "bootstrap: the Python environment in .venv is broken; remove .venv and run again" >&2; exit 1; }
