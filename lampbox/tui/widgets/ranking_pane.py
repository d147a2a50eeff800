"""One retriever's ranking of a question's profile: rank, score, shared mark and the item."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from lampbox.tui.rankings import ShownRanking
from lampbox.tui.widgets.cells import cell


class RankingPane(Vertical):
    """A titled table of one ranking; `shared` maps item keys to how many rankings hold them."""

    def __init__(
        self,
        ranking: ShownRanking,
        shared: dict[str, int],
        document_fields: tuple[str, ...],
        **kwargs: object,
    ) -> None:
        super().__init__(classes="ranking-pane", **kwargs)  # type: ignore[arg-type]
        self.ranking = ranking
        self.shared = shared
        self.document_fields = document_fields

    def compose(self) -> ComposeResult:
        ranking = self.ranking
        yield Static(
            f"[b]{ranking.retriever}[/b]  top {len(ranking.items)}  {ranking.note}",
            classes="pane-title",
        )
        table: DataTable[object] = DataTable(
            cursor_type="row", zebra_stripes=True, classes="ranking-table"
        )
        table.add_column("#", key="rank", width=3)
        table.add_column("score", key="score", width=7)
        table.add_column("in", key="shared", width=3)
        table.add_column("item", key="item")
        for rank, ranked in enumerate(ranking.items, start=1):
            count = self.shared.get(ranked.item.key, 1)
            text = (
                " ".join(ranked.item.get(name) for name in self.document_fields) or ranked.item.id
            )
            table.add_row(
                rank,
                "—" if ranked.score is None else f"{ranked.score:.3f}",
                f"×{count}" if count > 1 else "",
                cell(text, 36),
                key=ranked.item.key,
            )
        yield table


def shared_counts(rankings: list[ShownRanking]) -> dict[str, int]:
    """How many of the rankings hold each item key."""
    counts: dict[str, int] = {}
    for ranking in rankings:
        for key in {ranked.item.key for ranked in ranking.items}:
            counts[key] = counts.get(key, 0) + 1
    return counts
