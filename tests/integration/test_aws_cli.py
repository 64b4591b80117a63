"""`mailmatrix aws send|status|redrive` against a stack in moto (CloudFormation, S3, SFN)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner
from rich.console import Console

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.cli import aws_cmds
from mailmatrix.cli.main import cli
from mailmatrix.core.send import idempotency_key, recipient_key
from mailmatrix.jobs import Choices, Source, campaign_id_for
from tests.fixtures.aws import create_ledger_table, fake_aws, outputs_stack_template

REGION = "eu-west-1"
LEDGER = "mailmatrix-test-ledger"
STACK_TEMPLATE = outputs_stack_template("mailmatrix-test", LEDGER)
SUMMARY = {
    "subject": "MailMatrix: offers.csv",
    "message": "18 sent, 2 rejected.",
    "counts": {"rows": 20, "valid": 18, "sent": 18, "rejected": 2},
    "outcome": "completed",
}


@pytest.fixture
def stack(monkeypatch):
    with fake_aws(monkeypatch):
        cfn = boto3.client("cloudformation", region_name=REGION)
        cfn.create_stack(StackName="mm", TemplateBody=json.dumps(STACK_TEMPLATE))
        create_ledger_table(boto3.client("dynamodb", region_name=REGION), LEDGER)
        outputs = cfn.describe_stacks(StackName="mm")["Stacks"][0]["Outputs"]
        named = {o["OutputKey"]: o["OutputValue"] for o in outputs}
        # Versioned, as the stack's bucket is (moto's CloudFormation leaves that setting out).
        boto3.client("s3", region_name=REGION).put_bucket_versioning(
            Bucket=named["BucketName"], VersioningConfiguration={"Status": "Enabled"}
        )
        yield named


class EventBridgeAndService:
    """Stands in for what AWS does while the CLI waits: start the execution, then finish it."""

    def __init__(self, outputs: dict[str, str], key: str, *, status: str = "SUCCEEDED") -> None:
        self.outputs, self.key, self.status = outputs, key, status
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.arn: str | None = None

    def __call__(self, seconds: float) -> None:
        from moto.stepfunctions.models import stepfunctions_backends

        if self.arn is None:
            s3 = boto3.client("s3", region_name=REGION)
            head = s3.head_object(Bucket=self.outputs["BucketName"], Key=self.key)
            obj = {"key": self.key, "etag": head["ETag"].strip('"')}
            if head.get("VersionId"):
                obj["version-id"] = head["VersionId"]
            event = {"detail": {"object": obj}}
            self.arn = self.sfn.start_execution(
                stateMachineArn=self.outputs["StateMachineArn"], input=json.dumps(event)
            )["executionArn"]
            return
        execution = stepfunctions_backends["123456789012"][REGION].describe_execution(self.arn)
        execution.status = self.status
        if self.status == "SUCCEEDED":
            execution.output = json.dumps(SUMMARY)
        else:
            execution.error, execution.cause = "AccountSendingHalted", "daily quota used up"


def write_csv(tmp_path):
    path = tmp_path / "offers.csv"
    path.write_text("Email,Name\nanna@example.org,Anna\n", encoding="utf-8")
    return path


def test_send_uploads_finds_the_execution_follows_it_and_prints_the_summary(
    stack, tmp_path, monkeypatch
):
    service = EventBridgeAndService(stack, "incoming/offers.csv")
    monkeypatch.setattr(aws_cmds, "sleep", service)

    result = CliRunner().invoke(cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm"])

    assert result.exit_code == 0, result.output
    stored = boto3.client("s3", region_name=REGION).get_object(
        Bucket=stack["BucketName"], Key="incoming/offers.csv"
    )
    assert stored["Body"].read() == b"Email,Name\nanna@example.org,Anna\n"
    # AND it names the version uploaded: the one its execution reads, whatever comes next
    uploaded = f"uploaded s3://{stack['BucketName']}/incoming/offers.csv"
    assert f"{uploaded} (version {stored['VersionId']})" in result.output
    assert f"execution started: {service.arn}" in result.output
    assert "18 sent, 2 rejected." in result.output
    assert "SUCCEEDED" in result.output
    assert f"#/v2/executions/details/{service.arn}" in result.output


def uploaded_metadata(stack: dict[str, str], key: str) -> dict[str, str]:
    s3 = boto3.client("s3", region_name=REGION)
    return s3.head_object(Bucket=stack["BucketName"], Key=key)["Metadata"]


@pytest.mark.parametrize(
    ("options", "metadata"),
    [
        ([], {}),
        (["--retry-failed"], {"mailmatrix-retry-failed": "true"}),
        (["--retry-unknown"], {"mailmatrix-retry-unknown": "true"}),
        (
            ["--retry-failed", "--retry-unknown"],
            {"mailmatrix-retry-failed": "true", "mailmatrix-retry-unknown": "true"},
        ),
    ],
    ids=["plain", "retry-failed", "retry-unknown", "both"],
)
def test_retry_failed_travels_with_the_upload_as_metadata(
    stack, tmp_path, monkeypatch, options, metadata
):
    # GIVEN a stack WHEN a file is sent with or without --retry-failed
    service = EventBridgeAndService(stack, "incoming/offers.csv")
    monkeypatch.setattr(aws_cmds, "sleep", service)
    result = CliRunner().invoke(
        cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm", *options]
    )

    # THEN the object that starts the execution carries the request, for ValidateRecipients
    assert result.exit_code == 0, result.output
    assert uploaded_metadata(stack, "incoming/offers.csv") == metadata


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--dry-run", "--retry-failed"], "a --dry-run sends none"),
        (["--corrected-address", "1"], "Invalid value for '--corrected-address'"),
    ],
    ids=["retry-failed-dry-run", "corrected-header-row"],
)
def test_a_bad_choice_is_refused_before_uploading(stack, tmp_path, options, said):
    result = CliRunner().invoke(
        cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm", *options]
    )
    assert result.exit_code == 2
    assert said in result.output
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=stack["BucketName"])
    assert listed.get("Contents", []) == []


def test_a_dry_run_goes_under_incoming_dry_run(stack, tmp_path, monkeypatch):
    service = EventBridgeAndService(stack, "incoming/dry-run/offers.csv")
    monkeypatch.setattr(aws_cmds, "sleep", service)

    result = CliRunner().invoke(
        cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm", "--dry-run"]
    )

    assert result.exit_code == 0, result.output
    assert "uploaded s3://" in result.output and "/incoming/dry-run/offers.csv" in result.output


@pytest.mark.parametrize("dry_run", [False, True], ids=["send", "dry-run"])
def test_send_again_from_and_corrected_address_travel_with_the_upload(
    stack, tmp_path, monkeypatch, dry_run
):
    # GIVEN a stack WHEN a file is sent with the choices `run` takes (checked against the
    # ledger: the tests below)
    key = "incoming/dry-run/offers.csv" if dry_run else "incoming/offers.csv"
    monkeypatch.setattr(aws_cmds, "sleep", EventBridgeAndService(stack, key))
    monkeypatch.setattr(aws_cmds, "_check_choices", lambda *given: None)
    options = ["--send-again-from", "old/offers 2025,v1.csv", "--send-again-from", "may.csv"]
    options += ["--corrected-address", "7", "--corrected-address", "3"]
    options += ["--dry-run"] if dry_run else []
    result = CliRunner().invoke(
        cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm", *options]
    )

    # THEN the upload carries them as ValidateRecipients reads them (names without their
    # folder, percent-encoded; rows in order), and the command says so
    assert result.exit_code == 0, result.output
    metadata = {
        "mailmatrix-send-again-from": "offers%202025%2Cv1.csv,may.csv",
        "mailmatrix-corrected-address": "3,7",
    }
    assert uploaded_metadata(stack, key) == metadata
    names = frozenset({"offers 2025,v1.csv", "may.csv"})
    assert Choices.of(metadata) == Choices(names, frozenset({3, 7}))
    for name, value in metadata.items():
        assert f"with metadata {name}={value}\n" in result.output


def _campaign(stack: dict[str, str], name: str) -> str:
    """The campaign of the file ``name`` sent to the stack."""
    return campaign_id_for(Source(stack["BucketName"], f"incoming/{name}", ""))


def _sent_earlier(stack: dict[str, str], name: str, *, row: int = 2, owner: str = "") -> None:
    """A letter of ``name`` sent to the stack earlier: the row ``row`` claimed and sent, with
    ``owner`` (an address) the recipient of its own file anna.pdf."""
    campaign = _campaign(stack, name)
    owned = ("anna.pdf", recipient_key(campaign, owner)) if owner else None
    ledger = DynamoDbLedger(LEDGER, boto3.client("dynamodb", region_name=REGION))
    ledger.claim(f"k-{campaign}-{row}", campaign=campaign, row=row, attempt="a", owner=owned)
    ledger.record_sent(f"k-{campaign}-{row}", message_id=f"m-{row}")


def _attached_csv(tmp_path):
    """offers.csv: Anna at her new address, with her own file anna.pdf (row 2)."""
    path = tmp_path / "offers.csv"
    path.write_text(
        "Email,Name,Attachment_File\nanna.new@example.org,Anna,anna.pdf\n", encoding="utf-8"
    )
    return path


def _uploaded(stack: dict[str, str]) -> list[dict]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=stack["BucketName"])
    return listed.get("Contents", [])


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (
            ["--send-again-from", "may.csv"],
            "offers.csv: no earlier run of may.csv on the stack mm (a name as it was run, letter"
            " case too). Nothing was uploaded, sent or recorded: give the name `validate` names,"
            " or the --stack of that file's runs",
        ),
        (
            ["--send-again-from", "offers.csv"],
            "offers.csv: --send-again-from offers.csv names this file itself",
        ),
        (
            ["--corrected-address", "2"],
            "offers.csv: --corrected-address: row 2's letter is not held back as another"
            " recipient's (no earlier run of this file sent its file to another address)."
            " Nothing was uploaded, sent or recorded",
        ),
        (
            ["--corrected-address", "9"],
            "offers.csv: --corrected-address: there is no row 9 in the file",
        ),
    ],
    ids=["no-earlier-run", "the-file-itself", "not-held-back", "no-such-row"],
)
def test_a_choice_run_would_refuse_is_refused_before_uploading(stack, tmp_path, options, said):
    # GIVEN a stack whose ledger has a run of april.csv, and one of offers.csv whose row 2
    # sent Anna's file to her, at the address the file still gives
    _sent_earlier(stack, "april.csv")
    _sent_earlier(stack, "offers.csv", owner="anna.new@example.org")

    # WHEN offers.csv is sent with a choice that names nothing a run would act on
    result = CliRunner().invoke(
        cli, ["aws", "send", str(_attached_csv(tmp_path)), "--stack", "mm", *options]
    )

    # THEN it is refused as `run` refuses it (exit 2), and nothing is uploaded
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert _uploaded(stack) == []


def test_choices_the_stacks_ledger_bears_out_are_uploaded(stack, tmp_path, monkeypatch):
    # GIVEN a stack whose ledger has a run of april.csv, and one of offers.csv whose row 2
    # sent Anna's own file to her old address
    _sent_earlier(stack, "april.csv")
    _sent_earlier(stack, "offers.csv", owner="anna@example.org")
    monkeypatch.setattr(aws_cmds, "sleep", EventBridgeAndService(stack, "incoming/offers.csv"))

    # WHEN offers.csv, Anna's address corrected, is sent again naming both
    options = ["--send-again-from", "april.csv", "--corrected-address", "2"]
    result = CliRunner().invoke(
        cli, ["aws", "send", str(_attached_csv(tmp_path)), "--stack", "mm", *options]
    )

    # THEN it is uploaded with them
    assert result.exit_code == 0, result.output
    assert uploaded_metadata(stack, "incoming/offers.csv") == {
        "mailmatrix-send-again-from": "april.csv",
        "mailmatrix-corrected-address": "2",
    }


@pytest.mark.parametrize(
    ("ledger", "said"),
    [
        (
            None,
            "stack old: no LedgerTableName output, so --send-again-from and --corrected-address"
            " cannot be checked against its ledger. Nothing was uploaded: update the stack",
        ),
        (
            "no-such-table",
            "the stack's ledger could not be read to check the choices:",
        ),
    ],
    ids=["no-ledger-output", "ledger-unreadable"],
)
def test_choices_are_not_taken_unchecked(tmp_path, monkeypatch, ledger, said):
    # GIVEN a stack from before it named its ledger table, or whose table cannot be read
    with fake_aws(monkeypatch):
        template = json.dumps(outputs_stack_template("mailmatrix-old", ledger))
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="old", TemplateBody=template
        )

        # WHEN a file is sent to it with a choice
        options = ["--stack", "old", "--send-again-from", "may.csv"]
        result = CliRunner().invoke(cli, ["aws", "send", str(write_csv(tmp_path)), *options])

        # THEN it fails saying why, and that nothing was uploaded
        assert result.exit_code == 1, result.output
        assert said in " ".join(result.output.split())
        assert "Nothing was uploaded" in result.output
        (bucket,) = boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]
        listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=bucket["Name"])
        assert listed.get("Contents", []) == []


def test_a_failed_execution_exits_1_and_says_how_to_redrive(stack, tmp_path, monkeypatch):
    service = EventBridgeAndService(stack, "incoming/offers.csv", status="FAILED")
    monkeypatch.setattr(aws_cmds, "sleep", service)

    result = CliRunner().invoke(cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm"])

    assert result.exit_code == 1
    assert "error: AccountSendingHalted: daily quota used up" in result.output
    assert f"mailmatrix aws redrive {service.arn} --stack mm" in result.output


def test_send_without_an_execution_gives_up_with_a_hint(stack, tmp_path, monkeypatch):
    monkeypatch.setattr(aws_cmds, "sleep", lambda seconds: None)
    result = CliRunner().invoke(
        cli, ["aws", "send", str(write_csv(tmp_path)), "--stack", "mm", "--wait-start", "0"]
    )
    assert result.exit_code == 1
    assert "no execution started" in result.output and "DeadLetterQueueUrl" in result.output


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["send", "FILE", "--wait-start", "nan"], "nan: give a number of seconds"),
        (["send", "FILE", "--wait-start", "inf"], "inf: give a number of seconds"),
        (["send", "FILE", "--wait-start", "-1"], "-1.0 is not in the range x>=0"),
        (["status", "--limit", "0"], "0 is not in the range 1<=x<=1000"),
        (["status", "--limit", "-3"], "-3 is not in the range 1<=x<=1000"),
    ],
    ids=["wait-nan", "wait-inf", "wait-negative", "limit-0", "limit-negative"],
)
def test_a_bad_number_is_a_usage_error_before_any_aws_client_is_made(
    stack, tmp_path, monkeypatch, command, message
):
    # GIVEN no AWS client may be made (a nan deadline never came: send waited for ever)
    def no_client(service, region):
        raise AssertionError(f"a {service} client was made")

    monkeypatch.setattr(aws_cmds, "client", no_client)
    args = [str(write_csv(tmp_path)) if arg == "FILE" else arg for arg in command]

    result = CliRunner().invoke(cli, ["aws", *args, "--stack", "mm"])

    assert result.exit_code == 2, result.output
    assert message in result.output


def test_send_refuses_a_fifo_before_any_aws_client_is_made(stack, tmp_path, monkeypatch):
    # GIVEN offers.csv is a FIFO nothing writes to (reading it waited for ever)
    def no_client(service, region):
        raise AssertionError(f"a {service} client was made")

    monkeypatch.setattr(aws_cmds, "client", no_client)
    os.mkfifo(tmp_path / "offers.csv")

    result = CliRunner().invoke(cli, ["aws", "send", str(tmp_path / "offers.csv"), "--stack", "mm"])

    assert result.exit_code == 2, result.output
    assert "offers.csv: not a regular file (a pipe, device or folder)" in result.output


def test_send_refuses_a_file_the_rule_would_ignore(stack, tmp_path):
    path = tmp_path / "offers.txt"
    path.write_text("Email\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["aws", "send", str(path), "--stack", "mm"])
    assert result.exit_code == 2
    assert "*.csv" in result.output


def test_an_unknown_stack_is_a_clear_error(stack, tmp_path):
    result = CliRunner().invoke(cli, ["aws", "status", "--stack", "nope"])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "stack nope in region " in said and ": cannot describe it" in said
    assert "--region" in said  # where else it may be


def test_the_local_commands_load_without_botocore():
    # GIVEN a fresh interpreter WHEN it loads the mailmatrix command THEN botocore stays out
    # (a local run would pay for importing it, and AWS commands import it as they call AWS)
    code = "import sys, mailmatrix.cli.main; print([m for m in sys.modules if 'botocore' in m])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout) == (0, "[]\n")


def test_status_lists_and_shows_executions(stack):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    sfn.start_execution(stateMachineArn=stack["StateMachineArn"], name="run-1", input="{}")

    listed = CliRunner().invoke(cli, ["aws", "status", "--stack", "mm"])
    shown = CliRunner().invoke(cli, ["aws", "status", "run-1", "--stack", "mm"])

    assert listed.exit_code == 0 and "RUNNING" in listed.output and "run-1" in listed.output
    assert shown.exit_code == 0, shown.output
    assert "execution run-1: RUNNING" in shown.output
    # AND a running execution is not one to redrive: the command says so, and no redrive
    assert "still running" in shown.output
    assert "redrive" not in shown.output


def _with_sfn(monkeypatch, sfn) -> None:
    """The CLI's Step Functions client is ``sfn`` (a stubbed one); its others are made."""
    real_client = aws_cmds.client
    monkeypatch.setattr(
        aws_cmds,
        "client",
        lambda service, region: sfn if service == "stepfunctions" else real_client(service, region),
    )


def test_redrive_calls_redrive_execution_then_follows(stack, monkeypatch):
    arn = stack["StateMachineArn"].replace(":stateMachine:", ":execution:") + ":run-1"
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stub = Stubber(sfn)
    # (its file is read first: a redrive of a file with rows in doubt is refused)
    stub.add_response("describe_execution", _started_by(stack, arn), {"executionArn": arn})
    stub.add_response(
        "redrive_execution", {"redriveDate": "2026-12-04T10:00:00Z"}, {"executionArn": arn}
    )
    stub.add_response(
        "describe_execution",
        {
            "executionArn": arn,
            "stateMachineArn": stack["StateMachineArn"],
            "name": "run-1",
            "status": "SUCCEEDED",
            "startDate": "2026-12-04T09:00:00Z",
            "output": json.dumps(SUMMARY),
        },
        {"executionArn": arn},
    )
    stub.add_response("list_map_runs", {"mapRuns": []}, {"executionArn": arn})
    stub.activate()
    _with_sfn(monkeypatch, sfn)

    result = CliRunner().invoke(cli, ["aws", "redrive", "run-1", "--stack", "mm"])

    assert result.exit_code == 0, result.output
    assert f"redriven: {arn}" in result.output
    assert "18 sent, 2 rejected." in result.output
    stub.assert_no_pending_responses()


class MapRunService:
    """DescribeExecution / ListMapRuns / DescribeMapRun as a Map Run progresses."""

    def __init__(self) -> None:
        self.polls = 0

    def describe_execution(self, executionArn):
        self.polls += 1
        status = "SUCCEEDED" if self.polls >= 3 else "RUNNING"
        return {"executionArn": executionArn, "name": "run-1", "status": status}

    def list_map_runs(self, executionArn):
        return {"mapRuns": [{"mapRunArn": executionArn + "/map"}]}

    def describe_map_run(self, mapRunArn):
        done = min(4, self.polls * 2)
        return {"itemCounts": {"total": 4, "succeeded": done - 1, "failed": 1, "pending": 4 - done}}


def test_follow_shows_the_map_run_progress(monkeypatch):
    monkeypatch.setattr(aws_cmds, "sleep", lambda seconds: None)
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)

    described = aws_cmds.follow(MapRunService(), "arn:aws:states:r:1:execution:m:run-1", console)

    assert described["status"] == "SUCCEEDED"
    assert "4/4" in out.getvalue()
    assert "1 failed" in out.getvalue()


def test_sending_the_same_file_again_follows_the_new_execution(stack, tmp_path, monkeypatch):
    # GIVEN a file sent once, its execution done
    csv_file = write_csv(tmp_path)
    first = EventBridgeAndService(stack, "incoming/offers.csv")
    monkeypatch.setattr(aws_cmds, "sleep", first)
    assert CliRunner().invoke(cli, ["aws", "send", str(csv_file), "--stack", "mm"]).exit_code == 0

    # WHEN the same file is sent again (its failed rows asked for again): the same ETag
    second = EventBridgeAndService(stack, "incoming/offers.csv")
    monkeypatch.setattr(aws_cmds, "sleep", second)
    result = CliRunner().invoke(
        cli, ["aws", "send", str(csv_file), "--stack", "mm", "--retry-failed"]
    )

    # THEN the command waited for the execution this upload started, not the first one
    assert result.exit_code == 0, result.output
    assert second.arn is not None and second.arn != first.arn
    assert f"execution started: {second.arn}" in result.output.replace("\n", "")


def test_without_versions_executions_started_before_the_upload_are_passed_over():
    from datetime import UTC, datetime, timedelta

    uploaded = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    event = json.dumps({"detail": {"object": {"key": "incoming/offers.csv", "etag": "e1"}}})

    class Executions:  # two executions of the same key and ETag: an older one and this one
        def list_executions(self, **_):
            return {
                "executions": [
                    {"executionArn": "old", "startDate": uploaded - timedelta(minutes=5)},
                    {"executionArn": "new", "startDate": uploaded + timedelta(seconds=2)},
                ]
            }

        def describe_execution(self, executionArn):
            return {"input": event}

    found = aws_cmds.find_execution(
        Executions(), "sm", "incoming/offers.csv", etag="e1", wait_seconds=0, uploaded=uploaded
    )
    assert found == "new"


QUOTA_MESSAGE = "send_batch: row 9: ses: Throttling: Daily message quota exceeded."


def lambda_cause(error: str, message: str) -> str:
    """A Lambda error as Step Functions records it: a JSON document with a stack trace."""
    trace = ['  File "/var/task/app.py", line 70, in handler\n    raise error\n']
    return json.dumps(
        {"errorMessage": message, "errorType": error, "requestId": "r-1", "stackTrace": trace}
    )


class QuotaStoppedMapRun:
    """The Step Functions reads of an execution whose 3 batches stopped at the daily quota."""

    def list_map_runs(self, executionArn):
        return {"mapRuns": [{"mapRunArn": "arn:aws:states:r:1:mapRun:m/SendEmails:run"}]}

    def describe_map_run(self, mapRunArn):
        return {"status": "FAILED", "executionCounts": {"failed": 3}}

    def list_executions(self, mapRunArn, statusFilter, maxResults):
        assert statusFilter == "FAILED"
        child = "arn:aws:states:r:1:execution:m/SendEmails:c"
        return {"executions": [{"executionArn": f"{child}{i}"} for i in range(2)]}

    def describe_execution(self, executionArn):
        cause = lambda_cause("AccountSendingHalted", QUOTA_MESSAGE)
        return {"status": "FAILED", "error": "AccountSendingHalted", "cause": cause}


class NoMapRun:
    """The Step Functions reads of an execution that failed before its Map."""

    def list_map_runs(self, executionArn):
        return {"mapRuns": []}


def report_of(described, sfn) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=100, soft_wrap=True, highlight=False, markup=False)
    stack = aws_cmds.Stack("mm", REGION, "bucket", "arn:aws:states:r:1:stateMachine:m")
    return aws_cmds.report(console, stack, described, sfn), out.getvalue()


def test_a_failed_execution_is_reported_with_its_batches_errors_and_when_to_redrive():
    # GIVEN an execution whose Map failed because its batches hit the daily quota
    described = {
        "executionArn": "arn:aws:states:r:1:execution:m:run-1",
        "name": "run-1",
        "status": "FAILED",
        "error": "States.ExceedToleratedFailureThreshold",
        "cause": "The specified tolerated failure threshold was exceeded",
    }

    # WHEN it is reported
    code, output = report_of(described, QuotaStoppedMapRun())

    # THEN the batches' error and reason are shown (2 looked at, 1 more counted), then when a
    # redrive makes sense, then the redrive command
    assert code == 1
    assert f"why sending stopped:\n  AccountSendingHalted (2 batches): {QUOTA_MESSAGE}" in output
    assert "1 batch more failed" in output
    assert "when to redrive: the 24-hour sending quota is used up" in output
    assert "to rerun what failed: mailmatrix aws redrive" in output
    assert output.index("when to redrive") < output.index("to rerun what failed")
    assert "stackTrace" not in output and "/var/task" not in output


PREFLIGHT_MESSAGE = "ses preflight: quota: this run needs 9 messages"


def test_an_execution_failed_by_a_function_shows_the_message_without_the_stack_trace():
    described = {
        "executionArn": "arn:aws:states:r:1:execution:m:run-1",
        "name": "run-1",
        "status": "FAILED",
        "error": "AccountSendingHalted",
        "cause": lambda_cause("AccountSendingHalted", PREFLIGHT_MESSAGE),
    }

    code, output = report_of(described, NoMapRun())

    assert code == 1
    assert f"error: AccountSendingHalted: {PREFLIGHT_MESSAGE}" in output
    assert "when to redrive: the 24-hour sending quota is used up" in output
    assert "stackTrace" not in output and "/var/task" not in output


@pytest.mark.parametrize(
    ("region", "message"),
    [("bad region!", "doesn't match a supported format"), (None, "You must specify a region")],
    ids=["malformed", "none"],
)
@pytest.mark.parametrize("command", [["status"], ["redrive", "e1"]])
def test_a_missing_or_malformed_region_is_a_usage_error_not_a_traceback(
    monkeypatch, tmp_path, command, region, message
):
    # GIVEN no region configured anywhere, and maybe a --region that is no region name
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    given = ["--region", region] if region else []
    # WHEN an aws command runs (the client is refused before any call is made)
    result = CliRunner().invoke(cli, ["aws", *command, "--stack", "s", *given])
    # THEN one line says what is wrong with the region, exit 2
    assert result.exit_code == 2, result.output
    assert "AWS region: " in result.output and message in result.output
    assert "--region" in result.output


def test_a_send_again_from_naming_the_file_itself_is_refused_before_aws_is_asked(
    tmp_path, monkeypatch
):
    # GIVEN no stack to ask: any look-up of it fails the test
    def no_stack(*args, **kwargs):
        raise AssertionError("the stack was looked up")

    monkeypatch.setattr(aws_cmds.Stack, "describe", no_stack)

    # WHEN offers.csv is sent naming itself (or nothing) to send again
    for name in ("offers.csv", " "):
        options = ["--send-again-from", name, "--stack", "mm"]
        result = CliRunner().invoke(cli, ["aws", "send", str(_attached_csv(tmp_path)), *options])

        # THEN it is refused (exit 2) by the file alone, nothing asked of AWS
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.split())
        assert "Nothing was uploaded, sent or recorded" in said, said


def _started_by(stack: dict[str, str], arn: str, key: str = "incoming/offers.csv") -> dict:
    """DescribeExecution of a failed execution an upload of ``key`` started."""
    return {
        "executionArn": arn,
        "stateMachineArn": stack["StateMachineArn"],
        "name": arn.rpartition(":")[2],
        "status": "FAILED",
        "startDate": "2026-12-04T09:00:00Z",
        "input": json.dumps({"detail": {"object": {"key": key, "etag": "e"}}}),
    }


DOUBTS_CSV = "Email,Name\nanna@example.org,Anna\nbob@example.org,Bob\ncleo@example.org,Cleo\n"


def _rows_in_doubt(stack: dict[str, str], tmp_path, name: str = "offers.csv"):
    """``name`` (Anna, Bob and Cleo, rows 2 to 4) sent to the stack, whose Lambdas ended as
    they sent rows 2 and 3 (their leases ended long ago), while row 4 is being sent now."""
    path = tmp_path / name
    path.write_text(DOUBTS_CSV, encoding="utf-8")
    campaign = _campaign(stack, name)
    ledger = DynamoDbLedger(LEDGER, boto3.client("dynamodb", region_name=REGION))
    assert ledger.record_template_sets(campaign, {"offer"}, catalog=["offer"]) == []
    for row, email in ((2, "anna@example.org"), (3, "bob@example.org"), (4, "cleo@example.org")):
        lease = 2e9 if row == 4 else 1.0  # 2033, and 1970
        key = idempotency_key(campaign, email, "offer")
        ledger.claim(key, campaign=campaign, row=row, attempt="batch-1", lease_until=lease)
    return path, ledger, campaign


def test_aws_settle_lists_the_rows_in_doubt_and_the_commands_that_settle_them(stack, tmp_path):
    # GIVEN a file two of whose rows are in doubt on the stack, and one being sent
    path, _, _ = _rows_in_doubt(stack, tmp_path)

    # WHEN its rows in doubt are listed
    result = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm"])

    # THEN each is named with its masked address (from the file: the ledger keeps none) and
    # template set, and the commands that settle them are given
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "Rows of offers.csv in doubt on the stack mm (their letter may have gone out, and the"
        " ledger has them as not sent): 2"
    )
    assert lines[1].startswith("  row 2, a***@example.org, template offer, tried ")
    assert lines[1].endswith("; settle names it 2")
    assert lines[2].startswith("  row 3, b***@example.org, template offer, tried ")
    assert f"  arrived: mailmatrix aws settle {path} --sent 2,3 --stack mm" in lines
    assert f"  did not arrive: mailmatrix aws settle {path} --not-sent 2,3 --stack mm" in lines
    assert lines[-1] == (
        "Being sent by a run now (their lease has not ended; in doubt if it ends so): row(s) 4"
    )
    assert "cleo" not in result.output and "anna@" not in result.output


def test_aws_settle_lists_as_json(stack, tmp_path):
    path, _, _ = _rows_in_doubt(stack, tmp_path)

    result = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm", "--json"])

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert {name: shown[name] for name in ("file", "stack", "being_sent")} == {
        "file": str(path),
        "stack": "mm",
        "being_sent": [4],
    }
    assert [(row["row"], row["email"], row["settle_as"]) for row in shown["in_doubt"]] == [
        (2, "a***@example.org", "2"),
        (3, "b***@example.org", "3"),
    ]


def test_aws_settle_shows_what_ses_reported_of_a_row_in_doubt(stack, tmp_path):
    # GIVEN rows 2 and 3 in doubt, and SES's Delivery event of row 2's letter recorded on it
    # (SesEvents finds it by the key its message was tagged with)
    path, ledger, campaign = _rows_in_doubt(stack, tmp_path)
    key = idempotency_key(campaign, "anna@example.org", "offer")
    ledger.record_event(
        key, event_type="Delivery", timestamp="2026-12-04T10:00:01Z", message_id="0100-m2"
    )

    # WHEN the rows in doubt are listed, as text and as JSON
    listed = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm"])
    as_json = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm", "--json"])

    # THEN row 2 is shown with what SES reported, row 3 with nothing
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[1].startswith("  row 2, a***@example.org")
    assert lines[2] == "    SES reports Delivery at 2026-12-04T10:00:01Z (message id 0100-m2)"
    assert lines[3].startswith("  row 3, b***@example.org")
    shown = json.loads(as_json.output)["in_doubt"]
    assert [row["ses_event"] for row in shown] == [
        "SES reports Delivery at 2026-12-04T10:00:01Z (message id 0100-m2)",
        "",
    ]

    # AND the row, still in doubt, is settled with it as any other
    sent = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm", "--sent", "2"])
    assert sent.exit_code == 0, sent.output
    assert [o.state for o in ledger.outcomes(campaign) if o.row == 2] == ["sent"]


def test_aws_settle_records_what_arrived_and_what_did_not(stack, tmp_path):
    # GIVEN rows 2 and 3 of the file in doubt on the stack
    path, ledger, campaign = _rows_in_doubt(stack, tmp_path)

    # WHEN row 2 is settled as sent, and row 3 as not sent
    sent = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm", "--sent", "2"])
    not_sent = CliRunner().invoke(
        cli, ["aws", "settle", str(path), "--stack", "mm", "--not-sent", "3", "--json"]
    )

    # THEN each says what it recorded
    assert sent.exit_code == 0, sent.output
    lines = sent.output.splitlines()
    assert lines[0] == "Settled as sent (1 row(s)):"
    assert lines[1].startswith("  row 2, a***@example.org, template offer, tried ")
    assert lines[2] == (
        "Recorded in the stack's ledger: an `aws send` or `aws redrive` of the file skips them,"
        " and counts them as sent."
    )
    assert not_sent.exit_code == 0, not_sent.output
    said = json.loads(not_sent.output)
    assert said["settled_as"] == "not sent" and [row["row"] for row in said["rows"]] == [3]
    # AND the ledger has row 2 sent, row 3 given back (no possible duplicate), row 4 as it was
    assert [(o.row, o.state, o.uncertain, o.takeovers) for o in ledger.outcomes(campaign)] == [
        (2, "sent", False, 0),
        (3, "released", False, 0),
        (4, "claimed", False, 0),
    ]
    assert [doubt.row for doubt in ledger.doubts(campaign)] == [4]


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        ("4", "offers.csv: row 4 is being sent by a run now. Nothing was settled."),
        ("2,5", "offers.csv: there is no row 5 in the file (its rows are 2 to 4). Nothing"),
        ("2:ffff", "offers.csv: no letter 2:ffff of this file is in doubt. Nothing"),
    ],
    ids=["being-sent", "not-in-the-file", "no-such-letter"],
)
def test_aws_settle_refuses_rows_not_in_doubt_and_settles_nothing(stack, tmp_path, rows, said):
    path, ledger, campaign = _rows_in_doubt(stack, tmp_path)

    result = CliRunner().invoke(cli, ["aws", "settle", str(path), "--stack", "mm", "--sent", rows])

    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"mailmatrix aws settle: {said}")
    assert f"`mailmatrix aws settle {path} --stack mm` lists the rows in doubt" in result.output
    assert [doubt.row for doubt in ledger.doubts(campaign)] == [2, 3, 4]


def test_aws_settle_of_a_file_never_sent_to_the_stack_says_so(stack, tmp_path):
    result = CliRunner().invoke(cli, ["aws", "settle", str(write_csv(tmp_path)), "--stack", "mm"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("offers.csv: no file of this name was sent to the stack mm")


def test_aws_send_of_a_file_with_rows_in_doubt_is_refused_before_uploading(stack, tmp_path):
    # GIVEN a file two of whose rows are in doubt on the stack
    path, _, _ = _rows_in_doubt(stack, tmp_path)

    # WHEN it is sent again
    result = CliRunner().invoke(cli, ["aws", "send", str(path), "--stack", "mm"])

    # THEN it is refused (exit 2), nothing uploaded, naming the rows and the commands
    assert result.exit_code == 2, result.output
    assert _uploaded(stack) == []
    said = result.output
    assert said.startswith(
        "Error: aws send: offers.csv: nothing was sent: 2 row(s) of it are in doubt"
    )
    assert "  row 2, a***@example.org, template offer, tried " in said
    assert f"  mailmatrix aws settle {path} --sent 2,3 --stack mm\n" in said
    assert f"  mailmatrix aws settle {path} --not-sent 2,3 --stack mm\n" in said
    assert said.endswith(f"  mailmatrix aws send {path} --stack mm --retry-unknown\n")


def test_aws_send_with_retry_unknown_or_a_dry_run_is_not_held_by_rows_in_doubt(
    stack, tmp_path, monkeypatch
):
    # GIVEN a file with rows in doubt on the stack
    path, _, _ = _rows_in_doubt(stack, tmp_path)

    # WHEN it is sent with --retry-unknown THEN it is uploaded, and so is a dry run of it
    for options, key in (
        (["--retry-unknown"], "incoming/offers.csv"),
        (["--dry-run"], "incoming/dry-run/offers.csv"),
    ):
        monkeypatch.setattr(aws_cmds, "sleep", EventBridgeAndService(stack, key))
        result = CliRunner().invoke(cli, ["aws", "send", str(path), "--stack", "mm", *options])
        assert result.exit_code == 0, result.output
        assert f"/{key}" in result.output
    assert sorted(item["Key"] for item in _uploaded(stack)) == [
        "incoming/dry-run/offers.csv",
        "incoming/offers.csv",
    ]


@pytest.mark.parametrize("retry_unknown", [False, True], ids=["refused", "retry-unknown"])
def test_aws_redrive_of_a_file_with_rows_in_doubt(stack, tmp_path, monkeypatch, retry_unknown):
    # GIVEN a failed execution of a file whose rows 2 and 3 are in doubt on the stack
    _rows_in_doubt(stack, tmp_path)
    arn = stack["StateMachineArn"].replace(":stateMachine:", ":execution:") + ":run-1"
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stub = Stubber(sfn)
    if not retry_unknown:  # its file is read to look for its rows in doubt
        stub.add_response("describe_execution", _started_by(stack, arn), {"executionArn": arn})
    else:
        stub.add_response(
            "redrive_execution", {"redriveDate": "2026-12-04T10:00:00Z"}, {"executionArn": arn}
        )
    stub.activate()
    _with_sfn(monkeypatch, sfn)

    # WHEN it is redriven
    options = ["--retry-unknown", "--no-follow"] if retry_unknown else []
    result = CliRunner().invoke(cli, ["aws", "redrive", "run-1", "--stack", "mm", *options])

    # THEN without --retry-unknown it is refused (exit 2) and not redriven, naming the rows
    # and the commands; with it, redriven
    stub.assert_no_pending_responses()
    if retry_unknown:
        assert result.exit_code == 0, result.output
        assert f"redriven: {arn}" in result.output
        return
    assert result.exit_code == 2, result.output
    said = result.output
    assert said.startswith(
        "Error: aws redrive: offers.csv: nothing was sent: 2 row(s) of it are in doubt"
    )
    assert "  row 2, (address not recorded), template not recorded, tried " in said
    assert "  mailmatrix aws settle offers.csv --sent 2,3 --stack mm\n" in said
    assert said.endswith(f"  mailmatrix aws redrive {arn} --stack mm --retry-unknown\n")


@pytest.mark.parametrize("uploaded", [True, False], ids=["stored", "gone-since"])
def test_aws_redrive_reads_an_url_encoded_key_as_validate_does(
    stack, tmp_path, monkeypatch, uploaded
):
    # GIVEN "offers 2026.csv", whose rows 2 and 3 are in doubt on the stack, and a failed
    # execution its upload started, whose event gave the key URL-encoded ("offers+2026.csv")
    path, _, _ = _rows_in_doubt(stack, tmp_path, name="offers 2026.csv")
    if uploaded:
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=stack["BucketName"], Key="incoming/offers 2026.csv", Body=path.read_bytes()
        )
    arn = stack["StateMachineArn"].replace(":stateMachine:", ":execution:") + ":run-1"
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stub = Stubber(sfn)
    started = _started_by(stack, arn, key="incoming/offers+2026.csv")
    stub.add_response("describe_execution", started, {"executionArn": arn})
    stub.activate()
    _with_sfn(monkeypatch, sfn)

    # WHEN it is redriven
    result = CliRunner().invoke(cli, ["aws", "redrive", "run-1", "--stack", "mm"])

    # THEN it is refused (exit 2), not redriven: the file's rows in doubt were found under
    # the key decoded, as Validate reads it
    stub.assert_no_pending_responses()
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        "Error: aws redrive: offers 2026.csv: nothing was sent: 2 row(s) of it are in doubt"
    )


class DescribedInput:
    """A Step Functions client whose DescribeExecution answers with ``text`` as the input."""

    def __init__(self, text: str) -> None:
        self.text = text

    def describe_execution(self, executionArn: str) -> dict:
        return {"input": self.text}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (json.dumps({"detail": {"object": {"key": "incoming/offers.csv"}}}), "offers.csv"),
        (json.dumps({"detail": {"object": {"key": "incoming/dry-run/offers.csv"}}}), None),
        (json.dumps({"detail": {"object": {"key": "elsewhere/offers.csv"}}}), None),
        (json.dumps({"detail": "offers.csv"}), None),
        ("not json", None),
    ],
    ids=["upload", "dry-run", "not-incoming", "no-object", "not-json"],
)
def test_a_redrive_looks_for_rows_in_doubt_of_an_uploaded_file_only(text, name):
    assert aws_cmds._file_of(DescribedInput(text), "arn") == name
