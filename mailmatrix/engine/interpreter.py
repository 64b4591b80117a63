"""Running states: the data flow, Retry and Catch, and each state type, with history events.

Data flow per the States Language specification ("Input and Output Processing",
https://states-language.net/spec.html#filters): InputPath -> Parameters -> task ->
ResultSelector -> ResultPath -> OutputPath. Event types and their detail fields follow
the Step Functions HistoryEvent API reference
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailmatrix.engine import choice, intrinsics, jsonpath, stopping
from mailmatrix.engine import errors as E
from mailmatrix.engine.errors import ExecutionAborted, RecordNotWritten, StatesError
from mailmatrix.engine.registry import LAMBDA_INVOKE, ResourceRegistry, is_function_arn

logger = logging.getLogger(__name__)

# "The maximum size of a task, activity or execution input or result is 256 KiB of UTF-8"
# (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html).
PAYLOAD_LIMIT = 256 * 1024


def now_iso() -> str:
    """The current UTC time as Step Functions writes it, e.g. 2026-01-02T03:04:05.678Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# json.dumps with these options builds an encoder on every call; this one is built once.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON as Step Functions serialises state data."""
    return _COMPACT.encode(value)


def check_size(value: Any, what: str) -> str:
    """Serialise value; States.DataLimitExceeded when above 256 KiB of UTF-8."""
    return check_text(dumps(value), what)


def check_text(text: str, what: str) -> str:
    """Return already serialised data; States.DataLimitExceeded when above 256 KiB of UTF-8."""
    size = len(text.encode("utf-8"))
    if size > PAYLOAD_LIMIT:
        raise StatesError(
            E.DATA_LIMIT_EXCEEDED,
            f"The {what} has a size of {size} bytes, above the limit of {PAYLOAD_LIMIT} bytes.",
        )
    return text


def object_text(value: dict[str, Any], known: dict[str, str]) -> str:
    """``dumps(value)``, taking the members named in ``known`` as already serialised."""
    if not all(isinstance(key, str) for key in value):
        return dumps(value)  # json turns other keys into strings: let it
    members = (
        f"{dumps(key)}:{known[key] if key in known else dumps(member)}"
        for key, member in value.items()
    )
    return "{" + ",".join(members) + "}"


def details_key(event_type: str) -> str:
    """The name of an event's details field, e.g. TaskStateEntered -> stateEnteredEventDetails."""
    for suffix in ("StateEntered", "StateExited"):
        if event_type.endswith(suffix) and event_type not in ("MapStateEntered",):
            return "state" + suffix.removeprefix("State") + "EventDetails"
    if event_type == "MapStateEntered":
        return "stateEnteredEventDetails"
    return event_type[0].lower() + event_type[1:] + "EventDetails"


class EventLog:
    """An execution's history: numbered events, optionally persisted and forwarded."""

    def __init__(
        self, sink: Callable[[dict[str, Any]], None] | None = None, first_id: int = 1
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self._sink = sink
        self._next_id = first_id
        self._lock = threading.Lock()

    def add(self, event_type: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append an event of an AWS type with its details."""
        with self._lock:
            event = {
                "timestamp": now_iso(),
                "type": event_type,
                "id": self._next_id,
                "previousEventId": self._next_id - 1,
            }
            if details is not None:
                event[details_key(event_type)] = details
            self._next_id += 1
            self.events.append(event)
            if self._sink:
                self._sink(event)
        return event


@dataclass
class Scope:
    """Where a machine runs: its history, context object base and execution identity."""

    log: EventLog
    context: dict[str, Any]
    execution_id: str
    top: bool = False
    redrive_map_runs: dict[str, str] = field(default_factory=dict)
    expired: Callable[[], bool] | None = None
    redrive_partials: dict[str, dict[int, Any]] = field(default_factory=dict)


@dataclass
class Hooks:
    """What the interpreter needs from the engine."""

    registry: ResourceRegistry
    sleep: Callable[[float], None]
    run_distributed_map: Callable[..., Any]


class Interpreter:
    """Runs machines (top level, branches, iterations, child workflows) state by state."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    # ---- machine -------------------------------------------------------------------------

    def run_machine(
        self, machine: dict[str, Any], data: Any, scope: Scope, start_at: str | None = None
    ) -> Any:
        """Run from StartAt (or start_at) to a terminal state and return its output."""
        return self.run_machine_text(machine, data, scope, start_at)[0]

    def run_machine_text(
        self,
        machine: dict[str, Any],
        data: Any,
        scope: Scope,
        start_at: str | None = None,
        input_text: str | None = None,
    ) -> tuple[Any, str]:
        """run_machine, given the input's JSON text if known; return the output and its text.

        Each state's input is the output of the state before it, already serialised for that
        state's exit event: the text is passed on rather than serialised again.
        """
        name = start_at or machine["StartAt"]
        states = machine["States"]
        text = input_text
        while True:
            state = states[name]
            if scope.expired and scope.expired():
                err = StatesError(E.TIMEOUT, "The execution ran past its TimeoutSeconds.")
                err.execution_timeout = True  # type: ignore[attr-defined]
                err.state_name = name  # type: ignore[attr-defined]
                err.state_input = data  # type: ignore[attr-defined]
                raise err
            try:
                if scope.top:  # a stop whose KeyboardInterrupt Python dropped
                    stopping.check()
                data, name, out_text = self.run_state(name, state, data, scope, text)
            except KeyboardInterrupt:
                if not scope.top:
                    raise
                raise _at_state(ExecutionAborted(), name, data) from None
            except (StatesError, ExecutionAborted, RecordNotWritten) as err:
                if scope.top and not hasattr(err, "state_name"):
                    _at_state(err, name, data)
                raise
            if name is None:
                return data, out_text
            text = out_text

    def run_state(
        self,
        name: str,
        state: dict[str, Any],
        data: Any,
        scope: Scope,
        input_text: str | None = None,
    ) -> tuple[Any, str | None, str]:
        """Run one state: enter, execute (with Retry/Catch), exit.

        ``input_text`` is ``data`` as JSON when the caller has it. Returns (output, next
        state, the output as JSON).
        """
        kind = state["Type"]
        entered = now_iso()
        scope.log.add(
            f"{kind}StateEntered",
            {
                "name": name,
                "input": dumps(data) if input_text is None else input_text,
                "inputDetails": {"truncated": False},
            },
        )
        context = dict(scope.context)
        context["State"] = {"EnteredTime": entered, "Name": name, "RetryCount": 0}
        runner = getattr(self, f"_run_{kind.lower()}")
        result = runner(name, state, data, scope, context)
        caught = isinstance(result, _Caught)
        output = result.output if caught else result
        text = check_size(output, f"output of state '{name}'")
        scope.log.add(
            f"{kind}StateExited",
            {"name": name, "output": text, "outputDetails": {"truncated": False}},
        )
        if caught:
            return output, result.next, text
        if kind == "Choice":
            return output, context["_choice_next"], text
        if kind == "Succeed" or state.get("End"):
            return output, None, text
        return output, state["Next"], text

    # ---- shared data flow ----------------------------------------------------------------

    @staticmethod
    def render(template: Any, data: Any, context: Any) -> Any:
        """Evaluate a Parameters-like template (keys ending in .$ are paths or intrinsics)."""
        if isinstance(template, dict):
            out = {}
            for key, value in template.items():
                if key.endswith(".$"):
                    if intrinsics.is_intrinsic(value):
                        out[key[:-2]] = intrinsics.evaluate(value, data, context)
                    else:
                        out[key[:-2]] = jsonpath.select(value, data, context, key)
                else:
                    out[key] = Interpreter.render(value, data, context)
            return out
        if isinstance(template, list):
            return [Interpreter.render(item, data, context) for item in template]
        return template

    @staticmethod
    def input_path(state: dict[str, Any], data: Any, context: Any) -> Any:
        """Apply InputPath (null: an empty object)."""
        if "InputPath" not in state:
            return data
        if state["InputPath"] is None:
            return {}
        return jsonpath.select(state["InputPath"], data, context, "InputPath")

    @staticmethod
    def output_path(state: dict[str, Any], data: Any, context: Any) -> Any:
        """Apply OutputPath (null: an empty object)."""
        if "OutputPath" not in state:
            return data
        if state["OutputPath"] is None:
            return {}
        return jsonpath.select(state["OutputPath"], data, context, "OutputPath")

    @staticmethod
    def result_path(path: Any, raw: Any, result: Any, present: bool = True) -> Any:
        """Apply ResultPath: "$" (default) replaces, null discards, a path places the result."""
        if not present or path == "$":
            return result
        if path is None:
            return raw
        return jsonpath.assign(raw, path, result)

    def finish(self, state: dict[str, Any], raw: Any, result: Any, context: Any) -> Any:
        """ResultSelector, ResultPath and OutputPath on a state's result."""
        if "ResultSelector" in state:
            result = self.render(state["ResultSelector"], result, context)
        merged = self.result_path(state.get("ResultPath"), raw, result, "ResultPath" in state)
        return self.output_path(state, merged, context)

    # ---- retry and catch -----------------------------------------------------------------

    def with_retry(
        self,
        name: str,
        state: dict[str, Any],
        raw: Any,
        scope: Scope,
        context: dict[str, Any],
        attempt: Callable[[dict[str, Any]], Any],
        on_failure: Callable[[StatesError], None] | None = None,
    ) -> Any:
        """Run attempt() under the state's Retry and Catch; return its output or a _Caught."""
        retriers = state.get("Retry", [])
        counts = [0] * len(retriers)
        while True:
            try:
                return attempt(context)
            except StatesError as err:
                if on_failure:
                    on_failure(err)
                index = _match(retriers, err.error, state["Type"])
                if index is not None and counts[index] < retriers[index].get("MaxAttempts", 3):
                    self.hooks.sleep(retry_delay(retriers[index], counts[index]))
                    counts[index] += 1
                    context = dict(context)
                    context["State"] = dict(context["State"], RetryCount=sum(counts))
                    continue
                catchers = state.get("Catch", [])
                index = _match(catchers, err.error, state["Type"])
                if index is None:
                    raise
                catcher = catchers[index]
                error_output = {"Error": err.error, "Cause": err.cause}
                output = self.result_path(
                    catcher.get("ResultPath", "$"), raw, error_output, "ResultPath" in catcher
                )
                check_size(output, f"output of state '{name}'")
                return _Caught(output, catcher["Next"])

    # ---- state types ---------------------------------------------------------------------

    def _run_pass(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        effective = self.input_path(state, data, context)
        if "Parameters" in state:
            effective = self.render(state["Parameters"], effective, context)
        result = state.get("Result", effective)
        merged = self.result_path(state.get("ResultPath"), data, result, "ResultPath" in state)
        return self.output_path(state, merged, context)

    def _run_succeed(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        return self.output_path(state, self.input_path(state, data, context), context)

    def _run_fail(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        error = state.get("Error")
        cause = state.get("Cause")
        if "ErrorPath" in state:
            error = _path_or_intrinsic(state["ErrorPath"], data, context, "ErrorPath")
        if "CausePath" in state:
            cause = _path_or_intrinsic(state["CausePath"], data, context, "CausePath")
        raise StatesError(error if error is not None else "", cause if cause is not None else "")

    def _run_choice(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        effective = self.input_path(state, data, context)
        for rule in state["Choices"]:
            if choice.evaluate(rule, effective, context):
                context["_choice_next"] = rule["Next"]
                break
        else:
            if "Default" not in state:
                raise StatesError(
                    E.NO_CHOICE_MATCHED,
                    f"No Matches! in state '{name}' for input {dumps(effective)[:1000]}",
                )
            context["_choice_next"] = state["Default"]
        return self.output_path(state, effective, context)

    def _run_wait(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        effective = self.input_path(state, data, context)
        if "Seconds" in state or "SecondsPath" in state:
            seconds = state.get("Seconds")
            if "SecondsPath" in state:
                seconds = jsonpath.select(state["SecondsPath"], effective, context, "SecondsPath")
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
                raise StatesError(
                    E.RUNTIME,
                    f"state '{name}': SecondsPath gave {seconds!r}, not a non-negative integer",
                )
            delay = float(seconds)
        else:
            stamp = state.get("Timestamp")
            if "TimestampPath" in state:
                stamp = jsonpath.select(state["TimestampPath"], effective, context, "TimestampPath")
            when = choice.parse_timestamp(stamp)
            if when is None:
                raise StatesError(
                    E.RUNTIME, f"state '{name}': {stamp!r} is not an RFC 3339 timestamp"
                )
            delay = max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
        self.hooks.sleep(delay)
        return self.output_path(state, effective, context)

    def _run_task(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        def attempt(ctx: dict[str, Any]) -> Any:
            effective = self.input_path(state, data, ctx)
            if "Parameters" in state:
                effective = self.render(state["Parameters"], effective, ctx)
            result = self.invoke(state, effective, scope, ctx)
            return self.finish(state, data, result, ctx)

        return self.with_retry(name, state, data, scope, context, attempt)

    def invoke(
        self, state: dict[str, Any], parameters: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        """Call the Task's resource with its effective parameters; record the task events."""
        resource = state["Resource"]
        timeout, timeout_error = _task_timeout(state, parameters, context)
        log = scope.log
        if is_function_arn(resource):
            handler, fname, qualifier = self.hooks.registry.lambda_handler(resource)
            text = check_size(parameters, "input of the Lambda function")
            details = {"resource": resource, "input": text, "inputDetails": {"truncated": False}}
            if timeout is not None:
                details["timeoutInSeconds"] = int(timeout)
            log.add("LambdaFunctionScheduled", details)
            log.add("LambdaFunctionStarted")
            try:
                result = self._call_lambda(handler, fname, qualifier, text, timeout, timeout_error)
            except StatesError as err:
                event = (
                    "LambdaFunctionTimedOut"
                    if err.error in (E.TIMEOUT, E.HEARTBEAT_TIMEOUT)
                    else ("LambdaFunctionFailed")
                )
                log.add(event, {"error": err.error, "cause": err.cause})
                raise
            log.add(
                "LambdaFunctionSucceeded",
                {
                    "output": check_size(result, "Lambda result"),
                    "outputDetails": {"truncated": False},
                },
            )
            return result
        service, _, action = resource.removeprefix("arn:aws:states:::").partition(":")
        payload_text = None
        if resource == LAMBDA_INVOKE and isinstance(parameters, dict) and "Payload" in parameters:
            # The payload is serialised once, for the Lambda and inside the task's parameters.
            payload_text = dumps(parameters["Payload"])
            parameters_text = object_text(parameters, {"Payload": payload_text})
        else:
            parameters_text = dumps(parameters)
        scheduled = {
            "resourceType": service,
            "resource": action,
            "region": "eu-west-1",
            "parameters": check_text(parameters_text, "task parameters"),
        }
        if timeout is not None:
            scheduled["timeoutInSeconds"] = int(timeout)
        log.add("TaskScheduled", scheduled)
        log.add("TaskStarted", {"resourceType": service, "resource": action})
        try:
            if resource == LAMBDA_INVOKE:
                result = self._lambda_invoke(parameters, timeout, timeout_error, payload_text)
            else:
                result = self._call_service(resource, parameters)
            text = check_size(result, "task result")
        except StatesError as err:
            kind = (
                "TaskTimedOut" if err.error in (E.TIMEOUT, E.HEARTBEAT_TIMEOUT) else ("TaskFailed")
            )
            log.add(
                kind,
                {
                    "resourceType": service,
                    "resource": action,
                    "error": err.error,
                    "cause": err.cause,
                },
            )
            raise
        log.add(
            "TaskSucceeded",
            {
                "resourceType": service,
                "resource": action,
                "output": text,
                "outputDetails": {"truncated": False},
            },
        )
        return result

    def _lambda_invoke(
        self,
        parameters: Any,
        timeout: float | None,
        timeout_error: str,
        payload_text: str | None = None,
    ) -> dict[str, Any]:
        if not isinstance(parameters, dict) or "FunctionName" not in parameters:
            raise StatesError(E.RUNTIME, "lambda:invoke needs Parameters.FunctionName")
        reference = parameters["FunctionName"]
        if parameters.get("Qualifier") and ":" not in reference.split(":function:")[-1]:
            reference = f"{reference}:{parameters['Qualifier']}"
        handler, fname, qualifier = self.hooks.registry.lambda_handler(reference)
        if payload_text is None:
            payload_text = dumps(parameters.get("Payload"))
        payload = check_text(payload_text, "Lambda payload")
        result = self._call_lambda(handler, fname, qualifier, payload, timeout, timeout_error)
        return {
            "ExecutedVersion": "$LATEST",
            "Payload": result,
            "SdkHttpMetadata": {"HttpStatusCode": 200},
            "SdkResponseMetadata": {},
            "StatusCode": 200,
        }

    def _call_lambda(
        self,
        handler: Any,
        fname: str,
        qualifier: str | None,
        event_json: str,
        timeout: float | None,
        timeout_error: str,
    ) -> Any:
        try:
            text, error, cause = self.hooks.registry.invoker.invoke(
                handler, fname, qualifier, event_json, timeout
            )
        except StatesError as err:
            if err.error == E.TIMEOUT:
                raise StatesError(timeout_error, err.cause) from err
            raise
        if error is not None:
            raise StatesError(error, cause or "")
        return json.loads(text)

    def _call_service(self, resource: str, parameters: Any) -> Any:
        fn = self.hooks.registry.service(resource)
        try:
            result = fn(json.loads(dumps(parameters)))
        except StatesError:
            raise
        except Exception as exc:  # a service error becomes the task's error
            raise StatesError(getattr(exc, "asl_error", type(exc).__name__), str(exc)) from exc
        return json.loads(dumps(result))

    def _run_parallel(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        def attempt(ctx: dict[str, Any]) -> Any:
            effective = self.input_path(state, data, ctx)
            if "Parameters" in state:
                effective = self.render(state["Parameters"], effective, ctx)
            scope.log.add("ParallelStateStarted")
            branch_scope = Scope(scope.log, scope.context, scope.execution_id)
            done = scope.redrive_partials.pop(name, {}) if scope.top else {}
            outputs: dict[int, Any] = {}
            for index, branch in enumerate(state["Branches"]):
                if index in done:
                    outputs[index] = done[index]
                    continue
                try:
                    outputs[index] = self.run_machine(branch, effective, branch_scope)
                except StatesError as err:
                    scope.log.add("ParallelStateFailed")
                    _keep_partial(err, scope, outputs)
                    raise
            scope.log.add("ParallelStateSucceeded")
            return self.finish(state, data, [outputs[i] for i in sorted(outputs)], ctx)

        return self.with_retry(name, state, data, scope, context, attempt)

    def _run_map(
        self, name: str, state: dict[str, Any], data: Any, scope: Scope, context: dict[str, Any]
    ) -> Any:
        processor: dict[str, Any] = state.get("ItemProcessor") or state["Iterator"]
        mode = processor.get("ProcessorConfig", {}).get("Mode", "INLINE")

        def attempt(ctx: dict[str, Any]) -> Any:
            effective = self.input_path(state, data, ctx)
            if mode == "DISTRIBUTED":
                result = self.hooks.run_distributed_map(self, name, state, effective, scope, ctx)
            else:
                result = self._inline_map(name, state, processor, effective, scope, ctx)
            return self.finish(state, data, result, ctx)

        return self.with_retry(name, state, data, scope, context, attempt)

    def _inline_map(
        self,
        name: str,
        state: dict[str, Any],
        processor: dict[str, Any],
        effective: Any,
        scope: Scope,
        context: dict[str, Any],
    ) -> list[Any]:
        items = jsonpath.select(state.get("ItemsPath", "$"), effective, context, "ItemsPath")
        if not isinstance(items, list):
            raise StatesError(E.RUNTIME, f"state '{name}': ItemsPath did not select an array")
        log = scope.log
        log.add("MapStateStarted", {"length": len(items)})
        selector = state.get("ItemSelector", state.get("Parameters"))
        done = scope.redrive_partials.pop(name, {}) if scope.top else {}
        outputs: dict[int, Any] = {}
        for index, item in enumerate(items):
            if index in done:
                outputs[index] = done[index]
                continue
            item_input = item_value(self, selector, effective, context, index, item)
            log.add("MapIterationStarted", {"name": name, "index": index})
            iteration = Scope(log, scope.context, scope.execution_id)
            try:
                outputs[index] = self.run_machine(processor, item_input, iteration)
            except StatesError as err:
                log.add("MapIterationFailed", {"name": name, "index": index})
                log.add("MapStateFailed")
                _keep_partial(err, scope, outputs)
                raise
            log.add("MapIterationSucceeded", {"name": name, "index": index})
        log.add("MapStateSucceeded")
        return [outputs[i] for i in sorted(outputs)]


def item_value(
    interpreter: Interpreter,
    selector: Any,
    effective: Any,
    context: dict[str, Any],
    index: int,
    item: Any,
) -> Any:
    """One Map item after ItemSelector, with $$.Map.Item in the context object."""
    if selector is None:
        return item
    item_context = dict(context, Map={"Item": {"Index": index, "Value": item}})
    return interpreter.render(selector, effective, item_context)


def _keep_partial(err: StatesError, scope: Scope, outputs: dict[int, Any]) -> None:
    """Remember, for a redrive, the branches or iterations of a top-level state that succeeded."""
    if scope.top:
        err.completed = dict(outputs)  # type: ignore[attr-defined]


class _Caught:
    """A state's error was caught: its output and the Catch's Next state."""

    def __init__(self, output: Any, next_state: str) -> None:
        self.output = output
        self.next = next_state


def _match(handlers: list[dict[str, Any]], error: str, state_type: str) -> int | None:
    for index, handler in enumerate(handlers):
        names = handler["ErrorEquals"]
        if error in names:
            return index
        if E.ALL in names and error not in E.NOT_MATCHED_BY_ALL:
            return index
        # "States.TaskFailed ... matches any known error name except States.Timeout"
        # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
        if (
            state_type == "Task"
            and E.TASK_FAILED in names
            and error not in E.NOT_MATCHED_BY_ALL | {E.TIMEOUT}
        ):
            return index
    return None


def retry_delay(retrier: dict[str, Any], count: int) -> float:
    """Seconds before retry number count+1: interval * rate^count, capped, FULL jitter."""
    delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** count
    if "MaxDelaySeconds" in retrier:
        delay = min(delay, retrier["MaxDelaySeconds"])
    if retrier.get("JitterStrategy") == "FULL":
        delay = random.uniform(0, delay)
    return float(delay)


def _path_or_intrinsic(text: str, data: Any, context: Any, field_name: str) -> Any:
    if intrinsics.is_intrinsic(text):
        return intrinsics.evaluate(text, data, context)
    return jsonpath.select(text, data, context, field_name)


def _task_timeout(state: dict[str, Any], data: Any, context: Any) -> tuple[float | None, str]:
    timeout = state.get("TimeoutSeconds")
    if "TimeoutSecondsPath" in state:
        timeout = jsonpath.select(state["TimeoutSecondsPath"], data, context, "TimeoutSecondsPath")
    heartbeat = state.get("HeartbeatSeconds")
    if "HeartbeatSecondsPath" in state:
        heartbeat = jsonpath.select(
            state["HeartbeatSecondsPath"], data, context, "HeartbeatSecondsPath"
        )
    # NOTE: handlers cannot send heartbeats locally, so a task running past HeartbeatSeconds
    # fails with States.HeartbeatTimeout, as a task that never heartbeats does on AWS.
    if heartbeat is not None and (timeout is None or heartbeat < timeout):
        return float(heartbeat), E.HEARTBEAT_TIMEOUT
    return (float(timeout) if timeout is not None else None), E.TIMEOUT


__all__ = [
    "EventLog",
    "Hooks",
    "Interpreter",
    "Scope",
    "check_size",
    "check_text",
    "dumps",
    "now_iso",
    "retry_delay",
]


def _at_state(error: BaseException, name: str, data: Any) -> BaseException:
    """Note on ``error`` the top-level state it ended and that state's input (for redrive)."""
    error.state_name = name  # type: ignore[attr-defined]
    error.state_input = data  # type: ignore[attr-defined]
    return error
