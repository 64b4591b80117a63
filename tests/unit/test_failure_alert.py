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
