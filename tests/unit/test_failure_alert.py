"""The failure alert's subject says why the execution ended, whatever ended it."""

from __future__ import annotations

import pytest

from mailmatrix.core.failures import Ending, Stopped, failure_alert, redrive_advice


@pytest.mark.parametrize(
    ("status", "error", "stopped", "headline"),
    [
        # stopped on purpose (StopExecution; locally Ctrl-C, SIGTERM, a closed terminal)
        ("ABORTED", None, Stopped(), "stopped before the end, a redrive sends the rest"),
        ("FAILED", "TemplateError", Stopped(), "TemplateError"),
        (
            "FAILED",
            "States.ExceedToleratedFailureThreshold",
            Stopped(batches=(("AccountSendingHalted", "Daily message quota exceeded"),)),
            "AccountSendingHalted",
        ),
    ],
)
def test_the_subject_names_why_the_execution_ended(status, error, stopped, headline):
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(name="e1", arn=arn, status=status, error=error)
    alert = failure_alert(ending, stopped, redrive="mailmatrix redrive e1")
    assert alert.subject == f"MailMatrix execution {status}: {headline}"
    assert "Redrive: mailmatrix redrive e1" in alert.message


def test_a_mail_server_not_listening_is_not_advised_a_redrive_at_once():
    # GIVEN an execution that failed as the mail server refused the connection when checked
    cause = (
        "smtp: cannot connect to 127.0.0.1:25 (connection refused): is the mail server running,"
        " and is the port right?"
    )
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(name="e1", arn=arn, status="FAILED", error="CannotConnect", cause=cause)

    # WHEN its alert is written
    alert = failure_alert(ending, Stopped(), redrive="mailmatrix redrive e1")

    # THEN it says the cause, and to redrive once the server listens, not at once
    assert f"Cause: {cause}" in alert.message
    assert (
        "When to redrive: once the URL names a mail server that answers as its scheme says"
        " (started, at that host and port): a redrive connects to the same URL (for another"
        " host, port or scheme, run the file again with that URL)." in alert.message
    )
    assert "redrive now" not in alert.message


def test_a_server_taking_mail_without_answering_is_not_advised_a_redrive_before_a_check():
    # GIVEN an execution whose batches a halt stopped: rows in a row went unanswered (the
    # halting batch's words, and a sibling's that met the halt)
    halted = (
        "the mail service confirmed no try of 2 rows in a row: it may take messages without"
        " confirming them (rows 2 and 3 failed as OutcomeUnknown: they may have arrived; the"
        " last error: smtp: connection lost during the reply to the message)"
    )
    stopped = Stopped(
        batches=(
            ("AccountSendingHalted", f"send_batch: row 3: {halted}"),
            (
                "AccountSendingHalted",
                f"send_batch: campaign c-1 halted just now by an earlier"
                f" batch: {halted} (a halt holds the campaign's batches for 60 s)",
            ),
        )
    )
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(
        name="e1", arn=arn, status="FAILED", error="States.ExceedToleratedFailureThreshold"
    )

    # WHEN its alert is written
    alert = failure_alert(ending, stopped, redrive="mailmatrix redrive e1")

    # THEN it names the rows in doubt, says to check what arrived before a redrive, and how
    # to send those rows
    assert "rows 2 and 3 failed as OutcomeUnknown" in alert.message
    assert (
        "When to redrive: the mail server took messages without confirming them (it dropped"
        " the connection, or did not answer, after each message): do not redrive yet."
        in alert.message
    )
    assert "send those that did not arrive with --retry-unknown." in alert.message
    assert "redrive now" not in alert.message


@pytest.mark.parametrize(
    "why",
    [
        "it reached the file size limit of this process, 40 KiB (ulimit -f)",
        "the disk holding it is full",
    ],
    ids=["file size limit", "disk full"],
)
def test_a_ledger_that_could_not_be_written_is_advised_room_first_then_a_redrive(why):
    # GIVEN an execution whose batch stopped as its ledger could not be written for want of room
    cause = (
        f"ledger w/ledger.sqlite3: claim 842c41572c68: cannot write the ledger: {why}"
        " (SQLite: disk I/O error)"
    )
    stopped = Stopped(batches=(("LedgerError", cause),))
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(
        name="e1", arn=arn, status="FAILED", error="States.ExceedToleratedFailureThreshold"
    )

    # WHEN its alert is written
    alert = failure_alert(ending, stopped, redrive="mailmatrix redrive e1")

    # THEN it names the ledger and why, says that nothing was sent twice, and to make room
    # before the redrive
    assert f"  LedgerError (1 batch): {cause}\n" in alert.message
    assert (
        "When to redrive: the send ledger could not be written (see above). Nothing was sent"
        " twice: each row is claimed in the ledger before it is sent, so a row whose claim"
        " could not be written was not sent, and a row sent when the ledger could not record it"
        " was kept as sent in a journal beside it (ledger.sqlite3-sent), which a redrive reads:"
        " it is not sent again. First"
        " free space on its disk, or raise the file size limit (ulimit -f), then redrive: rows"
        " recorded as sent are skipped.\n" in alert.message
    )


def test_a_mail_server_that_stopped_while_sending_is_said_to_be_out_of_reach_not_passing():
    # GIVEN a run whose server stopped halfway: its batches gave up connecting
    refused = (
        "smtp 127.0.0.1:2525: connect: [Errno 111] Connection refused: the mail server could"
        " not be reached (is it running, and is the port right?)"
    )
    stopped = Stopped(batches=(("TransientSendError", refused),) * 3)

    # WHEN it says when to redrive
    advice = redrive_advice("FAILED", "States.ExceedToleratedFailureThreshold", "", stopped)

    # THEN it says the server could not be reached and to redrive once it is back, not now
    assert advice == (
        "the mail server could not be reached (see above): is it running, and is the port"
        " right? Redrive once it is back (rows already sent are skipped); a redrive before"
        " that stops the same way."
    )
    timed_out = Stopped(batches=(("TransientSendError", "smtp h: DATA: timed out"),))
    assert "redrive now" in redrive_advice("FAILED", "States.Timeout", "", timed_out)


def test_a_ledger_error_of_another_kind_is_still_a_passing_fault():
    stopped = Stopped(
        batches=(("LedgerError", "ledger w/ledger.sqlite3: claim k: disk I/O error"),)
    )
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(
        name="e1", arn=arn, status="FAILED", error="States.ExceedToleratedFailureThreshold"
    )
    alert = failure_alert(ending, stopped, redrive="mailmatrix redrive e1")
    assert "When to redrive: a passing fault outlasted the retries: redrive now;" in alert.message


@pytest.mark.parametrize(
    ("error", "batches"),
    [
        ("LedgerError", ()),  # ValidateRecipients's own failure: nothing was sent
        ("States.ExceedToleratedFailureThreshold", (("LedgerError", "{cause}"),)),
    ],
    ids=["validation", "batches"],
)
def test_a_ledger_that_cannot_be_written_is_not_advised_as_a_passing_fault(error, batches):
    # GIVEN an execution that stopped as its ledger file was read-only (SQLite's words)
    cause = (
        "ledger /srv/wd/ledger.sqlite3: record_template_sets c-e19a404ef7b93003: attempt to"
        " write a readonly database"
    )
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    stopped = Stopped(batches=tuple((name, text.format(cause=cause)) for name, text in batches))
    ending = Ending(name="e1", arn=arn, status="FAILED", error=error, cause=cause)

    # WHEN its alert is written
    alert = failure_alert(ending, stopped, redrive="mailmatrix redrive e1")

    # THEN it says the ledger cannot be written, what that means, and what to do: not at once
    words = " ".join(alert.message.split())
    assert "When to redrive: the ledger file cannot be written (read-only:" in words
    assert "nothing more was sent once it could not be written" in words
    assert "Make the file writable (chmod u+w; chattr -i, as root, for an immutable one)" in words
    assert "then redrive: rows already sent are skipped." in words
    assert "passing fault outlasted" not in words


def test_an_execution_whose_records_could_not_be_written_is_advised_a_redrive_once_there_is_room():
    # GIVEN an execution the local engine ended as a file of its records hit a size limit
    cause = (
        "cannot write /srv/wd/executions/e1/mapruns/m1/children.jsonl: the file reached the"
        " largest size allowed for a file here, a file size limit such as `ulimit -f` sets"
        " (File too large)"
    )
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(
        name="e1", arn=arn, status="FAILED", error="Engine.RecordsNotWritten", cause=cause
    )

    # WHEN its alert is written
    alert = failure_alert(ending, Stopped(), redrive="mailmatrix redrive e1")

    # THEN it names the file and the limit, says what may be in doubt and when to redrive
    words = " ".join(alert.message.split())
    assert (
        "Error: the engine could not write the execution's records in the workdir"
        " (Engine.RecordsNotWritten)" in words
    )
    assert f"Cause: {cause}" in words
    assert "When to redrive: once the file named above can be written again" in words
    assert "a row counted in doubt may have gone out" in words
    assert alert.subject == "MailMatrix execution FAILED: Engine.RecordsNotWritten"


@pytest.mark.parametrize(
    ("why", "first"),
    [
        (
            "the disk holding it is full (No space left on device)",
            "first free space on its disk, or raise the file size limit (ulimit -f), then",
        ),
        (
            "the file system is read-only (Read-only file system)",
            "first make the file named above and its folder writable (for the ledger, its -wal"
            " and -shm files too; chmod u+w, and chattr -i as root for an immutable one), then",
        ),
    ],
    ids=["no room", "read-only"],
)
def test_a_file_of_the_run_that_could_not_be_written_is_advised_its_fix_before_a_redrive(
    why, first
):
    # GIVEN an execution whose validation could not write the manifest of its valid rows
    cause = f"cannot write /srv/wd/tmp/mailmatrix-manifest-1.jsonl (the manifest...): {why}"
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(name="e1", arn=arn, status="FAILED", error="FileNotWritten", cause=cause)

    # WHEN its alert is written
    alert = failure_alert(ending, Stopped(), redrive="mailmatrix redrive e1")

    # THEN it says what the error means, and to fix the cause before the redrive (it said
    # "fix the cause", or a passing fault)
    words = " ".join(alert.message.split())
    assert "Error: a file of the run could not be written (FileNotWritten)" in words
    assert (
        "When to redrive: a file of the run could not be written (see above), and a redrive"
        f" meets that again until it can be: {first} redrive (rows already sent are skipped)."
        in words
    )


def test_an_outbox_over_the_disk_quota_is_advised_as_an_outbox_not_a_sending_quota():
    # GIVEN an execution halted as its outbox's disk quota was used up
    cause = (
        "maildir /srv/wd/outbox: cannot write 1.M2P3Q4R5.host: the disk quota of this user is"
        " used up (Disk quota exceeded)"
    )
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ending = Ending(
        name="e1", arn=arn, status="FAILED", error="States.ExceedToleratedFailureThreshold"
    )
    stopped = Stopped(batches=(("AccountSendingHalted", cause),))

    # WHEN its alert is written
    alert = failure_alert(ending, stopped, redrive="mailmatrix redrive e1")

    # THEN the advice names the outbox and what to do, not the 24-hour sending quota
    words = " ".join(alert.message.split())
    assert "When to redrive: the outbox /srv/wd/outbox cannot be written" in words
    assert "make room on its disk" in words
    assert "24-hour sending quota" not in words


@pytest.mark.parametrize(
    ("batch_why", "file_why", "ledger_why", "remedy"),
    [
        (
            "database is locked",
            "the file system is read-only (Read-only file system)",
            "attempt to write a readonly database",
            "WRITABLE_REMEDY",
        ),
        (
            "cannot write the ledger: the disk holding it is full (SQLite: disk full)",
            "the disk holding it is full (No space left on device)",
            "cannot write the ledger: the disk holding it is full (SQLite: disk full)",
            "NO_ROOM_REMEDY",
        ),
    ],
    ids=["not writable", "no room"],
)
def test_a_file_of_the_run_that_could_not_be_written_is_advised_one_remedy_wherever_met(
    batch_why, file_why, ledger_why, remedy
):
    from mailmatrix.cli.run_cmd import ledger_remedy
    from mailmatrix.core import failures
    from mailmatrix.errors import LedgerNotWritten

    # GIVEN a batch that sent a letter neither the ledger nor its journal could record,
    # validation that could not write the manifest, and `run` that could not write the ledger
    # as it started
    in_doubt = (
        f"ledger l: record_sent k: {batch_why}; the letter of row 7 was sent but could not be"
        " recorded, nor kept in l-sent (Read-only file system)"
    )
    batches = failures.Stopped(batches=[("LedgerError", in_doubt)])
    arn = "arn:aws:states:eu-west-1:123456789012:execution:m:e1"
    ended = Ending(name="e1", arn=arn, status="FAILED", error="FileNotWritten", cause=file_why)

    # WHEN each says what to do
    said = [
        failures.redrive_advice("FAILED", "States.ExceedToleratedFailureThreshold", "", batches),
        failure_alert(ended, Stopped(), redrive="mailmatrix redrive e1").message,
        ledger_remedy(LedgerNotWritten(f"ledger l: cannot open: {ledger_why}")),
    ]

    # THEN each gives the same remedy, in the same words (each had its own for a file that
    # is not writable)
    for advice in said:
        assert getattr(failures, remedy) in " ".join(str(advice).split()), advice


def test_a_file_without_its_email_column_is_advised_to_fix_the_file_not_the_templates():
    # GIVEN batches stopped as the file is unusable (no Email column)
    stopped = Stopped(batches=[("InputFileError", "recipients.csv: no Email column")])

    # WHEN the advice is made THEN it names the file to fix, and no AWS upload
    advice = redrive_advice("FAILED", "States.ExceedToleratedFailureThreshold", "", stopped)
    assert "fix the file, then run it again" in advice
    assert "upload" not in advice and "Fix the templates" not in advice
