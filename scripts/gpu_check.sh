#!/usr/bin/env bash
# The CUDA paths end to end, in about 5 minutes on one GPU, with one table at the end:
#   1. a bench with --backend auto (on CUDA: hf, bfloat16), the no-personalization and BM25 rows
#   2. `lampbox train ipa` for 20 steps in bf16 (LoRA on the default SmolLM2)
#   3. the same under torchrun with one process (DDP over NCCL; NCCL's log must show it)
#   4. only when vllm is importable: a vLLM server on the bench model's weights, benched through
#      the openai backend
# Data: the commit_subject stand-in (../shared/data/git-commits) when present, else the demo set.
# Peak GPU memory: nvidia-smi's memory.used sampled every 200 ms during each step (the whole
# device, CUDA context included). CI does not run this; run it whenever a GPU is at hand.
#
# Exit status: 0 all passed, 1 a step failed, 2 no CUDA GPU here (nothing was run).
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_LIMIT (bench
# questions, default 200), GPU_CHECK_KEEP=1 keeps the scratch folder.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
LIMIT="${GPU_CHECK_LIMIT:-200}"
STEP_TIMEOUT=150 # seconds per step; the whole check stays near 5 minutes when all goes well

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU here (torch missing or torch.cuda.is_available() is false): nothing to check" >&2
    exit 2
fi
GPU_NAME="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"

WORK="$(mktemp -d)"
export LAMPBOX_HOME="$WORK/home"
DB="$WORK/gpu.duckdb"
SAMPLER=""
cleanup() {
    [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null
    [[ -n "${VLLM_PID:-}" ]] && kill "$VLLM_PID" 2>/dev/null && wait "$VLLM_PID" 2>/dev/null
    if [[ "${GPU_CHECK_KEEP:-0}" == 1 ]]; then echo "gpu_check: scratch kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

lampbox() { "$PY" -m lampbox "$@"; }

# -- the table ---------------------------------------------------------------------------------
ROWS=()
FAILED=0
row() { # step, result, seconds, throughput, notes, peak MiB
    ROWS+=("$(printf '%-22s %-6s %8s %-16s %-9s %s' "$1" "$2" "$3" "$4" "$6" "$5")")
    [[ "$2" == FAIL ]] && FAILED=1
    return 0
}

# -- peak GPU memory: nvidia-smi sampled in the background during a step ------------------------
start_sampler() {
    : >"$WORK/memory.log"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 200 >"$WORK/memory.log" 2>/dev/null &
        SAMPLER=$!
    fi
}
stop_sampler() { # prints the peak in MiB, or n/a
    if [[ -n "$SAMPLER" ]]; then kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""; fi
    sort -n "$WORK/memory.log" 2>/dev/null | tail -1 | tr -d ' ' | grep . || echo n/a
}

now() { date +%s.%N; }
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
json_get() { # file, python expression over `d` (the parsed JSON)
    "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null
}

# -- data --------------------------------------------------------------------------------------
STANDIN="$ROOT/../shared/data/git-commits/commit_subject"
if [[ -d "$STANDIN" ]]; then
    TASK=commit_subject
    lampbox data import "$STANDIN" --db "$DB" >"$WORK/data.log" 2>&1 || { cat "$WORK/data.log" >&2; exit 1; }
else
    TASK=LaMP_7
    LIMIT=$((LIMIT < 16 ? LIMIT : 16))
    lampbox data demo --db "$DB" >"$WORK/data.log" 2>&1 || { cat "$WORK/data.log" >&2; exit 1; }
fi
echo "gpu_check: $GPU_NAME, task $TASK, scratch $WORK" >&2

# -- 1. bench, --backend auto ------------------------------------------------------------------
echo "gpu_check: bench (auto backend, $LIMIT questions)" >&2
start_sampler
t0=$(now)
timeout "$STEP_TIMEOUT" "$PY" -m lampbox bench --task "$TASK" --backend auto --retrievers none,bm25 --k 4 --limit "$LIMIT" \
    --no-baselines --batch-size 32 --db "$DB" --out "$WORK/preds" --json >"$WORK/bench.json" 2>"$WORK/bench.log"
status=$?
t1=$(now)
peak=$(stop_sampler)
auto=$(grep -o 'backend auto: [^(]*' "$WORK/bench.log" | head -1 | sed 's/backend auto: //; s/ *$//')
if [[ $status -eq 0 && "$auto" == "hf bfloat16" ]]; then
    rate=$(json_get "$WORK/bench.json" "f\"{sum(r['generated'] for r in d['rows']) / max(1e-9, sum(r['seconds'] for r in d['rows'])):.1f} q/s\"")
    row "bench hf (auto)" ok "$(elapsed "$t0" "$t1")" "$rate" "auto: $auto" "$peak"
else
    why="exit $status"; [[ $status -eq 0 ]] && why="auto chose '$auto', not hf bfloat16"
    row "bench hf (auto)" FAIL "$(elapsed "$t0" "$t1")" "-" "$why; see below" "$peak"
    tail -5 "$WORK/bench.log" >&2
fi

# -- 2. train ipa, 20 steps in bf16 -----------------------------------------------------------
TRAIN=(train ipa --task "$TASK" --retriever bm25 --k 4 --max-steps 20 --limit 80 --dev-limit 16 --precision bf16 --batch-size 4)
train_step() { # label, name, command...
    local label=$1 name=$2
    shift 2
    echo "gpu_check: $label" >&2
    start_sampler
    local t0 t1 status peak
    t0=$(now)
    timeout "$STEP_TIMEOUT" "$@" "${TRAIN[@]}" --name "$name" --db "$DB" --json >"$WORK/$name.json" 2>"$WORK/$name.log"
    status=$?
    t1=$(now)
    peak=$(stop_sampler)
    local steps
    steps=$(json_get "$WORK/$name.json" "d['steps']")
    if [[ $status -eq 0 && "$steps" == 20 ]]; then
        row "$label" ok "$(elapsed "$t0" "$t1")" "$(json_get "$WORK/$name.json" "f\"{d['tokens_per_second']:.0f} tok/s\"")" "${NOTE:-20 steps, bf16}" "$peak"
    else
        row "$label" FAIL "$(elapsed "$t0" "$t1")" "-" "exit $status, steps ${steps:-?}; see below" "$peak"
        tail -5 "$WORK/$name.log" >&2
    fi
}
train_step "train ipa bf16" gpu-check-ipa "$PY" -m lampbox

# -- 3. the same under torchrun, one process, NCCL ---------------------------------------------
export NCCL_DEBUG=INFO NCCL_DEBUG_FILE="$WORK/nccl.%h.%p.log"
NOTE="20 steps, bf16, torchrun"
train_step "train ipa torchrun x1" gpu-check-ddp "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m lampbox
unset NCCL_DEBUG NCCL_DEBUG_FILE NOTE
if ! cat "$WORK"/nccl.*.log 2>/dev/null | grep -q "NCCL INFO"; then
    row "torchrun NCCL" FAIL "-" "-" "no NCCL log: the process group did not use NCCL" "-"
fi

# -- 4. vLLM through the openai backend, only when vllm is importable ---------------------------
if "$PY" -c 'import vllm' 2>/dev/null; then
    echo "gpu_check: vLLM server and the openai backend" >&2
    FOLDER=$("$PY" -c '
from pathlib import Path
from lampbox.engine.generation.hf import converted_gguf_folder
from lampbox.models import resolve_model
model = resolve_model()
print(converted_gguf_folder(Path(model.location)) if model.format == "gguf" else model.location)')
    PORT=8765
    start_sampler
    t0=$(now)
    "$PY" -m vllm.entrypoints.openai.api_server --model "$FOLDER" --served-model-name gpu-check --port "$PORT" \
        --gpu-memory-utilization 0.3 --max-model-len 2048 >"$WORK/vllm.log" 2>&1 &
    VLLM_PID=$!
    up=0
    for _ in $(seq 1 120); do
        if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v1/models', timeout=2)" 2>/dev/null; then up=1; break; fi
        kill -0 "$VLLM_PID" 2>/dev/null || break
        sleep 1
    done
    if [[ $up == 1 ]]; then
        timeout "$STEP_TIMEOUT" "$PY" -m lampbox bench --task "$TASK" --backend openai --base-url "http://127.0.0.1:$PORT/v1" \
            --model gpu-check --retrievers none,bm25 --k 4 --limit "$LIMIT" --no-baselines --db "$DB" --out "$WORK/preds" \
            --json >"$WORK/vllm-bench.json" 2>"$WORK/vllm-bench.log"
        status=$?
    else
        status=99
    fi
    t1=$(now)
    kill "$VLLM_PID" 2>/dev/null
    wait "$VLLM_PID" 2>/dev/null
    VLLM_PID=""
    peak=$(stop_sampler)
    if [[ $status -eq 0 ]]; then
        rate=$(json_get "$WORK/vllm-bench.json" "f\"{sum(r['generated'] for r in d['rows']) / max(1e-9, sum(r['seconds'] for r in d['rows'])):.1f} q/s\"")
        row "bench vllm (openai)" ok "$(elapsed "$t0" "$t1")" "$rate" "server start included in s" "$peak"
    else
        why="exit $status"; [[ $status -eq 99 ]] && why="the vLLM server did not come up"
        row "bench vllm (openai)" FAIL "$(elapsed "$t0" "$t1")" "-" "$why; see below" "$peak"
        tail -5 "$WORK/vllm.log" "$WORK/vllm-bench.log" >&2 2>/dev/null
    fi
else
    row "bench vllm (openai)" skip "-" "-" "vllm is not importable" "-"
fi

# -- the table ---------------------------------------------------------------------------------
echo
echo "gpu_check on $GPU_NAME ($TASK, bench $LIMIT questions; peak = nvidia-smi memory.used, whole device)"
printf '%-22s %-6s %8s %-16s %-9s %s\n' step result seconds throughput "peak MiB" notes
for line in "${ROWS[@]}"; do echo "$line"; done
exit $FAILED
