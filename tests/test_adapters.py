"""Many adapters on one loaded base (OPPU's per-user adapters): the base stays bit for bit what
it was, and each adapter depends only on its own examples and the seed. A tiny random Llama
with SmolLM2's tokenizer, trained under bf16 autocast with the base held in bf16 (the
frozen-weight speed-up applied once) and LoRA dropout on."""

from __future__ import annotations

from pathlib import Path

import pytest

USERS = {
    "ann": [("Write a subject: fix the parser", "parser: fix crash"), ("Write a subject: docs", "docs: typo")] * 3,
    "bob": [("Write a subject: speed up diff", "diff: faster"), ("Write a subject: tests", "t: add test")] * 3,
    "cyd": [("Write a subject: merge fix", "merge: fix leak"), ("Write a subject: gui", "git-gui: colour")] * 3,
}


def objective(tiny_lm: Path, user: str):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from lampbox.engine.tasks import builtin_task
    from lampbox.engine.training.data import encode_examples
    from lampbox.engine.training.sft import SFTObjective

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    pairs = USERS[user]
    examples = encode_examples(tokenizer, True, [f"{user}{i}" for i in range(len(pairs))], [p for p, _ in pairs], [g for _, g in pairs])
    return SFTObjective(str(tiny_lm), tokenizer, builtin_task("LaMP_7"), examples)


def task_adapter(tiny_lm: Path, folder: Path, seed: int) -> dict:  # type: ignore[type-arg]
    """A random (non-zero) q/v LoRA saved in `folder`; returns the fp32 weights merged with it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    task = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_lm),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )  # fmt: skip
    task.save_pretrained(folder)
    return dict(task.merge_and_unload().state_dict())


def config():  # type: ignore[no-untyped-def]
    from lampbox.engine.training.trainer import LoraSettings, TrainConfig

    return TrainConfig(
        max_steps=3, batch_size=2, lr=1e-2, precision="bf16", checkpoints=False,
        lora=LoraSettings(r=4, alpha=8, dropout=0.1),
    )  # fmt: skip


@pytest.mark.slow
def test_three_adapters_leave_the_base_untouched_and_do_not_see_each_other(tiny_lm: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from lampbox.engine.training.adapters import AdapterTrainer

    trainer = AdapterTrainer(str(tiny_lm), config())
    before = {name: tensor.clone() for name, tensor in trainer.base_weights().items()}
    assert before["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16  # held in bf16 once
    results = {user: trainer.train_adapter(objective(tiny_lm, user), tmp_path / user) for user in USERS}
    after = trainer.base_weights()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)  # bit for bit
    assert trainer.trained == 3 and not [n for n, _ in trainer.base.named_parameters() if "lora_" in n]
    adapters = {user: load_file(tmp_path / user / "adapter" / "adapter_model.safetensors") for user in USERS}
    first = adapters["ann"]
    assert all(tensor.dtype == torch.float32 for tensor in first.values())  # the adapter trains in fp32
    assert any(not torch.equal(first[k], adapters["bob"][k]) for k in first)  # each learnt its own data

    # The third adapter of that trainer equals the same user's adapter trained alone by a new
    # trainer object with the same seed: nothing of the first two leaked into it.
    alone = AdapterTrainer(str(tiny_lm), config())
    result = alone.train_adapter(objective(tiny_lm, "cyd"), tmp_path / "cyd-alone")
    single = load_file(tmp_path / "cyd-alone" / "adapter" / "adapter_model.safetensors")
    third = adapters["cyd"]
    assert single.keys() == third.keys() and all(torch.equal(single[k], third[k]) for k in single)
    losses = [[e["loss"] for e in r.history if "loss" in e] for r in (results["cyd"], result)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]


def test_adapter_steps_run_with_the_adapter_mmap_threshold(tiny_lm: Path, tmp_path: Path) -> None:
    """Each adapter trains with glibc's mmap threshold at 1 MiB (memory.py), not the 64 KiB
    that `lampbox train` and the other trainings set: its steps' activations are not faulted
    in afresh at every step."""
    import platform
    import sys

    from lampbox.engine.training import memory
    from lampbox.engine.training.adapters import AdapterTrainer

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc")
    memory.hand_back_freed_memory()  # as the CLI does first
    assert memory.threshold_in_force() == memory.MMAP_THRESHOLD_BYTES
    trainer = AdapterTrainer(str(tiny_lm), config())
    trainer.train_adapter(objective(tiny_lm, "ann"), tmp_path / "ann")
    assert memory.threshold_in_force() == memory.ADAPTER_MMAP_THRESHOLD_BYTES == 1024 * 1024


def test_an_adapter_stands_on_a_merged_task_adapter(tiny_lm: Path, tmp_path: Path) -> None:
    """OPPU's base: the task adapter merged into the weights before any user adapter."""
    import torch

    from lampbox.engine.training.adapters import AdapterTrainer
    from lampbox.engine.training.trainer import TrainConfig

    merged = task_adapter(tiny_lm, tmp_path / "task", seed=1)
    fp32 = TrainConfig(max_steps=2, batch_size=2, precision="fp32", checkpoints=False)
    trainer = AdapterTrainer(str(tiny_lm), fp32, task_adapter=str(tmp_path / "task"))
    weights = {name: tensor.clone() for name, tensor in trainer.base_weights().items()}
    assert torch.equal(weights["model.layers.1.self_attn.v_proj.weight"], merged["model.layers.1.self_attn.v_proj.weight"])
    trainer.train_adapter(objective(tiny_lm, "ann"), tmp_path / "ann")
    assert all(torch.equal(weights[k], trainer.base_weights()[k]) for k in weights)
    assert (tmp_path / "ann" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_a_bf16_base_is_the_fp32_merge_rounded_once(tiny_lm: Path, tmp_path: Path) -> None:
    """TrainConfig.bf16_base (train oppu's default under bf16): the whole base in bf16, norms
    and embedding included, the task adapter merged in fp32 first and rounded once; the output
    head gets its canonical-strides hook; the user's adapter still trains and saves in fp32,
    and the base is bit for bit the same after it."""
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from lampbox.engine.training.adapters import AdapterTrainer

    merged = {name: tensor.to(torch.bfloat16) for name, tensor in task_adapter(tiny_lm, tmp_path / "task", seed=2).items()}
    trainer = AdapterTrainer(str(tiny_lm), replace(config(), bf16_base=True), task_adapter=str(tmp_path / "task"))
    weights = {name: tensor.clone() for name, tensor in trainer.base_weights().items()}
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}  # norms and embedding too
    for name in ("model.layers.1.self_attn.v_proj.weight", "model.norm.weight", "model.embed_tokens.weight"):
        assert torch.equal(weights[name], merged[name]), name  # one rounding of the fp32 merge
    assert getattr(trainer.base.get_output_embeddings(), "_lampbox_canonical_input", False)
    result = trainer.train_adapter(objective(tiny_lm, "ann"), tmp_path / "ann")
    adapter = load_file(tmp_path / "ann" / "adapter" / "adapter_model.safetensors")
    assert adapter and all(tensor.dtype == torch.float32 for tensor in adapter.values())
    assert any(tensor.abs().sum() > 0 for name, tensor in adapter.items() if "lora_B" in name)  # it learnt
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in result.history if "loss" in e)
    assert all(torch.equal(weights[k], trainer.base_weights()[k]) for k in weights)
