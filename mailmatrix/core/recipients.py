"""CSV intake: read what spreadsheets and HR systems export, keep the good rows, say why not.

The upload is read once as a stream: the encoding and delimiter are detected from the first
64 KiB, then rows are decoded incrementally and handed to ``emit`` one at a time. In memory,
what grows with the file is two tables of 8-byte hashes in flat arrays (the recipients, for
duplicates; the attachment files, for the recipient each belongs to) and the files named for
two recipients; and, given the means to read the attachments, a table of the files' sizes to
find the files of one size named for different recipients, whose contents are compared once
the whole file is read; and, of the rows passed on with a Cc or Bcc, 16 bytes an address there
that no row had as its Email yet, looked up among the recipients at the end. The rows not
sent, and the addresses a row withdrawn at the end is reported with, are spooled to disk. So
is a 4-byte hash of each cell of the first row of each address, read back to name the columns
in which a later row of the address differs.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import difflib
import functools
import heapq
import io
import itertools
import json
import logging
import operator
import re
import tempfile
import unicodedata
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple, NewType, Protocol

from mailmatrix.core.addresses import Address, addresses_in, mask, parse_address
from mailmatrix.core.attachments import (
    PDF_HEAD_BYTES,
    AttachmentIndex,
    Lookup,
    is_pdf_name,
    pdf_problem,
)
from mailmatrix.core.contents import Contents, copies
from mailmatrix.core.earlier import EarlierFiles, EarlierRecipients, EarlierSets, SentFiles
from mailmatrix.core.filekinds import file_kind
from mailmatrix.core.report import (
    MAYBE_SENT_UNDER,
    campaign_of,
    held_under_outcome,
    letter_of_another_campaign,
    sent_under_reason,
)
from mailmatrix.core.seen import SeenTable, size_key
from mailmatrix.core.templates import BY_COLUMN, MANIFEST, misspelt_column
from mailmatrix.disk import write_fault
from mailmatrix.errors import FileNotWritten, InputFileError, TemplateError
from mailmatrix.ports import SentCopy
from mailmatrix.settings import SES_V2_MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)

SAMPLE_BYTES = 64 * 1024
SPOOL_BYTES = 1024 * 1024
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# SES accepts at most 50 recipients per message (To, Cc and Bcc together):
# https://docs.aws.amazon.com/ses/latest/dg/quotas.html
MAX_RECIPIENTS = 50

# Canonical names of the columns MailMatrix itself reads, by their spelling with case, spaces,
# underscores, hyphens and dots removed.
_ALIASES = {
    "email": "Email",
    "emailaddress": "Email",
    "mail": "Email",
    "mailaddress": "Email",
    "emailid": "Email",
    "name": "Name",
    "fullname": "Name",
    "recipientname": "Name",
    "displayname": "Name",
    "status": "Status",
    "attachmentfile": "Attachment_File",
    "attachment": "Attachment_File",
    "attachmentname": "Attachment_File",
    "attachmentfilename": "Attachment_File",
}
# The copy columns, and the names each is read under (compared as the aliases are): a warning
# lists them for a header that looks like one of them but is none (copy_column_warnings).
COPY_COLUMN_NAMES = {
    "Cc": (
        "Cc",
        "Carbon Copy",
        "CC Email",
        "CC Emails",
        "CC Address",
        "CC Addresses",
        "CC Recipients",
        "Copy To",
    ),
    "Bcc": (
        "Bcc",
        "Blind Carbon Copy",
        "Blind Copy",
        "Blind CC",
        "Bcc Email",
        "Bcc Emails",
        "Bcc Address",
        "Bcc Addresses",
        "Bcc Recipients",
    ),
    "Reply_To": ("Reply_To", "Reply-To Email", "Reply-To Address"),
}
_SQUASH = re.compile(r"[\s_.\-]+")
_ALIASES.update(
    {
        _SQUASH.sub("", name).casefold(): column
        for column, names in COPY_COLUMN_NAMES.items()
        for name in names
    }
)
# The spellings of an Attachment_File column, as _ALIASES holds them: a header spelt much
# like one (Attachement_File) is likely that column misspelt.
_FILE_SPELLINGS = [key for key, name in _ALIASES.items() if name == "Attachment_File"]
# Other words a header may give the column of the files' names in (an export in German,
# French, Dutch, Italian, Spanish), compared as _FILE_SPELLINGS, accents aside: the file is
# refused naming that column, rather than asked for a column it seems to have.
_FILE_WORDS = frozenset(
    {
        "anhang",
        "anhange",
        "anlage",
        "anlagen",
        "datei",
        "dateiname",
        "pdf",
        "pdfdatei",
        "filename",
        "fichier",
        "piecejointe",
        "bijlage",
        "allegato",
        "adjunto",
        "archivo",
    }
)
# Columns whose values end up in message headers: no line breaks, no control characters.
HEADER_COLUMNS = frozenset({"Email", "Name", "Status", "Attachment_File", "Cc", "Bcc", "Reply_To"})
# Words a header may wrap a copy column's name in (``Cc (optional)``, ``bcc list``,
# ``CC email addresses``): without them, and without its punctuation and a number
# (``CC2``), a header spelt as a name of a copy column looks like one (_looks_like_copies).
_COPY_WORDS = frozenset(
    {"optional", "e", "mail", "mails", "email", "emails", "address", "addresses", "list"}
    | {"recipient", "recipients", "field", "column"}
)
_WORD = re.compile(r"[^\W_]+")
# A word's parts where its case changes (managerCc, CCEmail): a run of capitals before a
# capitalised word, a capitalised or lower-case word, the capitals left, digits.
_CASE_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Cyrillic and Greek letters drawn as Latin ones (Сс, Вcc): folded before a header is
# compared, as a header typed or pasted with them looks like the Latin one to its reader.
_LOOKALIKE_LETTERS = str.maketrans(
    "АВСЕНІЈКМОРЅТХУаеіјорсѕхуΑΒΕΗΙΚΜΝΟΡΤΥΧΖοικνρ",
    "ABCEHIJKMOPSTXYaeijopcsxyABEHIKMNOPTYXZoikvp",
)
# The words that make a header look like a copy column, by the column (_copy_words_in): one
# of its words, split as _WORD and _CASE_PARTS split it (``Manager CC``, ``cc (manager)``,
# ``CCs``, ``cc;bcc``, ``Send Copy To``, ``Reply Address``), or all the words of one of its
# pairs (``Blind Carbon``: ``Blind`` alone may be a column of the person's needs). Whole
# words only: ``Copyright``, ``Carbon Footprint`` are no copy columns. Bcc first: a header
# with the words of both (``Blind Copy``, ``cc;bcc``) may hold blind copies, which the
# warning must not call plain ones.
_COPY_LOOKS: tuple[tuple[str, frozenset[str], tuple[frozenset[str], ...]], ...] = (
    (
        "Bcc",
        frozenset({"bcc", "bccs", "cco"}),
        tuple(frozenset({"blind", word}) for word in ("carbon", "copy", "copies", "cc")),
    ),
    ("Cc", frozenset({"cc", "ccs", "copy", "copies"}), ()),
    ("Reply_To", frozenset({"reply", "replies"}), ()),
)
# Headers that look like copy columns and are none, of which a warning names each; more are
# counted.
SHOWN_LOOKALIKES = 10
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")
# Bytes the detected encoding cannot decode arrive as lone surrogates (surrogateescape).
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = frozenset("\r\n\u2028\u2029\x85\x0b\x0c")
_CONTROL_NAMES = {0: "NUL", 9: "TAB", 27: "ESC", 127: "DEL"}
# Well-formed multi-byte UTF-8 sequences (two to four bytes).
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
# Bidirectional overrides and isolates can make a display name read as something else.
_EDGE_SPACE = re.compile(r"\A[\s\ufeff]+|[\s\ufeff]+\Z")
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Either: a row without one needs no closer look.
_SUSPECT = re.compile(f"{_CONTROL.pattern}|{_BIDI.pattern}")
# A header line may not exceed 998 characters (RFC 5322); names are kept far below that.
MAX_HEADER_VALUE = 256
# Any cell: a row with more is rejected, not the file.
MAX_CELL = 65536
# All the cells of a row: its manifest line (at most ~4 bytes a character, JSON-escaped) must
# fit, with the batch's other fields, in the 192 KiB a Map batch may hold (ASL ItemBatcher
# MaxInputBytesPerBatch); a bigger row could never be sent, and would fail its whole batch.
MAX_ROW_CHARS = 40000
_LIST_SPLIT = re.compile(r"[,;]")
# Excel honours (and some exports write) a first line "sep=;" naming the delimiter.
_SEP_DIRECTIVE = re.compile(r"sep=(.) *", re.IGNORECASE)

_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")


class Choice(Protocol):
    """What the catalog decided for one Status value (read only: intake never changes it)."""

    @property
    def kind(self) -> str: ...

    @property
    def template(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...


class Catalog(Protocol):
    """The part of the template catalog (mailmatrix.core.templates) that intake uses.

    A catalog may also offer ``required_columns(template)`` (the columns printed unguarded,
    preferred over ``variables``), ``attachment_mode(template)`` (required, optional, none, or
    by_column: required when the CSV has an Attachment_File column, else none),
    ``default_attachment(template)`` and ``used_columns()`` (every column a template uses, by
    name or through ``row``); intake uses them when present.
    """

    column: str | None

    def choose(self, value: str) -> Choice:
        """Return the template set for a value of ``column`` (kind template/skip/unknown)."""
        ...

    def check(self, columns: list[str]) -> tuple[list[str], list[str]]:
        """Return the problems of templates that do not compile, and those of templates that
        do not fit the file's columns (both empty when fine)."""
        ...

    def variables(self, template: str) -> set[str]:
        """Return the columns the set's subject, HTML and text use."""
        ...

    def needs_attachment(self, template: str) -> bool:
        """Return whether the set sends each recipient's attachment."""
        ...


@dataclass(frozen=True)
class IntakeRules:
    """Limits and options of intake."""

    max_message_bytes: int | None = SES_V2_MAX_MESSAGE_BYTES
    check_deliverability: bool = False


class ProblemList:
    """Rows of one kind (rejected, duplicate, skipped) in file order, read like a list.

    Kept as JSON lines in a spooled temporary file: in memory up to SPOOL_BYTES, on disk
    beyond, so a file whose every row is bad does not make memory grow with it. Rows found
    wanting only after later rows were added (``merge``) are spooled apart and read back in
    their place, so the list always reads in row order. ``close`` drops the spools (the
    entries cannot be read after it; the list still counts them).
    """

    def __init__(self, items: Iterable[dict[str, Any]] = ()) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b")  # noqa: SIM115
        self._count = 0
        self._merged: list[ProblemList] = []
        try:
            for item in items:
                self.append(item)
        except BaseException:  # its spool with it: nobody else can close it
            self.close()
            raise

    def append(self, item: dict[str, Any]) -> None:
        """Add one row's entry at the end."""
        line = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
        try:
            self._spool.write(line.encode("utf-8") + b"\n")
        except OSError as error:  # past SPOOL_BYTES, in the temporary folder
            raise FileNotWritten(
                f"cannot write a temporary file in {tempfile.gettempdir()} (where the rows not"
                f" sent are kept, past {SPOOL_BYTES // 1024} KiB of them, while the file is"
                f" validated): {write_fault(error)}"
            ) from error
        self._count += 1

    def merge(self, items: Iterable[dict[str, Any]]) -> None:
        """Add entries, in row order among themselves, whose rows may come before rows already
        added; they are read back in row order with the others."""
        merged = ProblemList(items)
        if merged:
            self._merged.append(merged)
        else:
            merged.close()

    def __len__(self) -> int:
        return self._count + sum(map(len, self._merged))

    def close(self) -> None:
        """Drop the entries' spools (their temporary files, where they went to disk)."""
        self._spool.close()
        for merged in self._merged:
            merged.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self._merged:
            return self._appended()
        return heapq.merge(self._appended(), *self._merged, key=operator.itemgetter("row"))

    def _appended(self) -> Iterator[dict[str, Any]]:
        """The entries added by ``append``, in the order they were."""
        spool = self._spool
        offset, remaining = 0, self._count
        while remaining > 0:
            end = spool.tell()
            spool.seek(offset)
            lines = spool.readlines(64 * 1024)[:remaining]
            offset = spool.tell()
            spool.seek(end)
            if not lines:
                break
            remaining -= len(lines)
            for line in lines:
                yield json.loads(line.decode("utf-8"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, ProblemList)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ProblemList({list(self)!r})"

    def first(self, limit: int | None) -> list[dict[str, Any]]:
        """Return the first ``limit`` entries (all when None)."""
        return list(itertools.islice(self, limit))


@dataclass
class IntakeReport:
    """What intake found; ``rows`` counts the non-blank records after the header."""

    source: str
    encoding: str = ""
    delimiter: str = ""
    header: list[str] = field(default_factory=list)
    rows: int = 0
    last_row: int = 0  # the line of the last of those records (0: none)
    valid: int = 0
    empty: int = 0
    rejected: ProblemList = field(default_factory=ProblemList)
    duplicates: ProblemList = field(default_factory=ProblemList)
    skipped: ProblemList = field(default_factory=ProblemList)
    # Rows passed to ``emit`` and rejected afterwards: the caller must not send them.
    withdrawn: frozenset[int] = frozenset()
    # What the file's header asks the operator to look at, though nothing is refused for it
    # (a column that looks like Cc but is not read as one: copy_column_warnings).
    warnings: list[str] = field(default_factory=list)
    # Of the rows ``skipped``, those held back as their letter went (or may have gone, or is
    # being sent) to the same address under another file (a copy of the file renamed): that
    # file's name -> how many.
    sent_under: dict[str, int] = field(default_factory=dict)
    # Of those, how many only may have gone (in doubt there, or failed as OutcomeUnknown)
    doubt_under: int = 0

    def close(self) -> None:
        """Drop the spooled lists (the counts stay): once the report has been read."""
        for problems in (self.rejected, self.duplicates, self.skipped):
            problems.close()

    def __enter__(self) -> IntakeReport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """Return the report as JSON-ready data (for `mailmatrix validate --json`, the handler).

        With ``limit``, each list holds at most that many entries and ``truncated`` gives the
        full counts of the lists that were cut.
        """
        data: dict[str, Any] = {
            "source": self.source,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "header": list(self.header),
            "rows": self.rows,
            "valid": self.valid,
            "empty": self.empty,
            "warnings": list(self.warnings),
        }
        truncated = {}
        for name in ("rejected", "duplicates", "skipped"):
            problems: ProblemList = getattr(self, name)
            data[name] = problems.first(limit)
            if limit is not None and len(problems) > limit:
                truncated[name] = len(problems)
        if truncated:
            data["truncated"] = truncated
        return data


def normalise_header(name: str) -> str:
    """Return the canonical column name: BOM and spaces removed, known aliases mapped."""
    stripped = name.replace("\ufeff", "").strip()
    return _ALIASES.get(_SQUASH.sub("", stripped).casefold(), stripped)


def copy_column_warnings(names: list[str], catalog: Any) -> list[str]:
    """What to warn of the header's ``names`` (normalised) that look like a copy column (Cc,
    Bcc, Reply_To) but are not read as one, nor used by a template of ``catalog`` (when it can
    say, ``used_columns``) or to pick the set: their addresses would be neither copied nor
    printed. Warned of, not read as copies: who gets a letter is decided by the names listed
    in COPY_COLUMN_NAMES alone, as a guess that was wrong would mail people a letter that is
    not theirs."""
    found = [(name, column) for name in names if (column := _looks_like_copies(name))]
    if not found:
        return []
    used_columns = getattr(catalog, "used_columns", None)
    used = used_columns() if used_columns is not None else set()
    used.add(getattr(catalog, "column", None) or "")  # the column that picks the set
    found = [(name, column) for name, column in found if name not in used]
    warnings = [_copies_not_read(name, column, column in names) for name, column in found]
    if len(warnings) > SHOWN_LOOKALIKES:
        more = ", ".join(repr(name) for name, _ in found[SHOWN_LOOKALIKES:])
        warnings[SHOWN_LOOKALIKES:] = [f"so do the columns {more}"]
    return warnings


def _looks_like_copies(name: str) -> str | None:
    """The copy column (Cc, Bcc, Reply_To) that the header ``name`` (normalised: not one
    read as such) looks like, once the words _COPY_WORDS, its punctuation and a number are
    left out (``cc:``, ``Cc (optional)``, ``bcc list``, ``CC2``); None when it looks like
    none, or is one."""
    if name in COPY_COLUMN_NAMES:
        return None
    words = [word for word in _WORD.findall(name.casefold()) if word not in _COPY_WORDS]
    spelling = "".join(words).rstrip("0123456789")
    column = _ALIASES.get(spelling) if spelling else None
    if column in COPY_COLUMN_NAMES:
        return column
    return _copy_words_in(name)


def _copy_words_in(name: str) -> str | None:
    """The copy column (Bcc first, then Cc, then Reply_To) whose words the header ``name``
    holds once its compatibility forms (fullwidth ``Ｃｃ``) and the Cyrillic and Greek letters
    drawn as Latin ones are folded (_COPY_LOOKS), or None."""
    folded = unicodedata.normalize("NFKC", name).translate(_LOOKALIKE_LETTERS)
    tokens = {word.casefold() for word in _WORD.findall(folded)}
    for word in _WORD.findall(folded):
        tokens.update(part.casefold() for part in _CASE_PARTS.findall(word))
    for column, words, pairs in _COPY_LOOKS:
        if tokens & words or any(pair <= tokens for pair in pairs):
            return column
    return None


def _copies_not_read(name: str, column: str, present: bool) -> str:
    """The warning of a header ``name`` that looks like the copy ``column`` but is not read
    as one (``present``: the file has that column too)."""
    said = (
        f"column {name!r} looks like a {column} column but is not read as one, and no template"
        " uses it: its addresses are not copied on the letters."
    )
    spellings = ", ".join(COPY_COLUMN_NAMES[column][1:])
    names = (
        f"{column} is read from the column named {column} (or {spellings}; case, spaces,"
        " hyphens, underscores and dots aside)"
    )
    if present:
        return (
            f"{said} {names}, which the file has: put the addresses of {name!r} there too"
            " (several in one cell, separated by commas or semicolons) to copy them."
        )
    return f"{said} {names}: rename it {column} to copy them."


def validate_recipients(
    stream: BinaryIO,
    *,
    source: str,
    catalog: Catalog,
    attachments: AttachmentIndex,
    rules: IntakeRules | None = None,
    emit: Callable[[dict[str, Any]], None],
    contents: Contents | None = None,
    sent_before: Callable[[frozenset[int]], Collection[int]] | None = None,
    earlier: EarlierFiles | None = None,
    sent_files: SentFiles | None = None,
    mailed: EarlierRecipients | None = None,
    sets: EarlierSets | None = None,
) -> IntakeReport:
    """Read the raw upload once; call ``emit`` for each valid row in file order; report the rest.

    With ``contents`` (reads the attachment files), rows of different recipients whose files
    hold the same bytes are rejected too, like rows naming one file; without, files are told
    apart by name (and link) alone. ``sent_before(rows)``, when given, says which of ``rows``
    (rows passed on, then withdrawn: a few) an earlier run of the file sent already; the
    rejects of those held for a copy, and of the rows held for a copy of their letter, say so.
    ``earlier``: the files earlier runs' letters carried as their recipients' own, which the
    attachments still hold; each is its recipient's as a row's file is: a row of another
    recipient naming a link to one is rejected, one naming (with ``contents``) a copy of one
    is withheld. A row naming the very name is left to the claim (AttachmentOfAnother).
    ``sent_files``: the files letters of every campaign carried as their recipients' own, as
    the ledger keeps them (size, print, SHA-256): a row whose own file holds the bytes of one
    that went to another person is rejected (a copy made for a new campaign, or the file
    renamed since it went out), whatever its name now. ``sets``: the letters other files
    sent to an address in a set: a row whose letter of that set went so is held back as one
    whose very letter went (``sent_files``), its text changed or not.

    A row whose Cc or Bcc names another row's Email (compared as Email is for duplicates, its
    own aside) is rejected, before or after that row: that person would get its letter. So is
    one whose Cc or Bcc names a recipient an earlier run of the campaign mailed (``mailed``:
    the ledger asked of those addresses only), unless the run skips the row's own letter.

    Raises InputFileError when the file is unusable as a whole (among others: it has no
    Attachment_File column, and a set of its rows needs one) and TemplateError when the
    templates use columns the file does not have, or give rows a set's default_attachment
    that a row names as its recipient's own, or that is one of the ``earlier`` files (the
    same file, a link to it or, with ``contents``, a copy); ObjectChanged when an attachment
    changes while its contents are compared.

    The report's lists are spooled to temporary files: close the report (``with report:``)
    once it has been read.
    """
    encoding, delimiter, records = _open_records(stream, source)
    report = IntakeReport(source=source, encoding=encoding, delimiter=delimiter)
    intake = _Intake(
        report,
        catalog,
        attachments,
        rules or IntakeRules(),
        emit,
        contents,
        sent_before,
        earlier,
        sent_files,
        mailed,
        sets,
    )
    try:
        for row, record in records:
            if intake.header_pending:
                if _is_header(record):
                    intake.start(record, source)
            else:
                intake.check(row, record)
        if intake.header_pending:
            raise InputFileError(f"{source}: no header: the file holds only blank lines")
        if report.rows == 0:
            raise InputFileError(f"{source}: no recipients: the file has a header but no rows")
        intake.warn_of_questions()
        intake.warn_of_unattached()
        intake.check_defaults()
        intake.trials.check()
        intake.withdraw_copies()
        intake.compare_contents()
        intake.check_file_names()
        intake.withdraw()
    except BaseException:
        report.close()  # nobody gets to read it
        raise
    finally:
        intake.close()
    return report


# How many rows a warning lists by number before it counts the rest.
_LISTED_ROWS = 10


@dataclass
class _NotedRows:
    """The rows a warning is about: how many, and the first _LISTED_ROWS of them."""

    count: int = 0
    first: list[int] = field(default_factory=list)

    def add(self, row: int) -> None:
        self.count += 1
        if len(self.first) < _LISTED_ROWS:
            self.first.append(row)

    def said(self) -> str:
        """The rows as a warning names them: "row 4", or "rows 4, 9 and 3 more"."""
        rows = ", ".join(map(str, self.first))
        if self.count > len(self.first):
            rows += f" and {self.count - len(self.first)} more"
        return f"rows {rows}" if self.count > 1 else f"row {rows}"


# Rows of each template set rendered at intake while none of them has rendered.
TRIAL_ROWS = 3
_FIX = "(fix the template, or this row's values)"


class _TrialRenders:
    """The first rows of each template set, rendered at intake until one renders.

    The columns check reads which names a template uses, not what it does with their values:
    an expression that fails on every row (an attribute of a text, a filter given the wrong
    kind of value) passed validation and failed each of its set's rows at sending, after the
    other sets' letters had gone out. A set whose first rows (two at least, TRIAL_ROWS at
    most) all fail stops the file before anything is sent, as a column the file lacks does.
    A row that fails while its set does not is rejected with the error (it would fail at
    sending); a row the same as one that failed fails alike, without another try. Each later
    row of a set that rendered has the values its templates read as numbers (``| int``) tried
    (Catalog.number_failure): "$85,000" fails there as it would at sending.
    """

    def __init__(self, catalog: Any) -> None:
        self._catalog = catalog
        self._rendered: set[str] = set()
        self._failed: dict[str, list[tuple[int, str]]] = {}  # set -> (row, error) of each try
        self._errors: dict[tuple[str, tuple[str, ...]], str] = {}  # (set, values) that failed

    def render(self, row: int, template: str, fields: dict[str, str]) -> str | None:
        """Render ``row`` with ``template`` unless a row of that set rendered already or
        TRIAL_ROWS of them failed; return the error when it fails."""
        key = (template, tuple(fields.values()))
        if key in self._errors:
            return self._errors[key]
        if template in self._rendered:
            # later rows: their values read as numbers, which the first row's rendering
            # did not try (validation said 198 rows would be sent; 64 failed at sending)
            numbers = getattr(self._catalog, "number_failure", None)
            return numbers(template, fields) if numbers is not None else None
        tried = self._failed.setdefault(template, [])
        if len(tried) >= TRIAL_ROWS:
            return None
        try:
            self._catalog.render(template, fields)
        except TemplateError as error:
            tried.append((row, error.message))
            self._errors[key] = error.message
            return error.message
        self._rendered.add(template)
        del self._failed[template]
        return None

    def check(self) -> None:
        """Raise TemplateError for the sets whose every row tried, two at least, failed."""
        broken = {name: tried for name, tried in self._failed.items() if len(tried) >= 2}
        if not broken:
            return
        said = []
        for name, tried in sorted(broken.items()):
            rows = ", ".join(str(row) for row, _ in tried)
            said.append(f"{tried[0][1]} (every row of set {name} tried failed: rows {rows})")
        raise TemplateError(f"{'; '.join(said)}: the template, not the rows, is likely at fault")


def read_columns(stream: BinaryIO, *, source: str) -> list[str]:
    """The file's column names as intake names them (aliases mapped), from its header alone."""
    _, _, records = _open_records(stream, source)
    for _, record in records:
        if _is_header(record):
            return [normalise_header(cell) for cell in record]
    return []


# The columns whose addresses a message goes to.
RECIPIENT_COLUMNS = ("Email", "Cc", "Bcc")


def recipient_addresses(stream: BinaryIO, *, source: str) -> Iterator[tuple[int, str, str]]:
    """(row, column, address) for each address the file's messages could go to: those of its
    RECIPIENT_COLUMNS (a cell split as intake splits Cc) that pass the check intake makes,
    normalised as they would be sent. The rows are not otherwise checked."""
    for row, cells in read_rows(stream, source=source):
        for column in RECIPIENT_COLUMNS:
            for piece in _LIST_SPLIT.split(cells.get(column, "")):
                address = parse_address(piece) if piece.strip() else None
                if address is not None and address.email:
                    yield row, column, address.email


def read_rows(stream: BinaryIO, *, source: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(row, cells by column) for each row of the file that is not blank, read as intake reads
    it (encoding, delimiter, the header's aliases mapped: ``Full Name`` is ``Name``), without
    checking the rows."""
    _, _, records = _open_records(stream, source)
    header: list[str] | None = None
    for row, record in records:
        if header is None:
            if _is_header(record):
                header = [normalise_header(cell) for cell in record]
        elif "".join(record).strip():
            yield row, dict(zip(header, record, strict=False))


def _open_records(
    stream: BinaryIO, source: str
) -> tuple[str, str, Iterator[tuple[int, list[str]]]]:
    """Detect the upload's encoding and delimiter; return them and its records, read lazily."""
    sample = _read_sample(stream)
    codec, encoding = detect_encoding(sample, source)
    head = _decode_head(sample, codec)
    delimiter = detect_delimiter(head, source)
    logger.debug("intake %s: encoding %s, delimiter %r", source, encoding, delimiter)

    raw: io.RawIOBase = _Prefixed(sample, stream)
    if codec.startswith("utf-16"):
        raw = _CheckedUtf16(raw, codec, _undecodable(source, encoding))
    text = io.TextIOWrapper(
        io.BufferedReader(raw, SAMPLE_BYTES),
        encoding=codec,
        errors="surrogateescape",
        newline="",
    )
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))
    reader = csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True)
    return encoding, delimiter, _records(reader, source, encoding)


def detect_encoding(sample: bytes, source: str) -> tuple[str, str]:
    """Return (codec for decoding, encoding name to report) for the file's first bytes."""
    if not sample.strip():
        raise InputFileError(f"{source}: empty file: no header and no rows")
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputFileError(f"{source}: unsupported encoding: UTF-32; export as CSV UTF-8")
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "utf-8-sig"
    if sample.startswith(codecs.BOM_UTF16_LE):
        return "utf-16", "utf-16-le"
    if sample.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", "utf-16-be"
    kind = file_kind(sample)
    if kind is not None:
        raise InputFileError(f"{source}: not a CSV file: it is {kind}; export it as CSV UTF-8")

    unmarked = _utf16_without_bom(sample)
    if unmarked:
        return unmarked, unmarked
    controls = sum(sample.count(bytes([b])) for b in (*range(9), 11, 12, *range(14, 32)))
    if controls > len(sample) * 0.02:
        raise InputFileError(
            f"{source}: not a text file: {controls} control bytes in the first "
            f"{len(sample)} bytes; export the recipients as CSV UTF-8"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(sample) < SAMPLE_BYTES)
    except UnicodeDecodeError:
        # A UTF-8 export with a few stray bytes is still UTF-8: decoding all of it as
        # Windows-1252 would garble every accented name. The stray bytes reject their rows.
        if len(_UTF8_SEQUENCE.findall(sample)) > sample.decode("utf-8", "replace").count("\ufffd"):
            return "utf-8", "utf-8"
    else:
        return "utf-8", "utf-8"

    # Not UTF-8: a single-byte Western export. Windows-1252 defines 0x80-0x9F except five
    # bytes; a file using those five can only be Latin-1 (they are C1 controls there).
    if _CP1252_UNDEFINED.intersection(sample):
        return "latin-1", "latin-1"
    return "cp1252", "cp1252"


def detect_delimiter(head: str, source: str) -> str:
    """Return the delimiter that splits the header into columns including Email."""
    lines = (part for part in re.split(r"\r\n|\r|\n", head) if part.strip())
    line = next(lines, "")
    directive = _SEP_DIRECTIVE.fullmatch(line.replace("\ufeff", "").lstrip(" "))
    if directive and directive.group(1) in DELIMITERS:
        return directive.group(1)
    best: tuple[int, str] | None = None
    for delimiter in DELIMITERS:
        names = [normalise_header(cell) for cell in next(csv.reader([line], delimiter=delimiter))]
        if "Email" in names and (best is None or len(names) > best[0]):
            best = (len(names), delimiter)
    if best is not None:
        return best[1]

    shown = line.replace("\ufeff", "")
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise InputFileError(
        f"{source}: no Email column: the header is {shown!r}; "
        "name the address column Email (or E-mail, Email address)"
    )


class _Intake:
    """The per-file state of one validation: column positions, caches, duplicate table."""

    def __init__(
        self,
        report: IntakeReport,
        catalog: Catalog,
        attachments: AttachmentIndex,
        rules: IntakeRules,
        emit: Callable[[dict[str, Any]], None],
        contents: Contents | None = None,
        sent_before: Callable[[frozenset[int]], Collection[int]] | None = None,
        earlier: EarlierFiles | None = None,
        sent_files: SentFiles | None = None,
        mailed: EarlierRecipients | None = None,
        sets: EarlierSets | None = None,
    ) -> None:
        self.report = report
        self.catalog = catalog
        self.attachments = attachments
        self.rules = rules
        self.emit = emit
        self.trials = _TrialRenders(catalog)
        self.header_pending = True
        # Addresses -> the first row naming each (skipped and rejected rows too), whether it was
        # passed on (flag), and the hash of its other cells: a later row of the address is a
        # duplicate when they are the same, else it and a first row passed on are held back.
        self.seen = SeenTable()
        # Files -> recipient, and its row passed on or first. A file is its name, or for a file
        # the attachments location holds under several names (links), the first of them.
        self.owners = SeenTable()
        # Of those linked files only (a few): the name the row in ``owners`` gave the file.
        self.owner_names: dict[int, str] = {}
        # Rows already emitted that a later row shows must not go out: it names their file for
        # another recipient, or has their address with other values (see _Withdrawal). The
        # caller drops them from what it sends (IntakeReport.withdrawn), so neither row goes out.
        self.withdrawn: dict[int, _Withdrawal] = {}
        self.sent_addresses = _SentAddresses()  # of the rows emitted: any could be withdrawn
        # Of the rows emitted, each address in Cc or Bcc that no row had as its Email yet: the
        # row (shifted left, 1 for Bcc) and the hash of the address's key. One a later row has
        # as its Email withdraws the row (withdraw_copies): that person would get its letter.
        self.copied_rows, self.copied_keys = array("q"), array("q")
        # The columns two rows of an address differ in, as reasons name them, by number.
        self.column_texts = ["other columns"]  # 0: once _COLUMN_TEXTS sets were named
        self._text_numbers: dict[tuple[str, ...], int] = {}
        self.contested: dict[int, int] = {}  # files named for two recipients -> a row of one
        # With the means to read files: each size of file -> the recipient of the first file
        # of that size; and the sizes of files of two recipients (or of a contested file),
        # whose files are compared at the end.
        self.contents = contents
        self.sizes = SeenTable() if contents is not None else None
        # The default_attachment files whose start was read: file -> why it is no PDF, or None.
        self.default_starts: dict[str, str | None] = {}
        self.crowded: set[int] = set()
        # Of the rows withdrawn, those an earlier run sent (asked once they are known).
        self.sent_before = sent_before
        self.sent_earlier: frozenset[int] = frozenset()
        # With earlier runs to ask: the rejects of rows held for a row withdrawn (its file,
        # its address), worded once it is known whether an earlier run sent that row.
        self.held = ProblemList()
        # The files of earlier runs' letters (None: none), and of the files rows name as their
        # own that have the size of one, but for a recipient's own earlier letter: file key ->
        # the recipient (EarlierFiles.who) of the first row naming it.
        self.earlier = earlier if earlier else None
        self.earlier_who = SeenTable()
        # The files letters of every campaign carried (the ledger's digests; None: none).
        self.sent_files = sent_files if sent_files else None
        # The letters of each set other files sent to an address (None: no other file's).
        self.sets = sets if sets else None
        # The recipients earlier runs mailed, asked for the addresses in Cc and Bcc (None: no
        # earlier run to ask).
        self.mailed = mailed
        # The default_attachment files rows were given (a few): file key -> the first set.
        self.defaults: dict[int, _Default] = {}
        # Rows whose own file is named like another recipient's letter (check_file_names): each
        # word of a name column (each of its _forms) -> the first row having it, its recipient,
        # and (flag) whether other recipients' names have it too; the short last words of names
        # (Kim, Li: a surname, maybe), alike; each word of the rows' own file names -> in how
        # many (content); the name words of each row first to have one of them, as 64 bits
        # (_name_print), by row: the rows those words lead to (16 bytes each, a row of a name
        # no earlier row had); and the rows passed on whose file name lacks a word of their
        # name and has a word that is not of it (see _note_file).
        self.checks_names = getattr(catalog, "check_file_names", True)
        self.name_words, self.file_words = SeenTable(), SeenTable()
        self.short_names = SeenTable()
        self.print_rows, self.name_prints = array("q"), array("Q")
        self.own_files = 0
        # row, recipient, file name, its words not of the row's name (None: all of them) and
        # those of it
        self.unnamed_files: list[tuple[int, int, str, str | None, str]] = []
        self.unnamed_limit = _UNNAMED_FIRST  # when to drop those whose words became common
        self.row_names = _RowName(0, "", frozenset(), (), True)  # the last row's, for _note_file
        # Rows with a ? standing for a lost letter (a spreadsheet's plain CSV writes ? for each
        # letter its code page lacks, and a later save as Unicode keeps them), unless the
        # manifest says check_question_marks: false: rejected when a column the letter prints
        # has one, else warned of. Each kind: how many rows, the first few, and the first cell.
        self.checks_questions = getattr(catalog, "check_question_marks", True)
        self.questions, self.unprinted_questions = _NotedRows(), _NotedRows()
        self.question_cell = self.unprinted_cell = ""
        self._choices: dict[str, Choice] = {}
        self._needs: dict[str, _Needs] = {}
        # Of each set that attaches nothing (attachment: none), the rows naming a file all
        # the same: how many, and the first few.
        self.unattached: dict[str, _NotedRows] = {}

    def start(self, header: list[str], source: str) -> None:
        """Take the header record: normalise names, find the columns, check the templates."""
        names = [normalise_header(cell) for cell in header]
        choice_column = self.catalog.column
        for index, name in enumerate(names):
            if choice_column and name.casefold() == choice_column.casefold():
                names[index] = choice_column
        self._check_names(names, source)
        # A set's columns are checked at the first row picking it (_template_needs): a set
        # added for later files must not stop an older file none of whose rows picks it.
        self.by_set = hasattr(self.catalog, "check_set")
        columns = [name for name in names if name]
        if self.by_set:
            catalog: Any = self.catalog
            broken, unfit = catalog.check(columns, sets=())
        else:
            broken, unfit = self.catalog.check(columns)
        headings = (
            ("templates do not compile", broken),
            ("templates do not fit the columns", unfit),
        )
        found = [f"{heading}: {'; '.join(problems)}" for heading, problems in headings if problems]
        if found:
            raise TemplateError(f"{source}: {'; '.join(found)}")

        self.names = names
        self.width = len(names)
        self.named = [(index, name) for index, name in enumerate(names) if name]
        # What the column names add to each row's manifest line ("name": "", per column), and
        # whether a row whose cells all fit in a header can pass the row limit (per file).
        self.names_chars = sum(len(name) + 6 for _, name in self.named)
        self.short_rows_fit = self.width * MAX_HEADER_VALUE + self.names_chars <= MAX_ROW_CHARS
        self.named_width = self.named[-1][0] + 1
        self.unnamed = [index for index, name in enumerate(names) if not name]
        self.index = {name: index for index, name in self.named}
        self.email_at = self.index["Email"]
        # The cells compared between rows of one address: all but Email (its case may vary).
        self.other_names = names[: self.email_at] + names[self.email_at + 1 :]
        self.prints = _RowPrints(len(self.other_names))
        self.file_at = self.index.get("Attachment_File")
        self.other_file_at = None  # where Attachment_File is among those cells
        if self.file_at is not None:
            self.other_file_at = self.file_at - (self.file_at > self.email_at)
        self.file_lookalike = None if self.file_at is not None else _like_attachment_file(names)
        self.has_extra = any(column in self.index for column in ("Cc", "Bcc", "Reply_To"))
        self.choice_at = self.index.get(choice_column) if choice_column else None
        self.name_at = [index for index, name in self.named if _is_name_column(name)]
        if self.checks_questions:
            self._question_columns()
        self.report.header = [name for name in names if name]
        self.report.warnings = copy_column_warnings(self.report.header, self.catalog)
        subject_warnings = getattr(self.catalog, "subject_warnings", None)
        if subject_warnings is not None:
            self.report.warnings += subject_warnings()
        self.header_pending = False

    def check(self, row: int, record: list[str]) -> None:
        """Check one record; emit it, or file it as rejected, duplicate, skipped or empty."""
        report = self.report
        text = "".join(record)
        if not text.strip():
            report.empty += 1
            return
        report.rows += 1
        report.last_row = row
        if "\n" in text or "\r" in text:
            self._check_swallowed_rows(row, record)
        values = self._shape(row, record, bom="\ufeff" in text)
        if values is None:
            return
        email_text = values[self.email_at]
        problem = self._size_problem(values)
        if problem:
            self._reject(row, problem[0], problem[1], email_text)
            return
        if _SUSPECT.search("".join(values)):
            problem = self._control_problem(values)
            if problem:
                self._reject(row, problem[0], problem[1], email_text)
                return

        choice = self._choose(values[self.choice_at] if self.choice_at is not None else "")
        if choice.kind == "skip":
            reason = choice.reason or "skipped by Status"
            report.skipped.append({"row": row, "reason": reason, "email": mask(email_text)})
            address = parse_address(email_text) if email_text else None
            identity = self._recipient(email_text, address)
            self._own_file(row, values, identity, sent=False)
            self._claim_address(row, values, address, sent=False)
            self._note_names(row, values, identity)
            return
        if self.checks_questions and "?" in text:  # a skipped row prints nothing
            problem = self._question(row, values)
            if problem:
                self._reject(row, problem[0], problem[1], email_text)
                return
        # Every problem of the row is named at once, so one round of fixes clears it.
        problems: list[tuple[str, str]] = []
        template = choice.template if choice.kind == "template" else None
        if not template:
            problems.append((self.catalog.column or "", self._unknown(choice, values)))
        address = None
        if not email_text:
            problems.append(("Email", "Email is missing"))
        else:
            address = parse_address(
                email_text, check_deliverability=self.rules.check_deliverability
            )
            if address.problem:
                problems.append(("Email", _several_in_email(email_text) or address.problem))
        attachment = None
        went: SentCopy | None = None  # the same letter, sent to the address under another file
        if template:
            needs = self._template_needs(template, row)
            if needs.mode == "none" and self._cell(values).strip():
                self.unattached.setdefault(template, _NotedRows()).add(row)
            for name, index in needs.columns:
                if not values[index] and name != "Email":
                    problems.append((name, _empty_but_used(name, template)))
            attachment = self._attachment(values, needs, problems, template, row)
            if attachment is not None and needs.default and not self._cell(values):
                self._default_given(template, attachment)
            elif attachment is not None and self.earlier is not None and address is not None:
                self._earlier_file(attachment, address, problems)
            if (
                attachment is not None
                and not problems
                and address is not None
                and self._cell(values)
            ):
                self._sent_file(attachment, address.email, template, problems)
                if not problems and self.sent_files is not None:
                    went = self.sent_files.sent_before(attachment, address.email, template)
            if went is None and not problems and address is not None and self.sets is not None:
                went = self.sets.sent_before(address.email, template)
        if went is not None and not problems:
            source = went.source or went.campaign
            report.skipped.append(
                {
                    "row": row,
                    "reason": sent_under_reason(went),
                    "outcome": held_under_outcome(went),
                    "file": source,
                }
            )
            report.sent_under[source] = report.sent_under.get(source, 0) + 1
            report.doubt_under += held_under_outcome(went) == MAYBE_SENT_UNDER
            self._own_file(row, values, self._recipient(email_text, address), sent=False)
            self._claim_address(row, values, address, sent=False)
            return
        file_name = attachment.name if attachment else None
        extra = self._extra_recipients(values, problems)
        copied = (
            self._copied_recipients(extra.named, address, template, problems) if extra.named else []
        )
        fields: dict[str, str] = {}
        if template and not problems and address is not None:
            fields = {name: values[index] for index, name in self.named}
            failure = self.trials.render(row, template, fields)
            if failure:
                problems.append(("", f"its letter does not render: {failure.rstrip('.')} {_FIX}"))
        identity = self._recipient(email_text, address)
        self._note_names(row, values, identity)
        # Passed on unless rejected below or a duplicate (of a row passed on or not).
        sent = not problems and address is not None and not self.seen.holds(identity)
        shared = self._own_file(row, values, identity, sent=sent, found=attachment)
        if shared or problems or address is None:
            first_row, columns = self._claim_address(row, values, address, sent=False) or (0, "")
            same = _Held(first_row, columns) if columns else None
            self._hold(row, problems, email_text, shared, same)
            return

        # One email per address per file: the same address under another Status (an offer
        # and a rejection) or with another Name is held back with its first row, never a
        # second letter or the first row's letter to the wrong person.
        earlier = self._claim_address(row, values, address, sent=True)
        if earlier is not None:
            first_row, columns = earlier
            if columns:
                self._hold(row, [], email_text, None, _Held(first_row, columns))
            else:
                duplicate = {"row": row, "first_row": first_row, "email": mask(address.email)}
                report.duplicates.append(duplicate)
            return

        report.valid += 1
        self.sent_addresses.add(row, email_text)  # shown if the row is withdrawn
        if file_name and self._cell(values):
            self._note_file(row, values, identity, file_name)
        for column, key in copied:  # a later row's Email may be one of them
            self.copied_rows.append(row << 1 | (column == "Bcc"))
            self.copied_keys.append(key)
        assert template is not None  # a row without a set was rejected above
        self.emit(
            {
                "row": row,
                "email": address.email,
                "name": values[self.index["Name"]] if "Name" in self.index else "",
                "template": template,
                "attachment": file_name,
                # its recipient's own (named in Attachment_File), not its set's default
                "own_attachment": bool(file_name and self._cell(values)),
                # as listed now: a file changed by the time the row is sent is not sent
                "attachment_size": attachment.size if attachment else None,
                "attachment_tag": (attachment.tag or None) if attachment else None,
                "fields": fields,
                "cc": extra.cc,
                "bcc": extra.bcc,
                "reply_to": extra.reply_to,
            }
        )

    def _check_names(self, names: list[str], source: str) -> None:
        """Refuse a header without Email or with one column name twice."""
        if "Email" not in names:
            raise InputFileError(f"{source}: no Email column: the header has {names!r}")
        seen: dict[str, int] = {}
        for position, name in enumerate(names, start=1):
            if name and name in seen:
                raise InputFileError(
                    f"{source}: column {name} appears twice: "
                    f"columns {seen[name]} and {position} of the header"
                )
            seen[name] = position

    def _shape(self, row: int, record: list[str], *, bom: bool) -> list[str] | None:
        """Return the stripped values padded to the header's width, or None when rejected.

        A byte-order mark (``bom``) at either end of a cell goes with its spaces: files glued
        together from "UTF-8 with BOM" exports, or text pasted from them, carry it invisibly.
        """
        count = len(record)
        too_wide = count > self.width and any(cell.strip() for cell in record[self.width :])
        if too_wide or count < self.named_width:
            email = record[self.email_at] if self.email_at < count else ""
            self._reject(row, "", f"{count} fields, header has {self.width}", email)
            return None
        if bom:
            values = [_EDGE_SPACE.sub("", cell) for cell in record[: self.width]]
        else:
            values = [cell.strip() for cell in record[: self.width]]
        if count < self.width:
            values.extend([""] * (self.width - count))
        for index in self.unnamed:
            if values[index]:
                column = f"column {index + 1} (no header)"
                reason = "value in a column without a header name"
                self._reject(row, column, reason, values[self.email_at])
                return None
        return values

    def _check_swallowed_rows(self, row: int, values: list[str]) -> None:
        """Fail the file when a quote left open made later lines part of one field.

        Read on, such a file would silently lose every row up to the next quote; a field
        whose continuation lines look like records is that, not a multi-line value.
        """
        delimiter = self.report.delimiter
        for value in values:
            if "\n" not in value and "\r" not in value:
                continue
            lines = value.splitlines()[1:]
            looks_like_rows = [
                line for line in lines if line.count(delimiter) >= max(1, self.width - 2)
            ]
            if looks_like_rows or len(value) > MAX_CELL:
                first = (looks_like_rows or lines or [""])[0]
                raise InputFileError(
                    f"{self.report.source}: unreadable CSV at line {row}: a quote opened on "
                    f"this line is not closed where expected, so the next {len(lines)} "
                    f"line(s) were read into one field (the first: {first[:60]!r}); fix the "
                    f"quotes on line {row}"
                )

    def _size_problem(self, values: list[str]) -> tuple[str, str] | None:
        """Return (column, reason) for a row or cell too long to send or a cell too long to
        put in a header."""
        if self.short_rows_fit and max(map(len, values)) <= MAX_HEADER_VALUE:
            return None  # below every limit: most rows
        for index, name in self.named:
            length = len(values[index])
            if length > MAX_CELL:
                return name, f"{name} is {length} characters long (at most {MAX_CELL})"
            if name in HEADER_COLUMNS and name not in ("Cc", "Bcc") and length > MAX_HEADER_VALUE:
                return name, (
                    f"{name} is {length} characters long; at most {MAX_HEADER_VALUE} go into "
                    "a mail header"
                )
        total = sum(map(len, values)) + self.names_chars
        if total > MAX_ROW_CHARS:
            return "", (
                f"the row holds {total} characters with its column names; at most "
                f"{MAX_ROW_CHARS} fit in a batch"
            )
        return None

    def _control_problem(self, values: list[str]) -> tuple[str, str] | None:
        """Return (column, reason) for the first forbidden or undecodable character, if any."""
        for index, name in self.named:
            if _UNDECODABLE.search(values[index]):
                return name, f"bytes that are not valid {self.report.encoding} in {name}"
        for index, name in self.named:
            value = values[index]
            if name in HEADER_COLUMNS:
                found = _CONTROL.search(value) or _BIDI.search(value)
            else:
                found = _TEXT_CONTROL.search(value)
            if found is None:
                continue
            char = found.group()
            if char in _LINE_BREAKS:
                return name, f"line break in {name}"
            label = _CONTROL_NAMES.get(ord(char), f"U+{ord(char):04X}")
            return name, f"control character ({label}) in {name}"
        return None

    def _choose(self, value: str) -> Choice:
        """Ask the catalog which template set a Status value picks (cached per value)."""
        choice = self._choices.get(value)
        if choice is None:
            choice = self.catalog.choose(value)
            if len(self._choices) < 10_000:
                self._choices[value] = choice
        return choice

    def _unknown(self, choice: Choice, values: list[str]) -> str:
        """Word the reason for a Status value that picks no template."""
        if choice.reason:
            return choice.reason
        value = values[self.choice_at] if self.choice_at is not None else ""
        column = self.catalog.column or "Status"
        return f"{column} is empty" if not value else f"unknown {column} value {value!r}"

    def _template_needs(self, template: str, row: int) -> _Needs:
        """Return what a template set needs from a row (asked once per set, at its first
        ``row``); raise TemplateError when its templates use a column the file lacks, and
        InputFileError when the set needs an Attachment_File column the file lacks (see
        _check_file_column)."""
        needs = self._needs.get(template)
        if needs is None:
            catalog: Any = self.catalog
            unfit = catalog.check_set(template, self.report.header) if self.by_set else []
            if unfit:
                raise TemplateError(
                    f"{self.report.source}: templates do not fit the columns: {'; '.join(unfit)}"
                )
            required = getattr(catalog, "required_columns", None) or catalog.variables
            used = required(template)
            mode_of = getattr(catalog, "attachment_mode", None)
            if mode_of is not None:
                mode = mode_of(template)
            else:
                mode = "required" if catalog.needs_attachment(template) else "none"
            default_of = getattr(catalog, "default_attachment", None)
            default = default_of(template) if default_of is not None else None
            self._check_file_column(template, mode, default, row)
            if mode == BY_COLUMN:  # a folder without manifest: the CSV says
                mode = "required" if "Attachment_File" in self.index else "none"
            needs = _Needs(
                columns=[(name, index) for index, name in self.named if name in used],
                mode=mode,
                default=default,
            )
            self._needs[template] = needs
        return needs

    def _check_file_column(self, template: str, mode: str, default: str | None, row: int) -> None:
        """Refuse the file, at ``row``, the first of ``template``, when it has no Attachment_File
        column and the set needs one: it attaches each row's own file (``mode`` required, no
        ``default``), or the file has a header spelt like the column.

        Else each row of a set that gives every row its own file is rejected alone, its
        Attachment_File "empty", the missing column never named; and a set that may attach the
        files rows name (optional, by_column, a default_attachment) sends its letters without
        them, or each with the default.
        """
        if self.file_at is not None or mode == "none":
            return
        own = mode == "required" and default is None
        if own or self.file_lookalike is not None:
            raise InputFileError(
                _no_file_column(
                    self.report.source,
                    template,
                    row,
                    self.report.header,
                    self.file_lookalike,
                    None if own else default,
                )
            )

    def _attachment(
        self,
        values: list[str],
        needs: _Needs,
        problems: list[tuple[str, str]],
        template: str,
        row: int,
    ) -> Lookup | None:
        """Return the resolved attachment (its name, size and tag), or None for none (a problem
        is added); raise TemplateError when it is ``template``'s default_attachment and storage
        has no such file (or one too large): every row given it would be rejected alike."""
        if needs.mode == "none":
            return None
        raw = self._cell(values) or (needs.default or "")
        if not raw and needs.mode == "optional":
            return None
        found = self.attachments.lookup(raw, max_message_bytes=self.rules.max_message_bytes)
        if found.problem and needs.default and not self._cell(values):
            raise TemplateError(
                f"{MANIFEST}: set {template!r}: default_attachment {raw}: "
                f"{found.problem.rstrip('.')};"
                f" every row of the set whose Attachment_File is empty (the first: row {row})"
                " would attach it, so nothing is sent (put the file in the attachments folder"
                f" under that name, or correct default_attachment in {MANIFEST}; then run the"
                " file again)"
            )
        problem = found.problem or self._pdf_problem(found, default=not self._cell(values))
        if problem:
            problems.append(("Attachment_File", problem))
            return None
        return found

    def _pdf_problem(self, found: Lookup, *, default: bool) -> str | None:
        """Why the file ``found``, named .pdf, is no PDF, from its start where storage reads
        it at little cost (a folder; a file on S3 is checked as it is sent); a set's
        ``default`` file is read once for all its rows."""
        if self.contents is None or not is_pdf_name(found.name):
            return None
        if default and found.name in self.default_starts:
            return self.default_starts[found.name]
        head = self.contents.start(found.name, found.tag, PDF_HEAD_BYTES)
        problem = None if head is None else pdf_problem(found.name, head)
        if default:
            self.default_starts[found.name] = problem
        return problem

    def _cell(self, values: list[str]) -> str:
        """The row's Attachment_File cell ("" without the column)."""
        return values[self.file_at] if self.file_at is not None else ""

    def _default_given(self, template: str, found: Lookup) -> None:
        """Note that a row of ``template`` gets its default_attachment, ``found``: a file
        for many, which check_defaults and compare_contents hold to no row naming it."""
        key = hash(self.attachments.same_file(found.name) or found.name)
        if key not in self.defaults:
            self.defaults[key] = _Default(found.name, template, found.size)

    def check_defaults(self) -> None:
        """Refuse the file when a default_attachment rows were given is a file a row names
        in Attachment_File (by its name or a link's), or the file of an earlier run's letter
        (``earlier``): its recipient's own letter would go to everyone the set gives its
        default. Copies are compare_contents'."""
        for key, default in self.defaults.items():
            owner = self.owners.get(key)
            if owner is not None:
                named = self.owner_names.get(key, default.name)
                raise TemplateError(_default_owned(self.report.source, default, owner[0], named))
            earlier = self.earlier
            entry = None if earlier is None else earlier.entry(key)
            if earlier is not None and entry is not None:  # an earlier letter's own file
                self._default_sent(default, entry, earlier.name(entry) or default.name)
            if self.sent_files is not None:  # a copy of a letter, of any campaign
                tag = self.attachments.tag(default.name)
                letter = self.sent_files.anyones(Lookup(default.name, default.size, tag=tag))
                if letter is not None:
                    raise TemplateError(_default_of_a_letter(self.report.source, default, letter))

    def withdraw(self) -> None:
        """Reject the emitted rows a later row showed must not go out (it named their file for
        another recipient, has their address with other values, or has as its Email an address
        in their Cc or Bcc): each with the address it was passed on with, read back in row
        order among the other rejects."""
        if self.withdrawn and self.sent_before is not None:
            self.sent_earlier = frozenset(self.sent_before(frozenset(self.withdrawn)))
            self._keep_sent_named_like()
        self.report.withdrawn = frozenset(self.withdrawn)
        self.report.valid -= len(self.withdrawn)
        if self.withdrawn:
            self.report.rejected.merge(self._withdrawn_rejections())
            self.report.rejected.merge(map(self._held_rejection, self.held))
            # Every row withdrawn was passed on, so its address was kept; one that was not would
            # still be listed, without it, never lost.
            leftover = sorted(self.withdrawn.items())
            self.report.rejected.merge(self._withdrawal(row, why, "") for row, why in leftover)

    def _keep_sent_named_like(self) -> None:
        """Pass on again each row withdrawn only for its file named like another recipient's
        letter when an earlier run of the file sent it (a row added since named that
        recipient): rejected, it would read as a row to fix, though its letter went. Passed
        on, the run skips it as already sent; a warning says it needs nothing."""
        kept = []
        for row in sorted(self.sent_earlier):
            why = self.withdrawn.get(row)
            if isinstance(why, _NamedLike) and why.before is None:
                del self.withdrawn[row]
                kept.append(_sent_named_like(row, why))
        if len(kept) > _SHOWN_SENT_NAMED_LIKE:
            more = len(kept) - _SHOWN_SENT_NAMED_LIKE
            kept[_SHOWN_SENT_NAMED_LIKE:] = [
                f"{more:,} more rows whose files are named like other recipients' letters were"
                " sent by an earlier run of this file: they are not sent again and need nothing"
            ]
        self.report.warnings.extend(kept)

    def close(self) -> None:
        """Drop the spools the intake kept for itself (the report's lists are the caller's)."""
        self.sent_addresses.close()
        self.held.close()
        prints: _RowPrints | None = getattr(self, "prints", None)  # start() makes it
        if prints is not None:
            prints.close()

    def _withdrawn_rejections(self) -> Iterator[dict[str, Any]]:
        """Take the withdrawn rows out of ``withdrawn`` as rejects, in row order, with their
        addresses (the rows passed on are kept in row order: no sort, no second table)."""
        for row, masked in self.sent_addresses:
            why = self.withdrawn.pop(row, None)
            if why is not None:
                yield self._withdrawal(row, why, masked)
                if not self.withdrawn:
                    return

    def _own_file(
        self,
        row: int,
        values: list[str],
        recipient: int,
        *,
        sent: bool,
        found: Lookup | None = None,
    ) -> _Shared | None:
        """Record the file the row's Attachment_File cell names (a file of default_attachment
        is many rows' by design) as ``recipient``'s; ``sent``: the row is about to be passed
        on; ``found``: the file the cell resolved to, when the row got that far. Return the
        file, the other recipient's row and its name for the file when rows of two recipients
        name it (the row must not be sent), and withdraw the row passed on before that was
        known. Rows skipped or rejected for other reasons count too: their file is their
        recipient's all the same. Names the attachments location links to one file (a
        symlink, hard links) are that one file.

        Before a file is contested, at most one row naming it has been passed on (one
        recipient, whose other rows are duplicates or held for the address: _claim_address):
        the table keeps that row once there is one, else the first row. Once contested, every
        later row naming it is held back. Each file found is also filed by its size, for
        compare_contents.
        """
        index = self.file_at
        if index is None or not values[index] or not values[self.email_at]:
            return None  # no file of its own, or no one to tell apart from another
        found = found or self.attachments.lookup(values[index])
        name = found.name or values[index]
        linked = self.attachments.same_file(name)
        key = hash(linked or name)
        if key in self.contested:
            return _Shared(name, self.contested[key], self.owner_names.get(key, name))
        owner = self.owners.add(key, row, recipient, flag=sent)
        if owner is None:
            if linked:
                self.owner_names[key] = name
            if self.sizes is not None and found.name:
                first = self.sizes.add(size_key(found.size), row, recipient)
                if first is not None and not first[1]:
                    self.crowded.add(found.size)
            return None
        owner_row, same, owner_sent = owner
        if same:
            if sent:  # the recipient's row that goes out: the one to withdraw if need be
                self.owners.put(key, row, recipient, flag=True)
                if linked:
                    self.owner_names[key] = name
            return None
        self.contested[key] = owner_row
        if self.sizes is not None and found.name:
            self.crowded.add(found.size)  # named for two: any copy of it is another's too
        owner_name = self.owner_names.get(key, name)
        if owner_sent:
            self._withdraw(owner_row, _Shared(owner_name, row, name))
        return _Shared(name, owner_row, owner_name)

    def _earlier_file(
        self, found: Lookup, address: Address, problems: list[tuple[str, str]]
    ) -> None:
        """Add the problem of a row whose own file ``found`` is a link to a file an earlier
        run sent to another recipient as theirs; note the row's recipient for
        compare_contents when the file has the size of such a file. The file's very name is
        the claim's to refuse."""
        earlier = self.earlier
        if earlier is None or address.problem or not address.email:
            return
        linked = self.attachments.same_file(found.name)
        key = hash(linked or found.name)
        if not earlier.has_size(found.size):
            return  # neither one of those files nor a copy of one
        who = earlier.who(address.email)
        entry = earlier.entry(key)
        if entry is not None and earlier.belongs(entry, who):
            return  # the recipient's own earlier letter (_earlier_copy knows them by it)
        self.earlier_who.add(key, 0, who)
        if entry is None:
            return
        named = earlier.name(entry)
        if named is not None and named != found.name:
            row, masked = earlier.letter(entry)
            problems.append(("Attachment_File", _earlier_letter(found.name, named, row, masked)))

    def _sent_file(
        self, found: Lookup, email: str, template: str, problems: list[tuple[str, str]]
    ) -> None:
        """Add the problem of a row whose own file ``found`` holds the bytes of a letter's
        file that went to another person, in any campaign (``sent_files``)."""
        if self.sent_files is None:
            return
        letter = self.sent_files.another(found, email, template)
        if letter is None:
            return
        if letter.campaign == self.sent_files.campaign:
            reason = _earlier_letter(
                found.name, letter.attachment, letter.row, letter.masked, copy=True
            )
        else:
            reason = letter_of_another_campaign(found.name, letter)
        problems.append(("Attachment_File", reason))

    def _recipient(self, email: str, address: Address | None = None) -> int:
        """Who a row is for, as a hash: its address as sent to (parsed now unless given),
        or, when it does not parse, the cell as typed in any case."""
        if address is None and email:
            address = parse_address(email)
        if address is not None and address.key:
            return hash(address.key)
        return hash(email.strip().casefold())

    def _extra_recipients(self, values: list[str], problems: list[tuple[str, str]]) -> _Extra:
        """Return the row's Cc, Bcc and Reply_To checked; a problem found is added to
        ``problems``."""
        if not self.has_extra:
            return _Extra([], [], None, [])
        lists: dict[str, list[str]] = {}
        named: list[tuple[str, str]] = []
        for column in ("Cc", "Bcc", "Reply_To"):
            index = self.index.get(column)
            cells = _LIST_SPLIT.split(values[index]) if index is not None else []
            lists[column] = []
            for cell in cells:
                if not cell.strip():
                    continue
                parsed = parse_address(cell, check_deliverability=self.rules.check_deliverability)
                if parsed.problem:
                    problems.append((column, f"{column}: {parsed.problem}"))
                    continue
                lists[column].append(parsed.email)
                if column != "Reply_To":  # it receives nothing
                    named.append((column, parsed.key))
        if len(lists["Reply_To"]) > 1:
            problems.append(("Reply_To", "Reply_To holds more than one address"))
        total = 1 + len(lists["Cc"]) + len(lists["Bcc"])
        if total > MAX_RECIPIENTS:
            reason = f"{total} recipients (Email, Cc, Bcc); SES allows {MAX_RECIPIENTS}"
            problems.append(("Cc", reason))
        reply_to = lists["Reply_To"][0] if lists["Reply_To"] else None
        return _Extra(lists["Cc"], lists["Bcc"], reply_to, named)

    def _copied_recipients(
        self,
        named: list[tuple[str, str]],
        address: Address | None,
        template: str | None,
        problems: list[tuple[str, str]],
    ) -> list[tuple[str, int]]:
        """Add the problem of each address in Cc or Bcc (``named``: column, key) that an
        earlier row has as its Email, or an earlier run mailed: that person would get this
        row's letter. Return the others, (column, hash of the key), which a later row's Email
        may still be (see withdraw_copies). The row's own address in Cc is only a copy of its
        To."""
        own = address.key if address is not None else ""
        later = []
        for column, key in dict.fromkeys(named):
            if key == own:
                continue
            first = self.seen.get(hash(key))
            if first is None:
                later.append((column, key))
            else:
                problems.append((column, _copied_recipient(column, first[0])))
        mailed: Collection[str] = ()
        if later and self.mailed is not None and address is not None and template:
            keys = list(dict.fromkeys(key for _, key in later))
            mailed = self.mailed.mailed(keys, address.email, template)
        for column, key in later:
            if key in mailed:
                problems.append((column, _mailed_recipient(column)))
        return [(column, hash(key)) for column, key in later if key not in mailed]

    def withdraw_copies(self) -> None:
        """Withdraw each row passed on whose Cc or Bcc names the Email of a row read after it
        (those of earlier rows were rejected as read)."""
        for packed, key in zip(self.copied_rows, self.copied_keys, strict=True):
            first = self.seen.get(key)
            if first is not None:
                row, column = packed >> 1, "Bcc" if packed & 1 else "Cc"
                self.withdrawn[row] = _Copied(column, first[0], self.withdrawn.get(row))
        del self.copied_rows[:], self.copied_keys[:]

    def _claim_address(
        self, row: int, values: list[str], address: Address | None, *, sent: bool
    ) -> tuple[int, str | None] | None:
        """Record the row's address; ``sent``: the row is passed on unless its address was seen.

        For an address an earlier row has, return that first row and the columns the two
        differ in (this row is held back), None when they hold the same values (a duplicate).
        A first row passed on that differs is withdrawn: which of the two is wrong, only a
        person can tell. Rows skipped or rejected for other reasons count too: a letter goes
        to an address only when every row for it agrees. Two names of one file (links) are
        one value, as for shared files.
        """
        if address is None or not address.key:
            return None  # no address to compare: its row is rejected for it
        others = values[: self.email_at] + values[self.email_at + 1 :]
        if self.other_file_at is not None:
            linked = self.attachments.same_file(others[self.other_file_at])
            if linked:
                others[self.other_file_at] = linked
        first = self.seen.add(hash(address.key), row, hash(tuple(others)), flag=sent)
        if first is None:
            self.prints.add(row, others)
            return None
        first_row, same, first_sent = first
        if same:
            return first_row, None
        columns, number = self._columns_differing(first_row, others)
        if first_sent:
            self._withdraw(first_row, _SameAddress(row * _COLUMN_TEXTS + number))
        return first_row, columns

    def _columns_differing(self, first_row: int, others: list[str]) -> tuple[str, int]:
        """Name the columns in which ``others`` (a row's cells but Email) differ from those of
        ``first_row``, the first row of its address; return the names and their number in
        ``column_texts``."""
        before = self.prints.get(first_row)
        after = array("I", _prints(others))
        names = tuple(
            name
            for name, old, new in zip(self.other_names, before, after, strict=False)
            if old != new
        )
        number = self._text_numbers.get(names, 0)
        if number:
            return self.column_texts[number], number
        text = ", ".join(names[:_SHOWN_COLUMNS]) or self.column_texts[0]
        if len(names) > _SHOWN_COLUMNS:
            text += f" and {len(names) - _SHOWN_COLUMNS} more columns"
        if len(self.column_texts) < _COLUMN_TEXTS:
            number = self._text_numbers[names] = len(self.column_texts)
            self.column_texts.append(text)
        return text, number

    def _withdraw(self, row: int, why: _Shared | _SameAddress) -> None:
        """Withdraw ``row``, passed on, for ``why``; one withdrawn for its file and for its
        address keeps both (the first later row of each), so its reject names both."""
        held = self.withdrawn.setdefault(row, why)
        if isinstance(held, _Shared):
            if held.same_address is None and not isinstance(why, _Shared):
                self.withdrawn[row] = held._replace(same_address=why)
        elif isinstance(why, _Shared) and not isinstance(held, (_SameContent, _Copied, _NamedLike)):
            self.withdrawn[row] = why._replace(same_address=held)

    def _hold(
        self,
        row: int,
        problems: list[tuple[str, str]],
        email: str,
        shared: _Shared | None,
        same: _Held | None,
    ) -> None:
        """Reject a row for ``problems`` and for what holds it back for another row: that
        row's recipient has its file (``shared``), or that row has its address with other
        values (``same``). When that row was passed on, then withdrawn, and earlier runs can
        be asked, the reject waits for withdraw(): its reason says if one sent that row."""
        if self.sent_before is not None and any(
            held is not None and held.other_row in self.withdrawn for held in (shared, same)
        ):
            entry = {"row": row, "email": mask(email), "problems": problems}
            self.held.append({**entry, "shared": shared, "same": same})
            return
        self._reject_all(row, [*problems, *self._held_problems(shared, same)], email)

    def _held_rejection(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The reject of a row _hold kept back until the earlier runs were asked."""
        shared = _Shared(*entry["shared"]) if entry["shared"] else None
        same = _Held(*entry["same"]) if entry["same"] else None
        problems = [(column, reason) for column, reason in entry["problems"]]
        column, reason = _joined([*problems, *self._held_problems(shared, same)])
        return _rejection(entry["row"], column, reason, entry["email"])

    def _held_problems(self, shared: _Shared | None, same: _Held | None) -> list[tuple[str, str]]:
        """(column, reason) of what holds a row back for another row (see _hold), saying so
        when an earlier run of the file sent that row."""
        problems = []
        if shared is not None:
            sent = (False, shared.other_row in self.sent_earlier)
            reason = _shared_file(shared.name, shared.other_row, shared.other_name, sent=sent)
            problems.append(("Attachment_File", reason))
        if same is not None:
            sent = (False, same.other_row in self.sent_earlier)
            problems.append(("Email", _same_address(same.other_row, same.columns, sent=sent)))
        return problems

    def _withdrawal(self, row: int, why: _Withdrawal, masked: str) -> dict[str, Any]:
        """The reject of a row withdrawn for ``why``, found at later rows (or at the end)."""
        column, reason = _joined(self._withdrawal_problems(row, why))
        return _rejection(row, column, reason, masked)

    def _withdrawal_problems(self, row: int, why: _Withdrawal) -> list[tuple[str, str]]:
        """(column, reason) of each thing the withdrawn ``row`` was withdrawn for."""
        if isinstance(why, _Copied):
            problems = [] if why.before is None else self._withdrawal_problems(row, why.before)
            reason = _copied_recipient(why.column, why.other_row, sent=row in self.sent_earlier)
            return [*problems, (why.column, reason)]
        if isinstance(why, _NamedLike):
            problems = [] if why.before is None else self._withdrawal_problems(row, why.before)
            return [*problems, ("Attachment_File", _named_like(why))]
        if isinstance(why, _SameContent):
            problems = [] if why.before is None else self._withdrawal_problems(row, why.before)
            if why.earlier is not None:
                reason = _earlier_letter(
                    why.name,
                    why.other_name,
                    why.other_row,
                    why.earlier,
                    copy=True,
                    sent=row in self.sent_earlier,
                )
                return [*problems, ("Attachment_File", reason)]
            sent = (row in self.sent_earlier, why.other_row in self.sent_earlier)
            reason = _same_content(why.name, why.other_row, why.other_name, sent=sent)
            return [*problems, ("Attachment_File", reason)]
        problems = []
        sent = (row in self.sent_earlier, False)  # the later row was not passed on
        if isinstance(why, _Shared):
            reason = _shared_file(why.name, why.other_row, why.other_name, earlier=False, sent=sent)
            problems.append(("Attachment_File", reason))
            same_address = why.same_address
        else:
            same_address = why
        if same_address is not None:
            later_row, number = divmod(same_address, _COLUMN_TEXTS)
            columns = self.column_texts[number]
            problems.append(("Email", _same_address(later_row, columns, sent=sent)))
        return problems

    def compare_contents(self) -> None:
        """Withdraw each row passed on whose file holds the same bytes as a file of another
        recipient's row (or of a file named for two recipients); rows not passed on keep
        their reason.

        Only files of one size can be copies: the files of each size that rows of two
        recipients name are read (mailmatrix.core.contents), each file once, the file of a
        few rows of one recipient once for them all. A default_attachment rows were given
        takes part as no one's file: its size's files are compared whenever a row names one,
        and a copy of it that a row names refuses the file (TemplateError, as check_defaults).
        """
        if self.contents is None or self.sizes is None:
            return
        # A default of an earlier letter's size is compared with those files, apart from them
        # though both are no row's (``many``: of that size, the default is everyone's).
        everyones: set[int] = set()
        for key, default in self.defaults.items():
            if self.earlier is not None and self.earlier.has_size(default.size):
                everyones.add(key)
                self.crowded.add(default.size)
            elif self.sizes.holds(size_key(default.size)):  # a row's own file has its size
                self.crowded.add(default.size)
        if self.earlier is not None:
            for key, size in self.earlier.files():  # those no row names: another's files
                if not self.owners.holds(key) and self.sizes.holds(size_key(size)):
                    self.crowded.add(size)
        if not self.crowded:
            return
        for listed in self.attachments.by_size(self.crowded).values():
            names: list[str] = []
            rows, recipients, many, keys = array("q"), array("q"), bytearray(), array("q")
            given: dict[int, _Default] = {}  # of the group: the default attachments
            sent_files: set[int] = set()  # of the group: earlier letters' files
            for name in listed:
                key = hash(self.attachments.same_file(name) or name)
                owner = self.owners.get(key)
                if owner is None:
                    entry = None if self.earlier is None else self.earlier.entry(key)
                    if key in self.defaults:
                        given[len(names)] = self.defaults[key]
                    elif entry is not None:
                        sent_files.add(len(names))
                    else:
                        continue  # no row names it
                    # the defaults' and the earlier letters' recipient, no row's: hash() is
                    # never -1
                    owner = (0, -1, False)
                row, recipient, sent = owner
                keys.append(key)
                names.append(name)
                rows.append(row << 1 | sent)
                recipients.append(recipient)
                many.append(key in self.contested or key in everyones)
            if len(names) < 2 or (not any(many) and len(set(recipients)) < 2):
                continue
            tags = [self.attachments.tag(name) for name in names]
            for file, other in copies(names, tags, recipients, many, self.contents):
                if file in given and other in given:
                    continue  # two sets' defaults: one brochure for everyone
                if file in given and other in sent_files:
                    self._default_sent(given[file], keys[other], names[other], copy=True)
                if file in sent_files and other in given:
                    self._default_sent(given[other], keys[file], names[file], copy=True)
                if file in given:
                    row, named = rows[other] >> 1, self._name_given(names[other])
                    reason = _default_owned(self.report.source, given[file], row, named, copy=True)
                    raise TemplateError(reason)
                if other in given or file in sent_files:
                    continue  # the default's own pair says it; an earlier letter went out
                row, passed = divmod(rows[file], 2)
                if other in sent_files:
                    if passed:
                        self._earlier_copy(row, keys[file], names[file], names[other])
                    continue
                if passed:
                    copy = _SameContent(
                        self._name_given(names[file]),
                        rows[other] >> 1,
                        self._name_given(names[other]),
                    )
                    self.withdrawn[row] = copy._replace(before=self.withdrawn.get(row))
        self.crowded.clear()

    def _question_columns(self) -> None:
        """Sort the columns for _question: whether any ? in one is a lost letter (the
        recipient's name, addresses, the file's name) and whether the letter prints it (its
        templates use it, or its headers do; all columns when the catalog cannot say)."""
        used_columns = getattr(self.catalog, "used_columns", None)
        printed = used_columns() | _ALWAYS_PRINTED if used_columns is not None else None
        self.strict_at = [
            name in _NO_QUESTIONS or (bool(name) and _is_name_column(name)) for name in self.names
        ]
        self.printed_at = [printed is None or name in printed for name in self.names]

    def _question(self, row: int, values: list[str]) -> tuple[str, str] | None:
        """The column and reason that reject a row whose cell of a column the letter prints
        has a ? standing for a lost letter (_lost_letter); the row is noted for the file's
        warning. A row with one only in columns the letter does not print is noted apart."""
        unprinted: tuple[int, int] | None = None
        for index, cell in enumerate(values):
            if "?" not in cell:
                continue
            at = _lost_letter(cell, self.strict_at[index])
            if at < 0 or (index == self.file_at and self.attachments.size(cell) is not None):
                continue  # a file the attachments hold under that name is named so
            if not self.printed_at[index]:
                unprinted = unprinted or (index, at)
                continue
            shown = _around(cell, at)
            self.questions.add(row)
            self.question_cell = self.question_cell or shown
            reason = (
                f"? in place of a letter in {shown!r}: {self._lost_letters()}, and the letter would"
                f" print it. Nothing was sent to this row; {_EXPORT_AGAIN}, and run it (if the ?"
                f" is meant, put check_question_marks: false in {MANIFEST})"
            )
            return self.names[index], reason
        if unprinted is not None:
            index, at = unprinted
            self.unprinted_questions.add(row)
            if not self.unprinted_cell:
                self.unprinted_cell = f"{self.names[index]}: {_around(values[index], at)!r}"
        return None

    def _lost_letters(self) -> str:
        """How the file came to hold a ? for a letter, as its encoding tells."""
        if self.report.encoding in _UNICODE_SAVED:
            return (
                "the file was saved as plain CSV (which writes ? for each letter it cannot"
                " encode) before it was saved as Unicode"
            )
        return "the file was saved as plain CSV, which writes ? for each letter it cannot encode"

    def warn_of_questions(self) -> None:
        """Say once what the rows _question noted have in common, and what to do."""
        kinds = (
            (self.questions, f"({self.question_cell!r})", "not sent", "and run it"),
            (
                self.unprinted_questions,
                f"in a column no template prints ({self.unprinted_cell})",
                "sent all the same",
                "to have the letters back",
            ),
        )
        for rows, where, outcome, then in kinds:
            if rows.count:
                many = rows.count > 1
                self.report.warnings.append(
                    f"{rows.said()} {'have' if many else 'has'} ? in place of a letter {where} and"
                    f" {'are' if many else 'is'} {outcome}: {self._lost_letters()};"
                    f" {_EXPORT_AGAIN}, {then}"
                )

    def warn_of_unattached(self) -> None:
        """Say, per set that attaches nothing, which rows name a file it does not attach."""
        for template, rows in self.unattached.items():
            many = rows.count > 1
            self.report.warnings.append(
                f"{rows.said()} {'name' if many else 'names'} a file in Attachment_File but"
                f" {'their' if many else 'its'} set {template!r} sends none (attachment: none"
                f" in {MANIFEST}): {'the files are' if many else 'the file is'} not attached"
            )

    def _note_names(self, row: int, values: list[str], recipient: int) -> None:
        """Index the words of the row's name columns: which row's recipient has each (none
        where the file has no Attachment_File column: no row names a file of its own)."""
        if not self.checks_names or self.file_at is None:
            return
        name = self._row_name(row, values)
        self.row_names = name  # for _note_file of the same row
        first_row = False
        for word in name.forms:
            first = self.name_words.add(hash(word), row, recipient)
            if first is None:
                first_row = True
            elif not first[1] and not first[2]:
                self.name_words.put(hash(word), first[0], recipient, flag=True)
        if first_row:  # rows come in order: print_rows stays sorted
            self.print_rows.append(row)
            self.name_prints.append(_name_print(name.forms))
        if name.last and len(name.last[0]) <= _SHORT_WORD:
            for word in name.last:
                self.short_names.add(hash(word), row, recipient)

    def _row_name(self, row: int, values: list[str]) -> _RowName:
        """The words of the row's name columns in their _forms (with those of O'Brien written
        without its apostrophe: obrien)."""
        text = " ".join(values[index] for index in self.name_at)
        # the parts of a word with a capital inside too (McDonald: mc, donald), as file names
        # are split there
        parts = _split_case(text)
        if text.isascii() and "'" not in text:  # most names: a form a word, all Latin
            found = [word.lower() for word in _WORD_SPLIT.split(text) if len(word) > 1]
            last = (found[-1],) if found else ()
            if parts != text:
                found += [word.lower() for word in _WORD_SPLIT.split(parts) if len(word) > 1]
            return _RowName(row, text, frozenset(found), last, True)
        words = [forms for forms, _ in _word_forms(text)]
        forms = frozenset(form for word in words for form in word)
        if parts != text:
            forms = forms.union(form for word, _ in _word_forms(parts) for form in word)
        if "'" in text or "\u2019" in text:
            joined = _word_forms(text.replace("'", "").replace("\u2019", ""))
            forms = forms.union(form for word, _ in joined for form in word)
        latin = all(_is_latin(word[0]) for word in words)
        return _RowName(row, text, forms, words[-1] if words else (), latin)

    def _note_file(self, row: int, values: list[str], recipient: int, name: str) -> None:
        """Count the words of the own file ``name`` of ``row``, passed on; keep the row for
        check_file_names when the name lacks a word of the row's name columns and has one at
        least that is not of them nor in many file names (those in more than _COMMON_WORD are
        common whatever the file's length: a file of letter-N.pdf keeps no row). A row whose
        name is written in other letters than Latin ones (陈静, Дмитрий) is kept for a word in
        such letters only: the Latin words of its file may well be its name, spelt out."""
        if not self.checks_names or not self.name_at:
            return
        self.own_files += 1
        words = _word_forms(_file_stem(name))
        rare = set()
        for word in {forms[0] for forms, _ in words}:
            counted = self.file_words.get(hash(word))
            count = counted[1] + 1 if counted else 1
            self.file_words.put(hash(word), row, count)
            if count <= _COMMON_WORD:
                rare.add(word)
        if not rare:
            return

        own = self.row_names if self.row_names.row == row else self._row_name(row, values)
        others = [
            (forms, written)
            for forms, written in words
            if own.forms.isdisjoint(forms) and (own.latin or not _is_latin(forms[0]))
        ]
        if not any(forms[0] in rare for forms, _ in others):
            return
        found = {form for forms, _ in words for form in forms}
        own_words = [forms for forms, _ in _word_forms(own.text)]
        if own_words and all(not found.isdisjoint(word) for word in own_words):
            return  # the whole of the row's name, and another's maybe (Anna_Meier_for_Jan)
        if len(others) == len(words):
            self.unnamed_files.append((row, recipient, name, None, ""))
        else:
            foreign = " ".join(written for _, written in others)
            shared = " ".join(
                written for forms, written in words if not own.forms.isdisjoint(forms)
            )
            self.unnamed_files.append((row, recipient, name, foreign, shared))
        if len(self.unnamed_files) >= self.unnamed_limit:
            self._forget_common_files()

    def _forget_common_files(self) -> None:
        """Drop the rows kept for check_file_names whose file's words all became common since;
        when still more than _UNNAMED_MAX are kept, give the check up for this file (said in
        a warning): memory stays flat for a file of a million rows."""

        def rare(name: str, others: str | None) -> bool:
            for forms, _ in _word_forms(_file_stem(name) if others is None else others):
                counted = self.file_words.get(hash(forms[0]))
                if counted is None or counted[1] <= _COMMON_WORD:
                    return True
            return False

        self.unnamed_files = [kept for kept in self.unnamed_files if rare(kept[2], kept[3])]
        if len(self.unnamed_files) < _UNNAMED_MAX:
            self.unnamed_limit = 2 * max(len(self.unnamed_files), _UNNAMED_FIRST)
            return

        self.checks_names = False
        self.unnamed_files = []
        self.name_words, self.file_words = SeenTable(), SeenTable()
        self.short_names = SeenTable()
        self.print_rows, self.name_prints = array("q"), array("Q")
        self.report.warnings.append(
            f"check_file_names: more than {_UNNAMED_MAX:,} files are named with words of no"
            " recipient's name of their row: whether a file is named like another recipient's"
            " letter was not checked for this file"
        )

    def check_file_names(self) -> None:
        """Withdraw each row passed on whose own file is named like another recipient's
        letter: the words of its name that are not of the row's own name (see _note_file)
        are two words of another row's name columns, or one that no third recipient's name
        has, of four letters or more or the short last word of that name (Kim, Li); and the
        words of it that are of the row's own name are of that name too (Anna Weber's
        Angebot_Anna_Schulz.pdf is Anna Schulz's letter, Katharina Schulz's
        Angebot_Kathi_Schulz.pdf not Kathi Braun's).

        Words in many of the file names (Angebot, offer, letter: in more than a twentieth of
        them, 2 at least and _COMMON_WORD at most) say nothing of whose the file is and are
        not compared. Each row kept asks the index of name words, once per form of each word
        compared.
        """
        common = max(2, min(self.own_files // 20, _COMMON_WORD))
        for row, recipient, name, others, shared in self.unnamed_files:
            matched: dict[int, list[str]] = {}  # another row -> the words of its name
            distinct: set[int] = set()  # the rows matched by a word of theirs alone
            alone: set[int] = set()  # the rows matched by a word no other recipient has
            for forms, written in _word_forms(_file_stem(name) if others is None else others):
                counted = self.file_words.get(hash(forms[0]))
                if counted and counted[1] > common:
                    continue
                for word in forms:
                    owner = self.name_words.get(hash(word))
                    if owner is not None and owner[1] != recipient:
                        break
                else:
                    continue
                other_row, _, several = owner
                matched.setdefault(other_row, []).append(written)
                if not several and (len(word) > _SHORT_WORD or self.short_names.holds(hash(word))):
                    distinct.add(other_row)
                elif not several:
                    alone.add(other_row)
            # a short word (Tim, Max) names the one recipient having it when the words of the
            # row's own name the file has are that recipient's too (Max Müller's tim_mueller.pdf)
            likely = [
                other
                for other, said in matched.items()
                if len(said) > 1 or other in distinct or (shared and other in alone)
            ]
            for forms, _ in _word_forms(shared) if likely else ():
                likely = [other for other in likely if self._has_word(other, forms)]
            if likely:
                other_row = max(likely, key=lambda other: len(matched[other]))
                words = " ".join(matched[other_row])
                self.withdrawn[row] = _NamedLike(name, other_row, words, self.withdrawn.get(row))
        self.unnamed_files.clear()

    def _has_word(self, row: int, forms: Forms) -> bool:
        """Whether the name of ``row`` has the word of ``forms`` (maybe: by _name_print, about
        one word in fifty that a name of three words lacks passes for one it has)."""
        at = bisect.bisect_left(self.print_rows, row)
        kept = at < len(self.print_rows) and self.print_rows[at] == row
        found = self.name_prints[at] if kept else 0
        for form in forms:
            bits = _name_print((form,))
            if found & bits == bits:
                return True
        return False

    def _default_sent(self, default: _Default, file: int, name: str, *, copy: bool = False) -> None:
        """Refuse the file: ``default``, a default_attachment rows were given, is the file
        ``name`` of an earlier run's letter (``file``: its entry in ``earlier``, or with
        ``copy`` its key there), or a copy of it."""
        earlier = self.earlier
        assert earlier is not None
        entry = earlier.entry(file) if copy else file
        assert entry is not None
        row, masked = earlier.letter(entry)
        what = _default_is(default, name, copy=copy)
        whom = f"another recipient ({masked})" if masked else "another recipient"
        raise TemplateError(
            f"{self.report.source}: template set {default.template!r} attaches its "
            f"default_attachment {default.name} to every row of the set whose Attachment_File "
            f"is empty, and an earlier run of this file sent {what} to {whom} as their own "
            f"letter (row {row} of that run): that person's letter would go to everyone the "
            "default goes to, so nothing is sent (point default_attachment at the file meant "
            "for everyone; then run the file again)"
        )

    def _earlier_copy(self, row: int, key: int, name: str, other_name: str) -> None:
        """Withdraw ``row``, passed on, whose file ``name`` (keyed ``key``) holds the bytes of
        ``other_name``, an earlier letter's file, unless that letter went to the row's own
        recipient."""
        earlier = self.earlier
        assert earlier is not None
        entry = earlier.entry(hash(self.attachments.same_file(other_name) or other_name))
        noted = self.earlier_who.get(key)
        own = earlier.entry(key)  # the row's file is its recipient's earlier letter's too
        who = noted[1] if noted is not None else None if own is None else earlier.whose(own)
        if entry is None or (who is not None and earlier.belongs(entry, who)):
            return  # a copy of the recipient's own earlier letter
        letter_row, masked = earlier.letter(entry)
        copy = _SameContent(self._name_given(name), letter_row, other_name, earlier=masked)
        self.withdrawn[row] = copy._replace(before=self.withdrawn.get(row))

    def _name_given(self, name: str) -> str:
        """The name the row that owns the file ``name`` gave it (one of its links, maybe)."""
        linked = self.attachments.same_file(name)
        return self.owner_names.get(hash(linked), name) if linked else name

    def _reject_all(self, row: int, problems: list[tuple[str, str]], email: str) -> None:
        """File a row with several problems as one rejected row naming them all."""
        column, reason = _joined(problems)
        self._reject(row, column, reason, email)

    def _reject(self, row: int, column: str, reason: str, email: str) -> None:
        """File a rejected row with a reason a person can act on."""
        self.report.rejected.append(_rejection(row, column, reason, mask(email)))


def _joined(problems: list[tuple[str, str]]) -> tuple[str, str]:
    """The column and reason of a row with several problems, (column, reason) each."""
    columns = "; ".join(dict.fromkeys(column for column, _ in problems))
    return columns, "; ".join(reason for _, reason in problems)


def _rejection(row: int, column: str, reason: str, masked: str) -> dict[str, Any]:
    """A rejected row's entry, with its address ``masked`` (mask())."""
    if _UNDECODABLE.search(reason + masked):  # undecodable bytes cannot be written out
        reason = _UNDECODABLE.sub("\ufffd", reason)
        masked = _UNDECODABLE.sub("\ufffd", masked)
    return {"row": row, "column": column, "reason": reason, "email": masked}


class _Shared(NamedTuple):
    """Why a row passed on is withdrawn: its file's ``name`` there, and the later row of
    another recipient that names the file too, as ``other_name``; and when a later row has
    the row's address with other values as well, that too (``same_address``)."""

    name: str
    other_row: int
    other_name: str
    same_address: _SameAddress | None = None


# Why a row passed on is withdrawn: a later row has its address with other values. One
# number, that row * _COLUMN_TEXTS + the number of the columns they differ in (column_texts):
# as many as half the rows may be withdrawn so, and a tuple each took 30 MB more for 500,000.
_SameAddress = NewType("_SameAddress", int)


class _Held(NamedTuple):
    """Why a row is held back for an earlier row of its address: that row (``other_row``)
    has other values, in ``columns``."""

    other_row: int
    columns: str


class _SameContent(NamedTuple):
    """Why a row passed on is withdrawn once the whole file is read: its file's ``name``
    holds the same bytes as the file ``other_name`` of ``other_row``, another recipient's;
    and what it was withdrawn for before that, if anything (``before``)."""

    name: str
    other_row: int
    other_name: str
    before: _Withdrawal | None = None
    # the file of an earlier run's letter: its recipient's masked address ("" unknown), and
    # ``other_row`` is that letter's row in its run
    earlier: str | None = None


class _Copied(NamedTuple):
    """Why a row passed on is withdrawn once the whole file is read: its ``column`` (Cc or
    Bcc) names the Email of ``other_row``, read after it; and what it was withdrawn for before
    that, if anything (``before``)."""

    column: str
    other_row: int
    before: _Withdrawal | None = None


# Why a row passed on is withdrawn once a later row is read (_Intake.withdrawn), or the whole
# file (_SameContent, _Copied).
class _NamedLike(NamedTuple):
    """A row passed on whose own file, ``name``, is named like the letter of ``other_row``'s
    recipient: it carries ``words`` of that row's name and none of its own row's."""

    name: str
    other_row: int
    words: str
    before: _Withdrawal | None = None


class _RowName(NamedTuple):
    """A row's name (check_file_names): its name columns' text, the _forms of its words, those
    of its last word, and whether every word is written in Latin letters."""

    row: int
    text: str
    forms: frozenset[str]
    last: Forms
    latin: bool


_Withdrawal = _Shared | _SameAddress | _SameContent | _Copied | _NamedLike


class _Extra(NamedTuple):
    """A row's Cc, Bcc and Reply_To addresses as sent, and (column, key) of each address in
    Cc and Bcc (``named``), to compare with the other rows' Email."""

    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    named: list[tuple[str, str]]


class _SentAddresses:
    """The address, masked, of each row passed on, in row order: a row may be withdrawn once
    the whole file is read (for its file or its address), and is reported with its address.

    Spooled like a ProblemList (in memory up to SPOOL_BYTES, on disk beyond), a line per row
    written some thousand rows at a time, so memory does not grow with the file.
    """

    def __init__(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b")  # noqa: SIM115
        self._pending: list[str] = []

    def add(self, row: int, email: str) -> None:
        """Keep row ``row``'s address, masked (a parsed address holds no line break)."""
        self._pending.append(f"{row}\t{mask(email)}\n")
        if len(self._pending) == 4096:
            self._write()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """Yield (row, masked address) in the order they were added."""
        self._write()
        self._spool.seek(0)
        for line in self._spool:
            row, _, masked = line.decode("utf-8").partition("\t")
            yield int(row), masked[:-1]

    def close(self) -> None:
        """Drop the addresses."""
        self._pending.clear()
        self._spool.close()

    def _write(self) -> None:
        self._spool.write("".join(self._pending).encode("utf-8"))
        self._pending.clear()


class _Default(NamedTuple):
    """A default_attachment rows were given: the file's ``name``, the first set that gave
    it (``template``), its ``size``."""

    name: str
    template: str
    size: int


@dataclass(frozen=True)
class _Needs:
    """What one template set needs from a row."""

    columns: list[tuple[str, int]]
    mode: str
    default: str | None


def _like_attachment_file(names: list[str]) -> str | None:
    """The first of the header's ``names`` spelt much like a name of the Attachment_File
    column (compared as normalise_header compares them), or None."""
    for name in names:
        spelling = _SQUASH.sub("", name).casefold()
        if spelling and difflib.get_close_matches(spelling, _FILE_SPELLINGS, n=1, cutoff=0.8):
            return name
    for name in names:
        if _fold_word(_SQUASH.sub("", name)) in _FILE_WORDS:
            return name
    return None


def _no_file_column(
    source: str,
    template: str,
    row: int,
    header: list[str],
    lookalike: str | None,
    default: str | None,
) -> str:
    """Why a file is refused that has no Attachment_File column, though ``template`` (of
    ``row``, its first row) attaches the files rows name there (else its ``default``)."""
    what = "the file each row names in that column"
    if default:
        what += f" (else its default_attachment, {default})"
    said = (
        f"{source}: no Attachment_File column, though template set {template!r} attaches "
        f"{what}, and row {row} is of that set"
    )
    if lookalike is not None and _fold_word(_SQUASH.sub("", lookalike)) in _FILE_WORDS:
        return (
            f"{said}; the file has a column {lookalike!r}, likely the files' names: nothing is"
            " sent (rename your column to Attachment_File, the name MailMatrix reads them"
            " under; then run the file again)"
        )
    if lookalike is not None:
        return (
            f"{said}; {misspelt_column(lookalike, 'Attachment_File')} Nothing is sent (name "
            "that column Attachment_File; then run the file again)"
        )
    return (
        f"{said}: nothing is sent (the header has {', '.join(header)}; add an Attachment_File "
        "column naming each row's file, then run the file again)"
    )


# The ? a spreadsheet's plain CSV writes for a letter its code page lacks: one before a letter
# (Ma?gorzata, ?ukasz, Wa??sa), a word of two or more (陈静 -> ??), or one ending a word (found,
# then weighed by _lost_letter: a question's ? ends a word too).
_LOST_LETTER = re.compile(
    r"(?P<before>\?[^\W\d_])|(?P<run>(?<![\w?])\?{2,}(?![\w?]))|(?P<after>(?<=[^\W\d_])\?)"
)
# A word holding a ? that is a link's or a query's: https://example.com/a?b=c, www.example.com?x,
# example.com/form?id=5, mailto:a@example.com?subject=Hi, ?id=5&x=y.
_LINK_WORD = re.compile(
    r"(?i)[(<\"']?(?:[a-z][a-z0-9+.-]*://|mailto:|www\.|(?:[a-z0-9-]+\.)+[a-z]{2,}[/?])|[^?]*\?[^?=]*="
)
_UNICODE_SAVED = frozenset({"utf-8-sig", "utf-16-le", "utf-16-be"})
# What to do about lost letters: this CSV no longer holds them, so saving it again keeps the ?.
_EXPORT_AGAIN = (
    "saving this CSV again keeps the ?: export the file again from the workbook (.xlsx) or the"
    " source its rows came from, as CSV UTF-8"
)
_BLANK = re.compile(r"\s")
# How much of a cell a reason shows, around its first lost letter.
_SHOWN_CELL = 40
# The columns where a ? is never the cell's own (beside the recipient's name columns): any ?
# there is a lost letter.
_NO_QUESTIONS = frozenset({"Email", "Attachment_File", "Cc", "Bcc", "Reply_To"})
# The columns a letter prints whatever its templates use: the name in To, the headers' addresses,
# the attached file's name.
_ALWAYS_PRINTED = _NO_QUESTIONS | {"Name"}


def _lost_letter(cell: str, strict: bool) -> int:
    """Where ``cell`` has a ? standing for a letter a plain CSV could not encode, or -1.

    ``strict``: the cell is of a column where a ? is never real (a name, an address, a file
    name), so any ? is one. Else a ? before a letter, a word of ?s, or a ? ending a word that
    holds a letter beyond ASCII (Zespó? IT) or followed by a word in lower case (si? na); not a
    question's (Was? Ready? Go, ¿Qué?), nor one in a link or a query (https://example.com/a?b=c).
    """
    if strict:
        return cell.find("?")
    for found in _LOST_LETTER.finditer(cell):
        at = found.start()
        head = cell[:at]
        start = at if not head or head[-1].isspace() else at - len(head.rsplit(None, 1)[-1])
        if found.lastgroup == "after" and not _ends_lost(cell, start, at):
            continue
        blank = _BLANK.search(cell, at)
        if not _LINK_WORD.match(cell, start, blank.start() if blank else len(cell)):
            return at
    return -1


def _ends_lost(cell: str, start: int, at: int) -> bool:
    """Whether the ? at ``at``, ending the word from ``start``, is a lost letter: the word
    holds a letter beyond ASCII (not after a ¿, which asks), or a word in lower case follows."""
    rest = cell[at:].lstrip("?")
    if rest[:1].isspace() and rest.lstrip()[:1].islower():
        return True
    word = cell[start:at]
    beyond_ascii = not word.isascii() and any(not c.isascii() and c.isalpha() for c in word)
    return beyond_ascii and "¿" not in cell[:at]


def _around(cell: str, at: int) -> str:
    """At most _SHOWN_CELL characters of ``cell``, holding the one at ``at``."""
    start = max(0, min(at - _SHOWN_CELL // 2, len(cell) - _SHOWN_CELL))
    return cell[start : start + _SHOWN_CELL]


def _is_name_column(name: str) -> bool:
    """Whether a column holds (part of) the recipient's own name: Name (Full Name, Recipient
    Name...), First, Last, Given, Family, Middle Name, Surname, Forename, Vorname, Nachname,
    and Candidate, Applicant, Employee Name; not Manager_Name or Company Name, whose words may
    well be in the recipient's file name."""
    return _SQUASH.sub("", name).casefold() in _NAME_COLUMNS


# The spellings of the recipient's name columns (compared as _ALIASES are).
_NAME_COLUMNS = frozenset(
    f"{part}{name}"
    for name in ("name", "names")
    for part in (
        "",
        "first",
        "last",
        "given",
        "family",
        "full",
        "middle",
        "sur",
        "fore",
        "display",
        "recipient",
        "candidate",
        "applicant",
        "employee",
        "vor",
        "nach",
        "familien",
    )
)


_WORD_SPLIT = re.compile(r"[\W\d_]+")
# check_file_names: a word in more file names than this is common whatever the file's length
# (the check's own threshold, a twentieth of the files, is at least 2 and never above it here).
_COMMON_WORD = 50
# Rows kept for check_file_names before those whose words became common are dropped, and the
# most kept after that before the check is given up for the file.
_UNNAMED_FIRST = 10_000
_UNNAMED_MAX = 200_000
# check_file_names: a word of this many letters or fewer (Jan, Kim) is not enough alone to name
# another recipient, unless it is the last word of that one's name (a surname) and of no other's.
_SHORT_WORD = 3


def _fold_word(text: str) -> str:
    """``text`` compared as names are in file names: NFKC, casefolded, accents dropped."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(char for char in folded if not unicodedata.combining(char))


# check_file_names: letters that file names write otherwise, as a plain letter (ø o) and spelt
# out as German and Scandinavian names are (ä ae, ø oe, å aa).
# Letters no accent dropped makes plain are written as a person spells them in ASCII (Łukasz
# lukasz, Đorđe djordje, Þór thor).
_ASCII_LETTERS = {"ł": "l", "ı": "i", "đ": "d", "ð": "d", "þ": "th", "ħ": "h", "ŀ": "l"}
_PLAIN_LETTERS = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", **_ASCII_LETTERS, "đ": "dj"})
_SPELT_LETTERS = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "ø": "oe", "æ": "ae", "å": "aa", "œ": "oe", **_ASCII_LETTERS}
)

Forms = tuple[str, ...]  # the folded forms of one word (_forms), its plain form first


@functools.lru_cache(maxsize=8192)  # names repeat (first names, surnames): each is folded once
def _forms(written: str) -> Forms:
    """The folded forms a word of a name or a file name is compared in: casefolded, accents
    dropped (ø as o, æ as ae: Müller muller, Søren soren), and spelt out as ä ö ü ø æ å are
    in file names (mueller, soeren, aa for å); one form for a word of plain letters."""
    if written.isascii():
        return (written.lower(),)
    text = unicodedata.normalize("NFKC", written).casefold()
    plain = _fold_word(text.translate(_PLAIN_LETTERS))
    spelt = _fold_word(text.translate(_SPELT_LETTERS))
    return (plain,) if spelt == plain else (plain, spelt)


def _word_forms(text: str) -> list[tuple[Forms, str]]:
    """(forms, as written) of each word of two letters or more in ``text``: the words are
    split at whatever is no letter (spaces, _ - . and digits)."""
    if text.isascii():  # one form, lowered: no compatibility forms, no accents
        return [
            ((written.lower(),), written) for written in _WORD_SPLIT.split(text) if len(written) > 1
        ]
    found = []
    for written in _WORD_SPLIT.split(text):
        forms = _forms(written)
        if len(forms[0]) > 1:
            found.append((forms, written))
    return found


def _name_print(forms: Iterable[str]) -> int:
    """The words ``forms`` as 64 bits, two of them set for each: a row's name words in 8 bytes,
    for _has_word."""
    found = 0
    for form in forms:
        key = hash(form)
        found |= 1 << (key & 63) | 1 << (key >> 6 & 63)
    return found


@functools.lru_cache(maxsize=8192)
def _is_latin(word: str) -> bool:
    """Whether ``word`` (folded) is written in Latin letters only."""
    return word.isascii() or all("LATIN" in unicodedata.name(char, "") for char in word)


def _file_stem(name: str) -> str:
    """A file's name without its folders and its extension, its words split where a small
    letter meets a capital (AnnaSchulz: Anna Schulz)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _split_case(base.rsplit(".", 1)[0] if "." in base else base)


_CASE_CHANGE = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _split_case(text: str) -> str:
    """``text`` with a space where a small letter meets a capital (McDonald: Mc Donald)."""
    if text.istitle() or text.islower() or text.isupper():  # most names and files: none
        return text
    if text.isascii():
        return _CASE_CHANGE.sub(" ", text)
    split, small = [], False
    for char in text:
        if small and char.isupper():
            split.append(" ")
        split.append(char)
        small = char.islower()
    return "".join(split)


def _named_like(why: _NamedLike) -> str:
    """The reason of a row withdrawn for a file named like another recipient's letter."""
    return (
        f"the file {why.name} is named like the letter of {why.words} (row {why.other_row}), "
        "not of this row's recipient, so this row is not sent: name this recipient's own file "
        "in Attachment_File (if the file is right, set check_file_names: false in "
        "manifest.yaml)"
    )


def _sent_named_like(row: int, why: _NamedLike) -> str:
    """The warning of a row passed on though its file is named like another recipient's
    letter: an earlier run of the file sent the row (see _keep_sent_named_like)."""
    return (
        f"row {row}: the file {why.name} is named like the letter of {why.words} (row "
        f"{why.other_row}), not of this row's recipient, and an earlier run of this file sent "
        "it to this row's recipient: this row is not sent again and needs nothing (if the file "
        "was not this recipient's own, it went to them in that run)"
    )


# The rows _keep_sent_named_like names in warnings; the others are counted.
_SHOWN_SENT_NAMED_LIKE = 5


def _several_in_email(text: str) -> str | None:
    """Why a row is rejected whose Email cell holds several addresses ("a@x.org; b@x.org"),
    and where the others go; None for a cell that holds one."""
    found = len(addresses_in(text))
    if found < 2:
        return None
    return (
        f"Email holds {found} addresses, and a cell of Email holds one: keep the recipient's"
        " own there, and put the others in a column named Cc (or Bcc, for blind copies),"
        " separated by commas or semicolons"
    )


def _empty_but_used(column: str, template: str) -> str:
    """Why a row is rejected whose cell a template prints unguarded, and the two ways out."""
    return (
        f"{column} is empty but used by template {template} (fill the cell, or print it in the"
        f" template within {{% if {column} %}}...{{% endif %}})"
    )


def _shared_file(
    name: str,
    other_row: int,
    other_name: str,
    *,
    earlier: bool = True,
    sent: tuple[bool, bool] = (False, False),
) -> str:
    """Why a row is rejected whose file a row of another recipient names too (as
    ``other_name``: another name of the same file when the attachments location links them);
    ``earlier``: that row comes first; ``sent``: whether an earlier run of the file sent the
    row, and the other row (only the first of the two can have been asked)."""
    link = other_name != name
    if sent[0]:
        what = f"the same file as {other_name} (a link in the attachments folder)"
        return (
            f"{name} went to this row's recipient in an earlier run of this file, and row "
            f"{other_row}, another recipient, names {what if link else 'it'} too: each row "
            f"attaches its recipient's own file, so row {other_row} is held back; this row is "
            f"not sent again and needs nothing (give row {other_row} its recipient's own file"
            f"{', or correct the link' if link else ''}, then run the file again)"
        )
    if sent[1]:
        what = f" the same file as {other_name} (a link in the attachments folder)," if link else ""
        return (
            f"{name} is{what} already the attachment of row {other_row}, another recipient, "
            "which an earlier run of this file sent to its recipient: each row attaches its "
            "recipient's own file, so this row is not sent (name this recipient's own file in "
            f"Attachment_File{', or correct the link' if link else ''}, then run the file "
            f"again; row {other_row} is not sent again; {_ONE_FOR_MANY})"
        )
    when = "already" if earlier else "also"
    if other_name == name:
        return (
            f"{name} is {when} the attachment of row {other_row}, another recipient: each row "
            "attaches its recipient's own file, so one of the two rows is wrong and neither is "
            f"sent (check both; {_ONE_FOR_MANY})"
        )
    return (
        f"{name} is the same file as {other_name} (a link in the attachments folder), "
        f"{when} the attachment of row {other_row}, another recipient: each row attaches its "
        "recipient's own file, so one of the two rows or the link is wrong and neither is "
        f"sent (check both rows and the link; {_ONE_FOR_MANY})"
    )


_ONE_FOR_MANY = "to send one file to many, leave Attachment_File empty and set default_attachment"


def _default_is(default: _Default, named: str, *, copy: bool = False) -> str:
    """How the file ``named`` is ``default``'s file: the very file, a link to it (the name
    differs) or (``copy``) a copy of it, as the reasons that refuse the default say it."""
    if copy:
        return f"{named}, a file with the same contents,"
    if named != default.name:
        return f"{named}, the same file (a link in the attachments folder),"
    return "that file"


def _default_owned(
    source: str, default: _Default, row: int, named: str, *, copy: bool = False
) -> str:
    """Why a file is refused whose set's default_attachment is a file, a link to it or (with
    ``copy``) a copy of it, that ``row`` names as ``named`` in its Attachment_File cell."""
    what = _default_is(default, named, copy=copy)
    return (
        f"{source}: template set {default.template!r} attaches its default_attachment "
        f"{default.name} to every row of the set whose Attachment_File is empty, and row {row} "
        f"names {what} in Attachment_File as its recipient's own letter: that person's letter "
        "would go to everyone the default goes to, so nothing is sent (point default_attachment "
        f"at the file meant for everyone, or correct row {row}; then run the file again)"
    )


def _same_content(
    name: str, other_row: int, other_name: str, *, sent: tuple[bool, bool] = (False, False)
) -> str:
    """Why a row is held back whose file is a copy of another recipient's row's file;
    ``sent``: whether an earlier run of the file sent the row, and the other row."""
    if all(sent):
        return (
            f"{name} has the same contents as {other_name}, the attachment of row {other_row}, "
            "another recipient, and an earlier run of this file sent both rows: one of the two "
            "people may have received the other's letter (open both files to tell which); "
            "neither is sent again"
        )
    if sent[0]:
        return (
            f"{name} went to this row's recipient in an earlier run of this file, and "
            f"{other_name}, the attachment of row {other_row}, another recipient, has the same "
            f"contents: row {other_row} names a copy of this letter, so it is held back; this "
            f"row is not sent again and needs nothing (name the own file of row {other_row}'s "
            "recipient in its Attachment_File, then run the file again)"
        )
    if sent[1]:
        return (
            f"{name} has the same contents as {other_name}, the attachment of row {other_row}, "
            "which an earlier run of this file sent to its recipient: this row names a copy of "
            "that person's letter, so it is not sent (name this recipient's own file in "
            f"Attachment_File, then run the file again; row {other_row} is not sent again)"
        )
    return (
        f"{name} has the same contents as {other_name}, the attachment of row {other_row}, "
        "another recipient: the two files are identical copies, so one of the two rows names "
        "another person's letter and neither is sent (open both files and check each is its "
        f"own recipient's; {_ONE_FOR_MANY})"
    )


def _earlier_letter(
    name: str, other_name: str, row: int, masked: str, *, copy: bool = False, sent: bool = False
) -> str:
    """Why a row is not sent whose own file ``name`` is a link to (``copy``: has the bytes
    of) the file ``other_name`` that an earlier run of the file sent, with the letter of its
    ``row``, to another recipient (``masked``: their address, masked; "" unknown) as their
    own; ``sent``: an earlier run sent this row too."""
    whom = f"another recipient ({masked})" if masked else "another recipient"
    letter = f"sent to {whom} as their own letter (row {row} of that run)"
    if sent:
        return (
            f"{name} went to this row's recipient in an earlier run of this file, and has the "
            f"same contents as {other_name}, which an earlier run {letter}: one of the two "
            "people may have received the other's letter (open both files to tell which); this "
            "row is not sent again"
        )
    if copy:
        return (
            f"{name} has the same contents as {other_name}, which an earlier run of this file "
            f"{letter}: this row names a copy of that person's letter, so it is not sent (name "
            "this recipient's own file in Attachment_File, then run the file again)"
        )
    return (
        f"{name} is the same file as {other_name} (a link in the attachments folder), which an "
        f"earlier run of this file {letter}: each row attaches its recipient's own file, so "
        "this row is not sent (name this recipient's own file in Attachment_File, or correct "
        "the link; then run the file again)"
    )


def _default_of_a_letter(source: str, default: _Default, letter: SentCopy) -> str:
    """Why a file is refused whose set's default_attachment holds the bytes of the file
    ``letter`` carried to one person as their own (in any campaign)."""
    whom = f"a recipient ({letter.masked})" if letter.masked else "a recipient"
    return (
        f"{source}: template set {default.template!r} attaches its default_attachment "
        f"{default.name} to every row of the set whose Attachment_File is empty, and it has "
        f"the same contents as {letter.attachment}, which a run of {campaign_of(letter)} sent"
        f" to {whom} as their own letter (row {letter.row} of that run): that person's letter"
        " would go "
        "to everyone the default goes to, so nothing is sent (point default_attachment at the "
        "file meant for everyone; then run the file again)"
    )


# Columns a reason names at most: the rest are counted.
_SHOWN_COLUMNS = 5
# Sets of columns that reasons name apart: a file of many columns could make many more.
_COLUMN_TEXTS = 1024


def _same_address(other_row: int, columns: str, *, sent: tuple[bool, bool] = (False, False)) -> str:
    """Why a row is held back whose address a row with other values has too; ``sent``:
    whether an earlier run of the file sent the row, and the other row."""
    if sent[0]:
        return (
            "this row's letter went to its address in an earlier run of this file, and row "
            f"{other_row} has the same address with other values in {columns}: one address "
            f"gets one letter, so row {other_row} is held back; this row is not sent again and "
            f"needs nothing (correct row {other_row}'s address if it is meant for someone "
            "else, or delete that row; then run the file again)"
        )
    if sent[1]:
        return (
            f"row {other_row} has the same address with other values in {columns}, and an "
            f"earlier run of this file sent row {other_row}'s letter to it: one address gets one "
            "letter, so this row is not sent (correct this row's address if it is meant for "
            f"someone else, or delete this row; row {other_row} is not sent again)"
        )
    return (
        f"row {other_row} has the same address with other values in {columns}: one address "
        "gets one letter, so one of the two rows is wrong and neither is sent (correct the "
        "address of the wrong row, or delete one of them)"
    )


def _copied_recipient(column: str, other_row: int, *, sent: bool = False) -> str:
    """Why a row is not sent whose ``column`` (Cc or Bcc) names the Email of ``other_row``;
    ``sent``: an earlier run of the file sent the row."""
    remedy = (
        f"take row {other_row}'s address out of {column}, or correct it if it is meant for "
        "someone else"
    )
    if sent:
        return (
            f"this row's letter went out in an earlier run of this file, and its {column} names "
            f"the recipient of row {other_row}, who may have received it: a row's letter goes "
            f"to no other row's recipient, so this row is not sent again ({remedy})"
        )
    return (
        f"{column} names the recipient of row {other_row}, who would get this row's letter: a "
        f"row's letter goes to no other row's recipient, so this row is not sent ({remedy}; "
        "then run the file again)"
    )


def _mailed_recipient(column: str) -> str:
    """Why a row is not sent whose ``column`` (Cc or Bcc) names a recipient an earlier run of
    the file mailed."""
    return (
        f"{column} names a recipient an earlier run of this file mailed, who would get this "
        "row's letter: a row's letter goes to no other recipient of the campaign, so this row "
        f"is not sent (take that address out of {column}, or correct it if it is meant for "
        "someone else; then run the file again)"
    )


def _prints(cells: Iterable[str]) -> bytes:
    """4 bytes of the hash of each cell, in order: enough to tell which cells of two rows differ.

    Computed in C (no Python step per cell), for a batch of rows at once.
    """
    hashes = memoryview(array("q", map(hash, cells)))
    return hashes.cast("B").cast("I")[::2].tobytes()


class _RowPrints:
    """The cell prints (_prints) of the first row of each address, by row number, to name
    the columns a later row of the address differs in; read back only then.

    Spooled like a ProblemList (in memory up to SPOOL_BYTES, on disk beyond), 4 bytes a cell
    at the row's offset, written a thousand rows at a time.
    """

    def __init__(self, cells: int) -> None:
        # The spool lives as long as the intake; close() drops it.
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b")  # noqa: SIM115
        self._size = array("I").itemsize * cells  # bytes a row
        self._blank = [""] * cells  # for a row not kept between two that are
        self._first = -1  # the row written at offset 0
        self._start = 0  # the row of the first one pending
        self._next = -1  # the row after the last one added
        self._pending: list[list[str]] = []

    def add(self, row: int, cells: list[str]) -> None:
        """Keep row ``row``'s prints (rows come in increasing order)."""
        if row != self._next:
            self._skip_to(row)
        self._pending.append(cells)
        self._next = row + 1
        if len(self._pending) >= 1024:
            self._write()

    def get(self, row: int) -> array:
        """The prints of row ``row``, added before."""
        index = row - self._start
        if 0 <= index < len(self._pending):
            return array("I", _prints(self._pending[index]))
        self._spool.seek((row - self._first) * self._size)
        return array("I", self._spool.read(self._size))

    def close(self) -> None:
        """Drop the prints."""
        self._pending.clear()
        self._spool.close()

    def _skip_to(self, row: int) -> None:
        """Leave blank rows since the last one added, or, far from it, write the pending rows
        out and go on at ``row``'s offset."""
        if self._first < 0:
            self._first = row
        if self._pending and row - self._next <= 64:
            self._pending.extend([self._blank] * (row - self._next))
            return
        self._write()
        self._start = row

    def _write(self) -> None:
        """Write the pending rows' prints out at their offset; the next rows follow them."""
        if not self._pending:
            return
        offset = (self._start - self._first) * self._size
        if offset > SPOOL_BYTES:
            self._spool.rollover()  # a far offset in memory would be zeros up to it
        self._spool.seek(offset)
        self._spool.write(_prints(itertools.chain.from_iterable(self._pending)))
        self._start += len(self._pending)
        self._pending.clear()


class _Prefixed(io.RawIOBase):
    """A raw stream that yields the already-read sample, then the rest of the upload."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _CheckedUtf16(io.RawIOBase):
    """A raw stream of UTF-16 that decodes what it passes on, to tell on which line the bytes
    that cannot be decoded are.

    Undecodable bytes of the other encodings reach the text as lone surrogates
    (surrogateescape), and only their rows are rejected; UTF-16's cannot be escaped, so the
    text decoder fails the file, at a chunk of 8 KiB it decodes ahead of the CSV reader: the
    reader's line then named the first line of that chunk (line 1 of a small file). Here
    every line end is counted as the CSV reader counts them (CR, LF, CRLF), and the file
    fails naming the line the bytes are on.
    """

    def __init__(self, raw: io.RawIOBase, codec: str, fail: Callable[[int, str], Exception]):
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(codec)()
        self._fail = fail
        self._line = 1  # the line the next text decoded belongs to
        self._cr = False  # the text decoded so far ends with a CR: an LF next ends no line

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer) or 0
        data = bytes(memoryview(buffer)[:count])
        try:
            self._count(self._decoder.decode(data, final=not count))
        except UnicodeDecodeError as error:
            self._count(error.object[: error.start].decode(error.encoding, "replace"))
            raise self._fail(self._line, error.reason) from error
        return count

    def _count(self, text: str) -> None:
        """Add the line ends of ``text``, the text decoded next."""
        if not text:
            return
        ends = text.count("\n") + text.count("\r") - text.count("\r\n")
        if self._cr and text[0] == "\n":
            ends -= 1  # a CRLF cut in two: its CR ended the line
        self._line += ends
        self._cr = text[-1] == "\r"


def _undecodable(source: str, encoding: str) -> Callable[[int, str], InputFileError]:
    """The error of the file ``source`` whose line cannot be decoded as ``encoding``: given
    the line and the decoder's reason."""

    def error(line: int, reason: str) -> InputFileError:
        return InputFileError(
            f"{source}: cannot decode line {line} as {encoding}: {reason}; "
            "export the file as CSV UTF-8"
        )

    return error


def _is_header(record: list[str]) -> bool:
    """Whether a record before the header is it: not blank, not Excel's "sep=X" line."""
    return bool("".join(record).strip()) and not _is_sep_directive(record)


def _is_sep_directive(record: list[str]) -> bool:
    """Whether a record is Excel's "sep=X" line (the delimiter splits it into "sep=", "")."""
    return len(record) <= 2 and "".join(record).replace("\ufeff", "").strip().lower() == "sep="


def _read_sample(stream: BinaryIO) -> bytes:
    """Read up to SAMPLE_BYTES from the start (streams may return short reads)."""
    parts: list[bytes] = []
    size = 0
    while size < SAMPLE_BYTES:
        chunk = stream.read(SAMPLE_BYTES - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _decode_head(sample: bytes, codec: str) -> str:
    """Decode the sample for sniffing, tolerating a character cut at its end."""
    return codecs.getincrementaldecoder(codec)(errors="replace").decode(sample, final=False)


def _utf16_without_bom(sample: bytes) -> str | None:
    """Return utf-16-le/-be when the bytes look like ASCII text in UTF-16 without a BOM."""
    probe = sample[:4096]
    half = len(probe) // 2
    if half < 8:
        return None
    even_nul = probe[0::2].count(0) / half
    odd_nul = probe[1::2].count(0) / half
    if odd_nul > 0.4 and even_nul < 0.05:
        return "utf-16-le"
    if even_nul > 0.4 and odd_nul < 0.05:
        return "utf-16-be"
    return None


def _records(reader: Any, source: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number of the record's first line, fields); wrap decode and CSV errors.

    A quote left open on the last record takes the file's last line end into its field
    (mid-file, it takes the next lines: see _Intake._check_swallowed_rows): the file is
    refused once that record is read, as a quoted value never ends in the file's last
    line end.
    """
    line = start = 0
    record: list[str] = []
    try:
        for record in reader:
            start = line + 1
            yield start, record
            line = reader.line_num
    except UnicodeDecodeError as error:  # the encodings but UTF-16 escape what they cannot read
        raise _undecodable(source, encoding)(reader.line_num + 1, error.reason) from error
    except csv.Error as error:
        raise InputFileError(
            f"{source}: unreadable CSV at line {reader.line_num}: {error} "
            "(often a quote that is never closed)"
        ) from error
    if record and record[-1].endswith(("\n", "\r")):
        raise InputFileError(
            f"{source}: unreadable CSV at line {start}: a quote opened on this line is not"
            f" closed before the end of the file; fix the quotes on line {start}"
        )
