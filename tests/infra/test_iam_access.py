"""Each function's role allows every AWS call the function makes, and grants no call it never makes.

The calls are not listed by hand: the example campaign runs on the local engine with the AWS
adapters under moto (tests/e2e/test_aws_adapters_e2e.py), once sending, once as a dry run, and
once more uploaded with the retry-failed metadata after a row failed (Validate releases it),
the bucket keeping versions by then (Validate reads the version the event names);
Summarize runs again as after a failed batch, SesEvents records a bounce, and the Alert
function alerts a run stopped by the daily quota. Every SDK call is recorded with the function
that made it (the SES v2 preflight's too, which moto answers through a stand-in, and the Alert
function's Step Functions reads, answered from the local engine's store).
Each call becomes the IAM requests AWS authorizes for it (policy_eval.requests_for) and is
judged against that function's role as the template writes it (policy_eval.allowing).

moto can enforce IAM itself (INITIAL_NO_AUTH_ACTION_COUNT), and does reproduce the S3
AccessDenied, but it cannot judge these roles: it authorizes every non-S3 call against
Resource "*", so the table- and identity-scoped grants are refused, and it lets an S3 listing
through whatever its s3:prefix condition says.
"""

from __future__ import annotations

import functools
import json
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.ses.models import ses_backends
from policy_eval import Call, Request, allowing, as_list, naming, requests_for, role_statements

from mailmatrix.adapters import _aws, ses_account
from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
from mailmatrix.core.send import idempotency_key
from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.engine.registry import make_context, resolve_handler
from mailmatrix.jobs import RETRY_FAILED_METADATA, Source, campaign_id_for, choice_metadata
from mailmatrix.local import environment
from tests.e2e import test_aws_adapters_e2e as e2e
from tests.e2e.test_failure_alert import status_change
from tests.fixtures.engine_sfn import EngineStepFunctions

REGION, ACCOUNT, BUCKET = e2e.REGION, e2e.ACCOUNT, e2e.BUCKET
BOUNCE = pathlib.Path(__file__).parents[1] / "integration" / "events" / "ses_bounce.json"
RETRY_FAILED = {RETRY_FAILED_METADATA: "true"}
# The state machine's name in the stack (mailmatrix-STACK), given to the executions run here.
MACHINE = "mailmatrix-mailmatrix"
# What the template's names are in the moto account the campaign runs in.
NAMES = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::StackName": "mailmatrix",
    "MailBucket": BUCKET,
    "MailBucket.Arn": f"arn:aws:s3:::{BUCKET}",
    "LedgerTable": "ledger",
    "LedgerTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/ledger",
    "SenderIdentity": "talent@example.com",
    "SendingConfigurationSet": "mailmatrix",
    "AlertTopic": f"arn:aws:sns:{REGION}:{ACCOUNT}:AlertTopic",
    "MailMatrixStateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{MACHINE}",
}
# The parameters that name what a call touches (bodies and the like are left out).
NAMING_PARAMS = {
    "Bucket",
    "Key",
    "Prefix",
    "VersionId",
    "TableName",
    "IndexName",
    "TopicArn",
    "EmailIdentity",
    "FromEmailAddress",
    "ConfigurationSetName",
    "executionArn",
    "mapRunArn",
}


class Recorder:
    """Records the SDK calls of every client the adapters build, by the function that built it.

    A client belongs to the handler that built it (the adapters build theirs inside the
    handler): calls are made on other threads too, e.g. s3transfer's upload_file.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self._current = threading.local()

    def client(self, real_client: Any) -> Any:
        """A replacement for _aws.client: the same client, its calls recorded."""

        def build(service: str, **options: Any) -> Any:
            made = real_client(service, **options)
            function = getattr(self._current, "function", None)
            made.meta.events.register(
                "before-parameter-build", functools.partial(self._record, function)
            )
            return made

        return build

    def stand_in(self, make: Callable[[], Any], service: str) -> Callable[[], Any]:
        """A replacement for a factory of stand-ins for ``service``'s client, calls recorded."""

        def build() -> Any:
            return _RecordedStandIn(make(), service, self._current.function, self.calls)

        return build

    def wrap(self, function: str, handler: str) -> Any:
        """The handler, run with ``function`` named as the builder of the clients it builds."""
        resolved = resolve_handler(handler)

        def invoke(event: dict[str, Any], context: Any) -> Any:
            self.events.setdefault(function, []).append(event)
            self._current.function = function
            try:
                return resolved(event, context)
            finally:
                self._current.function = None

        return invoke

    def _record(self, function: str | None, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name
        self.calls.append(Call(function, service, model.name, naming(params, NAMING_PARAMS)))


class _RecordedStandIn:
    """A test's stand-in for a client (moto lacks SES v2 GetAccount), its calls recorded."""

    def __init__(self, target: Any, service: str, function: str | None, calls: list) -> None:
        self._target, self._service, self._function, self._calls = target, service, function, calls

    def __getattr__(self, method: str) -> Any:
        operation = "".join(word.title() for word in method.split("_"))

        def call(**params: Any) -> Any:
            self._calls.append(
                Call(self._function, self._service, operation, naming(params, NAMING_PARAMS))
            )
            return getattr(self._target, method)(**params)

        return call


def with_a_failed_batch(s3: Any, send: dict[str, Any]) -> dict[str, Any]:
    """The Map Run result ``send`` again, its batches written again as FAILED children."""
    details = send["ResultWriterDetails"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=details["Key"])["Body"].read())
    records = []
    for entry in manifest["ResultFiles"]["SUCCEEDED"]:
        records += json.loads(s3.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read())
    for record in records:
        record.pop("Output", None)
        record.update(Status="FAILED", Error="Sandbox.Timedout", Cause="killed")
    failed_key = details["Key"].replace("manifest.json", "FAILED_0.json")
    s3.put_object(Bucket=BUCKET, Key=failed_key, Body=json.dumps(records).encode())
    failed = {"ResultFiles": {"FAILED": [{"Key": failed_key}], "SUCCEEDED": [], "PENDING": []}}
    key = details["Key"].replace("manifest.json", "manifest-with-a-failed-batch.json")
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(failed).encode())
    return {**send, "ResultWriterDetails": {**details, "Key": key}}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Call]]:
    """The calls of a campaign, a dry run of it, its summary after a failed batch, and
    SesEvents recording a bounce."""
    recorder = Recorder()
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        e2e.moto_account(monkeypatch, tmp_path_factory.mktemp("iam")) as account,
    ):
        monkeypatch.setattr(_aws, "client", recorder.client(_aws.client))
        preflight = recorder.stand_in(ses_account.sesv2_client, "sesv2")
        monkeypatch.setattr(ses_account, "sesv2_client", preflight)
        # As in the stack, every email goes through the configuration set.
        boto3.client("sesv2", region_name=REGION).create_configuration_set(
            ConfigurationSetName=NAMES["SendingConfigurationSet"]
        )
        monkeypatch.setenv("MAILMATRIX_CONFIGURATION_SET", NAMES["SendingConfigurationSet"])

        # A row of the campaign failed for good in an earlier run (written outside any
        # function) is skipped by the first upload, and sent by one asking for failed rows.
        ledger = DynamoDbLedger("ledger", boto3.client("dynamodb", region_name=REGION))
        campaign = campaign_id_for(Source(BUCKET, "incoming/offers.csv", ""))
        failed = idempotency_key(campaign, "amelia.hart@example.com", "offer")
        ledger.claim(failed, campaign=campaign, row=2, attempt="earlier-run")
        ledger.record_failed(failed, code="MessageRejected", reason="no", permanent=True)

        sent = e2e.run_on_engine(account, "incoming/offers.csv", wrap=recorder.wrap)
        dry = e2e.run_on_engine(account, "incoming/dry-run/offers.csv", wrap=recorder.wrap)
        assert (sent["status"], dry["status"]) == ("SUCCEEDED", "SUCCEEDED")
        assert [o.state for o in ledger.outcomes(campaign) if o.key == failed] == ["failed"]

        # The bucket keeps versions from now on, as the stack's does: Validate reads the
        # upload by the version its event names (before, by its ETag).
        account["s3"].put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        retried = e2e.run_on_engine(
            account, "incoming/offers.csv", wrap=recorder.wrap, metadata=RETRY_FAILED
        )
        assert retried["status"] == "SUCCEEDED"
        assert [o.state for o in ledger.outcomes(campaign) if o.key == failed] == ["sent"]

        with environment({"MAILMATRIX_LEDGER": "dynamodb://ledger"}):
            # Summarize of a Map Run with a failed batch also asks the ledger what went out.
            event = recorder.events["SummarizeFunction"][0]
            event = {**event, "send": with_a_failed_batch(account["s3"], event["send"])}
            handler = recorder.wrap("SummarizeFunction", "functions.summarize.app:handler")
            handler(event, make_context("SummarizeFunction", None, 300))

            # A bounce of any message sent: the event only has to find its ledger entry.
            first = ses_backends[ACCOUNT][REGION].sent_messages[0].id
            event = json.loads(BOUNCE.read_text().replace("MESSAGE_ID", first))
            handler = recorder.wrap("SesEventsFunction", "functions.ses_events.app:handler")
            result = handler(event, make_context("SesEventsFunction", None, 30))
            assert result["recorded"] is True, result
            # An event of a message tagged with its letter's key: found by the key (GetItem).
            event["detail"]["mail"]["messageId"] = "never-recorded"
            event["detail"]["mail"]["tags"]["mailmatrix-key"] = [failed]
            result = handler(event, make_context("SesEventsFunction", None, 30))
            assert result["recorded"] is True, result

        # A run stopped by the daily quota, alerted: Step Functions' reads of its batches
        # answered from the engine's store, the alert published to the alerts topic.
        stopped = e2e.run_on_engine(
            account,
            "incoming/quota.csv",
            wrap=recorder.wrap,
            # the same letters to the same people as offers.csv: sent again on purpose
            metadata=choice_metadata(["offers.csv"], []),
            settings={"MAILMATRIX_FAULTS": "quota-after=2", "MAILMATRIX_BATCH_SIZE": "5"},
            state_machine=MACHINE,
        )
        assert stopped["status"] == "FAILED"
        engine = Engine(account["tmp"] / "executions", ResourceRegistry())
        recorded_client = _aws.client

        def client(service: str, **options: Any) -> Any:
            if service != "stepfunctions":
                return recorded_client(service, **options)
            return recorder.stand_in(lambda: EngineStepFunctions(engine), service)()

        monkeypatch.setattr(_aws, "client", client)
        alerted = {"MAILMATRIX_ALERT_TOPIC": account["topics"]["AlertTopic"]}
        with environment(alerted):
            handler = recorder.wrap("AlertFunction", "functions.alert.app:handler")
            handler(status_change(stopped), make_context("AlertFunction", None, 60))
        assert "Daily message quota exceeded" in e2e.received(account, "AlertTopic")[0]["Message"]
    yield recorder.calls


def function_roles(template: dict[str, Any]) -> dict[str, str]:
    """Each function's logical id and the logical id of the role it runs as."""
    return {
        name: resource["Properties"]["Role"]["Fn::GetAtt"][0]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }


def denied_calls(template: dict[str, Any], calls: list[Call]) -> list[str]:
    """Each call a function made that its role does not allow, as 'Function: action resource'."""
    roles = function_roles(template)
    denied = []
    for call in calls:
        statements = role_statements(template, roles[call.function], NAMES)
        for request in requests_for(call, region=REGION, account=ACCOUNT):
            if not allowing(statements, request):
                denied.append(f"{call.function}: {request.action} {request.resource}")
    return sorted(set(denied))


def test_the_recorded_calls_cover_every_function_and_the_read_backs(recorded):
    # GIVEN the recorded campaign THEN every call was made inside a function's handler, and
    # the ones that broke Validate and Summarize on AWS are among them
    assert {c.function for c in recorded} == {
        "ValidateFunction",
        "SendBatchFunction",
        "SummarizeFunction",
        "SesEventsFunction",
        "AlertFunction",
    }
    # AND the Alert function's reads of the failed batches and its publication
    assert {(c.service, c.operation) for c in recorded if c.function == "AlertFunction"} == {
        ("stepfunctions", "ListMapRuns"),
        ("stepfunctions", "DescribeMapRun"),
        ("stepfunctions", "ListExecutions"),
        ("stepfunctions", "DescribeExecution"),
        ("sns", "Publish"),
    }
    heads = {
        (c.function, c.params["Key"].split("/")[0]) for c in recorded if c.operation == "HeadObject"
    }
    assert {("ValidateFunction", "validated"), ("SummarizeFunction", "reports")} <= heads
    # AND Validate's ledger calls: the campaign's template sets read and extended, the
    # release of the failed row (a query of the campaign, then its update), and the letters
    # of every campaign sent with a file of a listed size (by_file), and the operator's choice
    # to send offers.csv's letters again (quota.csv) kept (an update)
    ledger_calls = {
        (c.operation, c.params.get("IndexName"))
        for c in recorded
        if c.service == "dynamodb" and c.function == "ValidateFunction"
    }
    assert ledger_calls == {
        ("GetItem", None),
        ("Query", "by_campaign"),
        ("Query", "by_file"),
        ("UpdateItem", None),
    }


def test_each_role_allows_every_call_its_function_makes(transformed, recorded):
    # WHEN each recorded call is judged against the role of the function that made it
    # THEN none is denied (HeadObject after an upload needs s3:GetObject on that prefix)
    assert denied_calls(transformed, recorded) == []


# What a function's own code calls. Logs, X-Ray, KMS and the dead-letter queue are used by
# Lambda and the AWS services on the function's behalf, so their grants are not judged here.
CALLED_BY_CODE = ("s3:", "dynamodb:", "ses:")


def unused_grants(template: dict[str, Any], calls: list[Call]) -> list[str]:
    """Each action, resource and listed prefix of a function's role that no call used."""
    unused = []
    for function, role in function_roles(template).items():
        requests = [
            r
            for c in calls
            if c.function == function
            for r in requests_for(c, region=REGION, account=ACCOUNT)
        ]
        for statement in role_statements(template, role, NAMES):
            actions = [a for a in as_list(statement["Action"]) if a.startswith(CALLED_BY_CODE)]
            prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
            for action in actions:
                for resource in statement["Resource"]:
                    for prefix in as_list(prefixes) if prefixes else [None]:
                        single = {**statement, "Action": [action], "Resource": [resource]}
                        if prefix is not None:
                            single["Condition"] = {"StringLike": {"s3:prefix": [prefix]}}
                        if not any(allowing([single], r) for r in requests):
                            unused.append(f"{role}: {action} {resource} {prefix or ''}".strip())
    return unused


def test_each_role_grants_nothing_its_function_never_uses(transformed, recorded):
    # GIVEN every S3, DynamoDB and SES grant of a function's role
    # WHEN the recorded calls are matched to them
    # THEN each action on each resource (and listed prefix) is used by some call
    assert unused_grants(transformed, recorded) == []


def test_an_unused_listing_prefix_is_caught(transformed, recorded):
    # GIVEN SendBatchRole also allowed to list results/, which SendBatch never lists
    broken = json.loads(json.dumps(transformed))
    policy = broken["Resources"]["SendBatchRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    (listing,) = [s for s in policy["Statement"] if s.get("Sid") == "ListTemplates"]
    listing["Condition"]["StringLike"]["s3:prefix"].append("results/*")

    # WHEN the grants are matched to the calls THEN that prefix alone is reported
    assert unused_grants(broken, recorded) == [
        "SendBatchRole: s3:ListBucket arn:aws:s3:::mailmatrix-e2e results/*"
    ]


@pytest.mark.parametrize(
    ("sid", "denied"),
    [
        ("ReadBackManifest", "s3:GetObject arn:aws:s3:::mailmatrix-e2e/validated/"),
        (
            "RecordTemplateSetsAndReleaseFailedRows",
            f"dynamodb:UpdateItem {NAMES['LedgerTable.Arn']}",
        ),
        ("ReadCampaignTemplateSets", f"dynamodb:GetItem {NAMES['LedgerTable.Arn']}"),
        ("ReadTheUploadOfTheEvent", "s3:GetObjectVersion arn:aws:s3:::mailmatrix-e2e/incoming/"),
    ],
    ids=["read-back", "update-ledger", "read-template-sets", "upload-version"],
)
def test_a_validate_role_without_a_grant_it_needs_is_caught(transformed, recorded, sid, denied):
    # GIVEN ValidateRole without one of its statements
    broken = json.loads(json.dumps(transformed))
    policy = broken["Resources"]["ValidateRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"] = [s for s in policy["Statement"] if s.get("Sid") != sid]

    # WHEN the campaign's calls are judged THEN the call it allowed is denied
    assert f"ValidateFunction: {denied}" in "\n".join(denied_calls(broken, recorded))


def test_send_batch_claims_in_transactions_its_role_allows_item_by_item(transformed, recorded):
    # GIVEN the example campaign (two template sets, rows naming their own files): its claims
    # are transactions: the claim, the file's owner, the address's letter of the other set,
    # and the letter's print item, its own file's item and its address-and-set item where the
    # letter was composed first; a letter composed after its claim keeps its print and file
    # by the entry's update and the Puts of those items
    transactions = [c for c in recorded if c.operation == "TransactWriteItems"]
    assert {c.function for c in transactions} == {"SendBatchFunction"}
    assert {c.params["TransactItems"] for c in transactions} == {
        "Put:ledger,Put:ledger,ConditionCheck:ledger",
        "Put:ledger,Put:ledger,ConditionCheck:ledger,Put:ledger,Put:ledger,Put:ledger",
        "Update:ledger,Put:ledger,Put:ledger,Put:ledger",
    }

    # WHEN SendBatchRole lacks dynamodb:ConditionCheckItem THEN those calls are denied
    broken = json.loads(json.dumps(transformed))
    policy = broken["Resources"]["SendBatchRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    (ledger,) = [s for s in policy["Statement"] if s.get("Sid") == "Ledger"]
    ledger["Action"].remove("dynamodb:ConditionCheckItem")
    assert denied_calls(broken, recorded) == [
        f"SendBatchFunction: dynamodb:ConditionCheckItem {NAMES['LedgerTable.Arn']}"
    ]


REPORTS = {"Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/reports/*"}
LIST_TEMPLATES = {
    "Action": "s3:ListBucket",
    "Resource": "arn:aws:s3:::b",
    "Condition": {"StringLike": {"s3:prefix": ["templates/*"]}},
}
LIST_FROM_ENDPOINT = {**LIST_TEMPLATES, "Condition": {"StringEquals": {"aws:SourceVpce": "v"}}}


@pytest.mark.parametrize(
    ("statement", "request_", "granted"),
    [
        (REPORTS, Request("s3:GetObject", "arn:aws:s3:::b/reports/c/report.csv"), True),
        (REPORTS, Request("s3:GetObject", "arn:aws:s3:::b/validated/c/m.jsonl"), False),
        (
            {"Action": "S3:Get*", "Resource": "arn:aws:s3:::b/*"},
            Request("s3:GetObject", "arn:aws:s3:::b/x"),
            True,
        ),
        (
            {"Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"},
            Request("s3:GetObject", "arn:aws:s3:::b/x"),
            False,
        ),
        (
            LIST_TEMPLATES,
            Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "templates/"}),
            True,
        ),
        (
            LIST_TEMPLATES,
            Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "reports/"}),
            False,
        ),
        (
            LIST_FROM_ENDPOINT,
            Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "templates/"}),
            False,
        ),
    ],
    ids=[
        "prefix",
        "other-prefix",
        "wildcard-action",
        "other-action",
        "condition",
        "bad-prefix",
        "unknown-key",
    ],
)
def test_the_evaluator_grants_only_what_a_statement_covers(statement, request_, granted):
    statements = [{"Effect": "Allow", **statement, "Resource": [statement["Resource"]]}]
    assert bool(allowing(statements, request_)) is granted


def test_a_head_after_an_upload_needs_get_object_and_a_listing_its_prefix():
    # GIVEN the calls S3Storage.put_file and S3Storage.list make WHEN mapped to IAM requests
    head = Call("F", "s3", "HeadObject", {"Bucket": "b", "Key": "reports/c/report.csv"})
    versioned = Call("F", "s3", "GetObject", {"Bucket": "b", "Key": "k", "VersionId": "v1"})
    listing = Call("F", "s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "templates/"})

    # THEN they are what AWS authorizes
    assert requests_for(head, region=REGION, account=ACCOUNT) == [
        Request("s3:GetObject", "arn:aws:s3:::b/reports/c/report.csv")
    ]
    assert requests_for(versioned, region=REGION, account=ACCOUNT)[0].action == (
        "s3:GetObjectVersion"
    )
    assert requests_for(listing, region=REGION, account=ACCOUNT) == [
        Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "templates/"})
    ]
    # AND a transaction needs each item's own action on its table
    transaction = Call(
        "F", "dynamodb", "TransactWriteItems", {"TransactItems": "Put:t,ConditionCheck:t"}
    )
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t"
    assert requests_for(transaction, region=REGION, account=ACCOUNT) == [
        Request("dynamodb:PutItem", table),
        Request("dynamodb:ConditionCheckItem", table),
    ]
    with pytest.raises(ValueError, match="no IAM mapping for s3:DeleteBucket"):
        requests_for(
            Call("F", "s3", "DeleteBucket", {"Bucket": "b"}), region=REGION, account=ACCOUNT
        )
