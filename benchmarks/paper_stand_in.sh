#!/usr/bin/env bash
# The ROPG, OPPU and RSPG quality tables (issues 26, 25, 27) on the offline stand-ins, as one
# bounded, resumable pipeline: docs/reproduce.md's commands with --limit/--users/--ctx-size/epochs
# set by the variables below. Results: docs/results/stand-in-methods.md.
#
#     export LAMPBOX_HOME=/tmp/quality/home LAMPBOX_DB=/tmp/quality/home/lampbox.duckdb
#     nohup benchmarks/paper_stand_in.sh > /tmp/quality/pipeline.log 2>&1 &
#     STAGES="subject_ropg_bench subject_oppu" benchmarks/paper_stand_in.sh   # some stages only
#
# Re-runnable: a trained model that exists is not trained again, a bench that finished is served
# from the store (an interrupted one resumes), `train oppu` skips the users it has. Each stage's
# output goes to $OUT/<stage>.log, one line per command (wall time, load average, max RSS) to
# $OUT/timings.tsv, and every bench key to $OUT/keys.tsv; `lampbox report` tables to $OUT/*.md.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LAMPBOX_HOME:?set LAMPBOX_HOME to a private lampbox home}"
: "${LAMPBOX_DB:?set LAMPBOX_DB to a private store}"
PY="${LAMPBOX_PYTHON:-.venv/bin/python}"
OUT="${OUT:-/tmp/quality}"
mkdir -p "$OUT"
# one torch thread per process: on a shared, oversubscribed CPU, 2 threads spent most of their
# CPU time waiting for each other (a LoRA step cost about 5x the core-seconds it costs on an idle CPU)
export LAMPBOX_THREADS="${LAMPBOX_THREADS:-1}"
export LAMPBOX_LOCK_WAIT="${LAMPBOX_LOCK_WAIT:-900}"  # stages may run beside each other on one store

# bounds (the CPU budget: a 2-core CPU shared with other jobs)
PRECISION="${PRECISION:-bf16}"            # training precision (bf16: the CPU has AMX/AVX512-BF16)
SUBJ_MODEL="${SUBJ_MODEL:-commit_subject-lora-k4}"
SUBJ_TRAIN_LIMIT="${SUBJ_TRAIN_LIMIT:-120}"    # docs/reproduce.md: 300
SUBJ_DEV_LIMIT="${SUBJ_DEV_LIMIT:-20}"        # docs/reproduce.md: 50
# the generator of the RSPG pool with a fine-tuned model and of ROPG from it learns from the first
# SUBJ_HELD_OUT training questions only (AREA_HELD_OUT: the same on commit_area)
SUBJ_HELD_OUT="${SUBJ_HELD_OUT:-300}"
SUBJ_FT_MODEL="subject-lora-$SUBJ_HELD_OUT"
ROPG_LIMIT="${ROPG_LIMIT:-24}"           # train questions with feedback
ROPG_CTX="${ROPG_CTX:-4}"                 # candidates per question (paper: 20)
ROPG_DEV="${ROPG_DEV:-4}"                 # dev questions with feedback (checkpoint choice)
ROPG_FEEDBACK="${ROPG_FEEDBACK:-likelihood}"   # the paper: generate (one generation per pair)
ROPG_EPOCHS="${ROPG_EPOCHS:-2}"           # the paper: 10
HF_DTYPE="${HF_DTYPE:-}"                  # the generator's dtype in the ropg stages, subjbase and RSPG benches (empty: hf's default)
BENCH_LIMIT="${BENCH_LIMIT:-24}"         # dev questions of the ROPG table and RSPG's dev bench
OPPU_USERS="${OPPU_USERS:-6}"            # first N dev users (3 questions each)
OPPU_MIN_PROFILE="${OPPU_MIN_PROFILE:-0}"  # the issue's users: 10 (>= 10 profile items); 0: every user
RSPG_TRAIN_LIMIT="${RSPG_TRAIN_LIMIT:-16}"
RSPG_TEST_LIMIT="${RSPG_TEST_LIMIT:-24}"
# the RSPG pool: the fine-tuned model with the untrained retrievers (adding the ropg: ones costs
# two more generations per question on each split: RSPG_POOL="$SUBJ_POOL")
RSPG_POOL="${RSPG_POOL:-none,bm25,recency,dense}"
RSPG_EPOCHS="${RSPG_EPOCHS:-5}"           # paper: 20
AREA_MODEL="${AREA_MODEL:-commit_area-lora-k4}"
AREA_TRAIN_LIMIT="${AREA_TRAIN_LIMIT:-200}"
AREA_EPOCHS="${AREA_EPOCHS:-2}"
AREA_RSPG_POOL="${AREA_RSPG_POOL:-none,bm25,recency,dense}"
AREA_HELD_OUT="${AREA_HELD_OUT:-200}"
STAGES="${STAGES:-data subject_ipa subject_ropg subject_ropg_bench subject_oppu subject_rspg area_ipa area_ropg area_ropg_bench}"

lampbox() { nice -n "${NICE:-5}" "$PY" -m lampbox "$@"; }

# step NAME CMD...: run one command, its output to $OUT/NAME.log, its time and load to timings.tsv
step() {
    local name=$1
    shift
    local start load
    start=$(date +%s)
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== $(date +%T) $name: lampbox $*"
    # GNU time's maximum resident set size of the whole command (issue 24's memory target)
    if /usr/bin/time -f '%M' -o "$OUT/$name.rss" nice -n "${NICE:-5}" "$PY" -m lampbox "$@" > "$OUT/$name.log" 2>&1; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(($(date +%s) - start))" "$load" \
            "$(cut -d' ' -f1-3 /proc/loadavg)" "$(($(tail -n 1 "$OUT/$name.rss") / 1024)) MB" "lampbox $*" >> "$OUT/timings.tsv"
        tail -n 3 "$OUT/$name.log"
    else
        echo "!! $name failed; see $OUT/$name.log"
        tail -n 5 "$OUT/$name.log"
        return 1
    fi
}

# bench NAME ARGS...: a bench; its key to keys.tsv and its report (paired tests) to NAME.md
bench() {
    local name=$1
    shift
    step "$name" bench "$@"
    local key
    key=$(grep -o 'bench [0-9a-f]* stored in' "$OUT/$name.log" | tail -n 1 | cut -d' ' -f2)
    printf '%s\t%s\n' "$name" "$key" >> "$OUT/keys.tsv"
    lampbox report "$key" --format md --no-plot ${REPORT_REF:+--reference "$REPORT_REF"} > "$OUT/$name.md"
}

key_of() { awk -F'\t' -v n="$1" '$1 == n { k = $2 } END { print k }' "$OUT/keys.tsv"; }
have_model() { lampbox models show "$1" > /dev/null 2>&1; }
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

{
    echo "CPU flags: $(grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "cores: $(nproc); start $(date)"
} | tee -a "$OUT/env.txt"

if has_stage data; then
    step data_subject data import ../shared/data/git-commits/commit_subject
    step data_area data import ../shared/data/git-commits/commit_area
fi

# 1. the fine-tuned generator (docs/reproduce.md; bf16 instead of fp32 on this CPU)
if has_stage subject_ipa && ! have_model "$SUBJ_MODEL"; then
    step subject_ipa train ipa --task commit_subject --retriever bm25 --k 4 --limit "$SUBJ_TRAIN_LIMIT" --epochs 1 \
        --dev-limit "$SUBJ_DEV_LIMIT" --precision "$PRECISION" --name "$SUBJ_MODEL"
fi

# 2. ROPG: feedback from the fine-tuned model (computed once, shared by KD and RL), two retrievers
# ropg PREFIX TASK MODEL: the KD and RL retrievers PREFIX-ropg-kd/-rl from MODEL's feedback
ropg() {
    local prefix=$1 task=$2 model=$3 method
    for method in ${ROPG_METHODS:-kd rl}; do  # ROPG_METHODS=rl: a second process beside KD
        have_model "$prefix-ropg-$method" || step "${prefix}_ropg_$method" train ropg --task "$task" \
            --method "$method" --backend hf --model "$model" --limit "$ROPG_LIMIT" --ctx-size "$ROPG_CTX" \
            --feedback "$ROPG_FEEDBACK" --dev-limit "$ROPG_DEV" --epochs "$ROPG_EPOCHS" --name "$prefix-ropg-$method" ${HF_DTYPE:+--dtype "$HF_DTYPE"} \
            ${ROPG_SKIP:+--skip "$ROPG_SKIP"}
    done
}
has_stage subject_ropg && ropg subject commit_subject "$SUBJ_MODEL"
SUBJ_POOL="none,bm25,recency,dense,ropg:subject-ropg-kd,ropg:subject-ropg-rl"
# the pool's untrained rows alone (the full bench below reuses their stored runs), so that they
# can run in another process while the retrievers train: STAGES=subject_ropg_rows
if has_stage subject_ropg_rows; then
    bench subject_ropg_rows --task commit_subject --split dev --backend hf --model "$SUBJ_MODEL" --k 4 \
        --retrievers none,bm25,recency,dense --limit "$BENCH_LIMIT"
fi
if has_stage subject_ropg_bench; then
    bench subject_ropg_dev --task commit_subject --split dev --backend hf --model "$SUBJ_MODEL" --k 4 \
        --retrievers "$SUBJ_POOL" --limit "$BENCH_LIMIT"
fi

# ROPG with the base model as the generator (the paper's setting: a frozen LLM's feedback,
# ROPG_FEEDBACK=generate for the paper's generate-and-score); the untrained rows can run in another
# process while the retrievers train (subject_ropg_base_rows), the full bench reuses them
SUBJ_BASE_POOL="none,bm25,recency,dense"
if has_stage subject_ropg_base_rows; then
    bench subjbase_ropg_rows --task commit_subject --split dev --backend hf --model smollm2-135m-instruct \
        --k 4 --retrievers "$SUBJ_BASE_POOL" --limit "$BENCH_LIMIT" ${HF_DTYPE:+--dtype "$HF_DTYPE"}
fi
has_stage subject_ropg_base && ropg subjbase commit_subject smollm2-135m-instruct
if has_stage subject_ropg_base_bench; then
    bench subjbase_ropg_dev --task commit_subject --split dev --backend hf --model smollm2-135m-instruct \
        --k 4 --retrievers "$SUBJ_BASE_POOL,ropg:subjbase-ropg-kd,ropg:subjbase-ropg-rl" --limit "$BENCH_LIMIT" ${HF_DTYPE:+--dtype "$HF_DTYPE"}
fi

# ROPG from the fine-tuned generator of stage subject_rspg_ft ($SUBJ_FT_MODEL, trained there): its
# feedback from the training questions after the ones it learnt from (--skip)
has_stage subject_ropg_ft && ROPG_SKIP=$SUBJ_HELD_OUT ropg subjectft commit_subject "$SUBJ_FT_MODEL"
if has_stage subject_ropg_ft_bench; then
    bench subjectft_ropg_dev --task commit_subject --split dev --backend hf --model "$SUBJ_FT_MODEL" \
        --k 4 --retrievers "$SUBJ_BASE_POOL,ropg:subjectft-ropg-kd,ropg:subjectft-ropg-rl" --limit "$BENCH_LIMIT" ${HF_DTYPE:+--dtype "$HF_DTYPE"}
fi

# 3. OPPU on the fine-tuned model as the task adapter: oppu PREFIX TASK TASK_ADAPTER USERS (0: all)
oppu() {
    local prefix=$1 task=$2 adapter=$3 users=$4
    local limit=() decode=""
    ((users > 0)) && limit=(--users "$users")
    local bench_limit=("${limit[@]}")
    ((OPPU_MIN_PROFILE > 0)) && bench_limit+=(--min-profile "$OPPU_MIN_PROFILE")
    # label decoding for the classification stand-in: per configuration (bench refuses the grid flag with --config)
    [[ $task == commit_area ]] && decode=" decode=labels"
    step "${prefix}_oppu_train" train oppu --task "$task" --task-adapter "$adapter" "${limit[@]}" --name "$prefix-oppu"
    REPORT_REF=task-adapter bench "${prefix}_oppu_dev" --task "$task" --split dev "${bench_limit[@]}" \
        --config "label=base method=ipa model=smollm2-135m-instruct backend=hf$decode" \
        --config "label=base+RAG method=ipa model=smollm2-135m-instruct backend=hf retriever=bm25 k=4$decode" \
        --config "label=task-adapter method=ipa model=$adapter backend=hf$decode" \
        --config "label=task-adapter+RAG method=ipa model=$adapter backend=hf retriever=bm25 k=4$decode" \
        --config "label=OPPU method=oppu model=$prefix-oppu backend=hf$decode" \
        --config "label=OPPU+RAG method=oppu model=$prefix-oppu backend=hf retriever=bm25 k=4$decode" \
        --reference task-adapter
}
has_stage subject_oppu && oppu subject commit_subject "$SUBJ_MODEL" "$OPPU_USERS"

# 4. RSPG (the pool without the model-free rows: the paper's pool):
#    rspg PREFIX TASK MODEL POOL TRAIN_LIMIT DEV_LIMIT TEST_LIMIT (0: all questions of the split)
rspg() {
    local prefix=$1 task=$2 model=$3 pool=$4 split limit args
    local -A limits=([train]=$5 [dev]=$6 [test]=$7)
    for split in $(rspg_splits); do
        limit=${limits[$split]}
        args=(--task "$task" --split "$split" --backend hf --model "$model" --k 4 --retrievers "$pool" --no-baselines)
        ((limit > 0)) && args+=(--limit "$limit")
        [[ -n $HF_DTYPE ]] && args+=(--dtype "$HF_DTYPE")
        [[ $task == commit_area ]] && args+=(--decode labels)
        bench "${prefix}_pool_$split" "${args[@]}"
    done
    rspg_select "$prefix" "$task"
}
# RSPG_EVAL=dev: the selectors train on the train bench alone (their last checkpoint) and are
# scored on the dev bench; RSPG_EVAL=test: the dev bench picks their checkpoint, the test bench scores
RSPG_EVAL="${RSPG_EVAL:-test}"
rspg_splits() { [[ $RSPG_EVAL == test ]] && echo train dev test || echo train dev; }
# rspg_select PREFIX TASK: the Pre and Post selectors on PREFIX_pool_train (and _dev), applied
rspg_select() {
    local prefix=$1 task=$2 mode choice=()
    local target=${prefix}_pool_dev
    if [[ $RSPG_EVAL == test ]]; then
        choice=(--dev-bench "$(key_of "${prefix}_pool_dev")")
        target=${prefix}_pool_test
    fi
    for mode in ${RSPG_MODES:-pre post}; do  # RSPG_MODES=pre / =post: one selector per process, side by side
        have_model "$prefix-rspg-$mode" || step "${prefix}_rspg_$mode" train rspg --task "$task" \
            --train-bench "$(key_of "${prefix}_pool_train")" "${choice[@]}" \
            --mode "$mode" --epochs "$RSPG_EPOCHS" --name "$prefix-rspg-$mode"
        step "${prefix}_rspg_apply_$mode" rspg apply "$prefix-rspg-$mode" --bench "$(key_of "$target")"
    done
}
has_stage subject_rspg && rspg subject commit_subject "$SUBJ_MODEL" "$RSPG_POOL" "$RSPG_TRAIN_LIMIT" "$BENCH_LIMIT" "$RSPG_TEST_LIMIT"
# the paper's setting on commit_subject: the base model's pool (train/dev/test bounds: SUBJ_RSPG_LIMITS)
read -r subj_train subj_dev subj_test <<< "${SUBJ_RSPG_LIMITS:-300 190 190}"
has_stage subject_rspg_base && rspg subjbase commit_subject smollm2-135m-instruct "$RSPG_POOL" "$subj_train" "$subj_dev" "$subj_test"

# 5. commit_area: label decoding; the feedback must come from a fine-tuned model
AREA_POOL="none,bm25,recency,dense,ropg:area-ropg-kd,ropg:area-ropg-rl"
if has_stage area_ipa && ! have_model "$AREA_MODEL"; then
    step area_ipa train ipa --task commit_area --retriever bm25 --k 4 --limit "$AREA_TRAIN_LIMIT" \
        --epochs "$AREA_EPOCHS" --dev-limit 30 --precision "$PRECISION" --name "$AREA_MODEL"
fi
has_stage area_ropg && ropg area commit_area "$AREA_MODEL"
if has_stage area_ropg_bench; then
    bench area_ropg_dev --task commit_area --split dev --backend hf --model "$AREA_MODEL" --k 4 \
        --retrievers "$AREA_POOL" --decode labels
fi
# the same two retrievers from the fine-tuned model's generate-feedback (the issue's default: the
# task metric of the output made with each item alone), beside the likelihood ones above
has_stage area_ropg_gen && ROPG_FEEDBACK=generate ropg areagen commit_area "$AREA_MODEL"
if has_stage area_ropg_gen_bench; then
    bench areagen_ropg_dev --task commit_area --split dev --backend hf --model "$AREA_MODEL" --k 4 \
        --retrievers "$AREA_POOL,ropg:areagen-ropg-kd,ropg:areagen-ropg-rl" --decode labels
fi
# ROPG with the base model as the generator (the paper's setting: a frozen LLM's feedback); its
# untrained rows are the RSPG base pool's dev bench (area_rspg_base), served from the store
has_stage area_ropg_base && ropg areabase commit_area smollm2-135m-instruct
if has_stage area_ropg_base_bench; then
    bench areabase_ropg_dev --task commit_area --split dev --backend hf --model smollm2-135m-instruct --k 4 \
        --retrievers "none,bm25,recency,dense,ropg:areabase-ropg-kd,ropg:areabase-ropg-rl" --decode labels
fi
# commit_area at the size of its dev split (all 62 users, all 186 questions): OPPU and RSPG
has_stage area_oppu && oppu area commit_area "$AREA_MODEL" "${AREA_OPPU_USERS:-0}"
has_stage area_rspg && rspg area commit_area "$AREA_MODEL" "$AREA_RSPG_POOL" "${AREA_RSPG_TRAIN_LIMIT:-0}" 0 0
# the paper's setting: the pool of the base model's configurations (the generator never saw the
# training questions, so the selector's train-split feedback is not over-fitted)
has_stage area_rspg_base && rspg areabase commit_area smollm2-135m-instruct "$AREA_RSPG_POOL" 0 0 0
# a pool that adds a fine-tuned model's configurations: the generator learns from the first
# HELD_OUT training questions only, and the selector's train bench skips them (a generator
# scored on its own training questions gives the selector over-fitted feedback)
#    rspg_ft PREFIX TASK HELD_MODEL HELD_OUT EPOCHS POOL DEV_LIMIT TRAIN_LIMIT (limits: 0 = all)
rspg_ft() {
    local prefix=$1 task=$2 held=$3 held_out=$4 epochs=$5 pool=$6 dev_limit=$7 train_limit=$8 model retriever
    local configs=() limit=()
    have_model "$held" || step "${prefix}_ipa_held" train ipa --task "$task" --retriever bm25 --k 4 \
        --limit "$held_out" --epochs "$epochs" --dev-limit 30 --precision "$PRECISION" --name "$held"
    local -A short=([smollm2-135m-instruct]=base [$held]=ft)
    local dtype=${HF_DTYPE:+ dtype=$HF_DTYPE} decode=""
    [[ $task == commit_area ]] && decode=" decode=labels"
    for model in smollm2-135m-instruct "$held"; do
        configs+=(--config "label=${short[$model]} method=ipa model=$model backend=hf$decode$dtype")
        for retriever in ${pool//,/ }; do
            [[ $retriever == none ]] || configs+=(--config "label=${short[$model]}+$retriever method=ipa model=$model backend=hf retriever=$retriever k=4$decode$dtype")
        done
    done
    ((dev_limit > 0)) && limit=(--limit "$dev_limit")
    bench "${prefix}_pool_dev" --task "$task" --split dev "${limit[@]}" "${configs[@]}"
    [[ $RSPG_EVAL == test ]] && bench "${prefix}_pool_test" --task "$task" --split test "${configs[@]}"
    limit=()
    ((train_limit > 0)) && limit=(--limit "$train_limit")
    bench "${prefix}_pool_train" --task "$task" --split train --skip "$held_out" "${limit[@]}" "${configs[@]}"
    rspg_select "$prefix" "$task"
}
has_stage area_rspg_ft && rspg_ft areaft commit_area "area-lora-$AREA_HELD_OUT" "$AREA_HELD_OUT" "$AREA_EPOCHS" \
    "$AREA_RSPG_POOL" 0 0
# commit_subject: the fine-tuned generator learns 1 epoch (docs/reproduce.md's recipe); the
# selector's train bench takes the next SUBJ_FT_TRAIN training questions
has_stage subject_rspg_ft && rspg_ft subjectft commit_subject "$SUBJ_FT_MODEL" "$SUBJ_HELD_OUT" 1 "$RSPG_POOL" \
    "$subj_dev" "${SUBJ_FT_TRAIN:-300}"
echo "done $(date)"
