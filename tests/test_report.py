"""`lampbox report` on a real bench (dummy backend, demo data): every format read back, the
figures opened, Holm's adjustment, the bootstrap, and bad input as one clear line."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import lampbox
from click.testing import CliRunner
from PIL import Image

from lampbox.engine.bootstrap import metric_intervals, resampled_metrics, score_columns
from lampbox.engine.metrics import Scorer, aggregate, macro_f1_rows
from lampbox.engine.stats import holm_adjust, paired_randomization_test
from lampbox.engine.tasks import builtin_task


@pytest.fixture(scope="module")
def bench(dummy_bench: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A stored 5-configuration bench: its store (this module's copy), key, environment and
    `bench --json` rows."""
    folder = tmp_path_factory.mktemp("report")
    db = folder / "demo.duckdb"
    shutil.copy(dummy_bench["db"], db)
    return {**dummy_bench, "db": db, "folder": folder}


@pytest.fixture(scope="module")
def written(bench: dict) -> dict:
    """All four formats and the figures from one command (a key prefix names the bench)."""
    out = bench["folder"] / "out"
    result = lampbox(
        "report", bench["key"][:8], "--db", str(bench["db"]), "--format", "all",
        "--output", str(out / "table"), "--figures", str(out / "figures"), env=bench["env"],
    )  # fmt: skip
    return {"out": out, "stdout": result.stdout, "stderr": result.stderr}


def markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]  # without the header


def test_markdown_has_every_configuration_with_intervals_and_the_best_in_bold(bench: dict, written: dict) -> None:
    text = (written["out"] / "table.md").read_text()
    rows = markdown_rows(text)
    labels = [row["label"] for row in bench["rows"]]
    assert [row[0] for row in rows] == labels
    for column, metric in ((2, "rouge-1"), (3, "rouge-L")):
        values = [row["metrics"][metric] for row in bench["rows"]]
        bold = [i for i, row in enumerate(rows) if row[column].startswith("**")]
        assert bold == [i for i, value in enumerate(values) if value == max(values)]
        for row, value in zip(rows, values, strict=True):
            number, low, high = (float(x) for x in re.findall(r"\d+\.\d+", row[column]))
            assert number == pytest.approx(value, abs=5e-5) and low <= number <= high
    reference = labels.index("no personalization dummy:smollm2-135m-instruct")
    assert rows[reference][4] == "ref" and rows[reference][5] == "-"
    assert "Holm-adjusted across the 4 compared rows" in text and "2,000 resamples" in text


def test_csv_numbers_are_the_bench_numbers_and_holm_is_monotone(bench: dict, written: dict) -> None:
    rows = list(csv.DictReader(io.StringIO((written["out"] / "table.csv").read_text())))
    by_label = {row["label"]: row for row in bench["rows"]}
    assert [row["configuration"] for row in rows] == list(by_label)
    for row in rows:
        source = by_label[row["configuration"]]
        assert row["run_key"] == source["run_key"]
        assert float(row["rouge-1"]) == source["metrics"]["rouge-1"]
        assert float(row["rouge-1_ci_low"]) <= float(row["rouge-1"]) <= float(row["rouge-1_ci_high"])
        if source["p_value"] is None:
            assert row["p"] == "" and row["p_holm"] == ""
        else:  # the same paired test as `lampbox bench`, against the same row
            assert float(row["p"]) == source["p_value"] and row["reference"] == source["baseline"]
    tested = sorted((float(row["p"]), float(row["p_holm"])) for row in rows if row["p"])
    assert len(tested) == 4
    assert all(adjusted >= raw for raw, adjusted in tested)
    assert all(a[1] <= b[1] for a, b in zip(tested, tested[1:], strict=False))


def test_json_and_latex_read_back(written: dict) -> None:
    data = json.loads((written["out"] / "table.json").read_text())
    assert data["main_metric"] == "rouge-1" and data["multiple_comparisons"] == "Holm"
    assert data["bootstrap"] == {"method": "percentile, questions resampled", "resamples": 2000, "seed": 0, "confidence": 0.95}
    assert sum(1 for row in data["rows"] if row["metrics"]["rouge-1"]["best"]) >= 1
    tex = (written["out"] / "table.tex").read_text()
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", tex):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert stack == [] and "\\textbf{" in tex and "Holm" in tex
    assert tex.count("\\\\") == 1 + len(data["rows"])  # header and one line per row
    if shutil.which("pdflatex"):
        document = written["out"] / "paper.tex"
        document.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex + "\\end{document}\n")
        result = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=document.parent, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-2000:]


def test_figures_open_at_their_size_and_the_terminal_shows_the_means(written: dict) -> None:
    # 150 dpi, 9 inches wide; heights: 2 + 0.5 per row (5 rows), 2 + 0.5 per compared row (4),
    # and 4 + 0.5 per compared row for gain by history (its legend sits below)
    expected = {"means": (1350, 675), "user_gains": (1350, 600), "gain_by_history": (1350, 900)}
    for name, size in expected.items():
        with Image.open(written["out"] / "figures" / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == size
        root = ElementTree.parse(written["out"] / "figures" / f"{name}.svg").getroot()
        assert root.tag.endswith("svg")
    assert "rouge-1, 95% CI" in written["stdout"] and "bm25 k=1 retrieval-only" in written["stdout"]
    assert written["stderr"].count("wrote ") == 10


def test_the_same_bench_gives_the_same_bytes(bench: dict) -> None:
    from lampbox.bench.figures import render_figures
    from lampbox.bench.formats import FORMATS, render
    from lampbox.bench.paper import build_report
    from lampbox.store import Store

    def rendered() -> list[bytes]:
        with Store(bench["db"], read_only=True) as store:
            report = build_report(store, bench["key"])
        tables = [render(report, fmt).encode() for fmt in FORMATS]
        return tables + [data for figure in render_figures(report) for data in (figure.png, figure.svg)]

    assert rendered() == rendered()


def test_a_chosen_reference_row(bench: dict) -> None:
    result = lampbox(
        "report", bench["key"], "--db", str(bench["db"]), "--format", "csv", "--reference", "bm25 k=1 retrieval", "--no-plot",
        env=bench["env"],
    )  # fmt: skip
    rows = {row["configuration"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["bm25 k=1 retrieval-only"]["p"] == ""
    others = [row for label, row in rows.items() if label != "bm25 k=1 retrieval-only"]
    assert {row["reference"] for row in others} == {"bm25 k=1 retrieval-only"}
    assert all(float(row["p_holm"]) >= float(row["p"]) for row in others)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["feedface"], "no bench 'feedface'"),
        (["KEY", "--reference", "dense k=9"], "no row 'dense k=9' in bench"),
        (["KEY", "--format", "md", "--format", "csv"], "several formats need --output"),
        (["KEY", "--figures", "FILE/figures"], "is a file, not a folder"),
    ],
)
def test_bad_input_is_one_line(bench: dict, args: list[str], message: str) -> None:
    a_file = bench["folder"] / "a-file"
    a_file.write_text("")
    args = [bench["key"] if arg == "KEY" else arg.replace("FILE", str(a_file)) for arg in args]
    result = lampbox("report", *args, "--db", str(bench["db"]), env=bench["env"], check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_an_error_while_rendering_writes_nothing(bench: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.bench import figures
    from lampbox.cli import cli

    def broken(report: object) -> list:
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "render_figures", broken)
    monkeypatch.setenv("LAMPBOX_HOME", bench["env"]["LAMPBOX_HOME"])
    args = ["report", bench["key"], "--db", str(bench["db"]), "--format", "all", "--output", str(tmp_path / "t"), "--figures", str(tmp_path / "f")]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, RuntimeError)
    assert list(tmp_path.iterdir()) == []


# -- the statistics under the table ---------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.01 x4 = 0.04, 0.03 x3 = 0.09, 0.04 x2 = 0.08 -> 0.09 (monotone), 0.2 x1 = 0.2
    assert holm_adjust([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0] and holm_adjust([]) == []


@pytest.mark.parametrize("task_name", ["LaMP_2", "LaMP_3", "LaMP_7"])
def test_resampled_metrics_are_the_official_aggregate(task_name: str) -> None:
    task = builtin_task(task_name)
    rng = np.random.default_rng(0)
    if task.kind == "classification":
        pairs = [(str(rng.choice(task.labels)), str(rng.choice(task.labels))) for _ in range(60)]
    elif task.kind == "rating":
        pairs = [(str(rng.integers(1, 6)), str(rng.integers(1, 6))) for _ in range(60)]
    else:
        words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
        pairs = [(" ".join(rng.choice(words, 5)), " ".join(rng.choice(words, 6))) for _ in range(60)]
    per_question = Scorer(task).score_all(pairs)
    columns = score_columns(task, per_question)
    indices = np.stack([np.arange(60), rng.integers(0, 60, 60)])
    resampled = resampled_metrics(task, columns, indices)
    for row in range(2):
        official = aggregate(task, [per_question[i] for i in indices[row]])
        for metric in task.metrics:
            assert resampled[metric][row] == pytest.approx(official[metric], abs=1e-12)
    intervals = metric_intervals(task, per_question, aggregate(task, per_question))
    assert intervals == metric_intervals(task, per_question, aggregate(task, per_question))  # seeded
    for value in intervals.values():
        assert value.low < value.value < value.high


def test_row_wise_macro_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    predicted = rng.integers(-1, 5, size=(20, 40))
    gold = rng.integers(0, 5, size=(20, 40))
    ours = macro_f1_rows(predicted, gold, 5)
    for row in range(20):
        assert ours[row] == pytest.approx(f1_score(gold[row], predicted[row], labels=range(5), average="macro"))


def test_paired_test_is_symmetric_in_its_p() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(50), rng.random(50)
    assert paired_randomization_test(a, b).p_value == paired_randomization_test(b, a).p_value


def test_best_is_the_lowest_error_and_ties_share_it() -> None:
    from lampbox.bench.paper import best_rows
    from lampbox.engine.bootstrap import Interval

    def row(mae: float, rmse: float) -> dict[str, Interval]:
        return {"mae": Interval(mae, mae - 0.1, mae + 0.1), "rmse": Interval(rmse, rmse - 0.1, rmse + 0.1)}

    rating = builtin_task("LaMP_3")
    assert best_rows(rating, [row(0.5, 0.9), row(0.4, 0.9), row(0.6, 1.0)]) == {"mae": {1}, "rmse": {0, 1}}
    assert best_rows(builtin_task("LaMP_7"), [{}, {"rouge-1": Interval(0.2, 0.1, 0.3)}]) == {"rouge-1": {1}}


# -- --analysis peft-vs-rag -------------------------------------------------------------------------

ROLE_ROWS = {"none": "no personalization", "rag": "bm25 k=1 dummy", "peft": "recency k=1 dummy"}


def test_peft_vs_rag_gains_by_history_read_back(bench: dict) -> None:
    """Rows named with --row (the dummy bench has no OPPU rows): every file read back, the gains
    recomputed from the stored per-user scores, the buckets adding up to all users."""
    from lampbox.lab.pipeline import load_run
    from lampbox.store import Store

    out = bench["folder"] / "peft"
    rows = [arg for role, label in ROLE_ROWS.items() for arg in ("--row", f"{role}={label}")]
    result = lampbox(
        "report", bench["key"], "--db", str(bench["db"]), "--analysis", "peft-vs-rag", *rows, "--buckets", "2",
        "--format", "all", "--output", str(out / "analysis"), "--figures", str(out / "figures"), env=bench["env"],
    )  # fmt: skip
    data = json.loads((out / "analysis.json").read_text())
    assert not (out / "analysis.tex").exists() and result.stderr.count("wrote ") == 5  # md, csv, json, png, svg
    labels = {row["label"]: row["run_key"] for row in bench["rows"]}
    keys = {role: next(key for label, key in labels.items() if label.startswith(prefix)) for role, prefix in ROLE_ROWS.items()}
    with Store(bench["db"], read_only=True) as store:
        scores = {role: load_run(store, key).user_scores for role, key in keys.items()}
    users = sorted(set.intersection(*(set(s) for s in scores.values())))
    means = {role: sum(scores[role][u].main_score for u in users) / len(users) for role in scores}
    assert data["overall"]["users"] == len(users) and set(data["rows"]) == {"none", "rag", "peft"}
    for role in ("rag", "peft"):
        assert data["overall"]["gains"][role] == pytest.approx(means[role] - means["none"], abs=1e-12)
        assert data["overall"]["relative_gains"][role] == pytest.approx((means[role] - means["none"]) / means["none"])
        weighted = sum(b["gains"][role] * b["users"] for b in data["buckets"]) / len(users)
        assert weighted == pytest.approx(data["overall"]["gains"][role], abs=1e-12)  # the buckets add up
    assert sum(b["users"] for b in data["buckets"]) == len(users) and 1 <= len(data["buckets"]) <= 2
    sizes = sorted(scores["none"][u].profile_size for u in users)
    assert data["buckets"][0]["history"].startswith(f"{sizes[0]:.0f}-") and data["buckets"][-1]["history"].endswith(f"-{sizes[-1]:.0f}")
    table = list(csv.DictReader(io.StringIO((out / "analysis.csv").read_text())))
    assert [row["history"] for row in table] == [b["history"] for b in data["buckets"]] + ["all"]
    assert float(table[-1]["peft_gain"]) == pytest.approx(data["overall"]["gains"]["peft"], abs=1e-6)
    md = (out / "analysis.md").read_text()
    assert "| history (profile items) | users | none rouge-1 | RAG gain | PEFT (OPPU) gain |" in md and "PEFT + RAG" not in md.split("Rows:")[0]
    with Image.open(out / "figures" / "peft_vs_rag.png") as image:
        assert image.size == (1350, 750)
    assert ElementTree.parse(out / "figures" / "peft_vs_rag.svg").getroot().tag.endswith("svg")
    assert "gain in rouge-1 over no personalization" in result.stdout  # the terminal plot


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--row", "oppu=x"], "give ROLE=LABEL with ROLE one of none, rag, peft, both"),
        (["--row", "none=dense k=9"], "no row 'dense k=9' in bench"),
        (["--buckets", "0"], "--buckets must be at least 1"),
    ],
)
def test_peft_vs_rag_bad_input_is_one_line(bench: dict, args: list[str], message: str) -> None:
    result = lampbox("report", bench["key"], "--db", str(bench["db"]), "--analysis", "peft-vs-rag", "--no-plot", *args, env=bench["env"], check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_peft_vs_rag_finds_its_rows_from_the_runs(bench: dict) -> None:
    """No --row: none is the model row without retrieval, rag the first with retrieval (table
    order); the bench has no oppu rows, so no PEFT columns; `--row` outside --analysis refused."""
    result = lampbox("report", bench["key"], "--db", str(bench["db"]), "--analysis", "peft-vs-rag", "--format", "json", env=bench["env"])
    data = json.loads(result.stdout)
    assert data["rows"] == {"none": "no personalization dummy:smollm2-135m-instruct", "rag": "bm25 k=1 dummy:smollm2-135m-instruct"}
    assert set(data["overall"]["gains"]) == {"rag"}
    refused = lampbox("report", bench["key"], "--db", str(bench["db"]), "--row", "rag=bm25", env=bench["env"], check=False)
    assert refused.returncode != 0 and "--row names a row of --analysis peft-vs-rag" in refused.stderr


def test_only_a_bench_with_all_four_roles_is_an_oppu_bench(bench: dict) -> None:
    """`oppu_bench_analysis` (the TUI's `h` on an OPPU bench) is the report's analysis only where
    the rows fill none, rag, peft and both by themselves: the dummy bench has no oppu rows."""
    from lampbox.bench.peft_rag import oppu_bench_analysis, peft_vs_rag
    from lampbox.store import Store

    with Store(bench["db"], read_only=True) as store:
        assert oppu_bench_analysis(store, bench["key"]) is None
        assert set(peft_vs_rag(store, bench["key"]).rows) == {"none", "rag"}  # the report still runs


def test_bucket_by_history_against_any_reference_row_with_mae_signs() -> None:
    """The buckets shared by the report and the TUI's per-user gains screen: any two named rows,
    users scored in both only, sizes from the reference row, gains signed so > 0 is better."""
    from lampbox.bench.peft_rag import bucket_by_history, common_users
    from lampbox.engine.types import UserScore

    sizes = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}
    errors = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 1.5, "e": 1.5, "f": 1.5, "g": 0.0}  # MAE: lower is better
    baseline = {u: UserScore(u, 1, float(s), {}, None if u == "g" else 1.0) for u, s in sizes.items()}
    run = {u: UserScore(u, 1, 99.0, {}, errors[u]) for u in sizes}  # the reference's sizes count
    scores = {"baseline": baseline, "run": run}
    users = common_users(scores)
    assert users == ["a", "b", "c", "d", "e", "f"]
    overall, buckets = bucket_by_history(scores, users, "baseline", higher_is_better=False, buckets=2)
    assert [(b.label, b.users) for b in buckets] == [("1-4", 3), ("4-6", 3)]  # edges 1, 3.5, 6
    assert [b.gains for b in buckets] == [{"run": pytest.approx(0.5)}, {"run": pytest.approx(-0.5)}]
    assert [b.relative["run"] for b in buckets] == [pytest.approx(0.5), pytest.approx(-0.5)]
    assert buckets[0].means == {"baseline": 1.0, "run": 0.5}
    assert (overall.label, overall.users, overall.gains) == ("all", 6, {"run": pytest.approx(0.0)})
    assert common_users({"baseline": baseline, "run": {}}) == []
