"""Shared fixtures: paths to the stand-in data and throwaway stores filled from it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
GIT_COMMITS = SHARED_DATA / "git-commits"


@pytest.fixture(scope="session")
def git_commits() -> Path:
    """The stand-in datasets (../shared/data/git-commits), beside the repository."""
    if not GIT_COMMITS.exists():
        pytest.skip(f"stand-in data not found at {GIT_COMMITS}")
    return GIT_COMMITS


@pytest.fixture(scope="session")
def commits_store_path(tmp_path_factory: pytest.TempPathFactory, git_commits: Path) -> Path:
    """A store file with commit_subject and commit_area imported (built once per session).

    Tests that write to a store must copy it first (see `commits_store`).
    """
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = tmp_path_factory.mktemp("store") / "commits.duckdb"
    with Store(path) as store:
        import_path(store, git_commits / "commit_subject")
        import_path(store, git_commits / "commit_area")
    return path


@pytest.fixture
def commits_store(tmp_path: Path, commits_store_path: Path):
    """A private, writable copy of the stand-in store."""
    import shutil

    from lampbox.store import Store

    path = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, path)
    store = Store(path)
    yield store
    store.close()


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private LAMPBOX_HOME for one test module (trained models and caches go there)."""
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAMPBOX_HOME", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer (and chat template):
    training and the hf backend's mechanics in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lampbox.models import resolve_model

    gguf = resolve_model("smollm2-135m-instruct").path
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    """A store file with the packaged LaMP_7 demo set imported."""
    from lampbox.demo import demo_path
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = tmp_path / "demo.duckdb"
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
    return path


@pytest.fixture(scope="session")
def dummy_bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`lampbox bench DUMMY_BENCH` on the demo data, run once for the session (test_report and
    test_compare read it): its store, the environment (LAMPBOX_HOME) it ran in, its key and its
    `--json` rows. Copy the store before writing to it."""
    import json

    from cli_helpers import DUMMY_BENCH, lampbox

    from lampbox.demo import demo_path
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    folder = tmp_path_factory.mktemp("dummy-bench")
    env = {**os.environ, "LAMPBOX_HOME": str(folder / "home")}
    db = folder / "demo.duckdb"
    with Store(db) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")  # what `lampbox data demo` imports
    data = json.loads(lampbox("bench", *DUMMY_BENCH, "--db", str(db), "--json", env=env).stdout)
    return {"db": db, "env": env, "key": data["bench_key"], "rows": data["rows"]}


# Another process holding a store's write lock, as a running bench does.
HOLD_FOR_WRITING = """
import sys
from lampbox.store import Store
store = Store(sys.argv[1], purpose="bench 3f2a1b0c")
print("holding", flush=True)
sys.stdin.read()
store.close()
"""


@pytest.fixture
def writer_holding() -> Callable[[Path], contextlib.AbstractContextManager[subprocess.Popen[str]]]:
    """`with writer_holding(db) as writer:` another process holds db's write lock (its purpose
    "bench 3f2a1b0c") from the start of the block until `writer.communicate("")` or the block's
    end."""

    @contextlib.contextmanager
    def holding(db: Path) -> Iterator[subprocess.Popen[str]]:
        writer = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HOLD_FOR_WRITING), str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
        )  # fmt: skip
        try:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "holding"
            yield writer
        finally:
            if writer.poll() is None:
                writer.communicate("", timeout=300)

    return holding


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty lampbox home (a test module may define its own)."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("LAMPBOX_HOME", str(path))
    return path


@pytest.fixture
def db(home: Path) -> Path:
    """An empty store inside the lampbox home, where the default store lives."""
    from lampbox.store import Store

    path = home / "lampbox.duckdb"
    Store(path).close()
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with random weights and all-MiniLM-L6-v2's real tokenizer: the selector's
    mechanics in seconds (the real encoder is exercised by the fixed-batch test)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lampbox.engine.rspg.selector import encoder_source

    tokenizer = AutoTokenizer.from_pretrained(encoder_source("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
