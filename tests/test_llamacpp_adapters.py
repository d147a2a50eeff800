"""Per-request LoRA adapters on the llamacpp backend: the packaged SmolLM2 GGUF with two seeded
random peft LoRAs (written with numpy), converted to GGUF LoRAs and set per request on the one
loaded model. Each adapter's greedy output is the one llama-cpp-python gives with that adapter
fixed at load, whatever ran before (A -> B -> A, one at a time and batched, mixed in one batch);
a trained model's own adapter stays under the request's; an adapter trained on other weights
is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lora_helpers import MODEL, random_lora, trained_lora

from lampbox.engine.generation.base import GenerationParams, GenerationRequest
from lampbox.errors import LampboxError

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp")
PROMPTS = ["Name a colour.", "What is the capital of France?", "Write one word.", "Say hello."]
PARAMS = GenerationParams(max_new_tokens=8)


@pytest.fixture(scope="module")
def adapters(module_home: Path) -> dict[str, Any]:
    from lampbox.engine.fingerprint import file_sha256
    from lampbox.models import resolve_model

    work = module_home / "loras"
    fingerprint = file_sha256(resolve_model(MODEL).path)
    a = trained_lora(module_home, "user-a", random_lora(work / "a", 1), fingerprint)
    b = trained_lora(module_home, "user-b", random_lora(work / "b", 2), fingerprint)
    return {"a": str(a / "adapter"), "b": str(b / "adapter"), "fingerprint": fingerprint}



def _greedy_chats(llama: Any, prompts: list[str]) -> list[str]:
    """Each prompt's greedy chat answer through llama-cpp-python itself, one at a time."""
    outputs = []
    for prompt in prompts:
        answer = llama.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], max_tokens=PARAMS.max_new_tokens,
            temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=0,
        )  # fmt: skip
        outputs.append(str(answer["choices"][0]["message"]["content"] or ""))
        llama.reset()
    return outputs

def _alone(adapter_gguf: Path | None, prompts: list[str]) -> list[str]:
    """llama-cpp-python's own chat completion with the adapter fixed at load (its high-level API)."""
    from lampbox.engine.generation.llamacpp import _open_llama
    from lampbox.models import resolve_model

    llama = _open_llama(resolve_model(MODEL).path, n_ctx=2048, n_threads=1, seed=0, lora_path=str(adapter_gguf) if adapter_gguf else None)
    try:
        return _greedy_chats(llama, prompts)
    finally:
        llama.close()


@pytest.fixture(scope="module")
def generator(adapters: dict[str, Any]):  # type: ignore[no-untyped-def]
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    loaded = LlamaCppGenerator(MODEL, threads=1, batch_size=4, max_adapters=2)
    yield loaded
    loaded.close()


def test_switching_a_to_b_to_a_gives_each_adapters_own_output(generator: Any, adapters: dict[str, Any]) -> None:
    from lampbox.engine.generation.gguf_lora import gguf_adapter
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    path = generator.path
    alone = {name: _alone(gguf_adapter(adapters[name], path), PROMPTS) for name in ("a", "b")}
    alone["base"] = _alone(None, PROMPTS)
    assert alone["a"] != alone["b"] and alone["a"] != alone["base"] and alone["b"] != alone["base"]

    def requests(name: str) -> list[GenerationRequest]:
        return [GenerationRequest(prompt, adapter=adapters.get(name)) for prompt in PROMPTS]

    # one at a time (the Llama's own context): llama-cpp-python's output with the adapter at load
    for name in ("a", "b", "a", "base", "b"):
        assert [generator.generate([request], PARAMS)[0] for request in requests(name)] == alone[name], name
    # batched: each adapter's output from a model that never saw another adapter
    batched_alone = {}
    for name in ("a", "b", "base"):
        fresh = LlamaCppGenerator(MODEL, threads=1, batch_size=4)
        try:
            batched_alone[name] = fresh.generate(requests(name), PARAMS)
        finally:
            fresh.close()
    assert batched_alone["base"] == alone["base"]  # without an adapter, batched is one at a time
    for name in ("a", "b", "a", "base", "b"):
        assert generator.generate(requests(name), PARAMS) == batched_alone[name], name
    # one prompt under A, B, A in turn: nothing of the previous adapter's prefix is reused
    for name in ("a", "b", "a"):
        assert "".join(generator.stream(GenerationRequest(PROMPTS[1], adapter=adapters[name]), PARAMS)) == alone[name][1]
    # requests naming different adapters in one call: one batch per adapter, outputs in order
    names = ["a", "b", "base", "a", "b", "base"]
    mixed = [GenerationRequest(PROMPTS[i % 4], adapter=adapters.get(n)) for i, n in enumerate(names)]
    expected: dict[int, str] = {}
    for name in ("a", "b", "base"):
        rows = [i for i, n in enumerate(names) if n == name]
        expected.update(zip(rows, generator.generate([mixed[i] for i in rows], PARAMS), strict=True))
    assert generator.generate(mixed, PARAMS) == [expected[i] for i in range(len(names))]
    assert len(generator._adapters.loaded) == 2  # both initialised once, within the bound


def test_at_most_max_adapters_stay_loaded(adapters: dict[str, Any], module_home: Path) -> None:
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    one = LlamaCppGenerator(MODEL, threads=1, batch_size=2, max_adapters=1)
    try:
        single, pair = [GenerationRequest(PROMPTS[0], adapter=adapters["a"])], [GenerationRequest(p, adapter=adapters["a"]) for p in PROMPTS[:2]]
        first = one.generate(single, PARAMS), one.generate(pair, PARAMS)
        one.generate([GenerationRequest(PROMPTS[0], adapter=adapters["b"])], PARAMS)
        assert len(one._adapters.loaded) == 2  # A is still set on the batch decoder's context
        one.generate([GenerationRequest(p, adapter=adapters["b"]) for p in PROMPTS[:2]], PARAMS)
        assert one._adapters.loaded == [str(Path(adapters["b"]).resolve())]  # A freed
        assert (one.generate(single, PARAMS), one.generate(pair, PARAMS)) == first  # A initialised again
    finally:
        one.close()


def _both(first: Path, second: Path, prompts: list[str]) -> list[str]:
    """llama-cpp-python's chat completion with two GGUF LoRAs set on its context at once (in
    this order), through the low-level API on a Llama loaded without any."""
    import ctypes

    import llama_cpp

    from lampbox.engine.generation.llamacpp import _open_llama
    from lampbox.models import resolve_model

    llama = _open_llama(resolve_model(MODEL).path, n_ctx=2048, n_threads=1, seed=0)
    try:
        loras = [llama_cpp.llama_adapter_lora_init(llama._model.model, str(path).encode()) for path in (first, second)]
        array = (llama_cpp.llama_adapter_lora_p_ctypes * 2)(*loras)
        assert llama_cpp.llama_set_adapters_lora(llama.ctx, array, 2, (ctypes.c_float * 2)(1.0, 1.0)) == 0
        return _greedy_chats(llama, prompts)
    finally:
        llama.close()


def test_a_trained_models_own_adapter_stays_under_the_requests(adapters: dict[str, Any], module_home: Path) -> None:
    from lampbox.engine.generation.gguf_lora import gguf_adapter
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    own = LlamaCppGenerator("user-a", threads=1, batch_size=4)  # a trained LoRA model: A at load
    try:
        assert own.identity()["adapter_sha256"]
        with_b = [GenerationRequest(p, adapter=adapters["b"]) for p in PROMPTS]
        expected = _both(gguf_adapter(adapters["a"], own.path), gguf_adapter(adapters["b"], own.path), PROMPTS)
        assert [own.generate([request], PARAMS)[0] for request in with_b] == expected  # A, then B on top
        assert expected != _alone(gguf_adapter(adapters["b"], own.path), PROMPTS)  # not B alone
        assert [own.generate([p], PARAMS)[0] for p in PROMPTS] == _alone(gguf_adapter(adapters["a"], own.path), PROMPTS)
        assert [own.generate([request], PARAMS)[0] for request in with_b] == expected  # after a switch back
    finally:
        own.close()


def test_an_adapter_trained_on_other_weights_is_refused(adapters: dict[str, Any], generator: Any, module_home: Path) -> None:
    other = trained_lora(module_home, "user-other", Path(adapters["a"]), "0" * 64)
    with pytest.raises(LampboxError, match="'user-other' was trained on 'smollm2-135m-instruct', whose weights differ"):
        generator.generate([GenerationRequest(PROMPTS[0], adapter=str(other / "adapter"))], PARAMS)
    assert generator.generate([GenerationRequest(PROMPTS[0], adapter=adapters["a"])], PARAMS)  # still serving


def test_bench_method_oppu_on_llamacpp(adapters: dict[str, Any], module_home: Path, commits_store: Any) -> None:
    """An OPPU set on the GGUF base (task adapter A; one user's adapter B) run by the bench's
    pipeline on llamacpp: that user's questions get base + A + B, the others base + A."""
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec

    questions = commits_store.questions("commit_subject", "user", "dev")[:4]
    user = questions[-1].user_id  # the first three questions are another user's
    folder = module_home / "models" / "tiny-set"
    folder.mkdir()
    info = {"name": "tiny-set", "kind": "oppu", "base": MODEL, "base_fingerprint": adapters["fingerprint"], "chat": True,
            "task_adapter": "user-a", "users": {user: {"adapter": "user-b", "content_hash": "b", "items": 1}}}  # fmt: skip
    (folder / "lampbox-model.json").write_text(json.dumps(info))
    params = GenerationParams(max_new_tokens=6)
    spec = RunSpec("commit_subject", "user", "dev", retriever="none", k=0, backend="llamacpp", model="tiny-set",
                   method="oppu", params=params, limit=4)  # fmt: skip
    record = run(spec, commits_store)
    requests = [GenerationRequest(p.prompt, adapter=adapters["b"] if p.user_id == user else None) for p in record.predictions]
    assert any(request.adapter for request in requests) and not all(request.adapter for request in requests)
    own = LlamaCppGenerator("user-a", threads=1)  # the set's task adapter is a trained LoRA model
    try:
        assert [p.raw_output for p in record.predictions] == own.generate(requests, params)
    finally:
        own.close()


def test_labels_are_scored_with_each_requests_adapter(generator: Any, adapters: dict[str, Any], module_home: Path) -> None:
    """`--decode labels` on llamacpp: a request naming an adapter is scored with it (requests
    grouped by adapter, in order), exactly as the model with that adapter fixed at load scores
    it; a request without one is scored by the model as loaded, whatever was set before."""
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    labels = ["red", "Paris", "hello there"]
    plain = generator.score_labels(PROMPTS[:2], labels)
    own = LlamaCppGenerator("user-a", threads=1)  # A at load, the single-adapter model
    try:
        with_a = own.score_labels(PROMPTS[:2], labels)
    finally:
        own.close()
    a, b = adapters["a"], adapters["b"]
    requests = [
        GenerationRequest(PROMPTS[0], adapter=a), GenerationRequest(PROMPTS[1]), GenerationRequest(PROMPTS[0], adapter=b),
        GenerationRequest(PROMPTS[1], adapter=a), GenerationRequest(PROMPTS[0]),
    ]  # fmt: skip
    scored = generator.score_labels(requests, labels)
    expected = [with_a[0], plain[1], None, with_a[1], plain[0]]
    for got, want in zip(scored, expected, strict=True):
        if want is not None:
            assert got == pytest.approx(want, abs=1e-4)
    assert scored[0] != pytest.approx(plain[0], abs=1e-3)  # the adapter changed the scores
    assert scored[2] != pytest.approx(scored[0], abs=1e-3)  # and B is not A
    assert generator.score_labels([requests[2]], labels)[0] == pytest.approx(scored[2], abs=1e-4)  # B alone, in order


def test_bench_oppu_label_decoding_on_llamacpp(adapters: dict[str, Any], module_home: Path, commits_store: Any) -> None:
    """commit_area with `--decode labels --method oppu` on llamacpp: the user with an adapter has
    every label scored with base + task adapter + their adapter, the others with base + task
    adapter; the answer is the most likely label."""
    from lampbox.engine.generation.labels import choose_label
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec

    questions = commits_store.questions("commit_area", "user", "dev")[:4]
    user = questions[-1].user_id
    assert any(q.user_id != user for q in questions)
    folder = module_home / "models" / "tiny-area-set"
    folder.mkdir()
    info = {"name": "tiny-area-set", "kind": "oppu", "base": MODEL, "base_fingerprint": adapters["fingerprint"], "chat": True,
            "task_adapter": "user-a", "users": {user: {"adapter": "user-b", "content_hash": "b", "items": 1}}}  # fmt: skip
    (folder / "lampbox-model.json").write_text(json.dumps(info))
    spec = RunSpec("commit_area", "user", "dev", retriever="none", k=0, backend="llamacpp", model="tiny-area-set",
                   method="oppu", decode="labels", limit=4)  # fmt: skip
    record = run(spec, commits_store)
    labels = commits_store.task("commit_area").labels
    requests = [GenerationRequest(p.prompt, adapter=adapters["b"] if p.user_id == user else None) for p in record.predictions]
    own = LlamaCppGenerator("user-a", threads=1)
    try:
        expected = own.score_labels(requests, labels)
        without = own.score_labels([r.prompt for r in requests], labels)
    finally:
        own.close()
    for prediction, scores, plain in zip(record.predictions, expected, without, strict=True):
        logliks = [prediction.kept["label_logliks"][label] for label in labels]
        assert logliks == pytest.approx(scores, abs=1e-4)
        assert prediction.raw_output == choose_label(labels, scores)
        assert (logliks == pytest.approx(plain, abs=1e-3)) is (prediction.user_id != user)
