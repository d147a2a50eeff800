"""PlainTable draws plain cells exactly as DataTable does, through its own fast path."""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.table import PlainTable

ROWS = [
    ("2024-01-02", "fix: parser crash on nested blocks", 3),
    ("2023-12-31", "日本語のコミットメッセージ、幅の広い文字", 12),  # double-width characters
    ("", "a very long commit title that is far wider than its column can show", 0),
]


class Tables(App[None]):
    def compose(self) -> ComposeResult:
        for table in (DataTable(id="reference", zebra_stripes=True), PlainTable(id="plain", zebra_stripes=True)):
            table.cursor_type = "row"
            yield table

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            table.add_column("date", key="date", width=10)
            table.add_column("title", key="title", width=24)
            table.add_column("n", key="n", width=4)
            for number, (date, title, count) in enumerate(ROWS):
                table.add_row(cell(date, 10), cell(title, 30), count, key=str(number))
            # Cells Rich must draw: right-justified, a tab, an ellipsis that must cut.
            table.add_row(
                Text("right", justify="right"),
                Text("tab\there"),
                Text("overflowing", overflow="ellipsis"),
                key="rich",
            )


def _cells(lines: list[list[Segment]]) -> list[tuple[str, object]]:
    """(character, style) for every cell of every line: what the terminal shows."""
    return [(char, segment.style) for line in lines for segment in line for char in segment.text]


async def test_plain_cells_render_like_datatable_and_take_the_fast_path(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = Tables()
    async with app.run_test(size=(80, 20)) as pilot:
        await pilot.pause()
        reference = app.query_one("#reference", DataTable)
        plain = app.query_one("#plain", PlainTable)
        assert plain.virtual_size == reference.virtual_size
        fallbacks: list[tuple[int, int]] = []
        original = DataTable._render_cell

        def counting(self, row_index, column_index, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self is plain:
                fallbacks.append((row_index, column_index))
            return original(self, row_index, column_index, *args, **kwargs)

        monkeypatch.setattr(DataTable, "_render_cell", counting)
        style = reference.rich_style

        async def render(table: DataTable) -> dict:  # type: ignore[type-arg]
            table.focus()  # the cursor's colours depend on focus: render each table focused
            await pilot.pause()
            table._cell_render_cache.clear()
            return {
                (row, column, cursor): _cells(table._render_cell(row, column, style, width, cursor=cursor))
                for row in range(len(ROWS) + 1)
                for column, width in enumerate((12, 26, 6))
                for cursor in (False, True)
            }

        expected, got = await render(reference), await render(plain)
        for key, cells in expected.items():
            assert got[key] == cells, key
        # Plain cells took the fast path (ints become plain Text); the last row went to Rich.
        body = sorted({(row, column) for row, column in fallbacks if row >= 0})
        assert body == [(len(ROWS), 0), (len(ROWS), 1), (len(ROWS), 2)]
