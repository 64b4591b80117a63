"""Intrinsic functions of the States Language (JSONPath dialect).

Parsing and semantics follow the "Intrinsic functions" page of the Step Functions developer
guide (https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html).
Arguments are string literals in single quotes (escape ``' { } \\`` with a backslash), numbers,
``null``, ``true``/``false``, JSONPaths (``$`` or ``$$``) and nested intrinsic calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailmatrix.engine import jsonpath
from mailmatrix.engine.errors import INTRINSIC_FAILURE, StatesError

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_FUNC = re.compile(r"States\.[A-Za-z0-9]+")


class IntrinsicSyntaxError(ValueError):
    """The text is not a well-formed intrinsic function call."""


@dataclass(frozen=True)
class Call:
    """A parsed call: the function name and its argument nodes."""

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Literal:
    """A literal argument."""

    value: Any


@dataclass(frozen=True)
class PathArg:
    """A JSONPath argument."""

    path: str


def is_intrinsic(text: Any) -> bool:
    """True when a Parameters value looks like an intrinsic call."""
    return isinstance(text, str) and text.startswith("States.")


@lru_cache(maxsize=2048)
def parse(text: str) -> Call:
    """Parse an intrinsic call; raise IntrinsicSyntaxError when malformed or unknown."""
    node, pos = _parse_call(text, 0)
    if text[pos:].strip():
        raise IntrinsicSyntaxError(f"{text!r}: unexpected text after the call at {pos}")
    return node


def _parse_call(text: str, pos: int) -> tuple[Call, int]:
    match = _FUNC.match(text, pos)
    if not match:
        raise IntrinsicSyntaxError(f"{text!r}: expected States.<Function> at {pos}")
    name = match.group()
    if name not in FUNCTIONS:
        raise IntrinsicSyntaxError(f"{text!r}: unknown intrinsic function {name}")
    pos = match.end()
    if pos >= len(text) or text[pos] != "(":
        raise IntrinsicSyntaxError(f"{text!r}: expected '(' after {name}")
    pos += 1
    args: list[Any] = []
    pos = _skip_space(text, pos)
    if pos < len(text) and text[pos] == ")":
        return Call(name, ()), pos + 1
    while True:
        arg, pos = _parse_arg(text, _skip_space(text, pos))
        args.append(arg)
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise IntrinsicSyntaxError(f"{text!r}: missing ')'")
        if text[pos] == ")":
            return Call(name, tuple(args)), pos + 1
        if text[pos] != ",":
            raise IntrinsicSyntaxError(f"{text!r}: expected ',' or ')' at {pos}")
        pos += 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    return pos


def _parse_arg(text: str, pos: int) -> tuple[Any, int]:
    if text.startswith("States.", pos):
        return _parse_call(text, pos)
    if pos < len(text) and text[pos] == "'":
        return _parse_string(text, pos)
    if pos < len(text) and text[pos] == "$":
        end = _path_end(text, pos)
        path = text[pos:end].strip()
        try:
            jsonpath.compile_path(path)
        except jsonpath.PathSyntaxError as exc:
            raise IntrinsicSyntaxError(f"{text!r}: {exc}") from exc
        return PathArg(path), end
    for word, value in (("null", None), ("true", True), ("false", False)):
        if text.startswith(word, pos):
            return Literal(value), pos + len(word)
    match = _NUMBER.match(text, pos)
    if match:
        number = match.group()
        is_float = "." in number or "e" in number.lower()
        return Literal(float(number) if is_float else int(number)), match.end()
    raise IntrinsicSyntaxError(f"{text!r}: unexpected argument at {pos}")


def _parse_string(text: str, pos: int) -> tuple[Literal, int]:
    out = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            nxt = text[pos + 1]
            # \{ and \} stay escaped so States.Format can tell them from placeholders.
            out.append("\\" + nxt if nxt in "{}" else nxt)
            pos += 2
        elif char == "'":
            return Literal("".join(out)), pos + 1
        else:
            out.append(char)
            pos += 1
    raise IntrinsicSyntaxError(f"{text!r}: unterminated string")


def _path_end(text: str, pos: int) -> int:
    depth = 0
    quote = None
    while pos < len(text):
        char = text[pos]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"" and depth:
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            if depth == 0:
                return pos
            depth -= 1
        elif char == "," and depth == 0:
            return pos
        pos += 1
    return pos


def evaluate(text: str, data: Any, context: Any) -> Any:
    """Evaluate an intrinsic call against the state's input and the context object."""
    return _eval(parse(text), data, context)


def _eval(node: Any, data: Any, context: Any) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, PathArg):
        return jsonpath.select(node.path, data, context, node.path)
    args = [_eval(a, data, context) for a in node.args]
    if node.name != "States.Format":
        args = [
            _unescape(a) if isinstance(a, str) and isinstance(n, Literal) else a
            for a, n in zip(args, node.args, strict=True)
        ]
    try:
        return FUNCTIONS[node.name](*args)
    except StatesError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
        raise StatesError(INTRINSIC_FAILURE, f"{node.name}: {exc}") from exc


def _unescape(text: str) -> str:
    return text.replace("\\{", "{").replace("\\}", "}")


def _fail(name: str, message: str) -> StatesError:
    return StatesError(INTRINSIC_FAILURE, f"Invalid arguments in {name}: {message}")


def _format(template: Any, *args: Any) -> str:
    if not isinstance(template, str):
        raise _fail("States.Format", "the first argument must be a string")
    parts = re.split(r"(\\\{|\\\}|\{\})", template)
    out = []
    remaining = list(args)
    for part in parts:
        if part == "{}":
            if not remaining:
                raise _fail("States.Format", "more placeholders than arguments")
            value = remaining.pop(0)
            if isinstance(value, dict | list):
                raise _fail("States.Format", "arguments must be strings, numbers, booleans or null")
            out.append(_format_value(value))
        elif part in ("\\{", "\\}"):
            out.append(part[1])
        else:
            out.append(part)
    if remaining:
        raise _fail("States.Format", "more arguments than placeholders")
    return "".join(out)


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _string_to_json(text: Any) -> Any:
    if not isinstance(text, str):
        raise _fail("States.StringToJson", "the argument must be a string")
    return json.loads(text)


def _json_to_string(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _array(*values: Any) -> list[Any]:
    return list(values)


def _int_arg(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _fail(name, f"{value!r} is not an integer")
    return int(value)


def _array_arg(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(name, "the first argument must be an array")
    return value


def _array_partition(array: Any, size: Any) -> list[list[Any]]:
    items = _array_arg("States.ArrayPartition", array)
    chunk = _int_arg("States.ArrayPartition", size)
    if chunk <= 0:
        raise _fail("States.ArrayPartition", "the chunk size must be positive")
    return [items[i : i + chunk] for i in range(0, len(items), chunk)]


def _array_contains(array: Any, value: Any) -> bool:
    return value in _array_arg("States.ArrayContains", array)


# "The array produced can't contain more than 1000 items" (States.ArrayRange).
_ARRAY_RANGE_LIMIT = 1000


def _array_range(start: Any, end: Any, step: Any) -> list[int]:
    first = _int_arg("States.ArrayRange", start)
    last = _int_arg("States.ArrayRange", end)
    by = _int_arg("States.ArrayRange", step)
    if by == 0:
        raise _fail("States.ArrayRange", "the step must not be 0")
    values = list(range(first, last + (1 if by > 0 else -1), by))
    if len(values) > _ARRAY_RANGE_LIMIT:
        raise _fail("States.ArrayRange", "the array would hold more than 1000 items")
    return values


def _array_get_item(array: Any, index: Any) -> Any:
    items = _array_arg("States.ArrayGetItem", array)
    position = _int_arg("States.ArrayGetItem", index)
    if not 0 <= position < len(items):
        raise _fail("States.ArrayGetItem", f"index {position} is out of bounds")
    return items[position]


def _array_length(array: Any) -> int:
    return len(_array_arg("States.ArrayLength", array))


def _array_unique(array: Any) -> list[Any]:
    out: list[Any] = []
    for item in _array_arg("States.ArrayUnique", array):
        if item not in out:
            out.append(item)
    return out


# "The input string can't exceed 10,000 characters" (Base64Encode / Base64Decode).
_BASE64_LIMIT = 10_000


def _base64_encode(text: Any) -> str:
    if not isinstance(text, str) or len(text) > _BASE64_LIMIT:
        raise _fail("States.Base64Encode", "needs a string of at most 10,000 characters")
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _base64_decode(text: Any) -> str:
    if not isinstance(text, str) or len(text) > _BASE64_LIMIT:
        raise _fail("States.Base64Decode", "needs a string of at most 10,000 characters")
    return base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8")


_HASHES = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
}


def _hash(data: Any, algorithm: Any) -> str:
    if algorithm not in _HASHES:
        raise _fail("States.Hash", f"unsupported algorithm {algorithm!r}")
    text = data if isinstance(data, str) else _json_to_string(data)
    return hashlib.new(_HASHES[algorithm], text.encode("utf-8")).hexdigest()


def _json_merge(first: Any, second: Any, deep: Any) -> dict[str, Any]:
    if not isinstance(first, dict) or not isinstance(second, dict):
        raise _fail("States.JsonMerge", "both arguments must be objects")
    if deep is not False:
        raise _fail("States.JsonMerge", "only shallow merges (false) are supported")
    return {**first, **second}


def _math_random(start: Any, end: Any, seed: Any = None) -> int:
    low = _int_arg("States.MathRandom", start)
    high = _int_arg("States.MathRandom", end)
    rng = random.Random(_int_arg("States.MathRandom", seed)) if seed is not None else random
    return rng.randrange(low, high) if high > low else low


def _math_add(first: Any, second: Any) -> int:
    return _int_arg("States.MathAdd", first) + _int_arg("States.MathAdd", second)


def _string_split(text: Any, delimiters: Any) -> list[str]:
    if not isinstance(text, str) or not isinstance(delimiters, str):
        raise _fail("States.StringSplit", "both arguments must be strings")
    if not delimiters:
        return [text]
    parts = re.split("[" + re.escape(delimiters) + "]", text)
    return [p for p in parts if p != ""]


def _uuid() -> str:
    return str(uuid.uuid4())


FUNCTIONS: dict[str, Any] = {
    "States.Format": _format,
    "States.StringToJson": _string_to_json,
    "States.JsonToString": _json_to_string,
    "States.Array": _array,
    "States.ArrayPartition": _array_partition,
    "States.ArrayContains": _array_contains,
    "States.ArrayRange": _array_range,
    "States.ArrayGetItem": _array_get_item,
    "States.ArrayLength": _array_length,
    "States.ArrayUnique": _array_unique,
    "States.Base64Encode": _base64_encode,
    "States.Base64Decode": _base64_decode,
    "States.Hash": _hash,
    "States.JsonMerge": _json_merge,
    "States.MathRandom": _math_random,
    "States.MathAdd": _math_add,
    "States.StringSplit": _string_split,
    "States.UUID": _uuid,
}
