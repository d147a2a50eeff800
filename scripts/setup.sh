#!/usr/bin/env bash
# Create .venv and install lampbox with every backend and the dev tools (idempotent).
# On a CPU-only machine torch is pinned to the CPU wheel first, so pip does not pull a CUDA build;
# llama-cpp-python is built from source with a portable (non -march=native) build.
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
echo "setup: installing lampbox and its dependencies (llama-cpp-python builds from source the first time: ~6 min)" >&2
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$VENV/bin/python" -m pip install --quiet -e ".[all,dev]"
echo "$want" > "$stamp"
