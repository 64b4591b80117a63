"""SesEvents: record SES configuration-set events (delivery, bounce, complaint...) in the ledger.

SES publishes each event to EventBridge; the rule in infra/template.yaml sends those of the
MailMatrix configuration set here. The letter's idempotency key, which SendBatch tags each
message with (mail.tags, ports.KEY_TAG), finds the entry, a row in doubt too (its message
id was never recorded): the event is recorded on it, and `aws settle` shows it, but it does not
settle the row. Mail sent before the tag existed is found by its SES message id (record_sent).
"""

from __future__ import annotations

import re
from contextlib import closing
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mailmatrix.adapters.wiring import ledger_from
from mailmatrix.errors import MailMatrixError
from mailmatrix.events import EventShape
from mailmatrix.ports import KEY_TAG
from mailmatrix.settings import Settings

logger = Logger(service="mailmatrix")
metrics = Metrics(namespace="MailMatrix", service="mailmatrix")


SES_EVENT = EventShape(
    what="an SES event of the configuration set",
    error=MailMatrixError,  # said in the log, not raised: see handler
    after="nothing was recorded, and it is not retried.",
)


_KEY = re.compile(r"[0-9a-f]{64}")  # core.send.idempotency_key's hex digest


# The part of an SES event that holds its own time (``timestamp``), by event type; the others
# (Send, Reject, Rendering Failure) happen as the mail is sent.
_EVENT_PARTS = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
}


def _part(detail: dict[str, Any], name: str) -> dict[str, Any]:
    """``detail[name]`` when it is a mapping, else an empty one."""
    found = detail.get(name)
    return found if isinstance(found, dict) else {}


def describe(event_type: str, detail: dict[str, Any]) -> str:
    """Return a short, address-free description of an SES event for the ledger."""
    if event_type == "Bounce":
        bounce = _part(detail, "bounce")
        return f"{bounce.get('bounceType', '?')}/{bounce.get('bounceSubType', '?')}"
    if event_type == "Complaint":
        return str(_part(detail, "complaint").get("complaintFeedbackType", "complaint"))
    if event_type == "Reject":
        return str(_part(detail, "reject").get("reason", "rejected"))
    if event_type == "DeliveryDelay":
        return str(_part(detail, "deliveryDelay").get("delayType", "delayed"))
    if event_type == "Rendering Failure":
        return str(_part(detail, "failure").get("errorMessage", "rendering failure"))[:200]
    return ""


def malformed(event: Any) -> str | None:
    """Why ``event`` is no SES event that can be recorded (None when it is one)."""
    try:
        for name in ("eventType", "notificationType", "mail.timestamp"):
            SES_EVENT.part(event, f"detail.{name}", str, optional=True)
        SES_EVENT.part(event, "detail.mail.messageId", str)
    except MailMatrixError as error:
        return error.message
    return None


def tagged_key(mail: dict[str, Any]) -> str | None:
    """The idempotency key the mail was tagged with (``mail.tags[KEY_TAG][0]``), or None."""
    tags = mail.get("tags")
    values = tags.get(KEY_TAG) if isinstance(tags, dict) else None
    key = values[0] if isinstance(values, list) and values else None
    return key if isinstance(key, str) and _KEY.fullmatch(key) else None


def event_time(event_type: str, detail: dict[str, Any]) -> str:
    """When the event itself happened (a bounce's, a delivery's own timestamp), else when the
    mail was sent (mail.timestamp)."""
    own = _part(detail, _EVENT_PARTS.get(event_type, "")).get("timestamp")
    if isinstance(own, str) and own:
        return own
    return str(_part(detail, "mail").get("timestamp") or "")


def record(detail: dict[str, Any], ledger: Any) -> dict[str, Any]:
    """Record one SES event detail (see malformed) against its ledger entry, found by the
    letter's key the mail was tagged with, else by its message id; return what was done."""
    event_type = str(detail.get("eventType") or detail.get("notificationType") or "Unknown")
    mail = detail["mail"]
    message_id = mail["messageId"]
    key = tagged_key(mail)
    entry = ledger.letter(key) if key else None
    if entry is None:
        entry = ledger.find_by_message_id(message_id)
    if entry is None:
        return {"recorded": False, "event": event_type, "message_id": message_id}
    ledger.record_event(
        entry.key,
        event_type=event_type,
        timestamp=event_time(event_type, detail),
        detail=describe(event_type, detail),
        message_id=message_id,
    )
    return {"recorded": True, "event": event_type, "message_id": message_id, "row": entry.row}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Record the SES event carried by the EventBridge ``event``; skip a malformed one."""
    problem = malformed(event)
    if problem is not None:
        # Not SES's: nothing to match it with, and a retry would meet it again.
        logger.warning("SES event malformed: skipped", reason=problem)
        metrics.add_metric(name="SesEventMalformed", unit=MetricUnit.Count, value=1)
        return {"recorded": False, "event": "Malformed", "message_id": "", "reason": problem}
    with closing(ledger_from(Settings.from_env())) as ledger:
        result = record(event["detail"], ledger)
    name = "SesEventRecorded" if result["recorded"] else "SesEventUnmatched"
    metrics.add_dimension(name="event", value=result["event"])
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    if result["recorded"]:
        logger.info("SES event recorded", event_type=result["event"], row=result["row"])
    else:
        # Mail sent outside MailMatrix through the same configuration set, or an entry
        # already expired: nothing to record, nothing to retry.
        logger.info("SES event without ledger entry", event_type=result["event"])
    return result
