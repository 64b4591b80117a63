"""The template catalog: a manifest, template sets, sandboxed Jinja2, variable checks, rendering.

A templates folder holds ``manifest.yaml`` and one folder per template set::

    manifest.yaml           column: Status; sets: {offer: {when: [Offer]}, ...}; skip: {...}
    layout/base.html        shared layout (header, footer, signature), used with {% extends %}
    offer/subject.txt       one line
    offer/body.html         HTML body (autoescaped; CSS inlined after rendering)
    offer/body.txt          text body (derived from the HTML when absent)

A folder with only ``subject.txt`` and ``body.html`` and/or ``body.txt`` and no manifest is a
catalog with one set, ``default``, used for every row; its rows attach their files when the
CSV has an ``Attachment_File`` column (``attachment: by_column``), else none.

Each set says whether rows attach their own file (``attachment: required``, the default, as
the product sends each recipient's PDF), may attach one (``optional``) or never do (``none``).

Recipient data is data: CSV values reach the templates only as context values, never as
template source, in a sandboxed environment with ``StrictUndefined``. HTML templates autoescape;
subject and text templates do not (an apostrophe stays an apostrophe in the Subject).
A CSV cell that is empty and printed as it is (``{{ Name }}``) fails the row instead of
producing "Dear ,"; templates guard optional columns with ``{% if Name %}`` or
``{{ Name or "colleague" }}``.

The CSS of an HTML body is inlined into style attributes after rendering, but not once per
row: rows of a set mostly differ only in the values they print, so the body is rendered with
each escaped value replaced by a slot, that skeleton is inlined once (each catalog keeps the
``SKELETON_CACHE_SIZE`` most recently used), and each row's values are escaped into the
inlined copy as the inliner would have written them. Where a value could change how the page
parses or what the CSS selects (inside <style>, a class, id or style attribute, text a macro or
``{% filter %}`` captures, a value starting with a space, ...), the row is rendered and
inlined by itself.
"""

from __future__ import annotations

import ctypes
import difflib
import logging
import os
import posixpath
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, TypeVar

import css_inline
import jinja2
import jinja2.runtime
import yaml
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from mailmatrix.core.sandbox import GROUPED_THOUSANDS, NotANumber, SizeLimitedSandbox
from mailmatrix.errors import TemplateError

log = logging.getLogger(__name__)

MANIFEST = "manifest.yaml"
# The manifest key that marks the bundled demo templates (a fictional company's letters and
# From): they may go to the outbox, or to domains reserved for examples, and to nobody else.
# Whoever makes the letters their own deletes it.
DEMO_KEY = "demo"
DEFAULT_SET = "default"
SUBJECT_FILE = "subject.txt"
HTML_FILE = "body.html"
TEXT_FILE = "body.txt"
ATTACHMENT_MODES = ("required", "optional", "none")
# The set of a folder without manifest: "required" when the CSV has Attachment_File, else "none".
BY_COLUMN = "by_column"
ATTACHMENT_COLUMN = "Attachment_File"
_SET_KEY_ORDER = ("when", "subject", "html", "text", "attachment", "default_attachment")

# Names every template may use besides the CSV columns: ``row`` is the whole row as a mapping,
# for columns whose names are not identifiers (``row["Start Date"]``).
BUILTIN_NAMES = frozenset({"row"})

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")


@dataclass(frozen=True)
class Rendered:
    """One row's rendered subject, HTML body (or None) and text body."""

    subject: str
    html: str | None
    text: str


@dataclass(frozen=True)
class Choice:
    """Which template set a row's value picks: ``template``, ``skip`` or ``unknown``."""

    kind: str
    template: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TemplateSet:
    """One template set: its files, the column values that pick it, its attachment rule."""

    name: str
    subject: str
    html: str | None
    text: str | None
    values: tuple[str, ...] = ()
    attachment: str = "required"
    default_attachment: str | None = None

    @property
    def files(self) -> list[str]:
        """The set's own template files, subject first."""
        return [p for p in (self.subject, self.text, self.html) if p]


class EmptyField(str):
    """An empty CSV cell: falsy like "", but refused when printed as it is."""

    column: str

    def __new__(cls, column: str) -> EmptyField:
        """Make the empty value of ``column``."""
        value = super().__new__(cls, "")
        value.column = column
        return value


def _not_a_number(path: str, exc: NotANumber, row: Mapping[str, Any]) -> str:
    """The render error of an ``int`` or ``float`` filter that could not read its value, or
    would print it other than the CSV meant, naming the column the value comes from when one
    cell holds it (give or take the punctuation and symbols the template took out), and the
    filters that would turn this value into digits (its own currency signs and separators)."""
    value = str(exc.value)
    bare = _WORD_ONLY.sub("", value)
    columns = [
        name
        for name, cell in row.items()
        if cell == value or (bare and _WORD_ONLY.sub("", str(cell)) == bare)
    ]
    source = f" (from column {columns[0]}: {row[columns[0]]!r})" if len(columns) == 1 else ""
    default = f" | {exc.filter_name}(0)"
    recipe = digits_recipe(value, exc.filter_name)
    if exc.reason == "grouped":
        mark = "." if "." in value else ","
        text = value.strip()
        decimals = float(text.replace(",", "."))
        point = (
            f' (where the column\'s "." are all decimal points, | {exc.filter_name}(decimal=".")'
            " reads it so)"
            if mark == "."
            else ""
        )
        return (
            f"{path}: render: the {exc.filter_name} filter cannot tell whether the"
            f' "{mark}" in {value!r}{source} groups thousands ({text.replace(mark, "")}) or'
            f" marks decimals ({decimals}): write the column in the CSV as digits"
            " with a decimal point at most (a spreadsheet does when its cells are formatted as"
            f" numbers without a thousands separator){point}; a default,{default}, would print"
            f" Jinja's reading, {_jinja_reading(exc)}"
        )
    if exc.reason == "thousands":
        mark = "." if "." in value else ","
        return (
            f"{path}: render: the {exc.filter_name} filter cannot read {value!r}{source}, its"
            f' "{mark}" grouping thousands (Jinja would print {_jinja_reading(exc)}): make the'
            f" template take them out first, for this value {recipe}, or write it in the CSV as"
            f" digits only (a default,{default}, would print {_jinja_reading(exc)})"
        )
    if exc.reason == "fraction":
        return (
            f"{path}: render: the int filter would drop the decimals of {value!r}{source} and"
            f" print {_jinja_reading(exc)}: print the value with | float, or round it first"
            f" (| float | round | int), or write it in the CSV as a whole number (a default,"
            f"{default}, would print {_jinja_reading(exc)})"
        )
    if exc.reason == "not_finite":
        return (
            f"{path}: render: the {exc.filter_name} filter reads {value!r}{source} as no"
            f" number (Jinja would print {_jinja_reading(exc)}): correct the value in the CSV,"
            f" or give the filter a default,{default}, to print {_jinja_reading(exc)} as Jinja"
            " does"
        )
    what = "an empty value" if value == "" else f"{value!r}"
    said = (
        f"{path}: render: the {exc.filter_name} filter cannot read {what}{source} as a number"
        " (Jinja would print 0)"
    )
    if recipe is None:
        return (
            f"{said}: write it in the CSV as digits only (a default,{default}, would print 0"
            " for such values)"
        )
    return (
        f"{said}: make the template turn the value into digits first,"
        f" for this value {recipe}, or write it in the CSV as digits only (a default,"
        f"{default}, would print 0 for such values)"
    )


# Digits, grouped or not, with at most one decimal separator: what digits_recipe can mend.
_SEPARATED = re.compile(r"[+-]?\d+(?:[.,'\s]\d+)*")
# Thousands separators besides "." and ",": the apostrophe (Swiss), spaces (French Excel writes
# a no-break or narrow no-break one), as a Jinja string writes them.
_GROUP_MARKS = {"'": "'", " ": " ", "\u00a0": "\\u00a0", "\u202f": "\\u202f"}


def digits_recipe(value: str, filter_name: str) -> str | None:
    """The filters that make ``value`` digits ``filter_name`` reads as the number it shows
    ("$85,000.00": | replace("$", "") | replace(",", "") | float | int), or None when it shows
    none ("92k", "n/a") or a "." or "," may group thousands or mark decimals ("1,234", not
    "$1,234": money's cents have two digits): each currency sign and thousands separator
    removed, a decimal comma made a point, never a separator removed that may be a decimal one;
    for int, decimals other than 0 rounded."""
    signs = list(dict.fromkeys(char for char in value if unicodedata.category(char) == "Sc"))
    text = value
    for sign in signs:
        text = text.replace(sign, "")
    if not _SEPARATED.fullmatch(text.strip()):
        return None

    digits = text.strip()
    marks = [char for char in digits if char in ".,"]
    thousands = [mark for mark in dict.fromkeys(digits) if mark in _GROUP_MARKS]
    if len(thousands) < len(set(digits) - set("0123456789+-.,")):
        return None  # another space (a tab, an em space): no separator a cell writes
    decimal = None
    if marks:
        last = marks[-1]
        # "1,234", "56.000" for int: thousands, or decimals; money ("$120,000") shows cents
        # with two digits, so a sign's three digits are thousands
        grouped = len(marks) == 1 and bool(GROUPED_THOUSANDS.fullmatch(digits))
        if grouped and not signs:
            return None
        elif marks.count(last) == 1 and not grouped:
            decimal = last
        thousands += [mark for mark in dict.fromkeys(marks) if mark != decimal]
    steps = [f'replace("{sign}", "")' for sign in signs]
    steps += [f'replace("{_GROUP_MARKS.get(mark, mark)}", "")' for mark in thousands]
    if decimal == ",":
        steps.append('replace(",", ".")')
    if text != text.strip():
        steps.append("trim")
    if decimal and filter_name == "int":
        whole = digits.rsplit(decimal, 1)[1].strip("0") == ""
        steps += ["float", "int"] if whole else ["float", "round", "int"]
    else:
        steps.append(filter_name)
    return "| " + " | ".join(steps)


def _jinja_reading(exc: NotANumber) -> str:
    """What Jinja's own filter prints for the value (its default 0 where it cannot read it)."""
    filters = jinja2.filters
    read = filters.do_int(exc.value) if exc.filter_name == "int" else filters.do_float(exc.value)
    return str(read)


_WORD_ONLY = re.compile(r"[\W_]+")


class _EmptyFieldPrinted(Exception):
    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


def _finalize(value: Any) -> Any:
    if isinstance(value, EmptyField):
        raise _EmptyFieldPrinted(value.column)
    return value


# A skeleton prints each escaped value as one slot: a code point of Supplementary Private Use
# Area-A (its index plus _SLOT_BASE). They pass through the HTML parser as they are; a template
# holding one is never rendered as a skeleton.
_SLOT_BASE = 0xF0000
_SLOT_COUNT = 0xFFFFE - _SLOT_BASE
_SLOT = re.compile("[\U000f0000-\U000ffffd]")
_SLOT_SPLIT = re.compile("([\U000f0000-\U000ffffd])")
# Where a skeleton render keeps its printed values: not a name a template can write.
_SLOT_VALUES = "mailmatrix skeleton values"


@jinja2.pass_context
def _print_slot(context: jinja2.runtime.Context, value: Any) -> Any:
    """Record an escaped value and print its slot; print markup, unescaped output and "" as is.

    Taking the context keeps Jinja2 from folding constants at compile time, so every printed
    value comes here. The values list is passed to render, so it is in the context's parent
    (includes and scoped blocks copy it); a template imported without context has none. An
    empty value stays out of slots: a slot is text, and the parser and ``:empty`` tell none
    from some.
    """
    value = _finalize(value)
    values = context.parent.get(_SLOT_VALUES)
    if (
        values is None
        or not context.eval_ctx.autoescape
        or hasattr(value, "__html__")
        or len(values) >= _SLOT_COUNT
    ):
        return value
    text = str(value)
    if not text:
        return text
    values.append(text)
    return chr(_SLOT_BASE + len(values) - 1)


def _flat_globals(template: jinja2.Template) -> jinja2.Template:
    """``template`` with its globals in a plain dict: Jinja keeps them as a ChainMap over the
    environment's, which every render copies key by key in Python (a tenth of a send's CPU);
    a dict is copied in C. The environment's globals never change once it is built."""
    template.globals = dict(template.globals)
    return template


class _UnfoldedCodeGenerator(CodeGenerator):
    """Jinja's code generator, writing no printed expression as its value at compile time.

    Jinja folds constant expressions while it compiles (``{{ 'x' * 300000000 }}``,
    ``{{ 'x'|center(300000000) }}`` become a 300 MB text in the compiled code), outside the
    render's time limit: checking such a template took half a minute and gigabytes. With
    the optimizer off (see _environment) only the text of the template is written as it is;
    every expression is evaluated when a row renders, under the limits.
    """

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData | nodes.Const):
            raise nodes.Impossible()
        return str(super()._output_child_to_const(node, frame, finalize))

    def buffer(self, frame: Frame) -> None:
        """Keep a macro's or block's output in the sandbox's OutputBuffer, which measures it."""
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``a ~ b``, through the sandbox's check of the length it makes (checked_concat)."""
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for value in node.nodes:
            self.visit(value, frame)
            self.write(", ")
        self.write("))")


class _NameTracker(meta.TrackingCodeGenerator, _UnfoldedCodeGenerator):
    """meta.find_undeclared_variables' code generator, which folds no constant either."""

    def __init__(self, environment: jinja2.Environment) -> None:
        super().__init__(environment)
        self.optimizer = None


def _undeclared_names(ast: nodes.Template, environment: jinja2.Environment) -> set[str]:
    """The names ``ast`` takes from the render context (meta.find_undeclared_variables), but
    those it assigns somewhere: Jinja counts a name ``{% set %}`` only inside an ``{% if %}``
    as one the context must give, yet the template's author made it its own."""
    tracker = _NameTracker(environment)
    tracker.visit(ast)
    return tracker.undeclared_identifiers - _assigned_names(ast) - _top_level_names(ast)


def _assigned_names(ast: nodes.Node) -> set[str]:
    """The names a template gives values itself: ``{% set %}`` (a block too), ``{% for %}``
    targets, macro and call arguments, ``{% with %}``."""
    return {node.name for node in ast.find_all(nodes.Name) if node.ctx in ("store", "param")}


def _top_level_names(ast: nodes.Template) -> set[str]:
    """The macros a template defines, and the names it imports, outside any block: Jinja counts
    them as the context's where a child template's blocks use them, yet the child's top level
    runs before its blocks and gives them."""
    found: set[str] = set()
    for node in ast.body:
        if isinstance(node, nodes.Macro):
            found.add(node.name)
        elif isinstance(node, nodes.Import):
            found.add(node.target)
        elif isinstance(node, nodes.FromImport):
            found |= {name[1] if isinstance(name, tuple) else name for name in node.names}
    return found


class _Sandbox(SizeLimitedSandbox):
    """The sandbox, compiling without folding constants (_UnfoldedCodeGenerator)."""

    code_generator_class = _UnfoldedCodeGenerator


def _environment(sources: dict[str, str], finalize: Any) -> SandboxedEnvironment:
    return _Sandbox(
        loader=jinja2.DictLoader(sources),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        optimized=False,  # no folding of constants at compile time: see _UnfoldedCodeGenerator
    )


@dataclass
class Catalog:
    """The template sets of a campaign, compiled lazily in sandboxed environments."""

    sets: dict[str, TemplateSet]
    column: str | None = None
    sender: str | None = None
    skip: dict[str, str] = field(default_factory=dict)
    demo: bool = False  # the manifest says ``demo: true``: the bundled demo's letters
    context: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    # Whether validation withdraws a row whose own file is named like another recipient's
    # letter (``check_file_names: false`` in the manifest turns it off).
    check_file_names: bool = True
    # Whether validation rejects a row whose printed cell has ? in place of a letter, as a
    # spreadsheet's plain CSV writes for each letter it cannot encode
    # (``check_question_marks: false`` in the manifest turns it off).
    check_question_marks: bool = True

    def __post_init__(self) -> None:
        self._env = _environment(self.sources, _finalize)
        # Names the render context holds besides columns and constants: ``row`` and the
        # environment's functions (range, dict...); a column of such a name would replace one.
        self._reserved = BUILTIN_NAMES | self._env.globals.keys()
        # The same templates again, printing values as slots for the HTML skeleton.
        self._skeleton_env = _environment(self.sources, _print_slot)
        self._by_value: dict[str, str] = {}
        self._compiled: dict[tuple[str, bool], jinja2.Template] = {}
        self._in_place: dict[str, bool] = {}
        self._number_reads: dict[str, list[_NumberRead]] = {}
        self._skeletons = _SkeletonCache(SKELETON_CACHE_SIZE)
        # Per set: how many rows ran out of time, and when the last one did.
        self._too_slow: dict[str, tuple[int, float]] = {}
        self._slow_lock = threading.Lock()
        for tset in self.sets.values():
            for value in tset.values:
                self._by_value[_fold(value)] = tset.name
        self._skip = {_fold(value): reason for value, reason in self.skip.items()}

    @property
    def names(self) -> list[str]:
        """The template set names, in manifest order."""
        return list(self.sets)

    def choose(self, value: str | None) -> Choice:
        """Pick the template set for a row's value of ``column`` (compared case-insensitively)."""
        if self.column is None:
            return Choice("template", template=next(iter(self.sets)))

        key = _fold(value or "")
        if key in self._skip:
            return Choice("skip", reason=self._skip[key])
        if key in self._by_value:
            return Choice("template", template=self._by_value[key])
        known = [v for s in self.sets.values() for v in s.values] + list(self.skip)
        shown = (value or "").strip()
        what = f"unknown {self.column} value {shown!r}" if shown else f"{self.column} is empty"
        return Choice("unknown", reason=f"{what} (expected one of: {', '.join(known)})")

    def attachment_need(self, columns: Iterable[str]) -> str | None:
        """Why rows of a file with these (normalised) columns may attach files, or None when
        none can: then no attachments folder is needed."""
        has_column = ATTACHMENT_COLUMN in set(columns)
        for tset in self.sets.values():
            if tset.attachment == "required":
                return f"template set {tset.name!r} attaches a file to each row"
            if tset.default_attachment and tset.attachment != "none":
                return f"template set {tset.name!r} attaches {tset.default_attachment}"
            if has_column and tset.attachment in ("optional", BY_COLUMN):
                return f"the file has an {ATTACHMENT_COLUMN} column"
        return None

    def needs_attachment(self, template: str) -> bool:
        """Whether every row of ``template`` must name its own attachment."""
        return self._set(template).attachment == "required"

    def attachment_mode(self, template: str) -> str:
        """``required``, ``optional`` (attach when the row names a file) or ``none``."""
        return self._set(template).attachment

    def default_attachment(self, template: str) -> str | None:
        """The file attached when a row of ``template`` names none (or None)."""
        return self._set(template).default_attachment

    def variables(self, template: str) -> set[str]:
        """Every CSV column the set's templates (and their layouts) use."""
        used: set[str] = set()
        for names in self._variables_by_file(self._set(template)).values():
            used |= names
        return used - self._reserved - set(self.context)

    def used_columns(self) -> set[str]:
        """Every column a template of any set uses: by its name (``{{ Cc }}``) or through
        ``row`` (``row["Cc (optional)"]``, ``row.get("cc:")``). Templates that do not compile
        use none (``check`` says what is wrong with them)."""
        used: set[str] = set()
        for tset in self.sets.values():
            try:
                by_file = self._variables_by_file(tset)
            except TemplateError:
                continue
            for path, names in by_file.items():
                used |= names | _row_keys(self._env.parse(self.sources[path], name=path))
        return used - self._reserved - set(self.context)

    def subject_warnings(self) -> list[str]:
        """One warning for each subject template written on several lines: a subject is one
        line, so its lines are joined, which the template's author may not expect."""
        said = []
        for path in dict.fromkeys(tset.subject for tset in self.sets.values()):
            lines = self.sources.get(path, "").strip().splitlines()
            if len(lines) > 1:
                said.append(
                    f"{path}: the subject template spans {len(lines)} lines; they are joined"
                    " into one subject line, a space between them"
                )
        return said

    def required_columns(self, template: str) -> set[str]:
        """Columns the set prints unguarded (``{{ Start_Date }}`` outside ``{% if Start_Date %}``).

        A row whose value is empty in one of them cannot be rendered: validation rejects it.
        """
        required: set[str] = set()
        for path in self._variables_by_file(self._set(template)):
            ast = self._env.parse(self.sources[path], name=path)
            required |= _printed_names(ast, frozenset())
        return required - self._reserved - set(self.context)

    def number_failure(self, template: str, fields: Mapping[str, str]) -> str | None:
        """The error rendering ``fields`` with the set ``template`` fails with when a column's
        value is one its ``int`` or ``float`` filter (given no default) cannot read, else None.

        A set's first rows are rendered whole at validation; the values of each later row are
        only put through the expressions reading a column as a number (``Salary | replace(",",
        "") | int``), a few microseconds, and a row whose value fails one is rendered whole,
        so that it is rejected only where the send would fail, with the send's words.
        """
        reads = self._number_reads.get(template)
        if reads is None:
            reads = self._number_reads[template] = self._find_number_reads(self._set(template))
        for read in reads:
            if read.column not in fields:
                continue
            value = fields[read.column]
            try:
                read.apply(self._env, EmptyField(read.column) if value == "" else value)
            except Exception:  # whatever fails, the whole render says whether the send would
                try:
                    self.render(template, fields)
                except TemplateError as exc:
                    return exc.message
                return None
        return None

    def _find_number_reads(self, tset: TemplateSet) -> list[_NumberRead]:
        """The expressions of the set's files (layouts too) that read a column as a number."""
        reads: list[_NumberRead] = []
        own = self._reserved | set(self.context)
        for path in self._variables_by_file(tset):
            ast = self._env.parse(self.sources[path], name=path)
            assigned = _assigned_names(ast)
            aliases = _aliases(ast, own | assigned, "row" in assigned)
            for node in ast.find_all(nodes.Filter):
                for read in _number_reads(node, own | assigned, "row" in assigned, aliases):
                    if read not in reads:
                        reads.append(read)
        return reads

    def check_columns(self, columns: Iterable[str]) -> list[str]:
        """Compile every template; return one message per problem (empty: all good)."""
        broken, unfit = self.check(columns)
        return broken + unfit

    def check(
        self, columns: Iterable[str], sets: Collection[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """Compile every template; return one message per problem, those of templates that do
        not compile (a syntax error, a template that does not exist) apart from those of
        templates that do not fit ``columns``: of every set, or of ``sets`` only (a set no row
        of a file picks needs none of its columns)."""
        columns = list(columns)
        available = set(columns)
        problems: list[str] = []
        broken: list[str] = []
        if self.column is not None and self.column not in available:
            folded = {name.casefold(): name for name in columns}
            close = difflib.get_close_matches(self.column.casefold(), folded, n=1, cutoff=0.6)
            meant = f"did you mean {folded[close[0]]!r}? " if close else ""
            problems.append(
                f"{MANIFEST}: column {self.column!r} picks the template set but is not a CSV "
                f"column ({meant}available: {', '.join(columns)})"
            )

        unknown: dict[str, list[str]] = {}
        used: set[str] = set()  # every name the templates use
        constants = set(self.context)
        # Constants a column of the same name would replace in the render context -> the
        # files that use them.
        shadowed: dict[str, list[str]] = {}
        for tset in self.sets.values():
            try:
                by_file = self._variables_by_file(tset)
            except TemplateError as exc:
                if exc.message not in broken:
                    broken.append(exc.message)
                continue
            for path, names in by_file.items():
                used |= names
                missing = sorted(names - available - constants - self._reserved)
                if sets is not None and tset.name not in sets:
                    continue
                if missing and path not in unknown:
                    unknown[path] = missing
                for name in names & (constants | self._reserved) & available:
                    users = shadowed.setdefault(name, [])
                    if path not in users:
                        users.append(path)
        problems.extend(
            _shadowed_constant(n, shadowed[n], constants) for n in columns if n in shadowed
        )
        if unknown:
            listed = "; ".join(f"{path}: {', '.join(names)}" for path, names in unknown.items())
            hints = _suggestions({n for names in unknown.values() for n in names}, columns, used)
            problems.append(f"{listed} — not CSV columns (available: {', '.join(columns)}){hints}")
        return broken, problems

    def check_set(self, template: str, columns: Iterable[str]) -> list[str]:
        """The problems of the set ``template``'s templates with ``columns`` (empty: none)."""
        broken, unfit = self.check(columns, sets=(template,))
        return broken + unfit

    def render(self, template: str, fields: Mapping[str, str]) -> Rendered:
        """Render the set ``template`` for one row; raise TemplateError naming what failed.

        A row's rendering may take RENDER_SECONDS: a template that loops for ever fails its
        row instead of holding the batch, and the run, for ever.
        """
        tset = self._set(template)
        context = self._context(fields)
        slow, last = self._too_slow.get(template, (0, 0.0))
        if slow >= SLOW_ROWS_BEFORE_GIVING_UP and time.monotonic() - last < GIVE_UP_SECONDS:
            raise TemplateError(
                f"{template}: render: took more than {RENDER_SECONDS:g} s on {slow} rows; "
                f"not rendered for {GIVE_UP_SECONDS / 60:g} minutes (a loop without end?)"
            )
        try:
            rendered = _watchdog.run(RENDER_SECONDS, lambda: self._render_parts(tset, context))
        except _RenderTooLong:
            with self._slow_lock:
                count = self._too_slow.get(template, (0, 0.0))[0]
                self._too_slow[template] = (count + 1, time.monotonic())
            raise TemplateError(
                f"{template}: render: took more than {RENDER_SECONDS:g} s (a loop without end?)"
            ) from None
        if not rendered.subject:
            raise TemplateError(f"{tset.subject}: render: the subject is empty")
        return rendered

    def _render_parts(self, tset: TemplateSet, context: dict[str, Any]) -> Rendered:
        subject = _one_line(self._render_file(tset.subject, context))
        html = self._render_html(tset.html, context) if tset.html else None
        if tset.text:
            text = _clean_text(self._render_file(tset.text, context))
        else:
            text = html_to_text(html or "")
        return Rendered(subject=subject, html=html, text=text)

    def _set(self, template: str) -> TemplateSet:
        try:
            return self.sets[template]
        except KeyError:
            raise TemplateError(
                f"templates: unknown template set {template!r} (known: {', '.join(self.sets)})"
            ) from None

    def _context(self, fields: Mapping[str, str]) -> dict[str, Any]:
        row = {k: (EmptyField(k) if v is None or v == "" else v) for k, v in fields.items()}
        return {**self.context, **row, "row": row}

    def _render_html(self, path: str, context: dict[str, Any]) -> str:
        """Render an HTML body and inline its CSS, running the inliner once per skeleton.

        The skeleton is the body with each printed value replaced by a slot. Rows of a set
        usually share it, so it is inlined once and each row's values are put back into the
        inlined copy, escaped as the inliner writes them. A skeleton, or a row's value, for
        which that could differ from inlining the row itself takes that path instead.
        """
        if not self._prints_in_place(path):
            return self._render_and_inline(path, context)

        values: list[str] = []
        skeleton = self._render_file(path, {**context, _SLOT_VALUES: values}, skeleton=True)
        inlined = self._skeletons.get(skeleton, len(values))
        if inlined is not None:
            html = inlined.fill(values)
            if html is not None:
                return html

        filled = _fill_escaped(skeleton, values)
        if filled is None:  # a value printed as it is (|safe) held slot characters
            return self._render_and_inline(path, context)
        return _inline_css(filled, path)

    def _render_and_inline(self, path: str, context: dict[str, Any]) -> str:
        """Render an HTML body and inline its CSS: what every row did before skeletons."""
        return _inline_css(self._render_file(path, context), path)

    def _prints_in_place(self, path: str) -> bool:
        """Whether every value the HTML template prints reaches the page as it was printed.

        Text printed inside a macro, ``{% filter %}``, ``{% set %}...{% endset %}``,
        ``{% call %}``, a recursive loop, an import with context, or through ``self`` or a
        ``super()`` that is not printed as it is can be changed before it reaches the page
        (``{{ m()|upper }}``), so a slot there could not be filled later. Layouts and included
        templates are checked too.
        """
        known = self._in_place.get(path)
        if known is None:
            known = self._in_place[path] = self._check_in_place(path)
        return known

    def _check_in_place(self, path: str) -> bool:
        pending, seen, styled = [path], set[str](), False
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            # A layout compiled without autoescape would print a slot's value unescaped.
            source = self.sources.get(name)
            if source is None or _SLOT.search(source) or not self._autoescaped(name):
                return False
            styled = styled or "<style" in source.lower()
            try:
                ast = self._skeleton_env.parse(source, name=name)
            except jinja2.TemplateSyntaxError:
                return False  # rendering reports it
            referenced = _printed_in_place(ast)
            if referenced is None:
                return False
            pending.extend(referenced)
        # Without a <style> block there is nothing to inline: rendering directly is cheaper.
        return styled

    def _autoescaped(self, name: str) -> bool:
        autoescape = self._env.autoescape
        return bool(autoescape(name) if callable(autoescape) else autoescape)

    def _render_file(self, path: str, context: dict[str, Any], skeleton: bool = False) -> str:
        try:
            template = self._compiled.get((path, skeleton))
            if template is None:
                env = self._skeleton_env if skeleton else self._env
                template = self._compiled[(path, skeleton)] = _flat_globals(env.get_template(path))
            return template.render(context)
        except _EmptyFieldPrinted as exc:
            raise TemplateError(
                f"{path}: render: {exc.column} is empty in this row but the template prints it"
            ) from None
        except NotANumber as exc:
            raise TemplateError(_not_a_number(path, exc, context.get("row") or {})) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{path}: render: {exc.message}") from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"{path}: render: refused by the sandbox: {exc}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(_syntax_message(exc, path)) from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{path}: render: {exc}") from exc
        except (_RenderTooLong, TemplateError):
            raise
        except Exception as exc:  # the template's own logic: 1 // 0, deep recursion, ...
            raise TemplateError(f"{path}: render: {type(exc).__name__}: {exc}") from exc

    def _variables_by_file(self, tset: TemplateSet) -> dict[str, set[str]]:
        """Map each file the set uses (its own and every layout it pulls in) to the names it
        takes from the render context: CSV columns, the manifest's constants, the reserved
        names (``_reserved``)."""
        found: dict[str, set[str]] = {}
        pending = list(tset.files)
        while pending:
            path = pending.pop(0)
            if path in found:
                continue
            if path not in self.sources:
                raise TemplateError(f"{tset.name}: template {path!r} does not exist")
            try:
                ast = self._env.parse(self.sources[path], name=path)
                # Compiled now, not at the first row: Python refuses some sources Jinja
                # parses (too deeply nested blocks), and every row would fail at sending.
                self._env.compile(ast, name=path, filename=path)
                # and the environment's globals it calls (range, dict...), which a column of
                # the same name would replace
                names = _undeclared_names(ast, self._env) | (
                    {node.name for node in ast.find_all(nodes.Name) if node.ctx == "load"}
                    & self._env.globals.keys()
                )
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(_syntax_message(exc, path)) from exc
            except (RecursionError, SyntaxError, MemoryError) as exc:  # nesting too deep
                raise TemplateError(f"{path}: cannot compile: {type(exc).__name__}: {exc}") from exc
            found[path] = names
            for ref in meta.find_referenced_templates(ast):
                if ref is None:
                    log.debug("template %s refers to a template by a computed name", path)
                else:
                    pending.append(ref)
        return found


class _ManifestLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping: PyYAML keeps the last,
    so a set written twice (say, ``offer:`` again lower down, with other Status values)
    silently replaced the first, and rows got another letter than the one the file reads.

    The values compared with CSV cells (``when``, ``skip``), the column's and the sets' names
    and the skip reasons are read as the text written (_as_written): YAML 1.1 reads ``Yes``
    and ``No`` as booleans, ``01`` as 1 and ``1.0`` as a float, so ``when: [Yes]`` matched the
    cells that read "True" and rejected every row that read "Yes".
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _as_written(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is written twice in one mapping (lines {seen[key]} and {line}):"
                    " keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_TEXT_TAG = "tag:yaml.org,2002:str"


def _as_written(manifest: yaml.Node) -> None:
    """Tag as text, before they are constructed, the manifest's scalars that are names or
    cells' values: ``column`` (but a null one: no column), the names of ``sets`` and each one's
    ``when`` values, ``skip``'s values and reasons."""
    for key, value in _entries(manifest):
        if key == "column" and value.tag != "tag:yaml.org,2002:null":
            _text(value)
        elif key == "sets":
            for name, spec in _mapping(value):
                _text(name)
                for field_name, values in _entries(spec):
                    if field_name == "when":
                        _each_text(values)
        elif key == "skip":
            for skipped, reason in _mapping(value):
                _text(skipped)
                _text(reason, empty=True)


def _mapping(node: yaml.Node | None) -> list[tuple[yaml.Node, yaml.Node]]:
    """The (key, value) nodes of a mapping node; none of any other node, or of none."""
    return list(node.value) if isinstance(node, yaml.MappingNode) else []


def _entries(node: yaml.Node | None) -> Iterator[tuple[str, yaml.Node]]:
    """The (key as written, value node) of a mapping node's scalar keys."""
    for key, value in _mapping(node):
        if isinstance(key, yaml.ScalarNode):
            yield key.value, value


def _each_text(node: yaml.Node) -> None:
    """Tag as text a scalar, or each scalar of a sequence."""
    for item in node.value if isinstance(node, yaml.SequenceNode) else [node]:
        _text(item)


def _text(node: yaml.Node, *, empty: bool = False) -> None:
    """Tag a scalar as text; a plain empty one stays null (an empty ``when`` value is refused,
    not taken for the empty cell) unless ``empty`` takes it as ""."""
    if isinstance(node, yaml.ScalarNode) and (node.value or node.style or empty):
        node.tag = _TEXT_TAG


def load_catalog(files: Mapping[str, str]) -> Catalog:
    """Build the catalog from ``files``: path relative to the templates root -> text."""
    sources = {_normalise_path(p): text for p, text in files.items()}
    templates = {p: t for p, t in sources.items() if p.endswith((".html", ".htm", ".txt"))}
    if MANIFEST not in sources:
        return _single_set(templates)

    try:
        manifest = yaml.load(sources[MANIFEST], Loader=_ManifestLoader) or {}  # a safe loader
    except yaml.YAMLError as exc:
        raise TemplateError(_yaml_message(exc, sources[MANIFEST])) from exc
    if not isinstance(manifest, dict):
        raise TemplateError(f"{MANIFEST}: must be a mapping, got {type(manifest).__name__}")
    _check_keys(manifest, _MANIFEST_KEYS, sources[MANIFEST])

    raw_sets = manifest.get("sets") or {}
    if not isinstance(raw_sets, dict) or not raw_sets:
        raise TemplateError(f"{MANIFEST}: 'sets' must map set names to their settings")
    sets = {
        name: _template_set(str(name), spec, templates, sources[MANIFEST])
        for name, spec in raw_sets.items()
    }
    column = manifest.get("column", "Status")
    if isinstance(column, (list, dict)):
        raise TemplateError(
            f"{MANIFEST}: 'column' must be one column name, as the CSV header writes it (e.g."
            " column: Status), not a list or a mapping"
        )
    if column is not None:
        column = str(column)
    skip = manifest.get("skip") or {}
    if not isinstance(skip, dict):
        raise TemplateError(f"{MANIFEST}: 'skip' must map a column value to a reason")
    if None in skip:
        raise TemplateError(
            f"{MANIFEST}: 'skip' lists an empty value: write each value as the cells hold it"
            ' ("" in quotes for an empty cell)'
        )
    context = manifest.get("context") or {}
    if not isinstance(context, dict):
        raise TemplateError(f"{MANIFEST}: 'context' must map names to constant values")
    _check_values(sets, {str(k): str(v) for k, v in skip.items()}, column)

    sender = manifest.get("sender")
    return Catalog(
        sets=sets,
        column=column,
        sender=str(sender) if sender else None,
        skip={str(k): str(v) for k, v in skip.items()},
        demo=_demo_marker(manifest),
        context={str(k): v for k, v in context.items()},
        sources=templates,
        check_file_names=_switch(
            manifest,
            "check_file_names",
            "send a row whose file is named like another recipient's letter",
        ),
        check_question_marks=_switch(
            manifest,
            "check_question_marks",
            "send a row whose printed text has ? in place of a letter",
        ),
    )


def _switch(manifest: dict[Any, Any], key: str, off: str) -> bool:
    """The manifest's check named ``key``: true unless it says false (``off`` says what
    false does)."""
    value = manifest.get(key, True)
    if not isinstance(value, bool):
        raise TemplateError(f"{MANIFEST}: '{key}' must be true or false (false: {off})")
    return value


_MANIFEST_KEYS = (
    "column",
    "sender",
    "context",
    "sets",
    "skip",
    "check_file_names",
    "check_question_marks",
    DEMO_KEY,
)


def _yaml_message(exc: yaml.YAMLError, text: str) -> str:
    """The manifest's YAML error as "where: what", with the line, and a hint for the usual
    slips (a tab; a line indented unlike its neighbours)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"{MANIFEST}: not valid YAML: {str(exc).replace('<unicode string>', MANIFEST)}"
    line = mark.line + 1
    written = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    context = getattr(exc, "context", None)
    said = f"{context}, {problem}" if context else problem
    hint = ""
    if "\t" in written:
        hint = "; indent with spaces: YAML refuses tabs"
    elif isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError)):
        hint = f"; check the indentation of line {line} against the line above"
    shown = f": {written.strip()!r}" if written.strip() else ""
    return f"{MANIFEST}, line {line}: not valid YAML: {said}{shown}{hint}"


def _check_keys(
    mapping: dict[Any, Any], allowed: Collection[str], text: str, set_name: str | None = None
) -> None:
    """Refuse keys of ``mapping`` not ``allowed``, with the line of each in the manifest's
    ``text`` and the closest allowed one (``set_name``: the mapping is that set's, else the
    manifest's top)."""
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if not unknown:
        return
    lines = _key_lines(text, set_name)
    said = []
    for key in unknown:
        line = f" on line {lines[key]}" if key in lines and len(unknown) > 1 else ""
        close = difflib.get_close_matches(key.casefold(), allowed, n=1, cutoff=0.6)
        said.append(f"{key!r}{line}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    keys = "keys" if len(unknown) > 1 else "key"
    where = MANIFEST
    if len(unknown) == 1 and unknown[0] in lines:  # where, as a YAML slip is told
        where += f", line {lines[unknown[0]]}"
    if set_name is not None:
        where += f": set {set_name!r}"
    raise TemplateError(
        f"{where}: unknown {keys} {', '.join(said)}; the keys allowed here are {', '.join(allowed)}"
    )


def _key_lines(text: str, set_name: str | None) -> dict[str, int]:
    """The line of each key, as written, of the manifest's top mapping in ``text`` (or of the
    set ``set_name``'s). Read again only to say where a key is wrong: the mappings the
    manifest loads into keep no lines."""
    node: yaml.Node | None = yaml.compose(text, Loader=_ManifestLoader)
    if set_name is not None:
        sets = next((value for key, value in _entries(node) if key == "sets"), None)
        node = next((value for key, value in _entries(sets) if key == set_name), None)
    return {
        key.value: key.start_mark.line + 1
        for key, _ in _mapping(node)
        if isinstance(key, yaml.ScalarNode)
    }


def _demo_marker(manifest: dict[Any, Any]) -> bool:
    """Whether the manifest marks the demo templates (``demo: true``)."""
    marker = manifest.get(DEMO_KEY, False)
    if not isinstance(marker, bool):
        raise TemplateError(
            f"{MANIFEST}: '{DEMO_KEY}' must be true (the bundled demo templates) or false;"
            f" letters of your own need no '{DEMO_KEY}' line"
        )
    return marker


def marks_demo(manifest_text: str) -> bool:
    """Whether the text of a manifest marks the demo templates. One that does not read as a
    manifest marks nothing: validation refuses it (load_catalog says why)."""
    try:
        manifest = yaml.load(manifest_text, Loader=_ManifestLoader)
        return isinstance(manifest, dict) and _demo_marker(manifest)
    except (yaml.YAMLError, TemplateError):
        return False


def _single_set(templates: dict[str, str]) -> Catalog:
    html = HTML_FILE if HTML_FILE in templates else None
    text = TEXT_FILE if TEXT_FILE in templates else None
    if SUBJECT_FILE not in templates or not (html or text):
        raise TemplateError(
            f"templates: no {MANIFEST}, and no {SUBJECT_FILE} with {HTML_FILE} and/or "
            f"{TEXT_FILE} at the top (found: {', '.join(sorted(templates)) or 'nothing'})"
        )
    tset = TemplateSet(
        name=DEFAULT_SET, subject=SUBJECT_FILE, html=html, text=text, attachment=BY_COLUMN
    )
    return Catalog(sets={DEFAULT_SET: tset}, column=None, sources=templates)


def _template_set(name: str, spec: Any, templates: dict[str, str], manifest: str) -> TemplateSet:
    where = f"{MANIFEST}: set {name!r}"
    if not isinstance(spec, dict):
        raise TemplateError(f"{where}: must be a mapping with at least 'when'")
    _check_keys(spec, _SET_KEY_ORDER, manifest, name)

    values = spec.get("when", [])
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, list):
        raise TemplateError(f"{where}: 'when' must be a value or a list of values")
    for value in values:
        if not isinstance(value, str):
            kind = "a list" if isinstance(value, list) else "a mapping"
            what = "an empty value" if value is None else f"{kind}, not a value"
            raise TemplateError(
                f"{where}: 'when' lists {what}: write each value as the cells hold it"
                ' ("" in quotes for an empty cell)'
            )

    def file(key: str, default: str) -> str | None:
        path = _normalise_path(str(spec.get(key) or posixpath.join(name, default)))
        if spec.get(key) and path not in templates:
            raise TemplateError(f"{where}: {key} file {path!r} does not exist")
        return path if path in templates else None

    subject, html, text = (
        file("subject", SUBJECT_FILE),
        file("html", HTML_FILE),
        file("text", TEXT_FILE),
    )
    if subject is None:
        raise TemplateError(
            f"{where}: no subject template ({name}/{SUBJECT_FILE})"
            + _folder_case(name, SUBJECT_FILE, templates)
        )
    if html is None and text is None:
        raise TemplateError(
            f"{where}: no body ({name}/{HTML_FILE} or {name}/{TEXT_FILE})"
            + _folder_case(name, TEXT_FILE, templates)
        )
    attachment = str(spec.get("attachment", "required"))
    if attachment not in ATTACHMENT_MODES:
        raise TemplateError(f"{where}: attachment must be one of {', '.join(ATTACHMENT_MODES)}")
    default_attachment = spec.get("default_attachment")
    return TemplateSet(
        name=name,
        subject=subject,
        html=html,
        text=text,
        values=tuple(str(v) for v in values),
        attachment=attachment,
        default_attachment=str(default_attachment) if default_attachment else None,
    )


def _folder_case(name: str, file: str, templates: Collection[str]) -> str:
    """What to add to "no NAME/FILE" when the templates hold a folder spelt like NAME in
    another case (``einladung/`` for the set Einladung): "" when they do not."""
    folders = {path.split("/", 1)[0] for path in templates if "/" in path}
    like = sorted(f for f in folders if f != name and f.casefold() == name.casefold())
    if not like:
        return ""
    return (
        f": the folder is {like[0]}/, spelt in another case than the set {name!r}; rename the"
        f" folder to {name}/, or the set to {like[0]} (folder names count case)"
    )


def _check_values(sets: dict[str, TemplateSet], skip: dict[str, str], column: str | None) -> None:
    seen: dict[str, str] = {}
    for tset in sets.values():
        if column is not None and not tset.values:
            raise TemplateError(f"{MANIFEST}: set {tset.name!r}: 'when' lists no {column} value")
        for value in tset.values:
            key = _fold(value)
            if key in seen:
                raise TemplateError(
                    f"{MANIFEST}: {column} value {value!r} picks both {seen[key]!r} "
                    f"and {tset.name!r}"
                )
            seen[key] = tset.name
    for value in skip:
        if _fold(value) in seen:
            raise TemplateError(
                f"{MANIFEST}: {column} value {value!r} is both skipped and picks "
                f"{seen[_fold(value)]!r}"
            )
    if column is None and len(sets) != 1:
        raise TemplateError(f"{MANIFEST}: 'column' is null, so exactly one set is allowed")


# Filters a template applies: each a name, its constant arguments and keyword arguments.
_Filters = tuple[tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...]], ...]


@dataclass(frozen=True)
class _NumberRead:
    """An ``int`` or ``float`` filter given no default, reading ``column`` through ``filters``
    (each a name, its constant arguments and keyword arguments), innermost first."""

    column: str
    filters: _Filters

    def apply(self, environment: jinja2.Environment, value: Any) -> Any:
        """Put ``value`` through the filters, as rendering does; raise what they raise."""
        for name, args, kwargs in self.filters:
            value = environment.call_filter(name, value, args, dict(kwargs))
        return value


# A name the template sets to a column read (``{% set pay = Salary %}``): its column, filters.
_Aliases = dict[str, list[tuple[str, _Filters]]]


def _number_reads(
    node: nodes.Filter, own: Collection[str], row_set: bool, aliases: _Aliases
) -> list[_NumberRead]:
    """The reads of a column as a number ``node`` is (``Salary | trim | int``, ``row["Pay"] |
    float``, ``row.Pay | int``, ``row.get("Pay") | int``, ``pay | int`` after ``{% set pay =
    Salary %}``, ``Rate | float(decimal=".")``), when only filters given constants stand
    between the column and it; else none. Names in ``own`` (the template's own, the
    manifest's constants) are no columns; nor is what ``row`` gives when the template sets
    ``row`` itself (``row_set``). A macro's arguments and a loop's variables are not followed
    to a column."""
    # A default (an argument) keeps Jinja's reading: no read to check; decimal="." does not
    if node.name not in ("int", "float") or node.args:
        return []
    if any(keyword.key != "decimal" for keyword in node.kwargs):
        return []
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return []
    chain = _filter_chain(node)
    if chain is None:
        return []
    source, filters = chain
    if isinstance(source, nodes.Name) and source.ctx == "load" and source.name in aliases:
        return [_NumberRead(column, first + filters) for column, first in aliases[source.name]]
    column = _column_read(source, own, row_set)
    return [] if column is None else [_NumberRead(column, filters)]


def _filter_chain(node: nodes.Node) -> tuple[nodes.Node, _Filters] | None:
    """What ``node``'s filters read, and those filters (each a name, its constant arguments
    and keyword arguments), innermost first; None when a filter is given no constant."""
    filters: list[tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...]]] = []
    current: nodes.Node | None = node
    while isinstance(current, nodes.Filter):
        keywords: list[Any] = list(current.kwargs)  # Keyword nodes (typed as Pair)
        args = _constants(current.args)
        values = _constants(keyword.value for keyword in keywords)
        if current.node is None or args is None or values is None:
            return None
        if current.dyn_args is not None or current.dyn_kwargs is not None:
            return None
        kwargs = tuple(zip((str(keyword.key) for keyword in keywords), values, strict=True))
        filters.insert(0, (current.name, args, kwargs))
        current = current.node
    return (current, tuple(filters)) if current is not None else None


def _column_read(node: nodes.Node, own: Collection[str], row_set: bool) -> str | None:
    """The column ``node`` reads: ``Salary``, ``row["Salary"]``, ``row.Salary`` or
    ``row.get("Salary")``; else None."""
    if isinstance(node, nodes.Name):
        return node.name if node.ctx == "load" and node.name not in own else None
    if row_set:
        return None
    keys: set[str] = set()
    if isinstance(node, nodes.Getitem) and _of_row(node):
        keys = _text_of(node.arg)
    elif isinstance(node, nodes.Getattr) and _of_row(node) and node.attr not in _MAPPING_METHODS:
        keys = {node.attr}
    elif isinstance(node, nodes.Call) and node.args and _is_row_get(node.node):
        keys = _text_of(node.args[0])
    return keys.pop() if keys else None


def _is_row_get(node: nodes.Node) -> bool:
    """Whether ``node`` is ``row.get``."""
    return isinstance(node, nodes.Getattr) and _of_row(node) and node.attr == "get"


def _aliases(ast: nodes.Template, own: Collection[str], row_set: bool) -> _Aliases:
    """The names ``ast`` sets to a column read (``{% set pay = Salary %}``, filters given
    constants allowed), each with the column and filters of every such ``{% set %}``."""
    found: _Aliases = {}
    for assign in ast.find_all(nodes.Assign):
        if not isinstance(assign.target, nodes.Name):
            continue
        chain = _filter_chain(assign.node)
        column = _column_read(chain[0], own, row_set) if chain else None
        if chain is not None and column is not None:
            found.setdefault(assign.target.name, []).append((column, chain[1]))
    return found


def _constants(expressions: Iterable[nodes.Node]) -> tuple[Any, ...] | None:
    """The values of ``expressions`` when each is a constant, else None."""
    values = []
    for expression in expressions:
        if not isinstance(expression, nodes.Const):
            return None
        values.append(expression.value)
    return tuple(values)


def _printed_names(node: nodes.Node, guarded: frozenset[str]) -> set[str]:
    """Names printed by ``{{ name }}`` (or ``{{ name|filter }}``) outside an ``if`` on them."""
    found: set[str] = set()
    if isinstance(node, nodes.If):
        tested = [node.test, *node.test.find_all(nodes.Name)]
        guarded = guarded | {n.name for n in tested if isinstance(n, nodes.Name)}
    if isinstance(node, nodes.Output):
        for expr in node.nodes:
            inner = expr
            while isinstance(inner, nodes.Filter) and inner.node is not None:
                inner = inner.node
            if isinstance(inner, nodes.Name) and inner.name not in guarded:
                found.add(inner.name)
    for child in node.iter_child_nodes():
        found |= _printed_names(child, guarded)
    return found


# What a template may call on ``row``, the mapping: not names of columns.
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})


def _row_keys(ast: nodes.Template) -> set[str]:
    """The columns a template reads through ``row``: ``row["X"]``, ``row.X``, ``row.get("X")``."""
    found = {
        node.attr
        for node in ast.find_all(nodes.Getattr)
        if _of_row(node) and node.attr not in _MAPPING_METHODS
    }
    for item in ast.find_all(nodes.Getitem):
        if _of_row(item):
            found |= _text_of(item.arg)
    for call in ast.find_all(nodes.Call):
        callee = call.node
        if _is_row_get(callee):
            found |= _text_of(call.args[0]) if call.args else set()
    return found


def _of_row(node: nodes.Getattr | nodes.Getitem) -> bool:
    """Whether ``node`` takes an attribute or an item of the name ``row``."""
    return isinstance(node.node, nodes.Name) and node.node.name == "row"


def _text_of(node: nodes.Node) -> set[str]:
    """The text ``node`` is, when it is a constant one (else none)."""
    return {node.value} if isinstance(node, nodes.Const) and isinstance(node.value, str) else set()


def _fold(value: str) -> str:
    return value.strip().casefold()


def _normalise_path(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/")).lstrip("/")


def _syntax_message(exc: jinja2.TemplateSyntaxError, path: str) -> str:
    return f"{path}: line {exc.lineno}: template syntax error: {exc.message}"


def _suggestions(unknown: set[str], columns: list[str], used: set[str]) -> str:
    """For each name in ``unknown`` (the templates use it, the file has no such column), the
    column spelt most like it: a column the templates do not use (``used``) is likely the
    header misspelt, one they use too is likely what the template meant."""
    hints = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
        if close and close[0] in used:
            hints.append(f"the templates use {name!r}: did you mean the column {close[0]!r}?")
        elif close:
            hints.append(misspelt_column(close[0], name))
    return f" ({'; '.join(hints)})" if hints else ""


def misspelt_column(column: str, meant: str) -> str:
    """Say that the file's ``column`` is likely the column ``meant``, misspelt in the header."""
    return f"the file has a column {column!r}: a misspelling of {meant!r}?"


def _shadowed_constant(name: str, paths: list[str], constants: Collection[str]) -> str:
    """The problem of a CSV column named like a constant the templates use: the row's value
    would silently take the constant's place in every letter (or, for ``row``, the whole row
    the column's place: every column, the address included, printed in the letter)."""
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    if name not in BUILTIN_NAMES and name not in constants:
        return (
            f"column {name!r} has the name of a template function ({name}) that {shown} use:"
            f" each row's value would take its place and the letter could not be made; rename"
            f" the column in the file (templates reach it as row[{name!r}] then)"
        )
    if name in BUILTIN_NAMES:
        return (
            f"column {name!r} has the name templates use for the whole row, and {shown} use"
            f" it: each letter would print every column of its row, not the column's value;"
            f" rename the column in the file (templates reach it as row[{name!r}] then)"
        )
    return (
        f"column {name!r} has the name of the constant {name!r} in {MANIFEST} (context), used"
        f" by {shown}: each row's value would replace the constant in its letter; rename the"
        f" column in the file, or rename or remove the constant in {MANIFEST}"
    )


def _one_line(text: str) -> str:
    """Collapse all whitespace (CR and LF included) so a subject is always one line."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in _CONTROL.sub("", text).split("\n"))
    return text.strip("\n") + "\n"


_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def _inline_css(html: str, path: str) -> str:
    """Move <style> rules into style attributes (many mail clients drop <style> blocks)."""
    if "<style" not in html.lower():
        return html
    try:
        return _INLINER.inline(html)
    except ValueError as exc:
        raise TemplateError(f"{path}: render: CSS could not be inlined: {exc}") from exc


# --- a time limit on rendering ---------------------------------------------------------------

# How long one row's rendering may take (see Catalog.render); after how many such rows a set's
# other rows fail at once, and for how long after the last one (a catalog kept warm, as a
# Lambda's is, tries the set again then: a set slow only once is not refused for good).
RENDER_SECONDS = 10.0
SLOW_ROWS_BEFORE_GIVING_UP = 3
GIVE_UP_SECONDS = 600.0


class _RenderTooLong(Exception):
    """Raised into a rendering that outlived RENDER_SECONDS."""


_T = TypeVar("_T")


class _Watchdog:
    """One daemon thread per process that raises _RenderTooLong into a thread whose rendering
    has passed its deadline (CPython's PyThreadState_SetAsyncExc: the exception arrives where
    the thread next checks for one, at a call or a loop's jump back, as a signal's would, but
    in any thread, so threaded runs are bounded too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}
        self._fired: set[int] = set()
        self._thread: threading.Thread | None = None

    def forked(self) -> None:
        """In a process forked from one that rendered (a SendBatch worker of a pool started
        after Validate rendered its trial rows): the parent's thread is not there, nor is its
        lock's holder. Start afresh, so the next render starts this process's own watchdog."""
        self.__init__()  # type: ignore[misc]

    def run(self, seconds: float, work: Callable[[], _T]) -> _T:
        """Return ``work()``; raise _RenderTooLong into it once it runs longer than ``seconds``.

        The limited code is a function called here, not a block of the caller's: CPython
        leaves the jump back of some loops outside their frame's handlers (``while
        <condition>:`` on 3.13, python/cpython#130279; ``while 1: pass`` written on one line
        on 3.11 and 3.12, #108214), so an exception arriving there leaves that frame past its
        ``try`` and ``with`` blocks. Here it reaches the call of ``work``, which the ``try``
        covers. (The rendering holds no lock around a loop, which would stay held.)
        """
        ident = threading.get_ident()
        with self._lock:
            self._deadlines[ident] = time.monotonic() + seconds
            self._fired.discard(ident)  # left over if the last one arrived inside the finally
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="render")
                self._thread.start()
        try:
            return work()
        finally:
            with self._lock:
                self._deadlines.pop(ident, None)
                fired = ident in self._fired
                self._fired.discard(ident)
            if fired:  # fired as the work ended: cancel it if it has not arrived yet
                _set_async_exc(ident, None)
                raise _RenderTooLong()

    def _watch(self) -> None:
        while True:
            try:
                _sleep(_WATCH_SECONDS)
                now = time.monotonic()
                with self._lock:
                    for ident, deadline in list(self._deadlines.items()):
                        if deadline <= now and ident not in self._fired:
                            self._fired.add(ident)
                            _set_async_exc(ident, _RenderTooLong)
            except Exception:  # the watch must go on: a thread that ended would end every limit
                log.exception("render watchdog: a turn failed; watching on")


def _set_async_exc(ident: int, exception: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exception) if exception else None
    )


_WATCH_SECONDS = 0.1
# The watch's own sleep, taken as this module is loaded: code that swaps time.sleep for a while
# (a test's stand-in) does not reach into the watchdog's thread.
_sleep = time.sleep
_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog.forked)


# --- inlining a skeleton once ----------------------------------------------------------------
#
# A slot is filled after inlining only where the inliner's parser treats any value's characters
# as it treats the slot's: as text of an element whose text it escapes, or inside a quoted
# attribute value. _inline_skeleton finds out by inlining the skeleton with a probe after each
# slot and reading how the probe came out; _InlinedSkeleton.fill refuses the values for which
# the parse could still differ.

# Distinct skeletons kept inlined per catalog, the most recently used.
SKELETON_CACHE_SIZE = 64

_PROBE = " \"<>'&\xa0"
# The text or attribute value before a slot must not be able to join a value's first
# characters into a tag name, an end tag or a character reference (or a CR into CR LF).
_JOINS_NEXT = re.compile(r"(?:</?[A-Za-z]*|&[#A-Za-z0-9]*|\r)\Z")
_HTML_SPACE = " \t\n\x0c\r"
# First characters of a text value the parser may treat apart: spaces, and U+FEFF, which it
# drops right after a </script> (as if a byte-order mark began the rest of the page).
_PARSED_FIRST = _HTML_SPACE + "\ufeff"
# Attributes a slot may fill: the inliner reads none of them, the parser builds nothing on them.
_SLOT_ATTRIBUTES = frozenset({"alt", "href", "src", "title", "value"})
# Formatting elements the parser compares by attributes (more than two open alike: "Noah's Ark").
_COMPARED_START = re.compile(
    r"<(b|big|code|em|font|i|nobr|s|small|strike|strong|tt|u)[\t\n\x0c\r />]"
)
_STYLE_END = re.compile(r"</style[\t\n\x0c\r />]")


def _as_text(value: str) -> str:
    """Escape text as the inliner writes it."""
    return (
        value.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _as_attribute(value: str) -> str:
    """Escape an attribute value as the inliner writes it."""
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


_PROBE_ESCAPED = str(escape(_PROBE))
_PROBE_AS_TEXT = _as_text(_PROBE)
_PROBE_AS_ATTRIBUTE = _as_attribute(_PROBE)


@dataclass(frozen=True)
class _InlinedSkeleton:
    """An inlined skeleton cut at its slots, in page order (foster parenting may move text).

    ``first`` is the page up to the first slot; ``gaps`` holds, for each slot in page order,
    its value's index, whether it is text (else an attribute value) and the page up to the
    next slot.
    """

    first: str
    gaps: tuple[tuple[int, bool, str], ...]

    def fill(self, values: list[str]) -> str | None:
        """The inlined page with ``values`` in its slots, or None if one could parse otherwise.

        A text value must not start with a space or U+FEFF (nor be empty, which slots never
        are): the parser decides on the first character whether text stays in <head> or a
        <table>, drops a newline just after <pre> and a U+FEFF just after </script>.
        """
        joined = "\0".join(values)
        if len(values) != len(self.gaps) or not _parsed_as_is(joined, len(values)):
            return None
        as_text = _as_text(joined).split("\0")
        out = [self.first]
        for slot, in_text, piece in self.gaps:
            if in_text:
                value = values[slot]
                if not value or value[0] in _PARSED_FIRST:
                    return None
                out.append(as_text[slot])
            else:
                out.append(_as_attribute(values[slot]))
            out.append(piece)
        return "".join(out)


def _parsed_as_is(joined: str, count: int) -> bool:
    """Whether the parser keeps every character of ``count`` values joined by NULs.

    It drops or replaces NUL, turns CR into LF, and the inliner refuses lone surrogates.
    """
    if joined.count("\0") != max(count - 1, 0) or "\r" in joined:
        return False
    try:
        joined.encode()
    except UnicodeEncodeError:
        return False
    return True


class _SkeletonCache:
    """The inlined skeletons of one catalog: the ``size`` most recently used (thread-safe).

    A template whose skeleton changes with every row cannot crowd out the skeletons most rows
    share: each new one pushes out the one used longest ago.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: OrderedDict[str, _InlinedSkeleton | None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, skeleton: str, count: int) -> _InlinedSkeleton | None:
        """Return ``skeleton`` inlined (None when its rows must be inlined one by one)."""
        with self._lock:
            if skeleton in self._kept:
                self._kept.move_to_end(skeleton)
                return self._kept[skeleton]
        inlined = _inline_skeleton(skeleton, count)  # outside the lock: threads inline at once
        with self._lock:
            self._kept[skeleton] = inlined
            if len(self._kept) > self._size:  # one over at most; no loop under the lock
                self._kept.popitem(last=False)
        return inlined


def _inline_skeleton(skeleton: str, count: int) -> _InlinedSkeleton | None:
    """Inline ``skeleton`` once for all its rows; None when its rows must be inlined one by one."""
    parts = _SLOT_SPLIT.split(skeleton)
    lower = skeleton.lower()
    if not _holds_each_slot_once(parts, count) or "<style" not in lower:
        return None
    if (count and not parts[0]) or any(_JOINS_NEXT.search(text) for text in parts[0:-1:2]):
        return None
    parts[1::2] = [slot + _PROBE_ESCAPED for slot in parts[1::2]]
    try:
        probed = _INLINER.inline("".join(parts))
    except ValueError:
        return None

    attributes_may_vary = _attributes_may_vary(lower)
    found = list(_SLOT.finditer(probed))
    if sorted(ord(slot.group()) - _SLOT_BASE for slot in found) != list(range(count)):
        return None
    starts = [slot.start() for slot in found] + [len(probed)]
    gaps = []
    for slot, following in zip(found, starts[1:], strict=False):
        after = slot.end()
        if probed.startswith(_PROBE_AS_TEXT, after):
            in_text, after = True, after + len(_PROBE_AS_TEXT)
        elif (
            attributes_may_vary
            and probed.startswith(_PROBE_AS_ATTRIBUTE, after)
            and _attribute_name(probed, slot.start()) in _SLOT_ATTRIBUTES
        ):
            in_text, after = False, after + len(_PROBE_AS_ATTRIBUTE)
        else:
            return None
        gaps.append((ord(slot.group()) - _SLOT_BASE, in_text, probed[after:following]))
    return _InlinedSkeleton(probed[: starts[0]], tuple(gaps))


def _holds_each_slot_once(parts: list[str], count: int) -> bool:
    """Whether the split skeleton holds each of the ``count`` slots once, and nothing else."""
    return sorted(ord(slot) - _SLOT_BASE for slot in parts[1::2]) == list(range(count))


def _attributes_may_vary(lower: str) -> bool:
    """Whether attribute values of the lower-cased skeleton may differ without changing the page.

    Not when CSS selects by attribute, a stylesheet link is near, or a formatting element
    starts three times or more (the parser compares their attributes: "Noah's Ark").
    """
    if "<link" in lower or "[" in _style_text(lower):
        return False
    counts: dict[str, int] = {}
    for tag in _COMPARED_START.findall(lower):
        counts[tag] = counts.get(tag, 0) + 1
    return all(count < 3 for count in counts.values())


def _attribute_name(probed: str, at: int) -> str | None:
    """The name of the attribute whose value holds position ``at`` of the inliner's output.

    The inliner writes ``name="value"`` with quotes in values escaped (but for ``class``,
    whose slots never match the probe), so the last quote before ``at`` opens the value.
    """
    quote = probed.rfind('"', 0, at)
    if quote < 1 or probed[quote - 1] != "=":
        return None
    return probed[probed.rfind(" ", 0, quote) + 1 : quote - 1]


def _style_text(lower: str) -> str:
    """Every stretch of a lower-cased page that may be CSS: each <style to its end tag."""
    found = []
    start = lower.find("<style")
    while start != -1:
        end = _STYLE_END.search(lower, start)
        stop = end.start() if end else len(lower)
        found.append(lower[start:stop])
        start = lower.find("<style", stop)
    return "".join(found)


def _fill_escaped(skeleton: str, values: list[str]) -> str | None:
    """The skeleton with its values escaped in place: the page as rendered without slots.

    None when the skeleton holds slot characters that are not its slots (from |safe values).
    """
    parts = _SLOT_SPLIT.split(skeleton)
    if not _holds_each_slot_once(parts, len(values)):
        return None
    parts[1::2] = [escape(values[ord(slot) - _SLOT_BASE]) for slot in parts[1::2]]
    return "".join(parts)


def _printed_in_place(ast: nodes.Template) -> list[str] | None:
    """The templates ``ast`` extends or includes, or None if its printed text may be captured.

    See Catalog._prints_in_place.
    """
    printed_super = {
        id(child.node)
        for output in ast.find_all(nodes.Output)
        for child in output.nodes
        if isinstance(child, nodes.Call)
        and isinstance(child.node, nodes.Name)
        and child.node.name == "super"
        and not (child.args or child.kwargs or child.dyn_args or child.dyn_kwargs)
    }
    referenced: list[str] = []
    for node in ast.find_all(nodes.Node):
        if isinstance(node, (nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.AssignBlock)):
            return None
        if isinstance(node, (nodes.Import, nodes.FromImport)) and node.with_context:
            return None
        if isinstance(node, nodes.For) and node.recursive:
            return None
        if (
            isinstance(node, nodes.Name)
            and node.name in ("self", "super")
            and id(node) not in printed_super
        ):
            return None
        if isinstance(node, (nodes.Extends, nodes.Include)):
            names = _template_names(node.template)
            if names is None:
                return None
            referenced.extend(names)
    return referenced


def _template_names(expr: nodes.Expr) -> list[str] | None:
    """The names a constant ``{% extends %}`` or ``{% include %}`` may load, else None."""
    items = expr.items if isinstance(expr, (nodes.Tuple, nodes.List)) else [expr]
    names: list[str] = []
    for item in items:
        if not isinstance(item, nodes.Const):
            return None
        values = item.value if isinstance(item.value, (list, tuple)) else [item.value]
        if not all(isinstance(value, str) for value in values):
            return None
        names.extend(values)
    return names


_BLOCKS = frozenset(
    {"p", "div", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table", "ul", "ol"}
    | {"blockquote", "section", "header", "footer", "hr"}
)


class _TextExtractor(HTMLParser):
    """Turns an HTML body into readable plain text (block elements become line breaks)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip_depth += 1
        elif tag in _BLOCKS:
            self.parts.append("\n\n" if tag in ("p", "h1", "h2", "h3", "table", "hr") else "\n")
            if tag == "li":
                self.parts.append("- ")
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCKS and tag != "li":
            self.parts.append("\n")
        elif tag == "a" and self._links:
            href = self._links.pop()
            if href and href.startswith(("http:", "https:", "mailto:")):
                self.parts.append(f" ({href.removeprefix('mailto:')})")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Derive the text part from an HTML body."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return text + "\n" if text else ""
