#!/usr/bin/env bash
# Main job: set up from nothing (.venv, CPU torch), then the CPU benchmark suite: fastgame
# ACGD (and BCGD on the MLP GAN) vs CGDs 0.4.5 vs Adam, results in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/setup.sh
python -m bench --suite quick "$@"
python -m bench --suite quick --algo BCGD --models mlp "$@"
