"""Does a converted GGUF LoRA on the quantized base agree with peft on the dequantized base?

A random LoRA (seeded; B scaled by --scale so that it changes some outputs) on SmolLM2-135M
(q/k/v/o/up), merged by peft on the base as transformers dequantizes it, against llama.cpp with
the adapter converted by lampbox.engine.generation.gguf_lora on the quantized GGUF; greedy, the
same prompts. Prints each pair, and the agreement with and without the adapter (the base's
agreement is the floor that quantization alone allows).

    .venv/bin/python benchmarks/bench_gguf_lora.py --scale 0.5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "git commit -m", "The best way to learn"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.5, help="Factor on the random B matrices.")
    parser.add_argument("--tokens", type=int, default=12)
    args = parser.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampbox.engine.generation.gguf_lora import convert_lora
    from lampbox.engine.generation.hf import converted_gguf_folder
    from lampbox.engine.generation.llamacpp import load_cpu_backend
    from lampbox.models import resolve_model

    gguf = resolve_model("smollm2-135m-instruct").path
    folder = converted_gguf_folder(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=8, target_modules=targets, init_lora_weights=False),
    )
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.mul_(args.scale)
    work = Path(tempfile.mkdtemp(prefix="bench-gguf-lora-"))
    peft.save_pretrained(work / "adapter")
    started = time.perf_counter()
    converted = convert_lora(work / "adapter", gguf, work / "adapter.gguf")
    print(f"converted in {time.perf_counter() - started:.2f} s, {converted.stat().st_size / 1e6:.1f} MB")

    def hf_outputs(model: object) -> list[str]:
        outputs = []
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            generated = model.generate(ids, max_new_tokens=args.tokens, do_sample=False)  # type: ignore[attr-defined]
            outputs.append(tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True))
        return outputs

    hf_lora = hf_outputs(peft.merge_and_unload())
    hf_base = hf_outputs(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32))
    load_cpu_backend()
    from llama_cpp import Llama

    def llama_outputs(lora: str | None) -> list[str]:
        llm = Llama(str(gguf), lora_path=lora, n_ctx=256, verbose=False, n_threads=2, seed=0)
        return [llm(p, max_tokens=args.tokens, temperature=0.0)["choices"][0]["text"] for p in PROMPTS]

    cpp_base, cpp_lora = llama_outputs(None), llama_outputs(str(converted))
    for row in zip(hf_base, cpp_base, hf_lora, cpp_lora, strict=True):
        print(" | ".join(repr(text) for text in row))
    n = len(PROMPTS)
    def same(first: list[str], second: list[str]) -> int:
        return sum(a == b for a, b in zip(first, second, strict=True))

    print(f"base: {same(hf_base, cpp_base)}/{n} agree; with the adapter: {same(hf_lora, cpp_lora)}/{n} agree; "
          f"the adapter changed {n - same(hf_base, hf_lora)}/{n} hf outputs")  # fmt: skip


if __name__ == "__main__":
    main()
