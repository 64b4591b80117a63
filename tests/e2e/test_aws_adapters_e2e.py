"""The whole workflow on the local engine with the AWS adapters, backed by moto.

The real definition and the real handlers run as on AWS (MAILMATRIX_STORAGE=s3, MAILER=ses,
LEDGER=dynamodb://...), against an in-process moto account: S3 bucket, SES identity verified,
SNS topics, DynamoDB table created from infra/template.yaml. Nothing leaves the process.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from mailmatrix.adapters import ses_account
from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.adapters.notifier_sns import SnsNotifier
from mailmatrix.adapters.storage_s3 import S3Storage
from mailmatrix.jobs import Source, campaign_id_for
from mailmatrix.local import (
    DEFINITION,
    REPO,
    environment,
    load_sam_template,
    object_created_event,
    sam_functions,
    sam_substitutions,
)
from mailmatrix.ports import Notification
from tests.fixtures.aws import create_ledger_table, fake_aws

REGION = "eu-west-1"
ACCOUNT = "123456789012"
BUCKET = "mailmatrix-e2e"
EXAMPLE = REPO / "examples" / "offer-letters"
SENDER = "Acme Talent <talent@example.com>"
STACK = "mailmatrix"


class MotoSesAccount:
    """SES v2 account calls that moto lacks, answered from moto's own SES state.

    moto 5.2 implements neither SES v2 GetAccount nor verification in GetEmailIdentity, so
    these two read the quota (GetSendQuota) and verification (GetIdentityVerificationAttributes)
    that moto keeps for SES v1, in the response shapes of the SES v2 API.
    """

    def __init__(self) -> None:
        self._v1 = boto3.client("ses", region_name=REGION)

    def get_account(self) -> dict[str, Any]:
        quota = self._v1.get_send_quota()
        return {
            "SendingEnabled": True,
            "ProductionAccessEnabled": False,
            "SendQuota": {
                "Max24HourSend": quota["Max24HourSend"],
                "MaxSendRate": quota["MaxSendRate"],
                "SentLast24Hours": quota["SentLast24Hours"],
            },
        }

    def get_email_identity(self, EmailIdentity: str) -> dict[str, Any]:
        found = self._v1.get_identity_verification_attributes(Identities=[EmailIdentity])
        status = found["VerificationAttributes"].get(EmailIdentity, {}).get("VerificationStatus")
        return {"VerifiedForSendingStatus": status == "Success"}


def upload_tree(s3, folder: pathlib.Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.put_object(
                Bucket=BUCKET,
                Key=prefix + path.relative_to(folder).as_posix(),
                Body=path.read_bytes(),
            )


@contextmanager
def moto_account(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> Iterator[dict]:
    """A moto account holding the stack's bucket, verified sender, ledger table and topics."""
    with fake_aws(monkeypatch):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        upload_tree(s3, REPO / "templates", "templates/")
        upload_tree(s3, EXAMPLE / "attachments", "attachments/")
        boto3.client("ses", region_name=REGION).verify_email_identity(
            EmailAddress="talent@example.com"
        )
        create_ledger_table(boto3.client("dynamodb", region_name=REGION))
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topics = {}
        for name in ("SummaryTopic", "AlertTopic"):
            topics[name] = sns.create_topic(Name=name)["TopicArn"]
            queue = sqs.create_queue(QueueName=name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
            sns.subscribe(
                TopicArn=topics[name], Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"]
            )
        monkeypatch.setattr(ses_account, "sesv2_client", MotoSesAccount)
        yield {"s3": s3, "sns": sns, "sqs": sqs, "topics": topics, "tmp": tmp_path}


def run_on_engine(
    account: dict,
    key: str,
    sender: str = SENDER,
    *,
    wrap: Callable[[str, str], Callable[..., Any]] | None = None,
    event_key: str | None = None,
    metadata: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
    body: bytes | None = None,
    sleep: Callable[[float], None] | None = None,
    state_machine: str = "LocalStateMachine",
) -> dict[str, Any]:
    """Upload the example CSV under ``key`` (with S3 user ``metadata``) and run the definition
    on the local engine (on an event naming ``event_key``, the key as the event spells it, when
    given, and the upload's version where the bucket keeps versions), the functions'
    environment as the stack sets it plus ``settings``. ``body``, when given, is uploaded in
    place of the example CSV.

    ``wrap(function, handler)``, when given, returns what the engine invokes in place of each
    function's handler (``module:callable``); ``sleep``, how the engine waits before a retry;
    ``state_machine``, the name in the execution's ARNs.
    """
    body = body if body is not None else (EXAMPLE / "recipients.csv").read_bytes()
    event = upload(account, key, body, metadata=metadata, event_key=event_key)
    return start_on_engine(
        account,
        event,
        sender,
        wrap=wrap,
        settings=settings,
        sleep=sleep,
        state_machine=state_machine,
    )


def upload(
    account: dict,
    key: str,
    body: bytes,
    *,
    metadata: dict[str, str] | None = None,
    event_key: str | None = None,
) -> dict[str, Any]:
    """Put ``body`` under ``key``; return the Object Created event EventBridge would deliver
    for it (its key spelled ``event_key`` when given)."""
    put = account["s3"].put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata or {})
    event = object_created_event(BUCKET, event_key or key, len(body), put["ETag"].strip('"'))
    if put.get("VersionId") and "version-id" not in event["detail"]["object"]:
        event["detail"]["object"]["version-id"] = put["VersionId"]  # as S3 names it
    return event


def redrive_on_engine(
    account: dict, execution: str, *, settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """Redrive an execution that run_on_engine started, the functions' environment as the
    stack sets it plus ``settings``."""
    from functions.send_batch import app as send_batch_app

    with environment(functions_environment(SENDER, settings)):
        send_batch_app.reset()
        return engine_on(account).redrive(execution)


def functions_environment(
    sender: str = SENDER, settings: dict[str, str] | None = None
) -> dict[str, str]:
    """The functions' environment as the stack sets it, plus ``settings``."""
    return {
        "MAILMATRIX_STORAGE": "s3",
        "MAILMATRIX_MAILER": "ses",
        "MAILMATRIX_LEDGER": "dynamodb://ledger",
        "MAILMATRIX_SENDER": sender,
        "MAILMATRIX_MAX_CONCURRENCY": "2",
        "MAILMATRIX_SEND_RATE": "0",
        "MAILMATRIX_STACK": STACK,
        "POWERTOOLS_SERVICE_NAME": "mailmatrix",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **(settings or {}),
    }


def engine_on(
    account: dict,
    *,
    wrap: Callable[[str, str], Callable[..., Any]] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Any:
    """The local engine with the stack's functions (``wrap`` as for run_on_engine) and the
    moto account's S3 and SNS; ``sleep``, how it waits before a retry."""
    from mailmatrix.engine import Engine, ResourceRegistry

    s3 = account["s3"]
    registry = ResourceRegistry()
    for name, target in sam_functions(load_sam_template()).items():
        registry.register_lambda(name, wrap(name, target) if wrap else target)
    notifier = SnsNotifier(account["sns"])
    registry.register_service(
        "arn:aws:states:::sns:publish",
        lambda p: {
            "MessageId": notifier.publish(
                p["TopicArn"], Notification(p.get("Subject", ""), p["Message"])
            )
        },
    )
    registry.set_object_store(
        lambda bucket, k: S3Storage(bucket, s3).get(k),
        lambda bucket, k, data: S3Storage(bucket, s3).put(k, data),
    )
    return Engine(account["tmp"] / "executions", registry, sleep=sleep or time.sleep)


def start_on_engine(
    account: dict,
    event: dict[str, Any],
    sender: str = SENDER,
    *,
    wrap: Callable[[str, str], Callable[..., Any]] | None = None,
    settings: dict[str, str] | None = None,
    sleep: Callable[[float], None] | None = None,
    state_machine: str = "LocalStateMachine",
) -> dict[str, Any]:
    """Run the definition on the local engine for ``event`` (see run_on_engine)."""
    from functions.send_batch import app as send_batch_app

    substitutions = sam_substitutions(load_sam_template())
    substitutions.update(SummaryTopicArn=account["topics"]["SummaryTopic"])
    with environment(functions_environment(sender, settings)):
        send_batch_app.reset()
        return engine_on(account, wrap=wrap, sleep=sleep).start(
            DEFINITION.read_text(encoding="utf-8"),
            event,
            substitutions=substitutions,
            state_machine_name=state_machine,
        )


def received(account: dict, topic: str) -> list[dict[str, Any]]:
    queue = account["sqs"].get_queue_url(QueueName=topic)["QueueUrl"]
    messages = account["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_the_campaign_runs_on_aws_adapters_and_never_sends_twice(account):
    from moto.ses.models import ses_backends

    # WHEN the example campaign is uploaded and the state machine runs
    record = run_on_engine(account, "incoming/offers.csv")

    # THEN it succeeded, SES accepted one message per valid row
    assert record["status"] == "SUCCEEDED", record.get("cause")
    sent = ses_backends[ACCOUNT][REGION].sent_messages
    assert len(sent) == 18
    assert {message.source for message in sent} == {"talent@example.com"}
    assert all("From: Acme Talent <talent@example.com>" in m.raw_data for m in sent)

    # AND the summary was published to the summary topic, nothing to the alerts topic
    (summary,) = received(account, "SummaryTopic")
    assert "18" in summary["Message"]
    assert received(account, "AlertTopic") == []

    # AND the ledger holds one sent entry per message, found by SES's message id
    campaign = (
        json.loads(record["output"]) if isinstance(record["output"], str) else record["output"]
    )
    ledger = DynamoDbLedger("ledger", boto3.client("dynamodb", region_name=REGION))
    outcomes = [o for o in ledger_outcomes(ledger) if o.state == "sent"]
    assert sorted(o.message_id for o in outcomes) == sorted(m.id for m in sent)
    assert ledger.find_by_message_id(sent[0].id).state == "sent"
    assert campaign["counts"]["sent"] == 18

    # AND the summary names the execution's own report, written beside its summary.json
    campaign_id = campaign_id_for(Source(BUCKET, "incoming/offers.csv", "", None))
    reports = f"reports/{campaign_id}/{record['name']}/"
    assert campaign["report_key"] == f"{reports}report.csv"
    assert f"s3://{BUCKET}/{reports}report.csv" in summary["Message"]
    written = account["s3"].list_objects_v2(Bucket=BUCKET, Prefix=reports)["Contents"]
    assert {o["Key"] for o in written} >= {f"{reports}report.csv", f"{reports}summary.json"}

    # WHEN the identical file is uploaded again THEN nothing more is sent
    again = run_on_engine(account, "incoming/offers.csv")
    assert again["status"] == "SUCCEEDED"
    assert len(ses_backends[ACCOUNT][REGION].sent_messages) == 18
    # AND that run's report is its own: the first one's still says it sent every row
    first = account["s3"].get_object(Bucket=BUCKET, Key=f"{reports}report.csv")["Body"].read()
    assert first.decode("utf-8-sig").count(",sent,") == 18


def ledger_outcomes(ledger: DynamoDbLedger) -> list:
    """Every email entry of the table (one campaign in this test)."""
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName="ledger")["Items"]
    campaigns = {i["campaign"]["S"] for i in items if "campaign" in i}
    return [o for c in sorted(campaigns) for o in ledger.outcomes(c)]


def test_an_unverified_sender_stops_before_sending_and_alerts(account):
    from moto.ses.models import ses_backends

    # WHEN the campaign names a sender whose identity SES has not verified
    record = run_on_engine(account, "incoming/offers.csv", sender="Other <hr@example.net>")

    # THEN the run failed in the preflight with the reason, and nothing was sent or summarized
    # (on AWS the stack's ExecutionAlertRule turns the failed status into the alert)
    assert record["status"] == "FAILED"
    assert record["error"] == "AccountSendingHalted"
    assert "is verified" in record["cause"]
    assert ses_backends[ACCOUNT][REGION].sent_messages == []
    assert received(account, "SummaryTopic") == []


def test_a_column_named_like_a_manifest_constant_fails_validation_on_aws(account):
    from moto.ses.models import ses_backends

    # GIVEN the example file with a `company` column: each candidate's current employer
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    rows = [lines[0] + ",company"] + [f"{line},Globex Ltd" for line in lines[1:]]
    body = ("\n".join(rows) + "\n").encode()

    # WHEN it is uploaded
    record = run_on_engine(account, "incoming/offers.csv", body=body)

    # THEN ValidateRecipients refuses it, naming the clash, and nothing is sent
    assert record["status"] == "FAILED"
    assert record["error"] == "TemplateError"
    assert "column 'company' has the name of the constant 'company'" in record["cause"]
    assert ses_backends[ACCOUNT][REGION].sent_messages == []


def test_a_key_the_event_spells_url_encoded_is_read_as_stored(account):
    # GIVEN a file uploaded with a space and a plus in its name, named URL-encoded by the event
    # (as S3 notifications spell keys)
    key = "incoming/offers 2026+1.csv"

    # WHEN the state machine runs on that event
    record = run_on_engine(account, key, event_key="incoming/offers+2026%2B1.csv")

    # THEN the file as stored was read and its rows sent
    assert record["status"] == "SUCCEEDED", record.get("cause")
    output = (
        record["output"] if isinstance(record["output"], dict) else json.loads(record["output"])
    )
    assert output["counts"]["sent"] == 18


def test_an_encoded_key_is_tried_decoded_when_s3_answers_403_for_a_missing_object():
    # S3 answers HeadObject on a missing key with 403 when the role may not list the bucket
    from mailmatrix.errors import StorageError
    from mailmatrix.jobs import Source, stored_source

    class ForbiddenWhenMissing:
        def head(self, key: str, *, version: str | None = None) -> object:
            if key != "incoming/offers 2026.csv":
                raise StorageError(f"s3://b/{key}: head failed: 403 Forbidden")
            return object()

    found = stored_source(
        ForbiddenWhenMissing(), Source("b", "incoming/offers+2026.csv", "e", None)
    )

    assert found.key == "incoming/offers 2026.csv"


def test_a_dry_run_upload_validates_and_reports_without_sending(account):
    from moto.ses.models import ses_backends

    # WHEN the campaign is uploaded under incoming/dry-run/
    record = run_on_engine(account, "incoming/dry-run/offers.csv")

    # THEN the run succeeded, nothing was sent, and reports/ holds what it wrote
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert ses_backends[ACCOUNT][REGION].sent_messages == []
    listed = account["s3"].list_objects_v2(Bucket=BUCKET, Prefix="reports/")
    assert [o["Key"] for o in listed.get("Contents", [])] != []
    (summary,) = received(account, "SummaryTopic")
    assert summary["Message"]


def outcome(record: dict[str, Any]) -> dict[str, Any]:
    """The execution's output: the summary."""
    output = record["output"]
    return output if isinstance(output, dict) else json.loads(output)


def test_failed_rows_are_sent_again_only_by_an_upload_that_asks_for_it(account):
    from moto.ses.models import ses_backends

    # GIVEN a campaign whose mail service refused some rows for good
    first = outcome(
        run_on_engine(
            account, "incoming/offers.csv", settings={"MAILMATRIX_FAULTS": "permanent=0.5,seed=3"}
        )
    )
    failed = first["counts"]["failed"]
    assert failed and first["counts"]["sent"] + failed == 18
    # AND the summary says how to send them again on this stack
    (summary,) = received(account, "SummaryTopic")
    command = "mailmatrix aws send offers.csv --stack mailmatrix --retry-failed"
    assert command in summary["Message"]

    # WHEN the file is uploaded again as it was THEN the failed rows stay failed
    again = outcome(run_on_engine(account, "incoming/offers.csv"))
    assert (again["counts"]["sent"], again["counts"]["failed"]) == (0, failed)

    # WHEN it is uploaded with the retry-failed metadata THEN exactly the failed rows go out
    retried = outcome(
        run_on_engine(account, "incoming/offers.csv", metadata={"mailmatrix-retry-failed": "true"})
    )
    counts = retried["counts"]
    assert (counts["sent"], counts["skipped"], counts["failed"]) == (failed, 18 - failed, 0)
    recipients = Counter(tuple(m.destinations) for m in ses_backends[ACCOUNT][REGION].sent_messages)
    assert len(recipients) == 18 and set(recipients.values()) == {1}


def test_rows_failed_as_outcome_unknown_are_sent_again_only_when_the_upload_asks_for_them(
    account,
):
    from moto.ses.models import ses_backends

    def delivered() -> Counter:
        return Counter(tuple(m.destinations) for m in ses_backends[ACCOUNT][REGION].sent_messages)

    # GIVEN a campaign whose mail service took some rows without answering (timeout drill:
    # after two such tries a row fails as OutcomeUnknown) and refused others for good
    faults = {"MAILMATRIX_FAULTS": "permanent=0.25,timeout=0.2,seed=2"}
    first = outcome(run_on_engine(account, "incoming/offers.csv", settings=faults))
    failed, unknown = first["counts"]["failed"], first["counts"]["unknown"]
    assert 0 < unknown < failed
    # AND the summary gives the command for them apart
    (summary,) = received(account, "SummaryTopic")
    assert "mailmatrix aws send offers.csv --stack mailmatrix --retry-unknown" in summary["Message"]
    before = delivered()

    # WHEN it is uploaded with the retry-failed metadata THEN the rows refused go out, and
    # those failed as OutcomeUnknown stay failed
    retried = outcome(
        run_on_engine(account, "incoming/offers.csv", metadata={"mailmatrix-retry-failed": "true"})
    )
    assert (retried["counts"]["sent"], retried["counts"]["failed"]) == (failed - unknown, unknown)
    after_retry = delivered()
    assert not set(after_retry - before) & set(before)

    # WHEN it is uploaded with the retry-unknown metadata THEN exactly those go out, once more
    last = outcome(
        run_on_engine(account, "incoming/offers.csv", metadata={"mailmatrix-retry-unknown": "true"})
    )
    assert (last["counts"]["sent"], last["counts"]["failed"]) == (unknown, 0)
    last_new = delivered() - after_retry
    assert len(last_new) == unknown and set(last_new.values()) == {1}
    assert set(last_new) <= set(before)


def test_an_attachment_replaced_in_s3_after_validation_by_one_of_its_size_is_not_sent(account):
    import importlib

    from moto.ses.models import ses_backends

    # GIVEN Chen's letter replaced in the bucket once validation listed it, before the first
    # batch is sent, by another letter of the very same size
    s3 = account["s3"]
    key = "attachments/chen-jing.pdf"
    listed = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    other = (b"%PDF-1.4 another candidate's letter\n" * 1000)[: len(listed)]
    replaced: list[str] = []

    def wrap(function: str, target: str) -> Callable[..., Any]:
        module, _, name = target.partition(":")
        handler = getattr(importlib.import_module(module), name)

        def send_batch(event: Any, context: Any) -> Any:
            if not replaced:
                replaced.append(s3.put_object(Bucket=BUCKET, Key=key, Body=other)["ETag"])
            return handler(event, context)

        return send_batch if function == "SendBatchFunction" else handler

    # WHEN the campaign runs
    summary = outcome(run_on_engine(account, "incoming/offers.csv", wrap=wrap))

    # THEN S3 refused the version validation listed (If-Match), so Chen got nothing; the
    # others their letters
    assert replaced
    sent = [tuple(m.destinations) for m in ses_backends[ACCOUNT][REGION].sent_messages]
    assert len(sent) == 17 and not any("chen.jing@example.com" in to for to in sent)
    assert (summary["counts"]["sent"], summary["counts"]["failed"]) == (17, 1)
    report = s3.get_object(Bucket=BUCKET, Key=summary["report_key"])["Body"].read()
    (chen,) = [
        row
        for row in csv.DictReader(io.StringIO(report.decode("utf-8-sig")))
        if row["email"] == "chen.jing@example.com"
    ]
    assert (chen["status"], chen["code"]) == ("failed", "AttachmentChanged")
    assert "chen-jing.pdf is not the file validation listed" in chen["reason"]


def test_a_copy_of_one_persons_letter_in_the_bucket_is_sent_to_neither(account):
    from moto.ses.models import ses_backends

    # GIVEN Amelia's letter put again in the bucket as José's
    s3 = account["s3"]
    letter = (EXAMPLE / "attachments" / "amelia-hart.pdf").read_bytes()
    s3.put_object(Bucket=BUCKET, Key="attachments/jose-garcia.pdf", Body=letter)

    # WHEN the campaign is uploaded and the state machine runs
    record = run_on_engine(account, "incoming/offers.csv")

    # THEN neither of the two was mailed, the 16 other valid rows were
    assert record["status"] == "SUCCEEDED", record.get("cause")
    sent = ses_backends[ACCOUNT][REGION].sent_messages
    assert len(sent) == 16
    mailed = " ".join(str(message.destinations) for message in sent)
    assert "amelia.hart@" not in mailed and "jose.garcia@" not in mailed
    # AND the rejects report in the bucket says why, for both rows
    campaign_id = campaign_id_for(Source(BUCKET, "incoming/offers.csv", "", None))
    key = f"reports/{campaign_id}/{record['name']}/rejects.csv"
    rejects = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8-sig")
    held = {int(r["row"]): r["reason"] for r in csv.DictReader(io.StringIO(rejects))}
    assert held[2].startswith("amelia-hart.pdf has the same contents as jose-garcia.pdf, the")
    assert held[3].startswith("jose-garcia.pdf has the same contents as amelia-hart.pdf, the")


def test_a_letter_in_the_bucket_that_is_no_pdf_is_not_sent_and_goes_once_replaced(account):
    from moto.ses.models import ses_backends

    # GIVEN José's letter in the bucket a Word document saved as jose-garcia.pdf
    s3 = account["s3"]
    word = b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml" + bytes(200) + b"word/"
    s3.put_object(Bucket=BUCKET, Key="attachments/jose-garcia.pdf", Body=word)

    # WHEN the campaign is uploaded and the state machine runs
    first = outcome(run_on_engine(account, "incoming/offers.csv"))

    # THEN validation passed the row (it reads no file's start on S3), the send did not: José
    # got nothing, his row failed saying what the file is; the 17 others were mailed
    assert (first["counts"]["sent"], first["counts"]["failed"]) == (17, 1)
    mailed = " ".join(str(m.destinations) for m in ses_backends[ACCOUNT][REGION].sent_messages)
    assert "jose.garcia@" not in mailed
    report = s3.get_object(Bucket=BUCKET, Key=first["report_key"])["Body"].read()
    rows = {int(r["row"]): r for r in csv.DictReader(io.StringIO(report.decode("utf-8-sig")))}
    assert (rows[3]["status"], rows[3]["code"]) == ("failed", "AttachmentNotPdf")
    assert rows[3]["reason"].startswith(
        "attachment is not a PDF: jose-garcia.pdf looks like a Word document (.docx, a PK zip)"
    )

    # WHEN his letter is put in its place and the file uploaded again as it was
    letter = (EXAMPLE / "attachments" / "jose-garcia.pdf").read_bytes()
    s3.put_object(Bucket=BUCKET, Key="attachments/jose-garcia.pdf", Body=letter)
    again = outcome(run_on_engine(account, "incoming/offers.csv"))

    # THEN his row goes out, and no one else's again
    assert (again["counts"]["sent"], again["counts"]["skipped"]) == (1, 17)
    assert len(ses_backends[ACCOUNT][REGION].sent_messages) == 18


@pytest.mark.parametrize("default", ["amelia-hart.pdf", "welcome.pdf"], ids=["named", "copy"])
def test_a_default_attachment_that_is_one_persons_letter_in_the_bucket_sends_nothing(
    account, default
):
    from moto.ses.models import ses_backends

    # GIVEN a set "welcome" in the bucket whose default_attachment is Amelia's letter, by its
    # key or as a copy under another key, and two rows picking the set with no file of their own
    s3 = account["s3"]
    letter = (EXAMPLE / "attachments" / "amelia-hart.pdf").read_bytes()
    s3.put_object(Bucket=BUCKET, Key="attachments/welcome.pdf", Body=letter)
    add_template_set(
        s3, "welcome", f"when: [Welcome]\nattachment: optional\ndefault_attachment: {default}"
    )
    body = (EXAMPLE / "recipients.csv").read_bytes()
    body += b"new.one@example.com,New One,Welcome,,Tester,QA,2027-02-01,1\n"
    body += b"new.two@example.com,New Two,Welcome,,Tester,QA,2027-02-01,1\n"

    # WHEN the file is uploaded and the state machine runs
    record = run_on_engine(account, "incoming/offers.csv", body=body)

    # THEN ValidateRecipients refused the file, naming the set, the file and Amelia's row, and
    # nothing was sent
    assert record["status"] == "FAILED"
    assert record["error"] == "TemplateError"
    cause = json.loads(record["cause"])["errorMessage"]
    named = "that file" if default == "amelia-hart.pdf" else "amelia-hart.pdf, a file with the"
    assert cause.startswith(
        f"incoming/offers.csv: template set 'welcome' attaches its default_attachment {default}"
        f" to every row of the set whose Attachment_File is empty, and row 2 names {named}"
    )
    assert ses_backends[ACCOUNT][REGION].sent_messages == []


NEW_PERSON = b"new.person@example.com,New Person,Offer,new-person.pdf,QA,QA,2027-02-01,1\n"


def sent_then_copied(account: dict) -> list:
    """Send the campaign once (Amelia, row 2, gets her letter), then put a copy of her letter
    in the bucket as new-person.pdf; return SES's list of the messages sent."""
    from moto.ses.models import ses_backends

    sent = ses_backends[ACCOUNT][REGION].sent_messages
    assert run_on_engine(account, "incoming/offers.csv")["status"] == "SUCCEEDED"
    assert len(sent) == 18
    letter = (EXAMPLE / "attachments" / "amelia-hart.pdf").read_bytes()
    account["s3"].put_object(Bucket=BUCKET, Key="attachments/new-person.pdf", Body=letter)
    return sent


def rejects_of(account: dict, record: dict) -> list[dict[str, str]]:
    """The rows of the rejects report of the execution ``record`` of incoming/offers.csv."""
    campaign_id = campaign_id_for(Source(BUCKET, "incoming/offers.csv", "", None))
    key = f"reports/{campaign_id}/{record['name']}/rejects.csv"
    rejects = account["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return list(csv.DictReader(io.StringIO(rejects.decode("utf-8-sig"))))


def test_a_copy_of_a_letter_sent_by_an_earlier_upload_names_the_new_row_as_the_suspect(account):
    # GIVEN the campaign sent once, and a copy of Amelia's letter in the bucket
    sent = sent_then_copied(account)

    # WHEN a row for a new person naming the copy is added, and the file is uploaded again
    body = (EXAMPLE / "recipients.csv").read_bytes()
    row = len(body.splitlines()) + 1
    record = run_on_engine(account, "incoming/offers.csv", body=body + NEW_PERSON)

    # THEN nothing more is mailed, and the rejects report says Amelia's row went out already
    # and the new row names a copy of her letter
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert len(sent) == 18
    held = {int(r["row"]): r["reason"] for r in rejects_of(account, record)}
    assert held[2].startswith(
        "amelia-hart.pdf went to this row's recipient in an earlier run of this file, and "
        f"new-person.pdf, the attachment of row {row}, another recipient, has the same contents"
    )
    assert held[row].startswith(
        "new-person.pdf has the same contents as amelia-hart.pdf, the attachment of row 2, "
        "which an earlier run of this file sent to its recipient"
    )


def test_a_copy_of_a_letter_sent_earlier_is_refused_once_the_senders_row_is_gone(account):
    # GIVEN the campaign sent once, and a copy of Amelia's letter in the bucket
    sent = sent_then_copied(account)

    # WHEN the file is uploaded again holding only a new person's row, naming the copy
    header = (EXAMPLE / "recipients.csv").read_bytes().splitlines()[0]
    record = run_on_engine(account, "incoming/offers.csv", body=header + b"\n" + NEW_PERSON)

    # THEN nothing more is mailed: the ledger's owners (read from its by_campaign index) hold
    # Amelia's file to her, and the rejects say which earlier letter it is
    assert len(sent) == 18
    (held,) = rejects_of(account, record)
    assert (held["row"], held["email"]) == ("2", "n***@example.com")
    assert held["reason"].startswith(
        "new-person.pdf has the same contents as amelia-hart.pdf, which an earlier run of this"
        " file sent to another recipient (a***@example.com) as their own letter (row 2 of that"
        " run)"
    )


def test_a_row_held_for_a_letter_an_earlier_upload_sent_names_the_added_row_as_the_suspect(
    account,
):
    from moto.ses.models import ses_backends

    sent = ses_backends[ACCOUNT][REGION].sent_messages
    # GIVEN the campaign sent once: Amelia (row 2) and José (row 3) got their letters
    assert run_on_engine(account, "incoming/offers.csv")["status"] == "SUCCEEDED"
    assert len(sent) == 18

    # WHEN rows are added naming Amelia's file for a new person, and José's address with
    # another name, and the file is uploaded again
    body = (EXAMPLE / "recipients.csv").read_bytes()
    row = len(body.splitlines()) + 1
    body += b"new.person@example.com,New Person,Offer,amelia-hart.pdf,QA,QA,2027-02-01,1\n"
    body += "jose.garcia@example.org,José G,Offer,jose-garcia.pdf,QA,QA,2027-02-01,1\n".encode()
    record = run_on_engine(account, "incoming/offers.csv", body=body)

    # THEN nothing more is mailed, and the rejects report says the first rows went out
    # already and need nothing, and the added rows are the ones held
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert len(sent) == 18
    campaign_id = campaign_id_for(Source(BUCKET, "incoming/offers.csv", "", None))
    key = f"reports/{campaign_id}/{record['name']}/rejects.csv"
    rejects = account["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    held = {
        int(r["row"]): r["reason"] for r in csv.DictReader(io.StringIO(rejects.decode("utf-8-sig")))
    }
    assert held[2].startswith(
        "amelia-hart.pdf went to this row's recipient in an earlier run of this file, and "
        f"row {row}, another recipient, names it too"
    )
    assert held[3].startswith(
        "this row's letter went to its address in an earlier run of this file, and row "
        f"{row + 1} has the same address with other values in Name, Position, Department, "
        "Start_Date, Salary"
    )
    assert held[row].startswith(
        "amelia-hart.pdf is already the attachment of row 2, another recipient, which an "
        "earlier run of this file sent to its recipient"
    )
    assert held[row + 1].startswith(
        "row 3 has the same address with other values in Name, Position, Department, "
        "Start_Date, Salary, and an earlier run of this file sent row 3's letter to it"
    )
    assert "neither is sent" not in " ".join(held[n] for n in (2, 3, row, row + 1))


def rename_template_set(s3: Any, old: str, new: str) -> None:
    """Rename a template set in the bucket as an operator would: its folder under templates/,
    and its name in manifest.yaml."""
    for listed in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"templates/{old}/")["Contents"]:
        body = s3.get_object(Bucket=BUCKET, Key=listed["Key"])["Body"].read()
        moved = f"templates/{new}/" + listed["Key"].removeprefix(f"templates/{old}/")
        s3.put_object(Bucket=BUCKET, Key=moved, Body=body)
        s3.delete_object(Bucket=BUCKET, Key=listed["Key"])
    edit_manifest(s3, lambda text: text.replace(f"\n  {old}:\n", f"\n  {new}:\n"))


def edit_manifest(s3: Any, change: Callable[[str], str]) -> None:
    """Replace templates/manifest.yaml in the bucket with ``change`` of its text."""
    key = "templates/manifest.yaml"
    text = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8")
    s3.put_object(Bucket=BUCKET, Key=key, Body=change(text).encode("utf-8"))


def add_template_set(s3: Any, name: str, spec: str) -> None:
    """Add the template set ``name`` to the bucket's templates (a subject and a text body),
    its manifest entry the YAML lines ``spec``."""
    s3.put_object(Bucket=BUCKET, Key=f"templates/{name}/subject.txt", Body=b"Hi {{ Name }}")
    s3.put_object(Bucket=BUCKET, Key=f"templates/{name}/body.txt", Body=b"A letter.\n")
    entry = f"  {name}:\n" + "".join(f"    {line}\n" for line in spec.splitlines())
    edit_manifest(
        s3,
        lambda text: text.replace(
            "\n# Values that are not errors", entry + "\n# Values that are not errors"
        ),
    )


def offers_ledger() -> tuple[DynamoDbLedger, str]:
    """The stack's ledger, and the campaign id of incoming/offers.csv."""
    campaign = campaign_id_for(Source(BUCKET, "incoming/offers.csv", "", None))
    return DynamoDbLedger("ledger", boto3.client("dynamodb", region_name=REGION)), campaign


def history_of(account: dict, execution: str) -> list[dict[str, Any]]:
    """The history the local engine recorded for ``execution``."""
    from mailmatrix.engine import Engine, ResourceRegistry

    return Engine(account["tmp"] / "executions", ResourceRegistry()).history(execution)


def test_a_template_set_renamed_in_the_bucket_is_refused_before_anything_is_sent(account):
    from moto.ses.models import ses_backends

    sent = ses_backends[ACCOUNT][REGION].sent_messages
    # GIVEN the campaign sent once
    assert run_on_engine(account, "incoming/offers.csv")["status"] == "SUCCEEDED"
    assert len(sent) == 18
    assert len(received(account, "SummaryTopic")) == 1

    # WHEN templates/offer/ is renamed templates/offer-2026/ (in manifest.yaml too) and the
    # same file is uploaded again
    rename_template_set(account["s3"], "offer", "offer-2026")
    record = run_on_engine(account, "incoming/offers.csv")

    # THEN ValidateRecipients refused it, naming the set and the two ways out
    assert record["status"] == "FAILED"
    assert record["error"] == "TemplateSetsChanged"
    cause = json.loads(record["cause"])["errorMessage"]
    assert cause.startswith(
        "offers.csv: earlier runs of this file sent letters of the template set(s) 'offer',"
        " which the templates no longer have (renamed or removed?)."
    )
    assert "Put the set(s) back under the same name(s)" in cause
    assert "send the file under a new file name (a new campaign)" in cause
    # AND no Offer row was mailed again, no summary published
    assert len(sent) == 18
    assert received(account, "SummaryTopic") == []
    # AND the execution failed in ValidateRecipients, tried once (no Retry for it, no Map Run):
    # its FAILED status is what the stack's ExecutionAlertRule turns into the alert
    history = history_of(account, record["name"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "Entered" in e["type"]]
    assert entered == ["ValidateRecipients"]
    tries = ("TaskScheduled", "TaskSucceeded", "TaskFailed")
    assert [e["type"] for e in history if e["type"] in tries] == ["TaskScheduled", "TaskFailed"]
    assert history[-1]["type"] == "ExecutionFailed"
    # AND the ledger still knows the campaign's sets by their first names
    ledger, campaign = offers_ledger()
    assert ledger.template_sets(campaign) == {"offer", "rejection"}

    # WHEN the set gets its name back THEN the file runs, and every row is skipped as sent
    rename_template_set(account["s3"], "offer-2026", "offer")
    back = run_on_engine(account, "incoming/offers.csv")
    assert back["status"] == "SUCCEEDED", back.get("cause")
    assert (outcome(back)["counts"]["sent"], outcome(back)["counts"]["skipped"]) == (0, 18)
    assert len(sent) == 18


def test_a_set_added_beside_the_used_ones_is_allowed_and_its_rows_sent(account):
    from moto.ses.models import ses_backends

    sent = ses_backends[ACCOUNT][REGION].sent_messages
    # GIVEN the campaign sent once
    assert run_on_engine(account, "incoming/offers.csv")["status"] == "SUCCEEDED"

    # WHEN a set "reminder" is added to the bucket's templates, and the file comes again with
    # one more row that picks it
    s3 = account["s3"]
    add_template_set(s3, "reminder", "when: [Reminder]\nattachment: none")
    body = (EXAMPLE / "recipients.csv").read_bytes() + b"new.person@example.com,New Person,"
    body += b"Reminder,,Tester,QA,2027-02-01,1\n"
    record = run_on_engine(account, "incoming/offers.csv", body=body)

    # THEN the run went through: the new row was sent, the others skipped as sent
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert (outcome(record)["counts"]["sent"], outcome(record)["counts"]["skipped"]) == (1, 18)
    assert "new.person@example.com" in sent[-1].destinations
    assert len(sent) == 19
    # AND the campaign's sets now include it
    ledger, campaign = offers_ledger()
    assert ledger.template_sets(campaign) == {"offer", "rejection", "reminder"}


def test_a_redrive_after_a_set_was_renamed_sends_nothing_until_the_set_is_back(account):
    from moto.ses.models import ses_backends

    sent = ses_backends[ACCOUNT][REGION].sent_messages
    # GIVEN a run stopped by the daily quota after 5 emails
    first = run_on_engine(
        account, "incoming/offers.csv", settings={"MAILMATRIX_FAULTS": "quota-after=5"}
    )
    assert first["status"] == "FAILED"
    assert len(sent) == 5
    # AND the set offer renamed since, and the quota halt lifted by the operator
    rename_template_set(account["s3"], "offer", "offer-2026")
    ledger, campaign = offers_ledger()
    ledger.clear_halt(campaign)

    # WHEN the execution is redriven (its failed batch runs again; Validate does not)
    redriven = redrive_on_engine(account, first["name"])

    # THEN the batch sent nothing: it failed as TemplateSetsChanged, and the Map with it
    assert redriven["status"] == "FAILED"
    from mailmatrix.engine import Engine, ResourceRegistry

    engine = Engine(account["tmp"] / "executions", ResourceRegistry())
    (map_run,) = engine.describe(first["name"])["mapRuns"]
    children = engine.map_run_children(first["name"], map_run["id"])
    assert {c["error"] for c in children if c["status"] == "FAILED"} == {"TemplateSetsChanged"}
    assert len(sent) == 5

    # WHEN the set has its name back and the execution is redriven again THEN the rest went
    # out, each recipient mailed once
    rename_template_set(account["s3"], "offer-2026", "offer")
    again = redrive_on_engine(account, first["name"])
    assert again["status"] == "SUCCEEDED", again.get("cause")
    recipients = Counter(tuple(m.destinations) for m in sent)
    assert len(recipients) == 18 and set(recipients.values()) == {1}
