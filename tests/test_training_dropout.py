"""LoRA dropout with numpy's PCG64 masks (lampbox.engine.training.dropout): the same inverted
dropout as torch's, seeded by torch's generator."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lampbox.engine.training.dropout import CheapDropout, use_cheap_lora_dropout  # noqa: E402


def test_drops_p_of_the_elements_and_scales_the_rest() -> None:
    dropout = CheapDropout(0.05).train()
    x = torch.full((1000, 1000), 2.0)
    torch.manual_seed(0)
    out = dropout(x)
    dropped = float((out == 0).float().mean())
    assert dropped == pytest.approx(0.05, abs=0.002)  # 1e6 draws: sd 0.0002
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 2.0 / 0.95))
    assert float(out.mean()) == pytest.approx(2.0, rel=0.01)  # inverted dropout keeps the mean
    half = CheapDropout(0.5).train()(torch.ones(200_000))
    assert float((half == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_masks_follow_torch_seed_and_differ_between_calls() -> None:
    dropout = CheapDropout(0.3).train()
    x = torch.ones(64, 64)
    torch.manual_seed(1)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(1)
    again = dropout(x)
    assert torch.equal(first, again)  # a checkpoint's saved torch RNG state replays the masks
    assert not torch.equal(first, second)
    torch.manual_seed(2)
    assert not torch.equal(dropout(x), first)


def test_gradient_is_the_mask_and_eval_is_identity() -> None:
    dropout = CheapDropout(0.2).train()
    x = torch.randn(32, 48, requires_grad=True)
    out = dropout(x)
    out.sum().backward()
    expected = (out != 0).float() / 0.8
    assert torch.allclose(x.grad, expected)
    dropout.eval()
    y = torch.randn(5, 7)
    assert dropout(y) is y
    assert CheapDropout(0.0).train()(y) is y
    with pytest.raises(ValueError, match="dropout probability"):
        CheapDropout(1.0)


def test_keeps_bf16_inputs_in_bf16() -> None:
    out = CheapDropout(0.1).train()(torch.ones(10, 10, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def _lora_model(tiny_lm: Path, dropout: float, targets: list[str]):  # type: ignore[no-untyped-def]
    """The tiny Llama with a peft LoRA (r 4, alpha 8) on `targets`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm), config)


def test_replaces_every_lora_dropout_of_a_peft_model(tiny_lm: Path) -> None:
    model = _lora_model(tiny_lm, 0.1, ["q_proj", "v_proj"])
    assert use_cheap_lora_dropout(model) == 4  # 2 layers x (q, v)
    cheap = [m for m in model.modules() if isinstance(m, CheapDropout)]
    assert len(cheap) == 4 and all(m.p == 0.1 for m in cheap)
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    model.train()
    ids = torch.randint(0, 100, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()  # trains through it
    without = _lora_model(tiny_lm, 0.0, ["q_proj"])
    assert use_cheap_lora_dropout(without) == 0  # no dropout: nothing to replace


def test_frozen_linears_in_bf16_compute_what_autocast_computes(tiny_lm: Path) -> None:
    """Holding the frozen base linears in bf16 changes nothing under bf16 autocast: same loss,
    same adapter gradients, bit for bit; the embedding, norms and adapter stay fp32, and the
    output layer tied to the embedding gets a bf16 copy of its own."""
    from lampbox.engine.training.frozen import hold_frozen_linears_in

    def run(hold: bool):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        model = _lora_model(tiny_lm, 0.0, ["q_proj", "v_proj"])
        held = hold_frozen_linears_in(model, torch.bfloat16) if hold else 0
        ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return model, held, loss.detach(), grads

    _, _, loss, grads = run(False)
    model, held, held_loss, held_grads = run(True)
    assert held == 2 * 7 + 1  # 2 layers x (q, k, v, o, gate, up, down) base linears, lm_head
    assert torch.equal(loss, held_loss)
    assert grads.keys() == held_grads.keys() and all(
        torch.equal(grads[n], held_grads[n]) for n in grads
    )
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(
        d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "norm" in n or "embed" in n
    )
    assert dtypes["base_model.model.model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    base = model.get_base_model()
    assert base.lm_head.weight.dtype == torch.bfloat16 and not base.lm_head.weight.requires_grad
    assert base.model.embed_tokens.weight.dtype == torch.float32
    assert torch.equal(base.lm_head.weight, base.model.embed_tokens.weight.to(torch.bfloat16))
