"""What a training method hands the core: its model, data, loss, dev evaluation and save.

The core (`trainer.train`) knows how to train (transformers' Trainer, checkpoints that count
only once complete, resume, torchrun, progress events, precision, the CPU speed-ups for frozen
weights); an objective knows what is trained. IPA fine-tuning (`sft.SFTObjective`) and
Fusion-in-Decoder (`fid.FiDObjective`) are the first two; per-user adapters (OPPU), a
retriever (ROPG) and a selector (RSPG) plug in the same way, each as one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lampbox.engine.tasks import TaskSpec
    from lampbox.engine.training.trainer import TrainConfig


@dataclass(frozen=True)
class TrainContext:
    """Where and how the core trains: what an objective needs to build its model and evaluate."""

    config: TrainConfig
    device: str  # "cpu" or "cuda"
    precision: str  # resolved: "bf16" or "fp32"


@dataclass(frozen=True)
class DevMetric:
    """The dev metric that picks the best checkpoint (a key of `evaluate`'s result)."""

    name: str
    higher_is_better: bool


@runtime_checkable
class TrainingObjective(Protocol):
    """A method that trains, as the core sees it.

    The core calls, in order: `load_model` (after seeding, so random initialisations follow
    the seed), `train_dataset` and `collator`, then per batch `loss`, per evaluation
    `evaluate`; the caller saves the returned model with `save`.

    Optional: an objective whose model holds trainable parameters its loss never reaches (a
    BERT encoder's pooler under mean pooling) sets `unused_parameters = True`, so that DDP
    looks for them at each step under torchrun (it fails otherwise); the core reads it with
    getattr, False by default."""

    @property
    def dev_metric(self) -> DevMetric | None:
        """The metric `evaluate` reports that picks the best checkpoint; None: no dev evaluation."""
        ...

    @property
    def loss_counts_tokens(self) -> bool:
        """`loss` divides by the Trainer's count of target tokens in the whole optimizer step
        (`num_items`, all ranks): the core then scales it by the number of processes, since
        DDP averages gradients over ranks (transformers' own losses do the same)."""
        ...

    def load_model(self, context: TrainContext) -> Any:
        """The model to train: its trainable parameters are what changes (a peft model whose
        adapter alone trains, or a whole model)."""
        ...

    def train_dataset(self) -> Any:
        """A map-style dataset of dicts (with `input_ids` when length-grouped batches apply)."""
        ...

    def collator(self, model: Any, context: TrainContext) -> Any:
        """Turns a list of dataset rows into a batch of tensors."""
        ...

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any | None:
        """The batch's loss, or None for the model's own (`model(**inputs).loss`). `model` is
        the unwrapped model, `forward` what runs its forward (DDP's wrapper under torchrun)."""
        ...

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        """Dev metrics of the model as it is now (the core logs them and keeps the best)."""
        ...

    def mean_example_tokens(self) -> float:
        """Mean tokens of a training example (for the tokens-seen figure)."""
        ...

    def save(self, model: Any, folder: Path) -> None:
        """Write the trained result into `folder` (which exists)."""
        ...


def score_outputs(task: TaskSpec, outputs: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """The task's official metrics for generated dev outputs (stripped, as runs score them)."""
    from lampbox.engine.metrics import Scorer, aggregate

    scores = Scorer(task).score_all(zip((o.strip() for o in outputs), golds, strict=True))
    return {key: float(value) for key, value in aggregate(task, scores).items()}


def task_dev_metric(task: TaskSpec, has_dev: bool) -> DevMetric | None:
    """The task's main metric as the dev metric (None without dev examples)."""
    return DevMetric(task.main_metric, task.higher_is_better()) if has_dev else None


class TaskExamplesObjective:
    """The part IPA and FiD share: one task's training and dev examples for a model loaded
    from `model_source`, scored on dev by the task's official metric."""

    def __init__(
        self,
        model_source: str,
        tokenizer: Any,
        task: TaskSpec,
        train_examples: Sequence[Any],
        dev_examples: Sequence[Any] = (),
    ) -> None:
        self.model_source = model_source
        self.tokenizer = tokenizer
        self.task = task
        self.train_examples = list(train_examples)
        self.dev_examples = list(dev_examples)

    @property
    def dev_metric(self) -> DevMetric | None:
        return task_dev_metric(self.task, bool(self.dev_examples))
