"""A batch's shared prompt prefix computed once (training/prefix.py): the same loss and the
same adapter gradients as the full rows, on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from lampbox.engine.training.data import IGNORE_INDEX, PadToLongest
from lampbox.engine.training.prefix import SharedPrefixCollator, shared_prefix_length


def row(ids: list[int], targets: int) -> dict[str, list[int]]:
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * (len(ids) - targets) + ids[-targets:]}


def test_the_shared_prefix_stops_where_rows_differ_and_before_any_target() -> None:
    assert shared_prefix_length([row([1, 2, 3, 4, 5], 1), row([1, 2, 3, 9, 5, 6], 2)]) == 3
    assert shared_prefix_length([row([1, 2, 3], 1), row([1, 2, 3, 4], 1)]) == 1  # first row's target at 2
    assert shared_prefix_length([row([1, 2, 3, 4, 5], 2), row([1, 2, 3, 4, 5], 2)]) == 2  # identical rows
    assert shared_prefix_length([row([7, 2], 1), row([1, 2], 1)]) == 0


def test_the_collator_cuts_the_prefix_and_keeps_each_rows_own_positions() -> None:
    import torch

    batch = [row([5, 6, 7, 8, 10, 11], 1), row([5, 6, 7, 8, 20, 21, 22, 23], 2)]
    padded = SharedPrefixCollator(pad_token_id=0, min_shared=2)(batch)
    assert padded["prefix_ids"].tolist() == [[5, 6, 7, 8]]
    assert padded["input_ids"].tolist() == [[0, 0, 10, 11], [20, 21, 22, 23]]  # left-padded tails
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 1, 1], [1] * 8]
    assert padded["position_ids"].tolist() == [[4, 4, 4, 5], [4, 5, 6, 7]]  # after the prefix, pads skipped
    assert padded["logits_to_keep"] == 3 and padded["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 11], [IGNORE_INDEX, 22, 23]]
    plain = SharedPrefixCollator(pad_token_id=0, min_shared=5)(batch)  # shares too little: as PadToLongest
    expected = PadToLongest(0, tail_logits=True)(batch)
    assert "prefix_ids" not in plain and all(torch.equal(torch.as_tensor(plain[k]), torch.as_tensor(expected[k])) for k in expected)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_shared_prefix_gives_the_full_rows_loss_and_gradients(attention: str, tiny_lm: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampbox.engine.tasks import builtin_task
    from lampbox.engine.training.data import encode_profile_examples
    from lampbox.engine.training.lora import lora_config
    from lampbox.engine.training.prefix import shared_prefix_loss
    from lampbox.engine.training.trainer import LoraSettings
    from lampbox.engine.types import ProfileItem

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    task = builtin_task("LaMP_2")  # a classification prompt: instruction and labels first, the item last
    texts = ["a quiet film about a family farm", "robots fight on the moon in the year 3000", "two friends fall in love", "a heist"]
    tags = ["classic", "sci-fi", "romance", "action"]
    items = [ProfileItem(str(i), str(i), {"description": t, "tag": tag}) for i, (t, tag) in enumerate(zip(texts, tags, strict=True))]
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in encode_profile_examples(tokenizer, True, task, items, 16)]
    shared = SharedPrefixCollator(tokenizer.pad_token_id or 0)(rows)
    assert shared["prefix_ids"].shape[1] >= 16  # the chat template and the instruction
    full = PadToLongest(tokenizer.pad_token_id or 0, tail_logits=True)(rows)

    def loss_and_grads(batch, shared_path: bool):  # type: ignore[no-untyped-def]
        from peft import get_peft_model

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32, attn_implementation=attention)
        model = get_peft_model(model, lora_config(model, LoraSettings(r=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj")), "CAUSAL_LM"))
        for name, parameter in model.named_parameters():  # B = 0 at the start: give it weight
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.5)
        loss = shared_prefix_loss(model, batch) if shared_path else model(**batch).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full_loss, full_grads = loss_and_grads(full, False)
    shared_loss, shared_grads = loss_and_grads(shared, True)
    assert shared_loss == pytest.approx(full_loss, rel=1e-5)
    assert full_grads.keys() == shared_grads.keys() and len(full_grads) == 8  # q, v x A, B x 2 layers
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6)
    assert shared_prefix_loss(None, full) is None  # a batch without a shared prefix: the model's own loss


def test_a_shared_prefix_is_refused_under_ddp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two forward passes per step: DDP (several processes training one model) expects one."""
    from lampbox.engine.training.trainer import TrainConfig, train
    from lampbox.errors import LampboxError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LampboxError, match="train alone"):
        train(object(), TrainConfig(share_prefix=True), tmp_path)  # type: ignore[arg-type]
