"""Two runs of one file at once, the second with a row's Status changed: one letter per person.

The operator corrects Tomás Silva's Status (Rejection to Offer) and uploads the file again
while the first run's batch holding his row is still sending. The real validate_job and
send_job run as the Lambda handlers do, on S3 and SES in moto, with each ledger; the second
run's batch runs while the first run's mailer sends its first row, so the second run's offer
goes out after the first run's batch started, and before it reaches his row.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any

import boto3
from moto.ses.models import ses_backends

from mailmatrix.adapters.mailer_ses import SesMailer
from mailmatrix.core.send import RetryPolicy, send_batch
from mailmatrix.errors import ClaimBusy
from mailmatrix.jobs import Source, load_templates, send_job, validate_job
from mailmatrix.settings import Settings
from tests.e2e.test_aws_adapters_e2e import ACCOUNT, BUCKET, EXAMPLE, REGION

KEY = "incoming/offers.csv"
TOMAS = "tomas.silva@example.com,Tomás Silva,{},tomas-silva.pdf,Data Scientist,Research,{}"
REJECTED = TOMAS.format("Rejection", ",").encode()
OFFERED = TOMAS.format("Offer", '2027-03-01,"€70,000"').encode()


def validated(account, storage, ledger, body: bytes, execution: str, key: str = KEY):
    """Upload ``body`` (as ``key``) and validate it as ``execution``; return its campaign and
    rows."""
    put = account["s3"].put_object(Bucket=BUCKET, Key=key, Body=body)
    source = Source(BUCKET, key, put["ETag"].strip('"'), put.get("VersionId"))
    result = validate_job(
        storage, source, Settings.from_env(), open_ledger=lambda: ledger, execution=execution
    )
    manifest = storage.get(result["manifest"]["key"]).decode().splitlines()
    return result["campaign"], [json.loads(line) for line in manifest]


def test_a_status_changed_during_a_run_gets_its_person_one_letter(setting, monkeypatch):
    # GIVEN the file validated by a first run; the operator corrects it (Tomás: Rejection to
    # Offer) and uploads it again while the first run's batch is sending its first row, and
    # the second run validates and sends its batch then
    account, storage, ledger = setting
    first_file = (EXAMPLE / "recipients.csv").read_bytes()
    assert REJECTED in first_file
    campaign_1, rows_1 = validated(account, storage, ledger, first_file, "arn:x:exec1")
    second_file = first_file.replace(REJECTED, OFFERED)
    catalog = load_templates(storage, "templates/")
    ses = SesMailer(None, boto3.client("sesv2", region_name=REGION))
    second: dict[str, Any] = {}
    # AND the first run's batch, which looked up its campaign before the second run was
    # validated, does not look again during these rows (it does every 0.25 s, and would then
    # leave the rest to the newer upload: Superseded): its claims alone keep Tomás to one letter
    monkeypatch.setattr(
        "mailmatrix.jobs.send_batch",
        functools.partial(send_batch, policy=RetryPolicy(halt_check_s=3600)),
    )

    class FirstRunMailer:
        """The first run's mailer: the second run runs while it sends its first row."""

        def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
            if not second:
                campaign_2, rows_2 = validated(account, storage, ledger, second_file, "arn:x:exec2")
                assert campaign_1["id"] == campaign_2["id"]
                second["rows"] = rows_2
                try:
                    second.update(
                        send_job(
                            rows_2,
                            campaign_2,
                            storage=storage,
                            catalog=catalog,
                            mailer=ses,
                            ledger=ledger,
                            attempt="arn:x:exec2/SendEmails:child-1",
                            invocation="req-2",
                        )
                    )
                except ClaimBusy as busy:  # the first run holds the row it is sending
                    second.update(busy.details["result"])
            return ses.send(raw, sender=sender, destinations=destinations)

    # WHEN the first run's batch sends, the second run's batch running meanwhile
    first = send_job(
        rows_1,
        campaign_1,
        storage=storage,
        catalog=catalog,
        mailer=FirstRunMailer(),
        ledger=ledger,
        attempt="arn:x:exec1/SendEmails:child-1",
        invocation="req-1",
    )

    # THEN Tomás got one letter, the offer the second run sent; nobody got two
    sent = ses_backends[ACCOUNT][REGION].sent_messages
    to_tomas = [m for m in sent if "tomas.silva@example.com" in m.destinations]
    assert [_subject(m.raw_data) for m in to_tomas] == [
        "Subject: Your offer from Acme Corporation: Data Scientist"
    ]
    assert [a for a, n in Counter(tuple(m.destinations) for m in sent).items() if n > 1] == []
    # AND the first run's row of Tomás failed as OtherLetterSent, saying why and what to do
    (tomas,) = [r for r in first["rows"] if r["row"] == _row_of(rows_1, "tomas.silva")]
    assert (tomas["status"], tomas["code"]) == ("failed", "OtherLetterSent")
    assert tomas["reason"].startswith(
        "an earlier run of this file sent this address the 'offer' letter: the 'rejection' one"
        " would contradict it, so it is not sent"
    )
    # AND every other row went out once, from one run or the other
    assert (first["sent"], first["skipped"], first["failed"]) == (1, len(rows_1) - 2, 1)
    assert (second["sent"], second["failed"]) == (len(second["rows"]) - 1, 0)
    assert len(sent) == len(rows_1)


def _subject(raw: str) -> str:
    return next(line for line in raw.splitlines() if line.startswith("Subject:"))


def _row_of(rows: list[dict[str, Any]], name: str) -> int:
    (row,) = [r["row"] for r in rows if r["email"].startswith(name)]
    return int(row)
