"""A renamed copy of a file whose rows carry no attachment does not mail its people the same
letters again: each letter's print (its address, subject and bodies), and its address and set,
are kept in the ledger as it is sent; a letter of the same set to the same address that went
under another file is held back by validation, and one of the same print at send time
(unless --send-again-from names that file)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.cli.main import cli
from tests.e2e.test_letter_copies import LETTERS, _cli, _file, _outbox
from tests.e2e.test_renamed_copy import _rejects
from tests.e2e.test_run_cli import REPO

ANNA = ("anna@example.com", "Anna", "")
KIM = ("kim@example.com", "Kim", "")


def _announced(folder: Path) -> tuple[Path, Path]:
    """news.csv of Anna and Kim, without attachments, run: two letters out."""
    (folder / "attachments").mkdir()
    templates = folder / "templates"
    shutil.copytree(REPO / "templates", templates)
    manifest = templates / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("attachment: required", "attachment: none"))
    news, workdir = _file(folder, "news.csv", ANNA, KIM), folder / "w"
    assert _run(news, workdir)["counts"]["sent"] == 2
    return news, workdir


def _run(csv_path: Path, workdir: Path, *options: str, codes: tuple[int, ...] = (0, 3)) -> dict:
    """Run ``csv_path`` with the templates of its folder (letters without attachments); it
    exits with one of ``codes``."""
    templates = str(csv_path.parent / "templates")
    code, output = _cli(
        "run",
        str(csv_path),
        "--workdir",
        str(workdir),
        "--templates",
        templates,
        "--json",
        *options,
    )
    assert code in codes, output  # sent, or nothing sendable
    return json.loads(output)


def _shown(csv_path: Path, workdir: Path) -> str:
    """What a run of ``csv_path`` (the templates of its folder) tells people, on one line."""
    templates = str(csv_path.parent / "templates")
    shown = CliRunner().invoke(
        cli, ["run", str(csv_path), "--workdir", str(workdir), "--templates", templates]
    )
    return " ".join(shown.output.split())


def _validate(csv_path: Path, workdir: Path) -> tuple[int, dict]:
    templates = str(csv_path.parent / "templates")
    code, output = _cli(
        "validate", str(csv_path), "--workdir", str(workdir), "--templates", templates, "--json"
    )
    return code, json.loads(output)


def test_a_renamed_copy_without_attachments_sends_nothing_and_says_why(tmp_path):
    # GIVEN news.csv sent, then copied as news-final.csv
    news, workdir = _announced(tmp_path)
    final = tmp_path / "news-final.csv"
    shutil.copy(news, final)

    # WHEN the copy is run
    result = _run(final, workdir)

    # THEN nothing goes out, the summary counts both rows as sent under news.csv, and the
    # report says when and how to send them all the same
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (0, 2)
    assert result["counts"]["skipped"] == 0
    assert len(_outbox(workdir)) == 2
    reasons = [line["reason"] for line in _rejects(result)]
    assert len(reasons) == 2
    # (news.csv went to the outbox: a trial, so the reason does not say the address got it)
    assert reasons[0].startswith(
        "a letter of the set 'offer' went to the local outbox under news.csv (campaign c-"
    )
    assert " UTC (row 2 of that run; a trial?), not to this address, but the ledger" in reasons[0]
    assert reasons[0].endswith("To send it for real, run this file with --send-again-from news.csv")

    # AND a second run of the copy still sends nothing, and tells people why
    words = _shown(final, workdir)
    assert "Rows not sent: their letters went already, under another file (2):" in words
    assert "row 3 already sent: a letter of the set 'offer' went to the local outbox" in words
    assert len(_outbox(workdir)) == 2


def test_a_renamed_copy_without_attachments_sends_again_when_the_file_is_named(tmp_path):
    # GIVEN news.csv sent, then copied as news-again.csv
    news, workdir = _announced(tmp_path)
    again = tmp_path / "news-again.csv"
    shutil.copy(news, again)

    # WHEN the copy is run naming news.csv to send again
    result = _run(again, workdir, "--send-again-from", str(news))

    # THEN both letters go out again
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (2, 0)
    assert len(_outbox(workdir)) == 4


def test_a_copy_with_one_letter_changed_sends_it_only_when_the_file_is_named(tmp_path):
    # GIVEN news.csv sent, then a copy with Kim's Position changed
    news, workdir = _announced(tmp_path)
    changed = tmp_path / "news-kim.csv"
    lines = news.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace(",Dev,", ",Lead,")
    changed.write_text("".join(lines), encoding="utf-8")

    # WHEN the copy is run THEN neither letter goes out: Kim had a letter of the set already
    result = _run(changed, workdir)
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (0, 2)
    assert len(_outbox(workdir)) == 2

    # WHEN it is run naming news.csv to send again THEN both go (the file names no rows)
    result = _run(changed, workdir, "--send-again-from", str(news))
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (2, 0)
    newest = max(_outbox(workdir), key=lambda path: path.stat().st_mtime_ns)
    assert len(_outbox(workdir)) == 4
    assert "@example.com" in newest.read_text(encoding="utf-8", errors="replace")


def _without_prints(workdir: Path) -> Path:
    """The workdir's ledger as a version before letter prints left it: no such columns."""
    path = workdir / "ledger.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP INDEX sends_by_letter")
        db.execute("ALTER TABLE sends DROP COLUMN letter_print")
        db.execute("DROP INDEX sends_by_person")
        db.execute("ALTER TABLE sends DROP COLUMN letter_person")
        db.commit()
    return path


def _columns(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:
        return {row[1] for row in db.execute("PRAGMA table_info(sends)")}


def test_a_ledger_from_before_letter_prints_opens_to_read_and_to_write(tmp_path):
    # GIVEN a ledger whose sends table has no letter_print column
    news, workdir = _announced(tmp_path)
    path = _without_prints(workdir)
    assert "letter_print" not in _columns(path)

    with closing(sqlite3.connect(path)) as db:
        (campaign,) = db.execute("SELECT DISTINCT campaign FROM sends").fetchone()

    # WHEN it is opened read-only THEN its letters are read, and it is left as it was
    reader = SqliteLedger(path, read_only=True)
    try:
        assert [outcome.state for outcome in reader.outcomes(campaign)] == ["sent", "sent"]
    finally:
        reader.close()
    code, found = _validate(news, workdir)
    assert (code, found["valid"]) == (0, 2)
    assert "letter_print" not in _columns(path)

    # WHEN a run opens it to write THEN it gains the column, and a renamed copy run after
    # the file that wrote it holds back nothing it cannot know of but sends once only
    copy = tmp_path / "news-copy.csv"
    shutil.copy(news, copy)
    assert _run(copy, workdir)["counts"]["sent"] == 2
    assert "letter_print" in _columns(path)
    third = tmp_path / "news-third.csv"
    shutil.copy(news, third)
    assert _run(third, workdir)["counts"]["sent_under"] == 2
    assert len(_outbox(workdir)) == 4


def _mixed(folder: Path) -> tuple[Path, Path]:
    """offers.csv, run: Anna's letter with a file of her own, Kim's without, and a row
    rejected; the offer set's attachment optional."""
    attachments = folder / "attachments"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    templates = folder / "templates"
    shutil.copytree(REPO / "templates", templates)
    manifest = templates / "manifest.yaml"
    text = manifest.read_text()
    manifest.write_text(text.replace("attachment: required", "attachment: optional", 1))
    people = (("anna@example.com", "Anna", "anna.pdf"), KIM, ("zed-at-nowhere", "Zed", ""))
    offers, workdir = _file(folder, "offers.csv", *people), folder / "w"
    assert _run(offers, workdir)["counts"]["sent"] == 2
    return offers, workdir


def test_a_renamed_copy_counts_its_rows_held_back_once_in_the_summary_list_and_json(tmp_path):
    # GIVEN offers.csv sent, then copied: Anna's row is held back by validation (her own
    # file went already), and so is Kim's (a letter of the set went to her already)
    offers, workdir = _mixed(tmp_path)
    copy = tmp_path / "offers-copy.csv"
    shutil.copy(offers, copy)

    # WHEN the copy is run, with --json
    result = _run(copy, workdir)

    # THEN both are counted as sent under another file, none as rejected or skipped
    counts = result["counts"]
    assert (counts["sent"], counts["sent_under"], counts["rejected"], counts["skipped"]) == (
        0,
        2,
        1,
        0,
    )

    # WHEN it is run again and its summary shown
    words = _shown(copy, workdir)

    # THEN the table, the list of rows held back and the advice give the one count (the
    # advice telling Anna's letter, the same, from Kim's, of the same set), and the list of
    # rows not sent for other reasons counts only the rejected row
    assert "Already sent under another file (not sent again) │ 2 │" in words
    assert "Rows not sent: their letters went already, under another file (2):" in words
    assert "row 2 already sent: this letter (anna.pdf, the same contents) went to the" in words
    assert "row 3 already sent: a letter of the set 'offer' went to the local outbox" in words
    assert "1 row(s) not sent: the same letter already went" in words
    assert (
        "1 row(s) not sent: a letter of the same set went to that address under offers.csv" in words
    )
    assert "Rows not sent, and why (1): row 4 rejected [Email]" in words

    # AND `show` names them in its result
    execution = words.split("Execution: ")[1].split()[0]
    code, drawn = _cli("show", execution, "--workdir", str(workdir))
    assert code == 0, drawn
    assert "result: 0 sent, 1 rejected, 2 already sent under another file" in drawn
    assert len(_outbox(workdir)) == 2
