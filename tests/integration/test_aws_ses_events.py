"""The SesEvents handler records SES events against ledger entries (DynamoDB in moto)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import boto3
import pytest

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from tests.fixtures.aws import create_ledger_table, fake_aws

ROOT = pathlib.Path(__file__).resolve().parents[2]
EVENT = pathlib.Path(__file__).parent / "events" / "ses_bounce.json"


def load_handler_module():
    """Import functions/ses_events/app.py the way Lambda does: as a file, not a package."""
    path = ROOT / "functions" / "ses_events" / "app.py"
    spec = importlib.util.spec_from_file_location("ses_events_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = load_handler_module()


class Context:
    function_name = "SesEventsFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:SesEventsFunction"
    aws_request_id = "req-1"


@pytest.fixture
def ledger(monkeypatch):
    with fake_aws(monkeypatch, MAILMATRIX_LEDGER="dynamodb://ledger"):
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_ledger_table(client)
        yield DynamoDbLedger("ledger", client)


def bounce_event(message_id: str) -> dict:
    return json.loads(EVENT.read_text().replace("MESSAGE_ID", message_id))


def test_a_bounce_is_recorded_against_the_sent_entry(ledger):
    ledger.claim("k1", campaign="c", row=7, attempt="a1")
    ledger.record_sent("k1", message_id="0100-abc")

    result = app.handler(bounce_event("0100-abc"), Context())

    assert result == {"recorded": True, "event": "Bounce", "message_id": "0100-abc", "row": 7}
    item = boto3.client("dynamodb", region_name="eu-west-1").get_item(
        TableName="ledger", Key={"idempotency_key": {"S": "k1"}}
    )["Item"]
    assert item["delivery"] == {"S": "Bounce"}
    assert item["delivery_detail"] == {"S": "Permanent/General"}
    assert item["state"] == {"S": "sent"}


def test_an_event_for_unknown_mail_is_ignored(ledger):
    result = app.handler(bounce_event("not-ours"), Context())
    assert result == {"recorded": False, "event": "Bounce", "message_id": "not-ours"}


def test_each_event_is_counted_in_an_embedded_metric(ledger, capsys):
    app.handler(bounce_event("not-ours"), Context())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    (emf,) = lines
    assert emf["SesEventUnmatched"] == [1.0]
    assert emf["event"] == "Bounce"
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "MailMatrix"


@pytest.mark.parametrize(
    ("event_type", "detail", "text"),
    [
        ("Complaint", {"complaint": {"complaintFeedbackType": "abuse"}}, "abuse"),
        ("Reject", {"reject": {"reason": "Bad content"}}, "Bad content"),
        ("Delivery", {"delivery": {"recipients": ["a@b.c"]}}, ""),
    ],
)
def test_descriptions_hold_no_addresses(event_type, detail, text):
    assert app.describe(event_type, detail) == text
