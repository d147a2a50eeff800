"""ROPG as one TrainingObjective: a bi-encoder (sentence-transformers) scores each question's
candidate items; KD or RL pulls its ranking towards the language model's utilities. Its dev
evaluation is its own ranking against the dev utilities: NDCG (utilities as gains) and
utility@1 (the utility of its top candidate: IPA's task metric at k = 1 among the candidates)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampbox.engine.ropg.retriever import ENCODER_FOLDER
from lampbox.engine.training.objective import DevMetric, TrainContext
from lampbox.errors import LampboxError

METHODS = ("kd", "rl")


@dataclass(frozen=True)
class RankingExample:
    """One question: its retrieval query, its candidates' document texts and their utilities."""

    question_id: str
    query: str
    documents: tuple[str, ...]
    utilities: tuple[float, ...]


def ndcg(scores: Sequence[float], utilities: Sequence[float]) -> float | None:
    """NDCG of the order by `scores` with `utilities` as gains (None when every gain is 0)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ideal = sorted(utilities, reverse=True)
    best = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    if best <= 0:
        return None
    return sum(utilities[i] / math.log2(rank + 2) for rank, i in enumerate(order)) / best


def ranking_metrics(scored: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict[str, float]:
    """Mean NDCG (questions with a non-zero gain) and mean utility@1 over (scores, utilities)."""
    values = [v for v in (ndcg(s, u) for s, u in scored) if v is not None]
    top = [u[max(range(len(s)), key=lambda i: s[i])] for s, u in scored if len(s)]
    return {
        "ndcg": sum(values) / len(values) if values else 0.0,
        "utility_at_1": sum(top) / len(top) if top else 0.0,
    }


class RetrieverObjective:
    """KD or RL training of a sentence-transformers encoder shared by queries and documents."""

    loss_counts_tokens = False
    unused_parameters = True  # a BERT's pooler, loaded but not pooled from (DDP is told)

    def __init__(
        self,
        model_location: str,
        method: str,
        train: Sequence[RankingExample],
        dev: Sequence[RankingExample],
        *,
        temperature: float = 0.1,
        score: str = "cos",
        max_length: int = 256,
    ) -> None:
        if method not in METHODS:
            raise LampboxError(f"ROPG method must be one of {', '.join(METHODS)}, not {method!r}")
        if not temperature > 0:
            raise LampboxError(f"the ROPG temperature must be greater than 0 (got {temperature})")
        self.model_location = model_location
        self.method = method
        self.train = list(train)
        self.dev = list(dev)
        self.temperature = float(temperature)
        self.score = score
        self.max_length = max_length

    @property
    def dev_metric(self) -> DevMetric | None:
        return DevMetric("ndcg", higher_is_better=True) if self.dev else None

    def load_model(self, context: TrainContext) -> Any:
        from sentence_transformers import SentenceTransformer

        from lampbox.engine.quiet import quiet_transformers

        quiet_transformers()
        try:
            model = SentenceTransformer(self.model_location, device=context.device)
        except (OSError, ValueError, KeyError) as error:
            raise LampboxError(
                f"{self.model_location}: not a sentence-transformers encoder ({error})"
            ) from None
        model.max_seq_length = self.max_length
        return model

    def train_dataset(self) -> Any:
        return [
            {"query": e.query, "documents": list(e.documents), "utilities": list(e.utilities)}
            for e in self.train
        ]

    def collator(self, model: Any, context: TrainContext) -> Any:
        def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return {key: [row[key] for row in rows] for key in ("query", "documents", "utilities")}

        return collate

    def scores(self, model: Any, forward: Any, query: str, documents: Sequence[str]) -> Any:
        """The encoder's score of each document for the query (cosine or dot, as it ranks)."""
        return self.batch_scores(model, forward, [query], [documents])[0]

    def batch_scores(self, model: Any, forward: Any, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> list[Any]:
        """`scores` of several questions from one forward pass over all their texts (DDP
        allows one forward per step: under torchrun `forward` is its wrapper)."""
        import torch.nn.functional as F

        device = next(model.parameters()).device
        texts: list[str] = []
        spans = []
        for query, candidates in zip(queries, documents, strict=True):
            spans.append((len(texts), len(candidates)))
            texts += [query, *candidates]
        # sentence-transformers 6 renamed tokenize to preprocess (tokenize still works, with a warning)
        features = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
        features = {
            key: value.to(device) if hasattr(value, "to") else value
            for key, value in features.items()
        }
        vectors = forward(features)["sentence_embedding"]
        if self.score == "cos":
            vectors = F.normalize(vectors, dim=-1)
        return [vectors[start + 1 : start + 1 + count] @ vectors[start] for start, count in spans]

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any:
        import torch

        from lampbox.engine.ropg.kd import kd_loss
        from lampbox.engine.ropg.rl import rl_loss

        losses = []
        all_scores = self.batch_scores(model, forward, inputs["query"], inputs["documents"])
        for scores, utilities in zip(all_scores, inputs["utilities"], strict=True):
            target = torch.tensor(utilities, dtype=scores.dtype, device=scores.device)
            if self.method == "kd":
                losses.append(kd_loss(scores, target, self.temperature))
            else:
                losses.append(rl_loss(scores, target, self.temperature))
        return torch.stack(losses).mean()

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                scored = [
                    (
                        self.scores(model, model, e.query, e.documents).float().tolist(),
                        list(e.utilities),
                    )
                    for e in self.dev
                ]
        finally:
            if was_training:
                model.train()
        return ranking_metrics(scored)

    def mean_example_tokens(self) -> float:
        return 1.0 + (
            sum(len(e.documents) for e in self.train) / len(self.train) if self.train else 0.0
        )

    def save(self, model: Any, folder: Path) -> None:
        model.save(str(folder / ENCODER_FOLDER))
