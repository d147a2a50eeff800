"""The reference loop the generation benches measure lampbox against (bench_generation.py,
bench_ropg.py): plain transformers generate, float32, batch 1, greedy, one prompt per call, as
LaMP's evaluate_llm does. Each prompt's tokens are the ones lampbox's hf generator feeds the
model (its chat template applied the same way, engine.generation.hf.prompt_ids), so the two
outputs are comparable token for token."""

from __future__ import annotations

import time


def reference_loop(
    prompts: list[str], max_new_tokens: int, threads: int, model: str | None = None, dtype: str = "float32"
) -> tuple[float, list[str]]:
    """Seconds of the loop (the model load excluded) and its outputs; `model`: a name or path
    lampbox resolves (default: the manifest's default; a GGUF runs from its converted folder);
    `dtype`: the weights' (float32, the reference's; bfloat16 for a same-dtype comparison)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampbox.engine.generation.hf import converted_gguf_folder, prompt_ids
    from lampbox.models import resolve_model

    torch.set_num_threads(threads)
    resolved = resolve_model(model)
    folder = converted_gguf_folder(resolved.path) if resolved.format == "gguf" else resolved.location
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    lm.eval()

    def generate(prompt: str, new_tokens: int) -> str:
        input_ids = torch.tensor([prompt_ids(tokenizer, prompt, chat=True)])
        with torch.no_grad():
            generated = lm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens, do_sample=False)
        return str(tokenizer.decode(generated[0, input_ids.shape[1] :], skip_special_tokens=True))

    if prompts:
        generate(prompts[0], 1)  # untimed warm-up: torch's first-call setup is no part of the loop
    start = time.perf_counter()
    outputs = [generate(prompt, max_new_tokens) for prompt in prompts]
    return time.perf_counter() - start, outputs
