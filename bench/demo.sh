#!/usr/bin/env bash
# Main job: set up from nothing (.venv, CPU torch) and compare fastgame with CGDs 0.4.5 on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/setup.sh
python bench/cpu_compare.py "$@"
