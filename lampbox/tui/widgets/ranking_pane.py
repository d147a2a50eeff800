"""One retriever's ranking of a question's profile: rank, score, shared mark, the item and,
when ROPG feedback for the question is stored, each item's utility."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from lampbox.engine.types import Question
from lampbox.tui import table_data
from lampbox.tui.rankings import ShownRanking
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.table import LampboxTable


class RankingPane(Vertical):
    """A titled table of one ranking; `shared` maps item keys to how many rankings hold them."""

    def __init__(
        self,
        ranking: ShownRanking,
        shared: dict[str, int],
        document_fields: tuple[str, ...],
        question: Question | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(classes="ranking-pane", **kwargs)  # type: ignore[arg-type]
        self.ranking = ranking
        self.shared = shared
        self.document_fields = document_fields
        self.question = question

    def compose(self) -> ComposeResult:
        ranking = self.ranking
        feedback = ranking.feedback
        utility_note = f"  util: {escape(feedback.label)}" if feedback is not None else ""
        yield Static(
            f"[b]{ranking.retriever}[/b]  top {len(ranking.items)}  {ranking.note}{utility_note}",
            classes="pane-title",
        )
        table = LampboxTable(
            cursor_type="row",
            zebra_stripes=True,
            classes="ranking-table",
            export_name=f"ranking-{ranking.retriever}",
        )
        table.add_column("#", key="rank", width=3)
        table.add_column("score", key="score", width=7)
        table.add_column("in", key="shared", width=3)
        if feedback is not None:
            table.add_column("util", key="utility", width=6)
        table.add_column("item", key="item")
        for rank, ranked in enumerate(ranking.items, start=1):
            count = self.shared.get(ranked.item.key, 1)
            text = (
                " ".join(ranked.item.get(name) for name in self.document_fields) or ranked.item.id
            )
            utility = () if feedback is None else (utility_text(feedback.utility(ranked.item.key)),)
            table.add_row(
                rank,
                "—" if ranked.score is None else f"{ranked.score:.3f}",
                f"×{count}" if count > 1 else "",
                *utility,
                cell(text, 36),
                key=ranked.item.key,
            )
        if self.question is not None:
            table.set_export(
                table_data.ranking(
                    self.question,
                    ranking,
                    dict(self.shared),
                    self.document_fields,
                    feedback,
                )
            )
        yield table


def utility_text(utility: float | None) -> str:
    """An item's utility as the pane shows it ('–' for an item the feedback did not cover)."""
    return "–" if utility is None else f"{utility:.3f}"


def shared_counts(rankings: list[ShownRanking]) -> dict[str, int]:
    """How many of the rankings hold each item key."""
    counts: dict[str, int] = {}
    for ranking in rankings:
        for key in {ranked.item.key for ranked in ranking.items}:
            counts[key] = counts.get(key, 0) + 1
    return counts
