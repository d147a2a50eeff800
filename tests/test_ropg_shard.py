"""ROPG feedback sharded over torchrun's ranks: the dealing of questions to ranks, and 2 CPU
processes computing each (question, item) pair once between them, rank 0 storing what one
process stores. The generator is a plugin backend (a dummy that logs each request it
generates, per rank), installed as in tests/test_plugins.py."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_plugins import install_plugin, with_plugin
from test_ropg import tiny_st_encoder  # noqa: F401  (the fixture, shared)

from lampbox.lab.ranks import deal


def test_deal_is_balanced_deterministic_disjoint_and_covering() -> None:
    assert deal([3, 1, 1, 1], 2) == [[0], [1, 2, 3]]  # the heavy question alone, the light ones together
    assert deal([2, 2, 2, 2], 2) == [[0, 2], [1, 3]]  # ties: the lowest part first
    assert deal([5, 1], 1) == [[0, 1]] and deal([], 3) == [[], [], []]
    assert deal([1], 3) == [[0], [], []]
    rng = random.Random(0)
    for _ in range(200):
        weights = [rng.randint(0, 20) for _ in range(rng.randint(0, 60))]
        parts = rng.randint(1, 8)
        shares = deal(weights, parts)
        assert shares == deal(list(weights), parts)  # the same on every rank
        assert len(shares) == parts and all(share == sorted(share) for share in shares)
        dealt = [index for share in shares for index in share]
        assert sorted(dealt) == list(range(len(weights)))  # each index in exactly one share
        loads = [sum(weights[i] for i in share) for share in shares]
        assert max(loads) - min(loads) <= max(weights, default=0)  # no share heavier by more than one question
    with pytest.raises(ValueError, match="at least one part"):
        deal([1], 0)


PLUGIN = '''
"""A dummy generator that logs each request it generates: rank, request, and whether this
process holds a .duckdb file open while generating."""
import hashlib, os
from pathlib import Path

from lampbox.engine.generation.base import as_request
from lampbox.engine.generation.dummy import DummyGenerator


def holds_a_store():
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            found.append(os.readlink(fd))
        except OSError:
            pass
    return any(".duckdb" in target for target in found)


class CountingGenerator(DummyGenerator):
    backend = "counting"

    def generate(self, prompts, params, on_output=None, should_cancel=None):
        rank = os.environ.get("RANK", "0")
        log = Path(os.environ["LAMPBOX_TEST_COUNTS"]) / f"rank-{rank}.log"
        store = int(holds_a_store())
        with log.open("a") as out:
            for request in map(as_request, prompts):
                digest = hashlib.sha256(request.cache_json().encode()).hexdigest()
                out.write(f"{digest} {store}\\n")
        return super().generate(prompts, params, on_output, should_cancel)
'''

STORE_FEEDBACK = """
import json, sys
from lampbox.lab.ropg import RopgSpec, collect_feedback
from lampbox.store import Store

path, limit, then = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with Store(path) as store:
    scheme = store.resolve_scheme("commit_subject", "train")
    spec = RopgSpec(task="commit_subject", scheme=scheme, ctx_size=3, backend="counting", model="dummy")
    result = collect_feedback(spec, store, "train", limit)
    if then == "forget":  # all but one question's feedback rows go; the generations stay cached
        with store.transaction() as cursor:
            cursor.execute("DELETE FROM ropg_feedback WHERE question_id <> (SELECT min(question_id) FROM ropg_feedback)")
print(json.dumps({"computed": result.computed_questions, "pairs": sum(len(c) for c in result.candidates)}))
"""


@pytest.fixture
def counting_plugin(tmp_path: Path) -> Path:
    entry_points = "[lampbox.backends]\ncounting = lampbox_counting_plugin:CountingGenerator\n"
    return install_plugin(tmp_path / "site", "counting", PLUGIN, entry_points)


def logged(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """Each rank's generated requests (digest, store file open)."""
    return {
        path.stem: [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]
        for path in sorted(folder.glob("rank-*.log"))
    }


def stored(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    from lampbox.store import Store

    with Store(db, read_only=True) as store:
        feedback = store.cursor().execute(
            "SELECT feedback_key, label, task, scheme, question_id, item_key, item_id, utility FROM ropg_feedback ORDER BY ALL"
        ).fetchall()
        generations = store.cursor().execute(
            "SELECT cache_key, model, backend, output FROM generation_cache ORDER BY ALL"
        ).fetchall()
    return feedback, generations


@pytest.mark.slow
def test_two_processes_share_the_feedback_and_store_what_one_process_stores(
    commits_store_path: Path, counting_plugin: Path, tiny_st_encoder: Path, tmp_path: Path  # noqa: F811
) -> None:
    """torchrun, 2 CPU processes: every (question, item) pair not stored is generated once
    between the ranks (both take part; stored feedback is kept, generations already in the
    cache are served from it on either rank), rank 1 never holds the store open, and the stored feedback and
    generations equal those of one process; a later run reuses them all."""
    start = tmp_path / "start.duckdb"
    shutil.copy(commits_store_path, start)
    counts = {name: tmp_path / f"counts-{name}" for name in ("pre", "two", "one", "again")}
    for folder in counts.values():
        folder.mkdir()

    def env(name: str) -> dict[str, str]:
        return with_plugin(
            counting_plugin, LAMPBOX_HOME=str(tmp_path / "home"), LAMPBOX_THREADS="1", OMP_NUM_THREADS="1",
            LAMPBOX_TEST_COUNTS=str(counts[name]),
        )  # fmt: skip

    def store_feedback(db: Path, limit: int, then: str, name: str) -> dict[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", STORE_FEEDBACK, str(db), str(limit), then], env=env(name),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout))

    # the first 3 questions' generations are cached, the feedback of one of them is stored
    assert store_feedback(start, 3, "forget", "pre") == {"computed": 3, "pairs": 9}
    cached = {digest for digest, _ in logged(counts["pre"])["rank-0"]}
    assert len(stored(start)[0]) == 3 and len(cached) == 9
    two_db, one_db = tmp_path / "two.duckdb", tmp_path / "one.duckdb"
    shutil.copy(start, two_db)
    shutil.copy(start, one_db)

    # 40 train questions (2 rounds of 16 per rank) and 4 dev ones, 3 candidates each
    common = [
        "-m", "lampbox", "train", "ropg", "--task", "commit_subject", "--method", "kd", "--backend", "counting",
        "--model", "dummy", "--retriever-model", str(tiny_st_encoder), "--ctx-size", "3", "--limit", "40",
        "--dev-limit", "4", "--max-steps", "1", "--batch-size", "2", "--lr", "1e-3",
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = subprocess.run(
        [*launcher, *common, "--db", str(two_db), "--name", "two"], env=env("two"), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "feedback train: 3/120" in two.stderr  # the stored question is not dealt out again
    assert "feedback train: 120/120" in two.stderr and "feedback dev: 12/12" in two.stderr
    one = subprocess.run(
        [sys.executable, *common, "--db", str(one_db), "--name", "one"], env=env("one"), capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    by_rank = logged(counts["two"])
    assert sorted(by_rank) == ["rank-0", "rank-1"]
    generated = {rank: [digest for digest, _ in entries] for rank, entries in by_rank.items()}
    assert generated["rank-0"] and generated["rank-1"]  # both ranks computed a share
    assert not set(generated["rank-0"]) & set(generated["rank-1"])  # no pair on both
    single = [digest for digest, _ in logged(counts["one"])["rank-0"]]
    # each distinct request once (one question has two items whose prompts are the same: 122
    # requests for 37 x 3 + 4 x 3 pairs); the cached 9 were not generated again
    assert len(single) == len(set(single)) > 100 and not set(single) & cached
    assert Counter(generated["rank-0"] + generated["rank-1"]) == Counter(single)  # each pair once, as one process
    # dealt alternately (3 pairs a question; one cached question each): 63 and 59 generated
    assert abs(len(generated["rank-0"]) - len(generated["rank-1"])) <= 2 * 3
    assert all(store_open == 0 for _, store_open in by_rank["rank-1"])  # rank 1 never held the store

    two_feedback, two_generations = stored(two_db)
    one_feedback, one_generations = stored(one_db)
    assert len(two_feedback) == 44 * 3 and two_feedback == one_feedback  # exact: same backend, greedy
    assert two_generations == one_generations

    # a later single-process run reuses the torchrun job's feedback: nothing generated
    assert store_feedback(two_db, 40, "keep", "again") == {"computed": 0, "pairs": 120}
    assert not list(counts["again"].glob("rank-*.log"))
