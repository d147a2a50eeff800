"""The llamacpp backend's own logic without a model: how a completion stops and streams, how
requests are routed (batched or one by one), grouped by adapter and limited by the context, and
the bounded LRU of per-request GGUF adapters. A fake Llama and fake llama.cpp calls stand in for
the weights (the real model is exercised by test_generation_llamacpp.py and
test_llamacpp_adapters.py, marked slow)."""

from __future__ import annotations

import ctypes
import math
import threading
from pathlib import Path
from typing import Any

import pytest

from lampbox.engine.generation.base import GenerationParams, GenerationRequest
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.llamacpp_batch import Completion
from lampbox.errors import InputFileError, LampboxError


def _bytes_of(texts: dict[int, bytes]):  # type: ignore[no-untyped-def]
    def detokenize(tokens: list[int], _prompt: list[int]) -> bytes:
        return b"".join(texts[token] for token in tokens)

    return detokenize


def test_completion_pieces_hold_back_partial_characters_and_stop_strings() -> None:
    texts = {1: b"caf", 2: b"\xc3", 3: b"\xa9 <", 4: b"|im", 5: b" x", 6: b" <|", 7: b"end|> more"}
    completion = Completion(0, [9], max_tokens=20, stops=(b"<|end|>",))
    pieces = []
    for token in texts:
        done = completion.push(token, False, _bytes_of(texts))
        pieces.append(completion.piece())
        if done:
            break
    # 'é' arrives in two tokens: nothing half-decoded is shown; '<' waits until it turns out
    # not to start the stop string, ' <|' shows only its space, the stop is never shown.
    assert pieces == ["caf", "", "é ", "<|im", " x", " ", ""]
    assert "".join(pieces) == completion.output() == "café <|im x "
    assert "\ufffd" not in "".join(pieces)


def test_a_completion_ends_at_eog_at_max_tokens_or_at_the_first_listed_stop() -> None:
    texts = {1: b"one", 2: b" two", 3: b" three", 4: b" four"}
    detokenize = _bytes_of(texts)
    eog = Completion(0, [7, 8], max_tokens=10, stops=())
    assert not eog.push(1, False, detokenize) and not eog.push(2, False, detokenize)
    assert eog.push(99, True, detokenize)  # the end-of-generation token is not part of the text
    assert eog.output() == "one two" and eog.tokens == [1, 2] and eog.length == 4
    capped = Completion(1, [7], max_tokens=2, stops=())
    assert [capped.push(t, False, detokenize) for t in (1, 2)] == [False, True]
    assert capped.output() == "one two"
    # Two stops arrive in one token: the first one in the list cuts, not the first in the text.
    stopped = Completion(2, [7], max_tokens=10, stops=(b"three", b"two"))
    both = _bytes_of({1: b"one", 2: b" two three"})
    assert [stopped.push(t, False, both) for t in (1, 2)] == [False, True]
    assert stopped.output() == "one two "
    early = Completion(3, [7], max_tokens=10, stops=())
    early.push(1, False, detokenize)
    early.finish_early(detokenize)
    assert early.output() == "one" and early.piece() == "one"


def test_a_completion_never_stops_inside_a_multibyte_character() -> None:
    # '€' is three bytes; max_tokens is reached after its first byte, yet decoding goes on
    # until the character is whole (llama-cpp-python's rule).
    texts = {1: b"a", 2: b"\xe2", 3: b"\x82", 4: b"\xac", 5: b"b"}
    completion = Completion(0, [], max_tokens=2, stops=())
    done = [completion.push(t, False, _bytes_of(texts)) for t in (1, 2, 3, 4)]
    assert done == [False, False, False, True]
    assert completion.output() == "a€"


# -- the generator's routing, with a fake Llama ---------------------------------------------


class _FakeVocab:
    """What prompt_tokens and the chat stop ask of llama-cpp-python's model object."""

    def __init__(self, bos: bool = True, eos: bool = False, sep: int = -1) -> None:
        self.bos, self.eos, self.sep = bos, eos, sep

    def token_get_text(self, token: int) -> str:
        return {1: "<s>", 2: "<|im_end|>"}[token]

    def token_cls(self) -> int:
        return -1

    def token_sep(self) -> int:
        return self.sep

    def add_bos_token(self) -> bool:
        return self.bos

    def add_eos_token(self) -> bool:
        return self.eos


class _FakeLlama:
    """Tokens are bytes; completions answer with the prompt upper-cased (or raise ValueError)."""

    ctx = "llama-context"

    def __init__(self, n_ctx: int = 64, vocab: _FakeVocab | None = None) -> None:
        self._n_ctx = n_ctx
        self._model = vocab or _FakeVocab()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.resets = 0

    def n_ctx(self) -> int:
        return self._n_ctx

    def tokenize(self, data: bytes, add_bos: bool = False, special: bool = True) -> list[int]:
        return list(data)

    def token_bos(self) -> int:
        return 1

    def token_eos(self) -> int:
        return 2

    def reset(self) -> None:
        self.resets += 1

    def _answer(self, prompt: str, options: dict[str, Any]) -> str:
        self.calls.append((prompt, options))
        if "overflow" in prompt:
            raise ValueError("Requested tokens (5000) exceed context window of 64")
        return prompt.upper()

    def create_chat_completion(self, messages: list[dict[str, str]], **options: Any) -> Any:
        text = self._answer(messages[0]["content"], options)
        if options["stream"]:
            return iter([{"choices": [{"delta": {"role": "assistant"}}]}] + [{"choices": [{"delta": {"content": c}}]} for c in text])
        return {"choices": [{"message": {"content": text}}]}

    def create_completion(self, prompt: str, **options: Any) -> Any:
        text = self._answer(prompt, options)
        if options["stream"]:
            return iter([{"choices": [{"text": c}]} for c in text])
        return {"choices": [{"text": text}]}


class _FakeAdapters:
    def __init__(self) -> None:
        self.applied: list[tuple[Any, str | None]] = []

    def apply(self, context: Any, adapter: str | None) -> bool:
        self.applied.append((context, adapter))
        return True


class _FakeDecoder:
    """Stands in for llamacpp_batch.BatchDecoder: records each group and finishes its completions."""

    made: list[_FakeDecoder] = []

    def __init__(self, llama: Any, batch_size: int, adapters: Any = None) -> None:
        self.groups: list[tuple[str | None, list[Completion]]] = []
        self.cancel_on: str | None = None
        self.threads: int | None = None
        _FakeDecoder.made.append(self)

    def generate(self, completions: list[Completion], on_output: Any, should_cancel: Any, on_piece: Any, adapter: str | None) -> None:
        self.groups.append((adapter, list(completions)))
        if adapter is not None and adapter == self.cancel_on:
            raise GenerationCancelled(1, len(completions))
        for completion in completions:
            completion.text = f"out{completion.index}".encode()


def _generator(monkeypatch: pytest.MonkeyPatch, *, chat: bool = True, batch_size: int = 4, n_ctx: int = 64,
               vocab: _FakeVocab | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    """A LlamaCppGenerator around a fake Llama (no weights, no llama.cpp context)."""
    from lampbox.engine.generation import llamacpp, llamacpp_batch

    _FakeDecoder.made = []
    monkeypatch.setattr(llamacpp_batch, "BatchDecoder", _FakeDecoder)
    generator = object.__new__(llamacpp.LlamaCppGenerator)
    generator.name, generator.path, generator.own_adapter = "fake", Path("fake.gguf"), None
    generator.chat, generator.batch_size, generator.threads = chat, batch_size, 2
    generator._llama, generator._adapters = _FakeLlama(n_ctx, vocab), _FakeAdapters()
    generator._lock, generator._batch_lock = threading.Lock(), threading.Lock()
    generator._batch_decoder, generator._chat_formatter = None, None
    generator._use_threads = lambda context: None  # a real llama.cpp call on a real context
    if chat:  # the chat template's rendering is llama-cpp-python's: one byte per character here
        generator.prompt_tokens = lambda prompt: list(prompt.encode())
    return generator


GREEDY = GenerationParams(max_new_tokens=8)


def test_greedy_requests_are_batched_and_grouped_by_adapter_in_first_seen_order(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator(monkeypatch)
    requests = [GenerationRequest("p0", adapter="b"), GenerationRequest("p1"), GenerationRequest("p2", adapter="b"),
                GenerationRequest("p3", adapter="a")]  # fmt: skip
    assert generator.generate(requests, GREEDY) == ["out0", "out1", "out2", "out3"]
    (decoder,) = _FakeDecoder.made
    assert [(adapter, [c.index for c in group]) for adapter, group in decoder.groups] == [("b", [0, 2]), (None, [1]), ("a", [3])]
    assert decoder.threads == 2  # the generator's threads, handed on per call
    assert generator._llama.calls == []  # nothing went one by one
    generator.generate(["x", "y"], GREEDY)
    assert _FakeDecoder.made == [decoder]  # the batched context is kept between calls


def test_each_completion_gets_the_context_left_and_the_chat_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator(monkeypatch, n_ctx=20)
    params = GenerationParams(max_new_tokens=8, stop=("\n\n",))
    generator.generate(["a" * 4, "b" * 15], params)
    (_, group), = _FakeDecoder.made[0].groups  # fmt: skip
    assert [c.max_tokens for c in group] == [8, 5]  # the second prompt has 5 tokens of room left
    assert group[0].stops == (b"\n\n", b"<|im_end|>")  # the EOS text llama-cpp-python adds for chat
    generator.generate(["a" * 4, "b" * 15], GenerationParams(max_new_tokens=0))
    assert [c.max_tokens for c in _FakeDecoder.made[0].groups[-1][1]] == [16, 5]  # 0: up to the context
    with pytest.raises(LampboxError, match=r"fake: Requested tokens \(20\) exceed context window of 20"):
        generator.generate(["ok", "c" * 20], GREEDY)
    assert len(_FakeDecoder.made[0].groups) == 2  # refused before anything was decoded


def test_a_cancelled_group_counts_the_groups_finished_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator(monkeypatch)
    generator.generate(["warm", "up"], GREEDY)
    _FakeDecoder.made[0].cancel_on = "late"
    requests = [GenerationRequest("a"), GenerationRequest("b"), GenerationRequest("c", adapter="late"), GenerationRequest("d", adapter="late")]
    with pytest.raises(GenerationCancelled, match="after 3 of 4") as cancelled:
        generator.generate(requests, GREEDY)
    assert (cancelled.value.finished, cancelled.value.total) == (3, 4)


@pytest.mark.parametrize(
    ("params", "prompts", "batch_size", "chat"),
    [
        (GenerationParams(max_new_tokens=8, temperature=0.7), ["a", "b"], 4, True),  # sampling
        (GREEDY, ["a"], 4, True),  # a single prompt
        (GREEDY, ["a", "b"], 1, True),  # batch_size 1
        (GREEDY, ["a", ""], 4, False),  # an empty plain prompt starts with BOS: llama-cpp-python's path
    ],
)
def test_what_is_not_batched_goes_one_by_one_with_llama_cpp_pythons_options(
    monkeypatch: pytest.MonkeyPatch, params: GenerationParams, prompts: list[str], batch_size: int, chat: bool
) -> None:
    generator = _generator(monkeypatch, batch_size=batch_size, chat=chat)
    seen: list[int] = []
    outputs = generator.generate(prompts, params, on_output=lambda index, _: seen.append(index))
    assert outputs == [p.upper() for p in prompts] and seen == list(range(len(prompts)))
    assert _FakeDecoder.made == []
    prompt, options = generator._llama.calls[0]
    assert prompt == prompts[0]
    assert options["temperature"] == params.temperature and options["max_tokens"] == 8
    assert options["repeat_penalty"] == 1.0 and options["min_p"] == 0.0 and options["stop"] is None
    # Each request starts from an empty cache, with the model's own adapters alone.
    assert generator._llama.resets == len(prompts)
    assert generator._adapters.applied == [("llama-context", None)] * len(prompts)


def test_one_by_one_cancels_between_prompts_and_names_the_model_on_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator(monkeypatch, batch_size=1)
    asked = iter([False, False, True])
    with pytest.raises(GenerationCancelled, match="after 2 of 3"):
        generator.generate(["a", "b", "c"], GREEDY, should_cancel=lambda: next(asked))
    assert [prompt for prompt, _ in generator._llama.calls] == ["a", "b"]
    with pytest.raises(LampboxError, match=r"^fake: Requested tokens \(5000\)"):
        generator.generate(["overflow"], GenerationParams(max_new_tokens=4, stop=("x",)))
    assert generator._llama.calls[-1][1]["stop"] == ["x"]


def test_streams_yield_the_chat_deltas_or_the_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    chat = _generator(monkeypatch)
    assert list(chat.stream(GenerationRequest("hey", adapter="u1"), GREEDY)) == ["H", "E", "Y"]  # the role-only delta is skipped
    assert chat._adapters.applied == [("llama-context", "u1")]
    plain = _generator(monkeypatch, chat=False)
    assert "".join(plain.stream("abc", GREEDY)) == "ABC"
    assert plain._llama.calls[0][1]["stream"] is True


def test_sampled_streaming_goes_one_prompt_after_another(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator(monkeypatch)
    order: list[int] = []
    outputs = generator.generate_streaming(["ab", "cd"], GenerationParams(max_new_tokens=4, temperature=0.5), lambda index, _: order.append(index))
    assert outputs == ["AB", "CD"] and order == [0, 0, 1, 1] and _FakeDecoder.made == []
    greedy = generator.generate_streaming(["ab", "cd"], GREEDY, lambda index, _: None)
    assert greedy == ["out0", "out1"] and len(_FakeDecoder.made) == 1  # greedy: one batch


def test_plain_prompt_tokens_follow_the_models_bos_and_eos_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    with_bos = _generator(monkeypatch, chat=False)
    assert with_bos.prompt_tokens("hi") == [1, *b"hi"]
    assert with_bos.prompt_tokens("") == [1]
    both = _generator(monkeypatch, chat=False, vocab=_FakeVocab(bos=False, eos=True))
    assert both.prompt_tokens("hi") == [*b"hi", 2]
    separated = _generator(monkeypatch, chat=False, vocab=_FakeVocab(bos=False, sep=5))
    assert separated.prompt_tokens("hi") == [*b"hi", 5]  # a SEP token closes the prompt (BERT-like vocabularies)


def test_scoring_threads_and_non_gguf_models_are_clear_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator, _log_softmax

    generator = _generator(monkeypatch)
    with pytest.raises(LampboxError, match="does not score continuations; use the hf backend"):
        generator.score(["a"], ["b"])
    with pytest.raises(LampboxError, match="threads must be at least 1"):
        generator.set_threads(0)
    assert generator.set_threads(3) and generator.threads == 3
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(LampboxError, match="needs a GGUF model; .* is a Hugging Face model"):
        LlamaCppGenerator(str(folder))
    rows = _log_softmax([[0.0, 1.0, 2.0], [1000.0, 1000.0, 1000.0]])  # no overflow for large logits
    assert [float(math.fsum(math.exp(v) for v in row)) for row in rows] == pytest.approx([1.0, 1.0])
    assert rows[1][0] == pytest.approx(math.log(1 / 3)) and rows[0][2] - rows[0][1] == pytest.approx(1.0)


# -- GgufAdapters: the bounded LRU of adapters on one llama.cpp model -------------------------


class _FakeLlamaCpp:
    """The llama.cpp calls GgufAdapters makes, recorded; adapter pointers are c_void_p."""

    def __init__(self) -> None:
        self.inits: list[str] = []
        self.freed: list[int] = []
        self.set: list[tuple[int, list[int]]] = []
        self.cleared: list[str] = []
        self.fail_init = False

    def llama_adapter_lora_init(self, model: Any, path: bytes) -> Any:
        self.inits.append(Path(path.decode()).parent.name)
        return None if self.fail_init else ctypes.c_void_p(1000 + len(self.inits))

    def llama_set_adapters_lora(self, context: Any, array: Any, count: int, scales: Any) -> int:
        self.set.append((ctypes.cast(context, ctypes.c_void_p).value or 0, [array[i] for i in range(count)]))
        return 0

    def llama_get_memory(self, context: Any) -> Any:
        return f"memory of {ctypes.cast(context, ctypes.c_void_p).value}"

    def llama_memory_clear(self, memory: Any, data: bool) -> None:
        self.cleared.append(memory)

    def llama_adapter_lora_free(self, pointer: Any) -> None:
        self.freed.append(pointer.value)

    llama_adapter_lora_p_ctypes = ctypes.c_void_p


@pytest.fixture
def fake_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> _FakeLlamaCpp:
    import llama_cpp

    from lampbox.engine.generation import gguf_lora

    fake = _FakeLlamaCpp()
    for name in ("llama_adapter_lora_init", "llama_set_adapters_lora", "llama_get_memory", "llama_memory_clear",
                 "llama_adapter_lora_free", "llama_adapter_lora_p_ctypes"):  # fmt: skip
        monkeypatch.setattr(llama_cpp, name, getattr(fake, name))
    # the conversion to a GGUF LoRA (tested in test_gguf_lora.py): the peft folder's own file here
    monkeypatch.setattr(gguf_lora, "gguf_adapter", lambda folder, base: Path(folder) / "adapter_model.safetensors")
    return fake


def _adapter(folder: Path, base_fingerprint: str | None = None) -> str:
    """A peft folder (only its config matters here); with a fingerprint, a trained model's adapter/."""
    import json

    adapter = folder / "adapter" if base_fingerprint else folder
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    if base_fingerprint:
        info = {"name": folder.name, "kind": "lora", "base": "other-model", "base_fingerprint": base_fingerprint}
        (folder / "lampbox-model.json").write_text(json.dumps(info))
    return str(adapter)


def test_adapters_are_set_once_per_change_and_the_least_recently_used_is_freed(fake_llama_cpp: _FakeLlamaCpp, tmp_path: Path) -> None:
    from lampbox.engine.generation.llamacpp_adapters import GgufAdapters

    a, b, c = (_adapter(tmp_path / name) for name in "abc")
    own = _adapter(tmp_path / "own")
    adapters = GgufAdapters("model", Path("base.gguf"), "fake", own_adapter=own, capacity=2)
    assert fake_llama_cpp.inits == ["own"]
    context, other = ctypes.c_void_p(1), ctypes.c_void_p(2)
    assert adapters.apply(context, a) is True
    assert fake_llama_cpp.set[-1] == (1, [1001, 1002])  # the model's own adapter first, the request's on top
    assert fake_llama_cpp.cleared == ["memory of 1"]  # KV cells computed under other adapters are dropped
    assert adapters.apply(context, a) is False and len(fake_llama_cpp.cleared) == 1  # no change, no clearing
    adapters.apply(context, b)
    adapters.apply(context, None)
    assert fake_llama_cpp.set[-1] == (1, [1001])  # the own adapter alone
    adapters.apply(other, c)  # a third adapter: a (least recently used) is freed, not b
    assert adapters.loaded == [str(Path(b).resolve()), str(Path(c).resolve())]
    assert fake_llama_cpp.freed == [1002]
    adapters.apply(context, a)  # a again: initialised anew
    assert fake_llama_cpp.inits == ["own", "a", "b", "c", "a"]


def test_an_adapter_set_on_a_context_is_not_freed_until_that_context_is_forgotten(fake_llama_cpp: _FakeLlamaCpp, tmp_path: Path) -> None:
    from lampbox.engine.generation.llamacpp_adapters import GgufAdapters

    a, b = _adapter(tmp_path / "a"), _adapter(tmp_path / "b")
    adapters = GgufAdapters("model", Path("base.gguf"), "fake", capacity=1)
    decoding, idle = ctypes.c_void_p(7), ctypes.c_void_p(8)
    adapters.apply(decoding, a)  # the batch decoder's context may still be decoding with a
    adapters.apply(idle, b)
    assert len(adapters.loaded) == 2 and fake_llama_cpp.freed == []  # over the bound, but a is in use
    adapters.forget(decoding)
    adapters.apply(idle, b)
    assert adapters.loaded == [str(Path(b).resolve())] and fake_llama_cpp.freed == [1001]


def test_an_adapter_rewritten_in_place_is_initialised_again(fake_llama_cpp: _FakeLlamaCpp, tmp_path: Path) -> None:
    import os

    from lampbox.engine.generation.llamacpp_adapters import GgufAdapters

    a = _adapter(tmp_path / "a")
    adapters = GgufAdapters("model", Path("base.gguf"), "fake", capacity=4)
    adapters.apply(ctypes.c_void_p(1), a)
    weights = Path(a) / "adapter_model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # retrained: new file times
    assert adapters.apply(ctypes.c_void_p(1), a) is True
    assert fake_llama_cpp.inits == ["a", "a"]


def test_bad_adapters_and_capacities_are_clear_errors(fake_llama_cpp: _FakeLlamaCpp, tmp_path: Path) -> None:
    from lampbox.engine.generation.llamacpp_adapters import GgufAdapters

    with pytest.raises(LampboxError, match="capacity must be at least 1"):
        GgufAdapters("model", Path("base.gguf"), "fake", capacity=0)
    adapters = GgufAdapters("model", Path("base.gguf"), "fake", base_fingerprint="f" * 64)
    context = ctypes.c_void_p(1)
    with pytest.raises(InputFileError, match="not a LoRA adapter folder"):
        adapters.apply(context, str(tmp_path))
    foreign = _adapter(tmp_path / "foreign", base_fingerprint="0" * 64)
    with pytest.raises(LampboxError, match="'foreign' was trained on 'other-model', whose weights differ from the loaded model 'fake'"):
        adapters.apply(context, str(tmp_path / "foreign"))  # the trained model's folder: its adapter/ is found
    assert fake_llama_cpp.inits == [] and foreign.endswith("adapter")
    fake_llama_cpp.fail_init = True
    with pytest.raises(InputFileError, match="llama.cpp could not load this LoRA adapter for fake"):
        adapters.apply(context, _adapter(tmp_path / "broken"))
