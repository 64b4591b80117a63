"""An execution sends exactly the upload that started it, and no more once a newer upload of
its file has been validated: on the AWS adapters (moto) and locally.

Each execution is started by the event of one upload of incoming/offers.csv. Validate reads
that upload (its version, else only while its ETag is the event's), and records it as the
campaign's latest upload unless a newer one (by the event's sequencer) was recorded first;
SendBatch sends only while its upload is the latest, and reports the rest Superseded.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from rich.console import Console

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.cli import aws_cmds
from mailmatrix.cli.run_cmd import exit_code, outcome_of, print_summary
from mailmatrix.core.send import idempotency_key
from mailmatrix.errors import AccountSendingHalted
from mailmatrix.jobs import RETRY_FAILED_METADATA, Source, campaign_id_for
from mailmatrix.local import Workdir, run_campaign
from tests.e2e import test_aws_adapters_e2e as e2e
from tests.e2e.test_run_cli import _recipients

KEY = "incoming/offers.csv"
LINES = (e2e.EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines(keepends=True)
GONE = "sean.obrien@example.com"  # row 8: the operator takes this row out of the file


def file_of(lines: list[str]) -> bytes:
    """A recipients file of the example's header and ``lines``."""
    return "".join([LINES[0], *lines]).encode("utf-8")


def without_gone() -> bytes:
    """The example file corrected: Sean's row taken out."""
    return file_of([line for line in LINES[1:] if not line.startswith(GONE)])


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


def report_rows(account: dict, summary: dict[str, Any]) -> list[dict[str, str]]:
    """The per-row report an execution's summary names."""
    body = account["s3"].get_object(Bucket=e2e.BUCKET, Key=summary["report_key"])["Body"].read()
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


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


def _failing_at(address: str):
    """A wrap for the engine: SendBatch fails a batch that holds ``address`` as a used-up
    daily quota does (the Map then fails: the execution is for a redrive)."""
    from mailmatrix.engine.registry import resolve_handler

    def wrap(function: str, target: str) -> Any:
        handler = resolve_handler(target)
        if function != "SendBatchFunction":
            return handler

        def failing(event: dict[str, Any], context: Any) -> Any:
            if any(item["email"] == address for item in event["Items"]):
                raise AccountSendingHalted("ses: send_email: Throttling: Daily message quota")
            return handler(event, context)

        return failing

    return wrap


BATCHES_OF_5 = {"MAILMATRIX_BATCH_SIZE": "5", "MAILMATRIX_MAX_CONCURRENCY": "1"}


def test_a_redrive_after_a_corrected_upload_mails_nobody_the_correction_took_out(account):
    # GIVEN execution 1 of the file failed at the batch holding Sean (daily quota)
    versioned(account)
    first = e2e.start_on_engine(
        account,
        e2e.upload(account, KEY, file_of(LINES[1:])),
        wrap=_failing_at(GONE),
        settings=BATCHES_OF_5,
    )
    assert first["status"] == "FAILED"
    # AND the operator uploaded the file corrected, Sean taken out, and that execution ran
    second = e2e.start_on_engine(account, e2e.upload(account, KEY, without_gone()))
    assert second["status"] == "SUCCEEDED"
    assert mailed()[GONE] == 0

    # WHEN execution 1 is redriven, as its failure alert says
    redriven = e2e.redrive_on_engine(account, first["name"], settings=BATCHES_OF_5)

    # THEN Sean is not mailed, nobody twice, and the redrive's rows are Superseded
    assert redriven["status"] == "SUCCEEDED"
    assert mailed()[GONE] == 0 and set(mailed().values()) == {1}
    summary = output_of(redriven)
    rerun = [row for row in report_rows(account, summary) if row["status"] == "failed"]
    assert rerun and {row["code"] for row in rerun} == {"Superseded"}
    assert GONE in {row["email"] for row in rerun}
    assert summary["counts"]["superseded"] == len(rerun) == summary["counts"]["failed"]
    # AND its summary says why, naming the execution that sends the file now, and no retry
    assert f"(execution {second['name']})" in summary["message"]
    assert "Redriving this execution sends nothing" in summary["message"]
    assert "--retry-failed" not in summary["message"]
    assert "left to a newer upload" in summary["subject"]

    # AND `aws status` of execution 1 prints the same
    console = Console(record=True, width=200)
    stack = aws_cmds.Stack("mailmatrix", e2e.REGION, e2e.BUCKET, "arn:sfn")
    described = {**redriven, "output": json.dumps(summary)}
    assert aws_cmds.report(console, stack, described) == 0
    shown = console.export_text()
    assert f"superseded {len(rerun)}" in shown
    newer = f"a newer upload of this file was validated (execution {second['name']})"
    assert f"not failed (Superseded): {newer}" in shown


def test_a_running_execution_stops_once_a_corrected_upload_is_validated(account):
    # GIVEN execution 1 of the file, in batches of 5 one at a time, and the operator who
    # uploads the file corrected (Sean taken out) as its first batch ends; that execution runs
    versioned(account)
    from mailmatrix.engine.registry import resolve_handler

    corrected: list[dict[str, Any]] = []

    def wrap(function: str, target: str) -> Any:
        handler = resolve_handler(target)
        if function != "SendBatchFunction":
            return handler

        def first_batch_then_upload(event: dict[str, Any], context: Any) -> Any:
            result = handler(event, context)
            if not corrected:
                event_2 = e2e.upload(account, KEY, without_gone())
                corrected.append(e2e.start_on_engine(account, event_2))
            return result

        return first_batch_then_upload

    # WHEN execution 1 runs
    event_1 = e2e.upload(account, KEY, file_of(LINES[1:]))
    first = e2e.start_on_engine(account, event_1, wrap=wrap, settings=BATCHES_OF_5)

    # THEN the corrected file's execution sent the rest, and Sean got nothing from either
    assert output_of(corrected[0])["counts"]["sent"] == 12
    assert mailed()[GONE] == 0 and sum(mailed().values()) == 17
    # AND execution 1 sent its first batch only, the rest Superseded, and says so
    counts = output_of(first)["counts"]
    assert (counts["sent"], counts["superseded"], counts["failed"]) == (5, 13, 13)


def test_an_older_upload_validated_after_a_newer_one_sends_nothing(account):
    # GIVEN the file uploaded, then uploaded again corrected (Sean taken out)
    versioned(account)
    event_1 = e2e.upload(account, KEY, file_of(LINES[1:]))
    event_2 = e2e.upload(account, KEY, without_gone())

    # WHEN EventBridge delivers the second upload's event first, then the first's
    second = e2e.start_on_engine(account, event_2)
    first = e2e.start_on_engine(account, event_1)

    # THEN the first upload's execution, validated last, sends nothing: its upload is older
    assert output_of(second)["counts"]["sent"] == 17
    counts = output_of(first)["counts"]
    assert (counts["sent"], counts["superseded"]) == (0, 18)
    assert mailed()[GONE] == 0 and set(mailed().values()) == {1}


# --- on this machine -------------------------------------------------------------------------


class _RunCorrectedAfterTheFirstBatch:
    """Plays the operator who runs the corrected file (Sean taken out) as the first batch of
    the run under way has ended."""

    def __init__(self, corrected: Path, workdir: Path) -> None:
        self.corrected, self.workdir = corrected, workdir
        self.record: dict[str, Any] | None = None

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        if self.record is None and (map_run.get("succeeded") or 0) >= 1:
            self.record = {}
            self.record = run_campaign(
                self.corrected,
                workdir=self.workdir,
                attachments_dir=e2e.EXAMPLE / "attachments",
                faults="seed=1",  # batches in threads, as the run under way
            )


def test_locally_a_run_stops_once_a_newer_run_of_its_file_is_validated(tmp_path):
    # GIVEN the example file, and the same file corrected (Sean taken out) in another folder
    original = tmp_path / "a" / "offers.csv"
    corrected = tmp_path / "b" / "offers.csv"
    for path, body in ((original, file_of(LINES[1:])), (corrected, without_gone())):
        path.parent.mkdir()
        path.write_bytes(body)
    workdir = tmp_path / "work"
    operator = _RunCorrectedAfterTheFirstBatch(corrected, workdir)

    # WHEN the file runs in batches of 5, and the corrected one runs after its first batch
    first = run_campaign(
        original,
        workdir=workdir,
        attachments_dir=e2e.EXAMPLE / "attachments",
        batch_size=5,
        max_concurrency=1,
        faults="seed=1",
        listener=operator,
    )

    # THEN Sean got nothing, nobody got two, and the first run says why it sent no more
    assert operator.record and operator.record["status"] == "SUCCEEDED"
    outbox = _recipients(workdir / "outbox")
    assert outbox[GONE] == 0
    assert sum(outbox.values()) == 17 and set(outbox.values()) == {1}
    counts = output_of(first)["counts"]
    assert (counts["sent"], counts["superseded"]) == (5, 13)
    # AND its summary names the newer run, and gives no retry command for those rows
    result = outcome_of(first, Workdir(workdir))
    assert result["superseded_by"] == operator.record["name"]
    console = Console(record=True, width=400)
    print_summary(console, result)
    shown = console.export_text()
    assert "Left to a newer run of the file (not failed) │ 13" in shown
    assert re.search(r"│ Failed +│ 0 +│", shown), shown
    # AND it ends as a run that failed nothing: those rows were the newer run's to send
    assert exit_code(result) == 0
    assert f"(execution {operator.record['name']})" in shown
    assert "--retry-failed" not in shown and "Rows that failed at sending" not in shown


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
