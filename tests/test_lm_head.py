"""The output projection gets its input in canonical strides (engine/lm_head.py): the same
logits, and not the sliced layout that sends a frozen bfloat16 head down torch's slow path."""

from __future__ import annotations

from pathlib import Path


def test_the_head_sees_canonical_strides_and_gives_the_same_logits(tiny_lm: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from lampbox.engine.lm_head import canonical_head_input, canonical_strides
    from lampbox.engine.training.frozen import hold_frozen_linears_in

    assert canonical_strides((2, 1, 4)) == (4, 4, 1) and canonical_strides((3, 5)) == (5, 1)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm, dtype=torch.bfloat16).requires_grad_(False)
    head = model.get_output_embeddings()
    seen: list[tuple[int, ...]] = []
    head.register_forward_hook(lambda module, args, output: seen.append(args[0].stride()))  # what forward got
    ids = torch.randint(0, 1000, (1, 12))
    with torch.inference_mode():
        before = model(input_ids=ids, logits_to_keep=1).logits
    assert seen[-1] != canonical_strides((1, 1, 32))  # the slice of the whole sequence
    hold_frozen_linears_in(model, torch.bfloat16)  # installs it, as training's speed-up does
    canonical_head_input(model)  # once only
    assert len(head._forward_pre_hooks) == 1
    with torch.inference_mode():
        after = model(input_ids=ids, logits_to_keep=1).logits
    assert seen[-1] == canonical_strides((1, 1, 32))
    assert torch.equal(before, after)


def test_the_hf_backend_installs_it(tiny_lm: Path) -> None:
    """peft freezes the base when the backend loads a user's adapter: the head is then frozen."""
    from lampbox.engine.generation.hf import HFGenerator
    from lampbox.engine.lm_head import _canonical_input

    generator = HFGenerator(str(tiny_lm), dtype="bfloat16")
    assert _canonical_input in generator.model.get_output_embeddings()._forward_pre_hooks.values()
