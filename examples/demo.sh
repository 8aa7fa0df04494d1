#!/usr/bin/env bash
# Main job: set up from nothing (.venv with a CPU torch; skipped when already done), then
# ACGD vs Adam on the 8-Gaussians and on scikit-learn's handwritten digits, 2 seeds each,
# with `fastgame compare`. Everything lands in one folder (default fastgame-runs/demo,
# ignored by git; pass another as the first argument), whose path is printed at the end.
# About 4-6 minutes on a 2-core CPU (3 min 42 s on an idle one), plus 1-3 minutes of first-time set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/setup.sh
OUT="${1:-fastgame-runs/demo}"
mkdir -p "$OUT"
# One thread: these models are too small to gain from two, and on a busy 2-core machine
# torch's OpenMP threads made conv steps 10-50x slower in our runs.
COMMON=(--optimizers acgd adam --seeds 0 1 --threads 1)
echo "== 1/2: 8 Gaussians on a ring (MLP GAN, minimax loss), ACGD vs simultaneous Adam =="
fastgame compare --data ring8 --steps 2000 --batch 256 --width 64 "${COMMON[@]}" --out "$OUT/ring8"
echo "== 2/2: scikit-learn digits, 8x8 (small DCGAN, minimax loss), ACGD vs simultaneous Adam =="
fastgame compare --data digits --steps 600 --batch 64 --width 16 "${COMMON[@]}" --out "$OUT/digits"
{
    echo "# fastgame demo: ACGD vs Adam"
    echo
    echo "Command: bash examples/demo.sh; machine: $(uname -m), $(nproc) CPU threads ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //' || echo unknown CPU))"
    for part in ring8 digits; do
        echo
        echo "## $part"
        echo
        cat "$OUT/$part/compare.md"
        echo
        echo "Pictures: $part/compare.png (metric vs steps and vs wall-clock), $part/samples-*-seed*.png (final samples)"
    done
} > "$OUT/summary.md"
echo
echo "fastgame demo: tables, plots and samples in $(cd "$OUT" && pwd) (start with summary.md)"
