"""LoRA adapters on a base model, and the CPU speed-ups for a model whose base is frozen.

Shared by every objective that trains an adapter (IPA fine-tuning, per-user adapters): the
target check, the peft config, and `speed_up_frozen`, which the core applies to any model
with frozen weights (LoRA dropout masks from numpy, frozen linears held in bf16).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lampbox.errors import LampboxError

if TYPE_CHECKING:
    from lampbox.engine.training.objective import TrainContext
    from lampbox.engine.training.trainer import LoraSettings


def lora_config(model: Any, settings: LoraSettings, task_type: str | None = "CAUSAL_LM") -> Any:
    """peft's LoraConfig for `settings`, its targets limited to modules the model has."""
    from peft import LoraConfig

    targets = [name for name in settings.targets if any(n.endswith(name) for n, _ in model.named_modules())]
    if not targets:
        raise LampboxError(f"none of the LoRA targets {', '.join(settings.targets)} is a module of this model")
    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
        task_type=task_type,
    )  # fmt: skip


def add_lora(model: Any, settings: LoraSettings, task_type: str | None = "CAUSAL_LM") -> Any:
    """The model wrapped by peft with a fresh LoRA adapter (the base frozen); its random A
    matrices come from torch's generator, so seed first."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, settings, task_type))


def has_frozen_weights(model: Any) -> bool:
    """Some parameters train and some do not (an adapter on a frozen base)."""
    flags = {p.requires_grad for p in model.parameters()}
    return flags == {True, False}


def speed_up_frozen(model: Any, context: TrainContext) -> None:
    """The CPU speed-ups that leave what a step computes unchanged (docs/training.md):
    LoRA dropout masks from numpy's PCG64 on the CPU, and frozen linears held in bf16 under
    bf16 autocast. Both are idempotent: a model that trains one adapter after another gets
    them once for the base and again only for each new adapter's modules."""
    config = context.config
    if not has_frozen_weights(model):
        return
    if config.cheap_dropout and context.device == "cpu":
        from lampbox.engine.training.dropout import use_cheap_lora_dropout

        use_cheap_lora_dropout(model)
    if config.frozen_bf16 and context.precision == "bf16" and not config.bf16_base:
        import torch

        from lampbox.engine.training.frozen import hold_frozen_linears_in

        hold_frozen_linears_in(model, torch.bfloat16)
    elif config.bf16_base and context.precision == "bf16":
        from lampbox.engine.lm_head import canonical_head_input

        canonical_head_input(model)  # a frozen bf16 head's slow path on sliced positions (lm_head.py)
