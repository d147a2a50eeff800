"""lampbox's tables: every one exports its full data with `E`; PlainTable draws fast.

LampboxTable is the DataTable every lampbox table is: `E` opens the export box (format and
file) and writes the table's full, typed data (a TableExport the screen sets when it fills
the table; without one, the cells as shown) in a worker thread, then says where.

PlainTable: fixed-width columns of one-line plain-text cells.

Textual's DataTable renders every cell through Rich (Padding + Styled + render_lines) and, on
idle, measures every cell of every new row to size auto-width columns. lampbox's tables set
each column's width and fill them with plain one-line `Text` cells (widgets/cells.py), so
both steps reduce to string padding: this subclass does that directly and hands every other
cell (headers, labels, styled text, taller rows) to DataTable. The result is drawn the same
(the snapshot tests compare the screens); switching users redraws about twice as fast.

It relies on DataTable internals (textual 8); if they are missing it falls back to DataTable.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from lampbox.tui.export import TableData, TableExport, write_table
from lampbox.tui.messages import ExportFailed, TableExported


class LampboxTable(DataTable[Any]):
    """A DataTable that exports its full data (CSV, Parquet, JSON) with `E`."""

    BINDINGS = [Binding("E", "export", "Export")]

    def __init__(self, *args: Any, export_name: str = "table", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.export_name = export_name  # the default file name without a source
        self.export: TableExport | None = None

    def set_export(self, export: TableExport) -> None:
        """What `E` writes (the screen sets it when it fills the table)."""
        self.export = export

    def shown_data(self) -> TableData:
        """The cells as shown (plain text), for a table whose screen gave no source."""
        columns = tuple(
            column.label.plain or str(column.key.value) for column in self.ordered_columns
        )
        rows = [
            tuple(cell.plain if isinstance(cell, Text) else cell for cell in self.get_row_at(index))
            for index in range(self.row_count)
        ]
        return TableData(columns, rows)

    def action_export(self) -> None:
        from lampbox.tui.screens.export import ExportDialog

        export = self.export
        if export is None:
            shown = self.shown_data()
            export = TableExport(self.export_name, lambda: shown)

        def chosen(answer: tuple[str, Path] | None) -> None:
            if answer is not None:
                file_format, path = answer
                self.run_worker(
                    partial(self.export_to, export, path, file_format),
                    thread=True,
                    group="export",
                    exit_on_error=False,
                )

        self.app.push_screen(ExportDialog(f"Export · {export.name}", export.name), chosen)

    def export_to(self, export: TableExport, path: Path, file_format: str) -> None:
        """Build the data and write it (worker thread); the outcome comes back as a message."""
        using = getattr(self.app, "using_store", None)  # a build may query the store
        try:
            with using() if using is not None else nullcontext():
                data = export.build()
            write_table(data, path, file_format)
        except Exception as error:  # noqa: BLE001 - every failure must reach the user, not crash
            text = str(error).strip().splitlines()
            self.post_message(ExportFailed(str(path), text[0] if text else type(error).__name__))
        else:
            rows, columns = len(data.rows), len(data.columns)
            self.post_message(TableExported(str(path), file_format, rows, columns))

    def on_table_exported(self, message: TableExported) -> None:
        message.stop()
        self.notify(
            f"Wrote {message.rows:,} rows × {message.columns} columns ({message.file_format}) "
            f"to {message.path}",
            title="Exported",
            timeout=8,
        )

    def on_export_failed(self, message: ExportFailed) -> None:
        message.stop()
        self.notify(f"Export failed: {message.error}", severity="error", timeout=8)


class PlainTable(LampboxTable):
    """DataTable with a fast path for plain one-line cells in fixed-width columns."""

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> Any:
        if row_index >= 0 and column_index >= 0:
            try:
                lines = self._plain_cell(row_index, column_index, base_style, width, cursor, hover)
            except (AttributeError, KeyError, IndexError, TypeError):
                lines = None
            if lines is not None:
                return lines
        return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)

    def _plain_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> list[list[Segment]] | None:
        """DataTable._render_cell for a plain Text cell in a one-line row (same cache key)."""
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        cache_key = (
            row_key,
            column_key,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._cell_render_cache.get(cache_key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        row = self.rows[row_key]
        if row.height != 1 or row.auto_height:
            return None
        cell = self._get_row_renderables(row_index)[1][column_index]
        if not isinstance(cell, Text) or cell.spans or cell.style or not cell.plain.isprintable():
            return None  # styled text, tabs, newlines or control characters: Rich's path
        content_width = max(0, width - 2 * self.cell_padding)
        if cell.justify not in (None, "default", "left") or (
            cell.overflow == "ellipsis" and cell_len(cell.plain) > content_width
        ):
            return None
        fixed = row_index < self.fixed_rows or column_index < self.fixed_columns
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            fixed,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        # Styled(Padding(cell)) gives every segment pre_style + (no text style) + post_style.
        style = base_style + Style.from_meta({"row": row_index, "column": column_index})
        style = style + component_style
        if post_style:
            style = style + post_style
        padding = " " * self.cell_padding
        content = set_cell_size(cell.plain, content_width)
        lines = [[Segment(padding + content + padding, style)]]
        self._cell_render_cache[cache_key] = lines
        return lines

    def _update_dimensions(self, new_rows: Iterable[Any]) -> None:
        """Skip measuring each new cell when no column sizes itself to its content."""
        new_rows = list(new_rows)  # read more than once below
        try:
            fixed = not any(column.auto_width for column in self.columns.values())
            labels = any(self.rows[key].label is not None for key in new_rows if key in self.rows)
        except (AttributeError, KeyError):
            fixed, labels = False, True
        if fixed and not labels and not any(
            self.rows[key].auto_height for key in new_rows if key in self.rows
        ):
            super()._update_dimensions(())  # only the virtual size is recomputed
            return
        super()._update_dimensions(new_rows)
