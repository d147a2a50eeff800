#!/usr/bin/env bash
# The main job on a fresh machine: set up, load the built-in demo data (no network needed),
# then benchmark personalization on it with the real packaged model (SmolLM2-135M; the backend
# `--backend auto` picks for this machine, printed in one line).
# Extra arguments go to `lampbox bench` (e.g. --limit 4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${LAMPBOX_VENV:-.venv}"
"$VENV/bin/lampbox" data demo
"$VENV/bin/lampbox" data list
"$VENV/bin/lampbox" bench --task LaMP_7 --retrievers none,bm25,dense,recency --k 1,4 "$@"
cat >&2 <<'TIP'

Next: explore the same store in the TUI with `.venv/bin/lampbox`, run on the stand-in data with
`.venv/bin/lampbox data import ../shared/data/git-commits/commit_subject` and
`.venv/bin/lampbox bench --task commit_subject --split dev --limit 200 --retrievers none,bm25,dense,recency --k 1,4`,
or fetch real LaMP data with `.venv/bin/lampbox data fetch LaMP_7`.
TIP
