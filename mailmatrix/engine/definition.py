"""Loading a definition: ``${Name}`` substitutions, JSON parsing and the supported-field check.

Anything the engine does not implement is refused here, before the execution starts, naming
the state and the field: the engine never silently ignores a field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mailmatrix.engine import choice, intrinsics, jsonpath
from mailmatrix.errors import DefinitionError

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")

_IO = {"InputPath", "OutputPath"}
_TRANSITION = {"Next", "End"}
_RESULT = {"Parameters", "ResultSelector", "ResultPath"}
_ERRORS = {"Retry", "Catch"}
FIELDS: dict[str, set[str]] = {
    "Pass": _IO | _TRANSITION | {"Parameters", "ResultPath", "Result"},
    "Task": _IO
    | _TRANSITION
    | _RESULT
    | _ERRORS
    | {
        "Resource",
        "TimeoutSeconds",
        "TimeoutSecondsPath",
        "HeartbeatSeconds",
        "HeartbeatSecondsPath",
    },
    "Choice": _IO | {"Choices", "Default"},
    "Wait": _IO | _TRANSITION | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": set(_IO),
    "Fail": {"Error", "ErrorPath", "Cause", "CausePath"},
    "Parallel": _IO | _TRANSITION | _RESULT | _ERRORS | {"Branches"},
    "Map": _IO
    | _TRANSITION
    | _RESULT
    | _ERRORS
    | {
        "ItemProcessor",
        "Iterator",
        "ItemsPath",
        "ItemSelector",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ItemReader",
        "ItemBatcher",
        "ResultWriter",
        "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath",
        "ToleratedFailureCount",
        "ToleratedFailureCountPath",
        "Label",
    },
}
_COMMON = {"Type", "Comment"}
_RETRIER = {
    "ErrorEquals",
    "IntervalSeconds",
    "MaxAttempts",
    "BackoffRate",
    "MaxDelaySeconds",
    "JitterStrategy",
    "Comment",
}
_CATCHER = {"ErrorEquals", "Next", "ResultPath", "Comment"}
_READER_CONFIG = {
    "InputType",
    "CSVHeaderLocation",
    "CSVHeaders",
    "CSVDelimiter",
    "MaxItems",
    "MaxItemsPath",
}
_DELIMITERS = {"COMMA", "PIPE", "SEMICOLON", "SPACE", "TAB"}
_BATCHER = {
    "MaxItemsPerBatch",
    "MaxItemsPerBatchPath",
    "MaxInputBytesPerBatch",
    "MaxInputBytesPerBatchPath",
    "BatchInput",
}
GET_OBJECT = "arn:aws:states:::s3:getObject"
PUT_OBJECT = "arn:aws:states:::s3:putObject"


def substitute(text: str, substitutions: dict[str, str] | None) -> str:
    """Fill ``${Name}`` placeholders like CloudFormation DefinitionSubstitutions."""
    values = substitutions or {}
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise DefinitionError(
            f"definition: unfilled substitution(s): {', '.join('${' + m + '}' for m in missing)}"
        )
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def load(text: str, substitutions: dict[str, str] | None = None) -> dict[str, Any]:
    """Substitute, parse and check a definition; raise DefinitionError naming what is wrong."""
    filled = substitute(text, substitutions)
    try:
        definition = json.loads(filled)
    except ValueError as exc:
        raise DefinitionError(f"definition: not valid JSON: {exc}") from exc
    if not isinstance(definition, dict):
        raise DefinitionError("definition: must be a JSON object")
    _check_machine(definition, "definition", top=True)
    return definition


def _refuse(where: str, message: str) -> DefinitionError:
    return DefinitionError(f"{where}: {message}")


def _check_machine(machine: dict[str, Any], where: str, top: bool = False) -> None:
    allowed = {"StartAt", "States", "Comment"}
    allowed |= {"TimeoutSeconds", "Version", "QueryLanguage"} if top else {"ProcessorConfig"}
    for key in machine:
        if key not in allowed:
            raise _refuse(where, f"unsupported field '{key}'")
    if machine.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise _refuse(where, "field 'QueryLanguage': only JSONPath is supported (not JSONata)")
    states = machine.get("States")
    if not isinstance(states, dict) or not states:
        raise _refuse(where, "field 'States' must be a non-empty object")
    if machine.get("StartAt") not in states:
        raise _refuse(where, f"StartAt '{machine.get('StartAt')}' is not a state")
    for name, state in states.items():
        _check_state(name, state, states)


def _check_state(name: str, state: Any, scope: dict[str, Any]) -> None:
    where = f"state '{name}'"
    if not isinstance(state, dict):
        raise _refuse(where, "must be an object")
    kind = state.get("Type")
    if kind not in FIELDS:
        raise _refuse(where, f"field 'Type': unsupported state type {kind!r}")
    for key in state:
        if key not in FIELDS[kind] | _COMMON:
            raise _refuse(where, f"unsupported field '{key}' for a {kind} state")
    if state.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise _refuse(where, "field 'QueryLanguage': only JSONPath is supported")
    _check_transition(where, kind, state, scope)
    for field in (
        "InputPath",
        "OutputPath",
        "ItemsPath",
        "SecondsPath",
        "TimestampPath",
        "MaxConcurrencyPath",
        "TimeoutSecondsPath",
        "HeartbeatSecondsPath",
        "ToleratedFailurePercentagePath",
        "ToleratedFailureCountPath",
    ):
        if state.get(field) is not None:
            _check_path(where, field, state[field])
    for field in ("ErrorPath", "CausePath"):
        # A Fail state's ErrorPath/CausePath may be a path or an intrinsic function.
        value = state.get(field)
        if intrinsics.is_intrinsic(value):
            try:
                intrinsics.parse(value)
            except intrinsics.IntrinsicSyntaxError as exc:
                raise _refuse(where, f"field '{field}': {exc}") from exc
        elif value is not None:
            _check_path(where, field, value)
    if state.get("ResultPath") is not None:
        _check_path(where, "ResultPath", state["ResultPath"], reference=True)
    for field in ("Parameters", "ResultSelector", "ItemSelector"):
        if field in state:
            _check_template(where, field, state[field])
    if kind == "Pass" and "Result" in state and "Parameters" in state:
        raise _refuse(where, "fields 'Result' and 'Parameters' cannot both be set")
    for retrier in state.get("Retry", []):
        _check_error_handler(where, "Retry", retrier, _RETRIER)
    for catcher in state.get("Catch", []):
        _check_error_handler(where, "Catch", catcher, _CATCHER)
        if catcher.get("Next") not in scope:
            raise _refuse(where, f"field 'Catch': Next '{catcher.get('Next')}' is not a state")
    checker = _CHECKERS.get(kind)
    if checker:
        checker(where, state, scope)


def _check_transition(where: str, kind: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    if kind in ("Choice", "Succeed", "Fail"):
        return
    if ("Next" in state) == bool(state.get("End")):
        raise _refuse(where, "needs exactly one of 'Next' or 'End': true")
    if "Next" in state and state["Next"] not in scope:
        raise _refuse(where, f"field 'Next': '{state['Next']}' is not a state")


def _check_path(where: str, field: str, text: Any, reference: bool = False) -> None:
    try:
        path = jsonpath.compile_path(text)
    except jsonpath.PathSyntaxError as exc:
        raise _refuse(where, f"field '{field}': {exc}") from exc
    if reference and (not path.definite or path.context):
        raise _refuse(where, f"field '{field}': '{text}' must be a reference path")


def _check_template(where: str, field: str, template: Any) -> None:
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    raise _refuse(where, f"field '{field}.{key}': must be a path or intrinsic")
                if intrinsics.is_intrinsic(value):
                    try:
                        intrinsics.parse(value)
                    except intrinsics.IntrinsicSyntaxError as exc:
                        raise _refuse(where, f"field '{field}.{key}': {exc}") from exc
                else:
                    _check_path(where, f"{field}.{key}", value)
            else:
                _check_template(where, f"{field}.{key}", value)
    elif isinstance(template, list):
        for index, item in enumerate(template):
            _check_template(where, f"{field}[{index}]", item)


def _check_error_handler(where: str, field: str, handler: Any, allowed: set[str]) -> None:
    if not isinstance(handler, dict):
        raise _refuse(where, f"field '{field}': each entry must be an object")
    for key in handler:
        if key not in allowed:
            raise _refuse(where, f"field '{field}': unsupported field '{key}'")
    errors = handler.get("ErrorEquals")
    if not isinstance(errors, list) or not errors:
        raise _refuse(where, f"field '{field}': ErrorEquals must be a non-empty list")
    if "States.ALL" in errors and len(errors) != 1:
        raise _refuse(where, f"field '{field}': States.ALL must appear alone in ErrorEquals")
    if handler.get("JitterStrategy", "NONE") not in ("FULL", "NONE"):
        raise _refuse(where, f"field '{field}': JitterStrategy must be FULL or NONE")
    if field == "Catch" and handler.get("ResultPath") is not None:
        _check_path(where, "Catch.ResultPath", handler["ResultPath"], reference=True)


def _check_task(where: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    resource = state.get("Resource")
    if not isinstance(resource, str):
        raise _refuse(where, "field 'Resource' must be a string")
    for suffix in (".sync", ".sync:2", ".waitForTaskToken"):
        if resource.endswith(suffix):
            raise _refuse(
                where,
                f"field 'Resource': the {suffix} integration pattern is not "
                "supported by the local engine",
            )
    if (
        "HeartbeatSeconds" in state
        and state.get("TimeoutSeconds", 99999999) <= state["HeartbeatSeconds"]
    ):
        raise _refuse(where, "field 'HeartbeatSeconds' must be smaller than TimeoutSeconds")


def _check_choice(where: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    choices = state.get("Choices")
    if not isinstance(choices, list) or not choices:
        raise _refuse(where, "field 'Choices' must be a non-empty list")
    for index, rule in enumerate(choices):
        if rule.get("Next") not in scope:
            raise _refuse(where, f"field 'Choices[{index}].Next': not a state")
        _check_rule(where, f"Choices[{index}]", rule, top=True)
    if "Default" in state and state["Default"] not in scope:
        raise _refuse(where, f"field 'Default': '{state['Default']}' is not a state")


def _check_rule(where: str, field: str, rule: Any, top: bool) -> None:
    if not isinstance(rule, dict):
        raise _refuse(where, f"field '{field}' must be an object")
    extra = {"Next"} if top else set()
    extra |= {"Comment"}
    for combinator in ("And", "Or"):
        if combinator in rule:
            for index, sub in enumerate(rule[combinator]):
                _check_rule(where, f"{field}.{combinator}[{index}]", sub, top=False)
            _only(where, field, rule, extra | {combinator})
            return
    if "Not" in rule:
        _check_rule(where, f"{field}.Not", rule["Not"], top=False)
        _only(where, field, rule, extra | {"Not"})
        return
    operator = choice.rule_operator(rule)
    if operator is None or "Variable" not in rule:
        raise _refuse(where, f"field '{field}': needs Variable and a supported operator")
    _only(where, field, rule, extra | {"Variable", operator})
    _check_path(where, f"{field}.Variable", rule["Variable"])
    if operator.endswith("Path"):
        _check_path(where, f"{field}.{operator}", rule[operator])


def _only(where: str, field: str, rule: dict[str, Any], allowed: set[str]) -> None:
    for key in rule:
        if key not in allowed:
            raise _refuse(where, f"field '{field}': unsupported field '{key}'")


def _check_wait(where: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    given = [k for k in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath") if k in state]
    if len(given) != 1:
        raise _refuse(where, "needs exactly one of Seconds, SecondsPath, Timestamp, TimestampPath")
    if "Timestamp" in state and choice.parse_timestamp(state["Timestamp"]) is None:
        raise _refuse(where, f"field 'Timestamp': {state['Timestamp']!r} is not RFC 3339")


def _check_fail(where: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    for field in ("Error", "Cause"):
        if field in state and f"{field}Path" in state:
            raise _refuse(where, f"fields '{field}' and '{field}Path' cannot both be set")


def _check_parallel(where: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    branches = state.get("Branches")
    if not isinstance(branches, list) or not branches:
        raise _refuse(where, "field 'Branches' must be a non-empty list")
    for index, branch in enumerate(branches):
        _check_machine(branch, f"{where} Branches[{index}]")


def _check_map(where: str, state: dict[str, Any], scope: dict[str, Any]) -> None:
    processor = state.get("ItemProcessor", state.get("Iterator"))
    if not isinstance(processor, dict):
        raise _refuse(where, "field 'ItemProcessor' is required")
    config = processor.get("ProcessorConfig", {})
    for key in config:
        if key not in ("Mode", "ExecutionType"):
            raise _refuse(where, f"field 'ItemProcessor.ProcessorConfig': unsupported '{key}'")
    mode = config.get("Mode", "INLINE")
    if mode not in ("INLINE", "DISTRIBUTED"):
        raise _refuse(where, f"field 'ProcessorConfig.Mode': unsupported {mode!r}")
    if config.get("ExecutionType", "STANDARD") not in ("STANDARD", "EXPRESS"):
        raise _refuse(where, "field 'ProcessorConfig.ExecutionType' must be STANDARD or EXPRESS")
    _check_machine(processor, f"{where} ItemProcessor")
    if "Parameters" in state and "ItemSelector" in state:
        raise _refuse(where, "fields 'Parameters' and 'ItemSelector' cannot both be set")
    distributed_only = (
        "ItemReader",
        "ItemBatcher",
        "ResultWriter",
        "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath",
        "ToleratedFailureCount",
        "ToleratedFailureCountPath",
        "Label",
    )
    if mode == "INLINE":
        for field in distributed_only:
            if field in state:
                raise _refuse(where, f"field '{field}' needs ProcessorConfig Mode DISTRIBUTED")
    if "ItemReader" in state:
        _check_reader(where, state["ItemReader"])
    if "ItemBatcher" in state:
        batcher = state["ItemBatcher"]
        for key in batcher:
            if key not in _BATCHER:
                raise _refuse(where, f"field 'ItemBatcher': unsupported field '{key}'")
        if "BatchInput" in batcher:
            _check_template(where, "ItemBatcher.BatchInput", batcher["BatchInput"])
    if "ResultWriter" in state:
        writer = state["ResultWriter"]
        if writer.get("Resource") != PUT_OBJECT or set(writer) - {"Resource", "Parameters"}:
            raise _refuse(
                where,
                f"field 'ResultWriter': only Resource {PUT_OBJECT} with "
                "Parameters Bucket and Prefix is supported",
            )
        _check_template(where, "ResultWriter.Parameters", writer.get("Parameters", {}))


def _check_reader(where: str, reader: dict[str, Any]) -> None:
    for key in reader:
        if key not in ("Resource", "ReaderConfig", "Parameters"):
            raise _refuse(where, f"field 'ItemReader': unsupported field '{key}'")
    if reader.get("Resource") != GET_OBJECT:
        raise _refuse(where, f"field 'ItemReader.Resource': only {GET_OBJECT} is supported")
    config = reader.get("ReaderConfig", {})
    for key in config:
        if key not in _READER_CONFIG:
            raise _refuse(where, f"field 'ItemReader.ReaderConfig': unsupported field '{key}'")
    if config.get("InputType") not in ("CSV", "JSON", "JSONL"):
        raise _refuse(where, "field 'ItemReader.ReaderConfig.InputType' must be CSV, JSON or JSONL")
    if config.get("InputType") == "CSV":
        location = config.get("CSVHeaderLocation")
        if location not in ("FIRST_ROW", "GIVEN"):
            raise _refuse(
                where, "field 'ReaderConfig.CSVHeaderLocation' must be FIRST_ROW or GIVEN"
            )
        if location == "GIVEN" and not config.get("CSVHeaders"):
            raise _refuse(where, "field 'ReaderConfig.CSVHeaders' is required with GIVEN")
        if config.get("CSVDelimiter", "COMMA") not in _DELIMITERS:
            raise _refuse(
                where,
                f"field 'ReaderConfig.CSVDelimiter' must be one of "
                f"{', '.join(sorted(_DELIMITERS))}",
            )
    _check_template(where, "ItemReader.Parameters", reader.get("Parameters", {}))


_CHECKERS = {
    "Task": _check_task,
    "Choice": _check_choice,
    "Wait": _check_wait,
    "Fail": _check_fail,
    "Parallel": _check_parallel,
    "Map": _check_map,
}
