"""One pane's generation for a question: its choice, status, streamed output and scores; for a
what-if, the unedited question's output and score under it and the difference; and, when an
RSPG selector's probabilities for the question are stored, this choice's probability."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from lampbox.engine.types import Candidate, SelectorProbabilities
from lampbox.engine.whatif import score_delta
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.tui.generation import PaneChoice


def format_scores(scores: dict[str, float]) -> str:
    """Scores as 'rouge-1 0.412 · rouge-L 0.300' (label indices of classification left out)."""
    shown = {name: value for name, value in scores.items() if not name.endswith("_label")}
    return " · ".join(f"{name} {value:.3f}" for name, value in shown.items())


def format_delta(delta: dict[str, float]) -> str:
    """Score differences as 'Δ rouge-1 +0.050 · Δ rouge-L -0.020'."""
    shown = {name: value for name, value in delta.items() if not name.endswith("_label")}
    return " · ".join(f"Δ {name} {value:+.3f}" for name, value in shown.items())


class GenerationPane(Vertical, can_focus=True):
    """A titled pane whose output grows as pieces arrive; the handlers on the screen feed it."""

    def __init__(
        self,
        index: int,
        choice: PaneChoice,
        selector: SelectorProbabilities | None = None,
        whatif: bool = False,
        original: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(classes="generation-pane", **kwargs)  # type: ignore[arg-type]
        self.index = index
        self.choice = choice
        self.selector = selector
        self.oracle: Candidate | None = None  # the selection's best stored candidate, if known
        self.whatif = whatif  # the pane runs an edited question
        self.with_original = original  # ... and shows the unedited question's output under it
        self.original_output: str | None = None
        self.original_scores: dict[str, float] | None = None
        self.prepared: PreparedPrompt | None = None
        self.output = ""
        self.pieces = 0
        self.scores: dict[str, float] | None = None
        self.cached = False
        self.state = "waiting"  # waiting | preparing | generating | done | cancelled | failed

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), classes="pane-title")
        yield Static("", classes="pane-status")
        with VerticalScroll(classes="pane-output-box"):
            yield Static("", classes="pane-output", markup=False)
        yield Static("", classes="pane-scores")
        if self.with_original:
            yield Static(Text("original: waiting…", style="dim"), classes="pane-original")

    def title_text(self) -> Text:
        """The pane's choice: retrieval on the first line, backend:model on the second (with,
        once the prompt is built, how many items and tokens went in); then the selector's
        probability of this choice, if one is stored (★: the one it would pick)."""
        mark = ("  what-if", "bold reverse") if self.whatif else ""
        title = Text.assemble((self.choice.retrieval_label, "bold"), mark, "\n", self.choice.model_label)
        if self.prepared is not None:
            prompt = self.prepared.prompt
            items = f"{len(prompt.items)} item(s) in" if self.prepared.items else "no items"
            title.append(f"  {items} · {prompt.token_count} prompt tokens")
            adapter = self.adapter_text()
            if adapter is not None:
                title.append("\n").append_text(adapter)
        line = self.selector_text()
        if line is not None:
            title.append("\n").append_text(line)
        return title

    @property
    def candidate(self) -> Candidate:
        choice = self.choice
        return Candidate.of(choice.retriever, choice.k, choice.method, choice.backend, choice.model)

    def selector_text(self) -> Text | None:
        """'RSPG-Post p=0.412 ★ selector's pick ◆ oracle's pick', or None when no selector scored
        the question (◆: the candidate whose stored answer scored best)."""
        if self.selector is None:
            return None
        probability = self.selector.probability(self.candidate)
        shown = "not a candidate" if probability is None else f"p={probability:.3f}"
        text = Text(f"{self.selector.label} {shown}", style="italic")
        if probability is not None and self.selector.chosen == self.candidate:
            text.append("  ★ selector's pick", style="bold")
        if self.oracle is not None and self.oracle == self.candidate:
            text.append("  ◆ oracle's pick", style="bold")
        return text

    def adapter_text(self) -> Text | None:
        """For an OPPU set (method oppu): whose adapter answers, or that this user has none
        and the set's task adapter answers alone; None for any other method."""
        if self.prepared is None or self.choice.method != "oppu":
            return None
        request = self.prepared.input.request
        if request.adapter is not None:
            return Text(f"user {request.user_id}'s adapter: {Path(request.adapter).parent.name}", style="italic")
        return Text(
            f"user {request.user_id} has no adapter in {Path(self.choice.model).name}: its task adapter alone answers",
            style="bold yellow",
        )

    def set_selector(self, selector: SelectorProbabilities | None, oracle: Candidate | None = None) -> None:
        self.selector, self.oracle = selector, oracle
        self.query_one(".pane-title", Static).update(self.title_text())

    @property
    def delta(self) -> dict[str, float]:
        """Edited minus original score per metric, once both are scored against a gold."""
        if self.scores is None or self.original_scores is None:
            return {}
        return score_delta(self.scores, self.original_scores)

    def set_original(self, output: str, scores: dict[str, float]) -> None:
        """The unedited question's output in this pane, and its score."""
        self.original_output, self.original_scores = output, scores
        self.show_original()

    def show_original(self) -> None:
        if not self.with_original or self.original_output is None:
            return
        scores = format_scores(self.original_scores or {}) or "no gold to score against"
        delta = format_delta(self.delta)
        self.query_one(".pane-original", Static).update(
            Text.assemble(
                ("original  ", "bold"), (scores, "bold"), ("\n" + delta if delta else ""), "\n",
                self.original_output,
            )  # fmt: skip
        )

    def original_missing(self, reason: str) -> None:
        """The unedited question's output will not come (its generation failed or was
        cancelled): say why instead of waiting for it."""
        if self.with_original and self.original_output is None:
            self.query_one(".pane-original", Static).update(Text(f"original: {reason}", style="red"))

    def set_state(self, state: str, note: str = "") -> None:
        self.state = state
        self.query_one(".pane-status", Static).update(note or state)

    def set_prepared(self, prepared: PreparedPrompt, cached: str | None) -> None:
        self.prepared = prepared
        self.query_one(".pane-title", Static).update(self.title_text())
        if cached is not None:
            self.cached = True
            self.output = cached
            self.query_one(".pane-output", Static).update(cached)
            self.set_state("done", "cached (from an earlier run or view)")
        else:
            self.set_state("generating", "generating…")

    def add_piece(self, piece: str, pieces: int = 1) -> None:
        if self.state == "done":  # pieces sent late: the scored output is already whole
            return
        self.output += piece
        self.pieces += pieces
        self.query_one(".pane-output", Static).update(self.output)
        self.query_one(".pane-status", Static).update(f"generating… {self.pieces} piece(s)")

    def set_scored(self, output: str, scores: dict[str, float], seconds: float) -> None:
        self.output, self.scores = output, scores
        self.query_one(".pane-output", Static).update(output)
        source = "cached" if self.cached else f"generated in {seconds:.1f}s"
        self.set_state("done", source)
        text = format_scores(scores) if scores else "no gold to score against"
        self.query_one(".pane-scores", Static).update(Text(text, style="bold"))
        self.show_original()
