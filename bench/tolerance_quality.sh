#!/usr/bin/env bash
# Looser CG tolerance vs training quality, end to end: the same GAN trained with ACGD
# at the default tolerance and at tol 1e-6 and 1e-4, seeds 0-4, on the 8 Gaussians (the demo's
# MLP setting) and on scikit-learn's digits (the demo's small DCGAN setting), with
# `fastgame compare` (quality metrics, CG iterations, mixed-HVP passes, wall-clock).
#
#   bash bench/tolerance_quality.sh [OUT] [RESULT_MD]
#   bash bench/tolerance_quality.sh --smoke       # CI: 2 steps, seed 0, in a temporary folder
#
# OUT defaults to fastgame-runs/tolerance (ignored by git); the summary goes to RESULT_MD
# (default bench/results/tolerance_quality_cpu.md). Finished runs in OUT are reused, so an
# interrupted study continues where it stopped. On a shared 2-core CPU, one thread: 24 min (measured).
# RING_STEPS / DIGITS_STEPS / SEEDS override the step counts and seeds (for a quick try).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--smoke" ]; then  # the whole pipeline at 2 steps; nothing written into the checkout
    smoke_dir="$(mktemp -d)"
    trap 'rm -rf "$smoke_dir"' EXIT
    set -- "$smoke_dir/runs" "$smoke_dir/tolerance_quality.md"
    RING_STEPS=2 DIGITS_STEPS=2 SEEDS=0
fi
if [ -z "${VIRTUAL_ENV:-}" ]; then  # an active environment (CI, a developer's) is used as it is
    [ -f .venv/bin/activate ] || source .ci/setup.sh
    source .venv/bin/activate
fi
OUT="${1:-fastgame-runs/tolerance}"
RESULT="${2:-bench/results/tolerance_quality_cpu.md}"
RING_STEPS="${RING_STEPS:-2000}"
DIGITS_STEPS="${DIGITS_STEPS:-600}"
read -r -a SEED_LIST <<< "${SEEDS:-0 1 2 3 4}"
mkdir -p "$OUT" "$(dirname "$RESULT")"
export OMP_NUM_THREADS=1
# tol is relative and squared: CG stops when ||r||^2 < tol * ||b||^2 (the default, 1e-12, is
# ACGD's drop-in default; 1e-6 and 1e-4 are relative residuals of 1e-3 and 1e-2).
OPTS=(acgd acgd:tol=1e-6 acgd:tol=1e-4)
SMOKE_ARGS=()
if [ -n "${smoke_dir:-}" ]; then  # two tolerances, small evaluations: the pipeline, not the study
    OPTS=(acgd acgd:tol=1e-4)
    SMOKE_ARGS=(--eval-samples 200)
fi
COMMON=(--optimizers "${OPTS[@]}" --seeds "${SEED_LIST[@]}" --threads 1 -q "${SMOKE_ARGS[@]}")
RING=(fastgame compare --data ring8 --steps "$RING_STEPS" --batch 256 --width 64 "${COMMON[@]}" --out "$OUT/ring8")
DIGITS=(fastgame compare --data digits --steps "$DIGITS_STEPS" --batch 64 --width 16 "${COMMON[@]}"
        --out "$OUT/digits")
start=$(date +%s)
echo "== 1/2: ${RING[*]}"
"${RING[@]}" > "$OUT/ring8.log" 2>&1
echo "   ring8 done after $(( $(date +%s) - start )) s"
echo "== 2/2: ${DIGITS[*]}"
"${DIGITS[@]}" > "$OUT/digits.log" 2>&1
total=$(( $(date +%s) - start ))
echo "   digits done after $total s"

MACHINE="$(uname -m), $(nproc --all) CPU threads (shared with other jobs), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //' || echo 'unknown CPU'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python - "$OUT" "$RESULT" "$total" "$MACHINE" "${RING[*]}" "${DIGITS[*]}" <<'EOF'
import csv, inspect, json, os, statistics, sys

import torch

import fastgame

START = inspect.signature(fastgame.ACGD).parameters["cg_start"].default  # what plain `acgd` runs
SCHEDULE = {"warm": "2 + 2k with the warm start", "zero": "1 + 2k from a zero start"}.get(START, START)

out, result, total, machine, ring_cmd, digits_cmd = sys.argv[1:7]
PRIMARY = {"ring8": ["modes_covered", "high_quality", "mode_jsd"], "digits": ["fcd", "classes_covered", "class_kl"]}
lines = ["# Solve tolerance vs training quality (CPU)", "",
         f"Machine: {machine}; torch {torch.__version__}, float32, `--threads 1`, `OMP_NUM_THREADS=1`. "
         f"Study wall-clock: {int(total) // 60} min {int(total) % 60} s (both parts, one after the other).", "",
         "Commands (from `bash bench/tolerance_quality.sh`):", "", "```", ring_cmd, digits_cmd, "```", "",
         "`acgd` is ACGD's default tolerance (tol 1e-12, the drop-in default); `tol` is relative and squared: "
         "CG stops when ||r||² < tol·||b||², so 1e-6 and 1e-4 are relative residuals of 1e-3 and 1e-2. "
         "Mean ± std over the seeds at the last step; passes = mixed double-backward (HVP) passes per step as "
         f"the optimizer counts them ({SCHEDULE}: ACGD's default cg_start={START!r}); wall-clock = seconds per run (training and "
         "its 20 evaluations), on a shared machine."]
for part, metrics in PRIMARY.items():
    with open(os.path.join(out, part, "compare.csv")) as f:
        rows = list(csv.DictReader(f))
    base = rows[0]
    lines += ["", f"## {part}", "", "| optimizer | " + " | ".join(f"{m} final" for m in metrics)
              + " | CG iters/step | HVP passes/step | passes vs default | wall-clock s |", "|---" * (len(metrics) + 5) + "|"]
    for r in rows:
        cut = float(r["hvp_passes_mean"]) / float(base["hvp_passes_mean"]) - 1
        lines.append(f"| {r['optimizer']} | " + " | ".join(
            f"{float(r[m + '_final_mean']):.3g} ± {float(r[m + '_final_std']):.2g}" for m in metrics)
            + f" | {float(r['cg_iters_mean']):.2f} | {float(r['hvp_passes_mean']):.2f} | {cut:+.0%} | "
            f"{float(r['wall_s_mean']):.0f} ± {float(r['wall_s_std']):.0f} |")
    # Per seed (same initialisation, data order and noise for every tolerance): the first metric.
    m = metrics[0] if part == "digits" else "high_quality"
    seeds = sorted({int(d.rsplit("seed", 1)[1]) for d in os.listdir(os.path.join(out, part))
                    if os.path.isdir(os.path.join(out, part, d)) and "-seed" in d})
    lines += ["", f"{m} at the last step, per seed (same initialisation, data order and noise for each tolerance):", "",
              "| optimizer | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for r in rows:
        folder = r["optimizer"].replace(":", "_")
        vals = []
        for s in seeds:
            with open(os.path.join(out, part, f"{folder}-seed{s}", "metrics.json")) as f:
                vals.append(json.load(f)[-1][m])
        lines.append(f"| {r['optimizer']} | " + " | ".join(f"{v:.3g}" for v in vals) + " |")
    with open(os.path.join(out, part, "compare.md")) as f:
        lines += ["", "`fastgame compare`'s own table (compare.md):", "", f.read().strip()]
with open(result, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"summary in {result}")
EOF
