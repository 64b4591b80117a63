"""DynamoDbLedger against moto, on a table created from infra/template.yaml's definition."""

from __future__ import annotations

import hashlib
import sys
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.adapters.mailer_fake_ses import FakeSes
from mailmatrix.core.addresses import mask
from mailmatrix.core.contents import sample_print
from mailmatrix.core.send import recipient_key, send_batch
from mailmatrix.errors import LedgerError, LedgerNotWritten
from mailmatrix.ports import SENDING, SENT, Claim, FileOwner, LetterFile, LetterPrint
from tests.fixtures.aws import create_ledger_table, fake_aws
from tests.fixtures.sending import kit
from tests.fixtures.sending.ledger_contract import (
    OTHER_LETTER_CASES,
    PRINT_CHECKS,
    PRINT_WAYS,
    SET_CHECKS,
    check_attachment_owner,
    check_attachment_owner_rules,
    check_batch_holds,
    check_campaign_status,
    check_doubts_and_settle,
    check_earlier_recipients,
    check_exclusive_claim,
    check_exclusive_claim_order,
    check_file_owners,
    check_file_owners_by_state,
    check_latest_upload,
    check_names,
    check_outcomes_of,
    check_release_failed,
    check_sent_copies,
    check_settled_keys,
    check_template_sets,
    check_unanswered,
)
from tests.integration.test_drills import retrier_for, send_batch_retriers


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def aws(monkeypatch):
    with fake_aws(monkeypatch):
        yield


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(aws, clock):
    client = boto3.client("dynamodb", region_name="eu-west-1")
    return DynamoDbLedger(create_ledger_table(client), client, clock=clock)


def test_a_new_key_is_claimed_then_sent_then_skipped(ledger):
    assert ledger.claim("k1", campaign="c", row=2, attempt="a1") == Claim("claimed")
    ledger.record_sent("k1", message_id="m-1")
    assert ledger.claim("k1", campaign="c", row=2, attempt="a2") == Claim(
        "sent", message_id="m-1", attempt="a1"
    )


def test_a_live_claim_of_another_attempt_is_busy(ledger):
    ledger.claim("k1", campaign="c", row=2, attempt="a1")
    claim = ledger.claim("k1", campaign="c", row=2, attempt="a2")
    assert claim.state == "busy"
    assert claim.attempt == "a1"


def test_the_same_attempt_takes_over_its_dead_predecessor_at_once(ledger):
    ledger.claim("k1", campaign="c", row=2, attempt="a1")
    claim = ledger.claim("k1", campaign="c", row=2, attempt="a1")
    assert claim == Claim("claimed", reason="taken over from attempt a1", attempt="a1")
    assert ledger.outcomes("c")[0].takeovers == 1


def test_another_attempt_takes_over_once_the_lease_has_passed(ledger, clock):
    ledger.claim("k1", campaign="c", row=2, attempt="a1", lease_until=clock.now + 30)
    clock.now += 31
    claim = ledger.claim("k1", campaign="c", row=2, attempt="a2")
    assert claim.state == "claimed"
    assert claim.attempt == "a1"


def test_a_permanent_failure_is_kept_and_a_transient_one_releases(ledger):
    ledger.claim("k1", campaign="c", row=2, attempt="a1")
    ledger.record_failed("k1", code="MessageRejected", reason="not verified", permanent=True)
    assert ledger.claim("k1", campaign="c", row=2, attempt="a2") == Claim(
        "failed", code="MessageRejected", reason="not verified", attempt="a1"
    )

    ledger.claim("k2", campaign="c", row=3, attempt="a1")
    ledger.record_failed("k2", code="Throttled", reason="slow down", permanent=False)
    assert ledger.claim("k2", campaign="c", row=3, attempt="a2") == Claim("claimed")


def test_a_failure_never_overwrites_a_sent_entry(ledger):
    ledger.claim("k1", campaign="c", row=2, attempt="a1")
    ledger.record_sent("k1", message_id="m-1")
    ledger.record_failed("k1", code="Timeout", reason="late", permanent=False)
    assert ledger.claim("k1", campaign="c", row=2, attempt="a2").state == "sent"


def test_recording_an_unknown_key_is_an_error(ledger):
    with pytest.raises(LedgerError, match="no such entry"):
        ledger.record_sent("nope", message_id="m")


def test_outcomes_list_the_campaign_by_row_and_find_by_message_id(ledger):
    for key, row in (("k3", 3), ("k2", 2), ("other", 2)):
        ledger.claim(key, campaign="c" if key != "other" else "d", row=row, attempt="a1")
    ledger.record_sent("k2", message_id="m-2")
    ledger.record_failed("k3", code="MessageRejected", reason="bad", permanent=True)

    outcomes = ledger.outcomes("c")
    assert [(o.key, o.row, o.state, o.message_id, o.code) for o in outcomes] == [
        ("k2", 2, "sent", "m-2", None),
        ("k3", 3, "failed", None, "MessageRejected"),
    ]
    assert ledger.find_by_message_id("m-2").key == "k2"
    assert ledger.find_by_message_id("m-unknown") is None


def test_halts_are_recorded_read_and_cleared(ledger, clock):
    assert ledger.halted("c") is None
    halt = ledger.halt("c", code="DailyQuota", reason="quota used", attempt="a1")
    assert halt.at == clock.now
    assert ledger.halted("c") == halt
    assert ledger.outcomes("c") == []  # a halt is not an email
    ledger.clear_halt("c")
    assert ledger.halted("c") is None


def test_events_are_recorded_against_the_entry(ledger):
    ledger.claim("k1", campaign="c", row=2, attempt="a1")
    ledger.record_sent("k1", message_id="m-1")
    ledger.record_event("k1", event_type="Delivery", timestamp="2026-12-04T10:00:00Z")
    ledger.record_event("k1", event_type="Bounce", timestamp="2026-12-04T10:05:00Z", detail="x")
    item = boto3.client("dynamodb", region_name="eu-west-1").get_item(
        TableName="ledger", Key={"idempotency_key": {"S": "k1"}}
    )["Item"]
    assert item["delivery"] == {"S": "Bounce"}
    assert sorted(item["events"]["SS"]) == ["Bounce", "Delivery"]
    assert item["state"] == {"S": "sent"}


def test_a_late_event_leaves_a_more_final_delivery_state(ledger):
    # GIVEN a sent entry whose Bounce is recorded
    ledger.claim("k1", campaign="c", row=2, attempt="a1")
    ledger.record_sent("k1", message_id="m-1")
    ledger.record_event(
        "k1", event_type="Bounce", timestamp="2026-12-04T10:05:00Z", detail="Permanent/NoEmail"
    )

    # WHEN the Send and Delivery events arrive after it (EventBridge does not order them)
    ledger.record_event("k1", event_type="Send", timestamp="2026-12-04T10:00:00Z")
    ledger.record_event("k1", event_type="Delivery", timestamp="2026-12-04T10:01:00Z")

    # THEN the entry still says Bounce, with its time and detail, and lists every event
    item = boto3.client("dynamodb", region_name="eu-west-1").get_item(
        TableName="ledger", Key={"idempotency_key": {"S": "k1"}}
    )["Item"]
    assert (item["delivery"], item["delivery_at"], item["delivery_detail"]) == (
        {"S": "Bounce"},
        {"S": "2026-12-04T10:05:00Z"},
        {"S": "Permanent/NoEmail"},
    )
    assert sorted(item["events"]["SS"]) == ["Bounce", "Delivery", "Send"]

    # AND a Complaint, as final as a Bounce, is recorded over it
    ledger.record_event("k1", event_type="Complaint", timestamp="2026-12-04T11:00:00Z")
    assert ledger_item(ledger, "k1")["delivery"] == {"S": "Complaint"}


def test_an_event_for_a_missing_entry_is_a_ledger_error(ledger):
    with pytest.raises(LedgerError, match="no such entry"):
        ledger.record_event("absent", event_type="Send", timestamp="2026-12-04T10:00:00Z")


def ledger_item(ledger, key):
    client = boto3.client("dynamodb", region_name="eu-west-1")
    return client.get_item(TableName=ledger.table, Key={"idempotency_key": {"S": key}})["Item"]


def test_a_missing_table_is_a_ledger_error(aws):
    ledger = DynamoDbLedger("absent", boto3.client("dynamodb", region_name="eu-west-1"))
    with pytest.raises(LedgerError, match="dynamodb://absent"):
        ledger.claim("k1", campaign="c", row=2, attempt="a1")


class RacingClient:
    """A DynamoDB client that lets a rival attempt claim the key just before our write lands."""

    def __init__(self, client, rival) -> None:
        self._client, self._rival, self.raced = client, rival, False

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_item(self, **request):
        if not self.raced:
            self.raced = True
            self._rival()
        return self._client.put_item(**request)


@pytest.mark.parametrize("existing", [None, "released"], ids=["new-key", "released-key"])
def test_two_attempts_never_both_hold_a_claim(aws, clock, existing):
    # GIVEN a rival attempt that claims the key between our read and our conditional write
    client = boto3.client("dynamodb", region_name="eu-west-1")
    table = create_ledger_table(client)
    rival = DynamoDbLedger(table, client, clock=clock)
    if existing == "released":
        rival.claim("k1", campaign="c", row=2, attempt="a0")
        rival.record_failed("k1", code="Throttled", reason="later", permanent=False)
    racing = RacingClient(client, lambda: rival.claim("k1", campaign="c", row=2, attempt="rival"))

    # WHEN we claim the same key
    claim = DynamoDbLedger(table, racing, clock=clock).claim(
        "k1", campaign="c", row=2, attempt="ours"
    )

    # THEN our write was refused by its condition and we see the rival's live claim
    assert racing.raced
    assert claim.state == "busy"
    assert claim.attempt == "rival"
    (outcome,) = rival.outcomes("c")
    assert (outcome.state, outcome.attempt) == ("claimed", "rival")


def test_a_claim_records_the_previous_row_sent_first(ledger):
    assert ledger.claim("k1", campaign="c", row=2, attempt="a") == Claim("claimed")
    claimed = ledger.claim("k2", campaign="c", row=3, attempt="a", sent_before=("k1", "m-1", False))
    assert claimed == Claim("claimed")
    assert [(o.key, o.state, o.message_id) for o in ledger.outcomes("c")] == [
        ("k1", "sent", "m-1"),
        ("k2", "claimed", None),
    ]


def test_an_uncertain_release_is_remembered_and_told_to_the_next_claim(ledger):
    ledger.claim("k1", campaign="c", row=2, attempt="a")
    ledger.record_failed("k1", code="Timeout", reason="no reply", permanent=False, uncertain=True)
    found = ledger.claim("k1", campaign="c", row=2, attempt="b")
    assert found.state == "claimed" and found.attempt == "a"
    assert "may have been accepted" in found.reason
    ledger.record_failed("k1", code="Throttling", reason="rate", permanent=False)
    assert "may have been accepted" in ledger.claim("k1", campaign="c", row=2, attempt="c").reason
    ledger.claim("k2", campaign="c", row=3, attempt="a")
    ledger.record_failed("k2", code="Throttling", reason="rate", permanent=False)
    assert ledger.claim("k2", campaign="c", row=3, attempt="b") == Claim("claimed")


def test_one_invocation_of_an_attempt_holds_its_batch_until_it_ends_or_its_deadline(ledger, clock):
    def wait(seconds: float) -> None:
        clock.now += seconds

    check_batch_holds(ledger, clock, wait)


def test_release_failed_gives_back_only_the_campaigns_failed_rows(ledger, clock):
    def wait(seconds: float) -> None:
        clock.now += seconds

    check_release_failed(ledger, clock, wait)


def test_release_failed_queries_the_campaign_and_never_scans(ledger, monkeypatch):
    # GIVEN a failed row WHEN the campaign's failed rows are released
    ledger.claim("k1", campaign="c", row=2, attempt="a")
    ledger.record_failed("k1", code="Refused", reason="no", permanent=True)
    calls = []
    real = ledger._db._make_api_call
    monkeypatch.setattr(
        ledger._db, "_make_api_call", lambda op, params: calls.append(op) or real(op, params)
    )
    assert ledger.release_failed("c") == 1

    # THEN the by_campaign index was queried for it and the row updated, nothing scanned
    assert calls == ["Query", "UpdateItem"]


def test_release_failed_leaves_a_row_that_changed_since_it_was_read(ledger, monkeypatch):
    # GIVEN a failed row that another run releases and claims just after this one read it
    ledger.claim("k1", campaign="c", row=2, attempt="a")
    ledger.record_failed("k1", code="Refused", reason="no", permanent=True)
    other = DynamoDbLedger(ledger.table, ledger._db)
    query = ledger._query

    def read_then_changed(*args, **kwargs):
        items = query(*args, **kwargs)
        other.release_failed("c")
        other.claim("k1", campaign="c", row=2, attempt="other-run")
        return items

    monkeypatch.setattr(ledger, "_query", read_then_changed)

    # WHEN this one releases what it read THEN it releases nothing: the other run's claim holds
    assert ledger.release_failed("c") == 0
    (outcome,) = ledger.outcomes("c")
    assert (outcome.state, outcome.attempt) == ("claimed", "other-run")


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_a_claim_is_refused_while_another_sets_letter_may_have_gone_out(ledger, clock, case):
    check_exclusive_claim(ledger, clock.sleep, case)


def test_a_rows_own_entry_is_answered_before_the_other_letters(ledger):
    check_exclusive_claim_order(ledger)


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_a_file_that_may_have_gone_to_one_recipient_is_refused_to_another(ledger, clock, case):
    check_attachment_owner(ledger, clock.sleep, case)


def test_the_file_owner_check_comes_after_the_rows_own_entry_and_keeps_to_its_campaign(ledger):
    check_attachment_owner_rules(ledger)


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_the_files_owners_are_those_whose_letter_may_have_gone_out(ledger, clock, case):
    check_file_owners_by_state(ledger, clock.sleep, case)


def test_the_files_owners_are_listed_from_the_campaign_index(ledger):
    check_file_owners(ledger)


def test_a_claim_naming_its_own_file_is_one_transaction_with_the_files_owner(ledger, monkeypatch):
    # GIVEN a campaign of one set, whose rows name their own files
    calls = recorded_calls(ledger, monkeypatch)

    # WHEN a row is claimed
    ledger.claim("k1", campaign="c", row=2, attempt="a", owner=("a.pdf", "recipient-a"))

    # THEN after the row's read, the claim and the file's owner (its name hashed) are
    # written in one transaction
    owner = "owner#c#" + hashlib.sha256(b"a.pdf").hexdigest()
    assert calls == [("GetItem", []), ("TransactWriteItems", ["Put:k1", f"Put:{owner}"])]


def test_an_owner_item_from_before_owners_were_indexed_is_not_listed(ledger):
    # GIVEN Amelia's letter sent with her file, its owner item written as before it carried
    # the campaign and row (not in the by_campaign index), and Jose's written now
    ledger.claim("k1", campaign="c", row=2, attempt="a", owner=("a.pdf", "r-amelia"))
    ledger.record_sent("k1", message_id="m-1")
    owner_key = "owner#c#" + hashlib.sha256(b"a.pdf").hexdigest()
    ledger._db.update_item(
        TableName=ledger.table,
        Key={"idempotency_key": {"S": owner_key}},
        UpdateExpression="REMOVE campaign, #r",
        ExpressionAttributeNames={"#r": "row"},
    )
    jose = ("b.pdf", "r-jose", "j***@example.com")
    assert ledger.claim("k2", campaign="c", row=3, attempt="a", owner=jose) == Claim("claimed")
    ledger.record_sent("k2", message_id="m-2")

    # WHEN the campaign's owners are read THEN only Jose's is listed; the old item still
    # refuses Amelia's file to another recipient, as the claim reads it by its key
    assert list(ledger.file_owners("c")) == [FileOwner("b.pdf", "r-jose", 3, "j***@example.com")]
    refused = ledger.claim("k3", campaign="c", row=4, attempt="a", owner=("a.pdf", "r-x"))
    assert refused == Claim("owned")


def test_a_campaign_without_owners_costs_one_query_to_list_them(ledger, monkeypatch):
    # GIVEN a campaign whose letters name no file of their own
    ledger.claim("k1", campaign="c", row=2, attempt="a")
    ledger.record_sent("k1", message_id="m-1")
    calls = recorded_calls(ledger, monkeypatch)

    # WHEN its owners are read THEN none are, after one query (its rows are not read)
    assert list(ledger.file_owners("c")) == []
    assert calls == [("Query", [])]


def recorded_calls(ledger, monkeypatch) -> list[tuple[str, list[str]]]:
    """Each call the ledger's client makes from now on: its operation, and of a transaction
    the kind and key of each item."""
    calls: list[tuple[str, list[str]]] = []
    real = ledger._db._make_api_call

    def record(operation, params):
        items = [
            f"{kind}:{(part.get('Key') or part['Item'])['idempotency_key']['S']}"
            for item in params.get("TransactItems", [])
            for kind, part in item.items()
        ]
        calls.append((operation, items))
        return real(operation, params)

    monkeypatch.setattr(ledger._db, "_make_api_call", record)
    return calls


def test_a_claim_is_one_transaction_only_in_a_campaign_of_several_sets(ledger, monkeypatch):
    # GIVEN every call the ledger makes
    calls = recorded_calls(ledger, monkeypatch)

    # WHEN a row of a campaign of one set is claimed, then one of a campaign of three
    ledger.claim("k1", campaign="c", row=2, attempt="a")
    others = {"k2-rejection": "rejection", "k2-reminder": "reminder"}
    assert ledger.claim("k2", campaign="c", row=3, attempt="a", others=others) == Claim("claimed")

    # THEN the first is the read and the plain conditional write it always was; the second
    # the same read, then one transaction: its write and a check of each other letter
    assert calls == [
        ("GetItem", []),
        ("PutItem", []),
        ("GetItem", []),
        (
            "TransactWriteItems",
            ["Put:k2", "ConditionCheck:k2-rejection", "ConditionCheck:k2-reminder"],
        ),
    ]


def test_a_letter_claimed_between_the_read_and_the_write_refuses_the_claim(ledger, monkeypatch):
    # GIVEN another run that claims the address's offer just after this claim read its entry
    other = DynamoDbLedger(ledger.table, ledger._db)
    read = ledger._get_item

    def read_then_offered(key):
        found = read(key)
        other.claim("offer", campaign="c", row=2, attempt="run-2", others={"rejection": "r"})
        return found

    monkeypatch.setattr(ledger, "_get_item", read_then_offered)

    # WHEN this run claims the rejection THEN its transaction is refused for the offer
    claim = ledger.claim("rejection", campaign="c", row=2, attempt="run-1", others={"offer": "o"})
    assert claim == Claim("other", letter="o")
    assert [o.key for o in ledger.outcomes("c")] == ["offer"]


def cancelled(*codes: str) -> ClientError:
    """The TransactionCanceledException of a transaction, with one reason per item."""
    reasons = [{"Code": code} for code in codes]
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": reasons,
        },
        "TransactWriteItems",
    )


def test_a_transaction_in_conflict_is_tried_again(ledger, monkeypatch):
    # GIVEN DynamoDB that cancels the first try of the claim's transaction: another
    # transaction was writing one of its items
    real = ledger._db.transact_write_items
    tries = []

    def conflict_once(**request):
        tries.append(request)
        if len(tries) == 1:
            raise cancelled("None", "TransactionConflict")
        return real(**request)

    monkeypatch.setattr(ledger._db, "transact_write_items", conflict_once)

    # WHEN the row is claimed THEN the second try claims it
    claim = ledger.claim("rejection", campaign="c", row=2, attempt="a", others={"offer": "o"})
    assert claim == Claim("claimed")
    assert len(tries) == 2


def test_a_transaction_cancelled_for_another_reason_is_a_ledger_error(ledger, monkeypatch):
    # GIVEN DynamoDB that cancels the claim's transaction as throttled
    def throttled(**request):
        raise cancelled("ThrottlingError", "None")

    monkeypatch.setattr(ledger._db, "transact_write_items", throttled)

    # WHEN the row is claimed THEN the batch is told the ledger failed, not that it may send
    with pytest.raises(LedgerError, match="claim rejection") as failed:
        ledger.claim("rejection", campaign="c", row=2, attempt="a", others={"offer": "o"})
    # AND as an error the state machine retries (a throttle passes), not as LedgerNotWritten,
    # which ends the run at once (a local ledger that no retry can write)
    error = type(failed.value).__name__
    assert error == "LedgerError"
    assert retrier_for(send_batch_retriers(), error) is not None
    assert retrier_for(send_batch_retriers(), "LedgerNotWritten") is None


def test_a_table_that_does_not_exist_ends_the_batch_at_once_saying_what_to_check(aws):
    # GIVEN a ledger whose table is not in the account (a stack not deployed, a name mistyped)
    client = boto3.client("dynamodb", region_name="eu-west-1")
    ledger = DynamoDbLedger("ledger-gone", client)

    # WHEN a row is claimed THEN the batch fails as LedgerNotWritten, which the state machine
    # does not retry, naming the table, DynamoDB's error code and what to check
    with pytest.raises(LedgerNotWritten) as failed:
        ledger.claim("k1", campaign="c", row=2, attempt="a1")
    said = str(failed.value)
    assert said.startswith("dynamodb://ledger-gone: get k1: ")
    assert (
        "DynamoDB refused it with ResourceNotFoundException, which no retry gets past, so the"
        " state machine does not retry it: check that table ledger-gone and its indexes exist"
    ) in said
    assert retrier_for(send_batch_retriers(), "LedgerNotWritten") is None


@pytest.mark.parametrize(
    ("code", "check"),
    [
        ("AccessDeniedException", "check that the function's IAM role may do this on table t"),
        ("ResourceNotFoundException", "check that table t and its indexes exist"),
        ("ValidationException", "check that table t is defined as infra/template.yaml"),
        ("KMSDisabledException", "check in KMS that the key that encrypts table t exists"),
        ("KMSAccessDeniedException", "check in KMS that the key that encrypts table t exists"),
        ("KMSInvalidStateException", "check in KMS that the key that encrypts table t exists"),
        ("KMSNotFoundException", "check in KMS that the key that encrypts table t exists"),
    ],
)
def test_a_refusal_no_retry_gets_past_is_ledger_not_written(aws, code, check):
    # GIVEN DynamoDB that refuses the ledger's write with ``code``
    client = boto3.client("dynamodb", region_name="eu-west-1")
    with Stubber(client) as stub:
        stub.add_client_error("put_item", service_error_code=code, http_status_code=400)

        # WHEN the campaign is halted (one PutItem)
        with pytest.raises(LedgerError) as failed:
            DynamoDbLedger("t", client).halt("c", code="X", reason="r", attempt="a")

    # THEN it is LedgerNotWritten, not retried: the table, the code, what to check
    assert type(failed.value) is LedgerNotWritten
    said = str(failed.value)
    assert said.startswith("dynamodb://t: halt c: ")
    assert f"DynamoDB refused it with {code}, which no retry gets past" in said
    assert f"{check}" in said and said.endswith("then redrive (rows recorded as sent are skipped).")


@pytest.mark.parametrize(
    "code",
    [
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "network",
    ],
)
def test_a_fault_a_retry_may_get_past_stays_a_ledger_error(aws, code, monkeypatch):
    # GIVEN DynamoDB that throttles the ledger's write, fails on its side, or cannot be reached
    client = boto3.client("dynamodb", region_name="eu-west-1")
    ledger = DynamoDbLedger("t", client)
    if code == "network":

        def unreachable(**request):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

        monkeypatch.setattr(client, "put_item", unreachable)
        with pytest.raises(LedgerError) as failed:
            ledger.halt("c", code="X", reason="r", attempt="a")
    else:
        with Stubber(client) as stub:
            stub.add_client_error("put_item", service_error_code=code, http_status_code=400)
            with pytest.raises(LedgerError) as failed:
                ledger.halt("c", code="X", reason="r", attempt="a")

    # THEN it is a LedgerError, which the state machine retries
    assert type(failed.value) is LedgerError
    assert retrier_for(send_batch_retriers(), "LedgerError") is not None


def test_outcomes_of_given_keys(ledger):
    check_outcomes_of(ledger)


def test_outcomes_of_asks_again_for_keys_left_unprocessed(ledger, monkeypatch):
    # GIVEN two rows, and DynamoDB leaving the second unprocessed once (throttled)
    for key in ("k1", "k2"):
        ledger.claim(key, campaign="c", row=2, attempt="a")
    real = ledger._db.batch_get_item
    requests, pauses = [], []

    def throttled_once(RequestItems):
        requests.append([k["idempotency_key"]["S"] for k in RequestItems[ledger.table]["Keys"]])
        response = real(RequestItems=RequestItems)
        if len(requests) == 1:
            got = response["Responses"][ledger.table]
            left = [i for i in got if i["idempotency_key"]["S"] == "k2"]
            response["Responses"][ledger.table] = [i for i in got if i not in left]
            keys = [{"idempotency_key": i["idempotency_key"]} for i in left]
            response["UnprocessedKeys"] = {ledger.table: {"Keys": keys, "ConsistentRead": True}}
        return response

    monkeypatch.setattr(ledger._db, "batch_get_item", throttled_once)
    monkeypatch.setattr(ledger, "_sleep", pauses.append)

    # WHEN both are asked for THEN both come back, the second after a pause and a new request
    assert sorted(ledger.outcomes_of(["k1", "k2"])) == ["k1", "k2"]
    assert requests == [["k1", "k2"], ["k2"]]
    assert len(pauses) == 1


def test_outcomes_of_gives_up_on_keys_never_processed(ledger, monkeypatch):
    # GIVEN DynamoDB that never processes a key
    ledger.claim("k1", campaign="c", row=2, attempt="a")
    table = ledger.table

    def never(RequestItems):
        return {"Responses": {table: []}, "UnprocessedKeys": RequestItems}

    monkeypatch.setattr(ledger._db, "batch_get_item", never)
    monkeypatch.setattr(ledger, "_sleep", lambda seconds: None)

    # WHEN asked THEN a ledger error says so, after a bounded number of requests
    with pytest.raises(LedgerError, match="unprocessed"):
        ledger.outcomes_of(["k1"])


def test_settled_keys_are_the_campaigns_sent_and_failed_rows(ledger):
    check_settled_keys(ledger)


class CountingClient:
    """A DynamoDB client that counts its query requests."""

    def __init__(self, client) -> None:
        self._client, self.queries = client, []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def query(self, **request):
        self.queries.append(request)
        return self._client.query(**request)


def test_settled_keys_read_the_campaign_index_once_and_return_keys_only(ledger):
    # GIVEN 300 sent rows of a campaign
    for row in range(300):
        ledger.claim(f"k{row:03d}", campaign="c", row=row, attempt="a")
        ledger.record_sent(f"k{row:03d}", message_id=f"m{row}")

    # WHEN its settled keys are read through a client that counts queries
    counting = CountingClient(ledger._db)
    keys = list(DynamoDbLedger("ledger", counting).settled_keys("c"))

    # THEN one query of by_campaign (one page here) brought every key, and the keys alone
    assert len(keys) == 300
    (request,) = counting.queries
    assert request["IndexName"] == "by_campaign"
    assert request["ProjectionExpression"] == "#k"


def test_a_files_name_is_its_campaigns_and_a_name_alike_is_refused(ledger):
    check_names(ledger)


def test_the_latest_validated_upload_is_the_one_stored_last(ledger):
    check_latest_upload(ledger)


def test_a_campaigns_halt_latest_upload_and_sets_are_read_at_once(ledger):
    check_campaign_status(ledger)


def test_a_campaigns_rows_unanswered_in_a_row_are_counted_across_its_batches(ledger, clock):
    def wait(seconds):
        clock.now += seconds

    check_unanswered(ledger, clock, wait)


def _recorded_calls(ledger, monkeypatch) -> list[tuple[str, dict]]:
    """The ledger's client's calls from now on, each operation with its parameters."""
    calls: list[tuple[str, dict]] = []
    real = ledger._db._make_api_call

    def recorded(operation, params):
        calls.append((operation, params))
        return real(operation, params)

    monkeypatch.setattr(ledger._db, "_make_api_call", recorded)
    return calls


def test_a_campaigns_status_is_one_consistent_batch_get(ledger, monkeypatch):
    # GIVEN a campaign with a halt and a row unanswered recorded
    ledger.halt("c", code="DailyQuotaExceeded", reason="quota", attempt="a1")
    ledger.note_unanswered("c", 12, answered_at=None)
    calls = _recorded_calls(ledger, monkeypatch)

    # WHEN a batch reads its campaign
    status = ledger.campaign_status("c")

    # THEN one strongly consistent BatchGetItem read the halt, upload, sets and rows
    # unanswered items
    assert status.halt is not None and status.halt.code == "DailyQuotaExceeded"
    assert status.unanswered is not None and status.unanswered.rows == (12,)
    assert [operation for operation, _ in calls] == ["BatchGetItem"]
    request = calls[0][1]["RequestItems"][ledger.table]
    assert request["ConsistentRead"] is True
    assert sorted(key["idempotency_key"]["S"] for key in request["Keys"]) == [
        "halt#c",
        "sets#c",
        "unanswered#c",
        "upload#c",
    ]


def test_template_sets_only_grow_and_a_catalog_lacking_one_is_refused(ledger):
    check_template_sets(ledger)


def test_template_sets_are_one_item_read_consistently_and_written_only_when_new(
    ledger, monkeypatch
):
    # GIVEN a campaign that used offer
    calls = []
    real = ledger._db._make_api_call

    def recorded(operation, params):
        calls.append((operation, params.get("ConsistentRead")))
        return real(operation, params)

    monkeypatch.setattr(ledger._db, "_make_api_call", recorded)
    assert ledger.record_template_sets("c", {"offer"}, catalog=["offer"]) == []

    # WHEN runs record offer again, or are refused THEN each reads the item, none writes
    assert ledger.record_template_sets("c", {"offer"}, catalog=["offer", "x"]) == []
    assert ledger.record_template_sets("c", {"x"}, catalog=["x"]) == ["offer"]
    read = ("GetItem", True)
    assert calls == [read, ("UpdateItem", None), read, read]
    # AND the names are one string set in the item sets#c
    item = ledger._db.get_item(TableName=ledger.table, Key={"idempotency_key": {"S": "sets#c"}})
    assert item["Item"]["template_sets"] == {"SS": ["offer"]}


@pytest.mark.parametrize("rival_sets", [{"offer-2026"}, {"offer"}], ids=["renamed", "same"])
def test_a_run_that_recorded_sets_meanwhile_is_seen(aws, rival_sets):
    # GIVEN a campaign that used offer, and a rival run that records its sets between our
    # read and our conditional write
    client = boto3.client("dynamodb", region_name="eu-west-1")
    table = create_ledger_table(client)
    rival = DynamoDbLedger(table, client)
    assert rival.record_template_sets("c", {"rejection"}, catalog=["rejection"]) == []

    class Racing:
        raced = False

        def __getattr__(self, name):
            return getattr(client, name)

        def update_item(self, **request):
            if not self.raced:
                self.raced = True
                rival.record_template_sets("c", rival_sets, catalog=[*rival_sets, "rejection"])
            return client.update_item(**request)

    racing = Racing()

    # WHEN this run records offer and rejection
    found = DynamoDbLedger(table, racing).record_template_sets(
        "c", {"offer"}, catalog=["offer", "rejection"]
    )

    # THEN its write was refused by its condition, and it decided again on what the rival wrote:
    # refused when the rival brought a name it lacks, recorded otherwise
    assert racing.raced
    if rival_sets == {"offer"}:
        assert found == []
    else:
        assert found == ["offer-2026"]
    assert rival.template_sets("c") == {"rejection", *rival_sets}


def test_concurrent_batches_claim_on_moto_as_on_dynamodb(ledger):
    # GIVEN two batches of a campaign claiming their rows in threads at once, each row's claim
    # a transaction with another letter's check (as SendBatch does with MaxConcurrency 2)
    errors: list[BaseException] = []

    def batch(name: str) -> None:
        try:
            for row in range(40):
                key = f"{name}-{row}"
                ledger.claim(key, campaign="c", row=row, attempt=name, others={f"o-{key}": "s"})
                ledger.record_sent(key, message_id=f"m-{key}")
        except BaseException as error:
            errors.append(error)

    # WHEN they run, the interpreter switching threads as often as it can
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=batch, args=(name,)) for name in ("a", "b", "c")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)

    # THEN every claim went through: the fake applies one request at a time, as AWS does
    assert errors == []
    assert len([o for o in ledger.outcomes("c") if o.state == "sent"]) == 120


def test_letters_sent_with_their_own_file_are_found_by_its_size_and_print_in_any_campaign(
    ledger,
):
    check_sent_copies(ledger)


def test_the_recipients_earlier_runs_may_have_mailed_are_found_by_address(ledger):
    check_earlier_recipients(ledger)


def test_sizes_are_asked_many_at_once_and_each_answered(ledger, monkeypatch):
    from mailmatrix.ports import LetterFile

    # GIVEN letters sent with files of three sizes, among 60 sizes validation lists
    for row, size in enumerate((1001, 1030, 1059), start=2):
        key = f"key-{size}"
        ledger.claim(key, campaign="c", row=row, attempt="a", owner=(f"{size}.pdf", f"r{size}"))
        file = LetterFile(f"{size}.pdf", size, "a" * 64, "0badf00d", f"r{size}", "", "c.csv")
        ledger.record_sent(key, message_id=f"m-{size}", file=file)
    listed = list(range(1000, 1060))
    asked: list[int] = []
    in_flight, most = [0], [0]
    query = ledger._db.query
    lock = threading.Lock()

    def counting(**kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            asked.append(int(kwargs["ExpressionAttributeValues"][":fs"]["N"]))
        try:
            time.sleep(0.01)  # long enough for the others to start (not a measure of speed)
            return query(**kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(ledger._db, "query", counting)

    # WHEN validation asks which of them letters carried
    found = ledger.sent_sizes(listed)

    # THEN exactly those three, each size asked once, several queries in flight at a time
    assert found == {1001, 1030, 1059}
    assert sorted(asked) == listed
    assert most[0] > 1


def test_a_size_query_that_fails_is_a_ledger_error(ledger, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    def failing(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(ledger._db, "query", failing)
    with pytest.raises(LedgerError, match="by_file"):
        ledger.sent_sizes([1, 2, 3])


def test_a_letter_failed_in_doubt_before_composing_keeps_its_file(ledger, clock):
    # GIVEN row 2, naming its own file, claimed by two attempts in turn that died holding it
    data = b"%PDF-1.4 anna" * 2000
    item = kit.item("c", 2, "anna@example.com", "Anna", "anna.pdf")
    item["own_attachment"] = True
    owner = ("anna.pdf", recipient_key("c", item["email"]), mask(item["email"]))
    for attempt in ("child-1", "child-2"):
        lease = clock.now + 1
        ledger.claim(
            item["key"], campaign="c", row=2, attempt=attempt, lease_until=lease, owner=owner
        )
        clock.sleep(2)

    # WHEN a third attempt fails it as OutcomeUnknown, sending nothing
    result = send_batch(
        [item],
        kit.campaign("c"),
        catalog=kit.catalog(),
        fetch_attachment=kit.fetcher({"anna.pdf": data}),
        mailer=FakeSes(clock=clock),
        ledger=ledger,
        attempt="child-3",
        sleep=clock.sleep,
        clock=clock,
    )
    assert result.rows[0]["code"] == "OutcomeUnknown"

    # THEN the file those attempts may have sent is found by validation's query
    (copy,) = ledger.sent_copies(len(data), sample_print(data))
    assert (copy.row, copy.sha256) == (2, hashlib.sha256(data).hexdigest())


def test_a_corrected_address_takes_over_a_file_whose_letter_went_out(ledger):
    # GIVEN a file sent to its first recipient (an address since found wrong)
    ledger.claim("k-old", campaign="c", row=3, attempt="a", owner=("kim.pdf", "r-old", "k***"))
    ledger.record_sent("k-old", message_id="m-old")
    owner = ("kim.pdf", "r-new", "k***")

    # WHEN the corrected address claims it THEN it is refused, unless said corrected
    assert ledger.claim("k-new", campaign="c", row=3, attempt="b", owner=owner).state == "owned"
    claim = ledger.claim("k-new", campaign="c", row=3, attempt="b", owner=owner, corrected=True)
    assert claim.state == "claimed"
    # AND the file is the corrected address's from then on
    ledger.record_sent("k-new", message_id="m-new")
    assert [(o.attachment, o.recipient) for o in ledger.file_owners("c")] == [("kim.pdf", "r-new")]


def test_an_operators_choice_is_kept_with_its_time(ledger, clock):
    # WHEN a run's choice to send another file's letters again is recorded, twice
    ledger.record_choice("c", "send_again_from", "offers.csv")
    ledger.record_choice("c", "send_again_from", "offers.csv")

    # THEN one item keeps it: the campaign, the choice, the file named and when
    digest = hashlib.sha256(b"offers.csv").hexdigest()
    found = ledger._db.get_item(
        TableName=ledger.table, Key={"idempotency_key": {"S": f"choice#c#send_again_from#{digest}"}}
    )["Item"]
    assert (found["choice_campaign"], found["choice"], found["value"]) == (
        {"S": "c"},
        {"S": "send_again_from"},
        {"S": "offers.csv"},
    )
    assert float(found["at"]["N"]) == clock()


@pytest.mark.parametrize("check", PRINT_CHECKS)
def test_letter_prints_hold_back_another_campaigns_letter_alike(ledger, clock, check):
    PRINT_CHECKS[check](ledger, clock)


@pytest.mark.parametrize("check", SET_CHECKS)
def test_a_letter_of_a_set_holds_back_another_campaigns_letter_of_it(ledger, clock, check):
    SET_CHECKS[check](ledger, clock)


def test_a_claim_reads_its_letters_file_print_and_set_items_in_one_batch(ledger, monkeypatch):
    # GIVEN row 2's letter claimed with its own file, print and set: the three items exist
    file = LetterFile("anna.pdf", 5000, "a" * 64, "0badf00d", "c/anna", "a***@x.org")
    letter = LetterPrint("c", "p1", "offers.csv", file=file, person="s1", template="offer")
    assert ledger.claim("k2", campaign="c", row=2, attempt="a", letter=letter).held is None
    calls = _recorded_calls(ledger, monkeypatch)

    # WHEN row 3's letter of the same print, file and set is claimed
    claim = ledger.claim("k3", campaign="c", row=3, attempt="a", letter=letter)

    # THEN it is claimed after one read of its entry and one strongly consistent BatchGetItem
    # of the three items (not a GetItem each), in one transaction that found them as read
    assert claim == Claim("claimed")
    assert [operation for operation, _ in calls] == [
        "GetItem",
        "BatchGetItem",
        "TransactWriteItems",
    ]
    request = calls[1][1]["RequestItems"][ledger.table]
    assert request["ConsistentRead"] is True
    assert [key["idempotency_key"]["S"] for key in request["Keys"]] == [
        f"file#5000#{'a' * 64}",
        "print#p1",
        "set#s1",
    ]
    item = ledger._db.get_item(TableName=ledger.table, Key={"idempotency_key": {"S": "set#s1"}})
    assert set(item["Item"]["letters"]["M"]) == {"k2", "k3"}


def test_a_claims_item_left_unprocessed_is_asked_again_and_still_holds_back(ledger, monkeypatch):
    # GIVEN another campaign's letter of the set to the address, sent; and DynamoDB leaving
    # the set item unprocessed once (throttled) in the claim's read
    original = LetterPrint("c-old", "p-old", "alt.csv", person="s1", template="absage")
    ledger.claim("k-old", campaign="c-old", row=57, attempt="o", letter=original)
    ledger.record_sent("k-old", message_id="m-old")
    real = ledger._db.batch_get_item
    requests, pauses = [], []

    def throttled_once(RequestItems):
        keys = [k["idempotency_key"]["S"] for k in RequestItems[ledger.table]["Keys"]]
        requests.append(keys)
        response = real(RequestItems=RequestItems)
        if len(requests) == 1:
            got = response["Responses"][ledger.table]
            response["Responses"][ledger.table] = [
                i for i in got if i["idempotency_key"]["S"] != "set#s1"
            ]
            left = {"Keys": [{"idempotency_key": {"S": "set#s1"}}], "ConsistentRead": True}
            response["UnprocessedKeys"] = {ledger.table: left}
        return response

    monkeypatch.setattr(ledger._db, "batch_get_item", throttled_once)
    monkeypatch.setattr(ledger, "_sleep", pauses.append)

    # WHEN a re-export's letter of the set (another text) is claimed
    export = LetterPrint("c-new", "p-new", "neu.csv", person="s1", template="absage")
    claim = ledger.claim("k-new", campaign="c-new", row=2, attempt="n", letter=export)

    # THEN the set item was asked again after a pause, and the letter is held back by it
    assert requests[:2] == [["print#p-new", "set#s1"], ["set#s1"]]
    assert len(pauses) == 1
    assert claim.held is not None and (claim.held.source, claim.held.row) == ("alt.csv", 57)


def test_of_two_files_whose_set_items_are_written_at_once_only_one_sends(aws, clock):
    # GIVEN a re-export's letter of a set to an address, whose set item the original file's
    # letter of the set (another text) writes between the re-export's read and its write
    client = boto3.client("dynamodb", region_name="eu-west-1")
    table = create_ledger_table(client)
    rival = DynamoDbLedger(table, client, clock=clock)
    original = LetterPrint("c-old", "p-old", "alt.csv", frozenset(), person="s1", template="absage")

    def first() -> None:
        claim = rival.claim("k-old", campaign="c-old", row=57, attempt="o", letter=original)
        assert claim.held is None

    racing = PrintRacingClient(client, first)
    ours = DynamoDbLedger(table, racing, clock=clock)
    export = LetterPrint("c-new", "p-new", "neu.csv", frozenset(), person="s1", template="absage")

    # WHEN the re-export's letter is claimed
    claim = ours.claim("k-new", campaign="c-new", row=2, attempt="n", letter=export)

    # THEN its transaction was refused, and read again it waits for the original (busy)
    assert racing.transactions == 1
    assert claim.state == "busy" and "being sent under alt.csv" in str(claim.reason)
    # AND once the original went, it is held back, named by its set
    rival.record_sent("k-old", message_id="m-old")
    held = ours.claim("k-new", campaign="c-new", row=2, attempt="n", letter=export).held
    assert held is not None and (held.source, held.row, held.template) == ("alt.csv", 57, "absage")


class PrintRacingClient:
    """A DynamoDB client that runs ``rival`` once, just before our first transaction lands
    (after our read of the print item), and counts our transactions."""

    def __init__(self, client, rival) -> None:
        self._client, self._rival, self.transactions = client, rival, 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def transact_write_items(self, **request):
        self.transactions += 1
        if self.transactions == 1:
            self._rival()
        return self._client.transact_write_items(**request)


@pytest.mark.parametrize("way", PRINT_WAYS)
def test_of_two_copies_whose_print_items_are_written_at_once_only_one_passes(aws, clock, way):
    # GIVEN a copy's letter whose print item another campaign's letter of the same print
    # writes between the copy's read of the item and its write
    client = boto3.client("dynamodb", region_name="eu-west-1")
    table = create_ledger_table(client)
    rival = DynamoDbLedger(table, client, clock=clock)
    news = LetterPrint("c-news", "p1", "news.csv")

    def first() -> None:
        claim = rival.claim("k-news", campaign="c-news", row=2, attempt="n", letter=news)
        assert claim.held is None

    racing = PrintRacingClient(client, first)
    ours = DynamoDbLedger(table, racing, clock=clock)
    copy = LetterPrint("c-copy", "p1", "copy.csv")

    # WHEN the copy's letter is claimed and its print looked for
    if way == "claim":
        claim = ours.claim("k-copy", campaign="c-copy", row=2, attempt="c", letter=copy)
        held = None
    else:
        assert ours.claim("k-copy", campaign="c-copy", row=2, attempt="c") == Claim("claimed")
        held = ours.hold_letter("k-copy", copy)

    # THEN its one transaction found the item changed (refused), it read again and found the
    # other being sent: the claim waits (busy), hold_letter names it, nothing of the print
    # written
    assert racing.transactions == 1
    if way == "claim":
        assert claim.state == "busy" and "being sent under news.csv" in str(claim.reason)
    else:
        assert held is not None
        assert (held.campaign, held.source, held.state) == ("c-news", "news.csv", SENDING)
    # AND the print item names the first letter alone
    item = client.get_item(TableName=table, Key={"idempotency_key": {"S": "print#p1"}})["Item"]
    assert set(item["letters"]["M"]) == {"k-news"}


def test_a_letter_taken_again_while_another_passes_it_holds_that_one_back(aws, clock):
    # GIVEN news.csv's letter given back unsent, the only letter its print item names, and
    # claimed again (without its print yet) between a copy's read of the item and its write
    client = boto3.client("dynamodb", region_name="eu-west-1")
    table = create_ledger_table(client)
    rival = DynamoDbLedger(table, client, clock=clock)
    news = LetterPrint("c-news", "p1", "news.csv")
    assert rival.claim("k-news", campaign="c-news", row=2, attempt="n", letter=news).held is None
    rival.record_failed("k-news", code="Throttled", reason="slow down", permanent=False)
    racing = PrintRacingClient(
        client, lambda: rival.claim("k-news", campaign="c-news", row=2, attempt="n2")
    )

    # WHEN the copy's letter is claimed with its print
    claim = DynamoDbLedger(table, racing, clock=clock).claim(
        "k-copy", campaign="c-copy", row=2, attempt="c", letter=LetterPrint("c-copy", "p1")
    )

    # THEN the check that news.csv's letter cannot have gone out failed its one transaction:
    # the copy read again and found it being sent: it waits (busy), nothing written; and
    # news.csv's letter passes when it looks
    assert racing.transactions == 1
    assert claim.state == "busy" and "being sent under news.csv" in str(claim.reason)
    assert rival.hold_letter("k-news", news) is None


@pytest.mark.parametrize("way", PRINT_WAYS)
def test_of_two_files_naming_one_file_for_two_people_at_once_only_one_passes(aws, clock, way):
    # GIVEN offers-final.csv's letter to Bob carrying Alice's file, whose file item
    # offers.csv's letter to Alice writes between Bob's read of the item and his write
    client = boto3.client("dynamodb", region_name="eu-west-1")
    table = create_ledger_table(client)
    rival = DynamoDbLedger(table, client, clock=clock)
    alice_file = LetterFile("x.pdf", 5000, "a" * 64, "0badf00d", "c-offers/alice", "a***@x.org")
    alice = LetterPrint("c-offers", "p-alice", "offers.csv", file=alice_file)

    def first() -> None:
        owner = ("x.pdf", "c-offers/alice", "a***@x.org")
        claim = rival.claim(
            "k-alice", campaign="c-offers", row=2, attempt="o", owner=owner, letter=alice
        )
        assert claim == Claim("claimed") and claim.held is None

    racing = PrintRacingClient(client, first)
    ours = DynamoDbLedger(table, racing, clock=clock)
    bob_file = alice_file._replace(recipient="c-final/bob", masked="b***@x.org")
    bob = LetterPrint(
        "c-final", "p-bob", "offers-final.csv", file=bob_file, whose=lambda c: f"{c}/bob"
    )

    # WHEN Bob's letter is claimed and its file looked for
    if way == "claim":
        claim = ours.claim("k-bob", campaign="c-final", row=2, attempt="f", letter=bob)
        held = None
    else:
        assert ours.claim("k-bob", campaign="c-final", row=2, attempt="f") == Claim("claimed")
        held = ours.hold_letter("k-bob", bob)

    # THEN its one transaction found the file item changed (refused), it read again and
    # found Alice's letter being sent: the claim waits (busy), hold_letter names it
    assert racing.transactions == 1
    if way == "claim":
        assert claim.state == "busy"
        assert "being sent to another recipient under offers.csv" in str(claim.reason)
    else:
        assert held is not None and held.owned
        assert (held.campaign, held.row, held.masked, held.state) == (
            "c-offers",
            2,
            "a***@x.org",
            SENDING,
        )
    # AND the file item names Alice's letter alone, and Bob's entry keeps no file
    key = {"idempotency_key": {"S": f"file#5000#{'a' * 64}"}}
    item = client.get_item(TableName=table, Key=key)["Item"]
    assert set(item["letters"]["M"]) == {"k-alice"}
    if way == "hold_letter":
        assert "file" not in ledger_item(ours, "k-bob")

    # WHEN Alice's letter went out THEN Bob's is held back by it, as sent
    rival.record_sent("k-alice", message_id="m-alice", file=alice_file)
    if way == "hold_letter":
        held = ours.hold_letter("k-bob", bob)
    else:
        held = ours.claim("k-bob", campaign="c-final", row=2, attempt="f", letter=bob).held
    assert held is not None and (held.owned, held.state) == (True, SENT)


def test_a_letters_print_is_kept_in_its_entry_and_the_print_item_lists_no_row(ledger):
    # GIVEN a letter claimed with its print, and another claimed, then looked for
    news = LetterPrint("c-news", "p1", "news.csv")
    ledger.claim("k-news", campaign="c-news", row=2, attempt="a", letter=news)
    ledger.claim("k-news-2", campaign="c-news", row=3, attempt="a")
    assert ledger.hold_letter("k-news-2", news._replace(print="p2")) is None

    # THEN each entry keeps its print and its campaign's file, and the print items (no
    # campaign, no row) are none of the campaign's rows
    db, table = ledger._db, ledger.table
    for key, print in (("k-news", "p1"), ("k-news-2", "p2")):
        entry = db.get_item(TableName=table, Key={"idempotency_key": {"S": key}})["Item"]
        assert (entry["letter_print"]["S"], entry["file_source"]["S"]) == (print, "news.csv")
        found = db.get_item(TableName=table, Key={"idempotency_key": {"S": f"print#{print}"}})
        assert found["Item"]["letters"]["M"][key]["M"]["source"]["S"] == "news.csv"
    assert [o.key for o in ledger.outcomes("c-news")] == ["k-news", "k-news-2"]


def test_hold_letter_of_a_key_never_claimed_is_a_ledger_error(ledger):
    with pytest.raises(LedgerError, match="no such entry"):
        ledger.hold_letter("nope", LetterPrint("c", "p1"))


def _send(items, campaign, ledger, ses, clock):
    return send_batch(
        items,
        campaign,
        catalog=kit.catalog(),
        fetch_attachment=kit.fetcher(),
        mailer=ses,
        ledger=ledger,
        attempt=f"{campaign['id']}/child",
        sleep=clock.sleep,
        clock=clock,
    )


def test_a_renamed_copy_of_a_sent_file_mails_no_one_again_unless_sent_again_from(ledger, clock):
    # GIVEN news.csv's letters sent on AWS
    case = "20-retry-must-not-double-send"
    ses = FakeSes(clock=clock)
    news = kit.campaign("c-news", source={"key": "incoming/news.csv"})
    assert _send(kit.manifest(case, "c-news"), news, ledger, ses, clock).sent == 5

    # WHEN a renamed copy runs THEN each letter is given back unsent, naming news.csv
    copy = kit.campaign("c-copy", source={"key": "incoming/copy.csv"})
    held = _send(kit.manifest(case, "c-copy"), copy, ledger, ses, clock)
    assert [r.get("code") for r in held.rows] == ["SentUnder"] * 5
    assert all("news.csv" in r["reason"] for r in held.rows)
    assert len(ses.calls) == 5

    # WHEN it runs again sending news.csv's letters again THEN they go out
    copy["send_again_from"] = ["news.csv"]
    assert _send(kit.manifest(case, "c-copy"), copy, ledger, ses, clock).sent == 5
    assert len(ses.calls) == 10


def test_rows_in_doubt_are_listed_and_settled(ledger, clock):
    check_doubts_and_settle(ledger, clock, clock.sleep)
