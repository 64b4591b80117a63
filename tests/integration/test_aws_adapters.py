"""S3 storage, SES v2 mailer, SNS notifier and the SES preflight, against moto or a Stubber."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from mailmatrix.adapters import _aws, ses_account
from mailmatrix.adapters.mailer_ses import SesMailer, classify
from mailmatrix.adapters.notifier_sns import SnsNotifier, sns_subject
from mailmatrix.adapters.storage_s3 import S3Storage
from mailmatrix.adapters.wiring import row_reserve_s
from mailmatrix.core.pacing import BATCH_TIME_S
from mailmatrix.core.send import RetryPolicy
from mailmatrix.errors import (
    AccountSendingHalted,
    NotFoundError,
    ObjectChanged,
    PermanentSendError,
    Throttled,
    TransientSendError,
)
from mailmatrix.ports import Notification
from mailmatrix.settings import Settings
from tests.fixtures.aws import fake_aws

REGION = "eu-west-1"
RAW = b"From: Talent <talent@example.com>\r\nTo: anna@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"


@pytest.fixture
def aws(monkeypatch):
    with fake_aws(monkeypatch):
        yield


# ---------------------------------------------------------------- S3


@pytest.fixture
def storage(aws):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mail", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket="mail", VersioningConfiguration={"Status": "Enabled"})
    return S3Storage("mail", s3)


def test_storage_round_trip_with_etag_and_version(storage):
    info = storage.put("reports/c/rejects.csv", b"row,reason\n", content_type="text/csv")
    assert storage.get("reports/c/rejects.csv") == b"row,reason\n"
    head = storage.head("reports/c/rejects.csv")
    assert (head.key, head.size, head.etag, head.version_id) == (
        "reports/c/rejects.csv",
        11,
        info.etag,
        info.version_id,
    )
    assert info.version_id is not None and info.etag and '"' not in info.etag
    with storage.open("reports/c/rejects.csv") as stream:
        assert stream.read() == b"row,reason\n"


def test_storage_lists_a_prefix_in_key_order(storage, tmp_path):
    for key in ("templates/b.txt", "templates/a.txt", "attachments/x.pdf"):
        storage.put(key, b"x")
    big = tmp_path / "manifest.jsonl"
    big.write_bytes(b"{}\n" * 1000)
    storage.put_file("templates/c.jsonl", str(big))
    listed = [(o.key, o.size) for o in storage.list("templates/")]
    assert listed == [("templates/a.txt", 1), ("templates/b.txt", 1), ("templates/c.jsonl", 3000)]


def test_a_fetch_by_tag_gets_the_version_listed_or_none(storage):
    # GIVEN two letters of the same size, listed with their ETags as tags
    storage.put("attachments/anna.pdf", b"%PDF Anna 68,000")
    storage.put("attachments/bob.pdf", b"%PDF Bob 61,000 ")
    tags = {o.key: o.tag for o in storage.list("attachments/")}
    assert tags["attachments/bob.pdf"] == storage.head("attachments/bob.pdf").etag
    assert storage.get("attachments/bob.pdf", tag=tags["attachments/bob.pdf"]).startswith(b"%PDF")

    # WHEN Bob's letter is replaced by one of the same size
    storage.put("attachments/bob.pdf", b"%PDF Bob 99,000 ")

    # THEN S3 refuses the version listed (If-Match: 412), and a fetch without a tag still reads
    with pytest.raises(ObjectChanged, match=r"s3://mail/attachments/bob\.pdf: get: not the"):
        storage.get("attachments/bob.pdf", tag=tags["attachments/bob.pdf"])
    assert storage.get("attachments/bob.pdf") == b"%PDF Bob 99,000 "


def test_a_fetch_by_tag_sends_if_match_and_reads_s3s_412_as_changed():
    # GIVEN S3 as it answers a GetObject whose If-Match does not hold (moto aside)
    s3 = boto3.client("s3", region_name=REGION)
    stub = Stubber(s3)
    expected = {"Bucket": "mail", "Key": "attachments/bob.pdf", "IfMatch": '"9b2cf535"'}
    stub.add_client_error(
        "get_object",
        service_error_code="PreconditionFailed",
        service_message="At least one of the pre-conditions you specified did not hold",
        http_status_code=412,
        expected_params=expected,
    )

    # THEN the ETag goes quoted in If-Match, and the answer is ObjectChanged
    with stub, pytest.raises(ObjectChanged):
        S3Storage("mail", s3).get("attachments/bob.pdf", tag="9b2cf535")
    stub.assert_no_pending_responses()


def test_a_checksum_is_the_full_object_one_s3_keeps_in_the_version_listed(storage):
    # GIVEN a letter put whole (boto3 sends a CRC32), one with SHA-256, and one uploaded in
    # parts (its checksum is of the parts' checksums)
    storage.put("attachments/anna.pdf", b"%PDF Anna 68,000")
    storage._s3.put_object(
        Bucket="mail", Key="attachments/bob.pdf", Body=b"%PDF Bob", ChecksumAlgorithm="SHA256"
    )
    storage._s3.upload_fileobj(io.BytesIO(b"%" * (9 * 1024 * 1024)), "mail", "attachments/big")
    tags = {o.key: o.tag for o in storage.list("attachments/")}

    # THEN the whole letters' checksums are given with their algorithm, the parted one's not
    anna = storage.checksum("attachments/anna.pdf", tag=tags["attachments/anna.pdf"])
    assert anna is not None and anna.startswith("CRC32 ")
    assert anna == storage.checksum("attachments/anna.pdf")
    bob = storage.checksum("attachments/bob.pdf", tag=tags["attachments/bob.pdf"])
    assert bob is not None and bob.startswith("SHA256 ")
    assert storage.checksum("attachments/big", tag=tags["attachments/big"]) is None

    # WHEN Anna's letter is replaced THEN the version listed is gone: ObjectChanged
    storage.put("attachments/anna.pdf", b"%PDF Anna 99,000")
    with pytest.raises(ObjectChanged, match=r"s3://mail/attachments/anna\.pdf: head: not the"):
        storage.checksum("attachments/anna.pdf", tag=tags["attachments/anna.pdf"])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"ChecksumCRC64NVME": "AAAA", "ChecksumType": "FULL_OBJECT"}, "CRC64NVME AAAA"),
        ({"ChecksumCRC32": "AAAA-3", "ChecksumType": "COMPOSITE", "ETag": '"e-3"'}, None),
        ({"ChecksumCRC32": "AAAA", "ChecksumType": "COMPOSITE", "ETag": '"e-3"'}, None),
        ({"ChecksumCRC32": "AAAA", "ETag": '"e-3"'}, None),  # parts, no type named
        ({"ChecksumSHA256": "AAAA", "ETag": '"e"'}, "SHA256 AAAA"),  # whole, no type named
        ({"ETag": '"e"'}, None),  # stored before S3 kept checksums
    ],
    ids=["full-object", "composite", "composite-unsuffixed", "multipart", "whole", "none"],
)
def test_only_a_checksum_of_the_whole_object_counts(answer, expected):
    # GIVEN S3 answering HeadObject with ChecksumMode=ENABLED as it does (moto aside)
    s3 = boto3.client("s3", region_name=REGION)
    stub = Stubber(s3)
    asked = {"Bucket": "mail", "Key": "attachments/a.pdf", "ChecksumMode": "ENABLED"}
    stub.add_response("head_object", answer, {**asked, "IfMatch": '"e"'})

    # THEN a composite checksum (which tells copies uploaded in other parts apart) is none
    with stub:
        assert S3Storage("mail", s3).checksum("attachments/a.pdf", tag="e") == expected


def test_storage_missing_object_is_not_found(storage):
    with pytest.raises(NotFoundError, match=r"s3://mail/incoming/none\.csv: get"):
        storage.get("incoming/none.csv")
    with pytest.raises(NotFoundError, match="head"):
        storage.head("incoming/none.csv")


def test_storage_reads_a_given_version_or_only_a_given_etag(storage):
    # GIVEN two uploads under one key, the first with metadata
    s3 = boto3.client("s3", region_name=REGION)
    first = s3.put_object(Bucket="mail", Key="incoming/a.csv", Body=b"A", Metadata={"m": "1"})
    storage.put("incoming/a.csv", b"B")

    # WHEN the first version is asked for THEN it is read, content and metadata
    head = storage.head("incoming/a.csv", version=first["VersionId"])
    assert (head.version_id, head.metadata) == (first["VersionId"], {"m": "1"})
    with storage.open("incoming/a.csv", version=first["VersionId"]) as stream:
        assert stream.read() == b"A"
    # AND asked by the first's ETag, the object (now the second) is refused, not read
    etag = first["ETag"].strip('"')
    with pytest.raises(ObjectChanged, match=f"s3://mail/incoming/a.csv: get: .*{etag}"):
        storage.open("incoming/a.csv", tag=etag)
    with pytest.raises(ObjectChanged, match="head"):
        storage.head("incoming/a.csv", tag=etag)
    # AND a version that is not there is not found
    with pytest.raises(NotFoundError):
        storage.head("incoming/a.csv", version="no-such-version")


# ---------------------------------------------------------------- SES v2


@pytest.fixture
def ses(aws):
    client = boto3.client("sesv2", region_name=REGION)
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress="talent@example.com")
    return client


def test_mailer_sends_raw_mail_through_ses_v2(ses):
    mailer = SesMailer(client=ses)
    message_id = mailer.send(
        RAW, sender="Talent <talent@example.com>", destinations=["anna@example.org"]
    )
    assert message_id
    from moto.ses.models import ses_backends

    (sent,) = ses_backends["123456789012"][REGION].sent_messages
    assert sent.id == message_id
    assert "anna@example.org" in sent.destinations
    assert "Subject: Hi" in sent.raw_data


@pytest.mark.parametrize(
    ("key", "tags"),
    [
        ("", {}),
        # SesEvents reads the letter's key from the message tag (mail.tags), beside the tags
        # SES adds itself for the configuration set
        ("ab" * 32, {"EmailTags": [{"Name": "mailmatrix-key", "Value": "ab" * 32}]}),
    ],
    ids=["no-key", "tagged-with-its-key"],
)
def test_mailer_names_the_configuration_set_and_tags_the_letter_with_its_key(key, tags):
    client = boto3.client(
        "sesv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_response(
            "send_email",
            {"MessageId": "m-1"},
            {
                "FromEmailAddress": "talent@example.com",
                "Destination": {"ToAddresses": ["anna@example.org"]},
                "Content": {"Raw": {"Data": RAW}},
                "ConfigurationSetName": "mailmatrix",
                **tags,
            },
        )
        mailer = SesMailer(configuration_set="mailmatrix", client=client)
        sent = mailer.send(
            RAW, sender="talent@example.com", destinations=["anna@example.org"], key=key
        )
        assert sent == "m-1"
        stub.assert_no_pending_responses()


def client_error(code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendEmail",
    )


NOT_VERIFIED = (
    "Email address is not verified. The following identities failed the check in region "
    "EU-WEST-1: {}"
)


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("Throttling", "Maximum sending rate exceeded.", 400, Throttled),
        ("ThrottlingException", "Maximum sending rate exceeded.", 400, Throttled),
        ("TooManyRequestsException", "Too many requests", 429, Throttled),
        ("Throttling", "Daily message quota exceeded.", 400, AccountSendingHalted),
        ("LimitExceededException", "Daily message quota exceeded", 400, AccountSendingHalted),
        ("AccountSendingPausedException", "paused", 400, AccountSendingHalted),
        ("SendingPausedException", "paused", 400, AccountSendingHalted),
        ("MailFromDomainNotVerifiedException", "no", 400, AccountSendingHalted),
        ("NotFoundException", "configuration set mailmatrix", 404, AccountSendingHalted),
        ("MessageRejected", NOT_VERIFIED.format("bob@example.com"), 400, PermanentSendError),
        ("MessageRejected", NOT_VERIFIED.format("talent@example.com"), 400, AccountSendingHalted),
        ("BadRequestException", "Invalid address", 400, PermanentSendError),
        ("InternalFailure", "oops", 500, TransientSendError),
        ("ServiceUnavailable", "later", 503, TransientSendError),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_ses_errors_are_classified(code, message, status, kind):
    error = classify(client_error(code, message, status), sender="Talent <talent@example.com>")
    assert type(error) is kind
    assert error.details["code"] == code
    assert code in error.message


def test_case_19_one_rejected_recipient_is_permanent_and_keeps_the_ses_words_masked():
    error = classify(
        client_error("MessageRejected", NOT_VERIFIED.format("bob@example.com")),
        sender="talent@example.com",
    )
    assert isinstance(error, PermanentSendError)
    assert error.details["code"] == "MessageRejected"
    assert error.message.endswith(NOT_VERIFIED.format("b***@example.com"))


def test_a_sender_not_verified_halts_with_its_address_masked():
    # GIVEN SES's refusal naming the sender among the identities that failed the check
    identities = NOT_VERIFIED.format("bob@example.com, talent@example.com")
    refusal = client_error("MessageRejected", identities)

    # WHEN it is classified THEN the campaign halts, and the reason names no address in full
    error = classify(refusal, sender="Talent <talent@example.com>")
    assert isinstance(error, AccountSendingHalted)
    assert error.message == (
        "ses: send_email: MessageRejected: "
        + NOT_VERIFIED.format("b***@example.com, t***@example.com")
    )


def test_connection_failures_are_transient():
    class Unreachable:
        def send_email(self, **_):
            raise EndpointConnectionError(endpoint_url="https://email.eu-west-1.amazonaws.com")

    with pytest.raises(TransientSendError, match="connection failed") as caught:
        SesMailer(client=Unreachable()).send(RAW, sender="t@example.com", destinations=["a@b.c"])
    assert caught.value.refused  # the request never reached SES


def test_which_ses_faults_may_hide_a_sent_message():
    # 503: SES declined the request; 500: it may have acted before failing
    unavailable = classify(client_error("ServiceUnavailable", "later", 503))
    internal = classify(client_error("InternalFailure", "oops", 500))
    assert (unavailable.refused, internal.refused) == (True, False)


def test_the_ses_client_of_a_mailer_does_not_retry_a_send_itself(aws):
    # A retry inside botocore would hide that the first try reached SES
    mailer = SesMailer()
    assert mailer._ses.meta.config.retries["total_max_attempts"] == 1


def test_every_aws_call_is_bounded_well_below_botocore_s_default_read_timeout(aws):
    # GIVEN the clients SendBatch uses: the mailer's, and the ledger's
    sending = SesMailer()._ses.meta.config
    other = _aws.client("dynamodb").meta.config

    # THEN each call waits 5 s to connect and 15 s for an answer (not botocore's 60 s), and
    # the ledger's is tried 3 times in all
    for config in (sending, other):
        assert (config.connect_timeout, config.read_timeout) == (5, 15)
    assert other.retries == {"total_max_attempts": 3, "mode": "standard"}
    assert sending.retries["total_max_attempts"] == 1


def test_the_reserve_on_aws_covers_a_send_left_unanswered_and_the_ledger_write_after_it():
    # One SendEmail that waits out both timeouts, then the ledger's write tried 3 times so,
    # with botocore's waits between tries (standard mode: up to 1 s, then 2 s)
    call = _aws.CONNECT_TIMEOUT_S + _aws.READ_TIMEOUT_S
    worst = call + _aws.CALL_TRIES * call + _aws.RETRY_WAITS_S
    assert worst <= _aws.ROW_RESERVE_S < 900 - BATCH_TIME_S

    # AND SendBatch keeps it on AWS's clients only: the local run keeps core's reserve
    on_aws = Settings(mailer="ses", ledger="dynamodb://ledger")
    local = Settings(mailer="maildir:///outbox", ledger="sqlite:///ledger.db")
    assert (row_reserve_s(on_aws), row_reserve_s(local)) == (_aws.ROW_RESERVE_S, None)
    assert RetryPolicy().reserve_s < _aws.ROW_RESERVE_S


# ---------------------------------------------------------------- SNS


def test_notifier_publishes_subject_message_and_attributes(aws):
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="summaries")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    message_id = SnsNotifier(sns).publish(
        topic,
        Notification(
            subject="Offers: 18 sent\n2 rejected", message="details", attributes={"outcome": "ok"}
        ),
    )

    (received,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    body = json.loads(received["Body"])
    assert body["MessageId"] == message_id
    assert body["Subject"] == "Offers: 18 sent 2 rejected"
    assert body["Message"] == "details"
    assert body["MessageAttributes"]["outcome"]["Value"] == "ok"


def test_sns_subjects_are_ascii_single_line_and_short():
    assert sns_subject("Angebote für Jürgen\r\nok") == "Angebote f r J rgen ok"
    long = sns_subject("x" * 150)
    assert len(long) == 100 and long.endswith("...")


# ---------------------------------------------------------------- preflight


def account(enabled=True, max_24h=50000.0, sent=100.0, rate=14.0):
    return {
        "SendingEnabled": enabled,
        "ProductionAccessEnabled": True,
        "SendQuota": {"Max24HourSend": max_24h, "SentLast24Hours": sent, "MaxSendRate": rate},
    }


ERROR_STATUS = {"NotFoundException": 404, "AccessDeniedException": 403}


def stubbed(responses):
    client = boto3.client(
        "sesv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    stub = Stubber(client)
    for method, response, params in responses:
        if isinstance(response, str):
            stub.add_client_error(
                method,
                service_error_code=response,
                http_status_code=ERROR_STATUS[response],
                expected_params=params,
            )
        else:
            stub.add_response(method, response, params)
    stub.activate()
    return client, stub


@pytest.mark.parametrize(
    "address_error",
    # AccessDenied: the role may read only the domain identity (SenderIdentity = example.com)
    ["NotFoundException", "AccessDeniedException"],
)
def test_preflight_passes_with_a_verified_domain_and_enough_quota(address_error):
    # GIVEN an address SES does not know, or that the role may not read, in a verified domain
    client, stub = stubbed(
        [
            ("get_account", account(), {}),
            ("get_email_identity", address_error, {"EmailIdentity": "talent@example.com"}),
            (
                "get_email_identity",
                {"VerifiedForSendingStatus": True},
                {"EmailIdentity": "example.com"},
            ),
        ]
    )

    # WHEN the preflight checks the sender THEN the domain's verification lets it pass
    result = ses_account.preflight(sender="Talent <talent@example.com>", needed=20, client=client)
    assert result == {"max_send_rate": 14.0, "remaining_24h": 49900}
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("responses", "words"),
    [
        ([("get_account", account(enabled=False), {})], "sending is disabled"),
        (
            [
                ("get_account", account(), {}),
                ("get_email_identity", {"VerifiedForSendingStatus": False}, None),
                ("get_email_identity", "NotFoundException", None),
            ],
            "is verified",
        ),
        (
            [
                ("get_account", account(max_24h=200.0, sent=190.0), {}),
                ("get_email_identity", {"VerifiedForSendingStatus": True}, None),
            ],
            "needs 20 messages but only 10 of 200 remain",
        ),
        (
            [
                ("get_account", account(), {}),
                ("get_email_identity", "AccessDeniedException", None),
                ("get_email_identity", {"VerifiedForSendingStatus": False}, None),
            ],
            r"nor example\.com is verified .* could not be looked up: AccessDeniedException",
        ),
    ],
    ids=["disabled", "unverified", "quota", "address-unreadable-domain-unverified"],
)
def test_preflight_halts_with_the_numbers(responses, words):
    client, _ = stubbed(responses)
    with pytest.raises(AccountSendingHalted, match=words) as raised:
        ses_account.preflight(sender="talent@example.com", needed=20, client=client)
    assert raised.value.details["needed"] == 20
    assert "max_send_rate" in raised.value.details


def test_preflight_stops_when_the_domain_cannot_be_read_either():
    # GIVEN a role that may read neither the address nor its domain
    client, _ = stubbed(
        [
            ("get_account", account(), {}),
            (
                "get_email_identity",
                "AccessDeniedException",
                {"EmailIdentity": "talent@example.com"},
            ),
            ("get_email_identity", "AccessDeniedException", {"EmailIdentity": "example.com"}),
        ]
    )

    # WHEN the preflight checks the sender THEN it stops, naming the refused call
    with pytest.raises(AccountSendingHalted, match=r"get_email_identity: .*AccessDeniedException"):
        ses_account.preflight(sender="talent@example.com", needed=20, client=client)
