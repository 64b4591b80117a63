"""Each function given a malformed event stops with one error naming the part, before it does
anything (SesEvents skips the event, saying why), instead of a KeyError or TypeError."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import boto3
import pytest

from functions.alert import app as alert_app
from functions.send_batch import app as send_batch_app
from functions.ses_events import app as ses_events_app
from functions.summarize import app as summarize_app
from functions.validate import app as validate_app
from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.engine.registry import make_context
from mailmatrix.errors import ConfigurationError, InputFileError
from tests.fixtures.aws import create_ledger_table, fake_aws

BOUNCE = pathlib.Path(__file__).parent / "events" / "ses_bounce.json"
NOT_VALIDATED = (
    ": not the Validate function's event (an S3 Object Created event's detail); nothing was"
    " sent. A campaign starts when its file is uploaded under incoming/ (mailmatrix aws send"
    " FILE.csv --stack NAME)."
)
NOT_A_BATCH = ": not a SendBatch event (a batch of the state machine's Map); nothing was sent."
NOT_SUMMARIZED = (
    ": not a Summarize event (the campaign, its counts and its Map Run); no report was written"
)
NO_ALERT = ": not a Step Functions Execution Status Change event; no alert was published."
DETAIL = {"bucket": {"name": "mailmatrix-bucket"}, "object": {"key": "incoming/offers.csv"}}
CAMPAIGN = {"id": "c-1", "source": {"bucket": "mailmatrix-bucket"}, "templates_prefix": "t/"}
ARN = "arn:aws:states:eu-west-1:123456789012:execution:mailmatrix:run-1"


@pytest.fixture(autouse=True)
def account(monkeypatch):
    with fake_aws(monkeypatch, MAILMATRIX_LEDGER="dynamodb://ledger"):
        yield


def _call(handler: Any, event: Any) -> Any:
    return handler(event, make_context("Function", None, 60))


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({}, "detail is missing"),
        ({"detail": None}, "detail is missing"),
        ({"detail": "incoming/offers.csv"}, "detail is a text, not a mapping"),
        ({"detail": {"object": {"key": "k"}}}, "detail.bucket is missing"),
        ({"detail": {**DETAIL, "object": {"key": 7}}}, "detail.object.key is a number, not a text"),
        ({"detail": {**DETAIL, "object": ["k"]}}, "detail.object is a list, not a mapping"),
        ({"detail": DETAIL, "execution": {"id": 1}}, "execution is a mapping, not a text"),
    ],
    ids=["empty", "null-detail", "text-detail", "no-bucket", "number-key", "list-object", "exec"],
)
def test_validate_names_the_malformed_part_and_sends_nothing(event, problem):
    with pytest.raises(InputFileError) as raised:
        _call(validate_app.handler, event)

    assert raised.value.message == f"event: {problem}{NOT_VALIDATED}"


SEND_BATCH = send_batch_app.handler, NOT_A_BATCH
SUMMARIZE = summarize_app.handler, NOT_SUMMARIZED


@pytest.mark.parametrize(
    ("function", "event", "problem"),
    [
        (SEND_BATCH, {}, "BatchInput is missing"),
        (SEND_BATCH, {"BatchInput": {}}, "BatchInput.campaign is missing"),
        (SEND_BATCH, {"BatchInput": {"campaign": CAMPAIGN}}, "Items is missing"),
        (
            SEND_BATCH,
            {"BatchInput": {"campaign": CAMPAIGN}, "Items": {}},
            "Items is a mapping, not a list",
        ),
        (
            SEND_BATCH,
            {"BatchInput": {"campaign": {**CAMPAIGN, "source": None}}, "Items": []},
            "BatchInput.campaign.source is missing",
        ),
        (
            SEND_BATCH,
            {"BatchInput": {"campaign": CAMPAIGN}, "Items": [], "owner": 3},
            "owner is a number, not a text",
        ),
        (SUMMARIZE, {"campaign": None}, "campaign is missing"),
        (SUMMARIZE, {"campaign": CAMPAIGN}, "counts is missing"),
        (
            SUMMARIZE,
            {"campaign": CAMPAIGN, "counts": {}, "send": []},
            "send is a list, not a mapping",
        ),
        (SUMMARIZE, {"campaign": {"id": 5}}, "campaign.id is a number, not a text"),
    ],
    ids=[
        "batch-empty",
        "batch-no-campaign",
        "batch-no-items",
        "batch-items-mapping",
        "batch-null-source",
        "batch-number-owner",
        "summary-null-campaign",
        "summary-no-counts",
        "summary-list-send",
        "summary-number-id",
    ],
)
def test_the_map_s_functions_name_the_malformed_part_and_do_nothing(function, event, problem):
    handler, said = function
    with pytest.raises(ConfigurationError) as raised:
        _call(handler, event)

    assert raised.value.message.startswith(f"event: {problem}{said}")


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({}, "detail is missing"),
        ({"detail": {"status": "FAILED"}}, "detail.executionArn is missing"),
        ({"detail": {"executionArn": "run-1"}}, "detail.executionArn is not an execution's ARN"),
        ({"detail": {"executionArn": ARN, "cause": {}}}, "detail.cause is a mapping, not a text"),
    ],
    ids=["empty", "no-arn", "not-an-arn", "mapping-cause"],
)
def test_alert_names_the_malformed_part_and_publishes_nothing(event, problem, monkeypatch):
    monkeypatch.setenv("MAILMATRIX_ALERT_TOPIC", "arn:aws:sns:eu-west-1:123456789012:alerts")

    with pytest.raises(ConfigurationError) as raised:
        _call(alert_app.handler, event)

    assert raised.value.message.startswith(f"event: {problem}{NO_ALERT} ")


def _bounce(**detail: Any) -> dict[str, Any]:
    event = json.loads(BOUNCE.read_text().replace("MESSAGE_ID", "0100-abc"))
    event["detail"].update(detail)
    return event


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({**_bounce(), "detail": None}, "detail is missing"),
        ({**_bounce(), "detail": "Bounce"}, "detail is a text, not a mapping"),
        (_bounce(mail=None), "detail.mail is missing"),
        (_bounce(mail={"messageId": ["0100-abc"]}), "detail.mail.messageId is a list, not a text"),
        (_bounce(eventType=["Bounce"]), "detail.eventType is a list, not a text"),
    ],
    ids=["null-detail", "text-detail", "null-mail", "list-message-id", "list-type"],
)
def test_ses_events_skips_a_malformed_event_saying_why(event, problem, caplog):
    # GIVEN a sent entry whose message id the event would name
    ledger = DynamoDbLedger("ledger", create_table())
    ledger.claim("k1", campaign="c", row=7, attempt="a1")
    ledger.record_sent("k1", message_id="0100-abc")

    # WHEN the malformed event arrives
    result = _call(ses_events_app.handler, event)

    # THEN it is skipped with a warning naming the part, and the entry is left as it was
    reason = (
        f"event: {problem}: not an SES event of the configuration set; nothing was recorded,"
        " and it is not retried."
    )
    assert result == {"recorded": False, "event": "Malformed", "message_id": "", "reason": reason}
    [warning] = [line for line in caplog.records if line.levelname == "WARNING"]
    assert (warning.getMessage(), warning.reason) == ("SES event malformed: skipped", reason)
    item = boto3.client("dynamodb").get_item(
        TableName="ledger", Key={"idempotency_key": {"S": "k1"}}
    )["Item"]
    assert "delivery" not in item


def create_table():
    client = boto3.client("dynamodb")
    create_ledger_table(client)
    return client
