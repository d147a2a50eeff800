"""Short cell text for tables: one line, cut to a width."""

from __future__ import annotations

from rich.text import Text


def cell(value: object, width: int = 60) -> Text:
    """A value as one line of plain text (no markup), cut with an ellipsis past `width`."""
    text = "" if value is None else " ".join(str(value).split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)
