"""Helpers for driving the TUI with Pilot: wait for workers instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.worker import WorkerCancelled


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in a fresh event loop (no asyncio plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


async def settle_workers(pilot: Pilot) -> None:
    """Wait until no worker runs and every message they posted has been handled."""
    app = pilot.app
    for _ in range(500):
        await pilot.pause()
        running = [worker for worker in app.workers if not worker.is_finished]
        if not running:
            await pilot.pause()
            return
        with contextlib.suppress(WorkerCancelled):  # a replaced or busy worker is fine here
            await app.workers.wait_for_complete(running)
    raise AssertionError("workers never settled")


@pytest.fixture
def empty_store_path(tmp_path: Path) -> Path:
    """A store file with the schema and no data."""
    from lampbox.store import Store

    path = tmp_path / "empty.duckdb"
    Store(path).close()
    return path


@pytest.fixture
def settle():  # type: ignore[no-untyped-def]
    """`await settle(pilot)`: wait for the app's workers and their messages."""
    return settle_workers


class _WordTokenizer:
    """Whitespace tokens with a growing vocabulary (enough for the prompt builder)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.ids.setdefault(word, len(self.ids)) for word in text.split()]

    def decode(self, token_ids) -> str:  # type: ignore[no-untyped-def]
        by_id = {index: word for word, index in self.ids.items()}
        return " ".join(by_id[index] for index in token_ids)


class FirstWordsGenerator:
    """A stand-in model for the runs views: it answers with the prompt's first 16 words.

    Only the model is faked (the runs screens read stored runs and never generate); ranking,
    prompting, caching, scoring and storing are the real pipeline's.
    """

    name = "fake-first-words"
    backend = "openai"
    context_size = 4096
    supports_streaming = False
    supports_scoring = False

    def __init__(self) -> None:
        self.tokenizer = _WordTokenizer()

    def identity(self) -> dict[str, str]:
        return {"model": self.name}

    def generate(self, prompts, params, on_output=None, should_cancel=None):  # type: ignore[no-untyped-def]
        return [" ".join(prompt.split()[:16]) for prompt in prompts]

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def bench_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LaMP_7 demo set with a small bench run on its dev split (built once per session).

    Grid: no personalization, bm25 and recency at k=1 (the stand-in model above), plus the
    model-free retrieval-only baselines. Tests that write must copy it (see `bench_store`).
    """
    from lampbox.bench.runner import BenchSpec, run_bench
    from lampbox.demo import demo_path
    from lampbox.engine.pipeline import GeneratorPool
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    class FakePool(GeneratorPool):
        def get(self, backend, model, options=()):  # type: ignore[no-untyped-def]
            return FirstWordsGenerator()

    path = tmp_path_factory.mktemp("bench") / "bench.duckdb"
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        spec = BenchSpec(
            "LaMP_7",
            "demo",
            "dev",
            retrievers=("none", "bm25", "recency"),
            ks=(1,),
            backends=("openai",),
            model=FirstWordsGenerator.name,
        )
        run_bench(spec, store, generators=FakePool())
    return path


@pytest.fixture
def bench_store(tmp_path: Path, bench_store_path: Path):  # type: ignore[no-untyped-def]
    """A private, writable copy of the bench store."""
    import shutil

    from lampbox.store import Store

    path = tmp_path / "bench.duckdb"
    shutil.copy(bench_store_path, path)
    store = Store(path)
    yield store
    store.close()
