"""The summary folds the Map Run's child records into counts, per template, and a report."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mailmatrix.core.report import (
    REPORT_COLUMNS,
    naming_workdir,
    progress_counts,
    sent_under_reason,
    set_letter_file,
    summarize_results,
)
from mailmatrix.ports import IN_DOUBT, SENDING, SENT, UNKNOWN, Outcome, SentCopy

CAMPAIGN = {
    "id": "c-1",
    "source": {"bucket": "b", "key": "incoming/offers.csv"},
    "rejects_key": "reports/c-1/rejects.csv",
}
VALIDATION = {"rows": 6, "valid": 5, "rejected": 1, "duplicates": 0, "excluded": 0}


def _item(row, template):
    return {"row": row, "email": f"u{row}@example.com", "name": f"U {row}", "template": template}


def _child(status, items, output=None, error=None, cause=None):
    record = {"Status": status, "Input": json.dumps({"BatchInput": {}, "Items": items})}
    if output is not None:
        record["Output"] = json.dumps(output)
    if error:
        record["Error"], record["Cause"] = error, cause
    return record


def test_counts_per_outcome_and_template():
    # GIVEN one succeeded batch with a sent, a skipped and a failed row, and one failed batch
    ok = _child(
        "SUCCEEDED",
        [_item(2, "offer"), _item(3, "rejection"), _item(4, "offer")],
        output={
            "rows": [
                {"row": 2, "status": "sent", "message_id": "m2"},
                {"row": 3, "status": "skipped"},
                # failed by an earlier run, not tried again: counted apart too
                {
                    "row": 4,
                    "status": "failed",
                    "code": "MessageRejected",
                    "reason": "nope",
                    "earlier": True,
                },
            ]
        },
    )
    broken = _child(
        "FAILED", [_item(5, "offer"), _item(6, "rejection")], error="Throttled", cause="slow"
    )

    # WHEN summarized
    summary = summarize_results(CAMPAIGN, VALIDATION, [ok, broken])

    # THEN
    assert summary.counts == {
        "rows": 6,
        "valid": 5,
        "rejected": 1,
        "duplicates": 0,
        "excluded": 0,
        "sent_under": 0,
        "doubt_under": 0,
        "sent": 1,
        "skipped": 1,
        "failed": 3,
        "failed_earlier": 1,
        "unknown": 0,
        "other_letter": 0,
        "attachment_of_another": 0,
        "attachment_changed": 0,
        "superseded": 0,
        "unsent": 0,
        "possible_duplicates": 0,
    }
    assert summary.per_template == {
        "offer": {"sent": 1, "failed": 2},
        "rejection": {"skipped": 1, "failed": 1},
    }
    assert summary.outcome == "completed_with_failures"
    raw = summary.report_csv()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with its byte-order mark
    report = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [r["row"] for r in report] == ["2", "3", "4", "5", "6"]
    assert report[0]["message_id"] == "m2" and report[0]["email"] == "u2@example.com"
    assert report[3]["code"] == "Throttled" and "slow" in report[3]["reason"]


def test_a_possible_duplicate_sent_by_an_earlier_run_is_not_counted_again():
    # GIVEN a batch that skips a row an earlier run sent, which may have arrived twice, and
    # sends one that may have arrived twice now (a takeover from an attempt that died)
    ok = _child(
        "SUCCEEDED",
        [_item(2, "offer"), _item(3, "offer")],
        output={
            "rows": [
                {"row": 2, "status": "skipped", "reason": "already sent", "takeover": "died"},
                {"row": 3, "status": "sent", "message_id": "m3", "takeover": "died"},
            ]
        },
    )

    # WHEN summarized
    summary = summarize_results(CAMPAIGN, VALIDATION, [ok])

    # THEN only this execution's own is counted, while the report still marks both rows
    assert summary.counts["possible_duplicates"] == 1
    report = list(csv.DictReader(io.StringIO(summary.report_csv().decode("utf-8-sig"))))
    assert ["may have arrived more than once" in r["reason"] for r in report] == [True, True]


def test_subject_is_short_ascii():
    campaign = {**CAMPAIGN, "source": {"bucket": "b", "key": "incoming/Zusagen-Ü" + "x" * 120}}
    summary = summarize_results(campaign, VALIDATION, [])

    subject = summary.subject()
    assert subject.isascii() and len(subject) <= 100
    assert subject.startswith("MailMatrix Zusagen-?")


def test_all_not_verified_points_at_the_sandbox():
    rows = [_item(r, "offer") for r in (2, 3)]
    output = {
        "rows": [
            {
                "row": r,
                "status": "failed",
                "code": "MessageRejected",
                "reason": "Email address is not verified.",
            }
            for r in (2, 3)
        ]
    }
    summary = summarize_results(CAMPAIGN, VALIDATION, [_child("SUCCEEDED", rows, output)])

    assert "sandbox" in summary.message(execution="e", report_key="k")


ON_AWS = "mailmatrix aws send offers.csv --stack mm --retry-failed"


@pytest.mark.parametrize(
    ("reason", "campaign", "command"),
    [
        ("nope", {**CAMPAIGN, "retry_command": ON_AWS}, ON_AWS),
        ("Email address is not verified.", {**CAMPAIGN, "retry_command": ON_AWS}, ON_AWS),
        ("nope", CAMPAIGN, "mailmatrix run FILE --retry-failed"),
    ],
    ids=["aws", "aws-sandbox", "local"],
)
def test_the_notice_says_how_to_send_failed_rows_again_where_the_campaign_ran(
    reason, campaign, command
):
    # GIVEN a campaign whose only row failed for good
    output = {"rows": [{"row": 2, "status": "failed", "code": "MessageRejected", "reason": reason}]}
    child = _child("SUCCEEDED", [_item(2, "offer")], output)

    # WHEN summarized THEN the notice ends with the command for where it ran
    summary = summarize_results(campaign, VALIDATION, [child])
    assert summary.message(execution="e", report_key="k").endswith(
        f"send them again with: {command}"
    )


def test_report_cells_cannot_become_formulas():
    rows = [{"row": 2, "email": "a@example.com", "name": "=HYPERLINK(1)", "template": "offer"}]
    output = {"rows": [{"row": 2, "status": "sent"}]}
    summary = summarize_results(CAMPAIGN, VALIDATION, [_child("SUCCEEDED", rows, output)])

    report = list(csv.DictReader(io.StringIO(summary.report_csv().decode("utf-8-sig"))))
    assert report[0]["name"] == "'=HYPERLINK(1)"


def test_rows_of_an_unfinished_batch_are_told_by_the_ledger():
    # GIVEN a batch that failed after sending its first row, and a ledger that knows it
    from mailmatrix.ports import Outcome

    items = [{**_item(2, "offer"), "key": "k2"}, {**_item(3, "offer"), "key": "k3"}]
    broken = _child("FAILED", items, error="Sandbox.Timedout", cause="killed")
    ledger = {"k2": Outcome(key="k2", row=2, state="sent", message_id="m2")}
    asked: list[list[str]] = []

    def settled(keys):
        asked.append(keys)
        return {k: ledger[k] for k in keys if k in ledger}

    # WHEN summarized with the ledger's outcomes
    summary = summarize_results(CAMPAIGN, VALIDATION, [broken], settled=settled)

    # THEN the sent row counts as sent, the other as failed with the batch's error
    assert (summary.counts["sent"], summary.counts["failed"]) == (1, 1)
    by_row = {r["row"]: r for r in summary.rows}
    assert by_row[2]["message_id"] == "m2"
    assert by_row[3]["code"] == "Sandbox.Timedout"
    # and the ledger was asked once, for that batch's rows only
    assert asked == [["k2", "k3"]]


def test_with_a_report_writer_rows_stream_out_and_none_are_kept():
    from mailmatrix.core.report import report_writer

    rows = [_item(r, "offer") for r in (2, 3)]
    output = {"rows": [{"row": 2, "status": "sent"}, {"row": 3, "status": "skipped"}]}
    out = io.StringIO()

    summary = summarize_results(
        CAMPAIGN, VALIDATION, [_child("SUCCEEDED", rows, output)], report=report_writer(out)
    )

    assert summary.rows == []
    assert (summary.counts["sent"], summary.counts["skipped"]) == (1, 1)
    written = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["row"], r["status"]) for r in written] == [("2", "sent"), ("3", "skipped")]


def test_an_execution_without_a_summary_is_told_row_by_row_by_the_ledger():
    # GIVEN the rows an execution validated, and what the ledger holds for each
    ours, other = "arn:child-1", "arn:child-of-another-run"
    outcomes = {
        "k-sent": Outcome("k-sent", 2, "sent", "m2", attempt=ours),
        "k-twice": Outcome("k-twice", 3, "sent", "m3", attempt=ours, takeovers=1),
        "k-before": Outcome("k-before", 4, "sent", "m4", attempt=other, takeovers=1),
        "k-refused": Outcome("k-refused", 5, "failed", code="MessageRejected", attempt=ours),
        "k-unknown": Outcome("k-unknown", 10, "failed", code="OutcomeUnknown", attempt=ours),
        "k-held": Outcome("k-held", 6, "claimed", attempt=ours),
        "k-elsewhere": Outcome("k-elsewhere", 7, "claimed", attempt=other),
        "k-released": Outcome("k-released", 8, "released", attempt=ours),
        "k-lost-reply": Outcome("k-lost-reply", 9, "released", attempt=ours, uncertain=True),
    }
    keys = [*outcomes, "k-never"]

    # WHEN its progress is counted
    counts = progress_counts(VALIDATION, keys, outcomes, {ours})

    # THEN its own sends, other runs' sends, its claims held as it ended or given back after a
    # try that may have been taken, and the rest are told apart; a possible duplicate another
    # run sent is that run's to report, not this one's; of the failed rows, those failed as
    # OutcomeUnknown are counted apart (no retry of failures sends them)
    assert counts == {
        "rows": 6,
        "valid": 5,
        "rejected": 1,
        "duplicates": 0,
        "excluded": 0,
        "sent_under": 0,
        "sent": 2,
        "skipped": 1,
        "failed": 2,
        "unknown": 1,
        "in_doubt": 2,
        "unsent": 3,
        "possible_duplicates": 1,
    }


ON_AWS_UNKNOWN = "mailmatrix aws send offers.csv --stack mm --retry-unknown"
ON_AWS_AGAIN = "mailmatrix aws send offers.csv --stack mm"


@pytest.mark.parametrize(
    ("codes", "counted", "retried", "told"),
    [
        (["OutcomeUnknown"], "unknown", [ON_AWS_UNKNOWN], "Check whether they arrived"),
        (
            ["MessageRejected", "OutcomeUnknown"],
            "unknown",
            [ON_AWS, ON_AWS_UNKNOWN],
            "Check whether they arrived",
        ),
        (
            ["AttachmentChanged"],
            "attachment_changed",
            [ON_AWS_AGAIN],
            "1 row(s) failed as AttachmentChanged",
        ),
        (
            ["MessageRejected", "AttachmentChanged"],
            "attachment_changed",
            [ON_AWS, ON_AWS_AGAIN],
            "1 row(s) failed as AttachmentChanged",
        ),
    ],
    ids=["unknown-only", "unknown-and-other", "attachment-only", "attachment-and-other"],
)
def test_rows_failed_apart_are_counted_and_given_their_own_command(codes, counted, retried, told):
    # GIVEN a campaign on a stack whose failed rows include one failed as OutcomeUnknown (it
    # may have arrived), or one whose attachment changed (a run of the file sends it)
    campaign = {
        **CAMPAIGN,
        "retry_command": ON_AWS,
        "retry_unknown_command": ON_AWS_UNKNOWN,
        "run_again_command": ON_AWS_AGAIN,
    }
    output = {
        "rows": [
            {"row": row, "status": "failed", "code": code, "reason": "why"}
            for row, code in enumerate(codes, start=2)
        ]
    }
    child = _child("SUCCEEDED", [_item(r, "offer") for r in range(2, 2 + len(codes))], output)

    # WHEN summarized
    summary = summarize_results(campaign, VALIDATION, [child])

    # THEN it is counted apart from the other failures
    assert (summary.counts["failed"], summary.counts[counted]) == (len(codes), 1)
    # AND the notice gives the command for it apart, after saying what to do first, and the
    # other failures' command only when there are others: one remedy per row
    notice = summary.message(execution="e", report_key="k")
    commands = [line.rsplit(": ", 1)[1] for line in notice.splitlines() if "mailmatrix aws" in line]
    assert commands == retried
    assert told in notice


def test_rows_not_sent_another_sets_letter_are_not_told_to_be_retried():
    # GIVEN a campaign whose only failure is a row whose address had the other set's letter
    output = {"rows": [{"row": 2, "status": "failed", "code": "OtherLetterSent", "reason": "why"}]}
    summary = summarize_results(
        CAMPAIGN, VALIDATION, [_child("SUCCEEDED", [_item(2, "offer")], output)]
    )

    # THEN it is counted apart, and the notice says what to do instead of a retry command
    assert summary.counts["other_letter"] == 1
    notice = summary.message(execution="e", report_key="k")
    assert "1 row(s) failed as OtherLetterSent" in notice
    assert "--retry-failed" not in notice


def test_a_campaign_validated_before_the_run_again_command_is_taken_for_a_local_one():
    output = {"rows": [{"row": 2, "status": "failed", "code": "AttachmentChanged", "reason": "x"}]}
    summary = summarize_results(
        CAMPAIGN, VALIDATION, [_child("SUCCEEDED", [_item(2, "offer")], output)]
    )

    notice = summary.message(execution="e", report_key="k")
    assert notice.endswith("(rows already sent are skipped): mailmatrix run FILE")
    assert "--retry-failed" not in notice


def test_rows_left_to_a_newer_upload_are_counted_apart_and_named_not_retried():
    # GIVEN a batch whose rows a newer upload's execution (exec-2) sends, and a refused row
    superseded = {"status": "failed", "code": "Superseded", "reason": "why"}
    output = {
        "rows": [
            {"row": 2, **superseded, "superseded_by": "exec-2"},
            {"row": 3, **superseded, "superseded_by": "exec-2"},
            {"row": 4, "status": "failed", "code": "MessageRejected", "reason": "no"},
        ]
    }
    child = _child("SUCCEEDED", [_item(r, "offer") for r in (2, 3, 4)], output)
    campaign = {**CAMPAIGN, "retry_command": ON_AWS}

    # WHEN summarized
    summary = summarize_results(campaign, VALIDATION, [child])

    # THEN they are counted apart from the other failures, in the subject too
    assert (summary.counts["failed"], summary.counts["superseded"]) == (3, 2)
    assert summary.subject().endswith("3 failed (2 left to a newer upload)")
    # AND the notice names the execution that sends them, and the retry only for the other
    notice = summary.message(execution="e", report_key="k")
    assert (
        "2 row(s) not sent by this execution, and not failed (Superseded): a newer upload of"
        in notice
    )
    assert "Nothing is to be done here" in notice
    assert "(execution exec-2)" in notice and "Redriving this execution sends nothing" in notice
    assert ON_AWS in notice  # for the refused row
    assert summary.to_dict(execution="e")["superseded_by"] == "exec-2"


def test_the_report_names_each_rows_attachment_and_copies_after_the_columns_it_had():
    # GIVEN a batch that sent a row with its own file, a Cc and a Bcc, and one that failed
    # before its row with its file and no copies
    sent = {
        **_item(2, "offer"),
        "attachment": "anna.pdf",
        "cc": ["boss@example.com", "hr@example.com"],
        "bcc": ["archive@example.com"],
    }
    ok = _child("SUCCEEDED", [sent], {"rows": [{"row": 2, "status": "sent", "message_id": "m2"}]})
    unsent = {**_item(3, "offer"), "attachment": "kim.pdf"}
    broken = _child("FAILED", [unsent], error="States.Timeout", cause="slow")

    # WHEN summarized into the per-row report
    raw = summarize_results(CAMPAIGN, VALIDATION, [ok, broken]).report_csv().decode("utf-8-sig")

    # THEN the columns scripts read keep their names and order, the new ones come after them
    header, *lines = list(csv.reader(io.StringIO(raw)))
    kept = ["row", "email", "name", "template", "status", "message_id", "code", "reason"]
    assert header == [*kept, "attachment", "cc", "bcc"]
    # AND each row names the file it attached (or was to attach) and the copies' recipients
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    assert [(r["row"], r["status"], r["attachment"], r["cc"], r["bcc"]) for r in rows] == [
        ("2", "sent", "anna.pdf", "boss@example.com; hr@example.com", "archive@example.com"),
        ("3", "failed", "kim.pdf", "", ""),
    ]


def test_a_letter_held_for_one_in_doubt_elsewhere_says_so_and_how_to_settle_it():
    sent = SentCopy("c-news", "", "", 7, "", "", "news.csv", 0.0, SENT)
    in_doubt = sent._replace(state=IN_DOUBT)

    assert sent_under_reason(sent).startswith("this address already received this letter")
    said = sent_under_reason(in_doubt)
    assert "may already have gone to this address under news.csv (campaign c-news)" in said
    assert "as row 7 of that run, which ended as it sent it (in doubt there)" in said
    assert "`settle news.csv` lists it" in said
    assert "already received" not in said

    unknown = sent_under_reason(sent._replace(state=UNKNOWN))
    assert "which failed as OutcomeUnknown (the server may have taken it)" in unknown
    assert "`run news.csv --retry-unknown` sends it there" in unknown
    assert "already received" not in unknown and "settle" not in unknown

    sending = sent_under_reason(sent._replace(state=SENDING))
    assert "is being sent to this address under news.csv (campaign c-news) at this" in sending
    assert "Run this file again once that run has ended" in sending


def test_a_letter_held_for_one_that_went_to_the_outbox_does_not_say_the_address_got_it():
    sent = SentCopy("c-news", "", "", 7, "", "", "news.csv", 0.0, SENT, outbox=True)

    said = sent_under_reason(sent)
    assert said == (
        "this letter (the same text) went to the local outbox under news.csv (campaign c-news)"
        " (row 7 of that run; a trial?), not to this address, but the ledger counts it sent, so"
        " it is not sent here. To send it for real, run this file with --send-again-from"
        " news.csv"
    )
    of_set = sent_under_reason(sent._replace(template="offer"))
    assert of_set.startswith("a letter of the set 'offer' went to the local outbox under")
    assert set_letter_file(of_set) == "news.csv"
    # in doubt there, it is said as before: whether it went is settled there first
    assert "went to the local outbox" not in sent_under_reason(sent._replace(state=IN_DOUBT))


def test_the_file_a_letter_of_the_rows_set_went_under_is_read_from_its_reason_alone():
    sent = SentCopy("c-news", "", "", 7, "", "", "news.csv", 0.0, SENT)
    of_set = sent._replace(template="offer")

    # A letter of the set, sent or in doubt there, names its file; the same letter does not
    assert set_letter_file(sent_under_reason(of_set)) == "news.csv"
    assert set_letter_file(sent_under_reason(of_set._replace(state=IN_DOUBT))) == "news.csv"
    assert set_letter_file(sent_under_reason(of_set._replace(state=UNKNOWN))) == "news.csv"
    assert set_letter_file(sent_under_reason(sent)) is None
    assert set_letter_file("") is None


def test_the_commands_a_reason_names_for_the_other_file_are_given_the_runs_workdir():
    sent = SentCopy("c-news", "", "", 7, "", "", "news.csv", 0.0, SENT)

    in_doubt = naming_workdir(sent_under_reason(sent._replace(state=IN_DOUBT)), "--workdir w")
    assert "Settle it there first (`settle news.csv --workdir w` lists it)" in in_doubt
    unknown = naming_workdir(sent_under_reason(sent._replace(state=UNKNOWN)), "--workdir w")
    assert "`run news.csv --retry-unknown --workdir w` sends it there" in unknown
    assert naming_workdir(sent_under_reason(sent), "--workdir w") == sent_under_reason(sent)


def test_the_notice_of_a_copy_whose_rows_all_went_under_another_file_says_why_none_was_sent():
    # GIVEN a renamed copy of a sent file: no row valid, both held back by validation
    counts = {**VALIDATION, "valid": 0, "sent_under": 2}

    # WHEN summarized (nothing was sent: the state machine went past the Map)
    summary = summarize_results(CAMPAIGN, counts, [])

    # THEN the run completed, and its notice says why nothing was sent
    assert (summary.outcome, summary.counts["sent"]) == ("completed", 0)
    notice = summary.message(execution="e", report_key="k")
    assert (
        "Not sent again: 2 row(s) whose letters went already to the same addresses under another"
        " file (the rejects and per-row reports name it)"
    ) in notice


def test_a_row_held_back_as_its_letter_is_in_doubt_under_another_file_is_counted_apart():
    # GIVEN a batch that held one row back as its letter went under another file, and one as
    # its letter may have gone there (in doubt there)
    output = {
        "rows": [
            {"row": 2, "status": "skipped", "code": "SentUnder", "reason": "went"},
            {"row": 3, "status": "skipped", "code": "InDoubtUnder", "reason": "in doubt there"},
        ]
    }
    child = _child("SUCCEEDED", [_item(2, "offer"), _item(3, "offer")], output)

    # WHEN summarized
    summary = summarize_results(CAMPAIGN, {**VALIDATION, "valid": 2}, [child])

    # THEN each has its count, neither is skipped, and the notice says both
    counts = summary.counts
    assert (counts["sent_under"], counts["doubt_under"], counts["skipped"]) == (1, 1, 0)
    notice = summary.message(execution="e", report_key="k")
    assert "Not sent again: 1 row(s) whose letters went already" in notice
    assert "Not sent: 1 row(s) whose letters may have gone to the same addresses" in notice


def test_the_report_is_separated_as_the_recipients_file_was():
    # GIVEN a campaign whose recipients file was semicolon-separated
    campaign = {**CAMPAIGN, "delimiter": ";"}
    ok = _child(
        "SUCCEEDED",
        [_item(2, "offer")],
        {"rows": [{"row": 2, "status": "sent", "message_id": "m2"}]},
    )

    # WHEN its report is written
    raw = summarize_results(campaign, VALIDATION, [ok]).report_csv().decode("utf-8-sig")

    # THEN its columns are split by semicolons
    assert raw.splitlines()[0] == ";".join(REPORT_COLUMNS)
    (first,) = csv.DictReader(io.StringIO(raw), delimiter=";")
    assert first["status"] == "sent"
