#!/usr/bin/env bash
# Install what partsim needs on a fresh Debian machine, idempotently:
#   1. system packages (FluidSynth, the General MIDI SoundFonts, MMA, libsndfile, redis-server, prometheus
#      and chromium with its chromedriver for the tests) with apt-get when root;
#   2. a virtual environment .venv with partsim installed in editable mode with every extra (partsim[all],
#      plus "test" for `make test`).
# Usage: scripts/bootstrap.sh [test]      # .venv with partsim[all] (and the test tools)
#        scripts/bootstrap.sh --check-python   # only say whether $PYTHON is a Python partsim supports
# PYTHON (default python3) is the interpreter of the venv: CPython 3.11, 3.12 or 3.13.
set -euo pipefail
cd "$(dirname "$0")/.."

SUPPORTED_PYTHONS=(3.11 3.12 3.13)  # pyproject.toml's classifiers name the same; tests/test_packaging.py checks
PYTHON=${PYTHON:-python3}
python_version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
if [[ ! " ${SUPPORTED_PYTHONS[*]} " =~ " ${python_version:-none} " ]]; then
  echo "bootstrap: partsim needs Python 3.11, 3.12 or 3.13; $PYTHON is ${python_version:-not a working Python} (set PYTHON=/path/to/python3.X)" >&2
  exit 1
fi
if [[ ${1:-} == --check-python ]]; then
  echo "bootstrap: $PYTHON is Python $python_version: supported"
  exit 0
fi

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

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# every extra (the services, corpora, training, onnxruntime for the CPU), plus the test tools for `make test`
extras=all
[[ -n ${1:-} ]] && extras="all,$1"
spec=".[$extras]"
# On Python 3.11 pip resolves torch==2.13.0 to the CPU wheel kept on the project machines; elsewhere PyPI's torch
# is its CUDA build (with the nvidia-* wheels): add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# for the CPU one.
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" >.venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2
  echo "bootstrap: pip install -e '$spec' failed (log above, also in .venv/pip-install.log)" >&2
  exit 1
fi
.venv/bin/python -c "import partsim, fluidsynth, soundfile, soxr" \
  || { echo "bootstrap: the Python environment in .venv is broken; remove .venv and run again" >&2; exit 1; }
# The tests lint protos/ with buf (npm package @bufbuild/buf: one static binary, pinned), kept in .tools/.
BUF_VERSION=1.75.0
if [[ $extras == *test* ]] && [[ $(.tools/node_modules/.bin/buf --version 2>/dev/null) != "$BUF_VERSION" ]]; then
  command -v npm >/dev/null || { echo "bootstrap: the tests need npm (Node.js) to install buf" >&2; exit 1; }
  npm install --prefix .tools --no-save --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >/dev/null \
    || { echo "bootstrap: npm install @bufbuild/buf@$BUF_VERSION failed" >&2; exit 1; }
fi
