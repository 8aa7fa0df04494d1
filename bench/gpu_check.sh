#!/usr/bin/env bash
# One command on a GPU machine (torch with CUDA, nvcc, triton installed): build fastgame with
# its C++/CUDA extensions, run the gpu-marked tests, run the kernel benchmark. Everything
# printed also goes to bench/results/gpu_check_<UTC time>.txt (+ the benchmark's CSV and JSON);
# commit those files.
#
#   bash bench/gpu_check.sh            # env: PYTHON (default python), TORCH_CUDA_ARCH_LIST
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out=bench/results
mkdir -p "$out"
log="$out/gpu_check_$stamp.txt"
status=0

{
echo "# fastgame gpu_check $stamp  (git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvcc --version | tail -n 2 || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
"$PY" -c "import triton; print('triton', triton.__version__)" || echo "triton: not installed"

echo "## build"
export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}"
# Compile for this GPU only (an H100 is 9.0): one architecture keeps the build short.
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
rm -f fastgame/_C*.so fastgame/_cuda*.so  # stale in-tree builds would shadow the fresh install
t0=$(date +%s)
"$PY" -m pip install --no-build-isolation --no-deps . 2>&1 | grep -E "fastgame:|Successfully|ERROR|error:" || true
echo "build: $(( $(date +%s) - t0 )) s, CUDA_HOME=$CUDA_HOME, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
"$PY" -c "import fastgame, json; print(json.dumps(fastgame.backends(), indent=1))"
"$PY" -c "
import fastgame, sys
b = fastgame.backends()
missing = [k for k in ('cpp', 'cuda', 'triton') if not b[k].startswith('available')]
sys.exit('backends unavailable: %s' % missing if missing else 0)" || status=1

echo "## gpu tests"
FASTGAME_REQUIRE_CPP=1 "$PY" -m pytest -m gpu -q -rs tests/ || status=1
echo "## kernel tests (all backends, this machine)"
FASTGAME_REQUIRE_CPP=1 "$PY" -m pytest -q tests/test_ops.py || status=1

echo "## kernel benchmark"
"$PY" bench/kernels.py --sizes 20 24 --dtypes float32 float64 \
    --csv "$out/kernels_gpu_$stamp.csv" --json "$out/kernels_gpu_$stamp.json" || status=1
echo "## CPU kernel benchmark (C++ ops, 2 threads)"
"$PY" bench/kernels.py --device cpu --sizes 20 --threads 2 || status=1
echo "# gpu_check exit status $status"
exit $status
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
