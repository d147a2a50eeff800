"""`lampbox data build-lamp6` on a tiny synthetic corpus in the Avocado layout."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from lampbox.cli import cli
from lampbox.lamp6 import parse_email
from lampbox.store import Store

# custodian -> [(email number, subject, body, date header)]
CUSTODIANS = {
    "001": [
        (
            1,
            "Budget review",
            "Please send the Q3 numbers by Friday.",
            "Mon, 3 Jan 2000 09:15:00 -0800",
        ),
        (
            2,
            "Re: Budget review",
            "Numbers attached, the travel line is high.",
            "Tue, 4 Jan 2000 10:00:00 -0800",
        ),
        (
            3,
            "Offsite agenda",
            "Draft agenda for the offsite is below.\n\n1. Roadmap\n2. Hiring",
            "Fri, 7 Jan 2000 16:40:00 -0800",
        ),
        (
            4,
            "Offsite travel",
            "Book flights through the portal before the 20th.",
            "Mon, 10 Jan 2000 08:05:00 -0800",
        ),
    ],
    "002": [
        (
            1,
            "Build is red",
            "The nightly build failed on the installer step.",
            "Wed, 5 Jan 2000 23:10:00 -0800",
        ),
        (
            2,
            "Build is green again",
            "Fixed the installer path, nightly passes now.",
            "Thu, 6 Jan 2000 07:30:00 -0800",
        ),
        (
            3,
            "Release branch",
            "Cutting the release branch tonight, hold your merges.",
            "Fri, 14 Jan 2000 18:00:00 -0800",
        ),
    ],
    "003": [
        (
            1,
            "Lunch order",
            "Sandwiches for the team meeting, reply with choices.",
            "Mon, 3 Jan 2000 11:00:00 -0800",
        ),
        (
            2,
            "Lunch order (final)",
            "Ordering at noon, last call.",
            "Mon, 3 Jan 2000 11:45:00 -0800",
        ),
    ],
}


def email_id(custodian: str, number: int) -> str:
    return f"{custodian}-{number:06d}-EM"


def write_corpus(root: Path, extra_members: dict[str, bytes] | None = None) -> Path:
    """avocado-1.0.2/data/text/{custodian}.zip, one file per email inside a custodian folder."""
    text = root / "avocado-1.0.2" / "data" / "text"
    text.mkdir(parents=True)
    for custodian, emails in CUSTODIANS.items():
        with zipfile.ZipFile(text / f"{custodian}.zip", "w") as archive:
            archive.writestr(f"{custodian}/", b"")
            for number, subject, body, date in emails:
                raw = f"Date: {date}\nFrom: someone@avocado.example\nTo: team@avocado.example\nSubject: {subject}\n\n{body}\n"
                archive.writestr(f"{custodian}/{email_id(custodian, number)}.txt", raw.encode())
            if custodian == "002":
                for name, content in (extra_members or {}).items():
                    archive.writestr(name, content)
    return root / "avocado-1.0.2"


def write_id_files(folder: Path) -> Path:
    """LaMP_6 id files as the LaMP authors publish them: email ids in input and profile text."""
    folder.mkdir(parents=True)
    train = [
        {
            "id": "6100",
            "input": email_id("001", 4) + ".txt",  # ids may carry the file extension
            "profile": [
                {"id": "61001", "text": email_id("001", 1), "date": "2000-01-03"},
                {"id": "61002", "text": email_id("001", 3)},  # no date: taken from the email
            ],
        },
        {
            "id": "6200",
            "input": email_id("002", 3),
            "profile": [
                {"id": "62001", "text": email_id("002", 1), "date": "2000-01-05"},
                {"id": "62002", "text": email_id("002", 2), "date": "2000-01-06"},
            ],
        },
    ]
    dev = [
        {
            "id": "6300",
            "input": email_id("003", 2),
            "profile": [{"id": "63001", "text": email_id("003", 1), "date": "2000-01-03"}],
        }
    ]
    (folder / "train_questions.json").write_text(json.dumps(train))
    (folder / "dev_questions.json").write_text(json.dumps(dev))
    return folder


def invoke(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def lampbox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_build_writes_lamp_files_and_imports_them(tmp_path: Path) -> None:
    avocado = write_corpus(tmp_path / "ldc")
    ids = write_id_files(tmp_path / "lamp6-ids")
    out = tmp_path / "built"
    db = tmp_path / "store.duckdb"
    result = invoke(
        "data",
        "build-lamp6",
        "--avocado-dir",
        str(avocado),
        "--questions",
        str(ids),
        "--out",
        str(out),
        "--db",
        str(db),
    )
    assert result.exit_code == 0, result.stderr

    train = json.loads((out / "train_questions.json").read_text())
    first = train[0]
    assert (
        first["input"]
        == "Generate a subject for the following email: Book flights through the portal before the 20th."
    )
    assert first["profile"][0] == {
        "id": "61001", "text": "Please send the Q3 numbers by Friday.", "date": "2000-01-03", "title": "Budget review",
    }  # fmt: skip
    assert first["profile"][1]["text"].startswith(
        "Draft agenda for the offsite is below.\n\n1. Roadmap"
    )
    assert first["profile"][1]["date"] == "2000-01-07"
    golds = json.loads((out / "train_outputs.json").read_text())
    assert golds == {
        "task": "LaMP_6",
        "golds": [
            {"id": "6100", "output": "Offsite travel"},
            {"id": "6200", "output": "Release branch"},
        ],
    }

    with Store(db, read_only=True) as store:
        summary = {(row.scheme, row.split): row.questions for row in store.datasets()}
        assert summary == {("user", "train"): 2, ("user", "dev"): 1}
        question = store.questions("LaMP_6", "user", "dev")[0]
        assert question.gold == "Lunch order (final)"
        assert [item.get("title") for item in question.profile] == ["Lunch order"]


def test_no_import_only_writes_files(tmp_path: Path, lampbox_home: Path) -> None:
    avocado = write_corpus(tmp_path / "ldc")
    ids = write_id_files(tmp_path / "ids")
    db = tmp_path / "store.duckdb"
    result = invoke(
        "data", "build-lamp6", "--avocado-dir", str(avocado / "data" / "text"),
        "--questions", str(ids / "dev_questions.json"), "--no-import", "--db", str(db),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert not db.exists()
    built = lampbox_home / "cache" / "LaMP_6" / "user"
    assert sorted(path.name for path in built.iterdir()) == [
        "dev_outputs.json",
        "dev_questions.json",
    ]


def test_missing_email_is_reported_and_nothing_is_imported(tmp_path: Path) -> None:
    avocado = write_corpus(tmp_path / "ldc")
    ids = write_id_files(tmp_path / "ids")
    dev = json.loads((ids / "dev_questions.json").read_text())
    dev[0]["profile"].append({"id": "63002", "text": "009-000001-EM"})
    (ids / "dev_questions.json").write_text(json.dumps(dev))
    db = tmp_path / "store.duckdb"
    result = invoke(
        "data",
        "build-lamp6",
        "--avocado-dir",
        str(avocado),
        "--questions",
        str(ids),
        "--db",
        str(db),
    )
    assert result.exit_code != 0
    assert "'009-000001-EM'" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize("member", ["../../escaped.txt", "/etc/evil.txt", "002/../../up.txt"])
def test_archive_member_escaping_the_folder_is_refused(tmp_path: Path, member: str) -> None:
    avocado = write_corpus(tmp_path / "ldc", extra_members={member: b"Subject: gotcha\n\nno"})
    ids = write_id_files(tmp_path / "ids")
    db = tmp_path / "store.duckdb"
    result = invoke(
        "data",
        "build-lamp6",
        "--avocado-dir",
        str(avocado),
        "--questions",
        str(ids),
        "--db",
        str(db),
    )
    assert result.exit_code != 0
    assert "002.zip" in result.stderr
    assert repr(member) in result.stderr
    assert not db.exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_parse_email_decodes_headers_and_multipart_bodies() -> None:
    raw = (
        b"Date: Tue, 1 Feb 2000 12:00:00 +0000\n"
        b"Subject: =?utf-8?q?Caf=C3=A9_plans?=\n"
        b'Content-Type: multipart/alternative; boundary="XX"\n\n'
        b"--XX\nContent-Type: text/plain; charset=utf-8\n\nMeet at the caf\xc3\xa9.\n"
        b"--XX\nContent-Type: text/html\n\n<p>Meet</p>\n--XX--\n"
    )
    parsed = parse_email(raw)
    assert parsed.subject == "Café plans"
    assert parsed.body == "Meet at the café."
    assert parsed.date == "2000-02-01"
