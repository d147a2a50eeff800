"""Seeded random peft LoRA adapters for the packaged SmolLM2 GGUF (numpy only, no torch), and
trained-model folders holding them, for the adapter-serving tests (llamacpp, openai)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODEL = "smollm2-135m-instruct"


def layout() -> tuple[int, int, int, int]:
    """(layers, hidden size, attention heads, key-value heads) of the packaged GGUF."""
    from gguf import GGUFReader

    from lampbox.models import resolve_model

    fields = GGUFReader(str(resolve_model(MODEL).path)).fields
    values = [int(fields[f"llama.{key}"].contents()) for key in ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv")]  # fmt: skip
    return values[0], values[1], values[2], values[3]


def random_lora(folder: Path, seed: int, rank: int = 4) -> Path:
    """A seeded random peft LoRA folder on q_proj and v_proj of every layer (alpha = rank)."""
    from safetensors.numpy import save_file

    layers, hidden, heads, kv_heads = layout()
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module, rows in (("q_proj", hidden), ("v_proj", kv_heads * head_dim)):
            a = rng.normal(0, 1 / np.sqrt(hidden), (rank, hidden)).astype(np.float32)
            b = rng.normal(0, 0.15, (rows, rank)).astype(np.float32)
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a, b
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": ["q_proj", "v_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def trained_lora(home: Path, name: str, adapter: Path, base_fingerprint: str) -> Path:
    """A trained-model folder (models/NAME: lampbox-model.json and adapter/) for `adapter`."""
    import shutil

    folder = home / "models" / name
    shutil.copytree(adapter, folder / "adapter")
    info = {"name": name, "kind": "lora", "base": MODEL, "base_fingerprint": base_fingerprint, "chat": True}
    (folder / "lampbox-model.json").write_text(json.dumps(info))
    return folder
