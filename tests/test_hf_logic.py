"""The hf backend's logic on the tiny random Llama (conftest's tiny_lm, loaded in well under a
second): batches grouped by adapter and ordered by length, left padding, stop strings,
cancelling, length checks, streaming, scoring paths that must agree, identity and bad settings.
The real SmolLM2 (GGUF conversion, chat outputs, int8 speed) is test_generation_hf.py's, marked
slow."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lampbox.engine.generation.base import GenerationParams, GenerationRequest
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.errors import InputFileError, LampboxError

PROMPTS = ["Write a subject: fix the parser", "Hi", "Write a subject: speed up the diff machinery in git"]
PARAMS = GenerationParams(max_new_tokens=6)


@pytest.fixture(scope="module")
def lively_lm(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_lm with larger random weights: its greedy outputs differ from prompt to prompt
    (tiny_lm's near-uniform logits give every prompt the same newlines)."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("lively-lm") / "model"
    shutil.copytree(tiny_lm, folder)
    config = AutoConfig.from_pretrained(tiny_lm)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def generator(lively_lm: Path) -> Iterator[Any]:
    from lampbox.engine.generation.hf import HFGenerator

    loaded = HFGenerator(str(lively_lm), batch_size=2, context_size=96)
    yield loaded
    loaded.close()


def test_batches_group_requests_by_adapter_and_put_similar_lengths_together(generator: Any) -> None:
    requests = [("a", None), ("b", "u1"), ("c", None), ("d", None), ("e", "u1"), ("f", None)]
    lengths = [3, 9, 7, 1, 2, 5]
    batches = list(generator._batches(requests, [[0] * n for n in lengths]))
    # first-seen adapter order; longest first within an adapter; at most batch_size (2) each
    assert batches == [(None, [2, 5]), (None, [0, 3]), ("u1", [1, 4])]


def test_left_padding_masks_the_pad_and_keeps_the_ids_at_the_end(generator: Any) -> None:
    input_ids, mask = generator._padded([[5, 6, 7], [8]])
    pad = generator.tokenizer.hf_tokenizer.pad_token_id
    assert input_ids.tolist() == [[5, 6, 7], [pad, pad, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_outputs_equal_one_at_a_time_and_each_is_reported(generator: Any) -> None:
    seen: list[int] = []
    batched = generator.generate(PROMPTS, PARAMS, on_output=lambda index, _: seen.append(index))
    assert sorted(seen) == [0, 1, 2]
    assert batched == [generator.generate([prompt], PARAMS)[0] for prompt in PROMPTS]
    assert len(set(batched)) == 3  # each prompt its own output: rows are not mixed up


def test_a_stop_string_cuts_the_output_before_it(generator: Any) -> None:
    full = generator.generate(PROMPTS[:1], GenerationParams(max_new_tokens=12))[0]
    stop = full.strip()[2:4]
    assert stop and full.index(stop) > 0
    stopped = generator.generate(PROMPTS[:1], GenerationParams(max_new_tokens=12, stop=(stop,)))[0]
    assert stopped == full[: full.index(stop)]
    streamed = "".join(generator.stream(PROMPTS[0], GenerationParams(max_new_tokens=12, stop=(stop,))))
    assert streamed == stopped


def test_cancel_and_too_long_prompts_stop_before_generating(generator: Any) -> None:
    with pytest.raises(GenerationCancelled, match="after 0 of 3"):
        generator.generate(PROMPTS, PARAMS, should_cancel=lambda: True)
    long = "word " * 120
    with pytest.raises(LampboxError, match=r"prompt of \d+ tokens \+ 6 new tokens exceeds the context size 96"):
        generator.generate([PROMPTS[0], long], PARAMS)
    with pytest.raises(LampboxError, match="exceeds the context size 96"):
        list(generator.stream(long, PARAMS))
    with pytest.raises(GenerationCancelled):
        generator.generate_streaming(PROMPTS, PARAMS, lambda index, piece: None, should_cancel=lambda: True)


def test_streams_join_to_the_generated_outputs(generator: Any) -> None:
    expected = generator.generate(PROMPTS, PARAMS)
    assert "".join(generator.stream(PROMPTS[2], PARAMS)) == expected[2]
    pieces: dict[int, list[str]] = {0: [], 1: [], 2: []}
    outputs = generator.generate_streaming(PROMPTS, PARAMS, lambda index, piece: pieces[index].append(piece))
    assert outputs == expected
    assert ["".join(pieces[index]) for index in range(3)] == expected

class _Row:
    """A generated step as the streamer receives it (a tensor's reshape/tolist)."""

    def __init__(self, values: list[int]) -> None:
        self.values = values

    def reshape(self, _: int) -> _Row:
        return self

    def tolist(self) -> list[int]:
        return self.values



def test_row_streamer_holds_back_unsettled_text_and_stop_strings() -> None:
    from lampbox.engine.generation.hf import _RowStreamer

    class Tokens:
        """Decodes token ids through a table; an unfinished character shows as U+FFFD."""

        table = {1: "ab", 2: "\ufffd", 3: "é", 4: " ", 5: "STOP", 6: "x"}

        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            text = "".join(self.table[i] for i in ids)
            return text.replace("\ufffdé", "é")  # the next token completes the character

    shown: list[tuple[int, str]] = []
    streamer = _RowStreamer(Tokens(), 2, lambda row, piece: shown.append((row, piece)), stop=("STOP",))
    streamer.put(_Row([99, 99]))  # the prompts: not shown
    for step in ([1, 1], [2, 6], [3, 6], [4, 6], [5, 6]):
        streamer.put(_Row(step))
    assert [p for r, p in shown if r == 0] == ["ab", "é", " "]  # '\ufffd' waits for 'é'; 'STOP' never shows
    assert "".join(p for r, p in shown if r == 1) == "abxxxx"
    assert all("\ufffd" not in piece for _, piece in shown)


def test_row_streamer_holds_back_the_start_of_a_stop_string_split_over_tokens() -> None:
    """'STOP' arrives as 'S', 'TO', 'P': row 0 shows none of it; row 1's 'S' + 'TO' turns out
    not to be one ('x' follows) and shows once that is decided. Every piece joins to a prefix
    of the row's output, and the final flush completes it."""
    from lampbox.engine.generation.hf import _RowStreamer

    table = {1: "ab", 2: "S", 3: "TO", 4: "P", 5: "x", 6: " c"}

    class Tokens:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return "".join(table[i] for i in ids)

    steps = ([1, 1], [2, 2], [3, 3], [4, 5], [6, 6])
    outputs = ["ab", "abSTOx c"]  # row 0 cut at 'STOP' (as generate() cuts it)
    shown: list[list[str]] = [[], []]

    def on_piece(row: int, piece: str) -> None:
        shown[row].append(piece)
        assert outputs[row].startswith("".join(shown[row])), (row, shown[row])

    streamer = _RowStreamer(Tokens(), 2, on_piece, stop=("STOP", ""))
    streamer.put(_Row([99, 99]))  # the prompts: not shown
    for step in steps:
        streamer.put(_Row(step))
    assert shown == [["ab"], ["ab", "STOx", " c"]]
    for row, output in enumerate(outputs):
        streamer.show(row, output)  # _stream_batch's final flush
    assert ["".join(pieces) for pieces in shown] == outputs


def test_streamed_pieces_never_show_a_stop_string_split_over_several_tokens(generator: Any) -> None:
    """For stop strings that span three tokens of the unstopped output, the pieces of `stream`
    and of `generate_streaming` join, after every piece, to a prefix of generate()'s output."""
    tokenizer = generator.tokenizer.hf_tokenizer
    long = GenerationParams(max_new_tokens=12)
    checked = 0
    for prompt, full in zip(PROMPTS, generator.generate(PROMPTS, long), strict=True):
        tokens = [tokenizer.decode([token]) for token in tokenizer.encode(full, add_special_tokens=False)]
        # the last character of token 3, all of token 4, the first of token 5
        stop = tokens[3][-1] + tokens[4] + tokens[5][0]
        params = GenerationParams(max_new_tokens=12, stop=(stop,))
        expected = generator.generate([prompt], params)[0]
        assert len(expected) < len(full)  # the stop string was met
        streamed: list[str] = []
        for piece in generator.stream(prompt, params):
            streamed.append(piece)
            assert expected.startswith("".join(streamed)), (stop, streamed)
        assert "".join(streamed) == expected
        pieces: list[str] = []

        def on_piece(index: int, piece: str, pieces: list[str] = pieces, expected: str = expected) -> None:
            pieces.append(piece)
            assert expected.startswith("".join(pieces)), pieces

        assert generator.generate_streaming([prompt], params, on_piece) == [expected]
        assert "".join(pieces) == expected
        checked += 1
    assert checked == len(PROMPTS)


def test_scores_of_labels_equal_scores_of_the_same_continuations(generator: Any) -> None:
    """score_labels (one prompt pass, the labels on its KV cache) and score (a full forward
    pass per prompt + continuation) are two code paths for the same numbers."""
    labels = ["yes", "no", "maybe later"]
    by_labels = generator.score_labels(PROMPTS[:2], labels)
    for row, prompt in enumerate(PROMPTS[:2]):
        direct = generator.score([prompt] * len(labels), labels)
        assert by_labels[row] == pytest.approx(direct, abs=1e-3)
    alone = generator.score(PROMPTS[2:], ["maybe later"])[0]
    batched = generator.score([PROMPTS[0], PROMPTS[2]], ["no", "maybe later"])[1]
    assert alone == pytest.approx(batched, abs=1e-3) and alone < 0  # left padding changes nothing
    assert generator.score(PROMPTS[:1], [""]) == [0.0]
    # batched longest first (batch_size 2: "Hi" shares no batch with a long prompt), each score
    # returned in the caller's order, an empty continuation's 0.0 in its place
    prompts, continuations = [PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[1]], ["no", "maybe later", "yes", ""]
    each = [generator.score([prompt], [cont])[0] for prompt, cont in zip(prompts, continuations, strict=True)]
    assert generator.score(prompts, continuations) == pytest.approx(each, abs=1e-3)
    assert each[3] == 0.0 and len(set(each[:3])) == 3
    with pytest.raises(LampboxError, match="one continuation per prompt"):
        generator.score(PROMPTS, ["x"])
    with pytest.raises(LampboxError, match="not passages"):
        generator.generate([GenerationRequest("q", passages=("p1", "p2"))], PARAMS)


def test_identity_names_the_folder_content_and_the_settings(generator: Any, lively_lm: Path) -> None:
    from lampbox.engine.fingerprint import folder_sha256

    identity = generator.identity()
    assert identity["backend"] == "hf" and identity["folder_sha256"] == folder_sha256(lively_lm)
    assert (identity["device"], identity["dtype"], identity["chat"]) == ("cpu", "float32", True)
    assert "quantize" not in identity
    with pytest.raises(LampboxError, match="threads must be at least 1"):
        generator.set_threads(0)


def test_int8_layers_are_recorded_and_refuse_per_request_adapters(lively_lm: Path, generator: Any) -> None:
    import torch

    from lampbox.engine.generation.hf import HFGenerator

    quantized = HFGenerator(str(lively_lm), quantize="int8")
    try:
        assert not [m for m in quantized.model.modules() if isinstance(m, torch.nn.Linear)]
        identity = quantized.identity()
        assert identity.pop("quantize") == "int8" and identity == generator.identity()
        assert quantized.generate(PROMPTS[:1], PARAMS) == quantized.generate(PROMPTS[:1], PARAMS)
        with pytest.raises(LampboxError, match="per-request adapters need quantize unset"):
            quantized.generate([GenerationRequest("Hi", adapter="some-user")], PARAMS)
    finally:
        quantized.close()


def test_bad_settings_are_one_clear_error(lively_lm: Path, tmp_path: Path) -> None:
    from lampbox.engine.generation.hf import HFGenerator, converted_gguf_folder

    with pytest.raises(LampboxError, match="quantize must be one of int8 \\(or unset\\), not 'int4'"):
        HFGenerator(str(lively_lm), quantize="int4")
    with pytest.raises(LampboxError, match="quantize=int8 is a CPU speed-up; on cuda leave it unset"):
        HFGenerator(str(lively_lm), quantize="int8", device="cuda")
    with pytest.raises(InputFileError, match="no such GGUF file"):
        converted_gguf_folder(tmp_path / "missing.gguf")
    # A tokenizer without a chat template: chat is off by default and refused when asked for.
    plain = tmp_path / "plain"
    shutil.copytree(lively_lm, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(LampboxError, match="has no chat template; use chat=False"):
        HFGenerator(str(plain), chat=True)
    unchatted = HFGenerator(str(plain))
    assert unchatted.chat is False
    assert unchatted._prompt_ids("Hi") == unchatted.tokenizer.hf_tokenizer("Hi")["input_ids"]


def test_a_loaded_hf_model_is_named_in_the_crash_note(tiny_lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervising parent names the hf backend (model, device, dtype) if torch's native code
    kills the process (lampbox.crashnote), and forgets it once closed."""
    from lampbox.crashnote import NOTE_ENV, read_notes
    from lampbox.engine.generation import load_generator

    note = tmp_path / "note"
    monkeypatch.setenv(NOTE_ENV, str(note))
    generator = load_generator("hf", str(tiny_lm), chat=False)
    lines = read_notes(note)
    assert len(lines) == 1 and lines[0].startswith("the hf backend: ") and "cpu, float32" in lines[0], lines
    generator.close()
    assert read_notes(note) == []


class _StandInPeft:
    """peft's PeftModel as AdapterSlots drives it: which adapters are loaded, which is set, and
    whether the adapter layers are on."""

    def __init__(self, folder: str, name: str) -> None:
        self.adapters = {name: folder}
        self.calls: list[tuple[str, ...]] = [("load", name)]
        self.base_model = self

    def load_adapter(self, folder: str, adapter_name: str) -> None:
        self.adapters[adapter_name] = folder
        self.calls.append(("load", adapter_name))

    def set_adapter(self, name: str, inference_mode: bool) -> None:
        self.calls.append(("set", name))

    def delete_adapter(self, name: str) -> None:
        del self.adapters[name]
        self.calls.append(("delete", name))

    def enable_adapter_layers(self) -> None:
        self.calls.append(("on",))

    def disable_adapter_layers(self) -> None:
        self.calls.append(("off",))

    def eval(self) -> None:
        pass


def test_adapter_slots_switch_only_on_change_and_drop_the_least_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import peft

    from lampbox.engine.generation.hf_adapters import AdapterSlots

    made: list[_StandInPeft] = []

    def from_pretrained(model: Any, folder: str, adapter_name: str) -> _StandInPeft:
        made.append(_StandInPeft(folder, adapter_name))
        return made[-1]

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", from_pretrained)
    folders = {}
    for name in "abc":
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
        folders[name] = str(tmp_path / name)
    with pytest.raises(LampboxError, match="capacity must be at least 1"):
        AdapterSlots(object(), capacity=0)
    slots = AdapterSlots(object(), capacity=2)
    slots.activate(None)  # nothing loaded yet: nothing to switch off
    slots.activate(folders["a"])
    (peft_model,) = made  # the first adapter wraps the model; the others are loaded into it
    slots.activate(folders["a"])
    slots.activate(None)
    slots.activate(None)
    slots.activate(folders["b"])
    slots.activate(folders["a"])
    slots.activate(folders["c"])  # over the bound: b, the least recently used, is dropped
    assert peft_model.calls == [
        ("load", "a1"), ("set", "a1"), ("off",), ("load", "a2"), ("on",), ("set", "a2"), ("set", "a1"),
        ("load", "a3"), ("set", "a3"), ("delete", "a2"),
    ]  # fmt: skip
    assert slots.loaded == [str(Path(folders["a"]).resolve()), str(Path(folders["c"]).resolve())]
    config = tmp_path / "a" / "adapter_config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a retrained adapter, same folder
    slots.activate(folders["a"])
    assert peft_model.calls[-3:] == [("load", "a4"), ("set", "a4"), ("delete", "a1")]  # the stale a1 drops out next
    with pytest.raises(InputFileError, match="not a LoRA adapter folder"):
        slots.activate(str(tmp_path))
