"""Lambda errors that Step Functions reports for an invocation the function did not answer
(Lambda.Unknown: the function crashed, ran out of memory or hit its own timeout) or that the
Lambda service raised are retried by every Lambda task, with backoff, on the real definition.

AWS's advice: https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html
(the local engine reports a worker process that died as Lambda.Unknown, see engine/registry.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailmatrix.engine.registry import WORKER_DIED, resolve_handler
from mailmatrix.local import DEFINITION
from tests.e2e import test_aws_adapters_e2e as e2e

LAMBDA_ERRORS = {
    "Lambda.Unknown",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def lambda_tasks(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state of the definition (Map processors included) that invokes a function."""
    found = {}
    for name, state in states.items():
        if state.get("Resource") == "arn:aws:states:::lambda:invoke":
            found[name] = state
        if "ItemProcessor" in state:
            found.update(lambda_tasks(state["ItemProcessor"]["States"]))
    return found


def test_every_lambda_task_retries_the_lambda_errors_with_backoff():
    # GIVEN the definition's Lambda tasks WHEN their retriers are read
    tasks = lambda_tasks(json.loads(DEFINITION.read_text(encoding="utf-8"))["States"])
    assert set(tasks) == {"ValidateRecipients", "SendBatch", "Summarize"}
    for name, task in tasks.items():
        retried = {
            error: retrier
            for retrier in task["Retry"]
            for error in retrier["ErrorEquals"]
            if error in LAMBDA_ERRORS
        }
        # THEN each retries every one of them, waiting longer each time
        assert set(retried) == LAMBDA_ERRORS, name
        for error, retrier in retried.items():
            assert retrier["MaxAttempts"] >= 2 and retrier["BackoffRate"] > 1, (name, error)
            assert retrier["IntervalSeconds"] >= 1, (name, error)


class LambdaFailed(Exception):
    """An invocation that fails the way Step Functions names ``asl_error``, not by a raise of
    the function's own (the engine reports ``asl_error`` as the task's error)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"simulated {error}")
        self.asl_error = error


@pytest.mark.parametrize("function", ["ValidateFunction", "SendBatchFunction", "SummarizeFunction"])
@pytest.mark.parametrize("error", [WORKER_DIED, "Lambda.ClientExecutionTimeoutException"])
def test_a_function_that_fails_once_this_way_is_retried_and_the_campaign_completes(
    account,
    function,
    error,
):
    from moto.ses.models import ses_backends

    # GIVEN the first invocation of ``function`` fails with ``error``
    failed: list[str] = []

    def wrap(name: str, handler: str) -> Any:
        real = resolve_handler(handler)

        def invoke(event: dict[str, Any], context: Any) -> Any:
            if name == function and not failed:
                failed.append(name)
                raise LambdaFailed(error)
            return real(event, context)

        return invoke

    # WHEN the campaign runs
    waits: list[float] = []
    record = e2e.run_on_engine(account, "incoming/offers.csv", wrap=wrap, sleep=waits.append)

    # THEN the task was tried again after a wait, and every valid row was sent once
    assert failed == [function]
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert len(waits) == 1
    assert len(ses_backends[e2e.ACCOUNT][e2e.REGION].sent_messages) == 18
