"""OPPU's per-user adapters: training cost, switching cost on hf and llamacpp, GGUF-vs-peft agreement.

SmolLM2-135M-Instruct (the packaged Q4_1 GGUF; hf runs transformers on its dequantized weights).
Two adapters: seeded random peft LoRAs on q/k/v/o/up (B scaled by --scale so that they change
some outputs), or the trained adapters given with --adapter (twice). Prints:

- switching: the time to make a loaded user's adapter the active one (hf: AdapterSlots.activate;
  llamacpp: llama_set_adapters_lora through GgufAdapters.apply, whose graph re-reservation lands
  in the next decode, so the prefill after a switch is timed against the prefill with no switch),
  the first use of an adapter (load, or GGUF conversion + llama_adapter_lora_init), and the
  prompt's own prefill, each the median of --repeats;
- agreement: greedy outputs of --prompts commit_subject dev questions (the first ones) through
  lampbox's two backends, with the adapter per request and without it (the floor that
  quantization alone allows). `--requantize Q8_0|F16|F32` runs both parts on the packaged GGUF's
  weights written again as that type (in the run's scratch folder): F32 leaves quantization out,
  so what still differs is the LoRA conversion and the two backends' arithmetic.

    .venv/bin/python benchmarks/bench_oppu.py --data ../shared/data/git-commits/commit_subject

- training (`--only training`, benchmarks/oppu_training.py): `lampbox train oppu` on a private
  home for --users users of --split, each user's wall time split into its fixed cost and its
  training steps, the adapter's size, per-user time and RSS from the first user to the last:

    .venv/bin/python benchmarks/bench_oppu.py --only training --data ../shared/data/git-commits/commit_area --users 10 --threads 2
    .venv/bin/python benchmarks/bench_oppu.py --only training --data ../shared/data/git-commits/commit_subject --users 200 --user-max-steps 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lampbox.engine.generation.base import GenerationParams, GenerationRequest

MODEL = "smollm2-135m-instruct"  # the packaged Q4_1 GGUF (--requantize: a copy of it in another type)


def random_adapters(folder: Path, scale: float, model: str = MODEL) -> list[str]:
    """Two seeded random LoRAs on the dequantized base, saved as peft folders."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lampbox.engine.generation.hf import converted_gguf_folder
    from lampbox.models import resolve_model

    base = converted_gguf_folder(resolve_model(model).path)
    made = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        config = LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"], init_lora_weights=False)
        peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), config)
        with torch.no_grad():
            for name, parameter in peft.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(scale)
        peft.save_pretrained(folder / f"user{seed}")
        made.append(str(folder / f"user{seed}"))
    return made


# --requantize: the GGML type every quantized tensor is written as, and general.file_type's value
REQUANTIZE = {"Q8_0": 7, "F16": 1, "F32": 0}  # gguf.LlamaFileType: MOSTLY_Q8_0, MOSTLY_F16, ALL_F32


def requantized_gguf(source: Path, type_name: str, out: Path) -> Path:
    """`source` with every quantized tensor dequantized and written again as `type_name` (its F32
    tensors, the norms, unchanged), the same metadata but general.file_type: the same weights as
    far as the new type holds them, so that the agreement with transformers on the new file's
    dequantized weights separates what Q4_1 costs from what the LoRA conversion costs."""
    import gguf
    import numpy as np

    from lampbox.engine.generation.gguf_lora import finish_gguf

    reader = gguf.GGUFReader(str(source))
    qtype = gguf.GGMLQuantizationType[type_name]
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), reader.fields["general.architecture"].contents(), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = REQUANTIZE[type_name] if field.name == "general.file_type" else field.contents()
        writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tensor.name, np.array(tensor.data))
            continue
        values = gguf.quants.dequantize(np.array(tensor.data), tensor.tensor_type)
        writer.add_tensor(tensor.name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)  # F32, F16: a cast
    return finish_gguf(writer, partial, out)


def median_ms(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def hf_switching(adapters: list[str], prompt: str, repeats: int, model: str = MODEL) -> dict[str, float]:
    import torch

    from lampbox.engine.generation.hf import HFGenerator

    generator = HFGenerator(model, threads=2)
    slots = generator._adapters
    started = time.perf_counter()
    for adapter in adapters:
        slots.activate(adapter)
    first = (time.perf_counter() - started) * 1000 / len(adapters)
    turn = iter(range(10**9))
    switch = median_ms(lambda: slots.activate(adapters[next(turn) % 2]), repeats)
    ids = generator.tokenizer.hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]

    def prefill() -> None:
        with torch.no_grad():
            generator.model(ids)

    prefill_ms = median_ms(prefill, repeats)
    generator.close()
    return {"first use": first, "switch": switch, "prefill": prefill_ms, "prompt tokens": float(ids.shape[-1])}


def llamacpp_switching(adapters: list[str], prompt: str, repeats: int, model: str = MODEL) -> dict[str, float]:
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    generator = LlamaCppGenerator(model, threads=2)
    llama, context = generator._llama, generator._llama.ctx
    tokens = generator.prompt_tokens(prompt)
    started = time.perf_counter()
    for adapter in adapters:
        generator._adapters.apply(context, adapter)
    first = (time.perf_counter() - started) * 1000 / len(adapters)

    def prefill() -> None:
        llama.reset()
        llama.eval(tokens)

    turn = iter(range(10**9))
    switch_call = median_ms(lambda: generator._adapters.apply(context, adapters[next(turn) % 2]), repeats)

    def switch_and_prefill() -> None:
        generator._adapters.apply(context, adapters[next(turn) % 2])
        prefill()

    after_switch = median_ms(switch_and_prefill, repeats)
    generator._adapters.apply(context, adapters[0])
    prefill()  # warm, same adapter
    same = median_ms(prefill, repeats)

    def one_token() -> None:  # the graph re-reservation a switch costs, on the smallest decode
        llama.reset()
        llama.eval(tokens[:1])

    def switch_and_one_token() -> None:
        generator._adapters.apply(context, adapters[next(turn) % 2])
        one_token()

    one_after_switch = median_ms(switch_and_one_token, repeats)
    generator._adapters.apply(context, adapters[0])
    one = median_ms(one_token, repeats)
    generator.close()
    return {
        "first use": first, "switch call": switch_call, "prefill after a switch": after_switch,
        "prefill": same, "one-token decode after a switch": one_after_switch, "one-token decode": one,
        "switch (one-token difference)": one_after_switch - one, "prompt tokens": float(len(tokens)),
    }  # fmt: skip


def agreement(adapter: str, prompts: list[str], tokens: int, model: str = MODEL) -> dict[str, Any]:
    from lampbox.engine.generation.hf import HFGenerator
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    params = GenerationParams(max_new_tokens=tokens)
    outputs: dict[str, list[str]] = {}
    for backend, make in (("hf", lambda: HFGenerator(model, threads=2)),
                          ("llamacpp", lambda: LlamaCppGenerator(model, threads=2))):  # fmt: skip
        generator = make()
        outputs[f"{backend} base"] = generator.generate(prompts, params)
        outputs[f"{backend} lora"] = generator.generate([GenerationRequest(p, adapter=adapter) for p in prompts], params)
        generator.close()

    def same(first: str, second: str) -> int:
        return sum(a == b for a, b in zip(outputs[first], outputs[second], strict=True))

    return {
        "base agree": same("hf base", "llamacpp base"), "lora agree": same("hf lora", "llamacpp lora"),
        "adapter changed (hf)": len(prompts) - same("hf base", "hf lora"), "n": len(prompts), "outputs": outputs,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the bench; with --only training, the training figures are also returned."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="A LaMP-format task folder (commit_subject): its dev questions are the prompts.")
    parser.add_argument("--adapter", action="append", default=[], help="A trained adapter folder (give two); default: two seeded random LoRAs.")
    parser.add_argument("--scale", type=float, default=0.5, help="Factor on the random B matrices.")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--requantize", choices=sorted(REQUANTIZE), help="Measure on the packaged GGUF's weights written again as this type (Q8_0: a finer quantization; F32: none, the LoRA conversion alone) instead of Q4_1.")
    parser.add_argument("--show", action="store_true", help="Print every prompt's four outputs.")
    parser.add_argument("--only", choices=["switching", "agreement", "training"], help="Measure one part only (training: only with --only).")
    training = parser.add_argument_group("training (--only training)")
    training.add_argument("--users", type=int, default=10, help="Users to train (more than the split has: its users repeated under new ids).")
    training.add_argument("--user", action="append", default=[], help="Train this user of --split (repeatable; lampbox train oppu --user; instead of --users).")
    training.add_argument("--split", default="dev", help="The split whose users get adapters (lampbox train oppu --dev-split).")
    training.add_argument("--threads", type=int, default=2, help="torch's CPU threads (--threads of lampbox train oppu).")
    training.add_argument("--user-max-steps", type=int, default=None, help="Stop each user after this many steps (the flatness check: few steps, many users).")
    training.add_argument("--user-epochs", type=float, default=2.0)
    training.add_argument("--batch-size", type=int, default=4)
    training.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    training.add_argument("--min-profile", type=int, default=None, help="Only users with at least N profile items.")
    training.add_argument("--model", default=None, help="Base model (default: the manifest's default, SmolLM2-135M-Instruct).")
    training.add_argument("--task-adapter", type=Path, default=None, help="A trained LoRA model folder (models/NAME) for the task: copied into the private home; default: one trained for --task-steps steps.")
    training.add_argument("--task-steps", type=int, default=2, help="Steps of the tiny task adapter trained when no --task-adapter is given.")
    training.add_argument("--no-share-prefix", action="store_true", help="Train each pair's whole prompt (lampbox train oppu --no-share-prefix; default: a batch's shared prompt prefix once).")
    training.add_argument("--attention", choices=["auto", "eager", "sdpa"], default=None, help="The users' attention implementation (lampbox train oppu --attention; default: its auto).")
    training.add_argument("--no-bf16-base", action="store_true", help="Only the frozen linear weights in bf16, the rest of the base fp32 under autocast (lampbox train oppu --no-bf16-base; default: the whole base in bf16).")
    training.add_argument("--mmap-threshold", type=int, default=None, help="glibc's mmap threshold in bytes during the users' steps (default: AdapterTrainer's 1 MiB, engine/training/memory.py; 65536: that of the other trainings).")
    training.add_argument("--work", type=Path, default=None, help="The scratch folder (default: a new temporary one).")
    args = parser.parse_args(argv)
    if args.only == "training":
        from oppu_training import run_training

        if args.users < 1:
            parser.error("--users must be at least 1")
        if args.task_adapter and not (args.task_adapter / "lampbox-model.json").is_file():
            parser.error(f"--task-adapter {args.task_adapter}: not a trained model folder (no lampbox-model.json)")
        return run_training(args)
    questions = json.loads((args.data / "dev_questions.json").read_text())[: args.prompts]
    prompts = [question["input"] for question in questions]
    if args.adapter and len(args.adapter) != 2:
        parser.error("--adapter: give two adapters (or none for the random ones)")
    scratch = Path(tempfile.mkdtemp(prefix="bench-oppu-"))
    try:
        return _serving(args, prompts, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the random adapters and the requantized GGUF


def _serving(args: argparse.Namespace, prompts: list[str], scratch: Path) -> None:
    """The switching and agreement parts, their files in `scratch`."""
    model = MODEL
    if args.requantize:
        from lampbox.models import resolve_model

        model = str(requantized_gguf(resolve_model(MODEL).path, args.requantize, scratch / f"base.{args.requantize}.gguf"))
        print(f"base: the packaged Q4_1 GGUF dequantized and written as {args.requantize} ({model})")
    adapters = args.adapter or random_adapters(scratch, args.scale, model)
    print("adapters:", ", ".join(adapters) if args.adapter else f"two seeded random LoRAs (r 8, q/k/v/o/up, B x {args.scale})")
    for backend, measure in (("hf", hf_switching), ("llamacpp", llamacpp_switching)):
        if args.only == "agreement":
            break
        figures = measure(adapters, prompts[0], args.repeats, model)
        print(f"{backend} switching: " + ", ".join(f"{name} {value:.1f}{'' if 'tokens' in name else ' ms'}" for name, value in figures.items()))
    if args.only == "switching":
        return None
    found = agreement(adapters[0], prompts, args.tokens, model)
    if args.show:
        for row in zip(*found["outputs"].values(), strict=True):
            print(" | ".join(repr(text) for text in row))
    n = found["n"]
    print(f"agreement over {n} prompts, {args.tokens} greedy tokens: base {found['base agree']}/{n}, "
          f"with the adapter {found['lora agree']}/{n}; the adapter changed {found['adapter changed (hf)']}/{n} hf outputs")  # fmt: skip
    return None


if __name__ == "__main__":
    main()
