"""Many LoRA adapters trained in turn on one loaded base (OPPU's one adapter per user).

`AdapterTrainer` loads the base once (optionally with a task adapter merged into its
weights), freezes it and applies the frozen-weight speed-up once (its linears held in bf16
under bf16 autocast). Each `train_adapter` call then adds a fresh LoRA adapter (seeded, so an
adapter does not depend on what was trained before it), trains it through the core on that
objective's examples alone, saves it and deletes it: the base's weights are never trained
(they are frozen and no optimizer sees them) and after the call the model computes as the
clean base again. The fixed cost per adapter is a Trainer and an adapter, not a model load
(benchmarks/bench_adapters.py measures it); its steps run with glibc's mmap threshold at
1 MiB rather than the 64 KiB of other trainings (training/memory.py). Under torchrun each rank's AdapterTrainer trains
its own adapters alone (no DDP: the ranks train different adapters on different data).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lampbox.engine.training.memory import ADAPTER_MMAP_THRESHOLD_BYTES
from lampbox.engine.training.objective import DevMetric, TrainContext, TrainingObjective
from lampbox.engine.training.trainer import (
    TrainConfig,
    TrainProgress,
    TrainResult,
    resolve_precision,
)
from lampbox.errors import LampboxError

ADAPTER = "default"  # the name each fresh adapter has while it trains (saved without a subfolder)


class AdapterTrainer:
    """One loaded base, fresh LoRA adapters trained on it one after another."""

    def __init__(
        self,
        model_source: str,
        config: TrainConfig,
        *,
        task_adapter: str | None = None,
        task_type: str | None = "CAUSAL_LM",
        threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from lampbox.engine.quiet import quiet_training
        from lampbox.engine.training.lora import lora_config

        if config.lora is None:
            raise LampboxError("an adapter trainer trains LoRA adapters: give it LoRA settings")
        quiet_training()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config = config
        self.context = TrainContext(config, device, resolve_precision(config.precision, device))
        bf16_base = config.bf16_base and self.context.precision == "bf16"
        attention = {"attn_implementation": config.attention} if config.attention else {}
        # a task adapter is merged in fp32 (one rounding to bf16 afterwards, not two)
        load_bf16 = bf16_base and task_adapter is None
        base: Any = AutoModelForCausalLM.from_pretrained(
            model_source, dtype=torch.bfloat16 if load_bf16 else torch.float32, **attention
        )
        if task_adapter is not None:  # the task adapter becomes part of the base (OPPU)
            from peft import PeftModel

            base = PeftModel.from_pretrained(base, task_adapter).merge_and_unload()
        base.requires_grad_(False)
        if bf16_base:
            from lampbox.engine.lm_head import canonical_head_input

            base.to(torch.bfloat16)
            canonical_head_input(base)  # a frozen bf16 head's slow path on sliced positions (lm_head.py)
        elif config.frozen_bf16 and self.context.precision == "bf16":
            from lampbox.engine.training.frozen import hold_frozen_linears_in

            hold_frozen_linears_in(base, torch.bfloat16)  # once, for every adapter
        self.base = base
        self.model_source = model_source
        self.task_type = task_type
        self._lora = lora_config(base, config.lora, task_type)
        self._peft: Any = None  # the PeftModel around the base, made with the first adapter
        self.trained = 0
        self.threads = threads  # torch's CPU threads while an adapter trains (None: the default)
        self.mmap_threshold = ADAPTER_MMAP_THRESHOLD_BYTES  # glibc's while an adapter trains (memory.py)

    def base_weights(self) -> dict[str, Any]:
        """The base's own tensors by name (no adapter's), as they are now (for checks)."""
        return {
            name.replace(".base_layer.", "."): tensor
            for name, tensor in self.base.state_dict().items()
            if "lora_" not in name
        }

    def train_adapter(
        self,
        objective: TrainingObjective,
        folder: Path,
        *,
        work_dir: Path | None = None,
        on_progress: Callable[[TrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        callbacks: Sequence[Any] = (),
    ) -> TrainResult:
        """Train a fresh adapter on `objective`'s examples (its load_model is not called: the
        model is this trainer's base with the new adapter), save it with `objective.save`
        into `folder` (created), then remove it from the base. With checkpoints on, `work_dir`
        must be this adapter's own (a killed training of it resumes from there); None: a
        scratch folder, removed afterwards."""
        from lampbox.engine.training.trainer import train

        with tempfile.TemporaryDirectory(prefix="lampbox-adapter-") as scratch:
            try:
                model, result = train(
                    _OnSharedBase(self, objective), self.config, work_dir or Path(scratch),
                    on_progress=on_progress, should_stop=should_stop, callbacks=callbacks, alone=True,
                    threads=self.threads, mmap_threshold=self.mmap_threshold,
                )  # fmt: skip
                folder.mkdir(parents=True, exist_ok=True)
                objective.save(model, folder)
            finally:
                self._remove_adapter()
        self.trained += 1
        return result

    def _fresh_adapter(self) -> Any:
        """The base with a new adapter (after the core seeded torch: its A matrices follow the
        seed). Under bf16 with the base held in bf16, peft casts the new adapter to the base
        layer's dtype and back to fp32 (its initial A is rounded to bf16 once), the same for
        every adapter."""
        if self._peft is None:
            from peft import get_peft_model

            self._peft = get_peft_model(self.base, self._lora, adapter_name=ADAPTER)
        else:
            self._peft.add_adapter(ADAPTER, self._lora)
            self._peft.set_adapter(ADAPTER)
        return self._peft

    def _remove_adapter(self) -> None:
        if self._peft is not None and ADAPTER in self._peft.peft_config:
            self._peft.delete_adapter(ADAPTER)


class _OnSharedBase:
    """An objective whose model is an AdapterTrainer's base with a fresh adapter; everything
    else (data, collator, loss, dev evaluation, save) is the given objective's."""

    def __init__(self, owner: AdapterTrainer, inner: TrainingObjective) -> None:
        self.owner = owner
        self.inner = inner

    @property
    def dev_metric(self) -> DevMetric | None:
        return self.inner.dev_metric

    @property
    def loss_counts_tokens(self) -> bool:
        return self.inner.loss_counts_tokens

    def load_model(self, context: TrainContext) -> Any:
        return self.owner._fresh_adapter()

    def train_dataset(self) -> Any:
        return self.inner.train_dataset()

    def collator(self, model: Any, context: TrainContext) -> Any:
        return self.inner.collator(model, context)

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any | None:
        return self.inner.loss(model, inputs, forward, num_items)

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        return self.inner.evaluate(model, context)

    def mean_example_tokens(self) -> float:
        return self.inner.mean_example_tokens()

    def save(self, model: Any, folder: Path) -> None:
        self.inner.save(model, folder)
