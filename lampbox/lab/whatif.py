"""Saved what-ifs: one edited question on one pane's configuration, kept as a small run.

A saved what-if is a run of kind 'whatif' (never benchmark data: `list_runs` and `load_run`
leave it out, and its key is not any RunSpec's): its spec is the pane's RunSpec JSON with the
edit, the question and the original (unedited) output and scores beside it; its one
prediction is the edited question's, scored against the gold when there is one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lampbox.engine import scoring
from lampbox.engine.fingerprint import task_fingerprint
from lampbox.engine.types import Prediction, Question
from lampbox.engine.whatif import WhatIf, score_delta
from lampbox.errors import LampboxError
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.lab.specs import run_key
from lampbox.store import runs as run_store
from lampbox.store.core import Store

WHATIF_KIND = "whatif"


@dataclass(frozen=True)
class SavedWhatIf:
    """A what-if read back from the store."""

    run_key: str
    label: str
    task: str
    configuration: str  # the pane's RunSpec label
    edit: WhatIf
    question_id: str
    user_id: str
    prediction: Prediction
    original_output: str | None
    original_scores: dict[str, float]
    created_at: Any

    @property
    def delta(self) -> dict[str, float]:
        """Edited minus original score per metric (empty without a gold or an original)."""
        return score_delta(self.prediction.scores, self.original_scores)


def whatif_key(edit: WhatIf, question_id: str, base_key: str) -> str:
    """A saved what-if's run key: the pane's run key, the question and the edit."""
    data = {"kind": WHATIF_KIND, "run": base_key, "question": question_id, "whatif": edit.to_json()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def save_whatif(
    store: Store,
    prepared: PreparedPrompt,
    question: Question,
    output: str,
    original_output: str | None = None,
) -> str:
    """Keep a pane's edited output (and the unedited question's output beside it) as a run of
    kind 'whatif'; returns its run key. Saving the same what-if again replaces it."""
    if not prepared.is_whatif or prepared.edit is None or prepared.question is None:
        raise LampboxError("only an edited question is saved as a what-if")
    spec = prepared.spec
    task = store.task(spec.task)
    edit = prepared.edit
    asked = prepared.question
    predictions = scoring.predictions(
        task, [asked], [prepared.input], [prepared.items], [output], spec.postprocess
    )
    original = None
    if original_output is not None and not edit.new_question:
        original = {
            "output": original_output,
            "scores": scoring.score_output(task, original_output, question.gold, spec.postprocess),
        }
    spec_json = {
        **spec.to_json(),
        "kind": WHATIF_KIND,
        "whatif": edit.to_json(),
        "question_id": question.id,
        "user_id": question.user_id,
        "configuration": spec.label,
        "original": original,
    }
    key = whatif_key(edit, question.id, run_key(spec, task))
    label = f"what-if {question.id} ({edit.describe()}) · {spec.label}"
    run_store.start_run(store, key, label, spec_json, 1, task_fingerprint(task), kind=WHATIF_KIND)
    users = scoring.user_scores(task, [asked], predictions)
    run_store.finish_run(
        store, key, scoring.run_metrics(task, predictions), predictions, users, None
    )
    return key


def list_whatifs(store: Store, task: str | None = None) -> list[SavedWhatIf]:
    """The saved what-ifs, newest first."""
    saved = []
    for run in run_store.list_runs(store, task, kind=WHATIF_KIND):
        if run.status != "finished":
            continue
        spec = run.spec
        predictions = run_store.run_predictions(store, run.run_key)
        if not predictions:
            continue
        original = spec.get("original") or {}
        saved.append(
            SavedWhatIf(
                run.run_key,
                run.label,
                str(spec["task"]),
                str(spec.get("configuration", "")),
                WhatIf.from_json(spec.get("whatif", {})),
                str(spec.get("question_id", predictions[0].question_id)),
                str(spec.get("user_id", predictions[0].user_id)),
                predictions[0],
                original.get("output"),
                dict(original.get("scores", {})),
                run.created_at,
            )
        )
    return saved
