"""The PEFT-to-GGUF LoRA converter: llama.cpp's tensor names and adapter metadata, the query and
key B matrices permuted as llama.cpp permutes the base's rows (so B A is the permuted delta),
a cache keyed by the adapter's content, and one clear line for what it cannot convert. A
tiny random Llama and its own base GGUF written here with the `gguf` package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lampbox.errors import LampboxError

HEADS, KV_HEADS, HIDDEN = 4, 2, 16


def _base_gguf(path: Path, architecture: str = "llama") -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_uint32(f"{architecture}.attention.head_count", HEADS)
    writer.add_uint32(f"{architecture}.attention.head_count_kv", KV_HEADS)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((HIDDEN, HIDDEN), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS)  # fmt: skip
    model = get_peft_model(
        LlamaForCausalLM(config),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(folder)
    return folder


def test_the_gguf_holds_llama_cpp_names_metadata_and_permuted_deltas(adapter: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from lampbox.engine.generation.gguf_lora import convert_lora, permute_rows

    out = convert_lora(adapter, _base_gguf(tmp_path / "base.gguf"), tmp_path / "a.gguf")
    reader = GGUFReader(str(out))
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == 8.0
    tensors = {t.name: np.array(t.data).reshape([int(n) for n in reversed(t.shape)]) for t in reader.tensors}
    expected = {f"blk.{i}.{m}.weight.lora_{x}" for i in (0, 1) for m in ("attn_q", "attn_k", "attn_v", "ffn_down") for x in "ab"}
    assert set(tensors) == expected
    peft = load_file(str(adapter / "adapter_model.safetensors"))

    def hf(layer: int, module: str, which: str) -> np.ndarray:
        return peft[f"base_model.model.model.layers.{layer}.{module}.lora_{which}.weight"]

    for module, gguf_name, heads in (("self_attn.q_proj", "attn_q", HEADS), ("self_attn.k_proj", "attn_k", KV_HEADS)):
        a, b = tensors[f"blk.1.{gguf_name}.weight.lora_a"], tensors[f"blk.1.{gguf_name}.weight.lora_b"]
        assert a.shape == (4, HIDDEN) and b.shape[1] == 4  # A: r x in, B: out x r
        delta = hf(1, module, "B") @ hf(1, module, "A")
        assert np.allclose(b @ a, permute_rows(delta, heads), atol=1e-6)  # llama.cpp's row order
        assert not np.allclose(b @ a, delta)
    assert np.array_equal(tensors["blk.0.attn_v.weight.lora_b"], hf(0, "self_attn.v_proj", "B"))
    assert np.array_equal(tensors["blk.0.ffn_down.weight.lora_a"], hf(0, "mlp.down_proj", "A"))


def test_converted_once_keyed_by_content_and_bad_input_is_one_line(adapter: Path, tmp_path: Path) -> None:
    import shutil

    from lampbox.engine.generation.gguf_lora import convert_lora, gguf_adapter

    base = _base_gguf(tmp_path / "base.gguf")
    copy = tmp_path / "model" / "adapter"
    shutil.copytree(adapter, copy)
    first = gguf_adapter(copy, base)
    assert first.parent == copy.parent / "gguf" and gguf_adapter(copy, base) == first
    stamp = first.stat().st_mtime_ns
    assert gguf_adapter(copy.parent, base).stat().st_mtime_ns == stamp  # a model folder names its adapter/
    with pytest.raises(LampboxError, match="cannot convert a LoRA adapter for a gemma2 GGUF model"):
        convert_lora(adapter, _base_gguf(tmp_path / "gemma.gguf", "gemma2"), tmp_path / "g.gguf")
    (copy / "adapter_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(LampboxError, match="not readable adapter weights"):
        gguf_adapter(copy, base)
    with pytest.raises(LampboxError, match="not a readable GGUF"):
        convert_lora(adapter, tmp_path / "a.gguf.missing", tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.partial"))
