#!/usr/bin/env bash
# Create .venv and install lampbox with every backend and the dev tools (idempotent).
# On a CPU-only machine torch is pinned to the CPU wheel first, so pip does not pull a CUDA build;
# llama-cpp-python is built from source with runtime CPU dispatch (below).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${LAMPBOX_VENV:-.venv}"
stamp="$VENV/.lampbox-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "setup: installing torch (CUDA build)" >&2
        "$VENV/bin/python" -m pip install --quiet "torch>=2.1"
    else
        echo "setup: installing torch (CPU build)" >&2
        "$VENV/bin/python" -m pip install --quiet "torch==2.13.0" \
            || "$VENV/bin/python" -m pip install --quiet "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
# llama.cpp's CPU code is compiled once per x86 instruction-set level (GGML_CPU_ALL_VARIANTS, as
# loadable modules: GGML_BACKEND_DL) and the best level this CPU runs is picked when a model loads
# (lampbox's llamacpp backend loads it: llama-cpp-python alone does not look where the wheel puts
# them). CI runs on a machine of unknown CPU, so -march=native (GGML_NATIVE=ON) is out, and
# GGML_NATIVE=OFF alone compiles for AVX2 only: no AVX512/VNNI on CPUs that have them, no start
# on CPUs without AVX2. Measured on a Zen 4 CPU: as fast as the native build, 1.3-1.4x the AVX2
# build's prompt processing on Q4_0/Q8_0 models, equal on the default Q4_1 model (no AVX512 code
# for Q4_1): docs/backends.md, "llama.cpp build".
# An explicit CMAKE_ARGS replaces this choice.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
echo "setup: installing lampbox and its dependencies (llama-cpp-python builds from source the first time: 10-30 min)" >&2
CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}" "$VENV/bin/python" -m pip install --quiet -e ".[all,dev]"
# A llama-cpp-python already in the venv, or a wheel pip cached from an earlier build, may be a
# build without the dispatch (pip's cache ignores CMAKE_ARGS): rebuild it once with ours.
is_dispatch_build="from lampbox.engine.generation.llamacpp import cpu_backend_folders as f
raise SystemExit(not any(any(d.glob('libggml-cpu-*.so')) for d in f()))"
if [ -z "${CMAKE_ARGS:-}" ] && ! "$VENV/bin/python" -c "$is_dispatch_build"; then
    version="$("$VENV/bin/python" -c "import llama_cpp; print(llama_cpp.__version__)")"
    echo "setup: rebuilding llama-cpp-python $version with runtime CPU dispatch" >&2
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$VENV/bin/python" -m pip install --quiet --no-deps --no-cache-dir \
        --force-reinstall --no-binary llama-cpp-python "llama-cpp-python==$version"
    if ! "$VENV/bin/python" -c "$is_dispatch_build"; then
        echo "setup: llama-cpp-python $version built without its libggml-cpu-*.so modules" >&2
        exit 1
    fi
fi
echo "$want" > "$stamp"
