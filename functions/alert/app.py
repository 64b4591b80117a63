"""Alert: tell the operators why an execution failed, timed out or was aborted, and when a
redrive makes sense.

The stack's ExecutionAlertRule sends each such "Step Functions Execution Status Change" here.
The definition has no Catch (a redrive resumes at the state that failed, which a Catch would
turn into its own final state), so the execution's error is the Map's
States.ExceedToleratedFailureThreshold when batches failed: this function reads the failed
batches' own errors and publishes them with the advice to the alerts topic.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from mailmatrix.adapters import _aws
from mailmatrix.adapters.executions_sfn import console_link, ending, stopped_batches
from mailmatrix.adapters.notifier_sns import SnsNotifier
from mailmatrix.core.failures import Stopped, failure_alert
from mailmatrix.errors import ConfigurationError
from mailmatrix.events import EventShape
from mailmatrix.settings import Settings

logger = Logger(service="mailmatrix")

STATUS_CHANGE = EventShape(
    what="a Step Functions Execution Status Change event",
    error=ConfigurationError,
    after="no alert was published. The stack's ExecutionAlertRule sends these: invoke the"
    " function with such an event's whole body, detail and region included.",
)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Publish the alert for the execution in ``event["detail"]``."""
    detail = STATUS_CHANGE.part(event, "detail", dict)
    arn = STATUS_CHANGE.part(event, "detail.executionArn", str)
    if not arn.startswith("arn:") or arn.count(":") < 6:
        raise STATUS_CHANGE.malformed("detail.executionArn is not an execution's ARN")
    for name in ("name", "status", "error", "cause"):
        STATUS_CHANGE.part(event, f"detail.{name}", str, optional=True)
    region = STATUS_CHANGE.part(event, "region", str, optional=True) or arn.split(":")[3]
    ended = ending(detail)
    logger.append_keys(execution=ended.name, status=ended.status)
    stopped = Stopped()
    reading_failed = ""
    if ended.status == "FAILED":
        try:
            stopped = stopped_batches(_aws.client("stepfunctions"), ended.arn)
        except Exception as error:  # the alert goes out all the same, saying so
            logger.exception("Batches not read")
            reading_failed = f"{type(error).__name__}: {str(error)[:300]}"
    stack = Settings.from_env().stack
    notification = failure_alert(
        ended,
        stopped,
        redrive=f"mailmatrix aws redrive {ended.arn} --stack {stack}",
        console=console_link(region, ended.arn),
    )
    if reading_failed:
        notification.message += f"(The failed batches could not be read: {reading_failed})\n"
    message_id = SnsNotifier().publish(os.environ["MAILMATRIX_ALERT_TOPIC"], notification)
    logger.info("Alert published", failed_batches=len(stopped.batches) + stopped.unseen)
    return {"published": message_id, "subject": notification.subject}
