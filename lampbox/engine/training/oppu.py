"""OPPU (One PEFT Per User): a user's adapter is an SFTObjective on that user's profile items.

Each item becomes the task's (input, target) training pair (`TaskSpec.profile_pair`: for a
generation task such as LaMP_7 or commit_subject, plain language modelling of the item's
text), and nothing else: no other user's items, no question of the evaluated split. The
adapters are trained one after another on one loaded base with the task adapter merged
(`adapters.AdapterTrainer`), each from the same clean base.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.training.data import encode_profile_examples
from lampbox.engine.training.sft import SFTObjective
from lampbox.engine.types import ProfileItem, Question


def user_profiles(questions: Iterable[Question]) -> dict[str, list[ProfileItem]]:
    """Each user's profile items (the union of their questions' profiles, by item key, in the
    order first seen), users in the order of their first question."""
    profiles: dict[str, dict[str, ProfileItem]] = {}
    for question in questions:
        items = profiles.setdefault(question.user_id, {})
        for item in question.profile:
            items.setdefault(item.key, item)
    return {user: list(items.values()) for user, items in profiles.items()}


def user_objective(
    model_source: str,
    tokenizer: Any,
    chat: bool,
    task: TaskSpec,
    items: Sequence[ProfileItem],
    max_target_tokens: int = 256,
) -> SFTObjective:
    """The objective of one user's adapter: their profile items as training pairs, no dev set
    (a user's history is all there is to learn from)."""
    examples = encode_profile_examples(tokenizer, chat, task, items, max_target_tokens)
    return SFTObjective(model_source, tokenizer, task, examples)
