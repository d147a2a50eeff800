"""What a trained model survives (issue 23; docs/store.md, "Guarantees"): one test per guarantee.

`models rm` deletes only lampbox model folders inside the models folder; a name in use by a
job is refused to a second job, to --overwrite and to rm, naming the holder; a kill between
the save and the registration is finished by the same command or by `models doctor --fix`;
a training gives the store back while it trains; bad settings and damaged files are one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import fake_model, one_line_error
from click.testing import CliRunner, Result

from lampbox.cli import cli
from lampbox.errors import InputFileError, LampboxError
from lampbox.store import Store

REPO = Path(__file__).resolve().parent.parent


def lampbox(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def registered(db: Path, name: str) -> bool:
    from lampbox.store.artifacts import get_artifact

    with Store(db, read_only=True) as store:
        return get_artifact(store, name) is not None


def register(db: Path, name: str) -> None:
    """A row for models/NAME, as `lampbox train` registers it."""
    from lampbox.store.artifacts import Artifact, save_artifact

    folder = Path(os.environ["LAMPBOX_HOME"]) / "models" / name
    with Store(db) as store:
        save_artifact(store, Artifact(name, "lora", "ipa", "commit_subject", "smollm2-135m-instruct", "fp", {}, [], {}, str(folder), "hash", None))


# -- models rm: only lampbox model folders, only inside the models folder ---------------------


def test_models_rm_refuses_paths_dots_and_leaves_everything(home: Path, db: Path, tmp_path: Path) -> None:
    victim = tmp_path / "x" / "victim"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    fake_model(home, "keep")
    register(db, "keep")
    for name in (str(victim), "..", ".", "../home", "keep/adapter", ""):
        line = one_line_error(lampbox("models", "rm", name, "--db", db))
        assert "letters, digits" in line, (name, line)
    assert (victim / "precious.txt").read_text() == "keep me"
    assert db.is_file() and (home / "models" / "keep" / "adapter").is_dir() and registered(db, "keep")


def test_models_rm_deletes_a_lampbox_model_and_nothing_else(home: Path, db: Path, tmp_path: Path) -> None:
    fake_model(home, "keep")
    register(db, "keep")
    mine = home / "models" / "notes"  # a folder a user put there: no lampbox-model.json
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    outside = fake_model(tmp_path, "elsewhere")  # a model folder outside the models folder...
    (home / "models" / "link").symlink_to(outside)  # ...reached through a link inside it
    assert "not a lampbox model folder" in one_line_error(lampbox("models", "rm", "notes", "--db", db))
    assert "leads outside" in one_line_error(lampbox("models", "rm", "link", "--db", db))
    assert (mine / "notes.txt").is_file() and (outside / "lampbox-model.json").is_file()
    result = lampbox("models", "rm", "keep", "--db", db)
    assert result.exit_code == 0, result.output
    assert not (home / "models" / "keep").exists() and not registered(db, "keep")
    assert "no trained model named 'keep'" in one_line_error(lampbox("models", "rm", "keep", "--db", db))


def test_models_show_and_resolution_validate_names(home: Path, db: Path, tmp_path: Path) -> None:
    from lampbox.models import resolve_model, trained_model_folder

    assert "letters, digits" in one_line_error(lampbox("models", "show", "../x", "--db", db))
    outside = fake_model(tmp_path, "elsewhere")
    (home / "models").mkdir(exist_ok=True)
    (home / "models" / "link").symlink_to(outside)
    assert trained_model_folder("link") is None  # a link out of the models folder is not a model
    fake_model(home, "kept")
    assert trained_model_folder("kept") == home / "models" / "kept"
    assert resolve_model("kept").adapter == str(home / "models" / "kept" / "adapter")


# -- one job per name: a per-name lock under the models folder --------------------------------

HOLD_NAME = """
import sys
from lampbox.model_folders import hold_name
with hold_name(sys.argv[1], "train " + sys.argv[1]):
    print("holding", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def name_held(home: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the name 'k9' (as a training job does) until the test ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_NAME), "k9"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    yield holder
    if holder.poll() is None:
        holder.communicate("", timeout=60)


def test_a_name_in_use_is_refused_to_rm_overwrite_and_a_second_job(home: Path, db: Path, name_held) -> None:  # type: ignore[no-untyped-def]
    from lampbox.lab.training import TrainSpec, train_model
    from lampbox.model_folders import ModelInUse

    fake_model(home, "k9")
    register(db, "k9")
    work = home / "models" / ".k9.training"
    (work / "checkpoints").mkdir(parents=True)
    line = one_line_error(lampbox("models", "rm", "k9", "--db", db))
    assert f"in use by train k9 (pid {name_held.pid}" in line
    with Store(db) as store:
        for overwrite in (True, False):
            with pytest.raises(ModelInUse, match=f"in use by train k9 \\(pid {name_held.pid}"):
                train_model(TrainSpec(task="commit_subject", scheme="user"), store, "k9", overwrite=overwrite)
    assert (work / "checkpoints").is_dir() and (home / "models" / "k9" / "adapter").is_dir() and registered(db, "k9")
    name_held.communicate("", timeout=60)  # the holder ends: the name is free again
    assert lampbox("models", "rm", "k9", "--db", db).exit_code == 0
    assert not work.exists() and not registered(db, "k9")


# -- save and registration: a kill between them is repaired --------------------------------


def test_list_reports_and_doctor_fixes_folders_without_rows_and_rows_without_folders(home: Path, db: Path) -> None:
    fake_model(home, "orphan")  # renamed into place, then killed before its registration
    gone = fake_model(home, "gone")
    register(db, "gone")
    shutil.rmtree(gone)  # registered, then its folder removed by hand
    staged = fake_model(home, "staged")  # killed between moving the old model aside and the rename
    staged.rename(home / "models" / ".staged.staging")
    listed = lampbox("models", "list", "--db", db)
    assert listed.exit_code == 0
    assert "orphan: folder" in listed.output and "not registered" in listed.output
    assert "gone: registered, but its folder" in listed.output and "staged: a complete save" in listed.output
    assert "models doctor --fix" in listed.output
    report = lampbox("models", "doctor", "--db", db)
    assert report.exit_code == 0 and "orphan" in report.output and not registered(db, "orphan")
    fixed = lampbox("models", "doctor", "--fix", "--db", db)
    assert fixed.exit_code == 0, fixed.output
    assert registered(db, "orphan") and not registered(db, "gone") and registered(db, "staged")
    assert (home / "models" / "staged" / "adapter").is_dir()
    assert lampbox("models", "doctor", "--db", db).output.strip() == "models folder and store agree"
    from lampbox.store.artifacts import get_artifact

    with Store(db, read_only=True) as store:
        orphan = get_artifact(store, "orphan")
    assert orphan is not None and orphan.metrics == {"rouge-1": 0.5} and orphan.history == [{"step": 1, "loss": 2.0}]


# -- settings checked before any work, one line each ----------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-1"], "--lr must be greater than 0"),
        (["--lr", "0"], "--lr must be greater than 0"),
        (["--eval-every", "0"], "--eval-every must be at least 1"),
        (["--max-target-tokens", "0"], "--max-target-tokens must be at least 1"),
        (["--max-target-tokens", "-3"], "--max-target-tokens must be at least 1"),
        (["--dev-split", "nope"], "no commit_subject user 'nope' questions to evaluate on"),
    ],
)
def test_bad_training_settings_are_one_line_before_any_work(
    flags: list[str], message: str, home: Path, tmp_path: Path, commits_store_path: Path
) -> None:
    db = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    line = one_line_error(lampbox("train", "ipa", "--task", "commit_subject", "--name", "bad", "--db", db, *flags))
    assert message in line
    assert not (home / "models" / ".bad.training").exists() and not (home / "models" / "bad").exists()


# -- damaged files: one line naming the file ------------------------------------------------


def test_a_record_naming_missing_weights_is_one_line(home: Path) -> None:
    from lampbox.models import resolve_model

    for kind, weights in (("full", "model"), ("lora", "adapter")):
        folder = fake_model(home, f"no-{weights}", kind)
        shutil.rmtree(folder / weights)
        with pytest.raises(InputFileError, match=f"{weights}/ is missing"):
            resolve_model(f"no-{weights}")
    (home / "models" / "torn").mkdir()
    (home / "models" / "torn" / "lampbox-model.json").write_text('{"kind": "lo')
    with pytest.raises(InputFileError, match="lampbox-model.json: not a readable"):
        resolve_model("torn")


def test_links_out_of_the_models_folder_are_reported_never_followed(home: Path, db: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "checkpoints").mkdir(parents=True)
    fake_model(home, "k9")
    register(db, "k9")
    (home / "models" / ".k9.training").symlink_to(outside)  # a job folder that leads elsewhere
    listed = lampbox("models", "list", "--db", db)
    assert listed.exit_code == 0 and "leads outside" in listed.output
    assert "leads outside" in one_line_error(lampbox("models", "rm", "k9", "--db", db))
    assert lampbox("models", "doctor", "--fix", "--db", db).exit_code == 0
    assert (outside / "checkpoints").is_dir() and (home / "models" / "k9" / "adapter").is_dir()


def test_name_checks_never_reach_the_store(home: Path) -> None:
    from lampbox.model_folders import check_model_name, model_path

    for bad in ("..", ".", "/tmp/x", "a/b", ".hidden", "x" * 101, ""):
        with pytest.raises(LampboxError, match="letters, digits"):
            model_path(bad)
    assert check_model_name("subject-bm25_k4.v2") == "subject-bm25_k4.v2"


def test_a_lock_is_released_when_its_process_is_killed(home: Path) -> None:
    from lampbox.model_folders import hold_name, name_holder

    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_NAME), "k9"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    assert name_holder("k9") == f"train k9 (pid {holder.pid}: lampbox k9)"
    holder.kill()
    holder.wait(timeout=60)
    deadline = time.time() + 10
    while name_holder("k9") is not None and time.time() < deadline:
        time.sleep(0.05)
    assert (home / "models" / ".k9.lock").is_file()  # left by the killed holder, unlocked
    with hold_name("k9", "train k9"):
        assert name_holder("k9") is not None
    assert name_holder("k9") is None and not (home / "models" / ".k9.lock").exists()


# -- with a real (tiny) training ------------------------------------------------------------


def _spec(tiny_lm: Path, **overrides):  # type: ignore[no-untyped-def]
    """The tiniest training of tests/test_training.py."""
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.training import TrainSpec

    config = TrainConfig(max_steps=4, eval_every=2, batch_size=2, precision="fp32", lr=1e-3, eval_new_tokens=8)
    values = dict(task="commit_subject", scheme="user", retriever="bm25", k=2, model=str(tiny_lm), limit=8, dev_limit=4, config=config)
    values.update(overrides)
    return TrainSpec(**values)


class Killed(BaseException):
    """Stands for a kill -9: no except clause and no cleanup runs."""


@pytest.mark.slow
def test_a_kill_between_save_and_registration_is_finished_by_the_same_command(  # type: ignore[no-untyped-def]
    commits_store, tiny_lm: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lampbox.lab import training
    from lampbox.lab.registry import leftovers
    from lampbox.lab.training import train_model
    from lampbox.models import resolve_model
    from lampbox.store.artifacts import get_artifact

    def killed(store, artifact):  # type: ignore[no-untyped-def]
        raise Killed  # the folder was renamed into place; the row is never written

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_artifact", killed)
        with pytest.raises(Killed):
            train_model(_spec(tiny_lm), commits_store, "half")
    folder, work = home / "models" / "half", home / "models" / ".half.training"
    assert (folder / "adapter").is_dir() and work.is_dir() and get_artifact(commits_store, "half") is None
    assert resolve_model("half").adapter == str(folder / "adapter")  # complete: it resolves...
    found = [(leftover.name, leftover.problem) for leftover in leftovers(commits_store)]
    assert found == [("half", "unregistered"), ("half", "stale")]  # ...and `models list` reports it

    def no_training(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the saved model was trained again")

    notes: list[str] = []
    monkeypatch.setattr("lampbox.engine.training.trainer.train", no_training)
    artifact, result = train_model(_spec(tiny_lm), commits_store, "half", on_note=notes.append)
    assert artifact is not None and result.steps == 4 and "registered it" in notes[0]
    stored = get_artifact(commits_store, "half")
    assert stored is not None and stored.content_hash == artifact.content_hash and set(stored.metrics) == {"rouge-1", "rouge-L"}
    assert [e["step"] for e in stored.history if "eval_rouge-1" in e] == [2, 4]
    assert not work.exists()
    with pytest.raises(LampboxError, match="exists"):  # finished now: the name is taken as before
        train_model(_spec(tiny_lm), commits_store, "half")


@pytest.mark.slow
def test_training_gives_the_store_back_and_names_itself_when_it_writes(  # type: ignore[no-untyped-def]
    tmp_path: Path, commits_store_path: Path, tiny_lm: Path, home: Path
) -> None:
    """While it trains (in the progress callback, mid-training) another process lists the data
    and the models; when the job holds the store (as it does while it registers) a reader's
    busy message names it and its step."""
    from lampbox.lab.training import train_model

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    store = Store(db, hold_lock=False, purpose="train beside")
    seen: dict[str, object] = {}

    def reader(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lampbox", *command, "--db", str(db)], capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO), "LAMPBOX_LOCK_WAIT": "0"}, cwd=REPO,
        )  # fmt: skip

    def on_progress(event) -> None:  # type: ignore[no-untyped-def]
        if event.step != 2 or event.metrics or "data" in seen:
            return
        seen["open"] = store.is_open
        seen["data"], seen["models"] = reader("data", "list"), reader("models", "list")
        store.connection  # noqa: B018 - the job takes the store (as for a write): readers are refused
        seen["busy"] = reader("data", "list")
        store.idle()

    try:
        artifact, _ = train_model(_spec(tiny_lm), store, "beside", on_progress=on_progress)
    finally:
        store.close()
    assert artifact is not None and seen["open"] is False
    data, models, busy = seen["data"], seen["models"], seen["busy"]
    assert data.returncode == 0 and "commit_subject" in data.stdout, data.stderr  # type: ignore[union-attr]
    assert models.returncode == 0, models.stderr  # type: ignore[union-attr]
    assert busy.returncode != 0  # type: ignore[union-attr]
    assert f"busy: train beside, step 2/4 (pid {os.getpid()}) is writing" in busy.stderr  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_running_train_command_keeps_its_name_and_lets_readers_in(  # type: ignore[no-untyped-def]
    tmp_path: Path, commits_store_path: Path, tiny_lm: Path
) -> None:
    """`lampbox train` in one process; in others, on another store of the same home: its
    --overwrite and `models rm` are refused naming it, and `data list` / `models list` on its
    own store run while it trains."""
    first, second = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    shutil.copy(commits_store_path, first)
    shutil.copy(commits_store_path, second)
    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), "LAMPBOX_LOCK_WAIT": "0"}
    train = [
        sys.executable, "-m", "lampbox", "train", "ipa", "--task", "commit_subject", "--model", str(tiny_lm),
        "--k", "2", "--limit", "24", "--dev-limit", "2", "--max-steps", "100000", "--eval-every", "50000",
        "--batch-size", "2", "--precision", "fp32", "--name", "k9", "--json",
    ]  # fmt: skip

    def lampbox_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lampbox", *args], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)

    job = subprocess.Popen([*train, "--db", str(first)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        job_spec = tmp_path / "home" / "models" / ".k9.training" / "spec.json"
        deadline = time.time() + 300
        while not job_spec.is_file():
            assert job.poll() is None and time.time() < deadline, job.communicate()[1][-2000:]
            time.sleep(0.2)
        overwrite = subprocess.run([*train, "--overwrite", "--db", str(second)], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        removed = lampbox_run("models", "rm", "k9", "--db", str(second))
        data = lampbox_run("data", "list", "--db", str(first))
        models = lampbox_run("models", "list", "--db", str(first))
        still_training = job.poll() is None
    finally:
        job.kill()
        job.communicate()
    assert still_training, "the training ended before the checks: give it more steps"
    for refused in (overwrite, removed):
        assert refused.returncode != 0
        assert f"model 'k9' is in use by train k9 (pid {job.pid}" in refused.stderr, refused.stderr
    assert data.returncode == 0 and "commit_subject" in data.stdout, data.stderr
    assert models.returncode == 0, models.stderr
    assert job_spec.is_file()  # --overwrite did not touch the running job's folder


@pytest.mark.slow
def test_a_damaged_adapter_is_one_line(commits_store, tiny_lm: Path, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec
    from lampbox.lab.training import train_model

    train_model(_spec(tiny_lm, dev_limit=0), commits_store, "torn")
    weights = home / "models" / "torn" / "adapter" / "adapter_model.safetensors"
    spec = RunSpec("commit_subject", "user", "dev", retriever="bm25", k=2, backend="hf", model="torn",
                   params=GenerationParams(max_new_tokens=4), limit=2)  # fmt: skip
    whole = weights.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"garbage" * 10):
        weights.write_bytes(damaged)
        with pytest.raises(InputFileError, match="adapter: not a LoRA adapter for this model, or a damaged one"):
            run(spec, commits_store)


# -- a damaged store file -------------------------------------------------------------------


def _damage(db: Path, how: str) -> None:
    """Truncate the store file, or overwrite bytes inside its first data block (its checksum no
    longer matches)."""
    data = bytearray(db.read_bytes())
    if how == "truncated":
        db.write_bytes(bytes(data[: len(data) // 3]))
    else:
        start = 3 * 4096 + 64  # past DuckDB's file and database headers, inside the first block
        data[start : start + 256] = bytes(255 - b for b in data[start : start + 256])
        db.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "checksum"])
@pytest.mark.parametrize(
    "command",
    [["data", "list"], ["models", "list"], ["models", "show", "k9"], ["bench", "--task", "LaMP_7", "--backend", "dummy", "--retrievers", "none", "--limit", "2"]],
    ids=["data list", "models list", "models show", "bench"],
)
def test_a_damaged_store_is_one_line_naming_it(how: str, command: list[str], demo_db: Path, home: Path) -> None:
    _damage(demo_db, how)
    line = one_line_error(lampbox(*command, "--db", demo_db))
    assert line.startswith(f"Error: {demo_db}: the store file is damaged"), line
    assert "'Backup and restore' in docs/store.md" in line


def test_the_fid_backend_refuses_a_lora_model_in_one_line(home: Path) -> None:
    """Issue 23, found 8: it said the base GGUF was 'not a valid JSON file'."""
    from lampbox.engine.generation.fid import locate

    fake_model(home, "subject-lora")
    with pytest.raises(LampboxError, match="'subject-lora' is a LoRA model, not an encoder-decoder.*--backend hf"):
        locate("subject-lora")
