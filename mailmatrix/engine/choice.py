"""Choice rules: comparison operators, their ...Path variants, And/Or/Not and type tests.

Semantics from the States Language specification, "Choice Rules"
(https://states-language.net/spec.html#choice-state) and the Step Functions page
"Choice workflow state" (https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from mailmatrix.engine import jsonpath
from mailmatrix.engine.errors import RUNTIME, StatesError

_TYPE_TESTS = ("IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp")
_KINDS = {"String": str, "Numeric": (int, float), "Boolean": bool, "Timestamp": str}
_RELATIONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThanEquals": lambda a, b: a >= b,
}
COMPARISONS = frozenset(
    [f"{kind}{rel}" for kind in _KINDS for rel in _RELATIONS if kind != "Boolean"]
    + ["BooleanEquals", "StringMatches"]
)
OPERATORS = frozenset(
    list(COMPARISONS)
    + [f"{op}Path" for op in COMPARISONS if op != "StringMatches"]
    + list(_TYPE_TESTS)
)
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def parse_timestamp(text: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp (uppercase T, zone required) as an aware datetime, else None."""
    if not isinstance(text, str) or not _TIMESTAMP.match(text):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def rule_operator(rule: dict[str, Any]) -> str | None:
    """The single comparison operator of a rule, or None for And/Or/Not."""
    found = [key for key in rule if key in OPERATORS]
    return found[0] if found else None


def evaluate(rule: dict[str, Any], data: Any, context: Any) -> bool:
    """Evaluate one choice rule (top-level or nested)."""
    if "And" in rule:
        return all(evaluate(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(evaluate(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not evaluate(rule["Not"], data, context)
    operator = rule_operator(rule)
    if operator is None:
        raise StatesError(RUNTIME, f"choice rule without a supported operator: {rule}")
    variable = rule["Variable"]
    if operator == "IsPresent":
        return jsonpath.exists(variable, data, context) == rule[operator]
    value = jsonpath.select(variable, data, context, "Variable")
    expected = rule[operator]
    if operator in _TYPE_TESTS:
        return _type_test(operator, value) == expected
    if operator.endswith("Path"):
        expected = jsonpath.select(expected, data, context, operator)
        operator = operator.removesuffix("Path")
    return _compare(operator, value, expected)


def _type_test(operator: str, value: Any) -> bool:
    if operator == "IsNull":
        return value is None
    if operator == "IsNumeric":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if operator == "IsString":
        return isinstance(value, str)
    if operator == "IsBoolean":
        return isinstance(value, bool)
    return parse_timestamp(value) is not None


def _compare(operator: str, value: Any, expected: Any) -> bool:
    if operator == "StringMatches":
        return isinstance(value, str) and _string_matches(value, expected)
    kind = next(k for k in _KINDS if operator.startswith(k))
    relation = _RELATIONS[operator.removeprefix(kind)]
    if kind == "Numeric":
        both = (value, expected)
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in both):
            return False
    elif kind == "Boolean":
        if not isinstance(value, bool) or not isinstance(expected, bool):
            return False
    elif kind == "Timestamp":
        value, expected = parse_timestamp(value), parse_timestamp(expected)
        if value is None or expected is None:
            return False
    elif not isinstance(value, str) or not isinstance(expected, str):
        return False
    return bool(relation(value, expected))


def _string_matches(value: str, pattern: str) -> bool:
    # Only * is a wildcard; \* and \\ are literal (spec: "StringMatches").
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else re.escape(char))
        i += 1
    return re.fullmatch("".join(out), value, flags=re.DOTALL) is not None


__all__ = ["COMPARISONS", "OPERATORS", "evaluate", "parse_timestamp", "rule_operator"]
