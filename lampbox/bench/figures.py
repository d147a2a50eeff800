"""The report's figures: PNG and SVG with matplotlib (the Agg renderer, no display), and the
per-configuration figure drawn in a terminal with plotext.

Figures are drawn on `matplotlib.figure.Figure` objects (not pyplot), so nothing global is
touched and no display is needed. Every size is fixed by `figure_inches` and FIGURE_DPI (no
tight bounding box), so a PNG's pixel size is known in advance.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lampbox.bench.paper import BenchReport, gain_by_history
from lampbox.bench.peft_rag import GAINS, ROLE_NAMES, PeftRagAnalysis
from lampbox.errors import LampboxError

FIGURE_DPI = 150
FIGURE_NAMES = ("means", "user_gains", "gain_by_history")
_WIDTH = 9.0


@dataclass(frozen=True)
class RenderedFigure:
    name: str
    png: bytes
    svg: bytes
    size_px: tuple[int, int]


def figure_inches(name: str, report: BenchReport) -> tuple[float, float]:
    """A figure's size in inches: taller with more rows (multiples of 0.5 inch, so that the
    pixel size is whole at any whole dpi)."""
    if name == "means":
        return _WIDTH, 2.0 + 0.5 * len(report.rows)
    compared = max(1, len(report.user_gains))
    if name == "user_gains":
        return _WIDTH, 2.0 + 0.5 * compared
    return _WIDTH, 4.0 + 0.5 * compared  # gain_by_history: room for the legend below


def render_figures(report: BenchReport) -> list[RenderedFigure]:
    """The three figures, rendered in memory."""
    drawers = {"means": _means, "user_gains": _user_gains, "gain_by_history": _gain_by_history}
    return [_render(name, figure_inches(name, report), lambda figure, name=name: drawers[name](figure, report)) for name in FIGURE_NAMES]


def _render(name: str, inches: tuple[float, float], draw: Callable[[Any], None]) -> RenderedFigure:
    """One figure drawn by `draw` on a fresh Figure, as PNG and SVG bytes."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LampboxError("figures need matplotlib: pip install 'lampbox[report]'") from None
    from matplotlib import rc_context

    png, svg = io.BytesIO(), io.BytesIO()
    # a fixed salt for the SVG's element ids and no dates: the same report, the same bytes
    with rc_context({"svg.hashsalt": "lampbox"}):
        figure = _figure(inches)
        draw(figure)
        figure.savefig(png, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
        figure.savefig(svg, format="svg", metadata={"Date": None})
    width, height = inches
    return RenderedFigure(name, png.getvalue(), svg.getvalue(), (round(width * FIGURE_DPI), round(height * FIGURE_DPI)))


def render_peft_rag(analysis: PeftRagAnalysis) -> list[RenderedFigure]:
    """The PEFT-vs-RAG figure (`peft_vs_rag`, 9 x 5 inches): each gain over no personalization
    by history size, one group of bars per bucket (and one for all users)."""
    return [_render("peft_vs_rag", (_WIDTH, 5.0), lambda figure: _peft_rag(figure, analysis))]


def _peft_rag(figure: Any, analysis: PeftRagAnalysis) -> None:
    axes = figure.add_subplot()
    buckets = [*analysis.buckets, analysis.overall]
    roles = [role for role in GAINS if role in analysis.rows]
    width = 0.8 / len(roles)
    for index, role in enumerate(roles):
        xs = [position + (index - (len(roles) - 1) / 2) * width for position in range(len(buckets))]
        axes.bar(xs, [bucket.gains[role] for bucket in buckets], width, label=f"{ROLE_NAMES[role]}: {analysis.rows[role]}")
    axes.axhline(0.0, color="tab:gray", linestyle="--", linewidth=0.8)
    axes.set_xticks(range(len(buckets)), [f"{bucket.label}\n({bucket.users} users)" for bucket in buckets])
    axes.set_xlabel("profile size (items in the user's history); last: all users")
    axes.set_ylabel(f"mean per-user gain in {analysis.task.main_metric} over no personalization")
    axes.set_title(analysis.title, fontsize=9)
    axes.legend(fontsize=7, frameon=False)
    axes.grid(axis="y", alpha=0.3)


def terminal_peft_rag(analysis: PeftRagAnalysis, width: int = 100, color: bool = True) -> str:
    """The PEFT-vs-RAG figure for a terminal: grouped bars of each gain per history bucket."""
    import plotext as plt

    buckets = [*analysis.buckets, analysis.overall]
    roles = [role for role in GAINS if role in analysis.rows]
    plt.clear_figure()
    plt.multiple_bar(
        [f"{bucket.label} ({bucket.users})" for bucket in buckets], [[bucket.gains[role] for bucket in buckets] for role in roles],
        labels=[ROLE_NAMES[role] for role in roles],
    )  # fmt: skip
    plt.title(f"gain in {analysis.task.main_metric} over no personalization, by profile size")
    plt.limitsize(False)
    plt.plotsize(width, 20)
    plt.theme("clear")
    drawn = str(plt.build())
    return drawn if color else plt.uncolorize(drawn)


def _figure(inches: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=inches, dpi=FIGURE_DPI, layout="constrained")


def _means(figure: Any, report: BenchReport) -> None:
    """Each configuration's main metric with its bootstrap interval; references dashed."""
    main = report.task.main_metric
    axes = figure.add_subplot()
    rows = [row for row in report.rows if main in row.metrics]
    positions = list(range(len(rows)))[::-1]  # the first row at the top
    for position, row in zip(positions, rows, strict=True):
        value = row.metrics[main]
        color = "tab:orange" if main in row.best else ("tab:gray" if row.is_reference else "tab:blue")
        axes.errorbar(
            value.value, position, xerr=[[value.value - value.low], [value.high - value.value]],
            fmt="o", color=color, capsize=3,
        )  # fmt: skip
        if row.is_reference:
            axes.axvline(value.value, color="tab:gray", linestyle="--", linewidth=0.8)
    axes.set_yticks(positions, [row.label for row in rows], fontsize=8)
    axes.set_ylim(-0.6, len(rows) - 0.4)
    percent = round(report.confidence * 100)
    better = "higher" if report.task.higher_is_better() else "lower"
    axes.set_xlabel(f"{main} ({better} is better; {percent}% bootstrap CI over questions)")
    axes.set_title(report.title, fontsize=9)
    axes.grid(axis="x", alpha=0.3)


def _user_gains(figure: Any, report: BenchReport) -> None:
    """The distribution of per-user gains over the reference, one box per compared row."""
    axes = figure.add_subplot()
    labels = [label for label in (row.label for row in report.rows) if report.user_gains.get(label)]
    if not labels:
        _empty(axes, "no row was compared with a reference")
        return
    data = [[gain.gain for gain in report.user_gains[label]] for label in labels][::-1]
    positions = list(range(1, len(labels) + 1))
    axes.boxplot(data, positions=positions, orientation="horizontal", widths=0.5, showmeans=True)
    for position, gains in zip(positions, data, strict=True):
        axes.scatter(gains, [position] * len(gains), s=6, alpha=0.4, color="tab:blue")
    axes.set_yticks(positions, labels[::-1], fontsize=8)
    axes.axvline(0.0, color="tab:gray", linestyle="--", linewidth=0.8)
    axes.set_xlabel(f"per-user gain in {report.task.main_metric} over the reference (> 0: better)")
    axes.set_title(f"Per-user gains: {report.title}", fontsize=9)
    axes.grid(axis="x", alpha=0.3)


def _gain_by_history(figure: Any, report: BenchReport) -> None:
    """Mean per-user gain by the users' profile size (quantile buckets), one line per row."""
    axes = figure.add_subplot()
    buckets = gain_by_history(report)
    if not buckets.labels:
        _empty(axes, "no row was compared with a reference")
        return
    xs = list(range(len(buckets.labels)))
    for label, means in buckets.mean_gain.items():
        points = [(x, mean) for x, mean in zip(xs, means, strict=True) if mean is not None]
        axes.plot([x for x, _ in points], [mean for _, mean in points], marker="o", label=label)
    axes.axhline(0.0, color="tab:gray", linestyle="--", linewidth=0.8)
    axes.set_xticks(xs, [f"{label}\n({users} users)" for label, users in zip(buckets.labels, buckets.users, strict=True)])
    axes.set_xlabel("profile size (items in the user's history)")
    axes.set_ylabel(f"mean per-user gain in {report.task.main_metric}")
    axes.set_title(f"Gain by history size: {report.title}", fontsize=9)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1, frameon=False)
    axes.grid(alpha=0.3)


def _empty(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def terminal_means(report: BenchReport, width: int = 100, color: bool = True) -> str:
    """The per-configuration figure for a terminal: each row's main metric (dot) and its
    interval (line)."""
    import plotext as plt

    main = report.task.main_metric
    rows = [row for row in report.rows if main in row.metrics]
    plt.clear_figure()
    positions = list(range(len(rows), 0, -1))
    for position, row in zip(positions, rows, strict=True):
        value = row.metrics[main]
        plt.plot([value.low, value.high], [position, position], marker="─", color="blue")
    plt.scatter([row.metrics[main].value for row in rows], positions, marker="●", color="red")
    plt.yticks(positions, [row.label for row in rows])
    plt.ylim(0.5, len(rows) + 0.5)
    plt.title(f"{main}, {round(report.confidence * 100)}% CI")
    longest = max((len(row.label) for row in rows), default=0)
    plt.limitsize(False)  # the caller sized it; plotext would clamp it to a terminal it guesses
    plt.plotsize(max(width, longest + 40), 2 * len(rows) + 5)  # room beside the labels
    plt.theme("clear")
    drawn = str(plt.build())
    return drawn if color else plt.uncolorize(drawn)
