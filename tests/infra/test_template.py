"""The SAM template: it transforms, lints clean, and holds the resources the product needs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint, lint_file
from infra_support import INFRA, ROOT, TEMPLATE

from mailmatrix.adapters import ledger_dynamodb
from mailmatrix.local import load_sam_template, object_created_event

FUNCTIONS = {
    "ValidateFunction": "validate",
    "SendBatchFunction": "send_batch",
    "SummarizeFunction": "summarize",
    "SesEventsFunction": "ses_events",
    "AlertFunction": "alert",
}
SUBSTITUTIONS = {
    "ValidateFunctionArn",
    "SendBatchFunctionArn",
    "SummarizeFunctionArn",
    "SummaryTopicArn",
}


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes_on_the_sam_template():
    # GIVEN the template as written WHEN cfn-lint transforms and checks it THEN no finding
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["eu-west-1", "us-east-1"]))
    assert [str(match) for match in matches] == []


def test_cfn_lint_passes_on_the_transformed_template(transformed):
    matches = lint(json.dumps(transformed), config=ManualArgs(regions=["eu-west-1"]))
    assert [str(match) for match in matches] == []


def test_cfn_lint_catches_a_broken_template(transformed):
    # The lint check above can fail: a function with an unknown runtime is reported.
    broken = json.loads(json.dumps(transformed))
    broken["Resources"]["ValidateFunction"]["Properties"]["Runtime"] = "python2.1"
    assert any(
        "python2.1" in str(match)
        for match in lint(json.dumps(broken), config=ManualArgs(regions=["eu-west-1"]))
    )


def test_functions_have_the_shape_the_local_runner_reads(sam_template):
    functions = resources_of(sam_template, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTIONS)
    for name, folder in FUNCTIONS.items():
        properties = functions[name]["Properties"]
        assert properties["CodeUri"] == f"../functions/{folder}/"
        assert properties["Handler"] == "app.handler"
        assert (INFRA / properties["CodeUri"]).resolve() == ROOT / "functions" / folder


def test_the_local_runner_reads_the_template_as_sam_does(sam_template):
    # GIVEN the template parsed by SAM's own YAML reader (sam_template)
    # WHEN the local runner parses it (with libyaml when PyYAML has it)
    # THEN both hold the same resources, short-form tags included
    assert load_sam_template(TEMPLATE) == sam_template


def test_functions_run_python_312_with_the_layer_and_tracing(transformed):
    functions = resources_of(transformed, "AWS::Lambda::Function")
    layers = resources_of(transformed, "AWS::Lambda::LayerVersion")
    assert len(layers) == 1
    layer_name = next(iter(layers))
    for name in FUNCTIONS:
        properties = functions[name]["Properties"]
        assert properties["Runtime"] in {"python3.12", "python3.13"}
        assert (
            properties["Architectures"]
            == layers[layer_name]["Properties"]["CompatibleArchitectures"]
        )
        assert properties["Layers"] == [{"Ref": layer_name}]
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert 10 <= properties["Timeout"] <= 900
        assert properties["LoggingConfig"]["LogGroup"]["Ref"].endswith("LogGroup")


def test_functions_are_configured_for_aws_adapters(transformed):
    for name in FUNCTIONS:
        env = transformed["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert env["MAILMATRIX_STORAGE"] == "s3"
        assert env["MAILMATRIX_MAILER"] == "ses"
        assert env["MAILMATRIX_LEDGER"] == {"Fn::Sub": "dynamodb://${LedgerTable}"}
        assert env["MAILMATRIX_SENDER"] == {"Ref": "SenderAddress"}
        assert env["MAILMATRIX_CONFIGURATION_SET"] == {"Ref": "SendingConfigurationSet"}
        assert env["MAILMATRIX_STACK"] == {"Ref": "AWS::StackName"}


def test_state_machine_substitutions_cover_the_definition(sam_template):
    properties = sam_template["Resources"]["MailMatrixStateMachine"]["Properties"]
    assert properties["DefinitionUri"] == "../statemachine/mailmatrix.asl.json"
    assert set(properties["DefinitionSubstitutions"]) == SUBSTITUTIONS
    definition = (INFRA / properties["DefinitionUri"]).read_text(encoding="utf-8")
    # Every placeholder is filled, and nothing is offered that the definition does not use.
    assert set(re.findall(r"\$\{(\w+)\}", definition)) == SUBSTITUTIONS


def test_the_state_machine_publishes_only_to_the_topics_its_definition_names(transformed):
    # GIVEN the topics the definition's tasks publish to (failure alerts come from
    # ExecutionAlertRule, not from a state)
    machine = transformed["Resources"]["MailMatrixStateMachine"]["Properties"]
    topics = [
        machine["DefinitionSubstitutions"][name]
        for name in re.findall(r"\$\{(\w+TopicArn)\}", json.dumps(machine["DefinitionString"]))
    ]

    # WHEN the state machine role's sns:Publish grants are read THEN they name those alone
    role = transformed["Resources"]["StateMachineRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    published = [s["Resource"] for s in statements if "sns:Publish" in s["Action"]]
    assert topics == [{"Ref": "SummaryTopic"}]
    assert published == topics


def test_failed_executions_alert_through_the_alert_function(transformed):
    # GIVEN the rule on the state machine's failed, timed-out and aborted executions
    resources = transformed["Resources"]
    rule = resources["ExecutionAlertRule"]["Properties"]
    assert rule["EventPattern"]["source"] == ["aws.states"]
    assert rule["EventPattern"]["detail-type"] == ["Step Functions Execution Status Change"]
    assert rule["EventPattern"]["detail"] == {
        "status": ["FAILED", "TIMED_OUT", "ABORTED"],
        "stateMachineArn": [{"Ref": "MailMatrixStateMachine"}],
    }

    # THEN it invokes AlertFunction with the whole event (the function reads the failed
    # batches' errors), with retries and dead letters, and may do so by a permission of its own
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["AlertFunction", "Arn"]}
    assert "InputTransformer" not in target and "Input" not in target
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    (permission,) = [
        p
        for p in resources_of(transformed, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": "AlertFunction"}
    ]
    assert permission["Properties"] == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Ref": "AlertFunction"},
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": ["ExecutionAlertRule", "Arn"]},
    }

    # AND the function publishes to the alerts topic, its undelivered events go to the
    # dead-letter queue, and only its role may publish there besides the alarms
    function = resources["AlertFunction"]["Properties"]
    assert function["Environment"]["Variables"]["MAILMATRIX_ALERT_TOPIC"] == {"Ref": "AlertTopic"}
    assert function["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    role = resources["AlertRole"]["Properties"]
    granted = {
        action: statement["Resource"]
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert granted["sns:Publish"] == {"Ref": "AlertTopic"}
    assert {"states:ListMapRuns", "states:ListExecutions", "states:DescribeExecution"} <= set(
        granted
    )
    policy = resources["AlertTopicPolicy"]["Properties"]["PolicyDocument"]
    allowed = [s["Principal"] for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allowed == [{"Service": "cloudwatch.amazonaws.com"}]


def test_state_machine_logs_and_traces(transformed):
    machine = resources_of(transformed, "AWS::StepFunctions::StateMachine")
    (properties,) = [m["Properties"] for m in machine.values()]
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    logging = properties["LoggingConfiguration"]
    assert logging["Level"] in {"ERROR", "ALL"}
    assert logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": ["StateMachineLogGroup", "Arn"]
    }


def test_bucket_is_private_encrypted_versioned_and_notifies_eventbridge(transformed):
    bucket = transformed["Resources"]["MailBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    prefixes = {r.get("Prefix") for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert {"validated/", "results/", "reports/"} <= prefixes


def test_the_bucket_is_kept_with_its_objects_and_sheds_its_expired_delete_markers(transformed):
    bucket = transformed["Resources"]["MailBucket"]

    # A stack deleted, or the bucket replaced, leaves it and its objects (CloudFormation could
    # not delete it while it holds objects: the stack's deletion would fail)
    assert (bucket.get("DeletionPolicy"), bucket.get("UpdateReplacePolicy")) == ("Retain", "Retain")

    # AND its rules expire objects on a versioned bucket, so a rule removes the delete markers
    # left once an object's versions have expired too (in a rule of its own: not with Days)
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any("ExpirationInDays" in rule for rule in rules)
    (markers,) = [rule for rule in rules if rule.get("ExpiredObjectDeleteMarker")]
    assert "ExpirationInDays" not in markers and "Prefix" not in markers
    assert markers["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}


def test_bucket_policy_denies_requests_without_tls(transformed):
    policy = transformed["Resources"]["MailBucketPolicy"]["Properties"]["PolicyDocument"]
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] == "*"


def test_upload_rule_starts_the_state_machine_with_retries_and_dead_letters(transformed):
    rule = transformed["Resources"]["UploadRule"]["Properties"]
    assert rule["EventPattern"]["source"] == ["aws.s3"]
    assert rule["EventPattern"]["detail-type"] == ["Object Created"]
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": "MailMatrixStateMachine"}
    assert target["RoleArn"] == {"Fn::GetAtt": ["UploadRuleRole", "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}


def insecure_transport_denials(transformed: dict[str, Any], kind: str) -> dict[str, list]:
    """For each resource a policy of ``kind`` covers, the actions its statements deny to
    every principal on requests made without TLS, and nothing else."""
    listed = "Topics" if kind == "AWS::SNS::TopicPolicy" else "Queues"
    denied: dict[str, list] = {}
    for policy in resources_of(transformed, kind).values():
        properties = policy["Properties"]
        for statement in properties["PolicyDocument"]["Statement"]:
            if statement["Effect"] != "Deny":
                continue
            assert statement["Principal"] == "*"
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for target in properties[listed]:
                denied.setdefault(json.dumps(target), []).append(statement["Action"])
    return denied


def test_topics_and_the_dead_letter_queue_deny_requests_without_tls(transformed):
    # GIVEN every topic and queue of the stack WHEN their resource policies are read
    # THEN each denies, to any principal, publishing or sending without TLS
    topics = resources_of(transformed, "AWS::SNS::Topic")
    queues = resources_of(transformed, "AWS::SQS::Queue")
    by_topic = insecure_transport_denials(transformed, "AWS::SNS::TopicPolicy")
    by_queue = insecure_transport_denials(transformed, "AWS::SQS::QueuePolicy")
    assert by_topic == {json.dumps({"Ref": name}): ["sns:Publish"] for name in topics}
    assert by_queue == {json.dumps({"Ref": name}): ["sqs:*"] for name in queues}

    # AND the services that publish alerts and dead letters are still let in (over TLS)
    policy = transformed["Resources"]["AlertTopicPolicy"]["Properties"]["PolicyDocument"]
    allowed = {s["Principal"]["Service"] for s in policy["Statement"] if s["Effect"] == "Allow"}
    assert "cloudwatch.amazonaws.com" in allowed


def test_the_ledger_is_encrypted_with_the_aws_managed_key_and_says_so(sam_template):
    # SSEEnabled true without a key id is the AWS managed key aws/dynamodb, not an AWS owned
    # key (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_SSESpecification.html)
    table = sam_template["Resources"]["LedgerTable"]
    assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}
    (skip,) = [s for s in table["Metadata"]["checkov"]["skip"] if s["id"] == "CKV_AWS_119"]
    assert "AWS managed key aws/dynamodb" in skip["comment"]
    assert "owned" not in skip["comment"]
    assert "AWS owned key" not in TEMPLATE.read_text(encoding="utf-8")


def upload_rule_matches(transformed: dict[str, Any], key: str) -> bool:
    """Whether EventBridge (as moto implements its patterns) starts a run for ``key``."""
    from moto.events.models import EventPattern

    pattern = json.loads(
        json.dumps(transformed["Resources"]["UploadRule"]["Properties"]["EventPattern"])
    )
    pattern["detail"]["bucket"]["name"] = ["mail"]
    event = object_created_event("mail", key, 10, "etag")
    return EventPattern.load(json.dumps(pattern)).matches_event(event)


@pytest.mark.parametrize(
    ("key", "starts"),
    [
        ("incoming/offers.csv", True),
        ("incoming/OFFERS.CSV", True),
        ("incoming/offers.Csv", True),
        ("incoming/dry-run/offers.CSV", True),
        ("incoming/offers.csv.bak", False),
        ("incoming/offers.txt", False),
        ("reports/c-1/report.csv", False),
        ("validated/c-1/OFFERS.CSV", False),
    ],
)
def test_the_upload_rule_starts_on_any_casing_of_csv_under_incoming(transformed, key, starts):
    # GIVEN an object created under ``key`` WHEN the upload rule's pattern is matched
    # THEN a .csv of any casing under incoming/ starts a run, and nothing else does (the
    # reports the run writes must not start another)
    assert upload_rule_matches(transformed, key) is starts


def test_ledger_table_matches_the_dynamodb_adapter(transformed):
    table = transformed["Resources"]["LedgerTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": ledger_dynamodb.KEY, "KeyType": "HASH"}]
    indexes = {i["IndexName"]: i["KeySchema"] for i in table["GlobalSecondaryIndexes"]}
    assert indexes == {
        ledger_dynamodb.MESSAGE_ID_INDEX: [{"AttributeName": "message_id", "KeyType": "HASH"}],
        ledger_dynamodb.CAMPAIGN_INDEX: [
            {"AttributeName": "campaign", "KeyType": "HASH"},
            {"AttributeName": "row", "KeyType": "RANGE"},
        ],
        ledger_dynamodb.FILE_INDEX: [
            {"AttributeName": "file_size", "KeyType": "HASH"},
            {"AttributeName": "file_print", "KeyType": "RANGE"},
        ],
    }
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}


def test_the_data_key_is_kept_while_what_it_encrypts_outlives_the_stack(transformed):
    # GIVEN the resources encrypted with DataKey that outlive a deletion of the stack: those
    # it retains (the bucket among them)
    resources = transformed["Resources"]
    outliving = sorted(
        name
        for name, resource in resources.items()
        if name != "DataKey"
        and resource["Type"] != "AWS::IAM::Role"
        and '"DataKey"' in json.dumps(resource.get("Properties", {}))
        and resource.get("DeletionPolicy") in ("Retain", "Snapshot")
    )

    # THEN the key is kept too, on deletion and on replacement
    assert outliving == ["MailBucket"]
    key = resources["DataKey"]
    assert (key.get("DeletionPolicy"), key.get("UpdateReplacePolicy")) == ("Retain", "Retain")
    # AND the ledger table, kept as well, does not depend on it (an AWS owned key)
    assert resources["LedgerTable"]["DeletionPolicy"] == "Retain"
    assert resources["LedgerTable"]["Properties"]["SSESpecification"] == {"SSEEnabled": True}


def test_topics_are_encrypted_and_subscriptions_are_optional(transformed):
    for name in ("SummaryTopic", "AlertTopic"):
        assert transformed["Resources"][name]["Properties"]["KmsMasterKeyId"] == {"Ref": "DataKey"}
    assert transformed["Resources"]["SummarySubscription"]["Condition"] == "HasSummaryEmail"
    assert transformed["Resources"]["AlertSubscription"]["Condition"] == "HasAlertEmail"


def test_ses_events_reach_the_events_function(transformed):
    destination = transformed["Resources"]["SendingEventDestination"]["Properties"]
    events = set(destination["EventDestination"]["MatchingEventTypes"])
    assert {"send", "delivery", "bounce", "complaint", "reject"} <= events
    rules = resources_of(transformed, "AWS::Events::Rule")
    (ses_rule,) = [
        r for r in rules.values() if r["Properties"]["EventPattern"]["source"] == ["aws.ses"]
    ]
    (target,) = ses_rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["SesEventsFunction", "Arn"]}


def test_alarms_cover_executions_lambda_and_ses_reputation(transformed):
    alarms = resources_of(transformed, "AWS::CloudWatch::Alarm").values()
    metrics = set()
    for alarm in alarms:
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": "AlertTopic"}]
        if "MetricName" in properties:
            metrics.add(properties["MetricName"])
        for query in properties.get("Metrics", []):
            if "MetricStat" in query:
                metrics.add(query["MetricStat"]["Metric"]["MetricName"])
    assert {
        "ExecutionsFailed",
        "ExecutionsTimedOut",
        "ExecutionsAborted",
        "Errors",
        "Throttles",
        "Reputation.BounceRate",
        "Reputation.ComplaintRate",
    } <= metrics


def test_lambda_errors_alarm_on_the_functions_outside_executions_only(transformed):
    # GIVEN the alarm on Lambda's Errors metric
    alarm = transformed["Resources"]["LambdaErrorsAlarm"]["Properties"]
    watched = {
        query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for query in alarm["Metrics"]
        if "MetricStat" in query and query["MetricStat"]["Metric"]["MetricName"] == "Errors"
    }
    # THEN it leaves out SendBatch, whose ClaimBusy, Throttled and time-limit errors are
    # retried on purpose (and Validate and Summarize, whose errors fail the execution, which
    # ExecutionsFailedAlarm and the alert report), and watches what nothing else would report
    assert watched == {"SesEventsFunction", "AlertFunction"}
    (total,) = [q for q in alarm["Metrics"] if "Expression" in q]
    assert set(total["Expression"].replace("+", " ").split()) == {
        q["Id"] for q in alarm["Metrics"] if "MetricStat" in q
    }
    failed = transformed["Resources"]["ExecutionsFailedAlarm"]["Properties"]
    assert (failed["Namespace"], failed["MetricName"]) == ("AWS/States", "ExecutionsFailed")


def test_dashboard_shows_the_alarmed_figures(transformed):
    body = transformed["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    for figure in (
        "ExecutionsFailed",
        "Throttles",
        "Reputation.BounceRate",
        "Reputation.ComplaintRate",
    ):
        assert figure in body
    # The body is JSON once the substitutions are filled in.
    filled = re.sub(r"\$\{[^}]+\}", "x", body)
    assert len(json.loads(filled)["widgets"]) >= 3


def test_outputs_give_bucket_state_machine_and_console_link(transformed):
    outputs = transformed["Outputs"]
    assert outputs["BucketName"]["Value"] == {"Ref": "MailBucket"}
    assert outputs["StateMachineArn"]["Value"] == {"Ref": "MailMatrixStateMachine"}
    url = outputs["StateMachineConsoleUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${AWS::Region}.console.aws.amazon.com/states/home")
    assert "${MailMatrixStateMachine}" in url


@pytest.mark.parametrize("path", ["deploy.sh", "install-checkov.sh", "layer/Makefile"])
def test_infra_scripts_exist(path):
    assert (INFRA / path).is_file()


def test_a_send_batch_task_never_times_out_while_its_lambda_may_still_run(sam_template):
    # A task timeout does not stop the function: a retry started before the Lambda's own
    # timeout would run beside it. And a ClaimBusy retry must outwait the longest invocation.
    timeout = sam_template["Resources"]["SendBatchFunction"]["Properties"]["Timeout"]
    definition = json.loads((ROOT / "statemachine" / "mailmatrix.asl.json").read_text())
    processor = definition["States"]["SendEmails"]["ItemProcessor"]
    task = processor["States"]["SendBatch"]
    busy = next(r for r in task["Retry"] if "ClaimBusy" in r["ErrorEquals"])
    waits = [
        busy["IntervalSeconds"] * busy.get("BackoffRate", 2.0) ** n
        for n in range(busy["MaxAttempts"])
    ]

    assert task["TimeoutSeconds"] > timeout
    assert busy.get("JitterStrategy", "NONE") == "NONE"
    assert sum(waits) > timeout
    assert task["Retry"].index(busy) == 0  # before any retrier that could match it


def test_the_validate_function_has_room_in_tmp_for_a_million_row_manifest_rewritten(
    sam_template, tmp_path
):
    import hashlib

    from bench.bench_validate import generate
    from mailmatrix.core.attachments import AttachmentIndex
    from mailmatrix.core.recipients import IntakeRules, validate_recipients
    from mailmatrix.core.templates import load_catalog
    from mailmatrix.jobs import _MANIFEST_LINE
    from mailmatrix.ports import ObjectInfo

    # GIVEN manifest lines of the benchmark's rows, each attachment listed with an S3 ETag
    rows = 500
    generate(tmp_path / "rows.csv", rows)
    listing = [
        ObjectInfo(f"attachments/letter-{i}.pdf", 50_000, tag=hashlib.md5(bytes(i)).hexdigest())
        for i in range(rows)
    ]
    templates = ROOT / "templates"
    catalog = load_catalog(
        {
            p.relative_to(templates).as_posix(): p.read_text("utf-8")
            for p in templates.rglob("*")
            if p.is_file()
        }
    )
    lines: list[int] = []

    def emit(row: dict[str, Any]) -> None:
        row["key"] = "0" * 64  # an idempotency key's length
        lines.append(len(_MANIFEST_LINE.encode(row).encode()) + 1)

    with (tmp_path / "rows.csv").open("rb") as stream:
        validate_recipients(
            stream,
            source="incoming/rows.csv",
            catalog=catalog,
            attachments=AttachmentIndex.from_listing(listing),
            rules=IntakeRules(),
            emit=emit,
        )

    # THEN the Validate function's /tmp holds a million of them twice (the manifest and its
    # rewrite without withdrawn rows)
    needed_mb = 2 * 1_000_000 * (sum(lines) / len(lines)) / 1e6
    properties = sam_template["Resources"]["ValidateFunction"]["Properties"]
    assert properties.get("EphemeralStorage", {"Size": 512})["Size"] >= needed_mb


def test_a_campaign_refused_for_its_template_sets_is_retried_by_no_task():
    # A catalog that lost a set the campaign used stays so until the operator acts: the
    # failure ends the execution (FAILED, which ExecutionAlertRule alerts on) without retries.
    definition = json.loads((ROOT / "statemachine" / "mailmatrix.asl.json").read_text())
    processor = definition["States"]["SendEmails"]["ItemProcessor"]["States"]
    for task in (definition["States"]["ValidateRecipients"], processor["SendBatch"]):
        retried = {name for retrier in task["Retry"] for name in retrier["ErrorEquals"]}
        assert not retried & {"TemplateSetsChanged", "TemplateError", "States.ALL"}
        assert "States.TaskFailed" not in retried
        assert "Catch" not in task
