#!/usr/bin/env bash
# Shared set-up from nothing: a venv in .venv with the CPU torch, the test requirements,
# the reference CGDs 0.4.5, and fastgame itself (editable, so the C++ ops build in place).
# Usage: source .ci/setup.sh   (from the repository root)
set -euo pipefail
VENV="${FASTGAME_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check "setuptools>=64" wheel
python -m pip install -q --disable-pip-version-check torch==2.13.0 numpy pytest CGDs==0.4.5 triton==3.9.0
python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
