"""The RSPG selector as a training objective: a text encoder with a linear head scores each
candidate of a question; trained with KL(softmax(metric / T) || softmax(score / T)).

The encoder is any transformers encoder (the packaged all-MiniLM-L6-v2 by default, offline;
a folder or hub id otherwise), mean-pooled. Pre encodes the configuration's name with its
prompt, Post also its output (pool.candidate_text). Dev evaluation picks the argmax candidate
of each dev question: the selected candidates' mean main metric picks the best checkpoint, and
the success rate (a best candidate picked) is reported beside it. The saved selector is the
encoder and tokenizer (encoder/), the head (head.pt) and selector.json (mode, temperature,
max length, the pool's configurations).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampbox.engine.rspg.pool import QuestionCandidates, candidate_text
from lampbox.engine.training.objective import DevMetric, TrainContext
from lampbox.errors import LampboxError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_LENGTH = 256
SELECTOR_FILE = "selector.json"


def encoder_source(name: str) -> str:
    """What transformers loads for an encoder name: the packaged all-MiniLM-L6-v2 for its
    names (offline), otherwise the folder or hub id as given."""
    from lampbox.engine.retrieval.dense import resolve_encoder_model

    return resolve_encoder_model(name).location


@dataclass(frozen=True)
class EncodedQuestion:
    """A question's candidates tokenized for the selector, with their targets and raw metrics."""

    question_id: str
    input_ids: tuple[tuple[int, ...], ...]  # one per candidate
    targets: tuple[float, ...]  # oriented: higher is better
    metrics: tuple[float, ...]
    best: frozenset[int]


def encode_questions(
    tokenizer: Any, questions: Sequence[QuestionCandidates], mode: str, max_length: int, higher_is_better: bool
) -> list[EncodedQuestion]:
    encoded = []
    for question in questions:
        ids = []
        for answer in question.candidates:
            first, second = candidate_text(answer.configuration, answer.prompt, answer.output, mode)
            # the prompt is cut first; a first text that fills max_length alone is cut too
            room = len(tokenizer(first, add_special_tokens=False)["input_ids"]) + 4 < max_length
            strategy = "only_second" if second and room else "longest_first"
            tokens = tokenizer(first, second or None, truncation=strategy, max_length=max_length)
            ids.append(tuple(tokens["input_ids"][:max_length]))
        encoded.append(EncodedQuestion(
            question.question_id, tuple(ids), tuple(question.targets(higher_is_better)),
            tuple(c.metric for c in question.candidates), frozenset(question.best(higher_is_better)),
        ))  # fmt: skip
    return encoded


def selector_module(encoder: Any) -> Any:
    """The encoder with a linear head: (questions, candidates, tokens) -> (questions, candidates)."""
    import torch

    class Selector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            questions, candidates, width = input_ids.shape
            hidden = self.encoder(
                input_ids=input_ids.view(-1, width), attention_mask=attention_mask.view(-1, width)
            ).last_hidden_state
            mask = attention_mask.view(-1, width, 1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled).view(questions, candidates)

    return Selector()


def kl_loss(scores: Any, targets: Any, temperature: float) -> Any:
    """KL(softmax(targets / T) || softmax(scores / T)), averaged over questions."""
    import torch.nn.functional as F

    target = F.softmax(targets / temperature, dim=-1)
    return F.kl_div(F.log_softmax(scores / temperature, dim=-1), target, reduction="batchmean")


class PadCandidates:
    """Rows of EncodedQuestion -> input_ids and attention_mask (questions, candidates, longest)
    and the targets (questions, candidates)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[EncodedQuestion]) -> dict[str, Any]:
        import torch

        width = max(len(ids) for row in rows for ids in row.input_ids)
        candidates = len(rows[0].input_ids)
        input_ids = torch.full((len(rows), candidates, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), candidates, width), dtype=torch.long)
        for q, row in enumerate(rows):
            for c, ids in enumerate(row.input_ids):
                input_ids[q, c, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[q, c, : len(ids)] = 1
        targets = torch.tensor([row.targets for row in rows], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": mask, "targets": targets}


class SelectorObjective:
    """RSPG-Pre or RSPG-Post on the training core."""

    loss_counts_tokens = False
    unused_parameters = True  # a BERT's pooler, loaded but not pooled from (DDP is told)

    def __init__(
        self,
        encoder: str,
        tokenizer: Any,
        train: Sequence[EncodedQuestion],
        dev: Sequence[EncodedQuestion] = (),
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        higher_is_better: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if not temperature > 0:
            raise LampboxError(f"the temperature must be greater than 0 (got {temperature})")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.train = list(train)
        self.dev = list(dev)
        self.temperature = temperature
        self.higher_is_better = higher_is_better
        self.settings = dict(settings or {})  # written into selector.json (mode, pool, ...)

    @property
    def dev_metric(self) -> DevMetric | None:
        return DevMetric("selected", self.higher_is_better) if self.dev else None

    def load_model(self, context: TrainContext) -> Any:
        from transformers import AutoModel

        from lampbox.engine.quiet import quiet_transformers

        quiet_transformers()
        return selector_module(AutoModel.from_pretrained(self.encoder))

    def train_dataset(self) -> Any:
        return self.train

    def collator(self, model: Any, context: TrainContext) -> Any:
        pad = self.tokenizer.pad_token_id
        return PadCandidates(int(pad if pad is not None else 0))

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any:
        scores = forward(inputs["input_ids"], inputs["attention_mask"])
        return kl_loss(scores.float(), inputs["targets"].to(scores.device), self.temperature)

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        chosen = choose(model, self.dev, PadCandidates(int(self.tokenizer.pad_token_id or 0)))
        selected = [row.metrics[index] for row, index in zip(self.dev, chosen, strict=True)]
        hits = sum(index in row.best for row, index in zip(self.dev, chosen, strict=True))
        return {"selected": sum(selected) / len(selected), "success": hits / len(self.dev)}

    def mean_example_tokens(self) -> float:
        return sum(sum(len(ids) for ids in row.input_ids) for row in self.train) / max(len(self.train), 1)

    def save(self, model: Any, folder: Path) -> None:
        import torch

        model.encoder.save_pretrained(str(folder / "encoder"))
        self.tokenizer.save_pretrained(str(folder / "encoder"))
        torch.save(model.head.state_dict(), folder / "head.pt")
        settings = {**self.settings, "temperature": self.temperature, "higher_is_better": self.higher_is_better}
        (folder / SELECTOR_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def probabilities(model: Any, rows: Sequence[EncodedQuestion], collate: PadCandidates, temperature: float = 1.0, batch_size: int = 8) -> list[list[float]]:
    """Each question's softmax(score / T) over its candidates (the model in eval mode, no grad)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    found: list[list[float]] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = collate(rows[start : start + batch_size])
                scores = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float()
                found += torch.softmax(scores / temperature, dim=-1).tolist()
    finally:
        if was_training:
            model.train()
    return found


def choose(model: Any, rows: Sequence[EncodedQuestion], collate: PadCandidates) -> list[int]:
    """The most probable candidate of each question (the first on a tie)."""
    return [max(range(len(p)), key=lambda index, p=p: (p[index], -index)) for p in probabilities(model, rows, collate)]


@dataclass
class LoadedSelector:
    model: Any
    tokenizer: Any
    settings: dict[str, Any]

    @property
    def mode(self) -> str:
        return str(self.settings["mode"])

    @property
    def configurations(self) -> list[str]:
        return list(self.settings["configurations"])


def load_selector(folder: Path) -> LoadedSelector:
    """A saved selector, ready to score (CPU, eval mode)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from lampbox.engine.quiet import quiet_transformers

    quiet_transformers()
    try:
        settings = json.loads((folder / SELECTOR_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LampboxError(f"{folder} is not a saved RSPG selector ({error})") from None
    model = selector_module(AutoModel.from_pretrained(str(folder / "encoder")))
    model.head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu"))
    model.eval()
    return LoadedSelector(model, AutoTokenizer.from_pretrained(str(folder / "encoder")), settings)

