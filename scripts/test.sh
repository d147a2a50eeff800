#!/usr/bin/env bash
# Set up (if needed), lint, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${LAMPBOX_VENV:-.venv}"
echo "test: ruff check" >&2
"$VENV/bin/ruff" check lampbox tests benchmarks
echo "test: pytest" >&2
"$VENV/bin/python" -m pytest "$@"
