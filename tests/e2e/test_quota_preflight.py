"""The SES quota preflight asks for what the run will really send: rows the ledger has as
sent (or failed for good, unless the upload releases them) are not counted, and each row
counts its recipients, To, Cc and Bcc, as SES counts them against the 24-hour quota.

The real definition and handlers run on the local engine with the AWS adapters (moto); the
account's quota is set by a stand-in for SES v2 GetAccount (moto lacks it).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from mailmatrix.adapters import _aws, ses_account
from tests.e2e import test_aws_adapters_e2e as e2e


def sent_count() -> int:
    from moto.ses.models import ses_backends

    return len(ses_backends[e2e.ACCOUNT][e2e.REGION].sent_messages)


@pytest.fixture
def quota(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A 24-hour quota of ``max`` (25 unless a test changes it), used by every message moto
    took; ``asked`` lists what each preflight was asked for."""
    state: dict[str, Any] = {"max": 25.0, "asked": []}

    def get_account(self: Any) -> dict[str, Any]:
        return {
            "SendingEnabled": True,
            "ProductionAccessEnabled": True,
            "SendQuota": {
                "Max24HourSend": state["max"],
                "MaxSendRate": 14.0,
                "SentLast24Hours": float(sent_count()),
            },
        }

    real = ses_account.preflight

    def preflight(*, sender: str, needed: int, client: Any = None) -> dict[str, Any]:
        state["asked"].append(needed)
        return real(sender=sender, needed=needed, client=client)

    monkeypatch.setattr(e2e.MotoSesAccount, "get_account", get_account)
    monkeypatch.setattr(ses_account, "preflight", preflight)
    return state


def test_a_retry_failed_upload_needs_quota_for_the_released_rows_only(account, quota):
    # GIVEN a run that sent 9 rows and failed 9 for good, out of a quota of 25
    first = e2e.run_on_engine(
        account, "incoming/offers.csv", settings={"MAILMATRIX_FAULTS": "permanent=0.5,seed=3"}
    )
    counts = e2e.outcome(first)["counts"]
    assert (counts["sent"], counts["failed"]) == (9, 9)

    # WHEN the file is uploaded again asking for its failed rows (16 of 25 left)
    again = e2e.run_on_engine(
        account, "incoming/offers.csv", metadata={"mailmatrix-retry-failed": "true"}
    )

    # THEN the preflight asked for the 9 released rows, not the 18 valid ones, and they went
    assert quota["asked"] == [18, 9]
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert e2e.outcome(again)["counts"]["sent"] == 9
    assert sent_count() == 18


def test_an_upload_of_a_file_already_sent_needs_no_quota(account, quota):
    # GIVEN the campaign sent whole: 18 of the 25 messages of the day used
    assert e2e.run_on_engine(account, "incoming/offers.csv")["status"] == "SUCCEEDED"

    # WHEN the same file is uploaded again THEN it needs nothing, and runs (skipping every row)
    again = e2e.run_on_engine(account, "incoming/offers.csv")
    assert quota["asked"] == [18, 0]
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert e2e.outcome(again)["counts"]["skipped"] == 18


CC_FILE = (
    "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary,Cc,Bcc\n"
    "ana@example.com,Ana,Offer,amelia-hart.pdf,Engineer,Platform,2027-01-11,1,"
    '"hr@example.com;lead@example.com",archive@example.com\n'
    "ben@example.com,Ben,Offer,jose-garcia.pdf,Engineer,Platform,2027-01-11,1,,\n"
)


@pytest.mark.parametrize(("left", "runs"), [(5, True), (4, False)])
def test_each_row_counts_its_cc_and_bcc_recipients(account, quota, left, runs):
    # GIVEN a row with two Cc and one Bcc (4 recipients) and a row alone (1): 5 messages
    quota["max"] = float(left)

    # WHEN it is uploaded with ``left`` messages of the quota left
    record = e2e.run_on_engine(account, "incoming/cc.csv", body=CC_FILE.encode())

    # THEN the preflight asked for 5 and let it through only when 5 were left
    assert quota["asked"] == [5]
    if runs:
        assert record["status"] == "SUCCEEDED", record.get("cause")
        assert sent_count() == 2
    else:
        assert record["error"] == "AccountSendingHalted"
        cause = json.loads(record["cause"])["errorMessage"]
        assert "this run needs 5 messages" in cause and f"only {left} of {left}" in cause
        assert sent_count() == 0


def test_a_row_withdrawn_after_it_was_passed_on_is_not_counted(account, quota):
    # GIVEN Ana twice with other names (both rows rejected: only a person can tell which is
    # right, though the first was passed on before the second was read) and Ben
    lines = CC_FILE.splitlines()
    twice = "\n".join([lines[0], lines[1], lines[1].replace(",Ana,", ",Anna,"), lines[2]])

    # WHEN it is uploaded THEN the preflight asks for Ben's one message alone
    record = e2e.run_on_engine(account, "incoming/cc.csv", body=(twice + "\n").encode())
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert e2e.outcome(record)["counts"]["rejected"] == 2
    assert quota["asked"] == [1]


def test_validate_asks_the_ledger_once_for_the_campaign_not_once_per_row(
    account,
    quota,
    monkeypatch,
):
    # GIVEN the campaign sent once
    assert e2e.run_on_engine(account, "incoming/offers.csv")["status"] == "SUCCEEDED"

    # WHEN it is uploaded again, every DynamoDB call of ValidateRecipients recorded
    calls: Counter[str] = Counter()
    real_client = _aws.client
    validating: list[bool] = []

    def client(service: str, **options: Any) -> Any:
        made = real_client(service, **options)
        if service == "dynamodb" and validating == [True]:
            made.meta.events.register(
                "before-parameter-build", lambda model, **_: calls.update([model.name])
            )
        return made

    def wrap(name: str, handler: str) -> Any:
        from mailmatrix.engine.registry import resolve_handler

        real = resolve_handler(handler)

        def invoke(event: dict[str, Any], context: Any) -> Any:
            validating[:] = [name == "ValidateFunction"]
            try:
                return real(event, context)
            finally:
                validating.clear()

        return invoke

    monkeypatch.setattr(_aws, "client", client)
    again = e2e.run_on_engine(account, "incoming/offers.csv", wrap=wrap)

    # THEN it made two queries of the campaign, whatever the number of rows: of the rows it
    # settled (for the quota), and of its file owners (their letters' rows after them; its
    # first page is one item, so a campaign without owners costs one small request): three
    # requests in all. And one read of the template set names the campaign used, which have
    # not changed: nothing written for them; and two updates: the file's name recorded as
    # its campaign's (no name alike is another's), and this upload as the campaign's latest
    # The letters sent with a file of their own add queries of the by_file index (none of
    # the campaign): one per distinct size of the listed attachments (sent_sizes); none per
    # row, though every row's file has the size of a letter sent (its own): the run skips
    # those letters (settled), so their files are not asked after (sent_copies).
    sizes = {path.stat().st_size for path in (e2e.EXAMPLE / "attachments").iterdir()}
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert calls == Counter({"Query": 3 + len(sizes), "GetItem": 1, "UpdateItem": 2})
