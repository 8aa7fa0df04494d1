#!/usr/bin/env bash
# All GPU verification in one command, on a GPU machine (torch with CUDA, nvcc, triton):
# build fastgame with its C++/CUDA extensions, run the gpu-marked tests and the kernel tests,
# the kernel benchmark, the GPU benchmark suite (fastgame vs CGDs 0.4.5 vs Adam) and the
# measurements behind the defaults (bench/gpu_diag.py).
# Everything printed also goes to bench/results/gpu_check_<UTC time>.txt, next to the
# benchmarks' CSV and JSON; commit those files.
#
#   bash bench/gpu_check.sh                     # all stages
#   bash bench/gpu_check.sh build tests         # some: build tests kernels suite fastgamebn diag
#                                               #       eagergraph bn train tables conditional
#   bash bench/gpu_check.sh piecewise           # the piecewise-graph checks, ~8 min on an H200:
#                                               #   build, its tests, the step tables
#                                               #   (bench/step_tables.py), the trainer's paths,
#                                               #   the conditional-node probe
#   bash bench/gpu_check.sh all                 # the first GPU run, in under 10 minutes: build,
#                                               #   the doctor (python -m fastgame.doctor), the ops'
#                                               #   speed against the copy roof, the step tables of
#                                               #   the MLP GAN b512 and DCGAN-32 b64 (the trainer's
#                                               #   default, --eager, Adam, CGDs, bf16), the PINN rows
#                                               #   (python -m bench.pinn, where it exists)
#   bash bench/gpu_check.sh icr-cifar           # the ICR paper's CIFAR-10 setting (bench/icr_cifar.sh:
#                                               #   ACGD vs Adam + WGAN-GP, WGAN-GP's DCGAN, 500 steps,
#                                               #   CIFAR10_ROOT or a tiny fake set), after the build
#   bash bench/gpu_check.sh --smoke [STAGES]    # CI without a GPU: checks the stage names, then
#                                               #   says it needs CUDA (bench/smoke.sh runs each
#                                               #   stage's entry point in its own smoke mode)
#   bash bench/gpu_check.sh all --smoke         # CI: the all preset end to end on the CPU (each
#                                               #   stage's smoke mode, files in a temporary folder),
#                                               #   a 'skipped ... (it needs CUDA)' line per GPU-only part
#
# env: PYTHON (default python3), TORCH_CUDA_ARCH_LIST, SUITE_ARGS (extra `python -m bench` args),
# TESTS (the test files of the tests stage; default: the GPU, graph-replay, kernel, parity and sync tests),
# OUT (a folder the log and results are also copied to). A wheel folder .whl/ (e.g. CGDs, which
# the suite and the parity tests need, on a machine without network) is installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
smoke=0
args=()
for a in "$@"; do
    if [ "$a" = "--smoke" ]; then smoke=1; else args+=("$a"); fi
done
all_stages="build tests eagergraph bn train tables conditional kernels suite fastgamebn diag doctor pinn"
stages="${args[*]:-$all_stages}"
all_stages="$all_stages icr"   # icr (the ICR paper's CIFAR-10 setting) runs only when named
preset="$stages"
if [ "$stages" = "all" ]; then
    # Ordered so that what a bug report needs comes first, should the 10 minutes run out.
    stages="build doctor kernels tables pinn"
    TABLE_MODELS="${TABLE_MODELS:-mlp-b512 dcgan32-b64}"
    KERNEL_ARGS="${KERNEL_ARGS:---sizes 20 24 --dtypes float32}"
fi
if [ "$stages" = "piecewise" ]; then
    stages="build tests tables train conditional"
    TESTS="${TESTS:-tests/test_gpu_graphs.py tests/test_piecewise_graph.py tests/test_cg_replay.py tests/test_sync_free.py}"
fi
if [ "$stages" = "icr-cifar" ]; then stages="build icr"; fi   # the ICR paper's CIFAR-10 preset
for s in $stages; do
    [[ " $all_stages " == *" $s "* ]] || { echo "bench/gpu_check.sh: unknown stage '$s'; choose from: $all_stages" >&2; exit 2; }
done
if [ "$smoke" = 1 ] && [ "$preset" != all ]; then
    echo "bench/gpu_check.sh: needs CUDA, skipped (stages ok: $stages)"
    exit 0
fi
want() { [[ " $stages " == *" $1 "* ]]; }
# gpu_only STAGE: in the smoke run, say it is skipped (and return false); else true.
gpu_only() { if [ "$smoke" = 1 ]; then echo "## $1: skipped in the smoke run on the CPU (it needs CUDA)"; return 1; fi; }
device="$("$PY" -c 'import re, torch; print(re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-") if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo unknown)"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out=bench/results
if [ "$smoke" = 1 ]; then
    out="$(mktemp -d)"  # nothing is written into the checkout
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
log="$out/gpu_check_${stamp}_$device.txt"
status=0
export PYTHONUNBUFFERED=1

{
# The device copy's git metadata can lag its working tree: say so when they differ.
echo "# fastgame gpu_check $stamp on $device  (git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')), stages: $stages"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvcc --version | tail -n 2 || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
"$PY" -c "import triton; print('triton', triton.__version__)" || echo "triton: not installed"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile .whl/*.whl && echo "installed: $(ls .whl)"
fi

if want build && gpu_only build; then
    echo "## build"
    export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}"
    # Compile for this GPU only (an H100 is 9.0): one architecture keeps the build short.
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    rm -f fastgame/_C*.so fastgame/_cuda*.so  # stale in-tree builds would shadow the fresh install
    t0=$(date +%s)
    "$PY" -m pip install --no-build-isolation --no-deps . 2>&1 | grep -E "fastgame:|Successfully|ERROR|error:|warn" || true
    echo "build: $(( $(date +%s) - t0 )) s, CUDA_HOME=$CUDA_HOME, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
fi
# From the checkout, `import fastgame` takes the source tree and the installed build's
# extensions (fastgame/ops/_ext.py finds them in site-packages).
# (the path relative to the checkout: the log is committed)
"$PY" -c "import fastgame, os; print(os.path.relpath(fastgame.__file__)); [print(' ', b.name, b) for b in fastgame.backends().values()]"
[ "$smoke" = 1 ] || "$PY" -c "
import fastgame, sys
b = fastgame.backends()
missing = [k for k in ('cpp', 'cuda', 'triton') if not b[k].available]
sys.exit('backends unavailable: %s' % missing if missing else 0)" || status=1

if want doctor; then
    echo "## the doctor (python -m fastgame.doctor): every fused op against its twin, the GAN's step paths against eager"
    # shellcheck disable=SC2046
    "$PY" -m fastgame.doctor $([ "$smoke" = 1 ] && echo --device cpu) --json "$out/doctor_${stamp}_$device.json" || status=1
fi

if want tests; then
    echo "## gpu tests, kernel tests (all backends) and parity with CGDs"
    # shellcheck disable=SC2086
    FASTGAME_REQUIRE_CPP=1 "$PY" -m pytest -q -rs -s -p no:cacheprovider \
        ${TESTS:-tests/test_gpu_graphs.py tests/test_cg_replay.py tests/test_ops.py tests/test_parity.py tests/test_sync_free.py} \
        || status=1
fi

if want eagergraph; then
    echo "## the unchanged eager loop: CGDs vs fastgame on a loss / a closure (graph_cg) / whole-step graph"
    "$PY" bench/eager_graph.py --json "$out/eager_graph_$stamp.json" || status=1
fi
if want bn; then
    echo "## BatchNorm in mixed-HVP passes: native vs fastgame.nn (python bench/batchnorm_hvp.py)"
    "$PY" bench/batchnorm_hvp.py || status=1
fi
if want train; then
    echo "## the trainer on CUDA: default (piecewise graphs, exact CG), --eager (closure, graph_cg), --graphed"
    tmp="$(mktemp -d)"
    for extra in "" "--eager" "--graphed --max-iter 24"; do
        echo "# fastgame train ${extra:-(default)}"
        t0=$(date +%s%N)
        # shellcheck disable=SC2086
        "$PY" -m fastgame train --data digits --steps 150 --batch 64 --width 16 --device cuda --eval-every 150 -q \
            $extra --out "$tmp/run$RANDOM" 2>&1 | tail -n 4 || status=1
        echo "wall: $(( ($(date +%s%N) - t0) / 1000000 )) ms (150 steps, with start-up and one evaluation)"
    done
    rm -rf "$tmp"
fi

if want kernels; then
    echo "## kernel benchmark: the ops against the copy roof"
    if [ "$smoke" = 1 ]; then
        "$PY" bench/kernels.py --smoke --json "$out/kernels_$stamp.json" || status=1
    else
        # shellcheck disable=SC2086
        "$PY" bench/kernels.py ${KERNEL_ARGS:---sizes 20 24 --dtypes float32 float64} --graphs \
            --csv "$out/kernels_gpu_${stamp}_$device.csv" --json "$out/kernels_gpu_${stamp}_$device.json" || status=1
    fi
    if [ "$preset" != all ]; then
        echo "## CPU kernel benchmark (C++ ops, 2 threads)"
        "$PY" bench/kernels.py --device cpu --sizes 20 --threads 2 || status=1
    fi
fi

if want tables; then
    echo "## step tables: trainer default vs --eager vs Adam vs CGDs, drop-in rows, bf16 (python bench/step_tables.py)"
    if [ "$smoke" = 1 ]; then  # the smoke models are other labels: all of them
        "$PY" bench/step_tables.py --smoke --json "$out/step_tables_$stamp.json" || status=1
    else
        # shellcheck disable=SC2086
        "$PY" bench/step_tables.py ${TABLE_MODELS:+--models $TABLE_MODELS} \
            --json "$out/step_tables_${stamp}_$device.json" || status=1
    fi
fi
if want pinn; then
    if [ -f bench/pinn.py ]; then
        echo "## the PINN rows (python -m bench.pinn ${PINN_ARGS:-})"
        # shellcheck disable=SC2046,SC2086
        "$PY" -m bench.pinn $([ "$smoke" = 1 ] && echo --smoke) ${PINN_ARGS:-} --out "$out" || status=1
    else
        echo "## pinn: bench/pinn.py is not in this checkout, skipped"
    fi
fi
if want conditional; then
    echo "## CUDA-graph IF nodes vs the host loop (python bench/gpu_diag.py --only-conditional)"
    "$PY" bench/gpu_diag.py --only-conditional || status=1
fi

if want suite; then
    echo "## benchmark suite (python -m bench --suite gpu ${SUITE_ARGS:-})"
    # shellcheck disable=SC2086
    "$PY" -m bench --suite gpu --out "$out" --tag "$stamp" ${SUITE_ARGS:-} || status=1
fi
if want fastgamebn; then
    echo "## benchmark suite, conv models with fastgame.nn.BatchNorm (python -m bench --batchnorm fastgame)"
    "$PY" -m bench --suite gpu --batchnorm fastgame --models dcgan32 dcgan64 \
        --optimizers cgds fastgame fastgame-graphed --out "$out" --tag "${stamp}_fastgamebn" ${SUITE_ARGS:-} || status=1
fi
if want diag; then
    echo "## diagnostics (python bench/gpu_diag.py)"
    "$PY" bench/gpu_diag.py || status=1
    echo "## BatchNorm in mixed-HVP passes: native vs fastgame.nn (python bench/batchnorm_hvp.py)"
    "$PY" bench/batchnorm_hvp.py || status=1
fi
if want icr; then
    echo "## the ICR paper's CIFAR-10 setting: ACGD vs Adam + WGAN-GP (bash bench/icr_cifar.sh)"
    bash bench/icr_cifar.sh "$(mktemp -d)/icr-cifar" || status=1
fi
echo "# gpu_check exit status $status"
exit $status
} 2>&1 | tee "$log"
rc="${PIPESTATUS[0]}"
if [ -n "${OUT:-}" ]; then cp "$log" "$out"/*"$stamp"* "$OUT"/ 2>/dev/null || true; fi
exit "$rc"
