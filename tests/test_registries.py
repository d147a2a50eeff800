"""Methods and backends register by name; the dummy backend; the bounded generator pool;
generation requests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from lampbox.engine.generation import registry
from lampbox.engine.generation.base import GenerationParams, GenerationRequest
from lampbox.engine.generation.cached import generation_cache_key
from lampbox.engine.generation.dummy import DummyGenerator
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.methods import IPA, method_names, register_method, unregister_method
from lampbox.engine.tasks import BUILTIN_TASKS
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import LampboxError, UnknownNameError
from lampbox.lab.pipeline import run
from lampbox.lab.specs import RunSpec, run_key
from lampbox.store import Store


def test_dummy_backend_is_deterministic_instant_and_says_it_is_a_stand_in() -> None:
    generator = registry.load_generator("dummy", "first-words", words=3)
    params = GenerationParams(max_new_tokens=32)
    prompts = ["one two three four", GenerationRequest("a b", passages=("p",), adapter=None)]
    assert generator.generate(prompts, params) == ["one two three", "a b"]
    assert "".join(generator.stream("one two three four", params)) == "one two three"
    assert generator.identity()["stand_in"] is True
    assert generator.tokenizer.decode(generator.tokenizer.encode("x y x")) == "x y x"
    # max_new_tokens caps the answer like a real model's
    assert generator.generate(["one two three four"], GenerationParams(max_new_tokens=2)) == ["one two"]


def test_a_registered_backend_is_loaded_by_name_with_no_caller_change() -> None:
    class Upper(DummyGenerator):
        backend = "upper"

        def generate(self, prompts, params, on_output=None, should_cancel=None):  # type: ignore[no-untyped-def]
            return [text.upper() for text in super().generate(prompts, params)]

    registry.register_backend("upper", Upper)
    try:
        assert "upper" in registry.known_backends()
        assert registry.load_generator("upper", "m").generate(["hi there"], GenerationParams()) == ["HI THERE"]
    finally:
        registry.unregister_backend("upper")
    with pytest.raises(UnknownNameError, match="backend"):
        registry.load_generator("upper", "m")


def test_plain_backends_refuse_passages_and_adapters_clearly() -> None:
    from lampbox.engine.generation.base import plain_prompts

    assert plain_prompts(["a", GenerationRequest("b", user_id="u1")], "llamacpp") == ["a", "b"]
    with pytest.raises(LampboxError, match="not passages"):
        plain_prompts([GenerationRequest("a", passages=("x",))], "llamacpp")
    with pytest.raises(LampboxError, match="cannot load adapters"):
        plain_prompts([GenerationRequest("a", adapter="/tmp/adapter")], "hf")


def test_plain_requests_keep_the_cache_keys_of_bare_prompts(tmp_path: Path) -> None:
    identity, params = {"backend": "x"}, GenerationParams()
    bare = generation_cache_key(identity, params, "prompt")
    assert generation_cache_key(identity, params, GenerationRequest("prompt", user_id="u")) == bare
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "weights.bin").write_bytes(b"one")
    with_adapter = generation_cache_key(identity, params, GenerationRequest("prompt", adapter=str(adapter)))
    assert with_adapter != bare
    (adapter / "weights.bin").write_bytes(b"two")  # retrained in place: a new key
    assert generation_cache_key(identity, params, GenerationRequest("prompt", adapter=str(adapter))) != with_adapter
    assert generation_cache_key(identity, params, GenerationRequest("prompt", passages=("p",))) != bare


def test_the_pool_closes_the_least_recently_used_model_first() -> None:
    closed: list[str] = []

    class Tracked(DummyGenerator):
        backend = "tracked"

        def close(self) -> None:
            closed.append(self.name)

    registry.register_backend("tracked", Tracked)
    try:
        pool = GeneratorPool(size=2)
        a = pool.get("tracked", "a")
        pool.get("tracked", "b")
        assert pool.get("tracked", "a") is a  # reused, and now the most recent
        pool.get("tracked", "c")
        assert closed == ["b"] and [key[1] for key in pool.loaded()] == ["a", "c"]
        pool.close()
        assert sorted(closed) == ["a", "b", "c"] and pool.loaded() == []
    finally:
        registry.unregister_backend("tracked")
    with pytest.raises(ValueError):
        GeneratorPool(size=0)


class ReversedIPA(IPA):
    """IPA with the retrieved items in reverse order: a new method, registered, no pipeline edit."""

    name = "ipa-reversed"

    def preparer(self, task, generator, params, max_length):  # type: ignore[no-untyped-def]
        prepare = super().preparer(task, generator, params, max_length)

        def reversed_items(question: Question, items: Sequence[ProfileItem]):  # type: ignore[no-untyped-def]
            return prepare(question, list(items)[::-1])

        return reversed_items


def test_a_registered_method_runs_through_the_pipeline(commits_store: Store, tmp_path: Path) -> None:
    register_method(ReversedIPA())
    try:
        assert "ipa-reversed" in method_names()
        common = {"retriever": "bm25", "k": 3, "limit": 4, "backend": "dummy", "model": "first-words"}
        plain = run(RunSpec("commit_subject", "user", "dev", **common), commits_store)
        reversed_run = run(RunSpec("commit_subject", "user", "dev", method="ipa-reversed", **common), commits_store)
        assert reversed_run.run_key != plain.run_key and "ipa-reversed" in reversed_run.label
        for ours, theirs in zip(reversed_run.predictions, plain.predictions, strict=True):
            assert ours.item_keys == theirs.item_keys[::-1] and ours.prompt != theirs.prompt
            assert ours.output == " ".join(ours.prompt.split()[:16])  # the dummy's answer
        again = run(RunSpec("commit_subject", "user", "dev", method="ipa-reversed", **common), commits_store)
        assert again.from_store
    finally:
        unregister_method("ipa-reversed")
    with pytest.raises(UnknownNameError, match="method"):
        RunSpec("commit_subject", "user", "dev", method="ipa-reversed")


def test_run_keys_of_the_dummy_do_not_hash_weights() -> None:
    spec = RunSpec("LaMP_7", "demo", "dev", backend="dummy", model="first-words")
    other = RunSpec("LaMP_7", "demo", "dev", backend="dummy", model="last-words")
    task = BUILTIN_TASKS["LaMP_7"]
    assert run_key(spec, task) != run_key(other, task)
