"""Small definitions both the local engine and moto's interpreter support (differential suite).

Each case: (id, definition, input). Lambda tasks are left out (moto would need Docker).
"""

from __future__ import annotations

from typing import Any


def _pass(params: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": params, "End": True}}}


def _choice(rules: list[dict[str, Any]], default: bool = True) -> dict[str, Any]:
    states: dict[str, Any] = {
        "C": {"Type": "Choice", "Choices": rules},
        "Yes": {"Type": "Pass", "Result": "yes", "End": True},
        "No": {"Type": "Pass", "Result": "no", "End": True},
    }
    if default:
        states["C"]["Default"] = "No"
    return {"StartAt": "C", "States": states}


def _rule(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(rule, Next="Yes")]


_BRANCH_A = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": 1, "End": True}}}
_BRANCH_B = {"StartAt": "B", "States": {"B": {"Type": "Pass", "InputPath": "$.v", "End": True}}}
_BRANCH_FAIL = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom", "Cause": "b"}}}
_DOUBLE = {
    "StartAt": "D",
    "States": {"D": {"Type": "Pass", "Parameters": {"v.$": "$"}, "End": True}},
}

CASES: list[tuple[str, dict[str, Any], Any]] = [
    (
        "pass-result",
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"a": 1}, "End": True}}},
        {"x": 0},
    ),
    (
        "pass-parameters",
        _pass({"a.$": "$.x", "b": "lit", "c": {"d.$": "$.y[1]"}}),
        {"x": 5, "y": [1, 2]},
    ),
    (
        "pass-resultpath-nested",
        {
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Result": 7, "ResultPath": "$.a.b", "End": True}},
        },
        {"a": {"c": 1}},
    ),
    (
        "pass-resultpath-null",
        {
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Result": 7, "ResultPath": None, "End": True}},
        },
        {"k": 1},
    ),
    (
        "pass-outputpath",
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "OutputPath": "$.a", "End": True}}},
        {"a": {"b": [1, 2]}},
    ),
    (
        "pass-inputpath",
        {
            "StartAt": "P",
            "States": {
                "P": {"Type": "Pass", "InputPath": "$.a", "ResultPath": "$.copy", "End": True}
            },
        },
        {"a": {"b": 1}},
    ),
    (
        "pass-chain",
        {
            "StartAt": "P1",
            "States": {
                "P1": {"Type": "Pass", "Result": 1, "ResultPath": "$.one", "Next": "P2"},
                "P2": {"Type": "Pass", "Result": 2, "ResultPath": "$.two", "End": True},
            },
        },
        {},
    ),
    ("context-execution-input", _pass({"in.$": "$$.Execution.Input"}), {"q": [1, {"r": None}]}),
    (
        "jsonpath-wildcard",
        _pass({"names.$": "$.people[*].name"}),
        {"people": [{"name": "a"}, {"name": "b"}]},
    ),
    (
        "intrinsic-format",
        _pass({"s.$": "States.Format('Hi {}, you are {} ({})', $.n, $.age, $.ok)"}),
        {"n": "Ann", "age": 31, "ok": True},
    ),
    ("intrinsic-string-to-json", _pass({"j.$": "States.StringToJson($.s)"}), {"s": '{"a":[1,2]}'}),
    ("intrinsic-json-to-string", _pass({"s.$": "States.JsonToString($.o)"}), {"o": {"a": [1, 2]}}),
    ("intrinsic-array", _pass({"a.$": "States.Array('x', $.n, 3)"}), {"n": 2}),
    (
        "intrinsic-array-partition",
        _pass({"a.$": "States.ArrayPartition($.v, 2)"}),
        {"v": [1, 2, 3, 4, 5]},
    ),
    ("intrinsic-array-contains", _pass({"a.$": "States.ArrayContains($.v, 3)"}), {"v": [1, 3]}),
    ("intrinsic-array-range", _pass({"a.$": "States.ArrayRange(1, 9, 2)"}), {}),
    ("intrinsic-array-get-item", _pass({"a.$": "States.ArrayGetItem($.v, 1)"}), {"v": [7, 8]}),
    ("intrinsic-array-length", _pass({"a.$": "States.ArrayLength($.v)"}), {"v": [7, 8, 9]}),
    ("intrinsic-array-unique", _pass({"a.$": "States.ArrayUnique($.v)"}), {"v": [1, 2, 1, 3, 2]}),
    (
        "intrinsic-base64-encode",
        _pass({"a.$": "States.Base64Encode($.s)"}),
        {"s": "Data to encode"},
    ),
    (
        "intrinsic-base64-decode",
        _pass({"a.$": "States.Base64Decode($.s)"}),
        {"s": "RGF0YSB0byBlbmNvZGU="},
    ),
    ("intrinsic-hash", _pass({"a.$": "States.Hash($.s, 'SHA-256')"}), {"s": "input data"}),
    (
        "intrinsic-json-merge",
        _pass({"a.$": "States.JsonMerge($.x, $.y, false)"}),
        {"x": {"a": 1, "b": {"c": 1}}, "y": {"b": {"d": 2}, "e": 3}},
    ),
    ("intrinsic-math-add", _pass({"a.$": "States.MathAdd($.n, -3)"}), {"n": 10}),
    ("intrinsic-string-split", _pass({"a.$": "States.StringSplit($.s, ',')"}), {"s": "a,b,c"}),
    ("intrinsic-nested", _pass({"a.$": "States.ArrayLength(States.Array(1, 2, 3))"}), {}),
    ("choice-string-equals", _choice(_rule({"Variable": "$.s", "StringEquals": "x"})), {"s": "x"}),
    (
        "choice-numeric-and",
        _choice(
            [
                {
                    "And": [
                        {"Variable": "$.n", "NumericGreaterThanEquals": 2},
                        {"Variable": "$.n", "NumericLessThan": 5},
                    ],
                    "Next": "Yes",
                }
            ]
        ),
        {"n": 4},
    ),
    (
        "choice-or-not",
        _choice(
            [
                {
                    "Or": [
                        {"Not": {"Variable": "$.s", "StringEquals": "a"}},
                        {"Variable": "$.n", "NumericEquals": 0},
                    ],
                    "Next": "Yes",
                }
            ]
        ),
        {"s": "a", "n": 1},
    ),
    ("choice-is-present", _choice(_rule({"Variable": "$.missing", "IsPresent": False})), {}),
    ("choice-is-null", _choice(_rule({"Variable": "$.v", "IsNull": True})), {"v": None}),
    ("choice-is-numeric", _choice(_rule({"Variable": "$.v", "IsNumeric": True})), {"v": "1"}),
    (
        "choice-string-matches",
        _choice(_rule({"Variable": "$.f", "StringMatches": "*.log"})),
        {"f": "app.log"},
    ),
    (
        "choice-timestamp",
        _choice(_rule({"Variable": "$.t", "TimestampLessThan": "2026-01-01T00:00:00Z"})),
        {"t": "2025-06-01T12:00:00Z"},
    ),
    (
        "choice-numeric-path",
        _choice(_rule({"Variable": "$.a", "NumericLessThanPath": "$.b"})),
        {"a": 1, "b": 2},
    ),
    ("choice-boolean", _choice(_rule({"Variable": "$.b", "BooleanEquals": False})), {"b": False}),
    (
        "choice-no-match",
        _choice(_rule({"Variable": "$.n", "NumericEquals": 1}), default=False),
        {"n": 2},
    ),
    (
        "wait-seconds",
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 0, "End": True}}},
        {"a": 1},
    ),
    (
        "wait-seconds-path",
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "SecondsPath": "$.s", "End": True}}},
        {"s": 0},
    ),
    (
        "succeed-outputpath",
        {"StartAt": "S", "States": {"S": {"Type": "Succeed", "OutputPath": "$.a"}}},
        {"a": 3},
    ),
    (
        "fail-static",
        {
            "StartAt": "F",
            "States": {"F": {"Type": "Fail", "Error": "MyError", "Cause": "it broke"}},
        },
        {},
    ),
    (
        "fail-paths",
        {"StartAt": "F", "States": {"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "$.c"}}},
        {"e": "E1", "c": "C1"},
    ),
    (
        "parallel-two-branches",
        {
            "StartAt": "Par",
            "States": {
                "Par": {"Type": "Parallel", "Branches": [_BRANCH_A, _BRANCH_B], "End": True}
            },
        },
        {"v": "x"},
    ),
    (
        "parallel-result-selector",
        {
            "StartAt": "Par",
            "States": {
                "Par": {
                    "Type": "Parallel",
                    "Branches": [_BRANCH_A, _BRANCH_B],
                    "ResultSelector": {"first.$": "$[0]"},
                    "ResultPath": "$.out",
                    "End": True,
                }
            },
        },
        {"v": 2},
    ),
    (
        "parallel-catch",
        {
            "StartAt": "Par",
            "States": {
                "Par": {
                    "Type": "Parallel",
                    "Branches": [_BRANCH_FAIL],
                    "Catch": [{"ErrorEquals": ["Boom"], "ResultPath": "$.err", "Next": "After"}],
                    "End": True,
                },
                "After": {"Type": "Pass", "End": True},
            },
        },
        {"k": 1},
    ),
    (
        "parallel-uncaught",
        {
            "StartAt": "Par",
            "States": {"Par": {"Type": "Parallel", "Branches": [_BRANCH_FAIL], "End": True}},
        },
        {},
    ),
    (
        "map-inline",
        {
            "StartAt": "M",
            "States": {
                "M": {"Type": "Map", "ItemsPath": "$.xs", "ItemProcessor": _DOUBLE, "End": True}
            },
        },
        {"xs": [1, 2, 3]},
    ),
    (
        "map-item-selector",
        {
            "StartAt": "M",
            "States": {
                "M": {
                    "Type": "Map",
                    "ItemsPath": "$.xs",
                    "ItemSelector": {
                        "i.$": "$$.Map.Item.Index",
                        "v.$": "$$.Map.Item.Value",
                        "k.$": "$.k",
                    },
                    "ItemProcessor": _DOUBLE,
                    "ResultPath": "$.out",
                    "End": True,
                }
            },
        },
        {"xs": ["a", "b"], "k": 9},
    ),
    (
        "map-empty",
        {"StartAt": "M", "States": {"M": {"Type": "Map", "ItemProcessor": _DOUBLE, "End": True}}},
        [],
    ),
    (
        "map-catch",
        {
            "StartAt": "M",
            "States": {
                "M": {
                    "Type": "Map",
                    "ItemsPath": "$.xs",
                    "ItemProcessor": _BRANCH_FAIL,
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "After"}],
                    "End": True,
                },
                "After": {"Type": "Pass", "End": True},
            },
        },
        {"xs": [1]},
    ),
    ("runtime-missing-path", _pass({"a.$": "$.nope"}), {"x": 1}),
]
