"""Training: quality of fine-tuning with retrieval, and training throughput against a reference.

quality: on commit_subject and commit_area (../shared/data/git-commits), trains LoRA adapters of
SmolLM2-135M-Instruct with the real CLI (`lampbox train ipa`) with BM25 k=4 and with k=0 (the
control), then scores on dev with `lampbox bench` (hf backend): zero-shot (no personalization,
BM25 k=4), each trained model at its own k, the model-free baselines (retrieval-only, and for
commit_subject the first sentence of the commit body), with paired randomization tests.

    .venv/bin/python benchmarks/bench_training.py quality [--train-limit N] [--dev-limit N]
        [--epochs E] [--tasks commit_subject,commit_area] [--retrievers bm25,recency] [--work DIR]
        [--fid [--fid-epochs E] [--fid-lr LR]] [--decode-labels] [--extra NAME:RETRIEVER:EPOCHS,...]

(the trained models of a work folder are reused: re-running with --fid adds FiD to a finished run;
--extra adds more LoRA models at k=4, e.g. trained longer). The table has paired tests against
zero-shot, against the LoRA k=0 control and against the best model-free baseline.

throughput: the same examples and steps through (a) the reference: transformers Trainer + peft
LoRA, fp32, every batch padded to the max length, random order; and (b) lampbox's trainer:
length-grouped batches padded to their own longest with logits only at the targets, at fp32 and
bf16 (and fp32 with full logits, to show that part). Contestants are named
lampbox-PRECISION[-full-logits][-base][-torchdrop][-castfrozen]: the default path with one thing
changed (full logits; the whole base in bf16; torch's own LoRA dropout; frozen weights cast by
autocast at every step). Prints tokens/s (real tokens, padding
excluded; training steps only, model loading excluded) and peak RSS, each in its own process.

    .venv/bin/python benchmarks/bench_training.py throughput [--steps 20] [--limit 160]
        [--contestants reference,lampbox-bf16,...]   (a name may repeat: interleaved rounds)

parity: the throughput target's "at the same final dev metric": the reference and lampbox's
default path train the same examples for the same epochs (same seed, batch 4); each adapter is
then put on a fresh fp32 base and scored on the same dev questions (greedy, official ROUGE),
with a paired randomization test against the reference.

    .venv/bin/python benchmarks/bench_training.py parity [--limit N] [--dev-limit 150] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "git-commits"
LAMPBOX = [sys.executable, "-m", "lampbox"]


def sh(args: list[str], env: dict[str, str], log: Path) -> str:
    """Run a lampbox command; its stderr goes to the log, its stdout is returned."""
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=handle, text=True)
    print(f"  {' '.join(args[2:5])} ... {time.perf_counter() - started:.0f} s", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(args)}; see {log}")
    return result.stdout


def first_sentence_baseline(task: str, dev_limit: int | None) -> tuple[dict[str, str], dict[str, str]]:
    """commit_subject: the commit body's first sentence as the subject (model-free)."""
    questions = json.loads((DATA / task / "dev_questions.json").read_text())
    golds = {g["id"]: g["output"] for g in json.loads((DATA / task / "dev_outputs.json").read_text())["golds"]}
    questions = questions[:dev_limit] if dev_limit else questions
    preds = {}
    for q in questions:
        body = q["input"].split("commit message:", 1)[-1].strip()
        preds[q["id"]] = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0].rstrip(".")
    return preds, {q["id"]: golds[q["id"]] for q in questions}


def bench_rows(
    common: list[str], model: str, retrievers: str, baselines: bool, env: dict[str, str], log: Path
) -> dict[str, dict]:
    """One `lampbox bench --json` call; its rows by a label that names the model."""
    args = [*common, "--model", model, "--retrievers", retrievers] + ([] if baselines else ["--no-baselines"])
    rows = {}
    for row in json.loads(sh(args, env, log))["rows"]:
        label = row["label"].replace(f"hf:{model}", "").replace(f"fid fid:{model}", "(FiD)").strip()
        who = "zero-shot" if model == "smollm2-135m-instruct" else model
        rows[f"{who}: {label}" if row["role"] != "retrieval-only" else f"model-free: {label}"] = row
    return rows


def versus(scores: dict[str, dict[str, float | None]], label: str, other: str) -> str:
    """Mean per-question difference against another configuration and its paired test."""
    from lampbox.engine.stats import paired_randomization_test

    if other not in scores or other == label:
        return " " * 18
    pairs = [(a, scores[other][q]) for q, a in scores[label].items() if a is not None and scores[other].get(q) is not None]
    if not pairs:
        return " " * 18
    treated, base = zip(*pairs, strict=True)
    test = paired_randomization_test(treated, base)
    return f"{(sum(treated) - sum(base)) / len(treated):+.4f} p={test.p_value:.3f}"


def quality(args: argparse.Namespace) -> None:
    from lampbox.engine.metrics import Scorer, aggregate, question_key
    from lampbox.store import Store
    from lampbox.store import runs as run_store

    work = Path(args.work or tempfile.mkdtemp(prefix="lampbox-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LAMPBOX_HOME": str(work / "home")}
    db = str(work / "store.duckdb")
    log = work / "log.txt"
    print(f"work folder: {work} (log: {log})", flush=True)
    report = []
    for task in args.tasks.split(","):
        if not (work / f"{task}.imported").exists():
            sh([*LAMPBOX, "data", "import", str(DATA / task), "--db", db], env, log)
            (work / f"{task}.imported").touch()
        limit = ["--limit", str(args.train_limit)] if args.train_limit else []
        trained = {}  # (retriever, k) -> model name; BM25 k=4 keeps its first name, so old work folders are reused
        for retriever, k in [(r, 4) for r in args.retrievers.split(",")] + [("bm25", 0)]:
            name = f"{task}-lora-k{k}" if retriever == "bm25" else f"{task}-lora-{retriever}-k{k}"
            trained[retriever, k] = name
            if not (work / "home" / "models" / name).exists():
                sh(
                    [*LAMPBOX, "train", "ipa", "--task", task, "--retriever", retriever, "--k", str(k), "--name", name,
                     "--epochs", str(args.epochs), "--dev-limit", str(args.eval_limit), "--precision", args.precision,
                     "--db", db, *limit],
                    env, log,
                )  # fmt: skip
        extras = []  # --extra NAME:RETRIEVER:EPOCHS: more LoRA models at k=4 (e.g. longer training)
        for item in filter(None, (args.extra or "").split(",")):
            name, retriever, epochs = item.split(":")
            extras.append((name, retriever))
            if not (work / "home" / "models" / name).exists():
                sh(
                    [*LAMPBOX, "train", "ipa", "--task", task, "--retriever", retriever, "--k", "4", "--name", name,
                     "--epochs", epochs, "--dev-limit", str(args.eval_limit), "--precision", args.precision,
                     "--db", db, *limit],
                    env, log,
                )  # fmt: skip
        dev = ["--limit", str(args.dev_limit)] if args.dev_limit else []
        rows: dict[str, dict] = {}
        common = [*LAMPBOX, "bench", "--task", task, "--backend", "hf", "--k", "4", "--json", "--db", db, *dev]
        calls = [(common, "smollm2-135m-instruct", "none,bm25,recency")]
        calls += [(common, name, f"none,{retriever}" if k else "none") for (retriever, k), name in trained.items()]
        calls += [(common, name, f"none,{retriever}") for name, retriever in extras]
        if args.fid:
            name = f"{task}-fid-k4"
            if not (work / "home" / "models" / name).exists():
                sh(
                    [*LAMPBOX, "train", "fid", "--task", task, "--retriever", "bm25", "--k", "4", "--name", name,
                     "--epochs", str(args.fid_epochs), "--lr", str(args.fid_lr), "--dev-limit", str(args.eval_limit), "--precision", args.precision,
                     "--db", db, *limit],
                    env, log,
                )  # fmt: skip
            calls.append(([arg if arg != "hf" else "fid" for arg in common] + ["--method", "fid"], name, "bm25"))
        for number, (call, model, retrievers) in enumerate(calls):
            rows.update(bench_rows(call, model, retrievers, number == 0, env, log))
        if args.decode_labels and task == "commit_area":  # each trained model again, answering the likeliest label
            for call, model, retrievers in calls[1:]:
                rows.update(bench_rows([*call, "--decode", "labels"], model, retrievers.split(",")[-1], False, env, log))
        with Store(db, read_only=True) as store:
            spec = store.task(task)
            main = spec.main_metric
            key = question_key(spec)
            scores = {label: {p.question_id: p.scores.get(key) for p in run_store.run_predictions(store, row["run_key"])} for label, row in rows.items()}
        if task == "commit_subject":
            preds, golds = first_sentence_baseline(task, args.dev_limit)
            per = Scorer(spec).score_all([(preds[q], golds[q]) for q in preds])
            label = "model-free: first sentence of the body"
            rows[label] = {"metrics": aggregate(spec, per)}
            scores[label] = {q: s.get(key) for q, s in zip(preds, per, strict=True)}
        zero = "zero-shot: no personalization"
        control = f"{trained['bm25', 0]}: no personalization"
        free = [label for label in rows if label.startswith("model-free")]
        sign = 1 if spec.higher_is_better() else -1
        best_free = max(free, key=lambda label: sign * rows[label]["metrics"].get(main, 0.0)) if free else ""
        print(f"\n{task} dev ({args.dev_limit or 'all'} questions), main metric {main}; best model-free: {best_free}")
        print(f"{'configuration':58} {main:>10}   vs zero-shot        vs LoRA k=0         vs best model-free")
        for label, row in rows.items():
            value = row["metrics"].get(main)
            print(
                f"{label:58} {value:10.4f}   {versus(scores, label, zero):18} {versus(scores, label, control):18} "
                f"{versus(scores, label, best_free):18}"
            )
            report.append({"task": task, "configuration": label, main: value, "metrics": row["metrics"]})
    (work / "quality.json").write_text(json.dumps(report, indent=2))
    print(f"\nfigures in {work / 'quality.json'}")


def throughput_worker(args: argparse.Namespace) -> None:
    """One contestant in its own process: prepare examples, train `steps` steps, print JSON."""
    import resource

    from lampbox.engine.training.sft import SFTObjective
    from lampbox.engine.training.trainer import LoraSettings, TrainConfig, train
    from lampbox.lab.training import TrainSpec, prepare_data
    from lampbox.store import Store

    parity = args.dev_limit > 0  # train whole epochs, then score the adapter on dev
    with Store(args.db) as store:
        spec = TrainSpec(task="commit_subject", scheme="user", retriever="bm25", k=4, limit=args.limit,
                         dev_limit=args.dev_limit)  # fmt: skip
        data = prepare_data(spec, store)
        task = store.task("commit_subject")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data.model_source)
    reference = args.contestant == "reference"
    longest = max(len(e) for e in data.train)
    # lampbox-PRECISION[-full-logits][-base][-torchdrop][-castfrozen]: the default path with things changed
    flags = set(args.contestant.split("-")[2:])
    config = TrainConfig(
        epochs=args.epochs if parity else 100, max_steps=None if parity else args.steps,
        batch_size=4, lr=2e-4, lora=LoraSettings(),
        precision="fp32" if reference else args.contestant.split("-")[1],
        group_by_length=not reference, pad_to=longest if reference else None, save_total_limit=1,
        tail_logits=not reference and "logits" not in flags,
        bf16_base="base" in flags,
        cheap_dropout=not reference and "torchdrop" not in flags,
        frozen_bf16=not reference and "castfrozen" not in flags,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        model, result = train(SFTObjective(data.model_source, tokenizer, task, data.train), config, Path(work))
        seconds = result.seconds  # the Trainer's steps (model loading excluded)
        dev_scores = dev_scores_of(model, data, tokenizer, task, Path(work)) if parity else None
    losses = [e["loss"] for e in result.history if "loss" in e]
    print(json.dumps({
        "contestant": args.contestant, "steps": result.steps, "seconds": seconds, "tokens": result.train_tokens,
        "tokens_per_second": result.train_tokens / seconds, "final_loss": losses[-1] if losses else None,
        "mean_loss_last5": sum(losses[-5:]) / len(losses[-5:]) if losses else None, "padded_to": longest if reference else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "dev": dev_scores,
    }))  # fmt: skip


def dev_scores_of(model, data, tokenizer, task, work: Path) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """The trained adapter scored on dev as inference would run it: saved, put on a fresh fp32
    base model, greedy outputs (lampbox's generate_dev), the official metric per question."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lampbox.engine.metrics import Scorer
    from lampbox.engine.training.trainer import generate_dev

    model.save_pretrained(work / "adapter")  # the adapter only
    base = AutoModelForCausalLM.from_pretrained(data.model_source, dtype=torch.float32)
    fresh = PeftModel.from_pretrained(base, str(work / "adapter"))
    outputs = generate_dev(fresh, tokenizer, data.dev, 32, 8, "fp32")
    scores = Scorer(task).score_all(zip((o.strip() for o in outputs), (e.gold for e in data.dev), strict=True))
    return {metric: [float(row[metric]) for row in scores] for metric in scores[0]}


def throughput(args: argparse.Namespace) -> None:
    results = run_contestants(args, ["--steps", str(args.steps), "--limit", str(args.limit)])
    base = results[0]["tokens_per_second"]
    print(f"\ncommit_subject train, BM25 k=4 prompts, SmolLM2-135M LoRA r8 q/k/v/o, batch 4, {args.steps} steps")
    print(f"{'contestant':14} {'tokens/s':>9} {'vs ref':>7} {'seconds':>8} {'loss (last 5)':>14} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['contestant']:14} {r['tokens_per_second']:9.0f} {r['tokens_per_second'] / base:6.2f}x {r['seconds']:8.1f} "
              f"{r['mean_loss_last5']:14.4f} {r['peak_rss_mb']:12.0f}")  # fmt: skip


def run_contestants(args: argparse.Namespace, extra: list[str]) -> list[dict]:
    """Each contestant in its own process on one imported store; their JSON results."""
    work = Path(tempfile.mkdtemp(prefix="lampbox-train-speed-"))
    env = {**os.environ, "LAMPBOX_HOME": str(work / "home")}
    db = str(work / "store.duckdb")
    sh([*LAMPBOX, "data", "import", str(DATA / "commit_subject"), "--db", db], env, work / "log.txt")
    results = []
    for contestant in args.contestants.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "throughput-worker", "--contestant", contestant, "--db", db, *extra],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {contestant}: {results[-1]['tokens_per_second']:.0f} tokens/s", flush=True)
    return results


def parity(args: argparse.Namespace) -> None:
    """The throughput target's other half: the same training (data, effective batch, epochs,
    seed) through each contestant, then each adapter scored on the same dev questions the same
    way (fresh fp32 base + adapter, greedy, official ROUGE), with a paired test against the
    first contestant (the reference)."""
    from lampbox.engine.stats import paired_randomization_test

    limit = ["--limit", str(args.limit)] if args.limit else ["--limit", "100000"]
    results = run_contestants(args, [*limit, "--epochs", str(args.epochs), "--dev-limit", str(args.dev_limit)])
    base = results[0]
    print(f"\ncommit_subject train ({args.epochs:g} epoch), BM25 k=4, LoRA r8 q/k/v/o, batch 4; "
          f"dev: first {args.dev_limit} questions")  # fmt: skip
    print(f"{'contestant':14} {'steps':>6} {'tokens/s':>9} {'vs ref':>7} {'rouge-1':>8} {'rouge-L':>8}  vs reference")
    for r in results:
        dev, ref = r["dev"], base["dev"]
        paired = {} if r is base else {m: paired_randomization_test(dev[m], ref[m]) for m in ("rouge-1", "rouge-L")}
        tests = ", ".join(f"{m} {t.mean_difference:+.4f} (p {t.p_value:.2f})" for m, t in paired.items())
        mean = {m: sum(v) / len(v) for m, v in dev.items()}
        print(f"{r['contestant']:14} {r['steps']:6d} {r['tokens_per_second']:9.0f} "
              f"{r['tokens_per_second'] / base['tokens_per_second']:6.2f}x {mean['rouge-1']:8.4f} {mean['rouge-L']:8.4f}  {tests}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--tasks", default="commit_area,commit_subject")
    q.add_argument("--train-limit", type=int, default=None)
    q.add_argument("--dev-limit", type=int, default=None)
    q.add_argument("--eval-limit", type=int, default=50, help="dev questions scored at each evaluation during training")
    q.add_argument("--retrievers", default="bm25", help="a LoRA model is trained with each of these at k=4 (and one at k=0)")
    q.add_argument("--epochs", type=float, default=1.0)
    q.add_argument("--precision", default="fp32")
    q.add_argument("--fid", action="store_true", help="also train and score FiD (minilm-bert2bert, BM25 k=4)")
    q.add_argument("--fid-epochs", type=float, default=1.0)
    q.add_argument("--fid-lr", type=float, default=5e-5)
    q.add_argument("--decode-labels", action="store_true", help="commit_area: also score each trained model (at its own retriever and k) with --decode labels")
    q.add_argument("--extra", default=None, help="more LoRA models at k=4, NAME:RETRIEVER:EPOCHS[,...] (trained once, scored like the others)")
    q.add_argument("--work", default=None)
    t = sub.add_parser("throughput")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--limit", type=int, default=160)
    t.add_argument("--contestants", default="reference,lampbox-fp32,lampbox-bf16,lampbox-fp32-full-logits")
    w = sub.add_parser("throughput-worker")
    w.add_argument("--contestant", required=True)
    w.add_argument("--db", required=True)
    w.add_argument("--steps", type=int, default=20)
    w.add_argument("--limit", type=int, default=160)
    w.add_argument("--epochs", type=float, default=1.0)
    w.add_argument("--dev-limit", type=int, default=0, help="> 0: train --epochs, then score on dev")
    r = sub.add_parser("parity")
    r.add_argument("--limit", type=int, default=None, help="training questions (default: all)")
    r.add_argument("--dev-limit", type=int, default=150)
    r.add_argument("--epochs", type=float, default=1.0)
    r.add_argument("--contestants", default="reference,lampbox-bf16")
    args = parser.parse_args()
    modes = {"quality": quality, "throughput": throughput, "throughput-worker": throughput_worker, "parity": parity}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
