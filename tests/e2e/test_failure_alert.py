"""The failure alert says why sending stopped and when a redrive makes sense.

The real definition runs on the local engine with the AWS adapters (moto); the stack's Alert
function then gets the execution's status change as ExecutionAlertRule sends it, reads the
failed batches through Step Functions' API (answered from the engine's store) and publishes
to the alerts topic.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions.alert import app as alert_app
from mailmatrix.adapters import _aws
from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.engine.registry import make_context
from tests.e2e import test_aws_adapters_e2e as e2e
from tests.fixtures.engine_sfn import EngineStepFunctions

QUOTA_RUN = {"MAILMATRIX_FAULTS": "quota-after=5", "MAILMATRIX_BATCH_SIZE": "5"}


def status_change(record: dict[str, Any]) -> dict[str, Any]:
    """The "Step Functions Execution Status Change" event of a finished execution."""
    keys = ("executionArn", "stateMachineArn", "name", "status", "error", "cause")
    return {
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "region": e2e.REGION,
        "account": e2e.ACCOUNT,
        "detail": {key: record.get(key) for key in keys},
    }


def alert(
    moto: dict[str, Any], record: dict[str, Any], monkeypatch, sfn: Any = None
) -> dict[str, Any]:
    """Run the Alert function on ``record``'s status change in the ``moto`` account; return
    the message published."""
    engine = Engine(moto["tmp"] / "executions", ResourceRegistry())
    stand_in = sfn or EngineStepFunctions(engine)
    real_client = _aws.client
    monkeypatch.setattr(
        _aws,
        "client",
        lambda service, **options: (
            stand_in if service == "stepfunctions" else real_client(service, **options)
        ),
    )
    monkeypatch.setenv("MAILMATRIX_ALERT_TOPIC", moto["topics"]["AlertTopic"])
    monkeypatch.setenv("MAILMATRIX_STACK", e2e.STACK)
    alert_app.handler(status_change(record), make_context("AlertFunction", None, 60))
    (published,) = e2e.received(moto, "AlertTopic")
    return published


def assert_no_stack_trace(text: str) -> None:
    for trace in ("stackTrace", "Traceback", 'File "', ".py"):
        assert trace not in text


def test_when_the_quota_runs_out_the_alert_says_so_and_to_wait(account, monkeypatch):
    # GIVEN a campaign whose account runs out of daily quota after 5 messages
    record = e2e.run_on_engine(account, "incoming/offers.csv", settings=QUOTA_RUN)
    assert (record["status"], record["error"]) == (
        "FAILED",
        "States.ExceedToleratedFailureThreshold",
    )

    # WHEN its status change reaches the Alert function
    published = alert(account, record, monkeypatch)

    # THEN the alert names the batches' error and its reason, not only the Map's threshold
    message = published["Message"]
    assert published["Subject"] == "MailMatrix execution FAILED: AccountSendingHalted"
    assert message.startswith(f"MailMatrix execution {record['name']} ended FAILED.\n")
    assert (
        "Error: more batches of rows failed than the campaign tolerates"
        " (States.ExceedToleratedFailureThreshold)" in message
    )
    assert "Why sending stopped:\n  AccountSendingHalted (" in message
    assert "Daily message quota exceeded" in message
    # AND says that the quota ran out in a drill (the account's is not used up: no 24-hour
    # wait), and how to go on
    assert "When to redrive: the daily quota ran out in a drill (--faults quota-after)" in message
    assert "24-hour" not in message
    arn = record["executionArn"]
    assert f"Redrive: mailmatrix aws redrive {arn} --stack {e2e.STACK}" in message
    assert f"#/v2/executions/details/{arn}" in message
    assert_no_stack_trace(message)


def test_a_failed_preflight_alert_gives_the_message_without_a_stack_trace(
    account,
    monkeypatch,
):
    # GIVEN a run refused by the SES preflight (the sender is not verified): the execution's
    # cause is Lambda's error document, stack trace and file paths included
    record = e2e.run_on_engine(account, "incoming/offers.csv", sender="Other <hr@example.net>")
    assert record["error"] == "AccountSendingHalted"
    assert "stackTrace" in record["cause"]

    # WHEN it is alerted THEN the alert gives the error's message alone, and the advice
    message = alert(account, record, monkeypatch)["Message"]
    assert "Cause: ses preflight: sender identity: neither the address nor" in message
    assert "When to redrive: the account could not send" in message
    assert "Why sending stopped" not in message
    assert_no_stack_trace(message)


class RefusingStepFunctions:
    """A Step Functions client the Alert function's role lets do nothing."""

    def __getattr__(self, operation: str) -> Any:
        def refuse(**params: Any) -> Any:
            error = {"Code": "AccessDeniedException", "Message": "not authorized"}
            raise ClientError({"Error": error}, operation)

        return refuse


def test_the_alert_goes_out_when_the_batches_cannot_be_read(account, monkeypatch):
    record = e2e.run_on_engine(account, "incoming/offers.csv", settings=QUOTA_RUN)

    message = alert(account, record, monkeypatch, sfn=RefusingStepFunctions())["Message"]

    assert (
        "Error: more batches of rows failed than the campaign tolerates"
        " (States.ExceedToleratedFailureThreshold)" in message
    )
    assert "(The failed batches could not be read: ClientError:" in message
    assert "AccessDeniedException" in message
    assert f"mailmatrix aws redrive {record['executionArn']}" in message


@pytest.mark.parametrize(
    ("error", "cause", "advice"),
    [
        ("Throttled", "ses: Throttling: Maximum sending rate exceeded.", "redrive in a few"),
        ("Lambda.Unknown", "SendBatchFunction: the process died", "redrive now"),
        ("ClaimBusy", "send_batch: invocation r-1 is still sending", "once it has ended"),
        (
            "AccountSendingHalted",
            "send_batch: row 7: account cannot send: ses: Daily message quota exceeded.",
            "the 24-hour sending quota is used up",
        ),
        (
            "AccountSendingHalted",
            "send_batch: campaign c-1 halted 9 s ago by an earlier batch: ses: Daily message"
            " quota exceeded. (a halt holds the campaign's batches for 60 s; a redrive lifts it"
            " at once)",
            "the 24-hour sending quota is used up",
        ),
        (
            "AccountSendingHalted",
            "send_batch: campaign c-1 halted 9 s ago by an earlier batch: faults:"
            " quota-after=5: Daily message quota exceeded. (a halt holds the campaign's batches"
            " for 60 s; a redrive lifts it at once)",
            "ran out in a drill (--faults quota-after), not in the account: to send the rest,"
            " run the file again without --faults",
        ),
    ],
    ids=["throttled", "died", "busy", "quota", "quota-held", "drill-quota-held"],
)
def test_the_advice_follows_the_batches_error(error, cause, advice):
    from mailmatrix.core.failures import THRESHOLD_EXCEEDED, Stopped, redrive_advice

    stopped = Stopped(batches=((error, cause),))
    assert advice in redrive_advice("FAILED", THRESHOLD_EXCEEDED, "exceeded", stopped)


DRILL_HALT = (
    "AccountSendingHalted",
    "send_batch: row 5: account cannot send: faults: quota-after=4: Daily message quota exceeded.",
)


@pytest.mark.parametrize(
    ("real", "advice"),
    [
        (
            "send_batch: row 3: account cannot send: smtp 127.0.0.1:2525: DATA: 452 4.3.1 Daily"
            " message quota exceeded",
            "the 24-hour sending quota is used up",
        ),
        (
            "send_batch: campaign c-1 halted 1 s ago by an earlier batch: smtp 127.0.0.1:2525:"
            " DATA: 452 4.3.1 Daily message quota exceeded (a halt holds the campaign's batches"
            " for 60 s; a redrive lifts it at once)",
            "the 24-hour sending quota is used up",
        ),
        (
            "send_batch: row 3: account cannot send: smtp 127.0.0.1:2525: AUTH: 535 5.7.8"
            " Authentication credentials invalid",
            "the mail server would not take mail from this run (see above: its login",
        ),
    ],
    ids=["real-quota", "held-by-real-quota", "real-auth"],
)
def test_an_accounts_own_halt_beside_a_drills_quota_is_not_called_the_drills(real, advice):
    from mailmatrix.core.failures import THRESHOLD_EXCEEDED, Stopped, redrive_advice

    # GIVEN a run whose batches met both a drill's used-up quota and the account's own halt,
    # in either order (the ledger keeps the halt recorded last, which may be the account's)
    for batches in (
        (DRILL_HALT, ("AccountSendingHalted", real)),
        (("AccountSendingHalted", real), DRILL_HALT),
    ):
        stopped = Stopped(batches=batches)

        # WHEN the advice is given THEN it is the account's (it said to run the file again
        # without --faults, and that run was held by the account's halt)
        said = redrive_advice("FAILED", THRESHOLD_EXCEEDED, "exceeded", stopped)
        assert said.startswith(advice), said
        assert "drill" not in said
