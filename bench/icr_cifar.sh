#!/usr/bin/env bash
# The CIFAR-10 setting of "Implicit competitive regularization in GANs" (Schaefer, Zheng & Anandkumar,
# ICML 2020) as one `fastgame compare`: WGAN-GP's DCGAN (Gulrajani et al., "Improved training of
# Wasserstein GANs", NeurIPS 2017: DIM 64, latent 128; --model wgan_gp_dcgan) on the WGAN loss, batch 64,
#   ACGD without a penalty, the ICR paper's settings: lr 1e-4 for both players, eps 1e-8, beta 0.99
#     (beta: ACGD's default);
#   Adam + WGAN-GP, its paper's image recipe: lr 1e-4, betas (0.5, 0.9), 5 critic steps, lambda 10.
# The paper's claim: ACGD without the penalty reaches a higher Inception Score than WGAN-GP with it.
# IS and FID are reported where torch-fidelity's Inception weights are cached (fastgame.trainer.inception),
# next to the classifier metrics (FCD) that fastgame always computes.
#
# Usage: bash bench/icr_cifar.sh [options] [OUT]          OUT default fastgame-runs/icr-cifar (git-ignored)
#   --root ROOT     CIFAR-10 in torchvision's layout (ROOT/cifar-10-batches-py/); default $CIFAR10_ROOT,
#                   else a tiny fake set (bench/fake_cifar10.py: paths and timings only, no quality claim)
#   --steps N       generator steps (default 500: sized for a 10-minute GPU run, one seed)
#   --seeds "LIST"  (default "0"). The full run: --steps 100000 --seeds "0 1 2" (days on one GPU for
#                   ACGD; the paper's runs are tens of thousands of generator steps and more)
#   --device D      cuda (default) or cpu
#   --smoke         CPU, 2 steps, width 8, the fake set in a temporary folder (bench/smoke.sh runs it)
# bench/gpu_check.sh icr-cifar runs this with its defaults on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
ROOT="${CIFAR10_ROOT:-}"; STEPS=500; SEEDS="0"; DEVICE=cuda; WIDTH=64; SMOKE=""; OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --seeds) SEEDS="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        -*) echo "bench/icr_cifar.sh: unknown option $1" >&2; exit 2 ;;
        *) OUT="$1"; shift ;;
    esac
done
if [ -n "$SMOKE" ]; then
    STEPS=2; SEEDS=0; DEVICE=cpu; WIDTH=8; ROOT=""
    OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
fi
OUT="${OUT:-fastgame-runs/icr-cifar}"
mkdir -p "$OUT"
if [ -z "$ROOT" ]; then
    ROOT="$OUT/fake-cifar10"
    "$PY" -m bench.fake_cifar10 "$ROOT" > /dev/null
    echo "bench/icr_cifar.sh: no CIFAR-10 given (--root or CIFAR10_ROOT): a tiny fake set in $ROOT, for paths and timings only"
fi
ACGD="acgd:lr_d=1e-4,lr_g=1e-4,eps=1e-8"                                                      # ICR's
GP="adam-alt:penalty=wgan_gp,penalty_weight=10,d_steps=5,betas=0.5,0.9,lr_d=1e-4,lr_g=1e-4"    # WGAN-GP's
start=$SECONDS
# shellcheck disable=SC2086
"$PY" -m fastgame compare --data "cifar10:$ROOT" --model wgan_gp_dcgan --width "$WIDTH" --latent 128 \
    --loss wgan --penalty none --batch 64 --steps "$STEPS" --eval-every "$(( STEPS / 5 > 0 ? STEPS / 5 : 1 ))" \
    --device "$DEVICE" --optimizers "$ACGD" "$GP" --seeds $SEEDS -q --out "$OUT/compare"
echo "bench/icr_cifar.sh: $((SECONDS - start)) s for $STEPS generator steps, seeds $SEEDS, on $DEVICE; table in $OUT/compare/compare.md"
