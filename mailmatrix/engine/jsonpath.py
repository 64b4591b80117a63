"""The JSONPath subset Step Functions accepts (JSONPath dialect of the States Language).

Supported: ``$`` and ``$$`` roots, ``.name``, ``['name']``, ``[n]`` (negative too), ``[*]`` and
``.*``, slices ``[a:b]``, unions ``[0,2]``, deep scan ``..name`` and simple filters
``[?(@.a.b OP literal)]`` with ==, !=, <, <=, >, >=. A path without wildcard, slice, union,
deep scan or filter is *definite* and selects one value; otherwise it selects a list.
Reference paths (ResultPath and the like) must be definite and use names and indexes only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailmatrix.engine.errors import RUNTIME, StatesError

_MISSING = object()
_NAME = re.compile(r"[^.\[\]\s()'\"]+")
_FILTER = re.compile(r"\?\(\s*@((?:\.[^\s<>=!]+)*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*\)$")


class PathSyntaxError(ValueError):
    """The text is not a JSONPath the engine understands."""


@dataclass(frozen=True)
class Step:
    """One step of a path: kind is name, index, wildcard, slice, union, deep or filter."""

    kind: str
    arg: Any = None


@dataclass(frozen=True)
class Path:
    """A compiled JSONPath."""

    text: str
    context: bool
    steps: tuple[Step, ...]

    @property
    def definite(self) -> bool:
        """True when the path selects one value rather than a list."""
        return all(s.kind in ("name", "index") for s in self.steps)


@lru_cache(maxsize=4096)
def compile_path(text: str) -> Path:
    """Parse a JSONPath string; raise PathSyntaxError when it is not one."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathSyntaxError(f"path {text!r}: must start with '$'")
    context = text.startswith("$$")
    pos = 2 if context else 1
    steps: list[Step] = []
    while pos < len(text):
        if text.startswith("..", pos):
            match = _NAME.match(text, pos + 2)
            if not match:
                raise PathSyntaxError(f"path {text!r}: expected a name after '..' at {pos}")
            steps.append(Step("deep", match.group()))
            pos = match.end()
        elif text[pos] == ".":
            if text.startswith(".*", pos):
                steps.append(Step("wildcard"))
                pos += 2
                continue
            match = _NAME.match(text, pos + 1)
            if not match:
                raise PathSyntaxError(f"path {text!r}: expected a name at {pos + 1}")
            steps.append(Step("name", match.group()))
            pos = match.end()
        elif text[pos] == "[":
            end = _closing_bracket(text, pos)
            steps.append(_bracket_step(text, text[pos + 1 : end].strip()))
            pos = end + 1
        else:
            raise PathSyntaxError(f"path {text!r}: unexpected {text[pos]!r} at {pos}")
    return Path(text, context, tuple(steps))


def _closing_bracket(text: str, start: int) -> int:
    quote = None
    depth = 0
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return i
    raise PathSyntaxError(f"path {text!r}: unclosed '[' at {start}")


def _bracket_step(text: str, inner: str) -> Step:
    if inner == "*":
        return Step("wildcard")
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return Step("name", inner[1:-1])
    if re.fullmatch(r"-?\d+", inner):
        return Step("index", int(inner))
    if re.fullmatch(r"-?\d*:-?\d*(:-?\d+)?", inner):
        parts = [int(p) if p else None for p in inner.split(":")]
        return Step("slice", slice(*parts))
    if re.fullmatch(r"-?\d+(\s*,\s*-?\d+)+", inner):
        return Step("union", tuple(int(p) for p in inner.split(",")))
    match = _FILTER.match(inner)
    if match:
        sub = tuple(p for p in match.group(1).split(".") if p)
        try:
            literal = json.loads(match.group(3).replace("'", '"'))
        except ValueError as exc:
            raise PathSyntaxError(f"path {text!r}: bad filter literal {match.group(3)!r}") from exc
        return Step("filter", (sub, match.group(2), literal))
    raise PathSyntaxError(f"path {text!r}: unsupported bracket expression [{inner}]")


def _get_child(value: Any, step: Step) -> Any:
    if step.kind == "name":
        if isinstance(value, dict) and step.arg in value:
            return value[step.arg]
        return _MISSING
    if isinstance(value, list) and -len(value) <= step.arg < len(value):
        return value[step.arg]
    return _MISSING


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _deep(value: Any, name: str) -> list[Any]:
    found = []
    if isinstance(value, dict) and name in value:
        found.append(value[name])
    for child in _children(value):
        found.extend(_deep(child, name))
    return found


_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _filter_matches(item: Any, sub: tuple[str, ...], op: str, literal: Any) -> bool:
    value = item
    for name in sub:
        if not isinstance(value, dict) or name not in value:
            return False
        value = value[name]
    try:
        return bool(_COMPARE[op](value, literal))
    except TypeError:
        return False


def _apply(step: Step, values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if step.kind in ("name", "index"):
            child = _get_child(value, step)
            if child is not _MISSING:
                out.append(child)
        elif step.kind == "wildcard":
            out.extend(_children(value))
        elif step.kind == "slice" and isinstance(value, list):
            out.extend(value[step.arg])
        elif step.kind == "union" and isinstance(value, list):
            out.extend(value[i] for i in step.arg if -len(value) <= i < len(value))
        elif step.kind == "deep":
            out.extend(_deep(value, step.arg))
        elif step.kind == "filter":
            sub, op, literal = step.arg
            out.extend(v for v in _children(value) if _filter_matches(v, sub, op, literal))
    return out


def find(path: Path | str, data: Any, context: Any = None) -> Any:
    """Select with a path: one value for a definite path, a list otherwise.

    Raises KeyError when a definite path selects nothing.
    """
    compiled = compile_path(path) if isinstance(path, str) else path
    root = context if compiled.context else data
    if compiled.definite:
        value = root
        for step in compiled.steps:
            value = _get_child(value, step)
            if value is _MISSING:
                raise KeyError(compiled.text)
        return value
    values = [root]
    for step in compiled.steps:
        values = _apply(step, values)
    return values


def exists(path: str, data: Any, context: Any = None) -> bool:
    """True when a definite path selects a value (an indefinite path: a non-empty list)."""
    try:
        found = find(path, data, context)
    except KeyError:
        return False
    return bool(found) if not compile_path(path).definite else True


def select(path: str, data: Any, context: Any, field: str) -> Any:
    """Select for a state field; a definite path that selects nothing is States.Runtime."""
    try:
        return find(path, data, context)
    except KeyError:
        shown = json.dumps(context if compile_path(path).context else data)
        raise StatesError(
            RUNTIME,
            f"An error occurred while executing the state. The JSONPath '{path}' specified "
            f"for the field '{field}' could not be found in the input '{shown[:2000]}'",
        ) from None


def assign(data: Any, path: str, value: Any) -> Any:
    """Return a copy of data with value placed at a reference path (ResultPath semantics)."""
    compiled = compile_path(path)
    if not compiled.definite or compiled.context:
        raise PathSyntaxError(f"path {path!r}: a reference path must be definite and start with $")
    if not compiled.steps:
        return value
    if not isinstance(data, dict | list):
        raise StatesError(
            "States.ResultPathMatchFailure",
            f"Unable to apply ResultPath '{path}' to input {json.dumps(data)[:200]}",
        )
    root = _shallow_copy(data)
    node = root
    for index, step in enumerate(compiled.steps):
        last = index == len(compiled.steps) - 1
        if step.kind == "name":
            if not isinstance(node, dict):
                raise StatesError(
                    "States.ResultPathMatchFailure",
                    f"Unable to apply ResultPath '{path}': '{step.arg}' needs an object",
                )
            if last:
                node[step.arg] = value
            else:
                child = node.get(step.arg)
                node[step.arg] = _shallow_copy(child) if isinstance(child, dict | list) else {}
                node = node[step.arg]
        else:
            if not isinstance(node, list) or not -len(node) <= step.arg < len(node):
                raise StatesError(
                    "States.ResultPathMatchFailure",
                    f"Unable to apply ResultPath '{path}': index {step.arg} not in the input",
                )
            if last:
                node[step.arg] = value
            else:
                node[step.arg] = _shallow_copy(node[step.arg])
                node = node[step.arg]
    return root


def _shallow_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
