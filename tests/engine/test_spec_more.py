"""Spec suite, continued: redrive, timeouts, concurrency, readers, writers, intrinsics, context.

Expected values from the Step Functions developer guide: "Redriving executions"
(https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html), "Intrinsic
functions" (.../intrinsic-functions.html), "Error handling" (.../concepts-error-handling.html),
"ItemReader", "ItemBatcher", "ResultWriter" (.../input-output-*.html), "Context object"
(.../input-output-contextobject.html).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import errno
import json
import multiprocessing
import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import pytest

from mailmatrix.engine import Engine, ProcessInvoker, ResourceRegistry
from mailmatrix.engine.store import ExecutionStore
from mailmatrix.errors import EngineError
from tests.engine.test_spec import LAMBDA_END, Objects, distributed, run, task, types

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def objects() -> Objects:
    return Objects()


@pytest.fixture
def registry(objects: Objects) -> ResourceRegistry:
    reg = ResourceRegistry()
    reg.set_object_store(objects.get, objects.put)
    return reg


@pytest.fixture
def engine(tmp_path: pathlib.Path, registry: ResourceRegistry) -> Engine:
    return Engine(tmp_path / "executions", registry, sleep=lambda s: None)


def lambda_state(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": f"arn:aws:lambda:eu-west-1:123456789012:function:{name}",
        **fields,
    }


def switchable(calls: list[Any], broken: set[Any], key: str | None = None) -> Any:
    def handler(event: Any, context: Any) -> Any:
        calls.append(event)
        if (event[key] if key else event) in broken:
            raise RuntimeError(f"broken {event}")
        return event

    return handler


# ---- redrive --------------------------------------------------------------------------------


def test_redrive_reruns_from_the_failed_state_only(
    engine: Engine, registry: ResourceRegistry
) -> None:
    calls: list[Any] = []
    broken = {"b"}
    registry.register_lambda("Fn", switchable(calls, broken))
    definition = {
        "StartAt": "A",
        "States": {
            "A": lambda_state("Fn", InputPath="$.a", ResultPath="$.ra", Next="B"),
            "B": lambda_state("Fn", InputPath="$.b", ResultPath="$.rb", End=True),
        },
    }
    record = run(engine, definition, {"a": "a", "b": "b"}, name="r1")
    assert (record["status"], calls) == ("FAILED", ["a", "b"])

    broken.clear()
    again = engine.redrive("r1")
    assert calls == ["a", "b", "b"]
    assert again["output"] == {"a": "a", "b": "b", "ra": "a", "rb": "b"}
    assert again["redriveCount"] == 1
    history = types(engine, again)
    assert history.count("ExecutionStarted") == 1
    assert history[history.index("ExecutionFailed") + 1] == "ExecutionRedriven"


def test_redrive_of_parallel_reruns_only_the_failed_branch(
    engine: Engine, registry: ResourceRegistry
) -> None:
    calls: list[Any] = []
    broken = {2}
    registry.register_lambda("Fn", switchable(calls, broken, key="v"))

    def branch(value: int) -> dict[str, Any]:
        return {
            "StartAt": "S",
            "States": {
                "S": lambda_state("Fn", Parameters={"v": value}, OutputPath="$.v", End=True)
            },
        }

    definition = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Parallel", "Branches": [branch(1), branch(2), branch(3)], "End": True}
        },
    }
    assert run(engine, definition, {}, name="p1")["status"] == "FAILED"
    broken.clear()
    calls.clear()
    again = engine.redrive("p1")
    assert again["output"] == [1, 2, 3]
    assert calls == [{"v": 2}, {"v": 3}]


def test_redrive_of_inline_map_reruns_failed_and_unrun_iterations(
    engine: Engine, registry: ResourceRegistry
) -> None:
    calls: list[Any] = []
    broken = {1}
    registry.register_lambda("Fn", switchable(calls, broken))
    processor = {"StartAt": "S", "States": {"S": lambda_state("Fn", End=True)}}
    definition = {
        "StartAt": "M",
        "States": {"M": {"Type": "Map", "ItemProcessor": processor, "End": True}},
    }
    assert run(engine, definition, [0, 1, 2], name="m1")["status"] == "FAILED"
    broken.clear()
    calls.clear()
    assert engine.redrive("m1")["output"] == [0, 1, 2]
    assert calls == [1, 2]


def test_redrive_refuses_a_succeeded_execution(engine: Engine) -> None:
    run(engine, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}, name="ok")
    with pytest.raises(EngineError, match="SUCCEEDED and cannot be redriven"):
        engine.redrive("ok")


def test_execution_names_are_unique(engine: Engine) -> None:
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    run(engine, definition, name="same")
    with pytest.raises(EngineError, match="already exists"):
        run(engine, definition, name="same")


def test_another_engine_reads_the_persisted_execution(
    engine: Engine, tmp_path: pathlib.Path
) -> None:
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": 1, "End": True}}}
    record = run(engine, definition, name="x")
    other = Engine(tmp_path / "executions", ResourceRegistry())
    assert other.describe("x")["output"] == record["output"] == 1
    assert other.history("x") == engine.history("x")


# ---- timeouts and error matching -----------------------------------------------------------


def test_execution_timeout_gives_timed_out(engine: Engine) -> None:
    definition = {
        "TimeoutSeconds": 5,
        "StartAt": "W",
        "States": {
            "W": {"Type": "Wait", "Seconds": 10, "Next": "P"},
            "P": {"Type": "Pass", "End": True},
        },
    }
    record = run(engine, definition)
    assert (record["status"], record["error"]) == ("TIMED_OUT", "States.Timeout")
    assert types(engine, record)[-1] == "ExecutionTimedOut"


def test_task_failed_does_not_match_timeout_and_all_does_not_catch_runtime(
    engine: Engine, registry: ResourceRegistry
) -> None:
    release = threading.Event()
    registry.register_lambda("Slow", lambda e, c: release.wait(5))
    definition = {
        "StartAt": "T",
        "States": {
            "T": lambda_state(
                "Slow",
                TimeoutSeconds=0.05,
                Next="Done",
                Catch=[
                    {"ErrorEquals": ["States.TaskFailed"], "Next": "Done"},
                    {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.e", "Next": "Done"},
                ],
            ),
            "Done": {"Type": "Pass", "End": True},
        },
    }
    record = run(engine, definition, {})
    release.set()
    assert record["output"]["e"]["Error"] == "States.Timeout"

    bad_path = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Pass", "InputPath": "$.missing", "Next": "Q"},
            "Q": {"Type": "Pass", "End": True},
        },
    }
    bad_path["States"]["P"]["Type"] = "Parallel"
    bad_path["States"]["P"]["Branches"] = [
        {"StartAt": "Z", "States": {"Z": {"Type": "Pass", "End": True}}}
    ]
    bad_path["States"]["P"]["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": "Q"}]
    assert run(engine, bad_path, {})["error"] == "States.Runtime"


def test_retry_count_in_context_object(engine: Engine, registry: ResourceRegistry) -> None:
    seen: list[int] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(event["retry"])
        if len(seen) < 3:
            raise RuntimeError("again")
        return event

    registry.register_lambda("Fn", handler)
    definition = task(
        Parameters={"FunctionName": "Fn", "Payload": {"retry.$": "$$.State.RetryCount"}},
        Retry=[{"ErrorEquals": ["RuntimeError"], "MaxAttempts": 5}],
    )
    assert run(engine, definition)["status"] == "SUCCEEDED"
    assert seen == [0, 1, 2]


def test_max_attempts_zero_never_retries(engine: Engine, registry: ResourceRegistry) -> None:
    calls: list[Any] = []
    registry.register_lambda("Fn", switchable(calls, {1}))
    definition = {
        "StartAt": "T",
        "States": {
            "T": lambda_state(
                "Fn",
                End=True,
                Retry=[
                    {"ErrorEquals": ["RuntimeError"], "MaxAttempts": 0},
                    {"ErrorEquals": ["States.ALL"], "MaxAttempts": 3},
                ],
            )
        },
    }
    assert run(engine, definition, 1)["error"] == "RuntimeError"
    assert calls == [1]


# ---- Distributed Map details ----------------------------------------------------------------


def test_map_children_run_concurrently(engine: Engine, registry: ResourceRegistry) -> None:
    # Two children must be inside the handler at once to pass the barrier.
    barrier = threading.Barrier(2, timeout=10)
    registry.register_lambda("Work", lambda e, c: barrier.wait() is not None and e)
    record = run(engine, distributed(LAMBDA_END, MaxConcurrency=2), [1, 2])
    assert record["output"] == [1, 2]


def test_process_invoker_runs_named_handlers_in_another_process(tmp_path: pathlib.Path) -> None:
    invoker = ProcessInvoker(workers=1)
    try:
        registry = ResourceRegistry(invoker=invoker)
        registry.register_lambda("Fn", "tests.engine.handlers_for_tests:pid_of_worker")
        engine = Engine(tmp_path / "ex", registry)
        record = run(engine, task("arn:aws:lambda:eu-west-1:123456789012:function:Fn"), {"a": 1})
    finally:
        invoker.close()
    assert record["output"]["event"] == {"a": 1}
    assert record["output"]["function"] == "Fn"
    assert record["output"]["pid"] != os.getpid()


def test_csv_and_json_readers_through_the_map(engine: Engine, objects: Objects) -> None:
    objects.put("b", "x.csv", b"name;n\nann;1\nbob;2\n")
    objects.put("b", "x.json", b'[{"k": 1}, {"k": 2}, {"k": 3}]')
    echo = {"P": {"Type": "Pass", "End": True}}
    csv_def = distributed(
        echo,
        ItemReader={
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {
                "InputType": "CSV",
                "CSVHeaderLocation": "FIRST_ROW",
                "CSVDelimiter": "SEMICOLON",
            },
            "Parameters": {"Bucket": "b", "Key": "x.csv"},
        },
    )
    assert run(engine, csv_def)["output"] == [{"name": "ann", "n": "1"}, {"name": "bob", "n": "2"}]
    json_def = distributed(
        echo,
        ItemReader={
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSON", "MaxItems": 2},
            "Parameters": {"Bucket": "b", "Key": "x.json"},
        },
    )
    assert run(engine, json_def)["output"] == [{"k": 1}, {"k": 2}]


def test_missing_object_is_item_reader_failed(engine: Engine) -> None:
    definition = distributed(
        {"P": {"Type": "Pass", "End": True}},
        ItemReader={
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSONL"},
            "Parameters": {"Bucket": "b", "Key": "none.jsonl"},
        },
    )
    assert run(engine, definition)["error"] == "States.ItemReaderFailed"


def test_max_input_bytes_per_batch_splits_batches(engine: Engine) -> None:
    definition = distributed(
        {"P": {"Type": "Pass", "End": True}}, ItemBatcher={"MaxInputBytesPerBatch": 40}
    )
    output = run(engine, definition, ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"])["output"]
    assert [len(b["Items"]) for b in output] == [2, 1]
    assert all(len(json.dumps(b, separators=(",", ":"))) <= 40 for b in output)


def test_tolerated_failure_count_and_failed_pending_files(
    engine: Engine, registry: ResourceRegistry, objects: Objects
) -> None:
    calls: list[Any] = []
    registry.register_lambda("Work", switchable(calls, {1, 2}))
    definition = distributed(
        LAMBDA_END,
        ToleratedFailureCount=1,
        MaxConcurrency=1,
        Label="Sender",
        ResultWriter={
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": "o", "Prefix": "p"},
        },
    )
    record = run(engine, definition, [0, 1, 2, 3])
    assert record["error"] == "States.ExceedToleratedFailureThreshold"
    (map_run,) = engine.describe(record["name"])["mapRuns"]
    assert re.fullmatch(
        r"arn:aws:states:eu-west-1:123456789012:mapRun:LocalStateMachine/"
        r"Sender:[0-9a-f]{32}",
        map_run["mapRunArn"],
    )
    manifest = json.loads(objects.get("o", f"p/{map_run['id']}/manifest.json"))
    counts = {
        status: len(json.loads(objects.get("o", files[0]["Key"])))
        for status, files in manifest["ResultFiles"].items()
        if files
    }
    assert counts == {"SUCCEEDED": 1, "FAILED": 2, "PENDING": 1}


# ---- intrinsics and context -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("States.Format('a \\\\{\\\\} {}', $.s)", "a {} x"),
        ("States.StringSplit('1,2;3', ',;')", ["1", "2", "3"]),
        ("States.Hash('input data', 'MD5')", "812f45842bc6d66ee14572ce20db8e86"),
        ("States.ArrayRange(1, 9, 2)", [1, 3, 5, 7, 9]),
        ("States.MathAdd(111, -1)", 110),
    ],
)
def test_intrinsic_examples(engine: Engine, expression: str, expected: Any) -> None:
    definition = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": {"v.$": expression}, "End": True}},
    }
    assert run(engine, definition, {"s": "x"})["output"] == {"v": expected}


def test_intrinsic_failures(engine: Engine) -> None:
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {"v.$": "States.ArrayRange(1, 2000, 1)"},
                "End": True,
            }
        },
    }
    assert run(engine, definition)["error"] == "States.IntrinsicFailure"


def test_uuid_and_math_random(engine: Engine) -> None:
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {"u.$": "States.UUID()", "r.$": "States.MathRandom(5, 10)"},
                "End": True,
            }
        },
    }
    output = run(engine, definition)["output"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", output["u"]
    )
    assert 5 <= output["r"] < 10


def test_fail_state_error_path_may_be_an_intrinsic(engine: Engine) -> None:
    definition = {
        "StartAt": "F",
        "States": {
            "F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "States.Format('bad {}', $.n)"}
        },
    }
    record = run(engine, definition, {"e": "Oops", "n": 3})
    assert (record["error"], record["cause"]) == ("Oops", "bad 3")


def test_context_object_execution_fields(engine: Engine) -> None:
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Pass",
                "Parameters": {
                    "id.$": "$$.Execution.Id",
                    "name.$": "$$.Execution.Name",
                    "state.$": "$$.State.Name",
                    "machine.$": "$$.StateMachine.Name",
                },
                "End": True,
            }
        },
    }
    record = run(engine, definition, name="ctx", state_machine_name="Demo")
    assert record["output"] == {
        "id": "arn:aws:states:eu-west-1:123456789012:execution:Demo:ctx",
        "name": "ctx",
        "state": "P",
        "machine": "Demo",
    }


def test_record_reads_as_dict_and_attributes(engine: Engine) -> None:
    definition = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E", "Cause": "c"}}}
    record = run(engine, definition, name="rec")
    assert (record.status, record.error, record.cause) == ("FAILED", "E", "c")
    assert record.execution_arn == record["executionArn"]
    assert [e["type"] for e in record.history] == [
        "ExecutionStarted",
        "FailStateEntered",
        "ExecutionFailed",
    ]
    assert engine.describe("rec").history == record.history


def test_real_definition_fails_at_the_failing_state_without_a_catch(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # The definition has no Catch: the execution ends at the state that failed, so a redrive
    # resumes there; the alert comes from the stack's EventBridge rule (locally: the runner).
    repo = pathlib.Path(__file__).parents[2]

    def validate(event: Any, context: Any) -> Any:
        raise ValueError("no Email column")

    published: list[dict] = []
    registry.register_lambda("Validate", validate)
    registry.register_service(
        "arn:aws:states:::sns:publish", lambda p: published.append(p) or {"MessageId": "m"}
    )
    subs = {
        "ValidateFunctionArn": "Validate",
        "SendBatchFunctionArn": "Send",
        "SummarizeFunctionArn": "Summarize",
        "SummaryTopicArn": "arn:summary",
    }
    record = engine.start(
        (repo / "statemachine" / "mailmatrix.asl.json").read_text(),
        {"detail": {}},
        substitutions=subs,
        name="bad",
    )
    assert record.status == "FAILED"
    assert record.error == "ValueError"
    assert json.loads(record.cause)["errorMessage"] == "no Email column"
    assert published == []
    assert record["failedState"]["state"] == "ValidateRecipients"


def test_a_stopped_execution_is_aborted_and_its_redrive_runs_only_what_did_not_run(
    engine: Engine, registry: ResourceRegistry
) -> None:
    # GIVEN a Distributed Map whose fourth child is interrupted (Ctrl-C reaches the engine)
    calls: list[int] = []

    def interrupted(event: Any, context: Any) -> Any:
        if event == 3 and 3 not in calls:
            calls.append(3)
            raise KeyboardInterrupt
        calls.append(event)
        return event

    registry.register_lambda("Work", interrupted)

    # WHEN it runs, one child at a time
    record = run(engine, distributed(LAMBDA_END, MaxConcurrency=1), list(range(6)))

    # THEN the execution is ABORTED (not left RUNNING) at the Map, nothing after 3 started
    assert record["status"] == "ABORTED"
    assert record["failedState"]["state"] == "M"
    assert calls == [0, 1, 2, 3]
    assert "ExecutionAborted" in types(engine, record)

    # WHEN it is redriven THEN only the children that did not succeed run
    again = engine.redrive(record["name"])
    assert again["status"] == "SUCCEEDED"
    assert again["output"] == list(range(6))
    assert calls == [0, 1, 2, 3, 3, 4, 5]


@pytest.fixture
def lost_stop() -> Any:
    """stopping.request as a signal handler calls it, for a stop whose KeyboardInterrupt
    Python then dropped (raised in a fork handler, a __del__): forgotten after the test."""
    from mailmatrix.engine import stopping

    yield stopping.request
    stopping.clear()


def test_a_stop_whose_interrupt_was_lost_still_aborts_the_map_before_its_next_child(
    engine: Engine, registry: ResourceRegistry, lost_stop: Any
) -> None:
    # GIVEN a Distributed Map whose fourth child is running when a stop comes, whose
    # KeyboardInterrupt never reaches the engine
    calls: list[int] = []

    def work(event: Any, context: Any) -> Any:
        calls.append(event)
        if event == 3 and calls.count(3) == 1:
            lost_stop()
        return event

    registry.register_lambda("Work", work)

    # WHEN it runs, one child at a time
    record = run(engine, distributed(LAMBDA_END, MaxConcurrency=1), list(range(6)))

    # THEN the Map starts no child after it, and the execution is ABORTED there
    assert record["status"] == "ABORTED"
    assert record["failedState"]["state"] == "M"
    assert calls == [0, 1, 2, 3]
    assert "MapRunAborted" in types(engine, record)


def test_a_stop_whose_interrupt_was_lost_still_aborts_before_the_next_state(
    engine: Engine, registry: ResourceRegistry, lost_stop: Any
) -> None:
    # GIVEN two Task states, the first of which sees a stop whose KeyboardInterrupt is lost
    calls: list[str] = []

    def work(event: Any, context: Any) -> Any:
        calls.append(event["at"])
        if event["at"] == "First":
            lost_stop()
        return event

    registry.register_lambda("Work", work)
    definition = {
        "StartAt": "First",
        "States": {
            "First": lambda_state("Work", Parameters={"at": "First"}, Next="Second"),
            "Second": lambda_state("Work", Parameters={"at": "Second"}, End=True),
        },
    }

    # WHEN it runs
    record = run(engine, definition, {})

    # THEN the second state never runs: the execution is ABORTED before it
    assert calls == ["First"]
    assert record["status"] == "ABORTED"
    assert record["failedState"]["state"] == "Second"


def test_a_stop_interrupted_again_still_lets_the_running_children_end(
    engine: Engine, registry: ResourceRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a Distributed Map whose second child is running when the run is stopped, and
    # interrupts that come again while the Map waits for it (Ctrl-C pressed twice more, or a
    # SIGTERM after the SIGHUP of a closed terminal): the children may share a ledger and a
    # mailer that are closed once the execution ends (SendBatch in threads: drills, one core)
    started, release = threading.Event(), threading.Event()
    ended: list[str] = []

    def work(event: Any, context: Any) -> Any:
        if event == 1:
            started.set()
            # (a bound only so that a Map that stopped waiting does not hang the suite)
            ended.append("released" if release.wait(timeout=10) else "cut off")
        return event

    registry.register_lambda("Work", work)
    wait = concurrent.futures.wait
    waits: list[int] = []

    def interrupted(futures: Any, **kwargs: Any) -> Any:
        waits.append(len(futures))
        if len(waits) <= 3:  # the stop, then two more interrupts
            started.wait(timeout=10)
            raise KeyboardInterrupt
        release.set()
        return wait(futures, **kwargs)

    monkeypatch.setattr(concurrent.futures, "wait", interrupted)

    # WHEN it runs, two children at a time
    record = run(engine, distributed(LAMBDA_END, MaxConcurrency=2), [0, 1, 2])

    # THEN the Map waited for its running child to end, and the execution ended ABORTED there
    assert record["status"] == "ABORTED"
    assert ended == ["released"]
    assert "MapRunAborted" in types(engine, record)


def test_json_lines_records_end_at_newline_only() -> None:
    # JSON allows U+2028, U+2029 and U+0085 raw inside strings; they must not cut a record.
    from mailmatrix.engine.reader import read_items

    data = '{"Position": "Eng\u2028ineer"}\n{"Name": "A\u0085B\u2029C"}\n\n'.encode()

    items = read_items(data, {"InputType": "JSONL"}, None)

    assert items == [{"Position": "Eng\u2028ineer"}, {"Name": "A\u0085B\u2029C"}]


def test_a_worker_killed_mid_invocation_fails_that_task_and_the_next_ones_run(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN a function whose first invocation kills its worker process (as an OOM kill would)
    invoker = ProcessInvoker(workers=1)
    marker = str(tmp_path / "died")
    try:
        handler = "tests.engine.handlers_for_tests:die_once"
        # WHEN it is invoked THEN that invocation fails like a Lambda that ended without answer
        text, error, cause = invoker.invoke(handler, "Fn", None, json.dumps({"marker": marker}), 30)
        assert (text, error) == ("", "Lambda.Unknown")
        assert "died" in cause
        # AND the next invocation runs in a new worker
        text, error, _ = invoker.invoke(handler, "Fn", None, json.dumps({"marker": marker}), 30)
    finally:
        invoker.close()
    assert error is None
    assert json.loads(text)["pid"] != os.getpid()


def test_closing_waits_for_the_other_workers_of_a_pool_that_broke(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN two workers: one busy in a long invocation while the other is killed
    invoker = ProcessInvoker(workers=2).start()
    started, done = tmp_path / "started", tmp_path / "done"
    slow = {"started": str(started), "done": str(done), "seconds": 1.5}
    answers: list[tuple[str, str | None, str | None]] = []
    busy = threading.Thread(
        target=lambda: answers.append(
            invoker.invoke(
                "tests.engine.handlers_for_tests:start_then_finish",
                "Fn",
                None,
                json.dumps(slow),
                30,
            )
        )
    )
    busy.start()
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the slow invocation never started"
        time.sleep(0.02)
    marker = json.dumps({"marker": str(tmp_path / "died")})
    _, error, _ = invoker.invoke("tests.engine.handlers_for_tests:die_once", "Fn", None, marker, 30)
    busy.join(timeout=30)
    # THEN both invocations are reported failed, the slow one still running
    assert error == "Lambda.Unknown"
    assert [answer[1] for answer in answers] == ["Lambda.Unknown"]
    assert not done.exists()
    # WHEN the invoker is closed THEN it returns once the slow invocation has finished
    invoker.close()
    assert done.exists()


def _waiting_for_a_task(pid: int) -> bool:
    """Whether worker ``pid`` is reading the task queue's pipe (it holds the queue's lock)."""
    try:
        with open(f"/proc/{pid}/wchan", encoding="ascii") as wchan:
            return "pipe_read" in wchan.read()
    except OSError:
        return False


def test_closing_returns_when_the_worker_that_died_held_the_task_queue(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN two idle workers: one reads the task queue (holding its lock), one waits for it
    import multiprocessing

    invoker = ProcessInvoker(workers=2).start()
    workers = [child.pid for child in multiprocessing.active_children()]
    deadline = time.monotonic() + 10
    reading = [pid for pid in workers if _waiting_for_a_task(pid)]
    while len(reading) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        reading = [pid for pid in workers if _waiting_for_a_task(pid)]
    if len(reading) != 1:
        invoker.close()
        pytest.skip("cannot tell which worker reads the task queue here (/proc wchan)")

    # WHEN that one is killed (the other can then never get a task) and the pool is used
    os.kill(reading[0], signal.SIGKILL)
    marker = json.dumps({"marker": str(tmp_path / "died")})
    _, error, _ = invoker.invoke("tests.engine.handlers_for_tests:die_once", "Fn", None, marker, 30)
    closing = threading.Thread(target=invoker.close, daemon=True)
    closing.start()
    closing.join(timeout=30)

    # THEN the invocation failed like a Lambda that died, and closing returned
    try:
        assert error == "Lambda.Unknown"
        assert not closing.is_alive(), "close() hung on a worker waiting for the task queue"
    finally:
        for child in multiprocessing.active_children():
            child.kill()


def test_workers_die_with_the_engine_process(tmp_path: pathlib.Path) -> None:
    # GIVEN an engine process whose worker is busy in a long invocation
    script = tmp_path / "engine.py"
    script.write_text(
        "import json, sys, threading\n"
        "from mailmatrix.engine import ProcessInvoker\n"
        "invoker = ProcessInvoker(workers=1).start()\n"
        "threading.Thread(target=invoker.invoke, args=("
        "'tests.engine.handlers_for_tests:sleep_and_tell', 'Fn', None,"
        f" json.dumps({{'pidfile': {str(tmp_path / 'worker.pid')!r}}}), 60)).start()\n"
        "threading.Event().wait()\n",
        encoding="utf-8",
    )
    engine = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    pidfile = tmp_path / "worker.pid"
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        worker = int(pidfile.read_text())
        # a SIGTERM to the worker (as to the whole process group) leaves its invocation running
        os.kill(worker, signal.SIGTERM)
        time.sleep(0.3)
        assert _alive(worker)
        # WHEN the engine is killed outright
        engine.kill()
        engine.wait(timeout=10)
        # THEN its worker does not go on alone
        deadline = time.monotonic() + 10
        while _alive(worker):
            assert time.monotonic() < deadline, "the worker outlived the engine"
            time.sleep(0.05)
    finally:
        engine.kill()


def test_the_busy_folder_of_an_engine_killed_outright_is_removed_by_the_next_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an engine process with a started pool, killed outright (no close())
    temp = tmp_path / "tmp"
    temp.mkdir()
    engine = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from mailmatrix.engine import ProcessInvoker\n"
            "ProcessInvoker(workers=1).start()\nprint('up', flush=True)\ninput()\n",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temp)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert engine.stdout is not None and engine.stdout.readline() == b"up\n"
    finally:
        engine.kill()
        engine.wait(timeout=10)
    left = os.listdir(temp)
    assert len(left) == 1 and left[0].startswith(f"mailmatrix-workers-{engine.pid}-")
    # and the folder of a live engine (this process's), and one the sweep does not know
    (temp / f"mailmatrix-workers-{os.getpid()}-live").mkdir()
    (temp / "mailmatrix-workers-other").mkdir()
    # WHEN another engine starts a pool in the same temporary folder
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    invoker = ProcessInvoker(workers=1)
    try:
        # THEN the dead engine's folder is gone; the others, and its own, are there
        assert not (temp / left[0]).exists()
        assert (temp / f"mailmatrix-workers-{os.getpid()}-live").exists()
        assert (temp / "mailmatrix-workers-other").exists()
        assert len(os.listdir(temp)) == 3
    finally:
        invoker.close()
    assert sorted(os.listdir(temp)) == sorted(
        [f"mailmatrix-workers-{os.getpid()}-live", "mailmatrix-workers-other"]
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _killed_engine(tmp_path: pathlib.Path) -> tuple[Engine, str]:
    """An engine process killed outright while its execution ran a Task; its store's engine
    here, and the Task's marker."""
    definition = task("arn:aws:lambda:eu-west-1:123456789012:function:Fn")
    marker = str(tmp_path / "hung")
    script = tmp_path / "engine.py"
    script.write_text(
        "import json, pathlib\n"
        "from mailmatrix.engine import Engine, ResourceRegistry\n"
        "registry = ResourceRegistry()\n"
        "registry.register_lambda('Fn', 'tests.engine.handlers_for_tests:hang_once')\n"
        f"engine = Engine(pathlib.Path({str(tmp_path / 'ex')!r}), registry)\n"
        f"engine.start({json.dumps(definition)!r}, {{'marker': {marker!r}}})\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(marker):
        assert time.monotonic() < deadline, "the execution never reached its task"
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=10)
    registry = ResourceRegistry()
    registry.register_lambda("Fn", "tests.engine.handlers_for_tests:hang_once")
    return Engine(tmp_path / "ex", registry), marker


def test_an_execution_whose_engine_process_was_killed_is_aborted_and_redriven(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN an engine process killed outright while its execution ran a Task
    engine, marker = _killed_engine(tmp_path)
    # WHEN it is looked at THEN it is ABORTED at the state it was in, not RUNNING for ever
    [listed] = engine.list_executions()
    assert (listed["status"], listed["error"]) == ("ABORTED", "Engine.ProcessEnded")
    # AND a redrive runs that state again, to the end
    record = engine.redrive(listed["name"])
    assert record["status"] == "SUCCEEDED"
    assert record["output"] == {"marker": marker}


def test_show_of_an_execution_whose_process_was_killed_says_so_and_when_it_last_ran(
    tmp_path: pathlib.Path,
) -> None:
    from click.testing import CliRunner

    from mailmatrix.cli.main import cli

    # GIVEN an engine process killed outright while its execution ran a Task, started a
    # minute ago and its records last written two seconds after it started
    _killed_engine(tmp_path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "ex").rename(workdir / "executions")
    store = ExecutionStore(workdir / "executions")
    [record] = store.list_records()
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    record["startDate"] = started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    store.save(record)
    last = started.timestamp() + 2
    for path in (workdir / "executions").rglob("*"):
        os.utime(path, (last, last))

    # WHEN it is shown, and listed
    shown = CliRunner().invoke(cli, ["show", record["name"], "--workdir", str(workdir)])
    listed = CliRunner().invoke(cli, ["executions", "--workdir", str(workdir)])

    # THEN it ran at least until its process last wrote a record, which is all that is known
    # (not until it was looked at, nor only that long), and what ended it is said (not a stop
    # on purpose), with what a redrive does
    said = " ".join(shown.output.split())
    assert shown.exit_code == 0, said
    assert f"{record['name']} ABORTED at least 2.0s (killed?)" in said
    assert listed.exit_code == 0, listed.output
    assert "at least 2.0s (killed?)" in listed.output
    assert (
        "when to redrive: its process ended without finishing (killed, by SIGKILL or for want"
        " of memory, or the machine restarted)"
    ) in said
    assert "a redrive goes on from the state it was in, rows recorded as sent are skipped" in said
    assert "A row being sent as it ended is in doubt: settle it first" in said
    assert "stopped on purpose" not in said


def test_an_execution_killed_on_a_full_disk_is_shown_aborted_and_recorded_once_there_is_room(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an execution whose engine process was killed, in a store that cannot be written
    engine, _ = _killed_engine(tmp_path)
    [name] = [record["name"] for record in engine.store.list_records()]

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(engine.store, "append_event", full)
        # WHEN it is looked at THEN it is shown ABORTED, not a traceback
        [listed] = engine.list_executions()
        assert (listed["status"], listed["error"]) == ("ABORTED", "Engine.ProcessEnded")
    assert engine.store.load(name)["status"] == "RUNNING"  # nothing written yet

    # AND once the store can be written, the first look records it, once
    engine.list_executions()
    assert engine.store.load(name)["status"] == "ABORTED"
    events = [event["type"] for event in engine.store.history(name)]
    assert events.count("ExecutionAborted") == 1


_HELD_STOP = """
import os, signal, time
from mailmatrix.engine.registry import _stops_held

taken = []
signal.signal(signal.SIGTERM, lambda signum, frame: taken.append(signum))
with _stops_held():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    held = list(taken)
time.sleep(0.05)
print(held, taken, signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []))
"""


def _write_at_the_file_size_limit(root: str, said: Any) -> None:
    """Append to the history of execution e1 in the store at ``root``, and save its record,
    in a process whose file size limit is the history's size; tell ``said`` what each raised."""
    store = ExecutionStore(root)
    folder = store.execution_dir("e1")
    limit = (folder / "history.jsonl").stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    raised: list[tuple[int | None, str | None] | None] = []
    for write in (
        lambda: store.append_event("e1", {"type": "PassStateEntered"}),
        lambda: store.save({"name": "e1", "status": "RUNNING", "padding": "x" * limit}),
    ):
        try:
            write()
            raised.append(None)
        except OSError as error:
            raised.append((error.errno, error.filename))
    said.send(raised)


def test_a_write_the_file_size_limit_stops_names_its_file(tmp_path: pathlib.Path) -> None:
    # GIVEN an execution's files in a store, written by a process whose file size limit they
    # have reached
    store = ExecutionStore(tmp_path)
    store.create({"name": "e1", "status": "RUNNING"})
    store.append_event("e1", {"type": "ExecutionStarted"})
    folder = store.execution_dir("e1")
    record = (folder / "execution.json").read_bytes()
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()

    # WHEN that process appends to the history and saves the record
    writer = context.Process(target=_write_at_the_file_size_limit, args=(str(tmp_path), theirs))
    writer.start()
    assert ours.poll(60), "the writing process said nothing"
    raised = ours.recv()
    writer.join(timeout=60)

    # THEN each error names the file it could not write (Python names none: "[Errno 27] File
    # too large"); the record is as it was, with no part-written copy left beside it
    assert raised == [
        (errno.EFBIG, str(folder / "history.jsonl")),
        (errno.EFBIG, str(folder / "execution.json")),
    ]
    assert (folder / "execution.json").read_bytes() == record
    assert sorted(path.name for path in folder.iterdir()) == ["execution.json", "history.jsonl"]


def test_a_stop_while_workers_are_forked_is_held_back_and_taken_after_not_lost() -> None:
    # GIVEN a process of one thread (as the engine's is when it forks its workers) with a
    # handler of SIGTERM, as `run` installs one
    # WHEN a SIGTERM comes while the stops are held
    done = subprocess.run(
        [sys.executable, "-c", _HELD_STOP], cwd=REPO, capture_output=True, text=True, timeout=60
    )

    # THEN the handler runs only after the hold, once: the stop is not lost, nor blocked after
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] [15] False"
