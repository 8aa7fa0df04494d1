#!/usr/bin/env bash
# The gradient penalty's weight on the 8-Gaussian ring, so that the demo's choice of it is visible:
# Adam + WGAN-GP with its paper's recipe (Gulrajani et al., "Improved training of Wasserstein GANs",
# NeurIPS 2017: alternating Adam, betas (0.5, 0.9), 5 critic steps per generator step) at lambda 0.01,
# 0.1 (its 8-Gaussians code's), 1 and 10 (its image models'), at the demo's learning rate (the package
# default 1e-3, as for every method of examples/demo.sh), and the whole toy recipe (lambda 0.1 at the
# paper's lr 1e-4), on the WGAN loss at the demo's ring setting (2000 generator steps, batch 256,
# width 64), 3 seeds, one thread per run, one run at a time. examples/demo_summary.py writes the table (modes
# covered and high-quality fraction per seed, training seconds per run), the picture and the verdicts;
# they are copied to docs/results/penalty-sweep.md and .png.
#
# Usage: bash bench/penalty_sweep.sh [OUT]     OUT default fastgame-runs/penalty-sweep (ignored by git)
#        bash bench/penalty_sweep.sh --smoke   a few steps, one seed, in a temporary folder; writes
#                                              nothing into the checkout (bench/smoke.sh runs it)
# env: PYTHON (default python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
SEEDS=(0 1 2); STEPS=2000; EVAL=400; WEIGHTS=(0.01 0.1 1 10); SMOKE=""
if [ "${1:-}" = "--smoke" ]; then
    SMOKE=1; SEEDS=(0); STEPS=4; EVAL=2; WEIGHTS=(0.1 10)
    OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
else
    OUT="${1:-fastgame-runs/penalty-sweep}"
fi
GP_RECIPE="adam-alt:penalty=wgan_gp,d_steps=5,betas=0.5,0.9"
SPECS=()
for w in "${WEIGHTS[@]}"; do SPECS+=("$GP_RECIPE,penalty_weight=$w"); done
SPECS+=("$GP_RECIPE,penalty_weight=0.1,lr_d=1e-4,lr_g=1e-4")   # the toy recipe whole: the paper's lr

start=$SECONDS
"$PY" -m fastgame compare --data ring8 --steps "$STEPS" --batch 256 --width 64 --eval-every "$EVAL" \
    --loss wgan --penalty none --optimizers "${SPECS[@]}" --seeds "${SEEDS[@]}" --threads 1 -q \
    --out "$OUT/ring8-penalty"
seconds=$((SECONDS - start))
"$PY" examples/demo_summary.py "$OUT" \
    "ring8-penalty=8 Gaussians, WGAN loss: Adam + WGAN-GP at four penalty weights (lr 1e-3) and its toy recipe (lr 1e-4)" \
    --seconds "ring8-penalty=$seconds" --title "The gradient penalty's weight on the 8-Gaussian ring" \
    --command "bash bench/penalty_sweep.sh${1:+ $1}" --total "$seconds" > /dev/null
if [ -z "$SMOKE" ]; then
    sed 's#(ring8-penalty/summary.png)#(penalty-sweep.png)#' "$OUT/summary.md" > docs/results/penalty-sweep.md
    cp "$OUT/ring8-penalty/summary.png" docs/results/penalty-sweep.png
    echo "bench/penalty_sweep.sh: $seconds s; docs/results/penalty-sweep.md and .png written (runs in $OUT)"
else
    grep -q "| Adam + WGAN-GP (λ 0.1, toy recipe) |" "$OUT/summary.md"
    echo "bench/penalty_sweep.sh --smoke: ok ($seconds s)"
fi
