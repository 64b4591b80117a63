"""`validate` forecasts the rows a run holds back for letters of another file as that run
does: those in doubt there (its run ended as it sent them) are counted and named, not said to
be sent; and a file's failed rows whose letters went under another file since are said to be
held back by a retry, not sent by it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from mailmatrix.cli.main import cli
from tests.e2e.test_letter_copies import LETTERS, _file, _run, _validate
from tests.e2e.test_renamed_copy import ANNA, KIM
from tests.e2e.test_settle_doubts import _run_leaving_a_row_in_doubt, two_workers

__all__ = ["two_workers"]  # the fixture, used by name


def test_validate_counts_a_row_in_doubt_under_another_file_as_the_run_holds_it(
    tmp_path: Path, monkeypatch: Any, two_workers: Any
) -> None:
    # GIVEN a run of offers.csv that left row 2 in doubt (it ended as it sent it), and a copy
    # of the file under a new name
    _, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    monkeypatch.undo()  # the copy's run has room
    copy = tmp_path / "offers-copy.csv"
    copy.write_bytes(csv_file.read_bytes())

    # WHEN the copy is validated, then run
    _, found = _validate(copy, workdir)
    shown = CliRunner().invoke(cli, ["validate", str(copy), "--workdir", str(workdir)])
    ran = _run(copy, workdir)

    # THEN validate holds row 2 back as it may have been sent (in doubt) under offers.csv,
    # forecasting the 17 letters the run then sends, and the run holds that row back
    held = [(item["row"], item["outcome"], item["file"]) for item in found["skipped"]]
    assert (2, "may have been sent (in doubt)", "offers.csv") in held
    assert "Settle it there first (`settle offers.csv` lists it)" in found["skipped"][0]["reason"]
    assert found["valid"] == ran["counts"]["sent"] == 17
    assert ran["counts"]["doubt_under"] == 1
    said = " ".join(shown.output.split())
    assert (
        "1 of these rows (row 2) may have been sent (in doubt) to the same addresses under"
        " offers.csv: they are not sent here"
    ) in said
    assert "the 17 valid row(s) would be sent." in said


def _failed_then_sent_elsewhere(folder: Path) -> tuple[Path, Path]:
    """e.csv of Anna and Kim run with every send rejected (failed for good), then f.csv, the
    same letters, run: both sent under f.csv. e.csv and the workdir."""
    attachments, workdir = folder / "attachments", folder / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", attachments / "kim.pdf")
    first = _file(folder, "e.csv", ANNA, KIM)
    code = CliRunner().invoke(
        cli, ["run", str(first), "--workdir", str(workdir), "--faults", "permanent=1"]
    )
    assert "2 row(s) failed" in " ".join(code.output.split()), code.output
    second = _file(folder, "f.csv", ANNA, KIM)
    assert _run(second, workdir)["counts"]["sent"] == 2
    return first, workdir


def test_validate_says_a_retry_holds_back_failed_rows_whose_letters_went_under_another_file(
    tmp_path: Path,
) -> None:
    # GIVEN e.csv's two rows failed for good, and their letters sent since under f.csv
    first, workdir = _failed_then_sent_elsewhere(tmp_path)

    # WHEN e.csv is validated, then run with --retry-failed
    shown = CliRunner().invoke(cli, ["validate", str(first), "--workdir", str(workdir)])
    _, found = _validate(first, workdir)
    retried = _run(first, workdir, "--retry-failed")

    # THEN validate says the retry holds them back as sent under f.csv, and how to send them
    # all the same; and the retry does hold them back, sending nothing
    said = " ".join(shown.output.split())
    assert (
        "2 row(s) failed for good in earlier runs: `run` reports them failed again without"
        " sending; `run --retry-failed` sends them, except: rows 2-3 of them went since to the"
        " same addresses under f.csv: `run --retry-failed` holds them back as sent there,"
        " sending nothing. To send those again on purpose: `run --retry-failed"
        " --send-again-from f.csv`."
    ) in said
    went = found["earlier_runs"]["failed_went_under"]
    assert went == [
        {"row": 2, "file": "f.csv", "in_doubt": False},
        {"row": 3, "file": "f.csv", "in_doubt": False},
    ]
    assert (retried["counts"]["sent"], retried["counts"]["sent_under"]) == (0, 2), retried


def test_validate_with_send_again_from_names_no_failed_row_as_held_elsewhere(
    tmp_path: Path,
) -> None:
    # GIVEN e.csv's two rows failed for good, and their letters sent since under f.csv
    first, workdir = _failed_then_sent_elsewhere(tmp_path)

    # WHEN e.csv is validated as the run the advice gives would be run
    args = ["validate", str(first), "--workdir", str(workdir), "--json"]
    shown = CliRunner().invoke(cli, [*args, "--send-again-from", "f.csv"])

    # THEN the failed rows are said to be sent by a retry, none held back under f.csv
    earlier = json.loads(shown.stdout)["earlier_runs"]
    assert earlier["failed_before"] == 2
    assert "failed_went_under" not in earlier


def test_validate_names_each_file_rows_were_held_under_in_its_advice(tmp_path: Path) -> None:
    # GIVEN Anna's letter sent under a.csv, Kim's under b.csv, and c.csv with both
    attachments, workdir = tmp_path / "attachments", tmp_path / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", attachments / "kim.pdf")
    assert _run(_file(tmp_path, "a.csv", ANNA), workdir)["counts"]["sent"] == 1
    assert _run(_file(tmp_path, "b.csv", KIM), workdir)["counts"]["sent"] == 1
    both = _file(tmp_path, "c.csv", ANNA, KIM)

    # WHEN c.csv is validated
    shown = CliRunner().invoke(cli, ["validate", str(both), "--workdir", str(workdir)])

    # THEN its advice names both files, as --send-again-from takes them, and that their
    # letters went only to the local outbox (a trial), with the two ways to send them for real
    said = " ".join(shown.output.split())
    assert (
        "2 of these rows (rows 2-3) went only to the local outbox under a.csv, b.csv (a trial?),"
        " not to the addresses (the same letters: the same attachments); the ledger counts them"
        " sent, so they will not be sent here. To send them for real: `run --smtp URL"
        " --send-again-from a.csv --send-again-from b.csv` in this workdir, or `run --smtp URL`"
        " in another --workdir, whose ledger holds nothing of that trial."
    ) in said
    # AND so named, validate forecasts both letters sent again
    again = ["--send-again-from", "a.csv", "--send-again-from", "b.csv", "--json"]
    forecast = CliRunner().invoke(cli, ["validate", str(both), "--workdir", str(workdir), *again])
    assert json.loads(forecast.stdout)["valid"] == 2


def test_a_row_whose_own_file_is_in_doubt_under_another_file_is_not_sent_settled_or_not(
    tmp_path: Path, monkeypatch: Any, two_workers: Any
) -> None:
    # GIVEN a run of offers.csv, in a workdir not the default, that left row 2 (Amelia's
    # letter, amelia-hart.pdf) in doubt; and other.csv naming that file for Kim
    _, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    monkeypatch.undo()  # the next runs have room
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "default"))
    other = _file(tmp_path, "other.csv", ("kim@example.com", "Kim", "amelia-hart.pdf"))

    letters = len(list((workdir / "outbox" / "new").iterdir()))
    validated = CliRunner().invoke(
        cli, ["validate", str(other), "--workdir", str(workdir)], env={"COLUMNS": "1000"}
    )
    assert "`settle offers.csv --workdir" in validated.output, validated.output

    # WHEN other.csv is run
    shown = CliRunner().invoke(cli, ["run", str(other), "--workdir", str(workdir)])

    # THEN Kim's row is not sent, and its reason names the letter in doubt there, with the
    # workdir that lists it, and says to name her own file: settling does not send it
    said = " ".join(shown.output.split())
    assert (
        "amelia-hart.pdf is the own letter of another recipient (a***@example.com) under"
        " offers.csv (campaign c-"
    ) in said, said
    assert (
        "row 2 of that run (in doubt there: that run ended as it sent it; `settle offers.csv"
        f" --workdir {workdir}` lists it), so it is not sent to this recipient whatever became"
        " of that letter: this row names that person's letter. Name this recipient's own file"
        " in Attachment_File"
    ) in said
    assert "a run of this file sends this row" not in said
    assert len(list((workdir / "outbox" / "new").iterdir())) == letters

    # WHEN the letter is settled there as not sent, and other.csv run again
    settled = CliRunner().invoke(
        cli, ["settle", str(csv_file), "--not-sent", "2", "--workdir", str(workdir)]
    )
    assert settled.exit_code == 0, settled.output
    again = _run(other, workdir)

    # THEN Kim's row is still not sent: that file is Amelia's, sent or not
    assert (again["counts"]["sent"], again["counts"]["rejected"]) == (0, 1), again
    assert len(list((workdir / "outbox" / "new").iterdir())) == letters


def test_a_corrected_address_of_a_row_whose_file_went_under_another_file_names_that_file(
    tmp_path: Path,
) -> None:
    # GIVEN y.csv sent anna.pdf to a wrong address, and x.csv naming it for Anna
    attachments, workdir = tmp_path / "attachments", tmp_path / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", attachments / "lee.pdf")
    wrong = ("anne@example.com", "Anna", "anna.pdf")
    other = _file(tmp_path, "y.csv", ("lee@example.com", "Lee", "lee.pdf"), wrong)
    assert _run(other, workdir)["counts"]["sent"] == 2
    mine = _file(tmp_path, "x.csv", ANNA)
    _, found = _validate(mine, workdir)
    assert [item["row"] for item in found["rejected"]] == [2]

    # WHEN x.csv is run with its row 2's address said corrected
    refused = CliRunner().invoke(
        cli, ["run", str(mine), "--workdir", str(workdir), "--corrected-address", "2"]
    )

    # THEN it is refused, nothing sent, pointing to the route that works: correct y.csv's
    # address and run y.csv with --corrected-address of its row 3
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, refused.output
    assert (
        "x.csv: --corrected-address: row 2's file anna.pdf went to another address"
        " (a***@example.com) under another file, y.csv (campaign c-"
    ) in said
    assert (
        "as row 3 of that run, not under an earlier run of this file, whose --corrected-address"
        " cannot release it. If that address was wrong and this is the same person, correct it"
        " in y.csv and run y.csv with --corrected-address 3."
    ) in said
    assert "Nothing was sent or recorded" in said

    # WHEN that route is taken THEN Anna's letter goes
    other.write_text(other.read_text().replace("anne@example.com", "anna@example.com"))
    rerun = _run(other, workdir, "--corrected-address", "3")
    assert rerun["counts"]["sent"] == 1, rerun


def test_a_file_named_for_another_person_whose_letter_never_went_names_that_row_and_the_way_out(
    tmp_path: Path,
) -> None:
    # GIVEN a.csv naming bob_smith.pdf for Alice by mistake, its letter never sent (the
    # server refused it), and b.csv naming that file for Bob, whose it is
    attachments, workdir = tmp_path / "attachments", tmp_path / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "bob_smith.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", attachments / "alice.pdf")
    wrong = _file(tmp_path, "a.csv", ("alice@example.com", "Alice", "bob_smith.pdf"))
    stopped = CliRunner().invoke(
        cli, ["run", str(wrong), "--workdir", str(workdir), "--faults", "permanent=1"]
    )
    assert stopped.exit_code == 5, stopped.output
    bobs = _file(tmp_path, "b.csv", ("bob@example.com", "Bob", "bob_smith.pdf"))

    # WHEN b.csv is validated, and run with its row's address said corrected
    _, found = _validate(bobs, workdir)
    refused = CliRunner().invoke(
        cli, ["run", str(bobs), "--workdir", str(workdir), "--corrected-address", "2"]
    )

    # THEN the reason says the file was named for another person in a.csv row 2 and never
    # went, and the way out where that row was the mistake; the refusal words it so too
    [rejected] = found["rejected"]
    said = " ".join(str(rejected).split())
    assert "bob_smith.pdf was named as the own file of another recipient (a***@example.com)" in said
    assert "in a.csv (campaign c-" in said and "row 2 of that run" in said
    assert "and that letter never went" in said
    assert (
        "If that row was the mistake (this recipient's file named for that person), name that"
        " person's own file in row 2 of a.csv and run a.csv again, with --retry-failed where"
        " that row failed"
    ) in said
    told = " ".join(refused.output.split())
    assert refused.exit_code == 2, refused.output
    assert "row 2's file bob_smith.pdf was named for another address (a***@example.com)" in told
    assert "as row 2 of that run (that letter never went)" in told
    assert "went to another address" not in told

    # WHEN that way out is taken: Alice's own file named in a.csv, a.csv run, then b.csv
    wrong.write_text(wrong.read_text().replace("bob_smith.pdf", "alice.pdf"))
    assert _run(wrong, workdir, "--retry-failed")["counts"]["sent"] == 1

    # THEN Bob's letter goes
    assert _run(bobs, workdir)["counts"]["sent"] == 1
