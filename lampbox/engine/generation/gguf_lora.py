"""A PEFT LoRA adapter as a GGUF LoRA adapter for llama.cpp (written with the `gguf` package).

What llama.cpp's own convert_lora_to_gguf.py writes: the metadata `general.type = adapter`,
`general.architecture` (the base's), `adapter.type = lora`, `adapter.lora.alpha`; for each
adapted linear of the base, `<gguf tensor name>.lora_a` (r x in) and `.lora_b` (out x r) under
the base tensor's GGUF name (blk.N.attn_q.weight, ...). llama.cpp's llama conversion permutes
the rows of the query and key projections (its rotary layout); a LoRA's B matrix (its output
rows) gets the same permutation, so B A is the permuted delta. llama.cpp scales by
alpha / r, as peft does (rank-stabilised LoRA, alpha / sqrt(r), is written as the alpha that
gives the same scale). Only llama-architecture bases (Llama, SmolLM2, Mistral-shaped
models converted as llama) are supported; anything else is one clear error.

The architecture and head counts are read from the base GGUF the adapter will be applied to.
A converted adapter is cached beside the adapter folder, keyed by the adapter's content and
the base's head layout (`gguf_adapter`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from lampbox.errors import InputFileError, LampboxError

SUPPORTED_ARCHITECTURES = ("llama",)
_MODULES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}  # fmt: skip
_NAME = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")


def base_layout(base_gguf: Path) -> tuple[str, int, int]:
    """(architecture, attention heads, key-value heads) of a GGUF model."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(base_gguf))
    except (OSError, ValueError) as error:
        raise InputFileError(base_gguf, f"not a readable GGUF file ({error})") from None

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        if field is None:
            return None
        return field.contents() if hasattr(field, "contents") else field.parts[field.data[0]].tolist()

    architecture = value("general.architecture")
    if isinstance(architecture, list):
        architecture = bytes(architecture).decode()
    heads = value(f"{architecture}.attention.head_count")
    kv_heads = value(f"{architecture}.attention.head_count_kv")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise LampboxError(
            f"cannot convert a LoRA adapter for a {architecture} GGUF model (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    heads = int(heads[0] if isinstance(heads, list) else heads)
    kv_heads = int(kv_heads[0] if isinstance(kv_heads, list) else kv_heads) if kv_heads is not None else heads
    return str(architecture), heads, kv_heads


def permute_rows(weights: Any, heads: int) -> Any:
    """llama.cpp's llama permutation of a projection's output rows (per head: the two rotary
    halves interleaved), applied to a (rows x columns) numpy array."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.numpy import load_file

    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputFileError(config_path, f"not a readable LoRA adapter config ({error})") from None
    if not weights_path.is_file():
        raise InputFileError(weights_path, "no adapter weights (adapter_model.safetensors)")
    try:
        tensors = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InputFileError(weights_path, f"not readable adapter weights ({error})") from None
    return config, tensors


def convert_lora(adapter: Path, base_gguf: Path, out: Path) -> Path:
    """Write `adapter` (a peft LoRA folder) as a GGUF LoRA for `base_gguf` to `out`
    (through a partial file renamed into place)."""
    import numpy as np
    from gguf import GGUFWriter

    architecture, heads, kv_heads = base_layout(base_gguf)
    config, tensors = _read_adapter(adapter)
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise LampboxError(f"{adapter}: only plain LoRA adapters convert to GGUF (not {config.get('peft_type')}, DoRA)")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise LampboxError(f"{adapter}: per-module ranks or alphas do not convert to GGUF (one alpha per adapter)")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha = alpha * math.sqrt(rank)  # llama.cpp scales by alpha / r; rsLoRA by alpha / sqrt(r)
    pairs: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        match = _NAME.match(name)
        if match is None or match.group(2) not in _MODULES:
            raise LampboxError(f"{adapter}: cannot map the adapter tensor {name!r} to a llama.cpp tensor")
        layer, module, which = match.groups()
        pairs.setdefault(f"blk.{layer}.{_MODULES[module]}.weight", {})[which] = (module, tensor)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer = GGUFWriter(str(partial), architecture)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for target in sorted(pairs, key=lambda n: (int(n.split(".")[1]), n)):
        pair = pairs[target]
        if set(pair) != {"A", "B"}:
            raise LampboxError(f"{adapter}: {target} has lora_{''.join(pair)} without its other half")
        module, a = pair["A"]
        _, b = pair["B"]
        if module == "self_attn.q_proj":
            b = permute_rows(b, heads)
        elif module == "self_attn.k_proj":
            b = permute_rows(b, kv_heads)
        writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    return finish_gguf(writer, partial, out)


def finish_gguf(writer: Any, partial: Path, out: Path) -> Path:
    """Write what a GGUFWriter opened on `partial` holds, then move the file to `out` in one
    step, so that `out` is never half-written."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return out


def gguf_adapter(adapter: str | Path, base_gguf: Path) -> Path:
    """The GGUF LoRA of an adapter folder for this base, converted once: cached beside the
    adapter folder (gguf/<key>.gguf), keyed by the adapter's content and the base's layout."""
    import hashlib

    from lampbox.engine.fingerprint import folder_sha256
    from lampbox.engine.generation.hf_adapters import adapter_folder

    folder = adapter_folder(str(adapter))
    layout = base_layout(base_gguf)
    key = hashlib.sha256(f"{folder_sha256(folder)}|{layout}".encode()).hexdigest()[:24]
    out = folder.parent / "gguf" / f"{key}.gguf"
    if out.is_file():
        return out
    return convert_lora(folder, base_gguf, out)
