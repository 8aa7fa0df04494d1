#!/usr/bin/env bash
# Every bench entry point and example in its smoke mode, on a CPU, in well under 3 minutes:
# each must parse its arguments, import everything and run its code path on tiny models
# (GPU-only ones stop after that with a 'needs CUDA, skipped' line). A line as each entry point
# starts and one as it finishes (streamed, in the order they finish); on a failure its output follows. Nothing is written into the checkout (files go to a
# temporary folder; a change under bench/results/ or examples/ fails the run).
#
#   bash bench/smoke.sh                 # in the environment with fastgame's requirements (CI: after .ci/setup.sh)
#
# env: PYTHON (default python), SMOKE_JOBS (entry points at once, default 2). The checkout's fastgame is the one run (PYTHONPATH), with the
# compiled ops of its build or install.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
jobs="${SMOKE_JOBS:-2}"  # entry points run at once (each one thread): the 2 cores of CI
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
n=0
tracked() { git status --porcelain -- bench/results examples 2>/dev/null; }
before="$(tracked)"

# check NAME COMMAND...: start it in the background (at most $jobs at a time; each is one
# thread), its output, seconds and exit status under $tmp/<n>; one line as it starts.
names=()
reported=()
check() {
    local i=$n
    names[$i]="$1"
    shift
    n=$((n + 1))
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; report; done
    printf 'start %s\n' "${names[$i]}"
    ( t0=$(date +%s); "$@" > "$tmp/$i.log" 2>&1; rc=$?; echo $(( $(date +%s) - t0 )) > "$tmp/$i.s"
      echo $rc > "$tmp/$i.rc" ) &
}

# report: one line for each entry point that finished since the last report, as it finishes; a
# failure's output follows its line.
report() {
    local i rc note
    for ((i = 0; i < n; i++)); do
        [ -n "${reported[$i]:-}" ] || [ ! -f "$tmp/$i.rc" ] && continue
        reported[$i]=1
        rc=$(cat "$tmp/$i.rc")
        note=""
        grep -q "needs CUDA, skipped" "$tmp/$i.log" && note=" (needs CUDA: arguments and imports checked)"
        grep -q "pytest-benchmark not installed" "$tmp/$i.log" && note=" (pytest-benchmark not installed: skipped)"
        if [ "$rc" -eq 0 ]; then
            printf 'ok    %-66s %3d s%s\n' "${names[$i]}" "$(cat "$tmp/$i.s")" "$note"
        else
            printf 'FAIL  %-66s %3d s (exit %d)\n' "${names[$i]}" "$(cat "$tmp/$i.s")" "$rc"
            tail -n 30 "$tmp/$i.log" | sed 's/^/      | /'
            failed=$((failed + 1))
        fi
    done
}

# The suites share one code path: quick runs it whole (and writes its files); the other modes
# run their distinguishing part without files.
check "python -m bench --suite quick" "$PY" -m bench --suite quick --smoke --out "$tmp/bench"
check "python -m bench --suite quick --algo BCGD --models mlp" \
    "$PY" -m bench --suite quick --algo BCGD --models mlp --smoke --out ""
check "python -m bench --suite cpu --models mlp" "$PY" -m bench --suite cpu --models mlp --smoke --out ""
check "python -m bench --suite tiny --batchnorm fastgame --models dcgan32" \
    "$PY" -m bench --suite tiny --batchnorm fastgame --models dcgan32 --smoke --out ""
check "python -m bench --suite gpu" "$PY" -m bench --suite gpu --smoke
check "python -m bench.solve_start" "$PY" -m bench.solve_start --smoke
check "python -m bench.pcgd" "$PY" -m bench.pcgd --smoke --out "$tmp/pcgd"
check "python -m bench.pinn" "$PY" -m bench.pinn --smoke --out "$tmp/pinn"
check "python bench/kernels.py" "$PY" bench/kernels.py --smoke --json "$tmp/kernels.json"
check "python bench/batchnorm_hvp.py" "$PY" bench/batchnorm_hvp.py --smoke
check "python bench/gacgd_cpu.py --sweep" "$PY" bench/gacgd_cpu.py --smoke --sweep --json "$tmp/gacgd.json"
check "python bench/eager_graph.py" "$PY" bench/eager_graph.py --smoke --json "$tmp/eager_graph.json"
check "python bench/step_tables.py" "$PY" bench/step_tables.py --smoke --json "$tmp/step_tables.json"
check "python bench/gpu_diag.py" "$PY" bench/gpu_diag.py --smoke
check "bash bench/gpu_check.sh (all stages, and the piecewise preset)" bash -c "bash bench/gpu_check.sh --smoke && bash bench/gpu_check.sh --smoke piecewise"
check "bash bench/gpu_check.sh all --smoke (doctor, kernels, step tables, pinn on the CPU)" \
    env PYTHON="$PY" bash bench/gpu_check.sh all --smoke
check "bash bench/gpu_check.sh icr-cifar (its CPU smoke: bench/icr_cifar.sh on a fake CIFAR-10)" \
    bash -c "bash bench/gpu_check.sh --smoke icr-cifar && bash bench/icr_cifar.sh --smoke"
check "python -m bench.fake_cifar10" "$PY" -m bench.fake_cifar10 --smoke
check "bash bench/tolerance_quality.sh" bash bench/tolerance_quality.sh --smoke
check "bash bench/penalty_sweep.sh" bash bench/penalty_sweep.sh --smoke
check "python -m bench.mnist_sample" "$PY" -m bench.mnist_sample --smoke
check "bash bench/image_study.sh" bash bench/image_study.sh --smoke
# bench/demo.sh sets a machine up from nothing, then runs the first two modes above: parse it only.
check "bash bench/demo.sh (syntax; its modes run above)" bash -n bench/demo.sh
if "$PY" -c "import pytest_benchmark" 2>/dev/null; then
    check "pytest bench/test_benchmarks.py" "$PY" -m pytest -q -p no:cacheprovider bench/test_benchmarks.py \
        --benchmark-disable -k "fastgame-cpp or adam"
else
    check "pytest bench/test_benchmarks.py" echo "pytest-benchmark not installed"
fi
# The main job at a few steps, one seed; it runs examples/demo_summary.py (its table and verdicts).
check "bash examples/demo.sh (with demo_summary.py)" env FASTGAME_DEMO_SMOKE=1 bash examples/demo.sh "$tmp/demo"
for example in examples/*.py; do
    [ "$example" = examples/demo_summary.py ] && continue  # run by the demo above, on its run folders
    check "python $example" "$PY" "$example" --smoke
done
while [ -n "$(jobs -rp)" ]; do wait -n; report; done
wait
report

if [ "$(tracked)" != "$before" ]; then
    echo "FAIL  the smoke runs changed tracked files under bench/results/ or examples/:"
    diff <(echo "$before") <(tracked) | sed 's/^/      | /'
    failed=$((failed + 1))
fi
echo "bench/smoke.sh: $((n - failed)) of $n entry points ok"
[ $failed -eq 0 ]
