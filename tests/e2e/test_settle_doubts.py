"""A run whose disk fills as its first letter goes out: neither the ledger nor the journal
beside it can record the letter, so its row is in doubt. The run's summary and its report name
the row; `settle` records what the mail server's log says, and the redrive follows it.

The example campaign runs on the real definition with two worker processes; the batch's
worker meets a file size limit of 0 bytes (as a disk with no room left) once its first letter
is in the outbox: the claim of the next row, which records that letter, fails, and so do
recording it alone and keeping it in the journal. That next row's claim was not written, so
nothing was sent for it.
"""

from __future__ import annotations

import csv
import functools
import json
import resource
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import mailmatrix.local as local
from mailmatrix.cli.main import cli
from mailmatrix.local import REPO
from tests.e2e.test_ledger_no_room import _first_batch_with, _Wrapped, two_workers

EXAMPLE = REPO / "examples" / "offer-letters" / "recipients.csv"
VALID_ROWS = 18

__all__ = ["two_workers"]  # the fixture, used by name


class _NoRoomOnceSent(_Wrapped):
    """The ledger of a worker whose files may grow no more right after its first letter went
    out: neither the ledger nor its journal can record the letter."""

    def claim(self, *args: Any, sent_before: Any = None, **kwargs: Any) -> Any:
        if sent_before is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
        return self._ledger.claim(*args, sent_before=sent_before, **kwargs)


def _run_leaving_a_row_in_doubt(tmp_path: Path, monkeypatch: Any) -> tuple[Any, Path, Path]:
    """Run the example's file (copied) with `mailmatrix run`, its batch's disk full once its
    first letter went out: the CLI's result, the file and the workdir."""
    monkeypatch.setattr(
        "mailmatrix.jobs.send_batch",
        functools.partial(_first_batch_with, _NoRoomOnceSent, marker=str(tmp_path / "first")),
    )
    csv_file = tmp_path / "offers.csv"
    csv_file.write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "attachments").symlink_to(EXAMPLE.parent / "attachments")
    workdir = tmp_path / "w"
    result = CliRunner().invoke(cli, ["run", str(csv_file), "--workdir", str(workdir)])
    return result, csv_file, workdir


def _letters(workdir: Path) -> int:
    return len(list((workdir / "outbox" / "new").iterdir()))


def _report_rows(path: Path) -> dict[int, dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return {int(row["row"]): row for row in csv.DictReader(stream)}


def test_the_run_names_the_row_in_doubt_in_its_summary_and_its_report(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run whose disk fills as its first letter (row 2) goes out
    # WHEN the file runs
    result, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)

    # THEN it failed with one letter in the outbox, and its summary names that row: masked
    # address, template, attachment and time of its try; and the commands that settle it
    output = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert _letters(workdir) == 1
    assert "1 row(s) were being sent as the run ended and may have gone out" in output
    assert "row 2, a***@example.com, template offer, attachment amelia-hart.pdf, tried " in output
    assert "amelia.hart@example.com" not in output
    assert f"settle {csv_file} --sent 2 --workdir {workdir}" in output
    assert f"settle {csv_file} --not-sent 2 --workdir {workdir}" in output
    # AND the run's report has it in doubt; the row whose claim failed was not sent
    report = Path(output.split("Report: ")[1].split()[0])
    rows = _report_rows(report)
    assert rows[2]["status"] == "in_doubt"
    assert rows[2]["email"] == "amelia.hart@example.com"
    assert "may have gone out" in rows[2]["reason"]
    assert {rows[row]["status"] for row in rows if row != 2} == {"unsent"}

    # AND `show` names it too
    execution = output.split("Execution: ")[1].split()[0]
    shown = CliRunner().invoke(cli, ["show", execution, "--workdir", str(workdir)])
    assert "row 2, a***@example.com, template offer" in " ".join(shown.output.split())


def _settled_and_redriven(
    tmp_path: Path, monkeypatch: Any, flag: str, *, arrived: bool
) -> tuple[Any, dict[str, Any], Path]:
    """Run the file leaving row 2 in doubt (its letter taken out of the outbox unless it
    ``arrived``), settle row 2 with ``flag``, and redrive: the settle's result, the redrive's
    record and the workdir."""
    result, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    execution = " ".join(result.output.split()).split("Execution: ")[1].split()[0]
    if not arrived:  # as a mail server that lost it
        for letter in (workdir / "outbox" / "new").iterdir():
            letter.unlink()
    settled = CliRunner().invoke(
        cli, ["settle", str(csv_file), flag, "2", "--workdir", str(workdir)]
    )
    return settled, local.redrive(workdir, execution), workdir


def test_a_row_settled_as_sent_is_not_sent_again_by_the_redrive(tmp_path, monkeypatch, two_workers):
    # GIVEN a run that left row 2 in doubt, whose letter the outbox shows arrived
    # WHEN the operator settles it as sent, and the execution is redriven
    settled, record, workdir = _settled_and_redriven(tmp_path, monkeypatch, "--sent", arrived=True)

    # THEN the redrive sent the other rows only: each valid row has one letter, none marked
    # as a possible duplicate, and row 2 counts as sent
    assert settled.exit_code == 0, settled.output
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert _letters(workdir) == VALID_ROWS
    counts = record["output"]["counts"]
    assert (counts["sent"], counts["possible_duplicates"]) == (VALID_ROWS, 0)


def test_a_row_settled_as_not_sent_is_sent_by_the_redrive_as_never_tried(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run that left row 2 in doubt, whose letter did not arrive
    # WHEN the operator settles it as not sent, and the execution is redriven
    settled, record, workdir = _settled_and_redriven(
        tmp_path, monkeypatch, "--not-sent", arrived=False
    )

    # THEN the redrive sent every valid row once, row 2 not marked as a possible duplicate
    assert settled.exit_code == 0, settled.output
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert _letters(workdir) == VALID_ROWS
    assert record["output"]["counts"]["possible_duplicates"] == 0
    report = workdir / "bucket" / record["output"]["report_key"]
    assert _report_rows(report)[2]["status"] == "sent"
    assert _report_rows(report)[2]["reason"] == ""


def test_no_run_or_redrive_of_the_file_goes_on_while_its_row_is_in_doubt(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run that left row 2 in doubt (its letter may have arrived)
    result, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    execution = " ".join(result.output.split()).split("Execution: ")[1].split()[0]

    # WHEN the file is run again, or the execution redriven, without a word about it
    again = CliRunner().invoke(cli, ["run", str(csv_file), "--workdir", str(workdir)])
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])

    # THEN both are refused, sending nothing: each names the row, the commands that settle
    # it, and the run that sends it again all the same
    assert _letters(workdir) == 1
    for refused in (again, redriven):
        output = " ".join(refused.output.split())
        assert refused.exit_code == 2, refused.output
        assert "offers.csv: nothing was sent: 1 row(s) of it are in doubt" in output
        assert "row 2, a***@example.com, template offer, attachment amelia-hart.pdf" in output
        assert f"settle {csv_file} --sent 2 --workdir {workdir}" in output
        assert f"settle {csv_file} --not-sent 2 --workdir {workdir}" in output
        assert f"run {csv_file} --retry-unknown --workdir {workdir}" in output

    # AND once it is settled as sent, a run sends the other rows, row 2 not again
    settled = CliRunner().invoke(
        cli, ["settle", str(csv_file), "--sent", "2", "--workdir", str(workdir)]
    )
    assert settled.exit_code == 0, settled.output
    rerun = CliRunner().invoke(cli, ["run", str(csv_file), "--workdir", str(workdir), "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert _letters(workdir) == VALID_ROWS


def test_a_run_with_retry_unknown_sends_the_row_in_doubt_again_as_a_possible_duplicate(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run that left row 2 in doubt, and its letter did arrive
    _, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)

    # WHEN the operator runs the file again with --retry-unknown, without settling
    args = ["run", str(csv_file), "--workdir", str(workdir), "--retry-unknown", "--json"]
    rerun = CliRunner().invoke(cli, args)

    # THEN every valid row was sent, row 2 a second time, marked as a possible duplicate
    assert rerun.exit_code == 0, rerun.output
    assert _letters(workdir) == VALID_ROWS + 1
    found = json.loads(rerun.output[rerun.output.index("{") :])
    assert found["counts"]["possible_duplicates"] == 1


def test_a_row_in_doubt_whose_file_row_now_holds_an_address_alike_is_named_by_its_letter(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run that left row 2 (amelia.hart@example.com) in doubt, and the file's row 2
    # since holds another address that looks the same masked (a***@example.com)
    _, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    text = csv_file.read_text(encoding="utf-8")
    csv_file.write_text(text.replace("amelia.hart@example.com", "anna.berg@example.com"), "utf-8")

    # WHEN its rows in doubt are listed
    listed = CliRunner().invoke(cli, ["settle", str(csv_file), "--workdir", str(workdir), "--json"])

    # THEN the letter is named ROW:LETTER, not by the bare number of a row that is another
    # person's now, and the bare number is refused
    found = json.loads(listed.output[listed.output.index("{") :])
    (row,) = found["in_doubt"]
    assert row["row"] == 2 and row["settle_as"].startswith("2:"), row
    refused = CliRunner().invoke(
        cli, ["settle", str(csv_file), "--sent", "2", "--workdir", str(workdir)]
    )
    assert refused.exit_code == 2, refused.output
    assert "now holds a***@example.com" in " ".join(refused.output.split())


def test_a_renamed_copy_counts_a_letter_in_doubt_under_the_other_file_apart_from_those_sent(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of offers.csv that left row 2 in doubt, and a copy of the file under a new
    # name
    _, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    monkeypatch.undo()  # the copy's run has room
    copy = tmp_path / "offers-copy.csv"
    copy.write_bytes(csv_file.read_bytes())

    # WHEN the copy is run
    shown = CliRunner().invoke(cli, ["run", str(copy), "--workdir", str(workdir)])

    # THEN row 2 is held back, counted and listed as in doubt there, not as sent there
    said = " ".join(shown.output.split())
    assert shown.exit_code == 0, shown.output
    assert "In doubt under another file (not sent here) │ 1 │" in said
    assert "Already sent under another file" not in said
    assert "Rows not sent: their letters may have gone under another file (1):" in said
    assert "row 2 in doubt elsewhere: this letter (" in said
    assert "1 row(s) not sent: the same letter may already have gone to the same address" in said
    # AND so do --json (run again: the row is held back again) and `show`
    again = CliRunner().invoke(cli, ["run", str(copy), "--workdir", str(workdir), "--json"])
    counts = json.loads(again.output[again.output.index("{") :])["counts"]
    assert (counts["doubt_under"], counts["sent_under"], counts["skipped"]) == (1, 0, 17)
    execution = said.split("Execution: ")[1].split()[0]
    drawn = CliRunner().invoke(cli, ["show", execution, "--workdir", str(workdir)])
    assert "result: 17 sent, 2 rejected, 1 in doubt under another file" in drawn.output


def test_a_copys_row_in_doubt_under_the_other_file_names_the_workdir_that_settles_it(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of offers.csv in a workdir not the default that left row 2 in doubt, and a
    # copy of the file under a new name
    _, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    monkeypatch.undo()  # the copy's run has room
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "default"))
    copy = tmp_path / "offers-copy.csv"
    copy.write_bytes(csv_file.read_bytes())

    # WHEN the copy is run in that workdir
    shown = CliRunner().invoke(cli, ["run", str(copy), "--workdir", str(workdir)])

    # THEN the reason of its row 2 names the settle that lists it with that workdir: without
    # it, `settle` would look in the default workdir and find nothing in doubt
    said = " ".join(shown.output.split())
    assert shown.exit_code == 0, shown.output
    assert f"Settle it there first (`settle offers.csv --workdir {workdir}` lists it)" in said


def test_show_of_a_run_whose_file_moved_since_prints_commands_that_work_once_filled_in(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run that left row 2 in doubt, and its file moved since to another folder
    monkeypatch.chdir(tmp_path)
    result, csv_file, workdir = _run_leaving_a_row_in_doubt(tmp_path, monkeypatch)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    execution = " ".join(result.output.split()).split("Execution: ")[1].split()[0]
    (tmp_path / "done").mkdir()
    csv_file.rename(tmp_path / "done" / "offers.csv")

    # WHEN the execution is shown
    shown = CliRunner().invoke(cli, ["show", execution, "--workdir", str(workdir)])

    # THEN it says the file is no longer where it ran, once, and names it DIR/offers.csv in
    # the commands it prints, not by the path it no longer has
    lines = shown.output.splitlines()
    note = f"{csv_file}, the file this execution ran, is no longer there (moved or deleted since)"
    assert [line.startswith(note) for line in lines].count(True) == 1, shown.output
    commands = [line for line in lines if f"{local.program()} " in line]
    assert commands and not any(str(csv_file) in line for line in commands), shown.output
    assert "redrive: refused while the file is not where it ran" in shown.output
    assert f"{local.program()} redrive {execution}" not in shown.output

    # AND its settle command, DIR filled in, settles the row
    (settle,) = [line for line in commands if "--not-sent" in line]
    args = settle.split("not arrived: ")[1].replace("DIR/", "done/").split()[1:]
    settled = CliRunner().invoke(cli, args)
    assert settled.exit_code == 0, settled.output
    assert "Settled as not sent (1 row(s))" in settled.output
