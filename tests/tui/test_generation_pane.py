"""A pane's scored output is final: pieces that arrive after it (a batch's throttled pieces,
sent with another row's) do not change it (the what-if test once saw output + late piece)."""

from __future__ import annotations

from textual.app import App, ComposeResult

from lampbox.tui.generation import PaneChoice
from lampbox.tui.widgets.generation_pane import GenerationPane


class _One(App[None]):
    def compose(self) -> ComposeResult:
        yield GenerationPane(0, PaneChoice("bm25", 1), id="pane-0")


async def test_pieces_after_the_scored_output_are_dropped() -> None:
    app = _One()
    async with app.run_test() as pilot:
        pane = app.query_one(GenerationPane)
        pane.add_piece("fix ")
        assert pane.output == "fix "
        pane.set_scored("fix parser", {"rouge-1": 1.0}, 0.5)
        pane.add_piece("parser")  # late: already part of the scored output
        await pilot.pause()
        assert pane.output == "fix parser" and pane.state == "done"
