#!/usr/bin/env bash
# Shared set-up from nothing: a venv in .venv with the CPU torch, the test and trainer
# requirements, the reference CGDs 0.4.5, and fastgame itself (editable, so the C++ ops
# build in place). Each stage says what it does; a stamp file in the venv skips the
# installs (and the ~1-3 minute C++ build) when the pins, setup.py and csrc/ are unchanged.
# Usage: source .ci/setup.sh   (from the repository root)
set -euo pipefail
VENV="${FASTGAME_VENV:-.venv}"
PINS=(torch==2.13.0 numpy pytest CGDs==0.4.5 triton==3.9.0 "scikit-learn>=1.0" "matplotlib>=3.5" "tqdm>=4.60")
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# What the installed state depends on: the pins, the build script, the C++ sources, and
# whether the extensions are wanted at all.
STAMP="$VENV/.fastgame-setup-stamp"
HASH=$( { printf '%s\n' "${PINS[@]}" "NO_EXT=${FASTGAME_NO_EXTENSIONS:-}"; cat setup.py;
          find csrc -type f -print0 | sort -z | xargs -0 cat; } | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && python -c "import fastgame" 2>/dev/null; then
    echo "setup: $VENV is up to date (pins, setup.py and csrc/ unchanged); nothing to install"
else
    PIP=(python -m pip install --disable-pip-version-check --progress-bar off)
    echo "setup: installing build tools"
    "${PIP[@]}" "setuptools>=64" wheel
    echo "setup: installing torch (CPU) and the requirements: ${PINS[*]}"
    "${PIP[@]}" "${PINS[@]}"
    if [ -n "${FASTGAME_NO_EXTENSIONS:-}" ]; then
        echo "setup: installing fastgame (editable, pure torch: FASTGAME_NO_EXTENSIONS is set)"
    else
        echo "setup: installing fastgame (editable) and building its C++ ops (1-3 minutes on 2 cores)"
    fi
    "${PIP[@]}" --no-build-isolation --no-deps -e .
    python -c "import fastgame" && echo "$HASH" > "$STAMP"
fi
