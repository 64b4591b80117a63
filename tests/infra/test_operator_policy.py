"""The stack's OperatorPolicy allows every AWS call `mailmatrix aws send|status|redrive|settle`
makes, and grants nothing they never use.

The calls are not listed by hand: the four commands run against a stack in moto
(CloudFormation, S3) and a Step Functions client whose answers come from a stand-in (moto runs
no Distributed Map and has no RedriveExecution), each call recorded as the CLI made it.
botocore checks every call's parameters against the real API before the stand-in answers.
The campaign fails at its batches, so the commands also read the failed batches to say why.
Each call becomes the IAM requests AWS authorizes for it (policy_eval.requests_for), and the
policy as the template writes it is judged against them (policy_eval.allowing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner
from policy_eval import Call, Request, allowing, as_list, naming, requests_for, role_statements

from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.cli import aws_cmds
from mailmatrix.cli.main import cli
from mailmatrix.core.send import idempotency_key
from mailmatrix.jobs import Source, campaign_id_for
from tests.fixtures.aws import create_ledger_table, fake_aws, outputs_stack_template

REGION, ACCOUNT, STACK = "eu-west-1", "123456789012", "mm"
MACHINE = f"mailmatrix-{STACK}"  # the state machine's name in the stack
MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{MACHINE}"
EXECUTION_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{MACHINE}:run-1"
MAP_RUN_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:mapRun:{MACHINE}/SendEmails:5e1f0c2a"
CHILD_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{MACHINE}/SendEmails:batch-1"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TABLE = f"mailmatrix-{STACK}-ledger"
STACK_TEMPLATE = outputs_stack_template(MACHINE, TABLE)
NAMING_PARAMS = (
    "Bucket",
    "Key",
    "StackName",
    "stateMachineArn",
    "executionArn",
    "mapRunArn",
    "TableName",
    "IndexName",
)


class FailedCampaign:
    """Step Functions' answers about one execution of the upload of ``key``, whose batches
    stopped at the daily quota (and stop there again when redriven)."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.key = ""
        self.s3 = boto3.client("s3", region_name=REGION)  # not the CLI's: not recorded

    def answer(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        head = self.s3.head_object(Bucket=self.bucket, Key=self.key)
        execution = {
            "executionArn": EXECUTION_ARN,
            "stateMachineArn": MACHINE_ARN,
            "name": "run-1",
            "status": "FAILED",
            "startDate": head["LastModified"] + timedelta(seconds=1),
        }
        if operation == "ListExecutions" and "mapRunArn" in params:
            return {"executions": [{**execution, "executionArn": CHILD_ARN, "name": "batch-1"}]}
        if operation == "ListExecutions":
            return {"executions": [execution]}
        if operation == "DescribeExecution" and params["executionArn"] == CHILD_ARN:
            cause = "send_batch: row 9: ses: Throttling: Daily message quota exceeded."
            return {**execution, "error": "AccountSendingHalted", "cause": cause}
        if operation == "DescribeExecution":
            upload = {"key": self.key, "etag": head["ETag"].strip('"')}
            upload["version-id"] = head["VersionId"]
            event = {"detail": {"object": upload}}
            error = "States.ExceedToleratedFailureThreshold"
            return {**execution, "input": json.dumps(event), "error": error, "cause": ""}
        if operation == "ListMapRuns":
            return {"mapRuns": [{"executionArn": EXECUTION_ARN, "mapRunArn": MAP_RUN_ARN}]}
        if operation == "DescribeMapRun":
            counts = {"total": 2, "succeeded": 1, "failed": 1, "pending": 0}
            return {"status": "FAILED", "itemCounts": counts, "executionCounts": counts}
        if operation == "RedriveExecution":
            return {"redriveDate": execution["startDate"]}
        raise AssertionError(f"the stand-in has no answer to {operation}: add one")


def recording_client(calls: list[Call], campaign: FailedCampaign) -> Any:
    """A replacement for aws_cmds.client: the same clients, every call recorded, Step
    Functions answered by ``campaign``."""
    real_client = aws_cmds.client

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        named = naming(params, NAMING_PARAMS)
        calls.append(Call("cli", model.service_model.service_name, model.name, named))

    def answer(model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, Any]:
        parsed = campaign.answer(model.name, json.loads(params["body"] or b"{}"))
        return AWSResponse(params["url"], 200, {}, None), parsed

    def build(service: str, region: str | None) -> Any:
        made = real_client(service, region)
        made.meta.events.register("before-parameter-build", record)
        if service == "stepfunctions":
            made.meta.events.register("before-call", answer)
        return made

    return build


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Call], str]]:
    """The calls of a campaign sent (and dry-run) that failed, its status, and its redrive;
    and the name of the stack's bucket."""
    calls: list[Call] = []
    csv_file = tmp_path_factory.mktemp("operator") / "offers.csv"
    csv_file.write_text("Email,Name\nanna@example.org,Anna\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as monkeypatch, fake_aws(monkeypatch):
        cfn = boto3.client("cloudformation", region_name=REGION)
        cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(STACK_TEMPLATE))
        outputs = cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        bucket = {o["OutputKey"]: o["OutputValue"] for o in outputs}["BucketName"]
        boto3.client("s3", region_name=REGION).put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        create_ledger_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        campaign = FailedCampaign(bucket)
        monkeypatch.setattr(aws_cmds, "client", recording_client(calls, campaign))
        monkeypatch.setattr(aws_cmds, "sleep", lambda seconds: None)

        commands = [
            ("incoming/dry-run/offers.csv", ["send", str(csv_file), "--dry-run"]),
            ("incoming/offers.csv", ["send", str(csv_file)]),
            ("incoming/offers.csv", ["status"]),
            ("incoming/offers.csv", ["status", "run-1"]),
            ("incoming/offers.csv", ["redrive", "run-1"]),
        ]
        for key, command in commands:
            campaign.key = key
            result = CliRunner().invoke(cli, ["aws", *command, "--stack", STACK])
            assert "why sending stopped" in result.output or command == ["status"], result.output
        # The choices are checked against the ledger first: here, refused (no earlier run of
        # may.csv, no letter of row 2 held back), so nothing is uploaded
        for choice in (["--send-again-from", "may.csv"], ["--corrected-address", "2"]):
            result = CliRunner().invoke(
                cli, ["aws", "send", str(csv_file), *choice, "--stack", STACK]
            )
            assert result.exit_code == 2 and "Nothing was uploaded" in result.output, result.output
        # Rows of the file left in doubt (the ledger written apart: not recorded) refuse its
        # send, and are listed and settled
        in_doubt(csv_file.name, bucket)
        for command in (["send", str(csv_file)], ["settle", str(csv_file)]):
            result = CliRunner().invoke(cli, ["aws", *command, "--stack", STACK])
            assert "mailmatrix aws settle" in result.output, result.output
        result = CliRunner().invoke(
            cli, ["aws", "settle", str(csv_file), "--sent", "2", "--stack", STACK]
        )
        assert result.output.startswith("Settled as sent (1 row(s))"), result.output
    yield calls, bucket


def in_doubt(name: str, bucket: str) -> None:
    """Row 2 of the file ``name`` (Anna) in doubt on the stack: claimed by a Lambda that
    ended, its lease long over."""
    ledger = DynamoDbLedger(TABLE, boto3.client("dynamodb", region_name=REGION))
    campaign = campaign_id_for(Source(bucket, f"incoming/{name}", ""))
    ledger.record_template_sets(campaign, {"offer"}, catalog=["offer"])
    key = idempotency_key(campaign, "anna@example.org", "offer")
    ledger.claim(key, campaign=campaign, row=2, attempt="batch-1", lease_until=1.0)


def names(bucket: str) -> dict[str, str]:
    """What the template's names are in the moto account the commands ran in."""
    return {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": STACK,
        "MailBucket.Arn": f"arn:aws:s3:::{bucket}",
        "DataKey.Arn": KEY_ARN,
        "MailMatrixStateMachine": MACHINE_ARN,
        "LedgerTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}",
    }


def by_hand(bucket: str) -> list[Call]:
    """What the commands tell the operator to read with the AWS CLI: a campaign's reports
    (`aws s3 ls`, then `aws s3 cp` of report.csv, rejects.csv and a dry run's preview)."""
    folder = "reports/c0ffee/run-1/"
    listing = Call("operator", "s3", "ListObjectsV2", {"Bucket": bucket, "Prefix": "reports/"})
    reads = [
        Call("operator", "s3", "GetObject", {"Bucket": bucket, "Key": folder + name})
        for name in ("report.csv", "rejects.csv", "previews/row-2.eml")
    ]
    return [listing, *reads]


def requests_of(call: Call) -> list[Request]:
    """The IAM requests of one call. An upload to the bucket also needs the data key, with
    the uploader's rights, as the bucket encrypts with it (SSE-KMS):
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html"""
    requests = requests_for(call, region=REGION, account=ACCOUNT)
    if (call.service, call.operation) == ("s3", "PutObject"):
        requests += [Request("kms:GenerateDataKey", KEY_ARN), Request("kms:Decrypt", KEY_ARN)]
    if (call.service, call.operation) == ("s3", "GetObject"):
        requests.append(Request("kms:Decrypt", KEY_ARN))
    return requests


def denied_calls(template: dict[str, Any], recorded: tuple[list[Call], str]) -> list[str]:
    """Each request of the commands (and of the operator's reads of the reports) that the
    policy does not allow, as 'action resource'."""
    calls, bucket = recorded
    calls = [*calls, *by_hand(bucket)]
    statements = role_statements(template, "OperatorPolicy", names(bucket))
    return sorted(
        {
            f"{request.action} {request.resource}"
            for call in calls
            for request in requests_of(call)
            if not allowing(statements, request)
        }
    )


def unused_grants(template: dict[str, Any], recorded: tuple[list[Call], str]) -> list[str]:
    """Each action on each resource of the policy that no request of the commands (nor the
    operator's reads of the reports) used."""
    calls, bucket = recorded
    calls = [*calls, *by_hand(bucket)]
    requests = [request for call in calls for request in requests_of(call)]
    unused = []
    for statement in role_statements(template, "OperatorPolicy", names(bucket)):
        for action in as_list(statement["Action"]):
            for resource in statement["Resource"]:
                single = {**statement, "Action": [action], "Resource": [resource]}
                if not any(allowing([single], request) for request in requests):
                    unused.append(f"{action} {resource}")
    return unused


def test_the_recorded_calls_are_every_call_of_send_status_redrive_and_settle(recorded):
    # GIVEN the commands' run THEN each AWS call they can make is among the recorded ones
    calls, _ = recorded
    assert {(c.service, c.operation) for c in calls} == {
        ("cloudformation", "DescribeStacks"),
        ("s3", "PutObject"),
        ("stepfunctions", "ListExecutions"),
        ("stepfunctions", "DescribeExecution"),
        ("stepfunctions", "ListMapRuns"),
        ("stepfunctions", "DescribeMapRun"),
        ("stepfunctions", "RedriveExecution"),
        ("dynamodb", "Query"),
        ("dynamodb", "GetItem"),
        ("dynamodb", "TransactWriteItems"),
    }
    # AND the failed batch was read (a child execution of the Map Run), and both uploads made
    assert {c.params.get("executionArn") for c in calls} >= {EXECUTION_ARN, CHILD_ARN}
    assert {c.params["Key"] for c in calls if c.operation == "PutObject"} == {
        "incoming/offers.csv",
        "incoming/dry-run/offers.csv",
    }


def test_the_operator_policy_allows_every_call_the_commands_make(transformed, recorded):
    assert denied_calls(transformed, recorded) == []


def test_the_operator_policy_grants_nothing_the_commands_never_use(transformed, recorded):
    assert unused_grants(transformed, recorded) == []


def test_the_operator_policy_names_its_actions_and_this_stack_only(transformed):
    statements = transformed["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]
    for statement in statements["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        assert all("*" not in action for action in as_list(statement["Action"])), statement
        assert "*" not in as_list(statement["Resource"]), statement


def test_the_operator_policy_is_an_exported_output(transformed):
    output = transformed["Outputs"]["OperatorPolicyArn"]
    assert output["Value"] == {"Ref": "OperatorPolicy"}
    assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-OperatorPolicyArn"}


@pytest.mark.parametrize(
    ("sid", "denied"),
    [
        ("ReadTheStackOutputs", "cloudformation:DescribeStacks"),
        ("UploadRecipientFiles", "s3:PutObject"),
        ("EncryptUploadsWithTheDataKey", "kms:GenerateDataKey"),
        ("FollowExecutionsAndTheirBatches", f"states:DescribeExecution {CHILD_ARN}"),
        ("RedriveFailedExecutions", "states:RedriveExecution"),
        ("CheckChoicesAgainstTheLedger", f"dynamodb:Query arn:aws:dynamodb:{REGION}"),
        ("ReadTheCampaignsTemplateSets", f"dynamodb:GetItem arn:aws:dynamodb:{REGION}"),
        ("SettleRowsInDoubt", f"dynamodb:UpdateItem arn:aws:dynamodb:{REGION}"),
        ("ReadTheReports", "s3:GetObject arn:aws:s3:::"),
        ("ListTheReports", "s3:ListBucket arn:aws:s3:::"),
    ],
    ids=[
        "stack",
        "upload",
        "key",
        "batches",
        "redrive",
        "choices",
        "template-sets",
        "settle",
        "reports",
        "report-listing",
    ],
)
def test_a_policy_without_a_grant_the_commands_need_is_caught(transformed, recorded, sid, denied):
    # GIVEN the policy without one of its statements
    broken = json.loads(json.dumps(transformed))
    document = broken["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]
    document["Statement"] = [s for s in document["Statement"] if s.get("Sid") != sid]

    # WHEN the commands' calls are judged THEN a call it allowed is denied
    assert denied in "\n".join(denied_calls(broken, recorded))


def test_a_grant_the_commands_never_use_is_caught(transformed, recorded):
    # GIVEN the policy also letting its holder read the uploads
    broken = json.loads(json.dumps(transformed))
    document = broken["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]
    uploads = {"Fn::Sub": "${MailBucket.Arn}/incoming/*"}
    document["Statement"].append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": uploads})

    # WHEN its grants are matched to the calls THEN that grant alone is reported
    _, bucket = recorded
    assert unused_grants(broken, recorded) == [f"s3:GetObject arn:aws:s3:::{bucket}/incoming/*"]


def test_the_operator_may_list_and_read_the_reports_and_nothing_else_of_the_bucket(
    transformed, recorded
):
    # GIVEN the policy's statements, as the stack names them
    _, bucket = recorded
    statements = role_statements(transformed, "OperatorPolicy", names(bucket))
    arn = f"arn:aws:s3:::{bucket}"

    def allowed(action: str, resource: str, prefix: str | None = None) -> bool:
        context = {} if prefix is None else {"s3:prefix": prefix}
        return bool(allowing(statements, Request(action, resource, context)))

    # THEN the reports are read and listed, with the data key
    assert allowed("s3:GetObject", f"{arn}/reports/c/run-1/report.csv")
    assert allowed("s3:ListBucket", arn, "reports/c/run-1/")
    assert allowed("kms:Decrypt", KEY_ARN)
    # AND nothing else is: not the uploads, the manifests, nor a listing of the whole bucket
    assert not allowed("s3:GetObject", f"{arn}/incoming/offers.csv")
    assert not allowed("s3:GetObject", f"{arn}/validated/c/manifest.jsonl")
    assert not allowed("s3:ListBucket", arn, "")
    assert not allowed("s3:ListBucket", arn, "incoming/")
