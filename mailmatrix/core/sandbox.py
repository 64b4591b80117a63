"""The sandbox templates render in: Jinja's, refusing values no message could carry.

Jinja's SandboxedEnvironment keeps templates away from Python's internals, not from making
huge values. The render's time limit stops Python code between two steps, never inside one
C call, and ``'x' * 10**9``, ``Name|center(10**9)``, ``'%0999999999d' % 1`` or the join of a
list holding one long text a thousand times each make their value in one call: gigabytes
before the limit could act. So each step that can make a long text in one call works out
the length it would make first and raises SecurityError ("refused by the sandbox") above
MAX_TEXT: the operators ``*``, ``**``, ``%``, ``+`` and ``~``, the filters and str methods
that take a width, a separator or a replacement, str.format, and the joining of a
template's output. Ordinary uses (``center(20)``, ``'%05d' % n``, ``indent(4)``) render as
before.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from mailmatrix.settings import SES_V2_MAX_MESSAGE_BYTES

# The longest text (or list) a template may make in one step (``'x' * n``, a width, a join):
# no message SES accepts could carry more.
MAX_TEXT = SES_V2_MAX_MESSAGE_BYTES
# The largest power (in bits) a template may compute with ``**``.
MAX_POWER_BITS = 100_000
# The longest indent tojson takes: its indent is repeated once per level of each line.
MAX_INDENT = 1_000
# How much longer escaping may make a text (``"`` becomes ``&#34;``).
_ESCAPED_GROWTH = 5


def refuse_longer(length: int, what: str) -> None:
    """Raise SecurityError when ``what`` would make a text of more than MAX_TEXT characters."""
    if length > MAX_TEXT:
        raise SecurityError(
            f"{what} would make {length:,} characters or items, more than a message can"
            f" carry ({MAX_TEXT:,})"
        )


def _length(value: Any) -> int:
    """The length of a text or sequence, 0 for anything else (a number prints short)."""
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _number(value: Any) -> int:
    """A width or count given as a number, 0 for anything else (Python refuses it then)."""
    return value if isinstance(value, int) else 0


# --- operators -------------------------------------------------------------------------------


def _check_repeat(sequence: Any, times: Any) -> None:
    """Refuse ``sequence * times`` longer than MAX_TEXT, or holding more text than it."""
    if isinstance(sequence, str | bytes | list | tuple) and isinstance(times, int):
        refuse_longer(len(sequence) * times, f"repeating a value {times:,} times")
        if isinstance(sequence, list | tuple):
            held = sum(map(_length, sequence)) * times
            refuse_longer(held, f"repeating a list of texts {times:,} times")


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse ``base ** exponent`` of more than MAX_POWER_BITS bits."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        bits = abs(base).bit_length()
        if bits > 1 and (bits - 1) * exponent > MAX_POWER_BITS:
            raise SecurityError(
                f"{base} ** {exponent} would be a number of about {(bits - 1) * exponent:,}"
                f" bits; the limit is {MAX_POWER_BITS:,}"
            )


def _check_sum(left: Any, right: Any) -> None:
    """Refuse ``left + right`` of two texts or lists longer than MAX_TEXT together."""
    refuse_longer(_length(left) + _length(right), "adding two values")


def check_percent(form: Any, values: Any) -> None:
    """Refuse ``form % values`` (printf-style formatting) longer than MAX_TEXT.

    Counts each conversion's width and precision (``*`` takes them from ``values``, as
    Python does) and the length of each text it prints; what Python itself refuses (too few
    values, a width that is no number) is left to it.
    """
    if not isinstance(form, str):
        return
    growth = _ESCAPED_GROWTH if isinstance(form, Markup) else 1
    positional = list(values) if isinstance(values, tuple) else [values]
    made = len(form)
    for key, width, precision, kind in _conversions(form):
        if kind == "%":
            continue
        if width == "*":
            width = positional.pop(0) if positional else 0
        if precision == "*":
            precision = positional.pop(0) if positional else 0
        if key is not None:
            value = values.get(key) if isinstance(values, Mapping) else None
        else:
            value = positional.pop(0) if positional else None
        # %r and %a write a character as up to 10 (\\U0001f600)
        escaped = 10 if kind in "ra" else growth
        printed = len(value) * escaped if isinstance(value, str) else 0
        made += max(_number(width), printed) + abs(_number(precision))
    refuse_longer(made, "formatting with %")


def _conversions(form: str) -> Iterable[tuple[str | None, Any, Any, str]]:
    """The conversions of a printf-style format: (mapping key, width, precision, type), a
    width or precision given as digits read as a number, ``*`` kept as it is.

    It reads a format as CPython does: a key's parentheses nest, flags, width, precision, a
    length modifier; CPython refuses what this cannot read.
    """
    at = form.find("%")
    while at != -1 and at + 1 < len(form):
        at += 1
        key = None
        if form[at] == "(":
            depth, start = 1, at + 1
            while depth and at + 1 < len(form):
                at += 1
                depth += {"(": 1, ")": -1}.get(form[at], 0)
            key, at = form[start:at], at + 1
        while at < len(form) and form[at] in "-+ #0":
            at += 1
        width, at = _width(form, at)
        precision: Any = None
        if at < len(form) and form[at] == ".":
            precision, at = _width(form, at + 1)
        while at < len(form) and form[at] in "hlL":
            at += 1
        if at >= len(form):
            return
        yield key, width, precision, form[at]
        at = form.find("%", at + 1)


def _width(form: str, at: int) -> tuple[Any, int]:
    """The width (or precision) starting at ``at``: ``*``, a number or None; and where it ends."""
    if at < len(form) and form[at] == "*":
        return "*", at + 1
    end = at
    while end < len(form) and form[end] in string.digits:
        end += 1
    return (int(form[at:end]) if end > at else None), end


def _check_concat(values: tuple[Any, ...]) -> None:
    """Refuse ``a ~ b ~ ...`` making a text longer than MAX_TEXT."""
    refuse_longer(sum(map(_length, values)), "joining values with ~")


# --- str methods, filters, str.format ------------------------------------------------------------


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a str (or bytes) method call making a text longer than MAX_TEXT; return its
    arguments (a join's items read into a list, to be measured once and joined)."""
    text = getattr(method, "__self__", None)
    name = getattr(method, "__name__", None)
    if not isinstance(text, str | bytes):
        return args
    given = dict(enumerate(args))
    if name in ("center", "ljust", "rjust", "zfill"):
        refuse_longer(max(len(text), _number(given.get(0))), name)
    elif name == "expandtabs":
        tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
        refuse_longer(len(text) + tabs * _number(given.get(0, kwargs.get("tabsize", 8))), name)
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1], given.get(2, kwargs.get("count", -1)))
    elif name == "join" and args:
        items = list(args[0])
        _check_join(items, text)
        return (items, *args[1:])
    elif name == "translate" and isinstance(args[0] if args else None, Mapping):
        longest = max((_length(value) for value in args[0].values()), default=1)
        refuse_longer(len(text) * max(longest, 1), name)
    return args


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    """Refuse replacing ``old`` by ``new`` in ``text`` making more than MAX_TEXT."""
    kind = str if isinstance(text, str) else bytes
    if not (isinstance(old, kind) and isinstance(new, kind)):
        return  # Python refuses the mix
    found = text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    refuse_longer(len(text) + found * (len(new) - len(old)), "replace")


def _check_join(items: list[Any], separator: Any) -> None:
    """Refuse joining ``items`` with ``separator`` into more than MAX_TEXT."""
    between = len(str(separator)) * max(len(items) - 1, 0)
    refuse_longer(sum(map(_length, items)) + between, f"joining {len(items):,} values")


def _center(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def center(value: Any, width: int = 80) -> str:
        refuse_longer(max(len(str(value)), _number(width)), "center")
        return original(value, width)

    return center


def _indent(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
        text = str(s)
        each = len(width) if isinstance(width, str) else _number(width)
        refuse_longer(len(text) + (text.count("\n") + 2) * each, "indent")
        return original(s, width, first, blank)

    return indent


def _wordwrap(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def wordwrap(environment: Any, s: Any, *args: Any, **kwargs: Any) -> str:
        wrapstring = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        text = str(s)
        refuse_longer(len(text) + (len(text) + 1) * _length(wrapstring), "wordwrap")
        return original(environment, s, *args, **kwargs)

    return wordwrap


def _format(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def format(value: Any, *args: Any, **kwargs: Any) -> str:
        check_percent(str(value), kwargs or args)
        return original(value, *args, **kwargs)

    return format


def _join(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def join(
        eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None
    ) -> str:
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items = list(value)
        _check_join(items, d)
        return original(eval_ctx, items, d)

    return join


def _replace(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: Any = None) -> str:
        _check_replace(str(s), str(old), str(new), count)
        return original(eval_ctx, s, old, new, count)

    return replace


class NotANumber(Exception):
    """The ``int`` or ``float`` filter, given no default, could not read ``value``, or read it
    in a way no letter should print: ``reason`` is ``unreadable`` (Jinja would print 0),
    ``grouped`` (one "." or "," before three digits: "56.000" for int, "1,234": thousands
    grouped, or a decimal mark), ``thousands`` ("1.234.567", "1,234,567": thousands grouped,
    which Jinja cannot read), ``fraction`` ("85000.99" for int: the decimals would be dropped)
    or ``not_finite`` ("NaN", "inf": float prints nan or inf)."""

    def __init__(self, filter_name: str, value: Any, reason: str = "unreadable") -> None:
        super().__init__(f"the {filter_name} filter cannot read {value!r} as a number")
        self.filter_name = filter_name
        self.value = value
        self.reason = reason


# A default no template can pass: the filter was given none.
_NO_DEFAULT: Any = object()
# One "." or "," before three digits: a German "56.000" is 56000, Python reads 56.0; an English
# "1,234" is 1234, a German one 1.234. A leading 0 ("0.500") groups no thousands.
GROUPED_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}[.,]\d{3}")
# The same "." or "," between groups of three digits twice or more: thousands, never decimals.
THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}([.,])\d{3}(?:\1\d{3})+")


def _strict_number(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Jinja's ``int`` or ``float`` filter, raising NotANumber where Jinja returns 0 for a value
    it cannot read ("56.000 €"|int printed 0 in an offer), where the text may group thousands
    ("56.000"|int printed 56, |float 56.0: a German salary), where int would drop a text's
    decimals ("85000.99"|int printed 85000) and where float reads NaN or infinity, unless the
    template gives a default (``int(0)``, ``float(default=0)``): then Jinja's behaviour.
    ``decimal="."`` says the column's "." is a decimal point ("3.125"|float(decimal=".") is
    3.125): digits grouped by it twice ("1.234.567") are still refused."""

    def strict(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def number(
            value: Any,
            default: Any = _NO_DEFAULT,
            *args: Any,
            decimal: str | None = None,
            **kwargs: Any,
        ) -> Any:
            if decimal not in (None, "."):
                raise TypeError(f'{name}: decimal={decimal!r}: only decimal="." is known')
            if default is not _NO_DEFAULT:
                return original(value, default, *args, **kwargs)
            if isinstance(value, str):
                _refuse_grouped(name, value, decimal_point=decimal == ".")
            read = original(value, _NO_DEFAULT, *args, **kwargs)
            if read is _NO_DEFAULT:
                raise NotANumber(name, value)
            if isinstance(read, float) and not math.isfinite(read):
                raise NotANumber(name, value, "not_finite")
            if name == "int" and isinstance(value, str) and "." in value and float(value) != read:
                raise NotANumber(name, value, "fraction")
            return read

        return number

    return strict


def _refuse_grouped(name: str, value: str, *, decimal_point: bool = False) -> None:
    """Raise NotANumber for a text whose "." or "," groups thousands, or may ("1,234",
    "56.000"), unless ``decimal_point`` says a "." is one ("3.125" then reads 3.125)."""
    if not ("," in value or "." in value):
        return
    text = value.strip()
    if THOUSANDS.fullmatch(text):
        raise NotANumber(name, value, "thousands")
    if GROUPED_THOUSANDS.fullmatch(text) and not (decimal_point and "." in text):
        raise NotANumber(name, value, "grouped")


def _dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps for the tojson filter, refusing a long indent or text before it is made.

    The encoder's pieces are measured before they are joined: a list holding one long text
    many times is short, its JSON is not.
    """
    indent = kwargs.get("indent")
    if (len(indent) if isinstance(indent, str) else _number(indent)) > MAX_INDENT:
        raise SecurityError(f"tojson: an indent of {indent!r} is longer than {MAX_INDENT:,}")
    pieces = OutputBuffer("tojson")
    for piece in json.JSONEncoder(**kwargs).iterencode(value):
        pieces.append(piece)
    return "".join(pieces)


_LIMITED_FILTERS: dict[str, Callable[[Callable[..., str]], Callable[..., str]]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "int": _strict_number("int"),
    "float": _strict_number("float"),
}


class _LimitedFormatter(SandboxedFormatter):
    """str.format's formatter in the sandbox, counting what it makes."""

    made = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        widths = sum(int(digits) for digits in _digit_runs(format_spec))
        refuse_longer(widths, f"the format {format_spec[:20]!r}")
        formatted = super().format_field(value, format_spec)
        self.made += len(formatted)
        refuse_longer(self.made, "str.format()")
        return formatted


class _LimitedEscapeFormatter(_LimitedFormatter, SandboxedEscapeFormatter):
    """Markup.format's formatter in the sandbox, counting what it makes."""


def _digit_runs(spec: str) -> list[str]:
    """The numbers written in a format spec (a width, a precision)."""
    runs, current = [], ""
    for char in spec + " ":
        if char in string.digits:
            current += char
        elif current:
            runs.append(current)
            current = ""
    return runs


class OutputBuffer(list[str]):
    """Output kept as it is made, refusing more than MAX_TEXT in all: a loop making a long
    text on each pass grows it before anything joins it."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.made = 0

    def append(self, part: str) -> None:
        """Keep ``part``, unless the output grows too long with it."""
        self.made += _length(part)
        refuse_longer(self.made, self.what)
        super().append(part)

    def extend(self, parts: Iterable[str]) -> None:
        """Keep ``parts`` one by one, unless the output grows too long with them."""
        for part in parts:
            self.append(part)


class SizeLimitedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, refusing what would make a value longer than MAX_TEXT in one step."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # functools.wraps keeps Jinja's mark of what a filter takes first (pass_eval_context)
        for name, limited in _LIMITED_FILTERS.items():
            self.filters[name] = limited(self.filters[name])
        self.policies["json.dumps_function"] = _dumps

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """``left operator right``, once its size is known to be within the limits."""
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            check_percent(left, right)
        else:
            _check_sum(left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``obj`` from a template, once a str method's result is known to be short."""
        args = _check_method(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """str.format and format_map (Jinja's sandboxed wrapper) counting what they make."""
        if getattr(value, "__name__", None) not in ("format", "format_map"):
            return None
        text = getattr(value, "__self__", None)
        if not isinstance(text, str):
            return None
        as_map = value.__name__ == "format_map"

        @functools.wraps(value)
        def wrapper(*args: Any, **kwargs: Any) -> str:
            if as_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument, a mapping")
                kwargs, args = args[0], ()
            formatter: _LimitedFormatter  # one per call: it counts what this call makes
            if isinstance(text, Markup):
                formatter = _LimitedEscapeFormatter(self, escape=text.escape)
            else:
                formatter = _LimitedFormatter(self)
            return type(text)(formatter.vformat(text, args, kwargs))

        return wrapper

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Join a template's (or a block's) output, refusing more than MAX_TEXT: each part
        (a str) counted as it comes, in one plain loop, as an OutputBuffer's call a part
        doubled the cost of rendering a letter."""
        if isinstance(parts, OutputBuffer):  # a macro's or block's is measured already
            return "".join(parts)
        kept: list[str] = []
        keep = kept.append
        made = 0
        for part in parts:
            made += len(part)
            if made > MAX_TEXT:
                refuse_longer(made, "the template's output")
            keep(part)
        return "".join(kept)

    @staticmethod
    def output_buffer() -> OutputBuffer:
        """Where a macro, a call or a ``{% set %}`` block writes its output."""
        return OutputBuffer("the output of a macro or block")

    @staticmethod
    def checked_concat(join: Callable[[Any], str], values: tuple[Any, ...]) -> str:
        """``a ~ b ~ ...``: ``join`` of the values, once their length is known to be short."""
        _check_concat(values)
        return join(values)
