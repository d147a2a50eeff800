"""FiD on the stand-in data: trains the offline encoder-decoder with `lampbox train fid` (the
real CLI), prints its learning curve, then measures it on dev: accuracy (or the task's main
metric) against the majority label of the training split with a paired randomization test,
and passage dependence: the share of dev questions whose output changes when the question's
passages are rebuilt with another question's retrieved items (`fid_swapped_passages`,
`passage_dependence`).

    .venv/bin/python benchmarks/bench_fid.py [--task commit_area] [--base minilm-bert2bert-d2]
        [--k 4] [--max-length 128] [--train-limit N] [--epochs 10] [--lr 1e-4]
        [--cross-attention-lr 1e-3] [--no-freeze-encoder] [--eval-limit 40] [--dev-limit N] [--work DIR]

A trained model of the work folder is reused (re-running measures it again). The measurement
goes question by question with a running line, and ends in `WORK/fid.json`. The same model
scores in a bench with
`lampbox bench --task commit_area --method fid --backend fid --model NAME --retrievers bm25 --k 4`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import DATA, LAMPBOX, REPO, sh  # noqa: E402  (the same subprocess runner and data)

sys.path.insert(0, str(REPO))  # the measurement imports this tree's lampbox, as `python -m lampbox` here does


def learning_curve(history: list[dict]) -> list[dict]:
    """Mean training loss per epoch and each dev evaluation, from a trained model's history."""
    rows: dict[int, dict] = {}
    for entry in history:
        epoch = int(-(-float(entry.get("epoch", 0.0)) // 1)) or 1  # steps of epoch e lie in (e-1, e]
        row = rows.setdefault(epoch, {"epoch": epoch, "losses": [], "dev": {}})
        if "loss" in entry:
            row["losses"].append(float(entry["loss"]))
        row["dev"].update({k[5:]: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, float) and "runtime" not in k and "per_second" not in k})
    return [
        {"epoch": e, "mean_loss": sum(r["losses"]) / len(r["losses"]) if r["losses"] else None, "dev": r["dev"]}
        for e, r in sorted(rows.items())
    ]


def measure(args: argparse.Namespace, db: str, name: str, spec_json: dict) -> dict:
    """Dev outputs with the question's own passages and with swapped ones; accuracy against the
    training split's majority label (paired test) and the share of outputs that change."""
    import torch
    from transformers import AutoTokenizer

    from lampbox.engine.defaults import default_max_new_tokens
    from lampbox.engine.generation.fid_model import fid_generate, load_seq2seq
    from lampbox.engine.metrics import Scorer, question_key
    from lampbox.engine.stats import paired_randomization_test
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.training import TrainSpec, fid_swapped_passages
    from lampbox.model_folders import model_path
    from lampbox.store import Store

    config = {k: v for k, v in spec_json["config"].items() if k != "lora"}
    spec = TrainSpec(**{**spec_json, "config": TrainConfig(lora=None, **config)})
    with Store(db) as store:  # writable: dev rankings not stored yet are stored
        task = store.task(args.task)
        questions, own, other = fid_swapped_passages(spec, store, "dev", args.dev_limit)
        train_golds = [q.gold for q in store.questions(task.name, spec.scheme, "train") if q.gold is not None]
    majority = Counter(train_golds).most_common(1)[0][0]
    folder = model_path(name) / "model"
    model = load_seq2seq(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    scorer, key, new_tokens = Scorer(task), question_key(task), default_max_new_tokens(task)
    golds = [q.gold or "" for q in questions]
    majority_scores = [s.get(key) or 0.0 for s in scorer.score_all((majority, g) for g in golds)]
    outputs, swapped, model_scores, started = [], [], [], time.perf_counter()
    for start in range(0, len(questions), 8):
        with torch.inference_mode():
            batch = [o.strip() for o in fid_generate(model, tokenizer, own[start : start + 8], new_tokens)]
            swapped += [o.strip() for o in fid_generate(model, tokenizer, other[start : start + 8], new_tokens)]
        outputs += batch
        model_scores += [s.get(key) or 0.0 for s in scorer.score_all(zip(batch, golds[start : start + 8], strict=True))]
        done = len(outputs)
        prior = majority_scores[:done]
        changed = sum(a != b for a, b in zip(outputs, swapped, strict=True))
        print(f"  dev {done}/{len(questions)}: {key} {sum(model_scores) / done:.3f} (majority label {sum(prior) / done:.3f}, "
              f"p={paired_randomization_test(model_scores, prior).p_value:.4f}), changed with other passages "
              f"{changed / done:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    swapped_scores = [s.get(key) or 0.0 for s in scorer.score_all(zip(swapped, golds, strict=True))]
    test = paired_randomization_test(model_scores, majority_scores)
    changed = [a != b for a, b in zip(outputs, swapped, strict=True)]
    return {
        "questions": len(questions), "metric": key, "fid": sum(model_scores) / len(golds),
        "fid_with_other_passages": sum(swapped_scores) / len(golds), "majority_label": majority,
        "majority": sum(majority_scores) / len(golds), "p_vs_majority": test.p_value,
        "passage_dependence": sum(changed) / len(changed), "distinct_outputs": len(set(outputs)),
        "top_outputs": Counter(outputs).most_common(5), "measure_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="commit_area")
    parser.add_argument("--base", default="minilm-bert2bert-d2", help="FiD base (minilm-bert2bert[-dN], a T5 folder)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128, help="passage token budget")
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cross-attention-lr", type=float, default=1e-3)
    parser.add_argument("--no-freeze-encoder", action="store_true", help="fine-tune the encoder too (the paper; slow on a CPU)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-limit", type=int, default=40, help="dev questions scored during training (0: none)")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between them (default: each epoch)")
    parser.add_argument("--dev-limit", type=int, default=None, help="dev questions measured at the end (default: all)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="lampbox-fid-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["LAMPBOX_HOME"] = str(work / "home")  # this process (the measurement) and its children
    env = dict(os.environ)
    db, log = str(work / "store.duckdb"), work / "log.txt"
    print(f"work folder: {work} (log: {log})", flush=True)
    if not (work / f"{args.task}.imported").exists():
        sh([*LAMPBOX, "data", "import", str(DATA / args.task), "--db", db], env, log)
        (work / f"{args.task}.imported").touch()
    name = args.name or f"{args.task}-fid-k{args.k}"
    folder = work / "home" / "models" / name
    if not folder.exists():
        sh(
            [*LAMPBOX, "train", "fid", "--task", args.task, "--model", args.base, "--retriever", "bm25", "--k", str(args.k),
             "--max-length", str(args.max_length), "--epochs", str(args.epochs), "--lr", str(args.lr),
             "--cross-attention-lr", str(args.cross_attention_lr), "--batch-size", str(args.batch_size),
             "--dev-limit", str(args.eval_limit), "--name", name, "--db", db,
             *(["--eval-every", str(args.eval_every)] if args.eval_every else []),
             *([] if args.no_freeze_encoder else ["--freeze-encoder"]),
             *(["--limit", str(args.train_limit)] if args.train_limit else [])],
            env, log,
        )  # fmt: skip
    info = json.loads((folder / "lampbox-model.json").read_text())
    curve = learning_curve(info["history"])
    print(f"\nlearning curve of {name} (training loss per epoch; dev on the first {args.eval_limit} questions):")
    for row in curve:
        loss = f"{row['mean_loss']:.3f}" if row["mean_loss"] is not None else "-"
        print(f"  epoch {row['epoch']:>2}: loss {loss}  " + ", ".join(f"dev {k} {v:.3f}" for k, v in row["dev"].items()))
    print(f"\nmeasuring {name} on {args.task} dev ({args.dev_limit or 'all'} questions):", flush=True)
    result = measure(args, db, name, info["spec"])
    print(
        f"\n{args.task} dev, {result['questions']} questions: FiD {result['metric']} {result['fid']:.3f} "
        f"(with other questions' items {result['fid_with_other_passages']:.3f}); majority label "
        f"{result['majority_label']!r} {result['majority']:.3f}; FiD - majority {result['fid'] - result['majority']:+.3f} "
        f"(paired test p={result['p_vs_majority']:.4f}); outputs changed with other passages: "
        f"{result['passage_dependence']:.2f}; {result['distinct_outputs']} distinct outputs {result['top_outputs']}"
    )
    report = {"args": vars(args), "spec": info["spec"], "train_result": info.get("result"), "curve": curve, **result}
    (work / "fid.json").write_text(json.dumps(report, indent=2))
    print(f"figures in {work / 'fid.json'}")


if __name__ == "__main__":
    main()
