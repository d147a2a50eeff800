"""A tiny commit_subject-shaped dataset for the OPPU tests: ann and bob have history, cyd has
none; six train questions of another user (tom)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TASK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "git-commits" / "commit_subject" / "task.json"
INPUT = "Generate a subject for the following commit message: "


def _item(key: str, title: str, text: str) -> dict[str, str]:
    return {"id": key, "title": title, "text": text, "date": "2024-01-01"}


PROFILES = {
    "ann": [_item("a1", "parser: fix crash", "The parser crashed on empty input."),
            _item("a2", "docs: fix typo", "A typo in the manual."),
            _item("a3", "parser: speed up", "Parsing is faster now.")],
    "bob": [_item("b1", "diff: colour moved lines", "Moved lines get their own colour."),
            _item("b2", "diff: add --stat width", "The width of the stat can be set.")],
    "cyd": [],
}  # fmt: skip


def oppu_dataset(folder: Path) -> Path:
    """commit_subject's task.json with 6 train questions and one dev question per user."""
    if not TASK.is_file():
        pytest.skip(f"stand-in data not found at {TASK}")
    folder.mkdir()
    shutil.copy(TASK, folder / "task.json")
    train = [{"id": f"t{i}", "user_id": "tom", "input": f"{INPUT}change number {i}", "profile": PROFILES["ann"][:2]} for i in range(6)]
    dev = [{"id": f"d-{user}", "user_id": user, "input": f"{INPUT}fix the {user} bug", "profile": items} for user, items in PROFILES.items()]
    for split, questions in (("train", train), ("dev", dev)):
        (folder / f"{split}_questions.json").write_text(json.dumps(questions))
        golds = [{"id": q["id"], "output": f"subject {q['id']}"} for q in questions]
        (folder / f"{split}_outputs.json").write_text(json.dumps({"task": "commit_subject", "golds": golds}))
    return folder
