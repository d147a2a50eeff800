"""Generations side by side: one question, one pane per choice (retriever and k, method,
backend and model; `m` changes the focused pane's, and the choices are kept while the app runs).

Every pane goes through the run pipeline (lampbox.tui.generation): the prompt is built as a
bench run builds it, a cached output is shown at once, otherwise text streams in; the finished
output is cached for the bench and scored with the task's metric. Panes on different models
generate at the same time, one thread worker per model; panes on one model go together, as
one batch on hf and on llama.cpp (docs/tui.md says how and why).

With a what-if edit from the question screen, every pane runs the edited question (the engine
applies the edit; its outputs are cached under keys of their own) and shows the unedited
question's output and score under it, with the difference against the gold; `s` saves the
what-if as small runs of kind 'whatif'.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, get_current_worker

from lampbox.engine.defaults import default_max_new_tokens
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.machine import CpuSample
from lampbox.engine.types import (
    Candidate,
    PoolAnswer,
    Question,
    SelectorProbabilities,
    oracle_pick,
)
from lampbox.engine.whatif import WhatIf
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.store import selection
from lampbox.store.browse import Dataset
from lampbox.tui import generation
from lampbox.tui.generation import PaneChoice
from lampbox.tui.messages import (
    ChoicesListed,
    GenerationPrepared,
    OriginalScored,
    OutputScored,
    PanesFailed,
    SelectorLoaded,
    TextGenerated,
    ThreadsChosen,
    WhatIfSaved,
    WorkFailed,
)
from lampbox.tui.screens.base import LampboxScreen, one_line
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.generation_pane import GenerationPane

PIECE_EVERY_S = 0.1  # a pane's text reaches the screen at most this often while it streams


def selection_text(
    selector: SelectorProbabilities, answers: Iterable[PoolAnswer], oracle: Candidate | None
) -> Text:
    """Every candidate of the selection for this question: its probability, its stored answer
    and score; ★ the selector's pick, ◆ the oracle's (the best stored score)."""
    text = Text.assemble((f"{selector.label}", "bold"), "  candidates (★ selector's pick · ◆ oracle's pick)")
    listed = list(answers) or [  # a selection that does not name its pool: the candidates alone
        PoolAnswer(_candidate_label(entry.candidate), entry.candidate, None, None) for entry in selector.candidates
    ]
    for answer in listed:
        probability = selector.probability(answer.candidate)
        shown = "  –  " if probability is None else f"{probability:.3f}"
        marks = ("★" if probability is not None and selector.chosen == answer.candidate else " ") + (
            "◆" if oracle is not None and oracle == answer.candidate else " "
        )
        score = "  –  " if answer.score is None else f"{answer.score:.3f}"
        text.append(f"\n{marks} p={shown}  score {score}  ")
        text.append_text(cell(answer.label, 40)).append(": ")
        text.append_text(Text("(not run)", style="dim") if answer.output is None else cell(answer.output, 60))
    return text


def _candidate_label(candidate: Candidate) -> str:
    retrieval = "no personalization" if candidate.retriever == "none" else f"{candidate.retriever} k={candidate.k}"
    method = "" if candidate.method == "ipa" else f" {candidate.method}"
    return retrieval + method


class GenerationScreen(LampboxScreen):
    """Panes of generations for one question; `p` shows the exact prompt of the focused pane."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("m", "choose", "Model…"),
        Binding("a", "add_pane", "Add pane"),
        Binding("d", "remove_pane", "Remove pane", show=False),
        Binding("R", "reset_panes", "Reset panes", show=False),
        Binding("p", "show_prompt", "Prompt"),
        Binding("c", "copy_prompt", "Copy prompt", show=False),
        Binding("g", "generate", "Generate again"),
        Binding("s", "save_whatif", "Save what-if"),
        Binding("ctrl+x", "cancel", "Cancel"),
        Binding("tab", "focus_next", "Next pane", show=False),
        Binding("shift+tab", "focus_previous", "Prev pane", show=False),
    ]

    def __init__(
        self,
        dataset: Dataset,
        question: Question,
        retrievers: list[str],
        k: int,
        question_text: str | None = None,
        edit: WhatIf | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.question = question
        self.edit = edit if edit is not None and not edit.is_empty else None
        self.question_text = question_text if question_text is not None else question.input
        self.defaults = generation.default_choices(retrievers, k)
        self.choices: list[PaneChoice] = []
        self.k = k
        self.session = 0  # bumped on each (re)generation; older messages are ignored
        self.max_new_tokens = 0
        self.schedule: list[tuple[str, str]] = []  # (model label, how its panes run) per group
        self.threads: dict[str, str] = {}  # model label -> the threads its panes run on, and why
        self.selector: SelectorProbabilities | None = None  # RSPG probabilities, if stored

    @property
    def kept(self) -> list[PaneChoice] | None:
        """The choices the user made earlier in this app, if any."""
        return getattr(self.app, "pane_choices", None)

    def compose(self) -> ComposeResult:
        kept = self.kept
        self.choices = list(kept) if kept else list(self.defaults)
        question = self.question
        panes = (
            "panes: your choice, kept while lampbox runs (R: the question's retrievers)"
            if kept
            else f"panes: the question's retrievers at k={self.k} (m: choose)"
        )
        yield Header()
        edit = self.edit
        title = Text.from_markup(
            f"[b]question {question.id}[/b]  ·  user {question.user_id}  ·  "
            f"{self.dataset.label}  ·  {panes}"
        )
        if edit is not None:
            title = Text.assemble(("WHAT-IF ", "bold reverse"), f" {edit.describe()}  ·  ", title)
        yield Static(title, id="generate-title")
        gold = question.gold if question.gold is not None else "(not known for this split)"
        if edit is not None and edit.new_question:
            gold = "(a new question has no gold)"
        label = "Question " if edit is None or edit.input is None else "Edited   "
        if edit is not None and edit.new_question:
            label = "New      "
        yield Static(
            Text.assemble(
                (label, "bold"), cell(self.question_text, 200), "\n",
                ("Gold     ", "bold"), gold,
            ),  # fmt: skip
            id="generate-question",
        )
        original = edit is not None and not edit.new_question
        with Horizontal(id="generation-panes"):
            for index, choice in enumerate(self.choices):
                yield GenerationPane(
                    index,
                    choice,
                    self.selector,
                    whatif=edit is not None,
                    original=original,
                    id=f"pane-{index}",
                )
        selection_box = Static("", id="generate-selection")
        selection_box.display = False  # shown once a selector's probabilities are read
        yield selection_box
        yield Static("", id="generate-status")
        yield Footer()

    def on_mount(self) -> None:
        self.load_selector()
        self.action_generate()

    @work(thread=True, group="selector", exit_on_error=False)
    def load_selector(self) -> None:
        """The RSPG selector's probabilities for this question, if any are stored."""
        with self.reporting("Reading the selector's probabilities"):
            question = self.question
            found = selection.selector_probabilities(
                self.store, question.task, question.scheme, question.id
            )
            answers = () if found is None else tuple(
                selection.selection_answers(self.store, found.selector_key, question.id)
            )
            self.post_message(SelectorLoaded(question.id, found, answers))

    def on_selector_loaded(self, message: SelectorLoaded) -> None:
        if message.question_id != self.question.id or message.selector is None:
            return
        self.selector = message.selector
        higher = self.lookup_task(self.question.task).higher_is_better()
        oracle = oracle_pick(message.answers, higher)
        for pane in self.panes:
            pane.set_selector(message.selector, oracle)
        box = self.query_one("#generate-selection", Static)
        box.update(selection_text(message.selector, message.answers, oracle))
        box.display = True

    @property
    def panes(self) -> list[GenerationPane]:
        return list(self.query(GenerationPane))

    def status(self, text: str) -> None:
        self.query_one("#generate-status", Static).update(text)

    @property
    def schedule_note(self) -> str:
        """How each model's panes run, and on how many threads once chosen."""
        return "; ".join(
            f"{label}: {how}" + (f", {self.threads[label]}" if label in self.threads else "")
            for label, how in self.schedule
        )

    def show_progress(self) -> None:
        done = sum(1 for pane in self.panes if pane.state == "done")
        self.status(
            f"{done}/{len(self.choices)} panes done · {self.schedule_note} · "
            f"{self.max_new_tokens} new tokens · m: model · p: exact prompt · g: again"
        )

    # -- the workers: one per model ----------------------------------------------------------

    def action_generate(self) -> None:
        task = self.lookup_task(self.question.task)
        limit = getattr(self.app, "max_new_tokens", None)
        self.max_new_tokens = limit or default_max_new_tokens(task)
        self.workers.cancel_group(self, "generate")
        self.session += 1
        for pane in self.panes:
            pane.set_state("waiting", "waiting…")
        groups = generation.schedule(self.choices)
        self.app.generators.make_room(len(groups))  # type: ignore[attr-defined]
        self.schedule = [
            (
                self.choices[group[0]].model_label,
                generation.how_scheduled(self.choices[group[0]].backend, len(group)),
            )
            for group in groups
        ]
        self.threads = {}
        # How busy the cores are is measured from a sample the app took in the background
        # (old enough: no waiting here) to the moment each model starts.
        before = self.app.cpu_sampler.start()  # type: ignore[attr-defined]
        self.status(
            f"{self.schedule_note} · {self.max_new_tokens} new tokens · "
            "loading the models and building the prompts…"
        )
        for group in groups:
            self.generate_group(
                self.session,
                [(index, self.choices[index]) for index in group],
                self.max_new_tokens,
                before,
                len(groups),
            )

    @work(thread=True, group="generate", exit_on_error=False)
    def generate_group(
        self,
        session: int,
        panes: list[tuple[int, PaneChoice]],
        max_new_tokens: int,
        before: CpuSample | None,
        sharers: int,
    ) -> None:
        worker = get_current_worker()
        try:
            with self.app.generating():  # type: ignore[attr-defined]
                self.generate_panes(worker, session, panes, max_new_tokens, before, sharers)
        except GenerationCancelled:
            return
        except Exception as error:  # noqa: BLE001 - every failure must reach the user, not crash
            if not worker.is_cancelled:  # after a cancel, a late error is no news
                indexes = [index for index, _ in panes]
                self.post_message(PanesFailed(session, indexes, one_line(error)))

    def generate_panes(
        self,
        worker: Worker[None],
        session: int,
        panes: list[tuple[int, PaneChoice]],
        max_new_tokens: int,
        before: CpuSample | None,
        sharers: int,
    ) -> None:
        """The panes of one model (worker thread): every prompt first, cached outputs shown at
        once, then the rest generated together, on the threads chosen for them from the idle
        cores (`before`: the cores' counters at `g`; `sharers`: the models generating at once);
        each output cached and scored as it finishes. For a what-if, the edited prompts go
        first and the unedited question's (to compare with) after them, unless they are
        cached."""
        pool = self.app.generators  # type: ignore[attr-defined]
        task = self.lookup_task(self.question.task)
        edit = self.edit
        gold = self.question.gold if edit is None else edit.question(self.question).gold
        waiting: list[tuple[int, PreparedPrompt]] = []
        originals: list[tuple[int, PreparedPrompt]] = []  # the unedited question, for a what-if
        for index, choice in panes:
            if worker.is_cancelled:
                return
            spec = generation.run_spec(
                self.question, self.dataset.scheme, self.dataset.split, choice, max_new_tokens
            )
            with self.using_store():
                if edit is None:
                    prepared, cached = generation.prepare(spec, self.question, self.store, pool)
                else:
                    prepared, cached = generation.prepare_whatif(
                        spec, self.question, self.store, pool, edit
                    )
            if worker.is_cancelled:
                return
            self.post_message(GenerationPrepared(session, index, prepared, cached))
            if cached is not None:
                scores = generation.score(task, cached, gold)
                self.post_message(OutputScored(session, index, cached, scores, 0.0))
            else:
                waiting.append((index, prepared))
            if edit is not None and not edit.new_question:
                with self.using_store():
                    original, known = generation.prepare(spec, self.question, self.store, pool)
                if known is not None:
                    scores = generation.score(task, known, self.question.gold)
                    self.post_message(OriginalScored(session, index, known, scores))
                else:
                    originals.append((index, original))
        edited_rows = len(waiting)
        waiting += originals
        if not waiting:
            return
        threads = generation.choose_threads(waiting[0][1], pool, before, sharers)
        if threads is not None:
            label = panes[0][1].model_label
            self.post_message(ThreadsChosen(session, label, threads.describe()))
        if worker.is_cancelled:
            return
        started = time.perf_counter()

        # A pane's pieces go to the screen at most every PIECE_EVERY_S (its first one at once):
        # each message costs the app's thread a pane update, taken from llama.cpp's cores.
        unsent: dict[int, tuple[str, int]] = {}  # row -> (text, pieces) not sent yet
        sent_at: dict[int, float] = {}

        def on_piece(row: int, piece: str) -> None:
            if row >= edited_rows:  # the unedited outputs show when complete
                return
            text, count = unsent.get(row, ("", 0))
            unsent[row] = (text + piece, count + 1)
            now = time.perf_counter()
            for due in [r for r in unsent if r not in sent_at or now - sent_at[r] >= PIECE_EVERY_S]:
                text, count = unsent.pop(due)  # a pane that has finished is sent with the others'
                sent_at[due] = now
                self.post_message(TextGenerated(session, waiting[due][0], text, count))

        def on_output(row: int, output: str) -> None:
            index, prepared = waiting[row]
            unsent.pop(row, None)  # the whole output follows: never its pieces after it
            with self.using_store():
                generation.remember(self.store, prepared, pool, output)
            seconds = time.perf_counter() - started
            if row < edited_rows:
                scores = generation.score(task, output, gold)
                self.post_message(OutputScored(session, index, output, scores, seconds))
            else:
                scores = generation.score(task, output, self.question.gold)
                self.post_message(OriginalScored(session, index, output, scores))

        generation.generate_outputs(
            [prepared for _, prepared in waiting],
            pool,
            on_piece,
            on_output,
            lambda: worker.is_cancelled,
        )

    # -- handlers ----------------------------------------------------------------------------

    def pane(self, session: int, index: int) -> GenerationPane | None:
        if session != self.session:
            return None  # a message from a generation that has since been replaced
        found = self.query(f"#pane-{index}").results(GenerationPane)
        return next(iter(found), None)

    def on_generation_prepared(self, message: GenerationPrepared) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is not None:
            pane.set_prepared(message.prepared, message.cached)

    def on_text_generated(self, message: TextGenerated) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is not None:
            pane.add_piece(message.piece, message.pieces)

    def on_output_scored(self, message: OutputScored) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is None:
            return
        pane.set_scored(message.output, message.scores, message.seconds)
        self.show_progress()

    def on_threads_chosen(self, message: ThreadsChosen) -> None:
        if message.session == self.session:
            self.threads[message.model_label] = message.threads
            self.show_progress()

    def on_original_scored(self, message: OriginalScored) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is not None:
            pane.set_original(message.output, message.scores)

    def on_panes_failed(self, message: PanesFailed) -> None:
        if message.session != self.session:
            return
        labels = []
        for index in message.panes:
            pane = self.pane(message.session, index)
            if pane is not None:
                pane.original_missing(f"failed ({message.error})")  # it comes from the same model
            if pane is not None and pane.state not in ("done", "cancelled"):
                pane.set_state("failed", message.error)
                labels.append(pane.choice.model_label)
        what = labels[0] if labels else "generating"
        self.notify(f"{what} failed: {message.error}", severity="error", timeout=8)
        self.status(f"{what} failed: {message.error}")

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.workers.cancel_group(self, "generate")
        self.dismiss()

    def action_cancel(self) -> None:
        if self.workers.cancel_group(self, "generate"):
            self.session += 1  # messages the cancelled workers still send are ignored
            for pane in self.panes:
                pane.original_missing("cancelled (g: generate again)")
                if pane.state != "done":
                    pane.set_state("cancelled", "cancelled (g: generate again)")
            self.status("generation cancelled")

    def focused_pane(self) -> GenerationPane:
        focused = self.focused
        return focused if isinstance(focused, GenerationPane) else self.panes[0]

    def action_save_whatif(self) -> None:
        """Save the what-if (each finished pane: a small run of kind 'whatif')."""
        if self.edit is None:
            self.notify(
                "Nothing to save: this is the question as it is (x, P, e or n on the question "
                "screen make a what-if)",
                severity="warning",
            )
            return
        done = [
            (pane.prepared, pane.output, pane.original_output)
            for pane in self.panes
            if pane.state == "done" and pane.prepared is not None and pane.prepared.is_whatif
        ]
        if not done:
            self.notify("No pane has finished its what-if yet", severity="warning")
            return
        self.save_panes(done)

    @work(thread=True, group="save", exit_on_error=False)
    def save_panes(self, done: list[tuple[PreparedPrompt, str, str | None]]) -> None:
        with self.reporting("Saving the what-if"):
            keys = [
                generation.save_whatif(self.store, prepared, self.question, output, original)
                for prepared, output, original in done
            ]
            self.post_message(WhatIfSaved(keys))

    def on_what_if_saved(self, message: WhatIfSaved) -> None:
        count = len(message.run_keys)
        self.notify(f"Saved the what-if: {count} run(s) of kind what-if (Runs: What-ifs)")
        self.status(f"saved {count} what-if run(s) · see them under Runs (b on the users screen)")

    def action_show_prompt(self) -> None:
        from lampbox.tui.screens.prompt import PromptScreen

        pane = self.focused_pane()
        if pane.prepared is None:
            self.notify("The prompt of this pane is not built yet", severity="warning")
            return
        label = pane.choice.label
        if pane.prepared.edit is not None:
            label += f" · what-if: {pane.prepared.edit.describe()}"
        self.app.push_screen(PromptScreen(label, pane.prepared))

    def action_copy_prompt(self) -> None:
        from lampbox.tui.screens.prompt import copy_text

        pane = self.focused_pane()
        if pane.prepared is None:
            self.notify("The prompt of this pane is not built yet", severity="warning")
            return
        copy_text(self.app, pane.prepared.prompt.text, f"the prompt of {pane.choice.label}")

    def action_choose(self) -> None:
        pane = self.focused_pane()
        self.choose(pane.index, f"Pane {pane.index + 1}: {pane.choice.label}", adding=False)

    def action_add_pane(self) -> None:
        self.choose(self.focused_pane().index, "A new pane", adding=True)

    @work(thread=True, exclusive=True, group="choose", exit_on_error=False)
    def choose(self, index: int, title: str, adding: bool) -> None:
        """List the models (the store's trained ones too), then open the choice box for pane
        `index` (or for a new pane that starts as a copy of it)."""
        from lampbox.tui import rankings

        try:
            with self.using_store():
                models = generation.model_options(self.store)
            retrievers = rankings.retriever_names()
        except Exception as error:  # noqa: BLE001 - shown to the user, never a crash
            self.post_message(WorkFailed("Listing the models", one_line(error)))
            return
        self.post_message(ChoicesListed(index, title, adding, models, retrievers))

    def on_choices_listed(self, message: ChoicesListed) -> None:
        from lampbox.tui.screens.choose import PaneChoiceScreen

        index, adding = message.index, message.adding

        def chosen(choice: PaneChoice | None) -> None:
            if choice is None:
                return
            choices = list(self.choices)
            if adding:
                choices.append(choice)
            else:
                choices[index] = choice
            self.keep(choices, len(choices) - 1 if adding else index)

        if index >= len(self.choices):
            return
        screen = PaneChoiceScreen(
            message.title, self.choices[index], message.models, message.retrievers
        )
        self.app.push_screen(screen, chosen)

    def action_remove_pane(self) -> None:
        if len(self.choices) == 1:
            self.notify("The last pane stays (m: change it)", severity="warning")
            return
        index = self.focused_pane().index
        self.keep(self.choices[:index] + self.choices[index + 1 :], max(0, index - 1))

    def action_reset_panes(self) -> None:
        self.app.pane_choices = None  # type: ignore[attr-defined]
        self.choices = list(self.defaults)
        self.rebuild(0)

    def keep(self, choices: list[PaneChoice], focus: int) -> None:
        """Use these choices here and on every later question, while the app runs."""
        self.app.pane_choices = list(choices)  # type: ignore[attr-defined]
        self.choices = choices
        self.rebuild(focus)

    @work(exclusive=True, group="rebuild")
    async def rebuild(self, focus: int) -> None:
        """New panes for the choices; outputs that are cached come back at once."""
        if self.workers.cancel_group(self, "generate"):
            self.session += 1
        await self.recompose()
        panes = self.panes
        panes[min(focus, len(panes) - 1)].focus()
        self.action_generate()

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Regenerate", "Generate every pane again", self.action_generate)
        yield SystemCommand("Cancel generation", "Stop the models", self.action_cancel)
        yield SystemCommand("Add a pane", "Another model, retriever or k", self.action_add_pane)
        yield SystemCommand(
            "Reset the panes",
            "No personalization and the question's retrievers on the TUI's default model",
            self.action_reset_panes,
        )
        for pane in self.panes:
            yield SystemCommand(
                f"Choose for {pane.choice.label}",
                "Model, backend, retriever and k of this pane",
                lambda pane=pane: self.choose(
                    pane.index, f"Pane {pane.index + 1}: {pane.choice.label}", adding=False
                ),
            )
            yield SystemCommand(
                f"Prompt of {pane.choice.label}",
                "Show the exact prompt and the items that went in",
                lambda pane=pane: self.show_prompt_of(pane),
            )

    def show_prompt_of(self, pane: GenerationPane) -> None:
        pane.focus()
        self.action_show_prompt()
