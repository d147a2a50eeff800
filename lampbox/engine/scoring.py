"""From raw outputs to scored predictions: post-processing, per-question and per-user scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lampbox.engine.methods import MethodInput
from lampbox.engine.metrics import Scorer, aggregate, question_key
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Prediction, ProfileItem, Question, UserScore

POSTPROCESSORS = ("first-line", "strip-quotes")


def postprocess(text: str, steps: Sequence[str]) -> str:
    """Raw output stripped, then the run's recorded post-processing steps."""
    result = text.strip()
    for step in steps:
        if step == "first-line":
            result = next((line.strip() for line in result.splitlines() if line.strip()), "")
        elif step == "strip-quotes":
            while len(result) >= 2 and result[0] == result[-1] and result[0] in "\"'`":
                result = result[1:-1].strip()
    return result


def predictions(
    task: TaskSpec,
    questions: Sequence[Question],
    inputs: Sequence[MethodInput | None],
    selected: Sequence[Sequence[ProfileItem]],
    raw_outputs: Sequence[str],
    steps: Sequence[str] = (),
    records: Sequence[Mapping[str, Any]] | None = None,
) -> list[Prediction]:
    """One scored Prediction per question (scores empty where the gold is unknown); `records`
    (how each output was decoded, e.g. every label's log-likelihood) go into what it kept."""
    scorer = Scorer(task)
    per_question = question_key(task)
    results = []
    decoded = records if records is not None else [{}] * len(questions)
    for question, entry, items, raw, record in zip(questions, inputs, selected, raw_outputs, decoded, strict=True):
        output = postprocess(raw, steps)
        scores = scorer.score(output, question.gold) if question.gold is not None else {}
        prompt = None if entry is None else entry.prompt
        keys = tuple(item.key for item in items) if prompt is None else prompt.item_keys
        ids = {item.key: item.id for item in items}
        results.append(
            Prediction(
                question_id=question.id,
                user_id=question.user_id,
                prompt=None if prompt is None else prompt.text,
                item_keys=keys,
                item_ids=tuple(ids[key] for key in keys if key in ids),
                kept={
                    **({} if prompt is None else {k: v for k, v in prompt.to_json().items() if k != "text"}),
                    **record,
                },
                prompt_tokens=None if prompt is None else prompt.token_count,
                raw_output=raw,
                output=output,
                gold=question.gold,
                scores=scores,
                main_score=scores.get(per_question),
            )
        )
    return results


def run_metrics(task: TaskSpec, scored: Sequence[Prediction]) -> dict[str, float]:
    """The task's official metrics over predictions; empty unless every gold is known."""
    with_gold = [prediction.scores for prediction in scored if prediction.gold is not None]
    return aggregate(task, with_gold) if with_gold and len(with_gold) == len(scored) else {}


def user_scores(
    task: TaskSpec, questions: Sequence[Question], scored: Sequence[Prediction]
) -> list[UserScore]:
    """Each user's metrics over their questions, in order of first appearance."""
    by_user: dict[str, list[int]] = {}
    for index, question in enumerate(questions):
        by_user.setdefault(question.user_id, []).append(index)
    rows = []
    for user, indices in by_user.items():
        metrics = run_metrics(task, [scored[index] for index in indices])
        profile = sum(len(questions[index].profile) for index in indices) / len(indices)
        rows.append(UserScore(user, len(indices), profile, metrics, metrics.get(task.main_metric)))
    return rows


def score_output(
    task: TaskSpec, output: str, gold: str | None, steps: Sequence[str] = ()
) -> dict[str, float]:
    """Per-question scores of one output against the gold (empty when the gold is unknown)."""
    if gold is None:
        return {}
    return Scorer(task).score(postprocess(output, steps), gold)
