"""The bundled demo templates on AWS: `make deploy` puts them in the bucket, and a campaign
sent before the operator's own templates replace them would mail real people the demo
company's letters. ValidateRecipients refuses that, before anything is sent, and lets the demo
go to the domains reserved for examples, a dry run go anywhere, and letters of one's own go.

The stack's workflow runs on the local engine with the AWS adapters under moto (see
tests/e2e/test_aws_adapters_e2e.py): the bucket holds the repository's templates/ as
`make deploy` leaves it.
"""

from __future__ import annotations

import email.utils
import json

import boto3
import pytest

from mailmatrix.core.failures import Ending, Stopped, failure_alert
from tests.e2e.test_aws_adapters_e2e import (
    ACCOUNT,
    BUCKET,
    EXAMPLE,
    REGION,
    history_of,
    outcome,
    received,
    run_on_engine,
)

# The first three rows of the example campaign: every recipient at a domain reserved for
# examples (example.com, example.org).
ROWS = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()[:4]
REAL = "jose.garcia@acme.io"  # a domain not reserved for examples
OWN = "Acme HR <hr@acme.io>"  # the operator's own sender
SYNC = f"aws s3 sync my-campaign/templates/ s3://{BUCKET}/templates/ --delete"


def campaign(*, cc: str = "", to: str = "jose.garcia@example.org") -> bytes:
    """The three rows, row 3's To replaced by ``to``, and a Cc column holding ``cc`` there."""
    header, *rows = ROWS
    rows = [row.replace("jose.garcia@example.org", to) for row in rows]
    lines = [f"{header},Cc"] + [f"{row},{cc if n == 1 else ''}" for n, row in enumerate(rows)]
    return ("\n".join(lines) + "\n").encode()


def sent_to() -> list[str]:
    """The addresses SES was asked to send to (moto lists a message's more than once)."""
    from moto.ses.models import ses_backends

    sent = ses_backends[ACCOUNT][REGION].sent_messages
    return sorted({a for m in sent for _, a in email.utils.getaddresses(m.destinations)})


def make_templates_ones_own(s3, *, contact: str = "hr@acme.io") -> None:
    """The operator's own templates uploaded over the demo's: here the same letters, their
    manifest without the demo marker, its contact address ``contact``."""
    manifest = s3.get_object(Bucket=BUCKET, Key="templates/manifest.yaml")["Body"].read()
    text = manifest.decode("utf-8")
    assert "\ndemo: true\n" in text and "\n  contact_email: talent@example.com\n" in text
    own = text.replace("\ndemo: true\n", "\n")
    own = own.replace("contact_email: talent@example.com", f"contact_email: {contact}")
    s3.put_object(Bucket=BUCKET, Key="templates/manifest.yaml", Body=own.encode("utf-8"))


def refused_in_validation(account: dict, record: dict, error: str) -> str:
    """The cause of ``record``, an execution that ValidateRecipients, its first step, failed
    with ``error``, having mailed and summarized nothing."""
    assert (record["status"], record["error"]) == ("FAILED", error)
    assert sent_to() == []
    assert received(account, "SummaryTopic") == []
    history = history_of(account, record["name"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "Entered" in e["type"]]
    assert entered == ["ValidateRecipients"]
    return json.loads(record["cause"])["errorMessage"]


def alert_of(record: dict, cause: str) -> tuple[str, str]:
    """The subject and message (its spaces single) of the failure alert of ``record``."""
    ending = Ending("run", "arn:run", "FAILED", record["error"], cause)
    alert = failure_alert(ending, Stopped(), redrive="mailmatrix aws redrive run")
    return alert.subject, " ".join(alert.message.split())


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (campaign(to=REAL), "offers.csv row 3, Email j***@acme.io"),
        (campaign(cc=REAL), "offers.csv row 3, Cc j***@acme.io"),
    ],
    ids=["to", "cc"],
)
def test_the_demo_templates_are_refused_for_real_people_before_anything_is_sent(
    account, body, named
):
    # GIVEN the bucket as `make deploy` leaves it (the demo templates), and a file with one
    # recipient at a real domain
    # WHEN the file is sent
    record = run_on_engine(account, "incoming/offers.csv", body=body)

    # THEN ValidateRecipients refused it, the run's first step, nobody mailed: what is wrong,
    # that nothing was sent, the fix
    cause = refused_in_validation(account, record, "DemoTemplates")
    assert cause.startswith(
        f"templates: s3://{BUCKET}/templates/ holds the bundled demo templates (their"
        " manifest.yaml says demo: true: a fictional company's letters and From), and they"
        f" would go to a real person ({named}); nothing was sent."
    )
    assert SYNC in cause
    assert "delete the line demo: true from manifest.yaml" in cause

    # AND the alert of the failed execution says it in plain words, with what to do
    subject, message = alert_of(record, cause)
    assert subject == "MailMatrix execution FAILED: DemoTemplates"
    assert (
        "Error: the templates are the bundled demo's, and the file names real people"
        " (DemoTemplates)"
    ) in message
    assert SYNC in message
    assert "When to redrive: nothing was sent: the templates are the bundled demo's" in message


def test_the_demo_templates_go_to_the_domains_reserved_for_examples(account):
    # GIVEN the demo templates in the bucket, and a file addressed to example domains only
    # WHEN it is sent THEN every row is
    record = run_on_engine(account, "incoming/offers.csv", body=campaign())
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert outcome(record)["counts"]["sent"] == 3
    assert sent_to() == [
        "amelia.hart@example.com",
        "jose.garcia@example.org",
        "zoe.angstrom@example.com",
    ]


def test_a_dry_run_of_the_demo_templates_to_real_people_is_allowed(account):
    # GIVEN the demo templates, and a file with a recipient at a real domain
    # WHEN it is dry-run THEN it validates and renders its previews, and sends nothing
    record = run_on_engine(account, "incoming/dry-run/offers.csv", body=campaign(to=REAL))
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert sent_to() == []
    listed = account["s3"].list_objects_v2(Bucket=BUCKET, Prefix="reports/")["Contents"]
    assert sum(o["Key"].endswith(".eml") for o in listed) == 3


def test_templates_of_ones_own_go_to_real_people(account):
    # GIVEN the file refused while the bucket held the demo templates
    body = campaign(to=REAL)
    assert run_on_engine(account, "incoming/offers.csv", body=body)["error"] == "DemoTemplates"

    # WHEN the operator's own templates (no demo marker) replace them, and it is sent again
    # from the operator's own address (verified)
    make_templates_ones_own(account["s3"])
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress="hr@acme.io")
    record = run_on_engine(account, "incoming/offers.csv", OWN, body=body)

    # THEN every row is sent, the real recipient's too
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert sent_to() == ["amelia.hart@example.com", REAL, "zoe.angstrom@example.com"]


def test_a_placeholder_sender_is_refused_for_real_people_before_anything_is_sent(account):
    # GIVEN templates of one's own (no demo marker) while the stack's SenderAddress is still a
    # placeholder at a domain reserved for examples (the demo's, verified in this account)
    make_templates_ones_own(account["s3"])

    # WHEN a file with a recipient at a real domain is sent
    record = run_on_engine(account, "incoming/offers.csv", body=campaign(to=REAL))

    # THEN ValidateRecipients refused it, nobody mailed: the sender is a placeholder, nothing
    # was sent, and where to set one's own
    cause = refused_in_validation(account, record, "PlaceholderSender")
    assert cause.startswith(
        "sender: the From address talent@example.com (the stack's SenderAddress parameter) is"
        " a placeholder at a domain reserved for examples, not an address of yours: real mail"
        " servers would bounce these letters or mark them as spoofed, and SES would deliver"
        " them to real people (offers.csv row 3, Email j***@acme.io); nothing was sent. Set"
        " the stack's SenderAddress parameter to an address of your own"
    )

    # AND the alert says it in plain words
    _, message = alert_of(record, cause)
    assert (
        "Error: the sender is a placeholder at a domain reserved for examples (PlaceholderSender)"
    ) in message

    # AND the campaign addressed to domains reserved for examples only still goes
    record = run_on_engine(account, "incoming/rehearsal.csv", body=campaign())
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert len(sent_to()) == 3


def test_a_placeholder_constant_is_refused_for_real_people_before_anything_is_sent(account):
    # GIVEN templates of one's own (no demo marker) that still write the demo's contact
    # address, at a domain reserved for examples, and the operator's own sender (verified)
    make_templates_ones_own(account["s3"], contact="talent@example.com")
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress="hr@acme.io")

    # WHEN a file with a recipient at a real domain is sent
    record = run_on_engine(account, "incoming/offers.csv", OWN, body=campaign(to=REAL))

    # THEN ValidateRecipients refused it, nobody mailed: which constant, that nothing was
    # sent, and how to upload one's own
    cause = refused_in_validation(account, record, "PlaceholderConstant")
    assert cause.startswith(
        "templates: the constant contact_email under 'context' in"
        f" s3://{BUCKET}/templates/manifest.yaml holds talent@example.com, a placeholder at a"
        " domain reserved for examples: the letters would tell their readers to write to an"
        " address nobody reads, and SES would deliver them to real people (offers.csv row 3,"
        " Email j***@acme.io); nothing was sent."
    )
    assert SYNC in cause

    # AND the alert says it in plain words
    _, message = alert_of(record, cause)
    assert (
        "Error: a constant of the templates is a placeholder address (PlaceholderConstant)"
    ) in message

    # AND the campaign addressed to domains reserved for examples only still goes
    record = run_on_engine(account, "incoming/rehearsal.csv", OWN, body=campaign())
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert len(sent_to()) == 3
