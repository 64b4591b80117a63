"""The failure alert's subject says why the execution ended, whatever ended it."""

from __future__ import annotations

import pytest

from mailmatrix.core.failures import Ending, Stopped, failure_alert


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
        "When to redrive: once a mail server listens at that host and port: a redrive connects"
        " to the same one (for another host or port, a mistyped name, run the file again with"
        " its URL)." in alert.message
    )
    assert "redrive now" not in alert.message
