"""Profile items as extra training questions for a task adapter (`--profile-pairs`).

Each item of a training user's profile becomes one of the task's questions
(`TaskSpec.question_pair`: for commit_subject, the commit message asking for its subject) whose
gold is the item's target, and whose own profile is that user's OTHER, EARLIER items only, so
that a retriever can put k of them in its prompt as it would for a real question without
showing the model the item itself or anything the user wrote after it. A task with 86 train
questions can have 1,600 profile items: the pairs multiply the task adapter's data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from lampbox.engine.retrieval.simple import parse_date
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import LampboxError


def time_order(items: Sequence[ProfileItem]) -> list[ProfileItem]:
    """A user's items oldest first: by date (profile order breaking ties) when every item has a
    YYYY-MM-DD date, else in profile order."""
    try:
        dates = [parse_date(item.date) for item in items]
    except ValueError:
        return list(items)
    return [items[position] for position in sorted(range(len(items)), key=lambda position: (dates[position], position))]


def profile_questions(task: TaskSpec, scheme: str, split: str, profiles: Mapping[str, Sequence[ProfileItem]]) -> list[Question]:
    """One question per profile item with a non-empty target, users in the given order, items
    oldest first: the item as the task's question (its target as the gold), its profile the
    user's items strictly before it in time (`time_order`)."""
    if task.question_templates() is None:
        raise LampboxError(
            f"--profile-pairs: a {task.name} profile item makes no question of the task (its target is the "
            "item's own text); train without it"
        )
    questions = []
    for user_id, items in profiles.items():
        ordered = time_order(items)
        repeated = {item_id for item_id, count in Counter(item.id for item in ordered).items() if count > 1}
        for position, item in enumerate(ordered):
            text, target = task.question_pair(item.fields)
            if not target.strip():
                continue
            # profile:USER:ITEM (the official item id; with the stored key when two items share it)
            question_id = f"profile:{user_id}:{item.id}" + (f":{item.key}" if item.id in repeated else "")
            questions.append(Question(task.name, scheme, split, question_id, user_id, text, target, tuple(ordered[:position])))
    return questions
