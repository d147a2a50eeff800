"""Generations side by side with the real packaged model (smollm2-135m-instruct on llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import SelectionList, Static

from lampbox.engine import scoring
from lampbox.lab import pipeline
from lampbox.store import Store
from lampbox.tui import create_app
from lampbox.tui.screens.generate import GenerationScreen
from lampbox.tui.screens.prompt import PromptScreen
from lampbox.tui.screens.question import QuestionScreen

SIZE = (120, 36)
TOKENS = 4  # keep the model's work small: two panes of four new tokens


@pytest.fixture
def demo_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from lampbox.demo import demo_path
    from lampbox.store.importer import import_path

    store = Store(tmp_path / "demo.duckdb")
    import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
    yield store
    store.close()


async def _open_generation(app, pilot, settle) -> GenerationScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("enter")  # the first user
    await settle(pilot)
    await pilot.press("enter")  # their first question
    await settle(pilot)
    question_screen = app.screen
    assert isinstance(question_screen, QuestionScreen)
    question_screen.query_one("#retrievers", SelectionList).deselect("recency")
    await settle(pilot)
    assert question_screen.retrievers == ["bm25"]
    await pilot.press("g")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, GenerationScreen)
    return screen


@pytest.mark.slow
async def test_generation_fills_and_scores_the_panes(demo_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_generation(app, pilot, settle)
        panes = screen.panes
        assert [pane.choice.retrieval_label for pane in panes] == ["no personalization", "bm25 k=5"]
        task = demo_store.task(screen.question.task)
        for pane in panes:
            assert pane.state == "done" and not pane.cached
            assert pane.output.strip() and pane.pieces >= 1
            assert pane.prepared is not None
            assert pane.prepared.spec.params.max_new_tokens == TOKENS
            # The output was cached for the bench, and scored with the task's metric.
            assert pipeline.cached_output(demo_store, pane.prepared) == pane.output
            assert pane.scores == scoring.score_output(task, pane.output, screen.question.gold)
            assert "rouge-1" in str(pane.query_one(".pane-scores", Static).render())
        assert not panes[0].prepared.items  # type: ignore[union-attr]
        assert len(panes[1].prepared.items) == 5  # type: ignore[union-attr]

        # The exact prompt is one key away.
        panes[1].focus()
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        shown = str(app.screen.query_one("#prompt-text", Static).render())
        assert shown == panes[1].prepared.prompt.text  # type: ignore[union-attr]
        await pilot.press("escape")
        await pilot.pause()

        # A second look is served from the generation cache at once.
        outputs = [pane.output for pane in panes]
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        again = app.screen
        assert isinstance(again, GenerationScreen)
        assert [pane.output for pane in again.panes] == outputs
        assert all(pane.cached and pane.state == "done" for pane in again.panes)


@pytest.mark.slow
async def test_three_llamacpp_panes_stream_as_one_batch(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lampbox.engine.generation.llamacpp_batch import BatchDecoder

    batches: list[tuple[int, bool]] = []  # (completions, streamed) per decoder call
    decode = BatchDecoder.generate

    def spy(self, completions, on_output=None, should_cancel=None, on_piece=None, *rest):  # type: ignore[no-untyped-def]
        batches.append((len(completions), on_piece is not None))
        return decode(self, completions, on_output, should_cancel, on_piece, *rest)

    monkeypatch.setattr(BatchDecoder, "generate", spy)
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _generate(app, pilot, settle)  # none, bm25 and recency at k=5, on llama.cpp
        panes = screen.panes
        assert len(panes) == 3 and {pane.choice.backend for pane in panes} == {"llamacpp"}
        assert batches == [(3, True)]  # one streamed batch for the three panes
        status = str(screen.query_one("#generate-status", Static).render())
        assert "llamacpp:smollm2-135m-instruct-q8_0: 3 panes, one batch" in status  # the TUI's default
        for pane in panes:
            assert pane.state == "done" and not pane.cached and pane.pieces >= 1
            assert pipeline.cached_output(demo_store, pane.prepared) == pane.output  # type: ignore[arg-type]
        # The batch's outputs are the one-at-a-time ones (each prompt alone, the unbatched path).
        generator = app.generators.get("llamacpp", panes[0].choice.model)
        params = panes[0].prepared.spec.params  # type: ignore[union-attr]
        for pane in panes:
            alone = generator.generate([pane.prepared.input.request], params)  # type: ignore[union-attr]
            assert alone == [pane.output]


async def test_cancel_stops_generation(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from lampbox.tui import generation

    release = threading.Event()

    def blocked(spec, question, store, pool):  # type: ignore[no-untyped-def]
        release.wait(10)
        raise RuntimeError("should have been cancelled")

    monkeypatch.setattr(generation, "prepare", blocked)
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("g")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        await pilot.press("ctrl+x")
        release.set()
        await settle(pilot)
        assert all(pane.state == "cancelled" for pane in screen.panes)
        assert "cancelled" in str(screen.query_one("#generate-status", Static).render())


async def test_a_failing_model_becomes_a_notification(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lampbox.errors import LampboxError
    from lampbox.tui import generation

    def broken(spec, question, store, pool):  # type: ignore[no-untyped-def]
        raise LampboxError("no such model file")

    monkeypatch.setattr(generation, "prepare", broken)
    app = create_app(store=demo_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        assert all(pane.state == "failed" for pane in screen.panes)
        messages = [note.message for note in app._notifications]
        assert any("no such model file" in message for message in messages)


async def _to_question(app, pilot, settle, question: int = 0) -> None:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("enter")  # the first user
    await settle(pilot)
    for _ in range(question):
        await pilot.press("down")
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(app.screen, QuestionScreen)


async def _finished(pilot, screen: GenerationScreen, until) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """Each pane's state, output and status line once every pane has its last state (done, failed or
    cancelled): a pane's last message can land after the workers that sent it are finished."""
    final = ("done", "failed", "cancelled")
    await until(pilot, lambda: all(pane.state in final for pane in screen.panes), 120, "every pane to finish")
    return [(pane.state, pane.output, str(pane.query_one(".pane-status", Static).render())) for pane in screen.panes]


async def _generate(app, pilot, settle) -> GenerationScreen:  # type: ignore[no-untyped-def]
    """From the users screen to the first question, then `g`: the generation screen, settled."""
    await _to_question(app, pilot, settle)
    await pilot.press("g")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, GenerationScreen)
    return screen


@pytest.mark.slow
async def test_each_pane_chooses_and_the_choice_is_kept(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from textual.widgets import Input, Select

    from lampbox.tui import generation
    from lampbox.tui.generation import PaneChoice
    from lampbox.tui.screens.choose import PaneChoiceScreen

    # The default panes on the dummy stand-in instead of llama.cpp: this test is about choices.
    defaults = generation.default_choices
    monkeypatch.setattr(generation, "default_choices", lambda retrievers, k: [
        replace(choice, backend="dummy") for choice in defaults(retrievers, k)
    ])  # fmt: skip
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        # Before any choice, the panes follow the question screen: none, bm25 and recency at 5.
        screen = await _generate(app, pilot, settle)
        assert app.pane_choices is None
        assert [pane.choice for pane in screen.panes] == screen.defaults
        assert [pane.choice.retrieval_label for pane in screen.panes] == [
            "no personalization", "bm25 k=5", "recency k=5",
        ]  # fmt: skip

        # m on the second pane: the dummy stand-in with recency at k=3.
        screen.panes[1].focus()
        await pilot.press("m")
        await settle(pilot)
        box = app.screen
        assert isinstance(box, PaneChoiceScreen)
        assert str(box.query_one("#choice-model", Select).value) == "smollm2-135m-instruct-q8_0"
        box.query_one("#choice-backend", Select).value = "dummy"
        box.query_one("#choice-retriever", Select).value = "recency"
        box.query_one("#choice-k", Input).value = "3"
        await pilot.click("#choice-use")
        await settle(pilot)
        assert app.screen is screen
        chosen = PaneChoice("recency", 3, "dummy", "smollm2-135m-instruct-q8_0")
        kept = [screen.defaults[0], chosen, screen.defaults[2]]
        assert app.pane_choices == kept
        pane = screen.panes[1]
        assert pane.choice == chosen and pane.has_focus
        title = str(pane.query_one(".pane-title", Static).render())
        assert "recency k=3" in title and "dummy:smollm2-135m-instruct-q8_0" in title
        assert pane.state == "done" and pane.output
        spec = pane.prepared.spec  # type: ignore[union-attr]
        assert (spec.backend, spec.retriever, spec.k) == ("dummy", "recency", 3)
        assert len(pane.prepared.items) == 3  # type: ignore[union-attr]
        assert pipeline.cached_output(demo_store, pane.prepared) == pane.output  # type: ignore[arg-type]

        # `a` adds a pane (a copy of the focused one, to change), `d` removes the focused pane.
        screen.panes[0].focus()
        await pilot.press("a")
        await settle(pilot)
        app.screen.query_one("#choice-retriever", Select).value = "bm25"
        app.screen.query_one("#choice-k", Input).value = "1"
        await pilot.click("#choice-use")
        await settle(pilot)
        assert [pane.choice.retrieval_label for pane in screen.panes] == [
            "no personalization", "recency k=3", "recency k=5", "bm25 k=1",
        ]  # fmt: skip
        assert all(pane.state == "done" for pane in screen.panes)
        # Panes on one model are one group, generated one after another on this backend.
        status = str(screen.query_one("#generate-status", Static).render())
        assert "dummy:smollm2-135m-instruct-q8_0: 4 panes, one after another" in status
        await pilot.press("d")  # the focused (new) pane
        await settle(pilot)
        assert [pane.choice for pane in screen.panes] == kept == app.pane_choices

        # Leaving and coming back to another question: the same panes.
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        question_screen = app.screen
        assert isinstance(question_screen, QuestionScreen)
        await pilot.press("g")
        await settle(pilot)
        again = app.screen
        assert isinstance(again, GenerationScreen) and again is not screen
        assert again.question.id != screen.question.id
        assert [pane.choice for pane in again.panes] == kept
        assert all(pane.state == "done" and pane.prepared.spec.backend == "dummy" for pane in again.panes)  # type: ignore[union-attr]
        assert "your choice" in str(again.query_one("#generate-title", Static).render())

        # R: back to the question screen's retrievers on the default model.
        await pilot.press("R")
        await pilot.press("ctrl+x")
        await settle(pilot)
        assert app.pane_choices is None and [pane.choice for pane in again.panes] == again.defaults


def test_models_offered_with_the_backends_they_run_on(demo_store, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Registry rows only (no weights are loaded): which backends each kind is offered on."""
    from lampbox.store.artifacts import Artifact, save_artifact
    from lampbox.tui.generation import PaneChoice, model_options, refusal

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    for name, kind, method in (("area-fid", "full", "fid"), ("subject-lora", "lora", "ipa")):
        folder = tmp_path / name
        folder.mkdir()
        save_artifact(demo_store, Artifact(name, kind, method, "LaMP_7", "base", "fp", {}, [], {}, str(folder), "h", None))
    (tmp_path / "gone").mkdir()
    save_artifact(demo_store, Artifact("gone", "lora", "ipa", "LaMP_7", "base", "fp", {}, [], {}, str(tmp_path / "nowhere"), "h", None))
    for name, kind in (("a-retriever", "retriever"), ("a-selector", "selector"), ("a-set.u.ann", "user-adapter")):
        (tmp_path / name).mkdir()
        save_artifact(demo_store, Artifact(name, kind, "m", "LaMP_7", "base", "fp", {}, [], {}, str(tmp_path / name), "h", None))

    options = {Path(option.name).name: option for option in model_options(demo_store)}
    assert "gone" not in options  # its folder is missing: it could not load
    assert not {"a-retriever", "a-selector", "a-set.u.ann"} & set(options)  # they generate nothing themselves
    assert options["smollm2-135m-instruct"].backends == ("llamacpp", "hf", "dummy")
    assert options["subject-lora"].backends == ("hf",)
    assert (options["area-fid"].backends, options["area-fid"].method) == (("fid",), "fid")
    listed = list(options.values())
    lora, fid = options["subject-lora"].name, options["area-fid"].name
    assert "runs on the hf backend" in (refusal(PaneChoice("bm25", 4, "llamacpp", lora), listed) or "")
    assert "fid backend, not hf" in (refusal(PaneChoice("bm25", 4, "hf", fid, "fid"), listed) or "")
    assert "method fid" in (refusal(PaneChoice("bm25", 4, "fid", fid, "ipa"), listed) or "")
    assert refusal(PaneChoice("bm25", 4, "fid", fid, "fid"), listed) is None
    assert refusal(PaneChoice("bm25", 4, "hf", lora), listed) is None


@pytest.fixture(scope="module")
def tiny_trained(module_home: Path, tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A LoRA adapter trained for 2 steps on the LaMP_7 demo set, on a tiny random Llama with
    SmolLM2's tokenizer (the shared tiny_lm); returns its registry row."""
    from lampbox.demo import demo_path
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.training import TrainSpec, train_model
    from lampbox.store.importer import import_path

    folder = tiny_lm
    with Store(tmp_path_factory.mktemp("train") / "train.duckdb") as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        spec = TrainSpec(task="LaMP_7", scheme="demo", retriever="bm25", k=1, model=str(folder), limit=4, dev_limit=0,
                         config=TrainConfig(max_steps=2, batch_size=2, precision="fp32", lr=1e-3))  # fmt: skip
        artifact, _ = train_model(spec, store, "tiny-demo")
    return artifact


@pytest.mark.slow
async def test_a_trained_model_runs_in_panes_on_hf_as_one_batch(demo_store, tiny_trained, settle) -> None:  # type: ignore[no-untyped-def]
    from textual.widgets import Select

    from lampbox.store.artifacts import save_artifact
    from lampbox.tui.generation import PaneChoice
    from lampbox.tui.screens.choose import PaneChoiceScreen

    save_artifact(demo_store, tiny_trained)  # the registry row, as `lampbox train` wrote it
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 1, "dummy")]
    async with app.run_test(size=SIZE) as pilot:
        screen = await _generate(app, pilot, settle)
        for index in (0, 1):
            screen.panes[index].focus()
            await pilot.press("m")
            await settle(pilot)
            box = app.screen
            assert isinstance(box, PaneChoiceScreen)
            box.query_one("#choice-model", Select).value = "tiny-demo"
            await pilot.pause()
            backend = box.query_one("#choice-backend", Select)
            assert [value for _, value in backend._options] == ["hf"]  # LoRA: hf only
            assert backend.value == "hf"
            await pilot.click("#choice-use")
            await settle(pilot)
        assert [pane.choice.model_label for pane in screen.panes] == ["hf:tiny-demo", "hf:tiny-demo"]
        # The next question, with nothing cached: both panes generate as one hf batch.
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        panes = screen.panes
        assert [pane.choice.model_label for pane in panes] == ["hf:tiny-demo", "hf:tiny-demo"]
        assert "hf:tiny-demo: 2 panes, one batch" in str(screen.query_one("#generate-status", Static).render())
        for pane in panes:
            assert pane.state == "done" and not pane.cached
            spec = pane.prepared.spec  # type: ignore[union-attr]
            assert (spec.backend, spec.model) == ("hf", "tiny-demo")
            assert pipeline.cached_output(demo_store, pane.prepared) == pane.output  # type: ignore[arg-type]
        # The batch's outputs are what the hf backend generates for the same prompts.
        generator = app.generators.get("hf", "tiny-demo")
        requests = [pane.prepared.input.request for pane in panes]  # type: ignore[union-attr]
        assert generator.generate(requests, panes[0].prepared.spec.params) == [pane.output for pane in panes]  # type: ignore[union-attr]


@pytest.mark.slow
async def test_each_generation_runs_on_the_idle_cores_measured_at_g(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The cores' load is measured from `g` to the start of each generation (faked here: 3
    usable cores, then one of them busy elsewhere): the pool's llama.cpp model runs on that many
    threads, set on the loaded model, and the status line says why."""
    import llama_cpp

    from lampbox.engine import machine
    from lampbox.engine.generation.llamacpp_batch import BatchDecoder

    monkeypatch.delenv("LAMPBOX_THREADS", raising=False)
    busy_elsewhere = [0]  # cores other processes keep busy in the second sample
    readings: list[int] = []

    def reading(stat_path=machine.PROC_STAT):  # type: ignore[no-untyped-def]
        """Each call a second later; the first sample of a generation has no load yet."""
        readings.append(1)
        ticks, busy = 100 * len(readings), busy_elsewhere[0]
        return machine.CpuSample(busy * ticks, 3 * ticks, 0.0, 3, at=float(len(readings)))

    used: list[int] = []  # the batch decoder's context threads at each generation
    decode = BatchDecoder.generate

    def spy(self, completions, *args, **kwargs):  # type: ignore[no-untyped-def]
        decode(self, completions, *args, **kwargs)
        used.append(llama_cpp.llama_n_threads(self._context.ctx))

    monkeypatch.setattr(machine, "read_cpu_sample", reading)
    monkeypatch.setattr(BatchDecoder, "generate", spy)
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _generate(app, pilot, settle)
        generator = app.generators.get("llamacpp", screen.panes[0].choice.model)
        assert generator.threads == 3 and used == [3]
        status = str(screen.query_one("#generate-status", Static).render())
        assert "3 panes, one batch, 3 threads (cores idle)" in status

        # Another question while one core is busy elsewhere: the same model, 2 threads.
        busy_elsewhere[0] = 1
        first = screen.question.id
        await pilot.press("escape")  # to the question
        await settle(pilot)
        await pilot.press("escape")  # to the user's questions
        await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, QuestionScreen)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen) and screen.question.id != first
        assert app.generators.get("llamacpp", screen.panes[0].choice.model) is generator
        assert generator.threads == 2 and used == [3, 2]
        status = str(screen.query_one("#generate-status", Static).render())
        assert "2 threads (another process is busy)" in status


async def test_streamed_pieces_reach_the_screen_at_most_every_tenth_of_a_second(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each pane's first piece is shown at once; the next ones are sent together at most every
    PIECE_EVERY_S (each message costs the app's thread a pane update while the model runs), a
    pane that stopped streaming gets its rest with the next pieces of the others, and the
    scored output is whole."""
    import time
    from dataclasses import replace

    from lampbox.tui import generation
    from lampbox.tui.screens import generate
    from lampbox.tui.widgets.generation_pane import GenerationPane

    defaults = generation.default_choices
    monkeypatch.setattr(generation, "default_choices", lambda retrievers, k: [
        replace(choice, backend="dummy") for choice in defaults(retrievers, k)
    ])  # fmt: skip

    def stream(prepared, pool, on_piece, on_output, should_cancel):  # type: ignore[no-untyped-def]
        on_piece(0, "a")
        on_piece(1, "x")  # both first pieces: sent at once
        on_piece(0, "b")
        on_piece(1, "y")  # pane 1 stops streaming here, its "y" held back
        time.sleep(generate.PIECE_EVERY_S + 0.05)
        on_piece(0, "c")  # due: "bc" for pane 0, and pane 1's held "y" with it
        on_piece(0, "d")  # held: arrives with the scored output
        on_output(0, "abcd")
        on_output(1, "xy")
        for row in range(2, len(prepared)):  # any other pane: no pieces, a whole output
            on_output(row, "z")

    monkeypatch.setattr(generation, "generate_outputs", stream)
    shown: list[tuple[int, str, int]] = []
    add_piece = GenerationPane.add_piece

    def record(self, piece: str, pieces: int = 1) -> None:  # type: ignore[no-untyped-def]
        shown.append((self.index, piece, pieces))
        add_piece(self, piece, pieces)

    monkeypatch.setattr(GenerationPane, "add_piece", record)
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _generate(app, pilot, settle)
        first, second = screen.panes[0].index, screen.panes[1].index
        assert shown == [(first, "a", 1), (second, "x", 1), (first, "bc", 2), (second, "y", 1)]
        assert [pane.output for pane in screen.panes][:2] == ["abcd", "xy"]
        assert {pane.state for pane in screen.panes} == {"done"}


def _random_lora_model(home: Path, name: str, tiny_lm: Path, seed: int, **info: object) -> Path:
    """models/NAME: a LoRA with random A and B on tiny_lm (a fresh LoRA's B is zero and would
    change nothing) and its record (a task adapter or a user's adapter of an OPPU set)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_lm),
        LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False),
    )  # fmt: skip
    folder = home / "models" / name
    model.save_pretrained(folder / "adapter")
    record = {"name": name, "method": "oppu", "task": "LaMP_7", "base": str(tiny_lm), "chat": True, **info}
    (folder / "lampbox-model.json").write_text(json.dumps(record))
    return folder


@pytest.mark.slow
async def test_an_oppu_set_pane_answers_with_the_users_adapter_beside_the_task_adapter(
    demo_store, module_home: Path, tiny_lm: Path, settle, until
) -> None:  # type: ignore[no-untyped-def]
    """A pane on an OPPU set (method oppu) answers the question with its user's adapter on the
    set's task adapter, beside a pane on the task adapter alone; for a user without an adapter
    the pane says so, and answers as the task adapter alone does."""
    import json

    from textual.widgets import Select

    from lampbox.model_folders import user_adapter_name
    from lampbox.store.artifacts import Artifact, save_artifact
    from lampbox.tui.generation import PaneChoice
    from lampbox.tui.screens.choose import PaneChoiceScreen

    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("none", 0, "dummy")]
    async with app.run_test(size=SIZE) as pilot:
        screen = await _generate(app, pilot, settle)
        user = screen.question.user_id
        adapter_name = user_adapter_name("oppu-tiny", user)
        task_folder = _random_lora_model(module_home, "oppu-tiny.task", tiny_lm, 1, kind="lora", method="ipa")
        _random_lora_model(module_home, adapter_name, tiny_lm, 2, kind="user-adapter", user=user, task_adapter="oppu-tiny.task")
        set_folder = module_home / "models" / "oppu-tiny"
        set_folder.mkdir()
        users = {user: {"adapter": adapter_name, "content_hash": "h", "items": 3}}
        (set_folder / "lampbox-model.json").write_text(json.dumps(
            {"name": "oppu-tiny", "kind": "oppu", "method": "oppu", "task": "LaMP_7", "base": str(tiny_lm), "chat": True,
             "task_adapter": "oppu-tiny.task", "users": users}
        ))  # fmt: skip
        for name, kind, folder in (("oppu-tiny.task", "lora", task_folder), ("oppu-tiny", "oppu", set_folder)):
            save_artifact(demo_store, Artifact(name, kind, "oppu" if kind == "oppu" else "ipa", "LaMP_7", str(tiny_lm), "fp", {}, [], {}, str(folder), "h", None))  # fmt: skip
        for index, model in ((0, "oppu-tiny"), (1, "oppu-tiny.task")):
            screen.panes[index].focus()
            await pilot.press("m")
            await settle(pilot)
            box = app.screen
            assert isinstance(box, PaneChoiceScreen)
            box.query_one("#choice-model", Select).value = model
            await pilot.pause()
            assert [value for _, value in box.query_one("#choice-backend", Select)._options] == ["hf"]
            await pilot.click("#choice-use")
            await settle(pilot)
        panes = screen.panes
        assert [(pane.choice.method, pane.choice.model_label) for pane in panes] == [("oppu", "hf:oppu-tiny (oppu)"), ("ipa", "hf:oppu-tiny.task")]
        states = await _finished(pilot, screen, until)
        assert [state for state, *_ in states] == ["done", "done"], states
        requests = [pane.prepared.input.request for pane in panes]  # type: ignore[union-attr]
        assert requests[0].adapter == str(module_home / "models" / adapter_name / "adapter") and requests[1].adapter is None
        assert f"user {user}'s adapter: {adapter_name}" in str(panes[0].query_one(".pane-title", Static).render())
        assert "adapter" not in str(panes[1].query_one(".pane-title", Static).render())  # no note on the task adapter's pane
        params = panes[0].prepared.spec.params  # type: ignore[union-attr]
        with_adapter = app.generators.get("hf", "oppu-tiny").generate(requests[:1], params)[0]
        task_alone = app.generators.get("hf", "oppu-tiny.task").generate(requests[1:], params)[0]
        assert (panes[0].output, panes[1].output) == (with_adapter, task_alone)
        assert panes[0].output != panes[1].output  # the user's adapter answers otherwise

        # Another user, who has no adapter in the set: the pane says so, and the task adapter answers.
        for _ in range(3):
            await pilot.press("escape")
            await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        other = app.screen
        assert isinstance(other, GenerationScreen) and other.question.user_id != user
        panes = other.panes
        states = await _finished(pilot, other, until)
        assert [state for state, *_ in states] == ["done", "done"], states
        assert panes[0].prepared.input.request.adapter is None  # type: ignore[union-attr]
        title = str(panes[0].query_one(".pane-title", Static).render())
        assert f"user {other.question.user_id} has no adapter in oppu-tiny: its task adapter alone answers" in title
        assert panes[0].output == panes[1].output
