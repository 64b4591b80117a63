"""`mailmatrix run`'s summary for people: what it reads of the run's reports."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console

from mailmatrix.cli.run_cmd import NO_REPORT, print_summary
from mailmatrix.core.report import OTHER_LETTER_SENT, REPORT_COLUMNS
from mailmatrix.core.send import _attachment_changed, _other_letter_row
from tests.memory import TracedPeak

COLUMNS = ["row", "email", "column", "reason", "outcome"]


def rejects_report(path: Path, rows: int) -> Path:
    """A rejects report as validation writes it (UTF-8 with a byte-order mark), ``rows`` long."""
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in range(2, rows + 2):
            reason = f"Attachment_File is empty (row {row}, line one\nand line two)"
            writer.writerow([row, f"p***{row}@example.com", "Attachment_File", reason, "rejected"])
    return path


def test_the_summary_lists_the_first_rejects_and_counts_the_rest_row_by_row(tmp_path):
    # GIVEN a run that rejected every one of 20,000 rows (about 1.6 MB of report)
    rejects = rejects_report(tmp_path / "rejects.csv", 20_000)
    result = {
        "status": "FAILED",
        "error": "NothingToSend",
        "cause": "No valid rows in incoming/recipients.csv",
        "counts": {"rows": 20_000, "rejected": 20_000},
        "rejects": str(rejects),
        "workdir": str(tmp_path),
    }
    small = {**result, "rejects": str(rejects_report(tmp_path / "small.csv", 30))}
    print_summary(Console(file=io.StringIO(), width=200), small)  # rich's first-use imports
    out = io.StringIO()
    # WHEN the summary is printed
    with TracedPeak() as peak:
        print_summary(Console(file=out, width=200), result)

    # THEN it shows the first 20 rows with their reasons and counts the others
    lines = out.getvalue().splitlines()
    start = lines.index("Rows not sent, and why (20000):")
    assert lines[start + 1] == (
        "  row 2 rejected [Attachment_File]: Attachment_File is empty (row 2, line one"
    )
    assert lines[start + 2] == "and line two)"
    assert lines[start + 40] == "and line two)"
    assert lines[start + 41] == f"  ... and 19980 more in {rejects}"
    # AND it read the report a row at a time: the whole of it as rows took over 20 MB
    assert peak.bytes < 5_000_000


def failures_report(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    """A per-row report as Summarize writes it, of failed ``rows`` (row, code, reason)."""
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(REPORT_COLUMNS)
        for row, code, reason in rows:
            writer.writerow([row, f"p{row}@example.com", "", "offer", "failed", "", code, reason])
    return path


RETRY = "mailmatrix run r.csv --retry-failed --workdir w"
RUN_AGAIN = "mailmatrix run r.csv --workdir w"


def succeeded_with_failures(report: Path, failed: int, attachment_changed: int) -> dict:
    """The result of a run that ended with ``failed`` rows failed at sending, of them
    ``attachment_changed`` as AttachmentChanged."""
    counts = {"rows": 4, "valid": 4, "sent": 4 - failed, "skipped": 0, "rejected": 0}
    counts |= {"duplicates": 0, "failed": failed, "attachment_changed": attachment_changed}
    return {
        "status": "SUCCEEDED",
        "execution": "e-1",
        "counts": counts,
        "outbox": "w/outbox",
        "report": str(report),
        "workdir": "w",
        "retry_command": RETRY,
        "run_again_command": RUN_AGAIN,
    }


def printed(result: dict) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=100), result)
    return out.getvalue()


def test_rows_whose_attachment_changed_are_given_the_run_of_the_file_not_the_retry(tmp_path):
    # GIVEN a run whose only failed row's attachment changed after validation
    changed = _attachment_changed("b.pdf is not the file validation listed")
    report = failures_report(tmp_path / "report.csv", [(3, "AttachmentChanged", changed)])

    # WHEN its summary is printed
    output = printed(succeeded_with_failures(report, failed=1, attachment_changed=1))

    # THEN it counts the row apart and gives the one remedy its reason gives: run the file
    # again; no retry of failed rows
    assert "of them with an attachment changed since validation │ 1" in output
    assert "1 row(s) failed as AttachmentChanged" in output
    assert output.splitlines()[-1] == RUN_AGAIN
    assert "--retry-failed" not in output


def test_other_failures_keep_the_retry_and_those_with_a_changed_attachment_the_run(tmp_path):
    # GIVEN a run with two rows refused by the service and one whose attachment changed
    changed = _attachment_changed("c.pdf is 19 bytes, it was 10")
    rows = [(2, "MessageRejected", "refused"), (3, "AttachmentChanged", changed)]
    report = failures_report(tmp_path / "report.csv", [*rows, (4, "MessageRejected", "no")])

    # WHEN its summary is printed
    lines = printed(succeeded_with_failures(report, failed=3, attachment_changed=1)).splitlines()

    # THEN the retry is given for the two others, the run of the file for the third
    retry = lines.index(RETRY)
    assert lines[retry - 1].startswith("2 row(s) failed: the report gives each reason")
    assert lines[retry + 1].startswith("1 row(s) failed as AttachmentChanged")
    assert lines[-1] == RUN_AGAIN


def test_the_failed_rows_listed_keep_the_advice_their_reasons_end_with(tmp_path):
    # GIVEN rows failed with the reasons that end with what to do, and a server's long refusal
    other = _other_letter_row({"row": 2, "template": "offer_engineering"}, "offer_sales")
    changed = _attachment_changed(
        "b.pdf is not the file validation listed (replaced, edited, or relinked to another"
        " file since?)"
    )
    refusal = "550 refused: " + "x" * 1500 + " see https://example.com/why"
    rows = [(2, OTHER_LETTER_SENT, other["reason"]), (3, "AttachmentChanged", changed)]
    report = failures_report(tmp_path / "report.csv", [*rows, (4, "Refused", refusal)])

    # WHEN the summary is printed
    output = printed(succeeded_with_failures(report, failed=3, attachment_changed=1))

    # THEN each reason is shown whole, up to its advice
    flat = " ".join(output.split())
    assert other["reason"] in flat
    assert changed in flat
    # AND a longer one loses its middle, not its start or end
    shown = flat[flat.index("row 4 [Refused]: ") :].split(" Execution: ")[0]
    assert shown.startswith("row 4 [Refused]: 550 refused: xxx")
    assert shown.endswith("xxx see https://example.com/why")
    assert " … " in shown and len(shown) < 650


def _failed_run(
    tmp_path: Path, error: str, cause: str, details: list[str], *, width: int = 300
) -> str:
    result = {
        "status": "FAILED",
        "error": error,
        "cause": cause,
        "counts": {"rows": 20, "valid": 18, "sent": 3, "failed": 0},
        "failure_details": details,
        "execution": "e-1",
        "workdir": str(tmp_path),
    }
    out = io.StringIO()
    print_summary(Console(file=out, width=width), result)
    return out.getvalue()


def test_a_run_whose_batches_failed_says_so_in_words_and_shows_their_errors_as_the_cause(
    tmp_path,
):
    # GIVEN a run whose Map ended over its tolerated failures, with its batches' errors
    detail = "AccountSendingHalted (1 batch): send_batch: row 4: the mail service refused"
    said = _failed_run(
        tmp_path,
        "States.ExceedToleratedFailureThreshold",
        "The specified tolerated failure threshold was exceeded",
        [detail],
    )

    # THEN the failure reads as what it means, its name beside; the batches' errors follow,
    # not the Map's cause, which only repeated the name
    lines = said.splitlines()
    failed = next(line for line in lines if line.startswith("The run failed:"))
    assert failed == (
        "The run failed: more batches of rows failed than the campaign tolerates"
        " (States.ExceedToleratedFailureThreshold)"
    )
    assert lines[lines.index(failed) + 1] == f"  {detail}"
    assert "tolerated failure threshold was exceeded" not in said


def test_a_batch_error_naming_a_path_keeps_it_on_one_line_on_a_narrow_terminal(tmp_path):
    # GIVEN a run whose batches failed on a ledger whose path is wider than the terminal
    ledger = tmp_path / ("deep-folder-" * 8) / "ledger.sqlite3"
    detail = f"LedgerNotWritten (1 batch): ledger {ledger}: claim 421f: cannot write the ledger"

    # WHEN its summary is printed 60 columns wide
    said = _failed_run(tmp_path, "States.ExceedToleratedFailureThreshold", "", [detail], width=60)

    # THEN the error is one line, its path whole (it is copied)
    assert f"  {detail}" in said.splitlines()


def test_an_error_of_mailmatrix_itself_is_shown_with_its_cause_as_it_is(tmp_path):
    said = _failed_run(tmp_path, "LedgerError", "ledger ledger.db: claim: disk I/O error", [])

    assert "The run failed: LedgerError\nledger ledger.db: claim: disk I/O error\n" in said


def test_a_failed_run_names_its_mail_server_and_the_reports_it_wrote(tmp_path):
    # GIVEN a run through a mail server that failed after its summary was written (its
    # report and rejects report on disk), and one that failed before (neither written)
    report = failures_report(tmp_path / "report.csv", [(2, "MessageRejected", "refused")])
    rejects = rejects_report(tmp_path / "rejects.csv", 1)
    failed = {
        "status": "FAILED",
        "execution": "e-1",
        "error": "States.TaskFailed",
        "cause": "the summary could not be published",
        "counts": {"rows": 3, "valid": 2, "sent": 1, "rejected": 1, "failed": 1},
        "outbox": None,
        "delivered_via": "smtp://127.0.0.1:2525",
        "report": str(report),
        "rejects": str(rejects),
        "workdir": "w",
    }
    gone = tmp_path / "gone"

    # WHEN their summaries are printed
    written = printed(failed).splitlines()
    unwritten = printed(
        {**failed, "report": None, "rejects": str(gone / "rejects.csv")}
    ).splitlines()

    # THEN each says where the letters went, as a successful run's does, and names the
    # reports that exist, and only those, saying that no report was written
    assert "Mail server: smtp://127.0.0.1:2525" in written
    assert f"Report:  {report}" in written and f"Rejects: {rejects}" in written
    assert "Mail server: smtp://127.0.0.1:2525" in unwritten
    assert not [line for line in unwritten if line.startswith("Rejects:")]
    assert [line for line in unwritten if line.startswith("Report:")] == [f"Report:  {NO_REPORT}"]


def test_a_run_stopped_before_its_summary_says_that_no_report_was_written(tmp_path):
    # GIVEN a run stopped (Ctrl-C) as it sent, before its summary wrote the report, its
    # rejects report written by validation
    rejects = rejects_report(tmp_path / "rejects.csv", 2)
    stopped = {
        "status": "ABORTED",
        "execution": "e-1",
        "counts": {"rows": 20, "valid": 18, "sent": 17, "rejected": 2, "unsent": 1},
        "outbox": "w/outbox",
        "report": None,
        "rejects": str(rejects),
        "workdir": "w",
    }

    # WHEN its summary is printed
    lines = printed(stopped).splitlines()

    # THEN it says no report was written, and why, beside the rejects report that was
    assert f"Report:  {NO_REPORT}" in lines
    assert f"Rejects: {rejects}" in lines
    assert NO_REPORT.startswith("none written: the run ended before its summary")


def test_a_choice_given_to_a_run_that_ended_before_validation_is_said_not_used():
    # GIVEN a run given --send-again-from, stopped before its file was validated
    stopped = {
        "status": "ABORTED",
        "execution": "e-1",
        "counts": {},
        "workdir": "w",
        "choices": {
            "send_again_from": ["a.csv", "b.csv"],
            "corrected_address": [],
            "recorded": False,
        },
    }

    # WHEN its summary is printed
    lines = printed(stopped).splitlines()

    # THEN it says the choice was not used, nor recorded, and what uses it
    assert (
        "--send-again-from a.csv, b.csv: not used, the run ended before its file passed validation,"
        " and nothing was recorded (a redrive of this execution validates it with the choice;"
        " a new run needs it given again)."
    ) in lines
    assert not [line for line in lines if line.startswith("--corrected-address")]


def test_a_run_that_rejected_rows_ends_saying_to_fix_them_and_run_it_again(tmp_path):
    # GIVEN a run that sent two rows and rejected two
    rejects = rejects_report(tmp_path / "rejects.csv", 2)
    report = failures_report(tmp_path / "report.csv", [])
    result = succeeded_with_failures(report, failed=0, attachment_changed=0)
    result["counts"] |= {"rows": 4, "valid": 2, "sent": 2, "rejected": 2}
    result["rejects"] = str(rejects)

    # WHEN its summary is printed
    output = printed(result)

    # THEN its last words say what to do with the rejected rows, as validate's do
    assert " ".join(output.split()).endswith(
        "2 row(s) rejected: fix them and run the same command again (the rows sent now are"
        " skipped)."
    )


def test_the_summary_reads_reports_separated_as_the_recipients_file_was(tmp_path):
    # GIVEN a run of a semicolon-separated file: its rejects report separated so too
    rejects = tmp_path / "rejects.csv"
    with rejects.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["row", "outcome", "column", "reason", "email"])
        writer.writerow([3, "rejected", "Email", "Email is missing; fix it", ""])
    report = failures_report(tmp_path / "report.csv", [])
    result = succeeded_with_failures(report, failed=0, attachment_changed=0)
    result["counts"] |= {"valid": 3, "sent": 3, "rejected": 1}
    result["rejects"] = str(rejects)

    # WHEN its summary is printed
    output = " ".join(printed(result).split())

    # THEN the reject is listed with its column and whole reason
    assert "Rows not sent, and why (1): row 3 rejected [Email]: Email is missing; fix it" in output
