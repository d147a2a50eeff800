"""A generated LaMP_7-format dataset with many users, imported through the real importer.

The tweets are random words (no meaning); they exist to give the store the shape of a big
LaMP split (10,000 users, small profiles) for the TUI benchmark. Nothing here is LaMP data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "morning",
    "coffee",
    "rain",
    "city",
    "train",
    "music",
    "friends",
    "weekend",
    "game",
    "news",
    "phone",
    "work",
    "team",
    "love",
    "late",
    "sleep",
    "summer",
    "winter",
    "movie",
    "book",
    "dinner",
    "walk",
    "park",
    "dog",
    "cat",
    "happy",
    "tired",
    "today",
    "tomorrow",
    "finally",
    "again",
    "never",
    "always",
    "thanks",
    "great",
    "bad",
    "good",
    "new",
    "old",
    "show",
    "live",
    "school",
    "home",
    "road",
    "trip",
    "beach",
]
LAMP7_PREFIX = "Paraphrase the following tweet without any explanation before or after it: "


def _tweet(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))


def write_lamp7_files(folder: Path, n_users: int, seed: int = 7) -> Path:
    """Write dev_questions.json and dev_outputs.json for `n_users` users; return the folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    questions, golds = [], []
    for user in range(n_users):
        user_id = f"user{user:05d}"
        history = [
            {
                "id": f"{user_id}-t{index}",
                "text": _tweet(rng),
                "date": f"2020-{1 + index % 12:02d}-{1 + index % 28:02d}",
            }
            for index in range(rng.randint(4, 24))
        ]
        for number in range(rng.randint(1, 3)):
            qid = f"{user_id}-q{number}"
            questions.append(
                {
                    "id": qid,
                    "user_id": user_id,
                    "input": LAMP7_PREFIX + _tweet(rng),
                    "profile": history[: len(history) - number],
                }
            )
            golds.append({"id": qid, "output": _tweet(rng)})
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    (folder / "dev_outputs.json").write_text(json.dumps({"task": "LaMP_7", "golds": golds}))
    return folder


def build_synthetic_store(path: Path, n_users: int = 10_000) -> Path:
    """A store at `path` holding the generated LaMP_7 dev split (reused if already built)."""
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    if path.exists():
        return path
    folder = write_lamp7_files(path.parent / f"synthetic-lamp7-{n_users}", n_users)
    partial = path.with_suffix(".partial.duckdb")
    partial.unlink(missing_ok=True)
    with Store(partial) as store:
        import_path(store, folder, task_name="LaMP_7", scheme="user")
    partial.rename(path)
    return path
