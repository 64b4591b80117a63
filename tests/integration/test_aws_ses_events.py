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


KEY = "7f" * 32  # a letter's idempotency key, as the SendEmail call tags the message with it


def tagged_event(event_type: str, message_id: str, key: str = KEY) -> dict:
    """An SES event of ``event_type`` about mail tagged with the letter's ``key``."""
    event = bounce_event(message_id)
    event["detail"]["eventType"] = event_type
    event["detail"]["mail"]["tags"]["mailmatrix-key"] = [key]
    return event


def entry(key: str) -> dict:
    client = boto3.client("dynamodb", region_name="eu-west-1")
    return client.get_item(TableName="ledger", Key={"idempotency_key": {"S": key}})["Item"]


def test_an_event_of_a_row_in_doubt_is_recorded_on_it_by_its_key_without_settling_it(ledger):
    # GIVEN a row claimed by a Lambda that ended as it sent it: no message id recorded
    ledger.claim(KEY, campaign="c", row=4, attempt="a1", lease_until=1.0)
    before = entry(KEY)

    # WHEN SES's Delivery event of the message tagged with its key arrives
    result = app.handler(tagged_event("Delivery", "0100-lost"), Context())

    # THEN it is recorded on the row: the event, its time and SES's message id
    assert result == {"recorded": True, "event": "Delivery", "message_id": "0100-lost", "row": 4}
    item = entry(KEY)
    assert (item["delivery"], item["event_message_id"]) == ({"S": "Delivery"}, {"S": "0100-lost"})
    assert item["delivery_at"]["S"]
    # AND the row stays in doubt, as it was (state, attempt, time of its claim): the operator
    # settles it, seeing the event
    assert (item["state"], item["attempt"], item["updated_at"]) == (
        before["state"],
        before["attempt"],
        before["updated_at"],
    )
    assert "message_id" not in item
    (doubt,) = ledger.doubts("c")
    assert (doubt.event, doubt.event_message_id) == ("Delivery", "0100-lost")


def test_an_event_whose_tag_names_no_letter_falls_back_to_its_message_id(ledger):
    # GIVEN a sent row, and an event tagged with a key the ledger does not hold
    ledger.claim("k1", campaign="c", row=7, attempt="a1")
    ledger.record_sent("k1", message_id="0100-abc")

    result = app.handler(tagged_event("Bounce", "0100-abc", key="0" * 64), Context())

    # THEN the entry is found by its message id, as before the tag
    assert result == {"recorded": True, "event": "Bounce", "message_id": "0100-abc", "row": 7}
    assert entry("k1")["delivery"] == {"S": "Bounce"}


@pytest.mark.parametrize(
    "tags",
    [
        {"mailmatrix-key": ["not-a-key"]},
        {"mailmatrix-key": []},
        {"mailmatrix-key": "7f" * 32},
        {"other": ["7f" * 32]},
        None,
    ],
    ids=["not-hex", "empty", "not-a-list", "other-tag", "no-tags"],
)
def test_a_tag_that_names_no_key_is_not_read_as_one(tags):
    assert app.tagged_key({"messageId": "m", "tags": tags}) is None


def test_a_key_of_another_kind_of_item_is_no_letter(ledger):
    # GIVEN a halt item (no row): a tag naming its key finds no letter
    ledger.halt("c", code="DailyQuota", reason="quota used", attempt="a1")
    assert ledger.letter("halt#c") is None
    assert ledger.letter(KEY) is None


def test_an_event_is_recorded_at_its_own_time_not_the_mail_s(ledger):
    # GIVEN a sent row, and its Bounce (bounced at 10:04:59, the mail sent at 10:04:58)
    ledger.claim("k1", campaign="c", row=7, attempt="a1")
    ledger.record_sent("k1", message_id="0100-abc")

    app.handler(bounce_event("0100-abc"), Context())

    # THEN the bounce's own time is recorded
    assert entry("k1")["delivery_at"] == {"S": "2026-12-04T10:04:59Z"}


@pytest.mark.parametrize(
    ("event_type", "detail", "at"),
    [
        ("Delivery", {"delivery": {"timestamp": "T-delivered"}}, "T-delivered"),
        ("Complaint", {"complaint": {"timestamp": "T-complained"}}, "T-complained"),
        ("DeliveryDelay", {"deliveryDelay": {"timestamp": "T-delayed"}}, "T-delayed"),
        ("Bounce", {"bounce": {"bounceType": "Transient"}}, "T-sent"),  # none of its own
        ("Send", {"send": {}}, "T-sent"),
        ("Reject", {"reject": {"reason": "Bad content"}}, "T-sent"),
    ],
)
def test_an_event_s_time_is_its_own_else_the_mail_s(event_type, detail, at):
    assert app.event_time(event_type, {**detail, "mail": {"timestamp": "T-sent"}}) == at
