"""The official LaMP metrics: hand-computed cases, sklearn / rouge-score references, real data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lampbox.engine.metrics import (
    Scorer,
    aggregate,
    evaluate,
    higher_is_better,
    id_mismatch,
    macro_f1,
    official_result,
    question_key,
    question_scores,
    score_questions,
)
from lampbox.engine.tasks import BUILTIN_TASKS, load_task_json
from lampbox.errors import LampboxError

LAMP_1 = BUILTIN_TASKS["LaMP_1"]
LAMP_2 = BUILTIN_TASKS["LaMP_2"]
LAMP_3 = BUILTIN_TASKS["LaMP_3"]
LAMP_7 = BUILTIN_TASKS["LaMP_7"]


def by_id(values: list[str]) -> dict[str, str]:
    return {f"q{index}": value for index, value in enumerate(values)}


# -- classification ---------------------------------------------------------------------------


def test_classification_accuracy_and_macro_f1_by_hand() -> None:
    golds = by_id(["[1]", "[1]", "[2]", "[2]"])
    # q0 right; q1 says [2] (padded, stripped); q2 says "2", which is no label (-1); q3 right.
    preds = by_id(["[1]", " [2] ", "2", "[2]"])
    metrics = evaluate(LAMP_1, golds, preds)
    assert metrics["accuracy"] == 0.5
    # [1]: tp 1, predicted 1, gold 2 -> 2/3.  [2]: tp 1, predicted 2, gold 2 -> 1/2.
    assert metrics["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-15)
    assert list(metrics) == ["accuracy", "f1"]


def test_not_a_label_is_wrong_but_not_a_class() -> None:
    golds = by_id(["comedy", "comedy", "action", "action"])
    # "Comedy" is not a label (matching is case-sensitive), nor is "drama": both are -1.
    preds = by_id(["comedy", "Comedy", "drama", "action"])
    scores = [question_scores(LAMP_2, preds[qid], golds[qid]) for qid in golds]
    assert [s["predicted_label"] for s in scores] == [2.0, -1.0, -1.0, 3.0]
    assert [s["accuracy"] for s in scores] == [1.0, 0.0, 0.0, 1.0]
    metrics = aggregate(LAMP_2, scores)
    assert metrics["accuracy"] == 0.5
    # comedy: tp 1, predicted 1, gold 2 -> 2/3; action likewise; -1 adds no false positive to
    # any class; the 13 labels nobody used score 0 and still count: (2/3 + 2/3) / 15.
    assert metrics["f1"] == pytest.approx((2 / 3 + 2 / 3) / 15, abs=1e-15)


def test_two_non_labels_count_as_a_match_as_in_the_official_script() -> None:
    assert question_scores(LAMP_2, "drama", "horror")["accuracy"] == 1.0
    # ...which is why evaluate refuses golds that are not labels, naming the task they fit.
    with pytest.raises(
        LampboxError, match=r"2 of 2 gold outputs are not LaMP_2 labels.*fit LaMP_2N"
    ):
        evaluate(LAMP_2, by_id(["sports", "travel"]), by_id(["sports", "travel"]))


def test_macro_f1_matches_sklearn_on_random_labels() -> None:
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    rng = np.random.default_rng(7)
    for trial in range(200):
        n_labels = int(rng.integers(1, 16))
        size = int(rng.integers(1, 60))
        gold = rng.integers(-1, n_labels, size)
        predicted = rng.integers(-1, n_labels, size)
        if trial % 3 == 0:
            predicted = np.where(rng.random(size) < 0.6, gold, predicted)
        with warnings.catch_warnings():  # the official call keeps sklearn's zero_division="warn"
            warnings.simplefilter("ignore")
            expected = f1_score(gold, predicted, labels=list(range(n_labels)), average="macro")
        assert macro_f1(predicted.tolist(), gold.tolist(), n_labels) == pytest.approx(
            expected, abs=1e-12
        )


def test_classification_on_real_golds_matches_sklearn(git_commits: Path) -> None:
    metrics_module = pytest.importorskip("sklearn.metrics")
    spec = load_task_json(git_commits / "commit_area" / "task.json")
    golds = {
        g["id"]: g["output"]
        for g in json.loads((git_commits / "commit_area" / "dev_outputs.json").read_text())["golds"]
    }
    # A fixed guess per position: some right, some wrong, some not labels at all.
    guesses = [*spec.labels, "Doc", "no idea"]
    preds = {qid: guesses[index % len(guesses)] for index, qid in enumerate(golds)}
    metrics = evaluate(spec, golds, preds)
    gold_index = [spec.labels.index(golds[qid]) for qid in golds]
    pred_index = [
        spec.labels.index(preds[qid]) if preds[qid] in spec.labels else -1 for qid in golds
    ]
    assert metrics["accuracy"] == pytest.approx(
        metrics_module.accuracy_score(gold_index, pred_index), abs=1e-15
    )
    expected_f1 = metrics_module.f1_score(
        gold_index, pred_index, labels=list(range(15)), average="macro"
    )
    assert metrics["f1"] == pytest.approx(expected_f1, abs=1e-12)


# -- rating -----------------------------------------------------------------------------------


def test_rating_mae_and_rmse_by_hand_with_the_unparsable_fallback() -> None:
    golds = by_id(["1", "2", "3", "5"])
    # errors: 0, 2, 0.5, and "abc" for gold 5 falls back to 1 (the farther end): 4.
    preds = by_id(["1", "4", " 3.5 ", "abc"])
    metrics = evaluate(LAMP_3, golds, preds)
    assert metrics["mae"] == 6.5 / 4
    assert metrics["rmse"] == math.sqrt((0 + 4 + 0.25 + 16) / 4) == 2.25
    assert official_result(metrics) == {"MAE": 1.625, "RMSE": 2.25}


@pytest.mark.parametrize(
    ("prediction", "gold", "error"),
    [
        ("five", "2", 3.0),  # -> 5
        ("five", "4", 3.0),  # -> 1
        ("five", "3", 2.0),  # a tie: the official code picks 5
        ("", "1", 4.0),  # -> 5
        ("nan", "1", 4.0),  # non-finite counts as unparsable
        ("4.0", "4", 0.0),
        ("6", "5", 1.0),  # parsable values are used as they are, even out of range
    ],
)
def test_rating_parsing(prediction: str, gold: str, error: float) -> None:
    scores = question_scores(LAMP_3, prediction, gold)
    assert scores == {"abs_error": error, "squared_error": error * error}


def test_rating_golds_must_be_numbers() -> None:
    with pytest.raises(LampboxError, match="gold rating 'five' is not a number"):
        evaluate(LAMP_3, by_id(["five"]), by_id(["5"]))


def test_mae_and_rmse_match_sklearn() -> None:
    metrics_module = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    golds = [str(value) for value in rng.integers(1, 6, 300)]
    preds = [
        str(value) if index % 7 else "x" for index, value in enumerate(rng.integers(1, 6, 300))
    ]
    metrics = evaluate(LAMP_3, by_id(golds), by_id(preds))
    gold_values = [float(value) for value in golds]
    pred_values = [
        float(p) if p != "x" else (1.0 if abs(1 - g) > abs(5 - g) else 5.0)
        for p, g in zip(preds, gold_values, strict=True)
    ]
    assert metrics["mae"] == pytest.approx(
        metrics_module.mean_absolute_error(gold_values, pred_values), abs=1e-12
    )
    rmse = math.sqrt(metrics_module.mean_squared_error(gold_values, pred_values))
    assert metrics["rmse"] == pytest.approx(rmse, abs=1e-12)


# -- generation -------------------------------------------------------------------------------


def test_rouge_by_hand() -> None:
    # "The cat!" -> [the, cat] against [the, cat, sat]: P 1, R 2/3, F 0.8 (ROUGE-1 and -L).
    # "d c b a" against "a b c d": every unigram matches (F 1), the LCS is one word (F 1/4).
    golds = by_id(["the cat sat", "a b c d"])
    preds = by_id(["  The cat! ", "d c b a"])
    scores = score_questions(LAMP_7, golds, preds)
    assert scores["q0"] == pytest.approx({"rouge-1": 0.8, "rouge-L": 0.8}, abs=1e-15)
    assert scores["q1"] == pytest.approx({"rouge-1": 1.0, "rouge-L": 0.25}, abs=1e-15)
    metrics = evaluate(LAMP_7, golds, preds)
    assert metrics == pytest.approx({"rouge-1": 0.9, "rouge-L": 0.525}, abs=1e-15)


def test_rouge_uses_no_stemmer_and_scores_empty_output_zero() -> None:
    assert question_scores(LAMP_7, "run dog", "running dogs") == {"rouge-1": 0.0, "rouge-L": 0.0}
    assert question_scores(LAMP_7, "", "a tweet") == {"rouge-1": 0.0, "rouge-L": 0.0}


def _commit_subject(git_commits: Path):  # noqa: ANN202 - (spec, golds, preds)
    folder = git_commits / "commit_subject"
    spec = load_task_json(folder / "task.json")
    golds = {
        g["id"]: g["output"] for g in json.loads((folder / "dev_outputs.json").read_text())["golds"]
    }
    questions = json.loads((folder / "dev_questions.json").read_text())
    # A simple baseline: the first 8 words of the commit message.
    preds = {q["id"]: " ".join(q["input"].split(":", 1)[1].split()[:8]) for q in questions}
    return spec, golds, preds


def test_rouge_mean_agrees_with_the_official_bootstrap(git_commits: Path) -> None:
    from rouge_score import rouge_scorer, scoring

    spec, golds, preds = _commit_subject(git_commits)
    metrics = evaluate(spec, golds, preds)
    # What HF evaluate's rouge does for the official script: score_multi over [gold], then
    # the median of 1000 bootstrap means (unseeded there; seeded here to stay reproducible).
    scorer = rouge_scorer.RougeScorer(
        ["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False
    )
    official_scores = [
        scorer.score_multi([golds[qid].strip()], preds[qid].strip()) for qid in golds
    ]
    ours = score_questions(spec, golds, preds)
    for qid, official in zip(golds, official_scores, strict=True):
        assert ours[qid] == {
            "rouge-1": official["rouge1"].fmeasure,
            "rouge-L": official["rougeL"].fmeasure,
        }
    for seed in range(5):
        np.random.seed(seed)
        aggregator = scoring.BootstrapAggregator()
        for score in official_scores:
            aggregator.add_scores(score)
        result = aggregator.aggregate()
        assert abs(metrics["rouge-1"] - result["rouge1"].mid.fmeasure) < 0.001
        assert abs(metrics["rouge-L"] - result["rougeL"].mid.fmeasure) < 0.001
    assert 0.1 < metrics["rouge-L"] < metrics["rouge-1"] < 0.5  # a real, non-trivial score


# -- checks and helpers -----------------------------------------------------------------------


def test_id_mismatch_says_how_many_and_gives_an_example() -> None:
    golds = by_id(["a", "b", "c"])
    assert id_mismatch(golds, dict(golds)) is None
    preds = {"q0": "a", "zz": "x"}
    problem = id_mismatch(golds, preds)
    assert problem == (
        "ids do not match the golds: 2 gold ids without a prediction (e.g. 'q1'); "
        "1 prediction id not in the golds (e.g. 'zz')"
    )
    with pytest.raises(LampboxError, match="2 gold ids without a prediction"):
        evaluate(LAMP_7, golds, preds)


def test_aggregate_refuses_nothing_and_foreign_scores() -> None:
    with pytest.raises(LampboxError, match="no questions"):
        aggregate(LAMP_7, [])
    with pytest.raises(LampboxError, match="lack abs_error, squared_error"):
        aggregate(LAMP_3, [{"rouge-1": 1.0, "rouge-L": 1.0}])


def test_aggregate_over_a_subset_of_stored_scores() -> None:
    scorer = Scorer(LAMP_3)
    scores = scorer.score_all([("5", "1"), ("1", "1"), ("3", "1")])
    assert aggregate(LAMP_3, scores[:2]) == {"mae": 2.0, "rmse": math.sqrt(8)}


def test_progress_is_reported_up_to_the_total() -> None:
    seen: list[tuple[int, int]] = []
    Scorer(LAMP_1).score_all(
        [("[1]", "[1]")] * 600, on_progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(256, 600), (512, 600), (600, 600)]


def test_directions_and_names() -> None:
    assert (
        not higher_is_better("mae")
        and not higher_is_better("RMSE")
        and not higher_is_better("abs_error")
    )
    assert higher_is_better("accuracy") and higher_is_better("rouge-L")
    assert question_key(LAMP_3) == "abs_error" and question_key(LAMP_1) == "accuracy"
    assert question_key(LAMP_7) == "rouge-1"
    assert official_result({"accuracy": 1, "f1": 0.5}) == {"accuracy": 1.0, "f1": 0.5}


def test_importing_metrics_loads_no_scorer_library() -> None:
    code = (
        "import sys, lampbox.engine.metrics\n"
        "print(','.join(n for n in ('rouge_score', 'nltk', 'sklearn') if n in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
