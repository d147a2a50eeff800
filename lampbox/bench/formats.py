"""The report's table as Markdown, LaTeX, CSV and JSON text (rendered in memory; the command
writes the files)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

from lampbox.bench.paper import BenchReport, ReportRow
from lampbox.engine.bootstrap import Interval

FORMATS = ("md", "latex", "csv", "json")
EXTENSIONS = {"md": ".md", "latex": ".tex", "csv": ".csv", "json": ".json"}


def render(report: BenchReport, fmt: str) -> str:
    renderers: dict[str, Callable[[BenchReport], str]] = {"md": markdown, "latex": latex, "csv": csv_text, "json": json_text}
    return renderers[fmt](report)


def _number(value: float) -> str:
    return f"{value:.4f}"


def _change(row: ReportRow) -> str:
    if row.relative_change is None:
        return "ref" if row.is_reference else "-"
    return f"{row.relative_change * 100:+.1f}%"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


# -- Markdown ------------------------------------------------------------------------------------


def markdown(report: BenchReport) -> str:
    metrics = list(report.task.metrics)
    header = ["configuration", "n", *metrics, "change", "p", "p (Holm)"]
    lines = [f"**{report.title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"]
    for row in report.rows:
        cells = [_md_escape(row.label), str(row.n_questions)]
        for metric in metrics:
            cells.append(_md_cell(row.metrics.get(metric), metric in row.best))
        cells += [_change(row), _p(row.p_value), _p(row.p_holm)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", report.caption, ""]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md_cell(value: Interval | None, best: bool) -> str:
    if value is None:
        return "-"
    number = f"**{_number(value.value)}**" if best else _number(value.value)
    return f"{number} [{_number(value.low)}, {_number(value.high)}]"


# -- LaTeX (booktabs) ----------------------------------------------------------------------------

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def latex(report: BenchReport) -> str:
    metrics = list(report.task.metrics)
    columns = "l" + "r" * (len(metrics) + 4)
    header = ["configuration", "$n$", *(latex_escape(m) for m in metrics), "change", "$p$", "$p$ (Holm)"]
    lines = [
        "% lampbox report: needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(report.caption)}}}",
        f"\\label{{tab:lampbox-{report.bench_key[:8]}}}",
        f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    for row in report.rows:
        cells = [latex_escape(row.label), str(row.n_questions)]
        for metric in metrics:
            cells.append(_latex_cell(row.metrics.get(metric), metric in row.best))
        cells += [latex_escape(_change(row)), _latex_p(row.p_value), _latex_p(row.p_holm)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _latex_cell(value: Interval | None, best: bool) -> str:
    if value is None:
        return "--"
    number = f"\\textbf{{{_number(value.value)}}}" if best else _number(value.value)
    return f"{number} {{\\scriptsize [{_number(value.low)}, {_number(value.high)}]}}"


def _latex_p(value: float | None) -> str:
    if value is None:
        return "--"
    return "$<$0.001" if value < 0.001 else f"{value:.3f}"


# -- CSV and JSON --------------------------------------------------------------------------------


def csv_text(report: BenchReport) -> str:
    """One row per configuration with raw numbers (the caption is in the other formats)."""
    metrics = list(report.task.metrics)
    header = ["configuration", "role", "run_key", "n"]
    for metric in metrics:
        header += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_best"]
    header += ["reference", "relative_change", "p", "p_holm"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in report.rows:
        cells: list[object] = [row.label, row.role, row.run_key, row.n_questions]
        for metric in metrics:
            value = row.metrics.get(metric)
            cells += ["", "", "", ""] if value is None else [value.value, value.low, value.high, int(metric in row.best)]
        cells += [row.reference or "", _blank(row.relative_change), _blank(row.p_value), _blank(row.p_holm)]
        writer.writerow(cells)
    return buffer.getvalue()


def _blank(value: float | None) -> object:
    return "" if value is None else value


def json_text(report: BenchReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
