"""`lampbox eval` and `lampbox eval-all`: the official LaMP evaluation (eval_task / eval_all).

Both read outputs files in the official format and write the official result format; the
metrics themselves live in lampbox.engine.metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from lampbox.commands.common import db_option, json_option, print_json, reports_errors
from lampbox.errors import InputFileError, LampboxError, UnknownNameError

if TYPE_CHECKING:
    from lampbox.engine.metrics import ProgressCallback
    from lampbox.engine.tasks import TaskSpec
    from lampbox.store import Store

# A zip member larger than this (uncompressed) is refused rather than read into memory.
MAX_MEMBER_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class OutputsFile:
    """One outputs file (golds or predictions): where it came from, its task and outputs."""

    source: str
    task: str | None
    outputs: dict[str, str]


# -- reading ----------------------------------------------------------------------------------


def read_outputs_file(path: Path) -> OutputsFile:
    """An outputs file (.json or .json.gz) with clear errors naming it."""
    from lampbox.lampfiles import read_json, validate_outputs

    task, outputs = validate_outputs(read_json(path), path)
    return OutputsFile(str(path), task, outputs)


def read_outputs_zip(path: Path) -> dict[str, OutputsFile]:
    """Every outputs file in a zip, by the task it declares (as eval_all.py finds them).

    The official script takes every *.json file anywhere in the zip and keys it by its
    "task" field; file names do not matter. lampbox also accepts *.json.gz members, skips
    macOS resource forks, refuses unsafe member paths and reads nothing onto disk.
    """
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a zip file") from None
    except zipfile.BadZipFile:
        raise InputFileError(path, "not a zip file") from None
    except OSError as error:
        raise InputFileError(path, f"cannot read: {error.strerror}") from None
    by_task: dict[str, OutputsFile] = {}
    with archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            check_member_path(path, member.filename)
            if not _is_outputs_member(member.filename):
                continue
            where = f"{path}:{member.filename}"
            if member.file_size > MAX_MEMBER_BYTES:
                raise InputFileError(where, f"too large ({member.file_size} bytes uncompressed)")
            try:
                raw = archive.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise InputFileError(where, f"cannot be read from the zip ({error})") from None
            found = _parse_outputs(raw, where)
            if found.task is None:
                raise InputFileError(where, 'has no "task" field')
            if found.task in by_task:
                raise InputFileError(
                    path,
                    f"two files for task {found.task}: {by_task[found.task].source} and {where}",
                )
            by_task[found.task] = found
    if not by_task:
        raise InputFileError(path, "holds no .json outputs files")
    return by_task


def check_member_path(archive: Path, name: str) -> None:
    """Refuse member names that could escape a folder they were extracted to."""
    posix = PurePosixPath(name.replace("\\", "/"))
    unsafe = (
        name.startswith(("/", "\\"))
        or (len(name) > 1 and name[1] == ":")  # a Windows drive
        or ".." in posix.parts
        or "\x00" in name
    )
    if unsafe:
        raise InputFileError(archive, f"refusing zip member with an unsafe path: {name!r}")


def _is_outputs_member(name: str) -> bool:
    posix = PurePosixPath(name.replace("\\", "/"))
    if "__MACOSX" in posix.parts or posix.name.startswith("._"):
        return False
    return posix.name.endswith((".json", ".json.gz"))


def _parse_outputs(raw: bytes, where: str) -> OutputsFile:
    """Parse an outputs file's bytes (gzip or not) the way lampfiles.read_json does a path."""
    from lampbox.lampfiles import parse_json_bytes, validate_outputs

    task, outputs = validate_outputs(parse_json_bytes(raw, where), where)
    return OutputsFile(where, task, outputs)


# -- tasks ------------------------------------------------------------------------------------


def resolve_task(name: str, db_path: Path | None) -> TaskSpec:
    """A built-in task by name, else a custom task from the store (never creates a store)."""
    from lampbox.engine.tasks import BUILTIN_TASKS, builtin_task

    try:
        return builtin_task(name)
    except UnknownNameError:
        store = _existing_store(db_path)
        if store is None:
            raise UnknownNameError("task", name, list(BUILTIN_TASKS)) from None
        with store:
            return store.task(name)


def _existing_store(db_path: Path | None) -> Store | None:
    from lampbox.paths import default_db_path
    from lampbox.store import Store

    path = db_path if db_path is not None else default_db_path()
    if not path.exists():
        if db_path is not None:
            raise LampboxError(f"{path}: no lampbox store here")
        return None
    return Store(path, read_only=True)


def task_for_file(file_task: str, golds: Mapping[str, str], db_path: Path | None) -> TaskSpec:
    """The task an outputs file's "task" value names.

    "LaMP_2" names both the movie-tag task (LaMP_2) and the old news task (LaMP_2N); the
    golds' labels decide. Other names are built-in tasks or custom tasks from the store.
    """
    from lampbox.engine.tasks import BUILTIN_TASKS

    candidates = [spec for spec in BUILTIN_TASKS.values() if spec.file_task == file_task]
    for spec in candidates:
        if all(str(gold).strip() in spec.labels for gold in golds.values()):
            return spec
    if candidates:
        return candidates[0]
    return resolve_task(file_task, db_path)


# -- scoring ----------------------------------------------------------------------------------


def evaluate_files(
    spec: TaskSpec,
    golds: OutputsFile,
    preds: OutputsFile,
    on_progress: ProgressCallback | None = None,
) -> dict[str, float]:
    """Check that the files belong together (task, ids, golds) and score them officially."""
    from lampbox.engine.metrics import evaluate, gold_problem, id_mismatch

    for found in (golds, preds):
        if found.task != spec.file_task:
            holds = "no task" if found.task is None else f"task {found.task!r}"
            raise InputFileError(
                found.source, f"holds {holds}, not {spec.file_task!r} (task {spec.name})"
            )
    if not golds.outputs:
        raise InputFileError(golds.source, 'holds no golds (its "golds" list is empty): nothing to score')
    problem = gold_problem(spec, golds.outputs)
    if problem:
        raise InputFileError(golds.source, problem)
    problem = id_mismatch(golds.outputs, preds.outputs)
    if problem:
        raise InputFileError(preds.source, f"{problem} ({golds.source})")
    return evaluate(spec, golds.outputs, preds.outputs, on_progress)


def _progress_reporter(label: str) -> Any:
    """A transient rich progress bar on stderr, and the callback that advances it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    bar = progress.add_task(label, total=None)

    def advance(done: int, total: int) -> None:
        progress.update(bar, completed=done, total=total)

    return progress, advance


def _write_result(path: Path, result: Any) -> None:
    from lampbox.lampfiles import write_json_atomic

    try:
        write_json_atomic(path, result)
    except OSError as error:
        raise InputFileError(path, f"cannot write: {error.strerror}") from None


def _format_value(value: float) -> str:
    return f"{value:.4f}"


# -- commands ---------------------------------------------------------------------------------


@click.command("eval")
@click.option(
    "--golds",
    "golds_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Golds file (official outputs format, .json or .json.gz).",
)
@click.option(
    "--preds",
    "preds_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions file (same format).",
)
@click.option(
    "--task",
    "task_name",
    required=True,
    help="LaMP_1 .. LaMP_7, LaMP_2N, or a custom task in the store.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metrics here as JSON (the official eval_task format).",
)
@db_option
@json_option
@reports_errors
def eval_command(
    golds_path: Path,
    preds_path: Path,
    task_name: str,
    output_path: Path | None,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """Score predictions against golds with the official LaMP metrics (like eval_task.py).

    \b
    LaMP_1, LaMP_2: accuracy and macro F1      LaMP_3: MAE and RMSE
    LaMP_4 .. LaMP_7: ROUGE-1 and ROUGE-L (exact mean; the official script reports a
    bootstrap median that differs in the 4th decimal, see docs/metrics.md)
    """
    spec = resolve_task(task_name, db_path)
    golds = read_outputs_file(golds_path)
    preds = read_outputs_file(preds_path)
    progress, advance = _progress_reporter(f"scoring {spec.name}")
    with progress:
        metrics = evaluate_files(spec, golds, preds, advance)
    from lampbox.engine.metrics import official_result

    result = official_result(metrics)
    if output_path is not None:
        _write_result(output_path, result)
    if as_json:
        print_json(result)
        return
    click.echo(f"{spec.name}: {len(golds.outputs)} questions", err=True)
    width = max(len(name) for name in result)
    for name, value in result.items():
        click.echo(f"{name:<{width}}  {_format_value(value)}")


@click.command("eval-all")
@click.option(
    "--golds-zip",
    "golds_zip",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='Zip of golds files, one per task (found by their "task" field).',
)
@click.option(
    "--preds-zip",
    "preds_zip",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Zip of predictions files, one per task.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results here as JSON (the official eval_all format).",
)
@db_option
@json_option
@reports_errors
def eval_all_command(
    golds_zip: Path, preds_zip: Path, output_path: Path | None, db_path: Path | None, as_json: bool
) -> None:
    """Score a zip of predictions against a zip of golds, every task at once (like eval_all.py).

    Files inside the zips may have any names: each is matched by its "task" field. The
    predictions must cover exactly the tasks of the golds zip (the official golds zip holds
    all seven LaMP tasks). Prints and writes {task: {metric: value}}.
    """
    from lampbox.engine.metrics import official_result

    golds_by_task = read_outputs_zip(golds_zip)
    preds_by_task = read_outputs_zip(preds_zip)
    extra = sorted(set(preds_by_task) - set(golds_by_task))
    if extra:
        raise InputFileError(
            preds_zip,
            f"predictions for task(s) the golds zip has no golds for: {', '.join(extra)} ({golds_zip})",
        )
    missing = sorted(set(golds_by_task) - set(preds_by_task))
    if missing:
        raise InputFileError(
            preds_zip, f"no predictions for task(s): {', '.join(missing)} (the golds zip has them)"
        )
    results: dict[str, dict[str, float]] = {}
    for file_task in sorted(golds_by_task):
        golds = golds_by_task[file_task]
        try:
            spec = task_for_file(file_task, golds.outputs, db_path)
        except UnknownNameError as error:
            raise InputFileError(golds.source, str(error)) from None
        progress, advance = _progress_reporter(f"scoring {file_task}")
        with progress:
            results[file_task] = official_result(
                evaluate_files(spec, golds, preds_by_task[file_task], advance)
            )
    if output_path is not None:
        _write_result(output_path, results)
    if as_json:
        print_json(results)
        return
    for file_task, result in results.items():
        shown = "  ".join(f"{name} {_format_value(value)}" for name, value in result.items())
        click.echo(f"{file_task}  {shown}")
    if len(results) < 7 and all(task.startswith("LaMP_") for task in results):
        click.echo(
            f"note: {len(results)} LaMP task(s) scored; the official eval_all insists on all seven",
            err=True,
        )
