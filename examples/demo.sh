#!/usr/bin/env bash
# Main job: does ACGD train where simultaneous gradient methods fail, without explicit regularization?
# The claim of "Implicit competitive regularization in GANs" (Schaefer, Zheng & Anandkumar, ICML 2020),
# tested with `fastgame compare` on the unregularized WGAN loss, 3 seeds each:
#   ACGD  vs  simultaneous Adam  vs  Adam + WGAN-GP with its paper's recipe for the data (Gulrajani et al.,
#   "Improved training of Wasserstein GANs", NeurIPS 2017: 5 critic steps per generator step, Adam betas
#   (0.5, 0.9), and the penalty weight of its code for the kind of data: 0.1 in its 8-Gaussians toy
#   script, 10 for images),
# on the 8-Gaussian ring and on scikit-learn's digits (and real MNIST when mnist:ROOT is given), then the
# minimax loss as the control (ACGD vs simultaneous Adam, where both are known to work). Every method
# uses the package's default learning rates (1e-3 MLP, 2e-4 DCGAN; WGAN-GP's paper, and ACGD's, used
# 1e-4: bench/penalty_sweep.sh runs the ring's baseline at it too), nothing tuned. The digits' discriminator has no BatchNorm in every run (--d-batchnorm off), so the penalty is
# the only difference between the two Adam runs. It ends with one summary (table, picture and a verdict
# computed from the numbers per setting) in OUT/summary.md and prints the folder.
#
# Usage: bash examples/demo.sh [OUT] [mnist:ROOT]      OUT default fastgame-runs/demo (ignored by git)
# Two settings train side by side, one thread each, where the machine has 2+ cores (FASTGAME_DEMO_JOBS=1:
# one at a time). FASTGAME_DEMO_NO_SETUP=1: use the current environment (fastgame installed) instead of
# .venv. FASTGAME_DEMO_SMOKE=1: a few steps, one seed, in the current environment (the test).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FASTGAME_DEMO_SMOKE:-}${FASTGAME_DEMO_NO_SETUP:-}" ]; then
    source .ci/setup.sh
fi
OUT="${1:-fastgame-runs/demo}"
MNIST="${2:-}"
mkdir -p "$OUT"
CORES=$(python -c "import os; print(len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())")
JOBS="${FASTGAME_DEMO_JOBS:-$([ "$CORES" -ge 2 ] && echo 2 || echo 1)}"

SEEDS=(0 1 2); RING_STEPS=2000; IMAGE_STEPS=600; RING_EVAL=400; IMAGE_EVAL=120
if [ -n "${FASTGAME_DEMO_SMOKE:-}" ]; then
    SEEDS=(0); RING_STEPS=4; IMAGE_STEPS=4; RING_EVAL=2; IMAGE_EVAL=2
fi
# WGAN-GP's recipes (Gulrajani et al. 2017): its 8-Gaussians script (gan_toy.py: LAMBDA = .1, "smaller
# lambda seems to help for toy tasks") and its image models (lambda 10); both 5 critic steps, Adam betas
# (0.5, 0.9); the learning rate is the package default here, as for every method.
GP_RECIPE="adam-alt:penalty=wgan_gp,d_steps=5,betas=0.5,0.9"
GP_TOY="$GP_RECIPE,penalty_weight=0.1"
GP_IMAGE="$GP_RECIPE,penalty_weight=10"
RING_WGAN=(--loss wgan --penalty none --optimizers acgd adam "$GP_TOY")
IMAGE_WGAN=(--loss wgan --penalty none --optimizers acgd adam "$GP_IMAGE")
CONTROL=(--loss standard --penalty none --optimizers acgd adam)
RING=(--data ring8 --steps "$RING_STEPS" --batch 256 --width 64 --eval-every "$RING_EVAL")
DIGITS=(--data digits --steps "$IMAGE_STEPS" --batch 64 --width 16 --d-batchnorm off --eval-every "$IMAGE_EVAL")
MNIST_ARGS=(--data "$MNIST" --image-size 16 --steps "$IMAGE_STEPS" --batch 64 --width 16 --d-batchnorm off
            --eval-every "$IMAGE_EVAL")
declare -A SECONDS_OF

# One setting: `fastgame compare` into OUT/NAME, its lines prefixed with the name; records its seconds.
part() {
    local name="$1"; shift
    local start=$SECONDS
    fastgame compare "$@" --seeds "${SEEDS[@]}" --threads 1 -q --out "$OUT/$name" 2>&1 | sed -u "s/^/[$name] /"
    local status=${PIPESTATUS[0]}
    echo "$((SECONDS - start))" > "$OUT/$name.seconds"
    return "$status"
}

# Settings two at a time (or one at a time with JOBS=1); a failed setting fails the demo.
run_parts() {
    local pids=()
    for spec in "$@"; do
        eval "local args=($spec)"
        if [ "$JOBS" -ge 2 ]; then part "${args[@]}" & pids+=($!); else part "${args[@]}"; fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
}

TOTAL=$SECONDS
echo "== fastgame demo: ACGD vs Adam vs Adam + WGAN-GP, seeds ${SEEDS[*]}, $JOBS setting(s) at a time =="
echo "== 1: the WGAN loss without a penalty: 8 Gaussians ($RING_STEPS steps) and digits ($IMAGE_STEPS steps) =="
run_parts "ring8-wgan ${RING[*]} ${RING_WGAN[*]}" "digits-wgan ${DIGITS[*]} ${IMAGE_WGAN[*]}"
SETTINGS=("ring8-wgan=8 Gaussians, WGAN loss without a penalty" "digits-wgan=Digits (8x8), WGAN loss without a penalty")
if [ -n "$MNIST" ]; then
    echo "== 1b: real MNIST ($MNIST, 16 px, $IMAGE_STEPS steps), the WGAN loss without a penalty =="
    run_parts "mnist-wgan ${MNIST_ARGS[*]} ${IMAGE_WGAN[*]}"
    SETTINGS+=("mnist-wgan=MNIST (16x16), WGAN loss without a penalty")
fi
echo "== 2: the control, the minimax loss: ACGD vs simultaneous Adam =="
run_parts "ring8-minimax ${RING[*]} ${CONTROL[*]}" "digits-minimax ${DIGITS[*]} ${CONTROL[*]}"
SETTINGS+=("ring8-minimax=Control: 8 Gaussians, minimax loss" "digits-minimax=Control: digits (8x8), minimax loss")

TIMES=()
for s in "${SETTINGS[@]}"; do name="${s%%=*}"; TIMES+=("$name=$(cat "$OUT/$name.seconds")"); done
echo
python examples/demo_summary.py "$OUT" "${SETTINGS[@]}" --seconds "${TIMES[@]}" \
    --command "bash examples/demo.sh${1:+ $1}${2:+ $2}" --total "$((SECONDS - TOTAL))" --jobs "$JOBS"
echo
echo "fastgame demo: $((SECONDS - TOTAL)) s; summary, tables and pictures in $(cd "$OUT" && pwd) (start with summary.md)"
