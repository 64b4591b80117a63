"""Spec suite: the engine feature by feature, expected values from the States Language
specification (https://states-language.net/spec.html) and the Step Functions developer guide
(pages cited per test)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.engine.interpreter import dumps, object_text, retry_delay
from mailmatrix.engine.reader import csv_items
from mailmatrix.errors import DefinitionError

DATA = pathlib.Path(__file__).parent / "data"
REPO = pathlib.Path(__file__).parents[2]


class Objects:
    """An in-memory object store."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}

    def get(self, bucket: str, key: str) -> bytes:
        return self.data[(bucket, key)]

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.data[(bucket, key)] = body


@pytest.fixture
def objects() -> Objects:
    return Objects()


@pytest.fixture
def registry(objects: Objects) -> ResourceRegistry:
    reg = ResourceRegistry()
    reg.set_object_store(objects.get, objects.put)
    return reg


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def engine(tmp_path: pathlib.Path, registry: ResourceRegistry, sleeps: list[float]) -> Engine:
    return Engine(tmp_path / "executions", registry, sleep=sleeps.append)


def run(engine: Engine, definition: dict[str, Any], data: Any = None, **kw: Any) -> dict:
    return engine.start(json.dumps(definition), data if data is not None else {}, **kw)


def task(resource: str = "arn:aws:states:::lambda:invoke", **fields: Any) -> dict[str, Any]:
    return {
        "StartAt": "T",
        "States": {"T": {"Type": "Task", "Resource": resource, **fields, "End": True}},
    }


def types(engine: Engine, record: dict) -> list[str]:
    return [e["type"] for e in engine.history(record["name"])]


# ---- ItemReader CSV: "How Step Functions parses input CSV files" ---------------------------


def test_csv_reader_follows_the_aws_rules_of_case_23() -> None:
    # GIVEN the recipients file of case 23 and how the ItemReader must see each record
    expected = json.loads((DATA / "itemreader_quirks_expected.json").read_text())
    text = (DATA / "itemreader_quirks.csv").read_bytes().decode("utf-8")

    # WHEN it is parsed with a header row
    rows = {
        r["Email"].split("@")[0]: r for r in csv_items(text, {"CSVHeaderLocation": "FIRST_ROW"})
    }

    # THEN each field is what the AWS rules give
    assert rows["alice"]["Attachment_File"] == expected["alice"]["itemreader"]["Attachment_File"]
    assert rows["bob"]["Name"] == expected["bob"]["itemreader"]["Name"]
    assert rows["carol"]["Attachment_File"] == ""
    assert rows["dave"] == {
        "Email": "dave@example.com",
        "Name": "Dave Example",
        "Status": "active",
        "Attachment_File": "dave.pdf",
    }
    assert rows["erin"]["Name"] == "Erin\r\nExample"
    assert rows["frank"]["Name"] == expected["frank"]["itemreader"]["Name"]
    assert len(rows) == 6


def test_csv_reader_given_headers_and_delimiters_and_escapes() -> None:
    text = 'a|b\\|c|C:\\\\x\n"q ""x"""|2\n'
    items = csv_items(
        text,
        {"CSVHeaderLocation": "GIVEN", "CSVHeaders": ["h1", "h2", "h3"], "CSVDelimiter": "PIPE"},
    )
    assert items == [{"h1": "a", "h2": "b|c", "h3": "C:\\x"}, {"h1": 'q "x"', "h2": "2", "h3": ""}]


# ---- Distributed Map: ItemReader, ItemBatcher, ResultWriter, tolerance ----------------------


def distributed(processor_states: dict, **fields: Any) -> dict[str, Any]:
    state = {
        "Type": "Map",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": next(iter(processor_states)),
            "States": processor_states,
        },
        "End": True,
        **fields,
    }
    return {"StartAt": "M", "States": {"M": state}}


LAMBDA_END = {
    "W": {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "Work", "Payload.$": "$"},
        "OutputPath": "$.Payload",
        "End": True,
    }
}


def test_item_batcher_groups_items_with_batch_input(
    engine: Engine, registry: ResourceRegistry, objects: Objects
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/input-output-itembatcher.html
    objects.put("b", "in.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(5)))
    registry.register_lambda("Work", lambda e, c: e)
    definition = distributed(
        LAMBDA_END,
        ItemReader={
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSONL", "MaxItems": 4},
            "Parameters": {"Bucket": "b", "Key.$": "$.key"},
        },
        ItemSelector={"n.$": "$$.Map.Item.Value.i"},
        ItemBatcher={"MaxItemsPerBatchPath": "$.size", "BatchInput": {"tag.$": "$.tag"}},
        MaxConcurrency=2,
    )
    record = run(engine, definition, {"key": "in.jsonl", "size": 3, "tag": "t"})
    assert record["status"] == "SUCCEEDED"
    assert record["output"] == [
        {"BatchInput": {"tag": "t"}, "Items": [{"n": 0}, {"n": 1}, {"n": 2}]},
        {"BatchInput": {"tag": "t"}, "Items": [{"n": 3}]},
    ]
    assert types(engine, record) == [
        "ExecutionStarted",
        "MapStateEntered",
        "MapRunStarted",
        "MapRunSucceeded",
        "MapStateExited",
        "ExecutionSucceeded",
    ]


def test_result_writer_writes_manifest_and_result_files(
    engine: Engine, registry: ResourceRegistry, objects: Objects
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultwriter.html
    registry.register_lambda("Work", lambda e, c: {"double": e * 2})
    definition = distributed(
        LAMBDA_END,
        ItemsPath="$.xs",
        ResultWriter={
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": "out", "Prefix": "results/run1"},
        },
    )
    record = run(engine, definition, {"xs": [1, 2]})
    run_id = engine.describe(record["name"])["mapRuns"][0]["id"]
    manifest_key = f"results/run1/{run_id}/manifest.json"
    assert record["output"] == {
        "MapRunArn": engine.describe(record["name"])["mapRuns"][0]["mapRunArn"],
        "ResultWriterDetails": {"Bucket": "out", "Key": manifest_key},
    }
    manifest = json.loads(objects.get("out", manifest_key))
    key = f"results/run1/{run_id}/SUCCEEDED_0.json"
    assert manifest["ResultFiles"]["SUCCEEDED"] == [
        {"Key": key, "Size": len(objects.get("out", key))}
    ]
    results = json.loads(objects.get("out", key))
    assert [json.loads(r["Output"]) for r in results] == [{"double": 2}, {"double": 4}]
    assert {r["Status"] for r in results} == {"SUCCEEDED"}


def flaky_work(fail_on: set[int]) -> Any:
    def handler(event: Any, context: Any) -> Any:
        if event in fail_on:
            raise ValueError(f"item {event}")
        return event

    return handler


def test_tolerated_failure_percentage_lets_the_map_succeed(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html
    registry.register_lambda("Work", flaky_work({3}))
    definition = distributed(LAMBDA_END, ToleratedFailurePercentage=25)
    record = run(engine, definition, [1, 2, 3, 4])
    assert record["status"] == "SUCCEEDED"
    assert record["output"][2]["Error"] == "ValueError"
    run_info = engine.describe(record["name"])["mapRuns"][0]
    assert (run_info["succeeded"], run_info["failed"]) == (3, 1)


def test_exceeding_tolerance_fails_and_redrive_reruns_only_failed_items(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/redrive-map-run.html
    calls: list[Any] = []
    registry.register_lambda("Work", lambda e, c: calls.append(e) or flaky_work({2})(e, c))
    definition = distributed(LAMBDA_END, MaxConcurrency=1)
    record = run(engine, definition, [1, 2, 3], name="ex1")
    assert (record["status"], record["error"]) == (
        "FAILED",
        "States.ExceedToleratedFailureThreshold",
    )

    calls.clear()
    registry.register_lambda("Work", lambda e, c: calls.append(e) or e)
    again = engine.redrive("ex1")
    assert again["status"] == "SUCCEEDED"
    assert again["redriveCount"] == 1
    assert sorted(calls) == [2, 3]  # 1 succeeded before; 3 never ran (the run stopped early)
    assert again["output"] == [1, 2, 3]
    history = types(engine, again)
    assert history[-6:] == [
        "ExecutionRedriven",
        "MapStateEntered",
        "MapRunRedriven",
        "MapRunSucceeded",
        "MapStateExited",
        "ExecutionSucceeded",
    ]


def test_child_workflows_have_their_own_history(engine: Engine, registry: ResourceRegistry) -> None:
    registry.register_lambda("Work", lambda e, c: e)
    record = run(engine, distributed(LAMBDA_END), [5])
    run_id = engine.describe(record["name"])["mapRuns"][0]["id"]
    (child,) = engine.map_run_children(record["name"], run_id)
    assert [e["type"] for e in child["history"]] == [
        "ExecutionStarted",
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskSucceeded",
        "TaskStateExited",
        "ExecutionSucceeded",
    ]


def test_child_history_holds_each_input_and_output_as_compact_json(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # GIVEN a child whose Lambda wraps its event, on an item JSON escapes in places
    registry.register_lambda("Work", lambda e, c: {"got": e})
    item = {"name": 'Zoë \u2028 "q" \\', "n": [1, 2.5, None, True, {}]}
    # WHEN it runs
    record = run(engine, distributed(LAMBDA_END), [item])
    run_id = engine.describe(record["name"])["mapRuns"][0]["id"]
    (child,) = engine.map_run_children(record["name"], run_id)
    details = {
        event["type"]: value
        for event in child["history"]
        for key, value in event.items()
        if key.endswith("EventDetails")
    }
    # THEN each event holds its data as Step Functions serialises it (compact UTF-8 JSON)
    assert details["ExecutionStarted"]["input"] == compact(item)
    assert details["TaskStateEntered"]["input"] == compact(item)
    assert details["TaskScheduled"]["parameters"] == compact(
        {"FunctionName": "Work", "Payload": item}
    )
    assert details["TaskStateExited"]["output"] == compact({"got": item})
    assert details["ExecutionSucceeded"]["output"] == compact({"got": item})


def test_object_text_serialises_as_dumps_with_members_given_as_text() -> None:
    # GIVEN an object with its Payload already serialised
    value = {"FunctionName": "f", "Payload": {"a": "é"}, "n": [1.5, None]}
    # WHEN it is serialised around that text THEN it reads as if serialised whole
    assert object_text(value, {"Payload": dumps(value["Payload"])}) == dumps(value)
    # AND keys that are not strings (JSON makes them strings) leave it to json
    odd = {1: "a", "Payload": {}}
    assert object_text(odd, {"Payload": "{}"}) == '{"1":"a","Payload":{}}'


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- Lambda tasks ---------------------------------------------------------------------------


def test_lambda_invoke_result_shape_and_context(engine: Engine, registry: ResourceRegistry) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/connect-lambda.html
    seen: dict[str, Any] = {}

    def handler(event: Any, context: Any) -> Any:
        seen.update(
            name=context.function_name,
            arn=context.invoked_function_arn,
            left=context.get_remaining_time_in_millis(),
        )
        return {"echo": event}

    registry.register_lambda("Fn", handler)
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:Fn:live"
    record = run(engine, task(Parameters={"FunctionName": arn, "Payload.$": "$"}), {"a": 1})
    assert record["output"]["Payload"] == {"echo": {"a": 1}}
    assert record["output"]["StatusCode"] == 200
    assert record["output"]["ExecutedVersion"] == "$LATEST"
    assert seen["name"] == "Fn"
    assert seen["arn"] == arn
    assert seen["left"] > 0


def test_powertools_logger_accepts_the_context(engine: Engine, registry: ResourceRegistry) -> None:
    from aws_lambda_powertools import Logger

    logger = Logger(service="test")

    @logger.inject_lambda_context
    def handler(event: Any, context: Any) -> Any:
        return "ok"

    registry.register_lambda("Fn", handler)
    record = run(engine, task("arn:aws:lambda:eu-west-1:123456789012:function:Fn"))
    assert record["output"] == "ok"


def test_handler_exception_becomes_error_named_after_its_class(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html
    class Throttled(Exception):
        pass

    def handler(event: Any, context: Any) -> Any:
        raise Throttled("slow down")

    registry.register_lambda("Fn", handler)
    record = run(engine, task(Parameters={"FunctionName": "Fn", "Payload": {}}))
    assert record["error"] == "Throttled"
    cause = json.loads(record["cause"])
    assert (cause["errorMessage"], cause["errorType"]) == ("slow down", "Throttled")
    assert set(cause) == {"errorMessage", "errorType", "requestId", "stackTrace"}


def test_handler_past_timeout_gives_states_timeout(
    engine: Engine, registry: ResourceRegistry
) -> None:
    import threading

    release = threading.Event()
    registry.register_lambda("Slow", lambda e, c: release.wait(5))
    record = run(
        engine, task("arn:aws:lambda:eu-west-1:123456789012:function:Slow", TimeoutSeconds=0.05)
    )
    release.set()
    assert record["error"] == "States.Timeout"
    assert types(engine, record)[-2] == "LambdaFunctionTimedOut"


def test_payload_above_256_kib_is_data_limit_exceeded(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html
    registry.register_lambda("Big", lambda e, c: "x" * (256 * 1024))
    definition = task(
        Parameters={"FunctionName": "Big", "Payload": {}},
        Catch=[{"ErrorEquals": ["States.ALL"], "Next": "T"}],
    )
    record = run(engine, definition)
    assert record["error"] == "States.DataLimitExceeded"  # States.ALL does not catch it


# ---- Retry and Catch ------------------------------------------------------------------------


def test_retry_backoff_capped_by_max_delay(
    engine: Engine, registry: ResourceRegistry, sleeps: list[float]
) -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html
    registry.register_lambda("Fn", flaky_work({"x"}))
    retry = [
        {
            "ErrorEquals": ["ValueError"],
            "IntervalSeconds": 2,
            "MaxAttempts": 4,
            "BackoffRate": 3,
            "MaxDelaySeconds": 10,
        }
    ]
    definition = task(
        Parameters={"FunctionName": "Fn", "Payload": "x"},
        Retry=retry,
        Catch=[{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.err", "Next": "T"}],
    )
    definition["States"]["T"]["Catch"][0]["Next"] = "Caught"
    definition["States"]["Caught"] = {"Type": "Pass", "End": True}
    record = run(engine, definition, {"k": 1})
    assert sleeps == [2, 6, 10, 10]
    assert record["output"]["err"]["Error"] == "ValueError"
    assert types(engine, record).count("TaskScheduled") == 5


def test_full_jitter_stays_below_the_backoff_delay() -> None:
    retrier = {"IntervalSeconds": 4, "BackoffRate": 2, "JitterStrategy": "FULL"}
    delays = [retry_delay(retrier, 2) for _ in range(200)]
    assert all(0 <= d <= 16 for d in delays)
    assert len(set(delays)) > 100


# ---- Wait, Choice, definition checks --------------------------------------------------------


def test_wait_timestamp_in_the_past_does_not_wait(engine: Engine, sleeps: list[float]) -> None:
    definition = {
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "TimestampPath": "$.t", "End": True}},
    }
    record = run(engine, definition, {"t": "2020-01-01T00:00:00Z"})
    assert record["status"] == "SUCCEEDED"
    assert sleeps == [0.0]


def test_unfilled_substitution_is_refused(engine: Engine) -> None:
    with pytest.raises(DefinitionError, match=r"\$\{Missing\}"):
        engine.start('{"StartAt": "${Missing}", "States": {}}', {})


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"Type": "Pass", "End": True, "Foo": 1}, "state 'S': unsupported field 'Foo'"),
        (
            {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "End": True,
            },
            "state 'S': field 'Resource'",
        ),
        (
            {
                "Type": "Map",
                "End": True,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                    "StartAt": "P",
                    "States": {"P": {"Type": "Pass", "End": True}},
                },
                "ResultWriter": {"WriterConfig": {"OutputType": "JSONL"}},
            },
            "field 'ResultWriter'",
        ),
    ],
)
def test_unsupported_fields_are_refused_naming_state_and_field(
    engine: Engine, state: dict, message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        run(engine, {"StartAt": "S", "States": {"S": state}})


# ---- the project's definition, listener, persistence ---------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.map_runs: list[dict] = []

    def on_event(self, execution_id: str, event: dict) -> None:
        self.events.append(event["type"])

    def on_map_run(self, map_run: dict) -> None:
        self.map_runs.append(map_run)


def run_real_definition(
    engine: Engine,
    registry: ResourceRegistry,
    objects: Objects,
    publish: Any,
    listener: Any = None,
) -> dict:
    """Run statemachine/mailmatrix.asl.json over 5 rows with stub functions and ``publish``."""
    rows = b"".join(json.dumps({"row": i}).encode() + b"\n" for i in range(5))
    plan = {
        "batch_size": 2,
        "max_concurrency": 2,
        "tolerated_failure_percentage": 0,
        "dry_run": False,
    }
    campaign = {
        "id": "c1",
        "source": {"key": "incoming/a.csv"},
        "rejects_key": "r",
        "results_prefix": "results/c1",
    }

    def validate(event: Any, context: Any) -> Any:
        objects.put("b", "v.jsonl", rows)
        return {
            "campaign": campaign,
            "counts": {"rows": 5, "valid": 5, "rejected": 0, "skipped": 0},
            "manifest": {"bucket": "b", "key": "v.jsonl"},
            "plan": plan,
        }

    registry.register_lambda("Validate", validate)
    registry.register_lambda("Send", lambda e, c: {"sent": len(e["Items"])})
    registry.register_lambda(
        "Summarize",
        lambda e, c: {
            "subject": "s",
            "message": e["send"]["ResultWriterDetails"]["Key"],
            "counts": {},
            "report_key": "k",
            "outcome": "ok",
        },
    )
    registry.register_service("arn:aws:states:::sns:publish", publish)
    subs = {
        "ValidateFunctionArn": "Validate",
        "SendBatchFunctionArn": "Send",
        "SummarizeFunctionArn": "Summarize",
        "SummaryTopicArn": "arn:summary",
    }
    return engine.start(
        (REPO / "statemachine" / "mailmatrix.asl.json").read_text(),
        {"detail": {}},
        substitutions=subs,
        listener=listener,
    )


def test_real_definition_runs_with_listener(
    engine: Engine, registry: ResourceRegistry, objects: Objects
) -> None:
    published: list[dict] = []
    listener = Recorder()
    record = run_real_definition(
        engine,
        registry,
        objects,
        lambda p: published.append(p) or {"MessageId": "m"},
        listener,
    )
    assert record["status"] == "SUCCEEDED"
    assert published == [
        {"TopicArn": "arn:summary", "Subject": "s", "Message": record["output"]["message"]}
    ]
    assert listener.events == types(engine, record)
    final = listener.map_runs[-1]
    assert (final["status"], final["total"], final["succeeded"]) == ("SUCCEEDED", 3, 3)
    assert [r["name"] for r in Engine(engine.store.root, ResourceRegistry()).list_executions()] == [
        record["name"]
    ]


class SnsThrottled(Exception):
    """What the SNS integration reports when the topic's publish rate is exceeded."""

    asl_error = "SNS.ThrottledException"


def test_a_throttled_summary_publish_is_retried_and_the_run_succeeds(
    engine: Engine, registry: ResourceRegistry, objects: Objects, sleeps: list[float]
) -> None:
    # GIVEN SNS throttles the first two publishes of the summary
    attempts: list[dict] = []

    def publish(parameters: dict) -> dict:
        attempts.append(parameters)
        if len(attempts) <= 2:
            raise SnsThrottled("Rate exceeded")
        return {"MessageId": "m"}

    # WHEN the real definition runs
    record = run_real_definition(engine, registry, objects, publish)

    # THEN NotifySummary tried three times and the run succeeded, the summary published once
    history = engine.history(record["name"])
    entered = next(
        i
        for i, e in enumerate(history)
        if e.get("stateEnteredEventDetails", {}).get("name") == "NotifySummary"
    )
    attempt = ["TaskScheduled", "TaskStarted"]
    assert [e["type"] for e in history[entered:]] == [
        "TaskStateEntered",
        *attempt,
        "TaskFailed",
        *attempt,
        "TaskFailed",
        *attempt,
        "TaskSucceeded",
        "TaskStateExited",
        "ExecutionSucceeded",
    ]
    assert record["status"] == "SUCCEEDED"
    assert len(attempts) == 3

    # AND the waits before the retries grew and were jittered (full jitter: anywhere from
    # 0 up to 2 s, then up to 4 s)
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 2 and 0 <= sleeps[1] <= 4
