"""An execution sends exactly the upload that started it: on the AWS adapters (moto) and
locally.

Each execution is started by the event of one upload of incoming/offers.csv. Validate reads
that upload: its version, else only while its ETag is the event's.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import boto3

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.core.send import idempotency_key
from mailmatrix.jobs import RETRY_FAILED_METADATA, Source, campaign_id_for
from tests.e2e import test_aws_adapters_e2e as e2e
from tests.e2e.test_run_cli import _recipients

KEY = "incoming/offers.csv"
LINES = (e2e.EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines(keepends=True)


def file_of(lines: list[str]) -> bytes:
    """A recipients file of the example's header and ``lines``."""
    return "".join([LINES[0], *lines]).encode("utf-8")


def mailed() -> Counter:
    """How many messages SES took for each address (the first recipient of each)."""
    from moto.ses.models import ses_backends

    sent = ses_backends[e2e.ACCOUNT][e2e.REGION].sent_messages
    return Counter(m.destinations[0].rsplit("<", 1)[-1].rstrip(">") for m in sent)


def addresses(lines: list[str]) -> set[str]:
    return {line.split(",", 1)[0] for line in lines}


def output_of(record: dict[str, Any]) -> dict[str, Any]:
    output = record["output"]
    return output if isinstance(output, dict) else json.loads(output)


def versioned(account: dict) -> None:
    """Keep versions in the bucket, as the stack's does."""
    account["s3"].put_bucket_versioning(
        Bucket=e2e.BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )


def test_an_execution_reads_the_version_its_event_names_not_the_newest(account):
    # GIVEN a bucket that keeps versions, and a row of the campaign failed for good earlier
    versioned(account)
    campaign = campaign_id_for(Source(e2e.BUCKET, KEY, ""))
    ledger = DynamoDbLedger("ledger", boto3.client("dynamodb", region_name=e2e.REGION))
    failed = idempotency_key(campaign, "amelia.hart@example.com", "offer")
    ledger.claim(failed, campaign=campaign, row=2, attempt="earlier-run")
    ledger.record_failed(failed, code="MessageRejected", reason="no", permanent=True)
    # AND upload A (rows 2-11, asking for failed rows again), then upload B (rows 12-21)
    first, second = LINES[1:11], LINES[11:]
    event_a = e2e.upload(account, KEY, file_of(first), metadata={RETRY_FAILED_METADATA: "true"})
    event_b = e2e.upload(account, KEY, file_of(second))

    # WHEN A's execution runs after B was stored (EventBridge delivered A's event first)
    record_a = e2e.start_on_engine(account, event_a)

    # THEN it sent A's ten rows, the failed one too (released as A's metadata asks), and
    # none of B's
    assert record_a["status"] == "SUCCEEDED", record_a.get("cause")
    assert output_of(record_a)["counts"]["sent"] == 10
    assert not set(mailed()) & addresses(second)
    assert sum(mailed().values()) == 10 and mailed()["amelia.hart@example.com"] == 1

    # WHEN B's execution runs THEN it sends B's valid rows, and nobody got two
    record_b = e2e.start_on_engine(account, event_b)
    assert output_of(record_b)["counts"]["sent"] == 8
    assert sum(mailed().values()) == 18 and set(mailed().values()) == {1}
    assert addresses(second) - {"kwame.mensah@example", "sofia.bianchi@example.com"} <= set(
        mailed()
    )


def test_without_versions_an_upload_replaced_before_it_is_read_fails_its_execution(account):
    # GIVEN a bucket without versions: upload A, then upload B under the same key
    event_a = e2e.upload(account, KEY, file_of(LINES[1:11]))
    event_b = e2e.upload(account, KEY, file_of(LINES[11:]))

    # WHEN A's execution runs
    record_a = e2e.start_on_engine(account, event_a)

    # THEN it fails at validation saying why, before sending anything
    assert (record_a["status"], record_a["error"]) == ("FAILED", "UploadReplaced")
    assert "replaced by a newer upload before this run read it" in record_a["cause"]
    assert "nothing was sent by this run" in record_a["cause"]
    assert mailed() == Counter()

    # AND B's own execution sends B
    record_b = e2e.start_on_engine(account, event_b)
    assert output_of(record_b)["counts"]["sent"] == 8


# --- on this machine -------------------------------------------------------------------------


def test_locally_a_run_whose_upload_was_replaced_before_it_was_read_sends_nothing(tmp_path):
    from mailmatrix import local

    # GIVEN a local upload of the file, then another upload of it with other rows
    csv_path = tmp_path / "offers.csv"
    csv_path.write_bytes(file_of(LINES[1:11]))
    workdir = local.Workdir(tmp_path / "work")
    env = local.local_settings(
        workdir,
        templates_dir=local.DEFAULT_TEMPLATES,
        attachments_dir=e2e.EXAMPLE / "attachments",
    )
    local.prepare(workdir, env)
    _, event = local.upload(workdir, csv_path)
    csv_path.write_bytes(file_of(LINES[11:]))
    local.upload(workdir, csv_path)

    # WHEN the first upload's execution runs
    record = local.execute(workdir, event, env)

    # THEN it fails saying its upload was replaced, and nothing was sent
    assert (record["status"], record["error"]) == ("FAILED", "UploadReplaced")
    assert _recipients(workdir.root / "outbox") == Counter()
