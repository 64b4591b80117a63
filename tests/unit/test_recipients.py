"""CSV intake: encodings, dialects, headers, whole-file failures and per-row checks."""

from __future__ import annotations

import codecs
import collections
import csv
import errno
import gc
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.earlier import EarlierRecipients
from mailmatrix.core.recipients import (
    IntakeReport,
    IntakeRules,
    ProblemList,
    normalise_header,
    read_columns,
    validate_recipients,
)
from mailmatrix.core.rejects import write_rejects
from mailmatrix.core.send import idempotency_key
from mailmatrix.core.templates import load_catalog
from mailmatrix.errors import FileNotWritten, InputFileError, ObjectChanged, TemplateError
from mailmatrix.ports import OUTCOME_UNKNOWN, ObjectInfo, Outcome
from tests.memory import TracedPeak


@dataclass(frozen=True)
class FakeChoice:
    """Stands in for the catalog's choice object."""

    kind: str
    template: str | None = None
    reason: str | None = None


@dataclass
class FakeCatalog:
    """A small stand-in for mailmatrix.core.templates' catalog (the intake protocol only)."""

    column: str = "Status"
    templates: dict[str, str] = field(default_factory=lambda: {"active": "offer"})
    skips: dict[str, str] = field(default_factory=lambda: {"unsubscribed": "unsubscribed"})
    uses: dict[str, set[str]] = field(default_factory=lambda: {"offer": {"Name"}})
    attachment: dict[str, bool] = field(default_factory=lambda: {"offer": True})
    asked: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    rendered: list[str] = field(default_factory=list)

    def choose(self, value: str) -> FakeChoice:
        self.asked.append(value)
        key = value.strip().casefold()
        if key in self.templates:
            return FakeChoice("template", self.templates[key])
        if key in self.skips:
            return FakeChoice("skip", reason=self.skips[key])
        return FakeChoice("unknown")

    def check(self, columns: list[str]) -> tuple[list[str], list[str]]:
        return [], [
            f"template {name} uses {column}, which the file lacks"
            for name, used in sorted(self.uses.items())
            for column in sorted(used)
            if column not in columns
        ]

    def variables(self, template: str) -> set[str]:
        return set(self.uses.get(template, set()))

    def used_columns(self) -> set[str]:
        return set().union(*self.uses.values())

    def needs_attachment(self, template: str) -> bool:
        return self.attachment.get(template, False)

    def render(self, template: str, fields: dict[str, str]) -> None:
        """Render nothing; fail as a template does for the sets in ``broken`` and the rows
        whose Name is in ``failing``; each try's Name is in ``rendered``."""
        self.rendered.append(fields.get("Name", ""))
        if template in self.broken or fields.get("Name") in self.failing:
            raise TemplateError(f"{template}/body.txt: render: 'str object' has no attribute 'x'")


FILES = ("alice.pdf", "bob.pdf", "carol.pdf", "dave.pdf", "erin.pdf", "frank.pdf")


def index_of(*names: str, sizes: dict[str, int] | None = None) -> AttachmentIndex:
    """An attachment index holding ``names`` (100 bytes each unless ``sizes`` says otherwise,
    each listed with the tag ``v1-NAME``)."""
    sizes = sizes or {}
    listing = [
        ObjectInfo(f"attachments/{n}", sizes.get(n, 100), tag=f"v1-{n}") for n in names or FILES
    ]
    return AttachmentIndex.from_listing(listing, prefix="attachments/")


def own_files(rows: int) -> list[str]:
    """A file of its own for each of ``rows`` filler rows: u0.pdf, u1.pdf..."""
    return [f"u{i}.pdf" for i in range(rows)]


def run(
    data: bytes | str,
    *,
    catalog: FakeCatalog | None = None,
    index: AttachmentIndex | None = None,
    rules: IntakeRules | None = None,
    contents: FakeContents | None = None,
    sent_before: Callable[[frozenset[int]], Collection[int]] | None = None,
    mailed: EarlierRecipients | None = None,
) -> tuple[IntakeReport, list[dict]]:
    """Validate ``data`` (str is encoded as UTF-8) and return the report and emitted rows;
    with ``contents``, the attachments' bytes are compared too; ``sent_before`` and
    ``mailed``: as validate_recipients'."""
    raw = data.encode() if isinstance(data, str) else data
    rows: list[dict] = []
    report = validate_recipients(
        io.BytesIO(raw),
        source="incoming/test.csv",
        catalog=catalog or FakeCatalog(),
        attachments=index or index_of(),
        rules=rules or IntakeRules(),
        emit=rows.append,
        contents=contents,
        sent_before=sent_before,
        mailed=mailed,
    )
    return report, rows


class FakeContents:
    """Attachment files' bytes by name, for the contents check; counts each file's reads.

    ``checksums``: the checksum storage keeps of each file named there (else none)."""

    readers = 1

    def __init__(self, files: dict[str, bytes], checksums: dict[str, str] | None = None):
        self.files = files
        self.checksums = checksums or {}
        self.read: collections.Counter[str] = collections.Counter()
        self.asked: collections.Counter[str] = collections.Counter()
        self.started: collections.Counter[str] = collections.Counter()
        self.tags: dict[str, str] = {}

    def index(self) -> AttachmentIndex:
        """The listing of the files, each with its size and the tag ``v1-NAME``."""
        return index_of(*self.files, sizes={n: len(data) for n, data in self.files.items()})

    def checksum(self, name: str, tag: str) -> str | None:
        self.asked[name] += 1
        return self.checksums.get(name)

    def digest(self, name: str, tag: str) -> bytes:
        self.read[name] += 1
        self.tags[name] = tag
        return hashlib.sha256(self.files[name]).digest()

    def start(self, name: str, tag: str, count: int) -> bytes:
        self.started[name] += 1
        return self.files[name][:count]


HEADER = "Email,Name,Status,Attachment_File\r\n"
ALICE = "alice@example.com,Alice Example,active,alice.pdf\r\n"
BOB = "bob@example.com,Bob Example,active,bob.pdf\r\n"


def emails(rows: list[dict]) -> list[str]:
    return [row["email"] for row in rows]


def reasons(report: IntakeReport) -> list[tuple[int, str, str]]:
    return [(item["row"], item["column"], item["reason"]) for item in report.rejected]


# --- a valid row, whole ------------------------------------------------------------------


def test_valid_row_is_emitted_whole():
    # GIVEN a file with an extra column and a Cc
    text = "Email,Name,Status,Attachment_File,Amount,Cc\r\n"
    text += (
        "anna@Bücher.example,Anna Example,Active,alice.pdf,12,ops@example.com; hr@example.com\r\n"
    )

    # WHEN it is validated
    report, rows = run(text)

    # THEN the row crosses with the agreed shape
    assert rows == [
        {
            "row": 2,
            "email": "anna@xn--bcher-kva.example",
            "name": "Anna Example",
            "template": "offer",
            "attachment": "alice.pdf",
            "own_attachment": True,
            "attachment_size": 100,
            "attachment_tag": "v1-alice.pdf",
            "fields": {
                "Email": "anna@Bücher.example",
                "Name": "Anna Example",
                "Status": "Active",
                "Attachment_File": "alice.pdf",
                "Amount": "12",
                "Cc": "ops@example.com; hr@example.com",
            },
            "cc": ["ops@example.com", "hr@example.com"],
            "bcc": [],
            "reply_to": None,
        }
    ]
    assert report.to_dict() == {
        "source": "incoming/test.csv",
        "encoding": "utf-8",
        "delimiter": ",",
        "header": ["Email", "Name", "Status", "Attachment_File", "Amount", "Cc"],
        "rows": 1,
        "valid": 1,
        "empty": 0,
        "warnings": [],
        "rejected": [],
        "duplicates": [],
        "skipped": [],
    }


def test_template_without_attachment_gives_none_and_ignores_the_column():
    catalog = FakeCatalog(
        templates={"active": "offer", "rejected": "rejection"},
        attachment={"offer": True, "rejection": False},
    )
    text = HEADER + "carl@example.com,Carl Example,Rejected,missing.pdf\r\n"

    report, rows = run(text, catalog=catalog)

    assert [(r["template"], r["attachment"]) for r in rows] == [("rejection", None)]
    assert report.rejected == []


# --- encodings ---------------------------------------------------------------------------

UNICODE_FILE = HEADER + "zoe@example.com,Zoë Müller,active,alice.pdf\r\n"


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (UNICODE_FILE.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + UNICODE_FILE.encode("utf-8"), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + UNICODE_FILE.encode("utf-16-le"), "utf-16-le"),
        (codecs.BOM_UTF16_BE + UNICODE_FILE.encode("utf-16-be"), "utf-16-be"),
        (UNICODE_FILE.encode("utf-16-le"), "utf-16-le"),
        (UNICODE_FILE.encode("cp1252"), "cp1252"),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16le-no-bom", "cp1252"],
)
def test_encodings_are_detected_and_reported(raw, encoding):
    report, rows = run(raw)

    assert report.encoding == encoding
    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert [r["name"] for r in rows] == ["Zoë Müller"]


def test_windows_1252_punctuation_is_decoded_as_windows_1252():
    text = HEADER + "zoe@example.com,Zoë “Zo” Müller – €,active,alice.pdf\r\n"

    report, rows = run(text.encode("cp1252"))

    assert report.encoding == "cp1252"
    assert rows[0]["name"] == "Zoë “Zo” Müller – €"


def test_latin1_with_bytes_undefined_in_windows_1252_is_latin1_and_the_control_is_refused():
    # 0x81 is undefined in Windows-1252, a C1 control in Latin-1
    raw = HEADER.encode() + b"zoe@example.com,Zo\xeb\x81,active,alice.pdf\r\n" + BOB.encode()

    report, rows = run(raw)

    assert report.encoding == "latin-1"
    assert reasons(report) == [(2, "Name", "control character (U+0081) in Name")]
    assert emails(rows) == ["bob@example.com"]


def test_bom_never_reaches_header_or_fields():
    raw = codecs.BOM_UTF8 + ("email,Name,Status,Attachment_File\n" + ALICE).encode()

    report, rows = run(raw)

    assert report.header[0] == "Email"
    assert next(iter(rows[0]["fields"])) == "Email"


def test_bytes_invalid_in_the_detected_encoding_reject_only_their_row():
    # GIVEN a UTF-8 file (detected from its first 64 KiB) with a stray Latin-1 byte much later
    filler = "".join(f"u{i}@example.com,User {i},active,u{i}.pdf\n" for i in range(3000))
    raw = (HEADER + filler).encode() + b"late@example.com,Ren\xe9,active,alice.pdf\n"
    raw += BOB.encode()

    # WHEN it is validated
    report, rows = run(raw, index=index_of("alice.pdf", "bob.pdf", *own_files(3000)))

    # THEN that row alone is rejected, naming the line and the column
    assert reasons(report) == [(3002, "Name", "bytes that are not valid utf-8 in Name")]
    assert report.valid == 3001
    assert rows[-1]["email"] == "bob@example.com"


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"], ids=["crlf", "lf", "cr"])
@pytest.mark.parametrize(
    ("bom", "encoding"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (b"", "utf-16-le"),
    ],
    ids=["le-bom", "be-bom", "le-no-bom"],
)
def test_utf16_that_cannot_be_decoded_fails_the_file_naming_its_line(bom, encoding, newline):
    # GIVEN a UTF-16 file whose line 3 holds a lone surrogate (the bytes 00 d8 in UTF-16LE)
    def utf16(text: str) -> bytes:
        return text.replace("\r\n", newline).encode(encoding)

    lone = "\ud800".encode(encoding, "surrogatepass")
    raw = bom + utf16(HEADER + ALICE + "bob@example.com,Bo") + lone + utf16("b,active,bob.pdf\r\n")

    # WHEN it is validated THEN the file fails, naming line 3
    with pytest.raises(InputFileError) as caught:
        run(raw)
    assert caught.value.message == (
        f"incoming/test.csv: cannot decode line 3 as {encoding}: illegal UTF-16 surrogate;"
        " export the file as CSV UTF-8"
    )


# --- dialects ----------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"], ids=["comma", "semi", "tab", "pipe"])
@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"], ids=["crlf", "lf", "cr"])
def test_delimiters_and_line_ends(delimiter, newline):
    def line(*cells: str) -> str:
        return delimiter.join(cells) + newline

    text = line("Email", "Name", "Status", "Attachment_File", "Note")
    text += line("alice@example.com", '"Alice, ""Al""; Example|x"', "active", "alice.pdf", '"1,5"')
    text += line("bob@example.com", "Bob", "active", "bob.pdf", '"two' + newline + 'lines"')
    text += newline + newline

    report, rows = run(text)

    assert report.delimiter == delimiter
    assert [r["row"] for r in rows] == [2, 3]
    assert rows[0]["name"] == 'Alice, "Al"; Example|x'
    assert rows[1]["fields"]["Note"] == "two" + newline + "lines"
    assert report.empty == 2


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_excel_sep_directive_names_the_delimiter_and_is_not_the_header(delimiter):
    text = f"sep={delimiter}\r\n" + HEADER.replace(",", delimiter) + ALICE.replace(",", delimiter)

    report, rows = run(codecs.BOM_UTF8 + text.encode())

    assert report.delimiter == delimiter
    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert [(r["row"], r["email"]) for r in rows] == [(3, "alice@example.com")]


def test_blank_lines_before_the_header_are_skipped_and_rows_keep_their_line_numbers():
    report, rows = run("\r\n  \r\n" + HEADER + ALICE)

    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert [r["row"] for r in rows] == [4]


def test_semicolon_file_with_commas_in_values_picks_semicolon():
    text = "Email;Name;Status;Attachment_File\nalice@example.com;Example, Alice;active;alice.pdf\n"

    report, rows = run(text)

    assert report.delimiter == ";"
    assert rows[0]["name"] == "Example, Alice"


def test_stray_whitespace_around_values_and_headers_is_removed():
    text = (
        " Email , Name ,Status,Attachment_File\n  alice@example.com , Alice ,active , alice.pdf \n"
    )

    report, rows = run(text)

    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert (rows[0]["email"], rows[0]["name"], rows[0]["attachment"]) == (
        "alice@example.com",
        "Alice",
        "alice.pdf",
    )


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("Email", "Email"),
        ("E-mail", "Email"),
        ("e_mail", "Email"),
        ("EMAIL ADDRESS", "Email"),
        ("Email-Address", "Email"),
        ("\ufeffemail", "Email"),
        ("Full name", "Name"),
        ("full_name", "Name"),
        ("status", "Status"),
        ("attachment file", "Attachment_File"),
        ("Attachment", "Attachment_File"),
        ("CC", "Cc"),
        ("BCC", "Bcc"),
        ("Reply-To", "Reply_To"),
        # spelt out: taken as the copy columns, not ignored as columns of the letter
        ("Carbon Copy", "Cc"),
        ("CC Email", "Cc"),
        ("Blind Carbon Copy", "Bcc"),
        ("bcc_address", "Bcc"),
        ("CC Emails", "Cc"),
        ("Copy To", "Cc"),
        ("Blind CC", "Bcc"),
        ("Bcc Recipients", "Bcc"),
        ("Reply-To Email", "Reply_To"),
        (" Amount ", "Amount"),
        ("", ""),
    ],
)
def test_header_names_are_normalised(given, canonical):
    assert normalise_header(given) == canonical


@pytest.mark.parametrize(
    ("given", "column"),
    [
        ("cc:", "Cc"),
        ("Cc (optional)", "Cc"),
        ("CC list", "Cc"),
        ("CC2", "Cc"),
        ("E-mail CC", "Cc"),
        ("bcc list", "Bcc"),
        ("Bcc (optional)", "Bcc"),
        ("Reply-To (optional)", "Reply_To"),
        # Its words, wherever they stand, whatever wraps them
        ("CCs", "Cc"),
        ("cc (manager)", "Cc"),
        ("Manager CC", "Cc"),
        ("managerCc", "Cc"),
        ("CC - HR", "Cc"),
        ("CC Name", "Cc"),
        ("Send Copy To", "Cc"),
        ("Courtesy Copy", "Cc"),
        ("Copy", "Cc"),
        ("Copies", "Cc"),
        ("Blind Carbon", "Bcc"),
        ("blind copies", "Bcc"),
        ("cco", "Bcc"),
        ("cc;bcc", "Bcc"),
        ("Reply", "Reply_To"),
        ("Reply Address", "Reply_To"),
        # Fullwidth letters, and Cyrillic ones drawn as Latin
        ("\uff23\uff43", "Cc"),
        ("\u0421\u0441", "Cc"),
        ("\u0412cc", "Bcc"),
    ],
)
def test_a_header_that_looks_like_a_copy_column_but_is_none_is_warned_of(given, column):
    # GIVEN a file with a column named much as a copy column is, that no template uses
    text = f"Email,Name,Status,Attachment_File,{given}\nalice@example.com,Alice,active,alice.pdf,"
    text += "boss@example.com\n"

    # WHEN it is validated
    report, rows = run(text)

    # THEN it is a column of the letter as before (its addresses are not copied), and the
    # report warns of it: what it looks like, that its addresses are not copied, and which
    # names are read
    assert rows[0]["fields"][given] == "boss@example.com"
    assert not rows[0].get(column.casefold())
    (warning,) = report.warnings
    assert warning.startswith(
        f"column {given!r} looks like a {column} column but is not read as one, and no template"
        " uses it: its addresses are not copied on the letters."
    )
    assert f"{column} is read from the column named {column} (or " in warning
    assert warning.endswith(f"rename it {column} to copy them.")
    assert report.to_dict()["warnings"] == [warning]


def test_a_copy_lookalike_beside_the_copy_column_is_warned_of_as_not_read():
    text = "Email,Name,Status,Attachment_File,Cc,cc 2\nalice@example.com,Alice,active,alice.pdf,"
    text += "a@example.com,b@example.com\n"

    report, rows = run(text)

    assert rows[0]["cc"] == ["a@example.com"]
    assert report.warnings == [
        "column 'cc 2' looks like a Cc column but is not read as one, and no template uses it:"
        " its addresses are not copied on the letters. Cc is read from the column named Cc (or"
        " Carbon Copy, CC Email, CC Emails, CC Address, CC Addresses, CC Recipients, Copy To;"
        " case, spaces, hyphens, underscores and dots aside), which the file has: put the"
        " addresses of 'cc 2' there too (several in one cell, separated by commas or"
        " semicolons) to copy them."
    ]


@pytest.mark.parametrize(
    "header",
    [
        *("CC-Addresses", "Carbon Copy", "Cost Centre", "Account", "Mail list", "Soccer"),
        # a word that holds a copy word is none: whole words only
        *("McCarthy", "Copyright", "Carbon Footprint", "Replyable", "Blind", "Carbon"),
    ],
)
def test_copy_columns_read_and_columns_unlike_them_are_not_warned_of(header):
    text = (
        f"Email,Name,Status,Attachment_File,{header}\nalice@example.com,Alice,active,alice.pdf,x\n"
    )

    report, _ = run(text)

    assert report.warnings == []


@pytest.mark.parametrize("header", ["Manager CC", "Send Copy To", "\u0421\u0441", "Reply"])
def test_a_copy_lookalike_by_its_words_a_template_uses_is_not_warned_of(header):
    # GIVEN a file whose column the template prints, named with a copy column's words
    catalog = FakeCatalog(uses={"offer": {"Name", header}})
    text = f"Email,Name,Status,Attachment_File,{header}\nalice@example.com,Alice,active,alice.pdf,"
    text += "Bob\n"

    # WHEN it is validated THEN no warning says it is not read
    report, rows = run(text, catalog=catalog)
    assert rows[0]["fields"][header] == "Bob"
    assert report.warnings == []


def test_a_copy_lookalike_a_template_uses_is_not_warned_of():
    # GIVEN a file whose column 'cc list' the template prints (a list for the reader)
    catalog = FakeCatalog(uses={"offer": {"Name", "cc list"}})
    text = "Email,Name,Status,Attachment_File,cc list\nalice@example.com,Alice,active,alice.pdf,"
    text += "Bob\n"

    # WHEN it is validated THEN it is the letter's column, and no warning says otherwise
    report, rows = run(text, catalog=catalog)
    assert rows[0]["fields"]["cc list"] == "Bob"
    assert report.warnings == []


def test_header_with_aliases_feeds_canonical_names():
    text = "E-mail,Full Name,STATUS,Attachment\nalice@example.com,Alice,active,alice.pdf\n"

    report, rows = run(text)

    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert rows[0]["name"] == "Alice"


def test_configured_choice_column_matches_regardless_of_case():
    catalog = FakeCatalog(column="Decision")
    text = "Email,Name,decision,Attachment_File\nalice@example.com,Alice,active,alice.pdf\n"

    report, rows = run(text, catalog=catalog)

    assert report.header == ["Email", "Name", "Decision", "Attachment_File"]
    assert catalog.asked == ["active"]
    assert len(rows) == 1


# --- whole-file problems -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "incoming/test.csv: empty file: no header and no rows"),
        (b"\r\n\r\n  \n", "incoming/test.csv: empty file: no header and no rows"),
        (HEADER.encode(), "incoming/test.csv: no recipients: the file has a header but no rows"),
        (
            (HEADER + ",,,\r\n\r\n").encode(),
            "incoming/test.csv: no recipients: the file has a header but no rows",
        ),
        (
            b"PK\x03\x04\x14\x00\x06\x00" + bytes(200),
            "incoming/test.csv: not a CSV file: it is a ZIP archive (PK zip), or an Office"
            " document (.docx, .xlsx); export it as CSV UTF-8",
        ),
        (
            b"%PDF-1.7\n" + bytes(100),
            "incoming/test.csv: not a CSV file: it is a PDF document; export it as CSV UTF-8",
        ),
        (
            codecs.BOM_UTF32_LE + "Email\n".encode("utf-32-le"),
            "incoming/test.csv: unsupported encoding: UTF-32; export as CSV UTF-8",
        ),
        (
            b"Name,Status\nAlice,active\n",
            "incoming/test.csv: no Email column: the header is 'Name,Status'; "
            "name the address column Email (or E-mail, Email address)",
        ),
        (
            b"Email,Name,email\na@example.com,A,b@example.com\n",
            "incoming/test.csv: column Email appears twice: columns 1 and 3 of the header",
        ),
    ],
    ids=["empty", "blank", "header-only", "header-and-blank", "xlsx", "pdf", "utf32", "no-email",
         "email-twice"],
)  # fmt: skip
def test_unusable_files_fail_whole_with_one_message(raw, message):
    with pytest.raises(InputFileError) as caught:
        run(raw)

    assert str(caught.value) == message


def test_binary_content_fails_whole():
    raw = bytes(range(256)) * 8

    with pytest.raises(InputFileError) as caught:
        run(raw)

    assert str(caught.value).startswith("incoming/test.csv: not a text file: ")


def test_runaway_quote_fails_whole_naming_the_problem():
    text = HEADER + 'alice@example.com,"Alice,active,alice.pdf\n' + "x" * 140_000 + "\n"

    with pytest.raises(InputFileError) as caught:
        run(text)

    assert "unreadable CSV" in str(caught.value)
    assert "quote" in str(caught.value)


def test_templates_using_missing_columns_raise_template_error():
    catalog = FakeCatalog(uses={"offer": {"Name", "Start_Date"}})

    with pytest.raises(TemplateError) as caught:
        run(HEADER + ALICE, catalog=catalog)

    assert str(caught.value) == (
        "incoming/test.csv: templates do not fit the columns: "
        "template offer uses Start_Date, which the file lacks"
    )


# --- no Attachment_File column ----------------------------------------------------------

MISSPELT = HEADER.replace("Attachment_File", "Attachement_File")
NO_FILE_COLUMN = (
    "incoming/test.csv: no Attachment_File column, though template set 'offer' attaches the "
    "file each row names in that column"
)


def one_set(attachment: str) -> dict[str, str]:
    """Templates of one set, ``offer`` (Status active), with ``attachment`` as its manifest's
    attachment lines."""
    return {
        "manifest.yaml": f"column: Status\nsets:\n  offer:\n    when: [active]\n{attachment}",
        "offer/subject.txt": "Offer for {{ Name }}",
        "offer/body.txt": "Hello {{ Name }}",
    }


def test_a_misspelt_attachment_column_refuses_the_file_naming_the_header():
    # GIVEN a set that attaches each row's own file, and a header spelling Attachement_File
    # WHEN validated
    with pytest.raises(InputFileError) as caught:
        run(MISSPELT + ALICE + BOB)

    # THEN the file is refused once, naming the column it has, not each row as empty
    assert caught.value.message == (
        f"{NO_FILE_COLUMN}, and row 2 is of that set; the file has a column "
        "'Attachement_File': a misspelling of 'Attachment_File'? Nothing is sent (name that "
        "column Attachment_File; then run the file again)"
    )


def test_a_file_without_the_attachment_column_is_refused_at_the_first_row_that_needs_it():
    # GIVEN no column like Attachment_File, and the first row of the attaching set third
    catalog = FakeCatalog(
        templates={"active": "offer", "rejected": "rejection"},
        attachment={"offer": True, "rejection": False},
    )
    text = "Email,Name,Status\r\ncarl@example.com,Carl,rejected\r\n"
    text += "dan@example.com,Dan,unsubscribed\r\nalice@example.com,Alice,active\r\n"

    # WHEN validated
    with pytest.raises(InputFileError) as caught:
        run(text, catalog=catalog)

    # THEN the file is refused, naming that row and the header
    assert caught.value.message == (
        f"{NO_FILE_COLUMN}, and row 4 is of that set: nothing is sent (the header has Email, "
        "Name, Status; add an Attachment_File column naming each row's file, then run the file "
        "again)"
    )


@pytest.mark.parametrize(
    ("attachment", "text", "attached"),
    [
        ("    attachment: none\n", MISSPELT + ALICE, None),
        ("    attachment: optional\n", "Email,Name,Status\r\nalice@example.com,Alice,active\r\n",
         None),
        ("    default_attachment: brochure.pdf\n",
         "Email,Name,Status\r\nalice@example.com,Alice,active\r\n", "brochure.pdf"),
    ],
    ids=["none", "optional", "default"],
)  # fmt: skip
def test_rows_that_need_no_attachment_column_are_sent_without_one(attachment, text, attached):
    # GIVEN a set whose rows need no file of their own, and a file without Attachment_File
    # WHEN validated
    report, rows = run(
        text, catalog=load_catalog(one_set(attachment)), index=index_of("brochure.pdf")
    )

    # THEN the row goes, with the set's default or nothing
    assert [(row["email"], row["attachment"]) for row in rows] == [("alice@example.com", attached)]
    assert reasons(report) == []


@pytest.mark.parametrize(
    ("files", "template", "default"),
    [
        (one_set("    attachment: optional\n"), "offer", ""),
        (one_set("    default_attachment: brochure.pdf\n"), "offer", " (else its "
         "default_attachment, brochure.pdf)"),
        ({"subject.txt": "Offer for {{ Name }}", "body.txt": "Hello"}, "default", ""),
    ],
    ids=["optional", "default", "no-manifest"],
)  # fmt: skip
def test_a_misspelt_attachment_column_refuses_the_file_where_rows_may_name_files(
    files, template, default
):
    # GIVEN a set that attaches a file a row names, and a header spelling Attachement_File,
    # without which each letter would go without its file (or with the default)
    # WHEN validated
    with pytest.raises(InputFileError) as caught:
        run(MISSPELT + ALICE, catalog=load_catalog(files), index=index_of("brochure.pdf"))

    # THEN the file is refused, naming the header
    assert caught.value.message == (
        f"incoming/test.csv: no Attachment_File column, though template set {template!r} "
        f"attaches the file each row names in that column{default}, and row 2 is of that set; "
        "the file has a column 'Attachement_File': a misspelling of 'Attachment_File'? Nothing "
        "is sent (name that column Attachment_File; then run the file again)"
    )


@pytest.mark.parametrize(
    "header", ["Attachments", "Attachmnt", "attachement file", "ATTACH-FILE", "Attachment Filenme"]
)
def test_headers_spelt_like_a_name_of_the_attachment_column_are_named(header):
    # GIVEN the attachment column's header misspelt one way or another
    text = HEADER.replace("Attachment_File", header) + ALICE

    # WHEN validated
    with pytest.raises(InputFileError) as caught:
        run(text)

    # THEN the refusal names it as the column misspelt
    assert f"the file has a column {header!r}: a misspelling of 'Attachment_File'?" in (
        caught.value.message
    )


@pytest.mark.parametrize("header", ["Anhang", "Anlage", "Pièce jointe", "Dateiname", "PDF"])
def test_a_header_naming_the_files_in_another_language_is_to_be_renamed(header):
    # GIVEN a German (French...) export whose files' column has another word for it
    text = HEADER.replace("Attachment_File", header) + ALICE

    # WHEN validated
    with pytest.raises(InputFileError) as caught:
        run(text)

    # THEN the refusal names that column and says to rename it
    assert (
        f"the file has a column {header!r}, likely the files' names: nothing is sent (rename"
        " your column to Attachment_File, the name MailMatrix reads them under; then run the"
        " file again)"
    ) in caught.value.message


@pytest.mark.parametrize("header", ["Department", "Statement", "File", "Notes"])
def test_other_headers_are_not_taken_for_the_attachment_column(header):
    # GIVEN a file without Attachment_File whose other column is not spelt like it
    text = HEADER.replace("Attachment_File", header) + ALICE

    # WHEN validated
    with pytest.raises(InputFileError) as caught:
        run(text)

    # THEN the refusal names the header, not a look-alike
    assert "a misspelling" not in caught.value.message
    assert f"the header has Email, Name, Status, {header};" in caught.value.message


# --- per-row checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "column", "reason"),
    [
        ("alice@example.com,Alice,active\r\n", "", "3 fields, header has 4"),
        ("alice@example.com,Alice,active,alice.pdf,EXTRA\r\n", "", "5 fields, header has 4"),
        ("alice@example.com,Al\x00ice,active,alice.pdf\r\n", "Name",
         "control character (NUL) in Name"),
        ("alice@example.com,Al\x1bice,active,alice.pdf\r\n", "Name",
         "control character (ESC) in Name"),
        ('alice@example.com,"Al\nice",active,alice.pdf\r\n', "Name", "line break in Name"),
        ('alice@example.com,"Al\rice",active,alice.pdf\r\n', "Name", "line break in Name"),
        ("alice@example.com,Al\u2028ice,active,alice.pdf\r\n", "Name", "line break in Name"),
        ("alice@example.com,Al\tice,active,alice.pdf\r\n", "Name",
         "control character (TAB) in Name"),
        ('"alice@example.com\nBcc: x@example.com",A,active,alice.pdf\r\n', "Email",
         "line break in Email"),
        (",Alice,active,alice.pdf\r\n", "Email", "Email is missing"),
        ("alice,Alice,active,alice.pdf\r\n", "Email",
         "not an email address: 'alice' (no @-sign)"),
        ("josé@example.com,José,active,alice.pdf\r\n", "Email",
         "non-ASCII local part not supported by SES (no SMTPUTF8)"),
        ("alice@example.com,,active,alice.pdf\r\n", "Name",
         "Name is empty but used by template offer (fill the cell, or print it in the"
         " template within {% if Name %}...{% endif %})"),
        ("alice@example.com,Alice,actve,alice.pdf\r\n", "Status", "unknown Status value 'actve'"),
        ("alice@example.com,Alice,,alice.pdf\r\n", "Status", "Status is empty"),
        ("alice@example.com,Alice,active,../alice.pdf\r\n", "Attachment_File",
         "parent folder (..) in attachment name '../alice.pdf': give a bare file name"),
        ("alice@example.com,Alice,active,nobody.pdf\r\n", "Attachment_File",
         "attachment not found: nobody.pdf"),
        ("alice@example.com,Alice,active,alice.pdf,\r\n", None, None),
    ],
)  # fmt: skip
def test_row_problems_reject_that_row_only(line, column, reason):
    report, rows = run(HEADER + line + BOB)

    expected = [] if reason is None else [(2, column, reason)]
    assert reasons(report) == expected
    assert emails(rows) == (
        ["bob@example.com"] if reason else ["alice@example.com", "bob@example.com"]
    )


def test_a_row_with_several_problems_names_them_all_in_one_rejected_row():
    # GIVEN a row with a bad address, an empty Name the template uses and a missing PDF
    line = "alice,,active,nobody.pdf\r\n"

    # WHEN it is validated
    report, rows = run(HEADER + line + BOB)

    # THEN it is one rejected row that names every problem, in column order
    assert reasons(report) == [
        (
            2,
            "Email; Name; Attachment_File",
            "not an email address: 'alice' (no @-sign); "
            "Name is empty but used by template offer (fill the cell, or print it in the"
            " template within {% if Name %}...{% endif %}); attachment not found: nobody.pdf",
        )
    ]
    assert emails(rows) == ["bob@example.com"]


def test_an_unknown_status_still_names_the_row_s_address_problem():
    report, _ = run(HEADER + "alice,Alice,actve,alice.pdf\r\n" + BOB)

    assert reasons(report) == [
        (
            2,
            "Status; Email",
            "unknown Status value 'actve'; not an email address: 'alice' (no @-sign)",
        )
    ]


def test_tab_and_line_breaks_are_allowed_in_body_only_columns():
    text = "Email,Name,Status,Attachment_File,Note\r\n"
    text += 'alice@example.com,Alice,active,alice.pdf,"line one\r\n\tline two"\r\n'

    report, rows = run(text)

    assert report.rejected == []
    assert rows[0]["fields"]["Note"] == "line one\r\n\tline two"


def test_nul_is_refused_in_body_only_columns_too():
    text = "Email,Name,Status,Attachment_File,Note\r\n"
    text += "alice@example.com,Alice,active,alice.pdf,a\x00b\r\n"

    report, rows = run(text)

    assert reasons(report) == [(2, "Note", "control character (NUL) in Note")]
    assert rows == []


def test_rejected_row_carries_a_masked_address():
    report, _ = run(HEADER + "alice@example.com,,active,alice.pdf\r\n" + BOB)

    assert report.rejected[0]["email"] == "a***@example.com"


def test_unnamed_column_with_values_is_reported():
    text = "Email,Name,,Status,Attachment_File\r\n"
    text += "alice@example.com,Alice,oops,active,alice.pdf\r\n"
    text += "bob@example.com,Bob,,active,bob.pdf\r\n"

    report, rows = run(text)

    assert reasons(report) == [
        (2, "column 3 (no header)", "value in a column without a header name")
    ]
    assert emails(rows) == ["bob@example.com"]
    assert report.header == ["Email", "Name", "Status", "Attachment_File"]


@pytest.mark.parametrize(
    "cell",
    ['"mia@example.com; ben@example.com"', '"mia@example.com, ben@example.com"',
     "mia@example.com ben@example.com"],
    ids=["semicolon", "comma", "space"],
)  # fmt: skip
def test_an_email_cell_holding_several_addresses_says_where_the_copies_go(cell):
    report, rows = run(HEADER + f"{cell},Mia,active,alice.pdf\r\n" + BOB)

    assert reasons(report) == [
        (
            2,
            "Email",
            "Email holds 2 addresses, and a cell of Email holds one: keep the recipient's own"
            " there, and put the others in a column named Cc (or Bcc, for blind copies),"
            " separated by commas or semicolons",
        )
    ]
    assert report.rejected[0]["email"] == "m***@example.com, b***@example.com"
    assert emails(rows) == ["bob@example.com"]


def test_an_email_cell_with_one_bad_address_keeps_its_own_reason():
    report, _ = run(HEADER + "mia@@example.com,Mia,active,alice.pdf\r\n")

    assert "invalid characters" in reasons(report)[0][2]


def test_skipped_rows_are_counted_not_rejected():
    report, rows = run(HEADER + "carol@example.com,Carol,Unsubscribed,\r\n" + BOB)

    assert report.skipped == [{"row": 2, "reason": "unsubscribed", "email": "c***@example.com"}]
    assert report.rejected == []
    assert emails(rows) == ["bob@example.com"]


@pytest.mark.parametrize(
    ("cells", "column", "reason"),
    [
        ("not-an-address,,", "Cc", "Cc: not an email address: 'not-an-address' (no @-sign)"),
        (",x@@example.com,", "Bcc", "Bcc: invalid address: "),
        (",,a@example.com;b@example.com", "Reply_To", "Reply_To holds more than one address"),
        (";".join(f"c{i}@example.com" for i in range(50)) + ",,", "Cc",
         "51 recipients (Email, Cc, Bcc); SES allows 50"),
    ],
)  # fmt: skip
def test_cc_bcc_reply_to_are_checked(cells, column, reason):
    text = "Email,Name,Status,Attachment_File,Cc,Bcc,Reply_To\r\n"
    cc, bcc, reply_to = next(csv.reader([cells]))
    text += f'alice@example.com,Alice,active,alice.pdf,"{cc}","{bcc}","{reply_to}"\r\n'

    report, rows = run(text)

    assert [(item["column"], item["reason"][: len(reason)]) for item in report.rejected] == [
        (column, reason)
    ]
    assert rows == []


def test_reply_to_is_normalised():
    text = "Email,Name,Status,Attachment_File,Reply-To\r\n"
    text += "alice@example.com,Alice,active,alice.pdf,HR@Bücher.example\r\n"

    _, rows = run(text)

    assert rows[0]["reply_to"] == "HR@xn--bcher-kva.example"


def test_oversized_attachment_is_rejected_with_sizes():
    index = index_of("big.pdf", sizes={"big.pdf": 31 * 1024 * 1024})
    text = HEADER + "alice@example.com,Alice,active,big.pdf\r\n"

    report, rows = run(text, index=index)

    assert reasons(report) == [
        (
            2,
            "Attachment_File",
            "attachment too large: big.pdf is 31.0 MiB, about 42.7 MiB as an encoded message; "
            "the limit is 40.0 MiB",
        )
    ]
    assert rows == []


# --- duplicates --------------------------------------------------------------------------


def test_an_exact_copy_is_a_duplicate_and_a_copy_with_other_values_holds_both():
    text = HEADER + ALICE + BOB
    text += "Alice@EXAMPLE.com,Alice Again,active,carol.pdf\r\n"
    text += ALICE

    report, rows = run(text)

    assert emails(rows) == ["alice@example.com", "bob@example.com"]
    assert report.withdrawn == {2} and report.valid == 1
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Email"), (4, "Email")]
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(5, 2)]


def test_same_address_under_another_template_holds_both_rows():
    # Decision (break test F5): one file sends one email per address. An offer and a rejection
    # to the same candidate is a mistake in the file, not two letters to send; which letter is
    # the right one only a person can tell, so neither goes (the first row used to).
    catalog = FakeCatalog(templates={"active": "offer", "reminder": "reminder"})
    text = HEADER + ALICE + "alice@example.com,Alice Example,reminder,alice.pdf\r\n"

    report, rows = run(text, catalog=catalog)

    assert [r["template"] for r in rows] == ["offer"] and report.withdrawn == {2}
    assert report.duplicates == []
    assert [(item["row"], item["email"]) for item in report.rejected] == [
        (2, "a***@example.com"),
        (3, "a***@example.com"),
    ]
    assert reasons(report)[1][2].startswith(
        "row 2 has the same address with other values in Status:"
    )


def test_a_rejected_row_holds_a_later_valid_one_of_its_address_and_says_so():
    # Decision: a row rejected for another reason still says whose the address is; a later row
    # with other values for it is held back with a reason, not sent, nor hidden as a duplicate
    text = HEADER + "alice@example.com,,active,alice.pdf\r\n" + ALICE

    report, rows = run(text)

    assert rows == [] and report.duplicates == []
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Name"), (3, "Email")]
    assert reasons(report)[1][2].startswith("row 2 has the same address with other values in Name:")


def test_many_distinct_addresses_grow_the_duplicate_table_without_false_hits():
    lines = "".join(f"user{i}@example.com,User {i},active,u{i}.pdf\n" for i in range(5000))
    lines += "user4321@example.com,User 4321,active,u4321.pdf\n"

    report, _ = run(HEADER + lines, index=index_of(*own_files(5000)))

    assert report.valid == 5000
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(5002, 4323)]


def test_many_rejected_rows_spill_to_disk_and_read_back_in_order(monkeypatch):
    # GIVEN a spool limit of 4 KiB and a file where every row is rejected
    monkeypatch.setattr("mailmatrix.core.recipients.SPOOL_BYTES", 4096)
    lines = "".join(f"user{i}@example.com,User {i},active,missing{i}.pdf\n" for i in range(500))

    # WHEN it is validated
    report, rows = run(HEADER + lines)

    # THEN the rejects went beyond memory yet all read back, in file order, and a cut JSON
    # report says how many there were
    assert rows == []
    assert len(report.rejected) == 500
    assert report.rejected._spool._rolled
    assert [item["row"] for item in report.rejected] == list(range(2, 502))
    assert report.rejected[-1]["reason"] == "attachment not found: missing499.pdf"
    cut = report.to_dict(limit=3)
    assert [item["row"] for item in cut["rejected"]] == [2, 3, 4]
    assert cut["truncated"] == {"rejected": 500}


class _FullDisk(io.BytesIO):
    """A temporary file on a full disk: it takes nothing."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_temporary_folder(monkeypatch, spool_bytes: int) -> None:
    """Rows are spooled to a temporary file past ``spool_bytes``, and none can be written."""
    monkeypatch.setattr("mailmatrix.core.recipients.SPOOL_BYTES", spool_bytes)
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *args, **kwargs: _FullDisk())


def test_rejected_rows_that_spill_onto_a_full_disk_name_the_temporary_folder(monkeypatch):
    # GIVEN a spool limit of 4 KiB, a temporary folder on a full disk, and a file where every
    # row is rejected
    _full_temporary_folder(monkeypatch, 4096)
    lines = "".join(f"user{i}@example.com,User {i},active,missing{i}.pdf\n" for i in range(500))

    # WHEN it is validated THEN the error says which folder could not be written, what for,
    # and why in words (it said "[Errno 28] No space left on device" alone)
    with pytest.raises(FileNotWritten) as failed:
        run(HEADER + lines)
    assert failed.value.message == (
        f"cannot write a temporary file in {tempfile.gettempdir()} (where the rows not sent"
        " are kept, past 4 KiB of them, while the file is validated): the disk holding it is"
        " full (No space left on device)"
    )


def test_a_list_whose_entries_cannot_be_kept_leaves_no_temporary_file_open(monkeypatch):
    # GIVEN a temporary folder on a full disk, and entries past the spool limit
    _full_temporary_folder(monkeypatch, 64)
    entries = [{"row": row, "reason": "x" * 40} for row in range(2, 10)]

    # WHEN a list is made of them THEN it is refused, and its spool is closed with it (not
    # left for the garbage collector to find open)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(FileNotWritten):
            ProblemList(entries)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# --- one address, one letter: rows of it with other values are all held ---------------------

HELD = (
    ": one address gets one letter, so one of the two rows is wrong and neither is sent "
    "(correct the address of the wrong row, or delete one of them)"
)
TRIAL = index_of("sofia.pdf", "liam.pdf", "noah.pdf", "bob.pdf")


def test_rows_of_one_address_with_other_values_are_all_held_naming_what_differs():
    # GIVEN Sofia's row with Liam's address typed in, Liam's own row (his address in capitals),
    # Bob's row, a third row with Liam's address, and a copy of Sofia's row with spaces
    text = HEADER + "liam@example.com,Sofia Nguyen,active,sofia.pdf\r\n"
    text += "LIAM@example.com,Liam Garcia,active,liam.pdf\r\n" + BOB
    text += "liam@example.com,Noah Example,active,noah.pdf\r\n"
    text += " liam@example.com , Sofia Nguyen ,active,sofia.pdf \r\n"

    # WHEN validated
    report, rows = run(text, index=TRIAL)

    # THEN only Bob's row is sent: Sofia's, passed on before Liam's was read, is withdrawn,
    # and each later row with Liam's address and other values is rejected, each reason naming
    # the other row and the columns (never the values); the copy is a duplicate of row 2
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == [4]
    assert report.withdrawn == {2} and report.valid == 1
    assert reasons(report) == [
        (
            2,
            "Email",
            "row 3 has the same address with other values in Name, Attachment_File" + HELD,
        ),
        (
            3,
            "Email",
            "row 2 has the same address with other values in Name, Attachment_File" + HELD,
        ),
        (
            5,
            "Email",
            "row 2 has the same address with other values in Name, Attachment_File" + HELD,
        ),
    ]
    assert [item["email"] for item in report.rejected] == [
        "l***@example.com",
        "L***@example.com",
        "l***@example.com",
    ]
    assert report.duplicates == [{"row": 6, "first_row": 2, "email": "l***@example.com"}]


def test_exact_copies_of_a_row_are_sent_once_whatever_the_case_of_the_address():
    # GIVEN Alice's row, then copies with her address in capitals and cells padded with spaces
    text = HEADER + ALICE + "ALICE@Example.COM,Alice Example,active,alice.pdf\r\n"
    text += "alice@example.com,Alice Example ,active , alice.pdf\r\n"

    report, rows = run(text)

    # THEN one letter goes, from row 2; the copies are duplicates, nothing is held
    assert [r["row"] for r in rows] == [2] and report.withdrawn == frozenset()
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(3, 2), (4, 2)]
    assert report.rejected == []


def test_a_later_row_rejected_for_another_reason_still_holds_the_first_row_of_its_address():
    # GIVEN Alice's row, then a row with her address and no Name
    text = HEADER + ALICE + "alice@example.com,,active,bob.pdf\r\n"

    report, _ = run(text)

    # THEN the later row names both problems, and Alice's row is withdrawn: the later one may
    # be hers, with Alice's letter meant for someone else
    assert report.withdrawn == {2} and report.valid == 0
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (2, "Email"),
        (3, "Name; Email"),
    ]
    later = reasons(report)[1][2]
    assert later.startswith("Name is empty but used by template offer (fill the cell")
    assert "{% endif %}); row 2 has the same address" in later
    assert "other values in Name, Attachment_File: " in later


def test_rows_of_one_address_excluded_by_status_stay_excluded_and_hold_a_later_row_to_send():
    # Decision: rows excluded by Status send nothing, so two of them for one address with
    # other values hold nothing back: both stay excluded, neither is rejected. They still say
    # whose the address is: a later row to send with other values is held (case 25: a file
    # that marks an address unsubscribed must not mail it from another row).
    text = HEADER + "liam@example.com,Liam Garcia,unsubscribed,liam.pdf\r\n"
    text += "liam@example.com,Sofia Nguyen,unsubscribed,sofia.pdf\r\n"
    text += "liam@example.com,Liam Garcia,active,liam.pdf\r\n" + BOB

    report, rows = run(text, index=TRIAL)

    assert [item["row"] for item in report.skipped] == [2, 3]
    assert [r["row"] for r in rows] == [5] and report.withdrawn == frozenset()
    assert reasons(report) == [
        (4, "Email", "row 2 has the same address with other values in Status" + HELD)
    ]
    assert report.duplicates == []


def test_a_reason_names_five_columns_and_counts_the_rest():
    # GIVEN a file of eight more columns, and two rows of one address differing in all but one
    extra = [f"C{i}" for i in range(1, 9)]
    text = "Email,Name,Status,Attachment_File," + ",".join(extra) + "\r\n"
    text += "alice@example.com,Alice,active,alice.pdf," + ",".join("a" * 8) + "\r\n"
    text += "alice@example.com,Alice,active,alice.pdf," + ",".join("b" * 7 + "a") + "\r\n"

    report, _ = run(text)

    assert reasons(report)[1][2].startswith(
        "row 2 has the same address with other values in C1, C2, C3, C4, C5 and 2 more columns: "
    )


def test_the_columns_named_are_those_of_the_first_row_wherever_its_prints_are(monkeypatch):
    # GIVEN spools of 4 KiB, the first rows of 1,500 addresses with a row without a usable
    # address after every third, 100 such rows (a long gap), 10 more first rows, then later
    # rows for an address of each stretch, each differing in other columns
    from mailmatrix.core.recipients import _RowPrints

    monkeypatch.setattr("mailmatrix.core.recipients.SPOOL_BYTES", 4096)
    written: list[int] = []
    rolled: list[bool] = []
    write, close = _RowPrints._write, _RowPrints.close
    monkeypatch.setattr(
        _RowPrints, "_write", lambda self: written.append(len(self._pending)) or write(self)
    )
    monkeypatch.setattr(
        _RowPrints, "close", lambda self: rolled.append(self._spool._rolled) or close(self)
    )
    bad = "x@@example.com,X,active,,T\r\n"
    text = "Email,Name,Status,Attachment_File,Team\r\n"
    for i in range(1500):
        text += f"u{i}@example.com,U {i},active,u{i}.pdf,T{i}\r\n" + (bad if i % 3 == 2 else "")
    text += bad * 100
    text += "".join(f"u{i}@example.com,U {i},active,u{i}.pdf,T{i}\r\n" for i in range(1500, 1510))
    text += "u0@example.com,U 0,active,u0.pdf,New\r\n"
    text += "u149@example.com,Other,active,u149.pdf,T149\r\n"
    text += "u1505@example.com,V,active,u1505.pdf,W\r\n"

    # WHEN validated
    report, _ = run(text, index=index_of(*own_files(1510)))

    # THEN the prints went to disk a thousand rows at a time, and each held row names the
    # columns that differ from the first row of its address, read back from disk (u0, u149)
    # or memory (u1505)
    assert rolled == [True] and 0 < max(written) <= 1024 + 64
    assert report.withdrawn == {2, 200, 2107}
    held = [(row, reason.split(":")[0]) for row, _, reason in reasons(report) if "same" in reason]
    assert held == [
        (2, "row 2112 has the same address with other values in Team"),
        (200, "row 2113 has the same address with other values in Name"),
        (2107, "row 2114 has the same address with other values in Name, Team"),
        (2112, "row 2 has the same address with other values in Team"),
        (2113, "row 200 has the same address with other values in Name"),
        (2114, "row 2107 has the same address with other values in Name, Team"),
    ]


# --- Cc and Bcc: no row's letter to another row's recipient --------------------------------

EXTRA = "Email,Name,Status,Attachment_File,Cc,Bcc\r\n"


def copied(column: str, other_row: int) -> str:
    """The reason of a row whose ``column`` names the recipient of ``other_row``."""
    return (
        f"{column} names the recipient of row {other_row}, who would get this row's letter: a "
        f"row's letter goes to no other row's recipient, so this row is not sent (take row "
        f"{other_row}'s address out of {column}, or correct it if it is meant for someone "
        "else; then run the file again)"
    )


def test_rows_copying_another_rows_recipient_are_not_sent_wherever_that_row_is():
    # GIVEN the tester's file: Alice's row with Bob's address in Cc (Bob's row comes later),
    # Bob's row, and Carol's row with Alice's address in Bcc (Alice's row came before)
    text = EXTRA + "alice@example.com,Alice,active,alice.pdf,bob@example.com,\r\n"
    text += "bob@example.com,Bob,active,bob.pdf,,\r\n"
    text += "carol@example.com,Carol,active,carol.pdf,,alice@example.com\r\n"

    # WHEN validated
    report, rows = run(text)

    # THEN only Bob's own letter goes: Alice's row, passed on before Bob's was read, is
    # withdrawn, and Carol's is rejected as read, each naming its column and the other row
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == [3]
    assert report.withdrawn == {2} and report.valid == 1
    assert report.rejected == [
        {"row": 2, "column": "Cc", "reason": copied("Cc", 3), "email": "a***@example.com"},
        {"row": 4, "column": "Bcc", "reason": copied("Bcc", 2), "email": "c***@example.com"},
    ]
    assert report.duplicates == [] and report.skipped == []


@pytest.mark.parametrize("column", ["Cc", "Bcc"])
@pytest.mark.parametrize("named_first", [True, False], ids=["named row first", "named row last"])
def test_a_cc_or_bcc_naming_another_rows_email_rejects_only_the_row_that_names_it(
    column, named_first
):
    # GIVEN Dave's row, and Alice's row naming Dave's address in Cc or Bcc, in either order
    cells = {"Cc": "dave@example.com,", "Bcc": ",dave@example.com"}[column]
    dave = "dave@example.com,Dave,active,dave.pdf,,\r\n"
    alice = f"alice@example.com,Alice,active,alice.pdf,{cells}\r\n"
    text = EXTRA + (dave + alice if named_first else alice + dave)
    dave_row, alice_row = (2, 3) if named_first else (3, 2)

    # WHEN validated
    report, rows = run(text)

    # THEN Dave's own letter goes and Alice's does not, its reason naming Dave's row
    assert emails(r for r in rows if r["row"] not in report.withdrawn) == ["dave@example.com"]
    assert report.valid == 1
    assert report.withdrawn == (frozenset() if named_first else {alice_row})
    assert reasons(report) == [(alice_row, column, copied(column, dave_row))]


@pytest.mark.parametrize(
    ("email", "cc"),
    [
        ("dave@example.com", "DAVE@Example.COM"),
        ("Dave@EXAMPLE.com", "dave@example.com"),
        ("anna@Bücher.example", "ANNA@xn--bcher-kva.example"),
        ("anna@xn--bcher-kva.example", "Anna@BÜCHER.example"),
    ],
    ids=["cc in capitals", "email in capitals", "idn email", "idn cc"],
)
@pytest.mark.parametrize("named_first", [True, False], ids=["named row first", "named row last"])
def test_a_cc_is_compared_with_email_as_duplicates_are(email, cc, named_first):
    # GIVEN a recipient's row, and Alice's row naming that address in Cc written otherwise
    other = f"{email},Dave,active,dave.pdf,,\r\n"
    alice = f"alice@example.com,Alice,active,alice.pdf,{cc},\r\n"
    text = EXTRA + (other + alice if named_first else alice + other)

    # WHEN validated
    report, rows = run(text)

    # THEN it is the same address: Alice's row is not sent
    assert [r["name"] for r in rows if r["row"] not in report.withdrawn] == ["Dave"]
    alice_row = 3 if named_first else 2
    assert [(row, column) for row, column, _ in reasons(report)] == [(alice_row, "Cc")]


def test_a_cc_that_is_no_rows_email_or_the_rows_own_goes_and_reply_to_is_not_compared():
    # GIVEN Alice's row copying HR and herself (her address in capitals), and Bob's row with
    # Alice's address as its Reply_To, which receives nothing
    text = "Email,Name,Status,Attachment_File,Cc,Bcc,Reply_To\r\n"
    text += "alice@example.com,Alice,active,alice.pdf,hr@example.com; ALICE@example.com,,\r\n"
    text += "bob@example.com,Bob,active,bob.pdf,,ops@example.com,alice@example.com\r\n"
    text += "carol@example.com,Carol,active,carol.pdf,hr@example.com,,\r\n"

    # WHEN validated
    report, rows = run(text)

    # THEN every row goes with its copies as written
    assert report.rejected == [] and report.withdrawn == frozenset() and report.valid == 3
    assert [(r["cc"], r["bcc"], r["reply_to"]) for r in rows] == [
        (["hr@example.com", "ALICE@example.com"], [], None),
        ([], ["ops@example.com"], "alice@example.com"),
        (["hr@example.com"], [], None),
    ]


def test_every_row_copying_an_address_is_withdrawn_once_a_row_has_it_as_its_email():
    # GIVEN three rows copying HR, HR's own row excluded by Status, then a fourth copying HR
    text = EXTRA + "".join(
        f"{name}@example.com,{name},active,{name}.pdf,hr@example.com,\r\n"
        for name in ("alice", "bob", "carol")
    )
    text += "HR@example.com,HR,unsubscribed,,,\r\n"
    text += "dave@example.com,Dave,active,dave.pdf,,hr@example.com\r\n"

    # WHEN validated
    report, rows = run(text)

    # THEN no letter goes: an excluded row's address is a recipient's too, and every row
    # copying it names that row, in row order
    assert rows and report.withdrawn == {2, 3, 4} and report.valid == 0
    assert reasons(report) == [
        (2, "Cc", copied("Cc", 5)),
        (3, "Cc", copied("Cc", 5)),
        (4, "Cc", copied("Cc", 5)),
        (6, "Bcc", copied("Bcc", 5)),
    ]


def test_a_row_withdrawn_for_its_cc_and_its_file_names_both():
    # GIVEN Alice's row copying Bob, Carol's row naming Alice's file, then Bob's row
    text = EXTRA + "alice@example.com,Alice,active,alice.pdf,bob@example.com,\r\n"
    text += "carol@example.com,Carol,active,alice.pdf,,\r\n"
    text += "bob@example.com,Bob,active,bob.pdf,,\r\n"

    # WHEN validated
    report, _ = run(text)

    # THEN Alice's row names the shared file first, then the copy to Bob
    assert report.withdrawn == {2} and report.valid == 1
    (row, column, reason), carol = reasons(report)
    assert (row, column) == (2, "Attachment_File; Cc")
    assert reason.startswith("alice.pdf is also the attachment of row 3, another recipient")
    assert reason.endswith("; " + copied("Cc", 4))
    assert carol[:2] == (3, "Attachment_File")


def test_a_row_withdrawn_for_its_cc_that_an_earlier_run_sent_says_so():
    # GIVEN Alice's row copying Bob, sent by an earlier run, and Bob's row added after it
    text = EXTRA + "alice@example.com,Alice,active,alice.pdf,bob@example.com,\r\n"
    text += "bob@example.com,Bob,active,bob.pdf,,\r\n"
    asked: list[frozenset[int]] = []

    # WHEN validated
    report, _ = run(text, sent_before=asking({2}, asked))

    # THEN Alice's row is not sent again, and its reason says Bob may have had her letter
    assert report.withdrawn == {2} and asked == [frozenset({2})]
    assert reasons(report) == [
        (
            2,
            "Cc",
            "this row's letter went out in an earlier run of this file, and its Cc names the "
            "recipient of row 3, who may have received it: a row's letter goes to no other "
            "row's recipient, so this row is not sent again (take row 3's address out of Cc, "
            "or correct it if it is meant for someone else)",
        )
    ]


class EarlierLetters:
    """A ledger of campaign c's earlier letters of the set offer (Ledger.template_sets and
    outcomes_of), keeping each batch of keys it is asked."""

    def __init__(self, outcomes: dict[str, Outcome]) -> None:
        self.outcomes = {
            idempotency_key("c", email, "offer"): outcome for email, outcome in outcomes.items()
        }
        self.asked: list[int] = []

    def template_sets(self, campaign: str) -> frozenset[str]:
        return frozenset({"offer"}) if campaign == "c" else frozenset()

    def outcomes_of(self, keys: list[str]) -> dict[str, Outcome]:
        self.asked.append(len(keys))
        return {key: self.outcomes[key] for key in keys if key in self.outcomes}


def mailed_by(ledger: EarlierLetters, skipped: set[str] = frozenset()) -> EarlierRecipients:
    """Campaign c's earlier recipients in ``ledger``; the letters of ``skipped`` are settled."""
    return EarlierRecipients(
        ledger, campaign="c", key=idempotency_key, skipped=lambda email, _: email in skipped
    )


def mailed_earlier(column: str) -> str:
    """The reason of a row whose ``column`` names a recipient an earlier run mailed."""
    return (
        f"{column} names a recipient an earlier run of this file mailed, who would get this "
        "row's letter: a row's letter goes to no other recipient of the campaign, so this row "
        f"is not sent (take that address out of {column}, or correct it if it is meant for "
        "someone else; then run the file again)"
    )


def test_a_cc_or_bcc_naming_a_recipient_an_earlier_run_mailed_is_rejected():
    # GIVEN an earlier run that mailed Bob (his row since taken out of the file); Alice's row
    # copying him (his address in capitals) and HR, Carol's blind-copying him, Dave's copying
    # HR only, and Erin's with neither
    ledger = EarlierLetters({"bob@example.com": Outcome("k", 2, "sent", message_id="m")})
    text = EXTRA + "alice@example.com,Alice,active,alice.pdf,BOB@example.com; hr@example.com,\r\n"
    text += "carol@example.com,Carol,active,carol.pdf,,bob@example.com\r\n"
    text += "dave@example.com,Dave,active,dave.pdf,hr@example.com,\r\n"
    text += "erin@example.com,Erin,active,erin.pdf,,\r\n"

    # WHEN validated with the earlier runs to ask
    report, rows = run(text, mailed=mailed_by(ledger))

    # THEN Alice's and Carol's rows are rejected as read, naming the column; Dave's and Erin's
    # go; the ledger was asked once for Bob and HR together, and never again
    assert emails(rows) == ["dave@example.com", "erin@example.com"]
    assert report.withdrawn == frozenset() and report.valid == 2
    assert reasons(report) == [(2, "Cc", mailed_earlier("Cc")), (3, "Bcc", mailed_earlier("Bcc"))]
    assert ledger.asked == [2]


@pytest.mark.parametrize(
    ("outcome", "rejected"),
    [
        (Outcome("k", 2, "sent", message_id="m"), True),
        (Outcome("k", 2, "claimed", attempt="a"), True),
        (Outcome("k", 2, "failed", code=OUTCOME_UNKNOWN), True),
        (Outcome("k", 2, "released", uncertain=True), True),
        (Outcome("k", 2, "failed", code="Refused"), False),
        (Outcome("k", 2, "released"), False),
    ],
    ids=["sent", "claimed", "unknown", "doubtful", "refused", "released"],
)
def test_a_cc_is_rejected_when_the_earlier_letter_may_have_gone_out(outcome, rejected):
    # GIVEN Bob's earlier letter in a given state, and Alice's row copying him
    ledger = EarlierLetters({"bob@example.com": outcome})
    text = EXTRA + "alice@example.com,Alice,active,alice.pdf,bob@example.com,\r\n"

    # WHEN validated THEN Alice's row is rejected only if Bob may have had a letter
    report, _ = run(text, mailed=mailed_by(ledger))
    assert reasons(report) == ([(2, "Cc", mailed_earlier("Cc"))] if rejected else [])


def test_a_row_whose_letter_the_run_skips_asks_nothing_of_its_cc():
    # GIVEN Bob mailed earlier, and Alice's letter settled already, her row now copying Bob
    ledger = EarlierLetters({"bob@example.com": Outcome("k", 2, "sent", message_id="m")})
    text = EXTRA + "alice@example.com,Alice,active,alice.pdf,bob@example.com,\r\n"

    # WHEN validated THEN her letter, which goes nowhere, is not rejected; nothing was asked
    report, _ = run(text, mailed=mailed_by(ledger, skipped={"alice@example.com"}))
    assert report.rejected == [] and ledger.asked == []


# --- streaming ---------------------------------------------------------------------------


class TrickleStream(io.RawIOBase):
    """A non-seekable stream that returns at most 7 bytes a read (like a slow socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(7, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_short_reads_and_multibyte_characters_split_across_reads():
    text = HEADER + "z1@example.com,王芳 Zoë,active,bob.pdf\r\n"
    text += "zoe@example.com,王芳 Zoë,active,alice.pdf\r\n" * 2
    rows: list[dict] = []

    report = validate_recipients(
        TrickleStream(codecs.BOM_UTF16_LE + text.encode("utf-16-le")),
        source="s",
        catalog=FakeCatalog(),
        attachments=index_of(),
        emit=rows.append,
    )

    assert report.encoding == "utf-16-le"
    assert [(r["row"], r["name"]) for r in rows] == [(2, "王芳 Zoë"), (3, "王芳 Zoë")]
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(4, 3)]


@pytest.mark.parametrize("stream", [io.BytesIO, TrickleStream], ids=["whole", "trickled"])
@pytest.mark.parametrize(
    ("bad", "line", "reason"),
    [(2500, 2503, "illegal UTF-16 surrogate"), (None, 3004, "truncated data")],
    ids=["surrogate", "cut-short"],
)
def test_utf16_that_cannot_be_decoded_far_down_is_named_by_its_line(stream, bad, line, reason):
    # GIVEN a UTF-16 file of 3,000 rows and more than 64 KiB, a value of two lines on lines
    # 9 and 10, and a lone surrogate in the row of user ``bad`` (line ``line``), or a last
    # line cut short; read whole, or 7 bytes at a time (CR and LF of one line end apart)
    filler = "".join(f"u{i}@example.com,User {i},active,u{i}.pdf\r\n" for i in range(3000))
    text = HEADER + filler.replace("User 7,", '"User\r\n7",') + ALICE
    raw = codecs.BOM_UTF16_LE + text.encode("utf-16-le", "surrogatepass") + b"z"
    if bad is not None:
        text = text.replace(f"User {bad},", f"User {bad}\ud800,")
        raw = codecs.BOM_UTF16_LE + text.encode("utf-16-le", "surrogatepass")

    # WHEN it is validated THEN the file fails, naming the line
    with pytest.raises(InputFileError) as caught:
        validate_recipients(
            stream(raw), source="s", catalog=FakeCatalog(), attachments=index_of(), emit=[].append
        )
    assert caught.value.message == (
        f"s: cannot decode line {line} as utf-16-le: {reason}; export the file as CSV UTF-8"
    )


def test_rows_are_emitted_while_reading_not_after():
    # GIVEN a file of about 1.5 MB
    body = "".join(f"user{i}@example.com,User {i},active,u{i}.pdf\n" for i in range(40_000))
    raw = (HEADER + body).encode()
    data = io.BytesIO(raw)
    positions: list[int] = []

    # WHEN it is validated
    validate_recipients(
        data,
        source="s",
        catalog=FakeCatalog(),
        attachments=index_of(*own_files(40_000)),
        emit=lambda row: positions.append(data.tell()),
    )

    # THEN the first row went out when only the start of the file had been read
    assert len(positions) == 40_000
    assert positions[0] <= 256 * 1024 < len(raw)


# --- any input: a clear outcome, never a crash ------------------------------------------

_PIECES = st.sampled_from(
    [",", ";", "\t", "|", '"', "\r\n", "\n", "\r", " ", "\x00", "\x1b", "\u2028", "@", "é",
     "王", "\ufeff", "alice@example.com", "bob@bücher.example", "josé@example.com", "active",
     "unsubscribed", "alice.pdf", "../x", "Name", "=1+1"]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    body=st.lists(_PIECES, max_size=60).map("".join),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
    stray=st.binary(max_size=3),
)
def test_any_input_ends_in_a_report_or_one_file_error(body, encoding, stray):
    # GIVEN a header and a random body, possibly with bytes the encoding cannot decode
    raw = (HEADER + body).encode(encoding, errors="replace") + stray

    # WHEN it is validated
    try:
        report, rows = run(raw)
    except (InputFileError, TemplateError) as error:
        assert str(error).startswith("incoming/test.csv: ")
        return

    # THEN the counts add up, and every output is clean, serialisable text
    assert report.rows == report.valid + len(report.rejected) + len(report.duplicates) + len(
        report.skipped
    )
    assert len(rows) == report.valid
    for row in rows:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
        for column in ("Email", "Name", "Status", "Attachment_File"):
            assert not any(ch in row["fields"][column] for ch in "\x00\r\n\x1b\u2028")
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")
    write_rejects(report, io.BytesIO())


# ---- hardening found by the break test -------------------------------------------------------


def test_a_quote_left_open_fails_the_file_instead_of_swallowing_rows():
    # GIVEN row 3 opens a quote that only the last line closes
    rows = "".join(f"user{i}@example.com,User {i},active,alice.pdf\r\n" for i in range(10))
    text = HEADER + ALICE + 'bob@example.com,"Bob,active,bob.pdf\r\n' + rows + 'x"\r\n'

    # THEN the file fails, naming the line, rather than reporting 2 rows and losing 10
    with pytest.raises(InputFileError, match=r"line 3: a quote opened on this line"):
        run(text)


def test_a_multi_line_value_that_does_not_look_like_rows_is_only_that_rows_problem():
    text = HEADER + 'bob@example.com,"Bob\r\nExample",active,alice.pdf\r\n' + ALICE

    report, rows = run(text)

    assert [r["row"] for r in rows] == [4]
    assert report.rejected == [
        {"row": 2, "column": "Name", "reason": "line break in Name", "email": "b***@example.com"}
    ]


def test_one_stray_byte_in_a_utf8_file_rejects_its_row_and_keeps_the_rest_utf8():
    good = "zoe@example.com,Zoë Ångström,active,alice.pdf\r\n".encode()
    bad = b"jo@example.com,Jos\xe9,active,alice.pdf\r\n"

    report, rows = run(HEADER.encode() + good + bad)

    assert report.encoding == "utf-8"
    assert [r["name"] for r in rows] == ["Zoë Ångström"]
    assert report.rejected[0]["row"] == 3 and "not valid utf-8" in report.rejected[0]["reason"]


def test_a_long_name_is_rejected_before_it_makes_a_header_line_too_long():
    text = HEADER + f"bob@example.com,{'x' * 5000},active,alice.pdf\r\n" + ALICE

    report, rows = run(text)

    assert [r["row"] for r in rows] == [3]
    assert report.rejected[0]["column"] == "Name"
    assert "5000 characters" in report.rejected[0]["reason"]


def test_header_values_may_hold_256_characters_and_body_columns_more():
    # GIVEN names of 256 and 257 characters, and a body-only column of 1000
    text = "Email,Name,Status,Attachment_File,Note\r\n"
    text += f"alice@example.com,{'a' * 256},active,alice.pdf,{'n' * 1000}\r\n"
    text += f"bob@example.com,{'b' * 257},active,bob.pdf,\r\n"
    # WHEN the file is read
    report, rows = run(text)
    # THEN only the 257-character name is refused
    assert [len(r["name"]) for r in rows] == [256]
    assert reasons(report) == [
        (3, "Name", "Name is 257 characters long; at most 256 go into a mail header")
    ]


def test_a_huge_cell_rejects_its_row_not_the_file():
    text = HEADER + f'bob@example.com,Bob,active,"{"y" * 200_000}"\r\n' + ALICE

    report, rows = run(text)

    assert [r["row"] for r in rows] == [3]
    assert report.rejected[0]["row"] == 2
    assert "200000 characters" in report.rejected[0]["reason"]


@pytest.mark.parametrize(
    ("header_extra", "row_extra"),
    [
        (",A,B,C,D,E", "," + ",".join(["x" * 9000] * 5)),  # five long cells
        # many columns: their names and ten characters in each pass the limit together
        ("," + ",".join(f"c{i}" for i in range(2_000)), "," + ",".join(["z" * 10] * 2_000)),
    ],
    ids=["long-cells", "many-columns"],
)
def test_a_row_too_big_for_a_map_batch_is_rejected_not_sent(header_extra, row_extra):
    # GIVEN a row whose cells are each within the limit but hold more than a batch can carry
    header = HEADER.rstrip("\r\n") + header_extra + "\r\n"
    line = "bob@example.com,Bob,active,alice.pdf" + row_extra + "\r\n"
    width = header.count(",") + 1
    short = "alice@example.com,Alice,active,alice.pdf" + "," * (width - 4) + "\r\n"

    # WHEN it is validated
    report, rows = run(header + line + short)

    # THEN that row is rejected with its size, the next one goes
    assert [r["row"] for r in rows] == [3]
    assert report.rejected[0]["row"] == 2
    assert "characters with its column names; at most 40000" in report.rejected[0]["reason"]


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200f"])
def test_bidi_controls_in_a_display_name_are_refused(char):
    text = HEADER + f"bob@example.com,Bob{char}moc.evil,active,alice.pdf\r\n" + ALICE

    report, rows = run(text)

    assert [r["row"] for r in rows] == [3]
    assert report.rejected[0]["reason"] == f"control character (U+{ord(char):04X}) in Name"


def test_the_columns_are_read_from_the_header_alone_as_intake_names_them():
    # GIVEN a UTF-8 file with a byte-order mark, Excel's sep= line and an aliased column
    raw = codecs.BOM_UTF8 + b"sep=;\nE-mail;Name;Attachment file\nann@example.com;Ann;a.pdf\n"

    # WHEN its columns are read THEN they are named as intake names them
    assert read_columns(io.BytesIO(raw), source="x.csv") == ["Email", "Name", "Attachment_File"]


# --- each row's attachment is its recipient's own -------------------------------------------


def test_a_file_named_for_two_recipients_rejects_both_rows():
    # GIVEN Alice's row and Bob's naming the same letter (a row copied down: which one is
    # wrong, only a person can tell), and Carol's own row
    text = HEADER + ALICE + "bob@example.com,Bob Example,active,alice.pdf\r\n"
    text += "carol@example.com,Carol,active,carol.pdf\r\n"

    # WHEN validated
    report, rows = run(text)

    # THEN Bob's row is rejected naming Alice's, and Alice's, passed on before Bob's was read,
    # is withdrawn naming Bob's: neither is sent; Carol's passes. Both are listed in row
    # order, each with its address as every rejected row shows it
    assert report.withdrawn == {2}
    assert [r["email"] for r in rows if r["row"] not in report.withdrawn] == ["carol@example.com"]
    assert report.valid == 1
    (alice, alice_column, alice_reason), (bob, bob_column, bob_reason) = reasons(report)
    assert (alice, alice_column, bob, bob_column) == (2, "Attachment_File", 3, "Attachment_File")
    assert [r["email"] for r in report.rejected] == ["a***@example.com", "b***@example.com"]
    assert bob_reason.startswith("alice.pdf is already the attachment of row 2, another")
    assert alice_reason.startswith("alice.pdf is also the attachment of row 3, another")
    assert "neither is sent" in alice_reason and "default_attachment" in alice_reason


def test_the_same_recipient_naming_the_same_file_twice_is_a_duplicate_not_a_shared_file():
    report, rows = run(HEADER + ALICE + ALICE.replace("alice@", "ALICE@"))

    assert emails(rows) == ["alice@example.com"]
    assert reasons(report) == []
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(3, 2)]


def test_one_default_attachment_for_many_rows_is_no_shared_file():
    # GIVEN a set whose rows attach one brochure when Attachment_File is empty
    files = {
        "manifest.yaml": "column: Status\nsets:\n  news:\n    when: [active]\n"
        "    attachment: required\n    default_attachment: brochure.pdf\n",
        "news/subject.txt": "News for {{ Name }}",
        "news/body.txt": "Hello {{ Name }}",
    }
    text = HEADER + "".join(f"u{i}@example.com,U {i},active,\r\n" for i in range(3))

    # WHEN validated
    report, rows = run(text, catalog=load_catalog(files), index=index_of("brochure.pdf"))

    # THEN every row attaches the brochure and none is rejected
    assert [row["attachment"] for row in rows] == ["brochure.pdf"] * 3
    assert reasons(report) == []


def test_a_file_named_by_a_row_not_sent_is_still_its_recipients():
    # GIVEN Alice's row excluded by Status, and Bob's naming her letter
    text = HEADER + "alice@example.com,Alice,unsubscribed,alice.pdf\r\n"
    text += "bob@example.com,Bob Example,active,alice.pdf\r\n"

    report, rows = run(text)

    # THEN Bob's row is rejected naming Alice's; nothing is sent
    assert rows == [] and report.valid == 0
    [(row, column, reason)] = reasons(report)
    assert (row, column) == (3, "Attachment_File")
    assert reason.startswith("alice.pdf is already the attachment of row 2")


def test_a_shared_file_is_named_with_a_rows_other_problems_and_withdraws_the_earlier_row():
    # GIVEN Bob's valid row naming a letter, then a row with a bad address naming it too
    text = HEADER + "bob@example.com,Bob Example,active,alice.pdf\r\n"
    text += "alice@@example.com,Alice,active,alice.pdf\r\n"

    report, _ = run(text)

    # THEN the later row names both its problems, and Bob's row is held back as well
    assert report.withdrawn == {2} and report.valid == 0
    (earlier, _, _), (later, columns, reason) = reasons(report)
    assert (later, columns, earlier) == (3, "Email; Attachment_File", 2)
    assert "alice.pdf is already the attachment of row 2" in reason


def test_a_row_held_back_for_a_shared_file_holds_its_recipients_next_row_with_another_file():
    # GIVEN Bob's row naming Alice's letter, then Bob's row with his own
    text = HEADER + ALICE + "bob@example.com,Bob Example,active,alice.pdf\r\n" + BOB

    report, rows = run(text)

    # THEN none is sent: Bob's two rows disagree on his letter (it used to go with row 4), and
    # row 3 names Alice's; none is a duplicate
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == []
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (2, "Attachment_File"),
        (3, "Attachment_File"),
        (4, "Email"),
    ]
    assert reasons(report)[2][2].startswith(
        "row 3 has the same address with other values in Attachment_File:"
    )
    assert report.duplicates == []


def test_a_duplicate_row_is_not_withdrawn_though_its_file_is_named_again():
    # GIVEN Bob twice, then Carol's row naming Bob's letter
    text = HEADER + BOB + BOB + "carol@example.com,Carol,active,bob.pdf\r\n"

    report, rows = run(text)

    # THEN Bob's first row, passed on, is withdrawn; his duplicate stays a duplicate (it was
    # never passed on), and Carol's row, naming a file another recipient's row named, is held
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == []
    assert report.withdrawn == {2} and report.valid == 0
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(3, 2)]
    assert [row for row, _, _ in reasons(report)] == [2, 4]


def test_a_row_held_for_its_address_still_owns_its_file():
    # GIVEN Bob twice (the second row names Carol's letter), then Carol's row
    text = HEADER + BOB + "bob@example.com,Bob Example,active,carol.pdf\r\n"
    text += "carol@example.com,Carol,active,carol.pdf\r\n"

    report, rows = run(text)

    # THEN Bob's rows disagree, so both are held; and Carol's, naming the letter one of his
    # rows named, is held too (his first row used to be sent)
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == []
    assert report.withdrawn == {2} and report.valid == 0 and report.duplicates == []
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (2, "Email"),
        (3, "Email"),
        (4, "Attachment_File"),
    ]


def test_rows_with_unusable_addresses_are_told_apart_by_what_was_typed():
    # GIVEN two rows with different unusable addresses naming one file
    text = HEADER + "alice@@example.com,Alice,active,alice.pdf\r\n"
    text += "bob@@example.com,Bob,active,alice.pdf\r\n"

    report, _ = run(text)

    # THEN the second names the clash with the first among its problems
    (_, _, first), (_, columns, second) = reasons(report)
    assert "attachment of row" not in first
    assert columns == "Email; Attachment_File"
    assert "alice.pdf is already the attachment of row 2" in second


def test_once_a_file_is_contested_no_row_naming_it_is_sent():
    # GIVEN Alice's row (rejected: unknown Status) and Bob's naming Bob's letter, then Alice's
    # row again, "corrected", still naming it
    text = HEADER + "alice@example.com,Alice,actve,bob.pdf\r\n"
    text += BOB + "alice@example.com,Alice,active,bob.pdf\r\n"

    report, rows = run(text)

    # THEN none of the three is sent
    assert rows == [] and report.valid == 0
    assert [row for row, _, _ in reasons(report)] == [2, 3, 4]


def test_an_excluded_row_holds_a_later_row_of_its_address_and_keeps_its_file():
    # GIVEN Alice excluded, then Alice's row to send, both naming a letter, then Bob's naming it
    text = HEADER + "alice@example.com,Alice,unsubscribed,bob.pdf\r\n"
    text += "alice@example.com,Alice,active,bob.pdf\r\n" + BOB

    report, rows = run(text)

    # THEN nothing is sent: Alice's second row disagrees with her excluded one (its Status),
    # and Bob's names her letter
    assert rows == [] and report.withdrawn == frozenset() and report.valid == 0
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (3, "Email"),
        (4, "Attachment_File"),
    ]
    assert reasons(report)[0][2].startswith(
        "row 2 has the same address with other values in Status:"
    )


def test_the_same_address_typed_as_it_is_sent_or_not_is_one_recipient():
    # GIVEN an internationalised address excluded once, then its row to send, one file for both
    text = HEADER + "jose@bücher.example,José,unsubscribed,jose.pdf\r\n"
    text += "jose@BÜCHER.example,José,active,jose.pdf\r\n"

    report, rows = run(text, index=index_of("jose.pdf"))

    # THEN the file is no other recipient's: the later row is held for its Status alone
    [(row, column, reason)] = reasons(report)
    assert rows == [] and (row, column) == (3, "Email")
    assert reason.startswith("row 2 has the same address with other values in Status:")


def linked_index(*groups: tuple[str, ...]) -> AttachmentIndex:
    """An index where the names of each group are one file (links in a local folder)."""
    listing = [
        ObjectInfo(f"attachments/{name}", 100, identity=f"1:{number}")
        for number, group in enumerate(groups)
        for name in group
    ]
    return AttachmentIndex.from_listing(sorted(listing, key=lambda info: info.key))


LINKED = " (a link in the attachments folder), "


def test_a_link_to_a_contested_file_named_for_a_third_recipient_is_held_back():
    # GIVEN Alice's and Bob's rows naming her letter, and Carol's naming a link to it
    index = linked_index(("alice.pdf", "link.pdf"), ("carol.pdf",))
    text = HEADER + ALICE + "bob@example.com,Bob,active,alice.pdf\r\n"
    text += "carol@example.com,Carol,active,link.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=index)

    # THEN none of the three is sent: Carol's row names both names and the row of the other
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == []
    assert report.valid == 0
    (_, _, _), (_, _, _), (carol, column, reason) = reasons(report)
    assert (carol, column) == (4, "Attachment_File")
    assert reason.startswith(
        f"link.pdf is the same file as alice.pdf{LINKED}already the attachment of row 2, "
        "another recipient: each row attaches its recipient's own file, so one of the two rows "
        "or the link is wrong and neither is sent (check both rows and the link; "
    )


def test_hard_links_named_for_two_recipients_hold_back_both_rows():
    # GIVEN Alice's row naming her letter, Bob's naming another name of the same file, and
    # Carol's and Dave's own distinct files
    index = linked_index(("alice.pdf", "bob.pdf"), ("carol.pdf",), ("dave.pdf",))
    text = HEADER + ALICE + BOB + "carol@example.com,Carol,active,carol.pdf\r\n"
    text += "dave@example.com,Dave,active,dave.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=index)

    # THEN Alice's row is withdrawn and Bob's rejected, each naming the other's name for the
    # file; Carol and Dave are sent their own
    sent = [r["email"] for r in rows if r["row"] not in report.withdrawn]
    assert sent == ["carol@example.com", "dave@example.com"]
    assert report.withdrawn == {2} and report.valid == 2
    (alice, _, alice_reason), (bob, _, bob_reason) = reasons(report)
    assert (alice, bob) == (2, 3)
    assert alice_reason.startswith(
        f"alice.pdf is the same file as bob.pdf{LINKED}also the attachment of row 3, another"
    )
    assert bob_reason.startswith(
        f"bob.pdf is the same file as alice.pdf{LINKED}already the attachment of row 2, another"
    )


def test_the_name_reported_is_the_one_the_owning_row_gave_the_file():
    # GIVEN Alice's row excluded naming a link, her row to send naming its target, then Bob's
    # naming the target
    index = linked_index(("alice.pdf", "link.pdf"), ("bob.pdf",))
    text = HEADER + "alice@example.com,Alice Example,unsubscribed,link.pdf\r\n" + ALICE
    text += "bob@example.com,Bob,active,alice.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=index)

    # THEN nothing is sent: Alice's row to send is held for her excluded row's Status alone
    # (the two names are one file), and Bob's names the file as her first row did
    assert rows == [] and report.valid == 0
    (alice, alice_column, alice_reason), (bob, _, bob_reason) = reasons(report)
    assert (alice, alice_column, bob) == (3, "Email", 4)
    assert alice_reason.startswith("row 2 has the same address with other values in Status:")
    assert bob_reason.startswith(f"alice.pdf is the same file as link.pdf{LINKED}already")


def test_rows_of_one_address_naming_two_names_of_one_file_differ_only_in_other_columns():
    # GIVEN Alice's row, then a row of her address naming a link to her file, with another Name
    index = linked_index(("alice.pdf", "link.pdf"))
    text = HEADER + ALICE + "alice@example.com,Bob Example,active,link.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=index)

    # THEN both are held for the address, naming the Name only: the file is the same file
    assert [row["row"] for row in rows] == [2] and report.withdrawn == {2} and report.valid == 0
    (first, first_column, first_reason), (later, later_column, later_reason) = reasons(report)
    assert (first, first_column, later, later_column) == (2, "Email", 3, "Email")
    assert first_reason.startswith("row 3 has the same address with other values in Name:")
    assert later_reason.startswith("row 2 has the same address with other values in Name:")


SOFIA_AS_LIAM = "liam@example.com,Sofia,active,sofia.pdf\r\n"
SOFIA = "sofia@example.com,Sofia,active,sofia.pdf\r\n"
LIAM = "liam@example.com,Liam,active,liam.pdf\r\n"


@pytest.mark.parametrize(
    "later",
    [SOFIA + LIAM, LIAM + SOFIA],
    ids=["her file named again first", "his address named again first"],
)
def test_a_row_withdrawn_for_its_file_and_its_address_names_both(later):
    # GIVEN Sofia's row with Liam's address typed in, then (in either order) Sofia's own row
    # naming her file, and Liam's own row
    index = linked_index(("sofia.pdf",), ("liam.pdf",))
    text = HEADER + SOFIA_AS_LIAM + later

    # WHEN validated
    report, _ = run(text, index=index)

    # THEN nothing is sent, and the row withdrawn names both later rows, once
    assert report.withdrawn == {2} and report.valid == 0
    sofia_row = 3 if later.startswith(SOFIA) else 4
    liam_row = 7 - sofia_row
    withdrawn, *later_rows = reasons(report)
    assert [row for row, _, _ in later_rows] == [3, 4]
    assert withdrawn == (
        2,
        "Attachment_File; Email",
        f"sofia.pdf is also the attachment of row {sofia_row}, another recipient: each row "
        "attaches its recipient's own file, so one of the two rows is wrong and neither is "
        "sent (check both; to send one file to many, leave Attachment_File empty and set "
        f"default_attachment); row {liam_row} has the same address with other values in "
        "Name, Attachment_File: one address gets one letter, so one of the two rows is wrong "
        "and neither is sent (correct the address of the wrong row, or delete one of them)",
    )


def test_one_recipient_naming_two_names_of_one_file_is_a_duplicate_not_a_shared_file():
    index = linked_index(("alice.pdf", "link.pdf"))
    text = HEADER + ALICE + "ALICE@example.com,Alice Example,active,link.pdf\r\n"

    report, rows = run(text, index=index)

    assert emails(rows) == ["alice@example.com"] and reasons(report) == []
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(3, 2)]


def test_recipients_are_compared_by_every_bit_of_their_hash():
    from mailmatrix.core.seen import SeenTable

    table = SeenTable()
    assert table.add(7, 2, 5) is None
    assert table.add(7, 3, 5 + (1 << 24)) == (2, False, False)  # alike in the low 24 bits
    assert table.add(7, 4, 5) == (2, True, False)


def test_the_table_of_addresses_holds_under_64_bytes_a_key_at_its_peak():
    from mailmatrix.core.seen import SeenTable

    # GIVEN the keys of 50,000 addresses (a million took 97 MB at the peak of the table's
    # last doubling, 33 MB now)
    keys = [hash(f"person.{i}@example.com") for i in range(50_000)]
    # WHEN each goes into the table validation keeps of the addresses it saw
    with TracedPeak() as peak:
        table = SeenTable()
        for row, key in enumerate(keys, 2):
            table.add(key, row, key ^ 1)
    # THEN the table never held more than 64 bytes a key (36 now; 121 when it doubled whole
    # slots of 24 bytes, old and new at once), and it still finds them
    assert peak.bytes / len(keys) < 64
    assert table.add(keys[12_345], 9, keys[12_345] ^ 1) == (12_347, True, False)


# --- copies: the same bytes under two recipients' file names -------------------------------

OFFER_ALICE = b"%PDF-1.4 offer for Alice Example, salary 90,000"
OFFER_CAROL = b"%PDF-1.4 offer for Carol Example, salary 80,000"  # the same size


def test_a_copy_of_one_recipients_letter_under_anothers_name_holds_back_both_rows():
    # GIVEN Alice's letter copied to bob.pdf (both rows in the CSV), and Carol's own letter of
    # the same size
    contents = FakeContents(
        {"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE, "carol.pdf": OFFER_CAROL}
    )
    text = HEADER + ALICE + BOB + "carol@example.com,Carol,active,carol.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=contents.index(), contents=contents)

    # THEN neither Alice's nor Bob's row is sent, each naming the other row and both files;
    # Carol's goes; each file was read once, in the version listed
    assert [r["email"] for r in rows if r["row"] not in report.withdrawn] == ["carol@example.com"]
    assert report.withdrawn == {2, 3} and report.valid == 1
    assert reasons(report) == [
        (
            2,
            "Attachment_File",
            "alice.pdf has the same contents as bob.pdf, the attachment of row 3, another "
            "recipient: the two files are identical copies, so one of the two rows names "
            "another person's letter and neither is sent (open both files and check each is "
            "its own recipient's; to send one file to many, leave Attachment_File empty and "
            "set default_attachment)",
        ),
        (
            3,
            "Attachment_File",
            "bob.pdf has the same contents as alice.pdf, the attachment of row 2, another "
            "recipient: the two files are identical copies, so one of the two rows names "
            "another person's letter and neither is sent (open both files and check each is "
            "its own recipient's; to send one file to many, leave Attachment_File empty and "
            "set default_attachment)",
        ),
    ]
    assert [item["email"] for item in report.rejected] == ["a***@example.com", "b***@example.com"]
    assert contents.read == {"alice.pdf": 1, "bob.pdf": 1, "carol.pdf": 1}
    assert contents.tags == {name: f"v1-{name}" for name in contents.files}


@pytest.mark.parametrize(
    "sent, alice_reason, bob_reason",
    [
        (
            {2},
            "alice.pdf went to this row's recipient in an earlier run of this file, and "
            "bob.pdf, the attachment of row 3, another recipient, has the same contents: row 3 "
            "names a copy of this letter, so it is held back; this row is not sent again and "
            "needs nothing (name the own file of row 3's recipient in its Attachment_File, then run"
            " the file again)",
            "bob.pdf has the same contents as alice.pdf, the attachment of row 2, which an "
            "earlier run of this file sent to its recipient: this row names a copy of that "
            "person's letter, so it is not sent (name this recipient's own file in "
            "Attachment_File, then run the file again; row 2 is not sent again)",
        ),
        (
            {2, 3},
            "alice.pdf has the same contents as bob.pdf, the attachment of row 3, another "
            "recipient, and an earlier run of this file sent both rows: one of the two people "
            "may have received the other's letter (open both files to tell which); neither is "
            "sent again",
            "bob.pdf has the same contents as alice.pdf, the attachment of row 2, another "
            "recipient, and an earlier run of this file sent both rows: one of the two people "
            "may have received the other's letter (open both files to tell which); neither is "
            "sent again",
        ),
    ],
    ids=["alice's sent", "both sent"],
)
def test_a_copy_of_a_letter_an_earlier_run_sent_says_which_row_went_out(
    sent, alice_reason, bob_reason
):
    # GIVEN Alice's letter, sent by an earlier run of the file (and Bob's row too, in one
    # case), copied to bob.pdf for Bob's row, and Carol's own letter of the same size
    contents = FakeContents(
        {"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE, "carol.pdf": OFFER_CAROL}
    )
    text = HEADER + ALICE + BOB + "carol@example.com,Carol,active,carol.pdf\r\n"
    asked: list[frozenset[int]] = []

    def sent_before(rows: frozenset[int]) -> set[int]:
        asked.append(rows)
        return sent & rows

    # WHEN validated
    report, _ = run(text, index=contents.index(), contents=contents, sent_before=sent_before)

    # THEN both rows are held back as before, and their reasons say which row went out
    # already, never that it is not sent at all; the earlier runs were asked once, of the
    # withdrawn rows only
    assert report.withdrawn == {2, 3} and report.valid == 1
    assert reasons(report) == [
        (2, "Attachment_File", alice_reason),
        (3, "Attachment_File", bob_reason),
    ]
    assert asked == [frozenset({2, 3})]


def asking(sent: set[int], asked: list[frozenset[int]]) -> Callable[[frozenset[int]], set[int]]:
    """A sent_before hook: of the rows asked about, those in ``sent``; each question is kept
    in ``asked``."""

    def sent_before(rows: frozenset[int]) -> set[int]:
        asked.append(rows)
        return sent & rows

    return sent_before


@pytest.mark.parametrize(
    "second, index, column, first_reason, second_reason",
    [
        (
            "bob@example.com,Bob Example,active,alice.pdf\r\n",
            None,
            "Attachment_File",
            "alice.pdf went to this row's recipient in an earlier run of this file, and row 3, "
            "another recipient, names it too: each row attaches its recipient's own file, so "
            "row 3 is held back; this row is not sent again and needs nothing (give row 3 its "
            "recipient's own file, then run the file again)",
            "alice.pdf is already the attachment of row 2, another recipient, which an earlier "
            "run of this file sent to its recipient: each row attaches its recipient's own "
            "file, so this row is not sent (name this recipient's own file in Attachment_File, "
            "then run the file again; row 2 is not sent again; to send one file to many, leave "
            "Attachment_File empty and set default_attachment)",
        ),
        (
            BOB,
            linked_index(("alice.pdf", "bob.pdf"), ("carol.pdf",)),
            "Attachment_File",
            f"alice.pdf went to this row's recipient in an earlier run of this file, and row 3, "
            f"another recipient, names the same file as bob.pdf{LINKED[:-2]} too: each row "
            "attaches its recipient's own file, so row 3 is held back; this row is not sent "
            "again and needs nothing (give row 3 its recipient's own file, or correct the link, "
            "then run the file again)",
            f"bob.pdf is the same file as alice.pdf{LINKED}already the attachment of row 2, "
            "another recipient, which an earlier run of this file sent to its recipient: each "
            "row attaches its recipient's own file, so this row is not sent (name this "
            "recipient's own file in Attachment_File, or correct the link, then run the file "
            "again; row 2 is not sent again; to send one file to many, leave Attachment_File "
            "empty and set default_attachment)",
        ),
        (
            "alice@example.com,Alicia Example,active,alice.pdf\r\n",
            None,
            "Email",
            "this row's letter went to its address in an earlier run of this file, and row 3 "
            "has the same address with other values in Name: one address gets one letter, so "
            "row 3 is held back; this row is not sent again and needs nothing (correct row 3's "
            "address if it is meant for someone else, or delete that row; then run the file "
            "again)",
            "row 2 has the same address with other values in Name, and an earlier run of this "
            "file sent row 2's letter to it: one address gets one letter, so this row is not "
            "sent (correct this row's address if it is meant for someone else, or delete this "
            "row; row 2 is not sent again)",
        ),
    ],
    ids=["a file named twice", "a link to the file", "an address with other values"],
)
def test_a_row_held_for_one_an_earlier_run_sent_says_which_row_went_out(
    second, index, column, first_reason, second_reason
):
    # GIVEN Alice's row, sent by an earlier run of the file, and a row added after it that
    # names her file (or a link to it) for Bob, or has her address with another Name
    text = HEADER + ALICE + second + "carol@example.com,Carol,active,carol.pdf\r\n"
    asked: list[frozenset[int]] = []

    # WHEN validated
    report, rows = run(
        text, index=index or index_of("alice.pdf", "carol.pdf"), sent_before=asking({2}, asked)
    )

    # THEN both rows are held back as before, and their reasons say that Alice's went out
    # already and needs nothing, and that the added row is the one to fix; the earlier runs
    # were asked once, of the withdrawn row only
    assert report.withdrawn == {2} and report.valid == 1
    assert [r["row"] for r in rows if r["row"] not in report.withdrawn] == [4]
    assert reasons(report) == [(2, column, first_reason), (3, column, second_reason)]
    assert asked == [frozenset({2})]


def test_rows_held_for_a_letter_an_earlier_run_sent_keep_their_place_and_other_problems():
    # GIVEN Alice's row, sent by an earlier run, then Bob's row naming her file, a row with a
    # bad address, and Carol's row naming her file with an empty Name the template prints
    text = HEADER + ALICE + "bob@example.com,Bob,active,alice.pdf\r\n"
    text += "not-an-address,Nobody,active,carol.pdf\r\n"
    text += "carol@example.com,,active,alice.pdf\r\n"
    asked: list[frozenset[int]] = []

    # WHEN validated
    report, rows = run(
        text, index=index_of("alice.pdf", "carol.pdf"), sent_before=asking({2}, asked)
    )

    # THEN the rejects read in row order, Bob's and Carol's saying Alice's row went out, and
    # Carol's naming her empty Name first, as it would without the earlier run
    assert rows and report.withdrawn == {2} and report.valid == 0
    held = reasons(report)
    assert [(row, column) for row, column, _ in held] == [
        (2, "Attachment_File"),
        (3, "Attachment_File"),
        (4, "Email"),
        (5, "Name; Attachment_File"),
    ]
    assert held[0][2].startswith("alice.pdf went to this row's recipient in an earlier run")
    sent_earlier = "alice.pdf is already the attachment of row 2, another recipient, which an"
    assert held[1][2].startswith(sent_earlier)
    assert held[3][2].startswith("Name is empty but used by template offer")
    assert f"; {sent_earlier}" in held[3][2]
    assert "neither is sent" not in " ".join(reason for _, _, reason in held)
    assert asked == [frozenset({2})]


def test_a_row_held_for_one_no_earlier_run_sent_keeps_the_first_run_wording():
    # GIVEN Alice's row and Bob's naming her file, neither sent by an earlier run
    text = HEADER + ALICE + "bob@example.com,Bob,active,alice.pdf\r\n"
    asked: list[frozenset[int]] = []

    # WHEN validated with earlier runs to ask, and without
    report, _ = run(text, index=index_of("alice.pdf"), sent_before=asking(set(), asked))
    plain, _ = run(text, index=index_of("alice.pdf"))

    # THEN the reasons are those of a first run: one of the two rows is wrong, neither is sent
    assert reasons(report) == reasons(plain)
    assert [reason for _, _, reason in reasons(report)] == [
        "alice.pdf is also the attachment of row 3, another recipient: each row attaches its "
        "recipient's own file, so one of the two rows is wrong and neither is sent (check both; "
        "to send one file to many, leave Attachment_File empty and set default_attachment)",
        "alice.pdf is already the attachment of row 2, another recipient: each row attaches its "
        "recipient's own file, so one of the two rows is wrong and neither is sent (check both; "
        "to send one file to many, leave Attachment_File empty and set default_attachment)",
    ]
    assert asked == [frozenset({2})]


def test_without_the_means_to_read_files_copies_are_told_apart_by_name_alone():
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE})

    report, rows = run(HEADER + ALICE + BOB, index=contents.index())

    assert emails(rows) == ["alice@example.com", "bob@example.com"] and report.valid == 2


def test_files_of_sizes_no_other_recipient_has_are_not_read():
    # GIVEN Alice's and Bob's letters of different sizes, and two of Carol's rows whose letters
    # have one size (her Name differs between them)
    contents = FakeContents(
        {
            "alice.pdf": b"%PDF-1.4 Alice",
            "bob.pdf": b"%PDF-1.4 Bob, a longer letter",
            "carol.pdf": OFFER_CAROL,
            "carol2.pdf": OFFER_CAROL.upper(),
        }
    )
    text = HEADER + ALICE + BOB + "carol@example.com,Carol,active,carol.pdf\r\n"
    text += "carol@example.com,Carol C,active,carol2.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=contents.index(), contents=contents)

    # THEN nothing is read: Carol's two letters are one recipient's (her rows are held for her
    # address alone)
    assert contents.read == {} and contents.asked == {}
    assert emails(rows)[:2] == ["alice@example.com", "bob@example.com"]
    assert [(row, column) for row, column, _ in reasons(report)] == [(4, "Email"), (5, "Email")]


def test_a_campaign_of_distinct_letters_of_one_size_reads_each_file_once():
    # GIVEN 300 recipients, each with a letter of their own, all of one size
    names = own_files(300)
    contents = FakeContents({n: f"%PDF-1.4 letter of {n:>9}".encode() for n in names})
    text = HEADER + "".join(f"u{i}@example.com,U {i},active,{n}\r\n" for i, n in enumerate(names))

    # WHEN validated
    report, rows = run(text, index=contents.index(), contents=contents)

    # THEN every row goes, and each file was read exactly once
    assert len(rows) == 300 and report.valid == 300 and reasons(report) == []
    assert set(contents.read) == set(names) and set(contents.read.values()) == {1}


def test_one_recipients_rows_with_copies_of_one_letter_are_not_held_for_the_contents():
    # GIVEN two of Alice's rows (another Name in the second) naming two copies of her letter
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "alice2.pdf": OFFER_ALICE})
    text = HEADER + ALICE + "alice@example.com,Alice E.,active,alice2.pdf\r\n"

    # WHEN validated
    report, _ = run(text, index=contents.index(), contents=contents)

    # THEN the files are not read (one recipient's), and the rows are held for the address only
    assert contents.read == {}
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Email"), (3, "Email")]
    assert "same contents" not in " ".join(reason for _, _, reason in reasons(report))


def test_a_copy_of_a_letter_named_by_a_row_not_sent_holds_back_the_row_that_would_go():
    # GIVEN Alice's row excluded by Status, and Bob's naming a copy of her letter
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE})
    text = HEADER + "alice@example.com,Alice,unsubscribed,alice.pdf\r\n" + BOB

    # WHEN validated
    report, _ = run(text, index=contents.index(), contents=contents)

    # THEN Bob's row is withdrawn naming Alice's; hers stays excluded
    assert report.withdrawn == {3} and report.valid == 0
    [(row, column, reason)] = reasons(report)
    assert (row, column) == (3, "Attachment_File")
    assert reason.startswith("bob.pdf has the same contents as alice.pdf, the attachment of row 2")
    assert [item["row"] for item in report.skipped] == [2]


def test_a_copy_of_a_letter_named_for_two_recipients_is_held_back_too():
    # GIVEN Alice's and Bob's rows naming her letter, and Carol's naming a copy of it
    contents = FakeContents(
        {"alice.pdf": OFFER_ALICE, "carol.pdf": OFFER_ALICE, "dave.pdf": OFFER_CAROL}
    )
    text = HEADER + ALICE + "bob@example.com,Bob,active,alice.pdf\r\n"
    text += "carol@example.com,Carol,active,carol.pdf\r\ndave@example.com,Dave,active,dave.pdf\r\n"

    # WHEN validated
    report, rows = run(text, index=contents.index(), contents=contents)

    # THEN only Dave's row goes; Alice's, withdrawn for the shared file, names the copy too
    assert [r["email"] for r in rows if r["row"] not in report.withdrawn] == ["dave@example.com"]
    held = {row: reason for row, _, reason in reasons(report)}
    assert sorted(held) == [2, 3, 4]
    assert held[2].startswith("alice.pdf is also the attachment of row 3, another recipient")
    assert "; alice.pdf has the same contents as carol.pdf, the attachment of row 4" in held[2]
    assert held[4].startswith("carol.pdf has the same contents as alice.pdf, the attachment of")


# A set that gives rows with an empty Attachment_File one file for all, and one that attaches
# each row's own letter.
TWO_SETS = {
    "manifest.yaml": "column: Status\nsets:\n  offer:\n    when: [active]\n"
    "    attachment: required\n  info:\n    when: [info]\n    attachment: optional\n"
    "    default_attachment: brochure.pdf\n",
    "offer/subject.txt": "Offer for {{ Name }}",
    "offer/body.txt": "Hello {{ Name }}",
    "info/subject.txt": "News for {{ Name }}",
    "info/body.txt": "Hello {{ Name }}",
}
INFO_ROWS = "".join(f"u{i}@example.com,U {i},info,\r\n" for i in range(2))


@pytest.mark.parametrize("first", ["own row", "default rows"])
def test_a_default_attachment_that_a_row_names_as_its_own_refuses_the_file(first):
    # GIVEN Alice's row naming brochure.pdf as her own letter, and rows of a set whose default
    # is brochure.pdf, in either order
    own = "alice@example.com,Alice,active,brochure.pdf\r\n"
    text = HEADER + (own + INFO_ROWS if first == "own row" else INFO_ROWS + own)

    # WHEN validated
    with pytest.raises(TemplateError) as raised:
        run(text, catalog=load_catalog(TWO_SETS), index=index_of("brochure.pdf"))

    # THEN the file is refused, naming the set, the file and Alice's row
    row = 2 if first == "own row" else 4
    assert raised.value.message == (
        "incoming/test.csv: template set 'info' attaches its default_attachment brochure.pdf to "
        f"every row of the set whose Attachment_File is empty, and row {row} names that file in "
        "Attachment_File as its recipient's own letter: that person's letter would go to "
        "everyone the default goes to, so nothing is sent (point default_attachment at the "
        f"file meant for everyone, or correct row {row}; then run the file again)"
    )


def test_a_default_attachment_that_a_row_names_by_a_link_refuses_the_file():
    # GIVEN Alice's row naming alice.pdf, and the set's default brochure.pdf a link to it
    listing = [
        ObjectInfo("attachments/alice.pdf", 100, identity="1:1", tag="t1"),
        ObjectInfo("attachments/brochure.pdf", 100, identity="1:1", tag="t1"),
    ]
    index = AttachmentIndex.from_listing(listing)
    text = HEADER + ALICE + INFO_ROWS

    with pytest.raises(TemplateError) as raised:
        run(text, catalog=load_catalog(TWO_SETS), index=index)

    assert "default_attachment brochure.pdf to every row" in raised.value.message
    assert (
        "row 2 names alice.pdf, the same file (a link in the attachments folder), in "
        "Attachment_File as its recipient's own letter"
    ) in raised.value.message


@pytest.mark.parametrize("checksums", [False, True], ids=["folder", "s3 checksums"])
@pytest.mark.parametrize("first", ["own row", "default rows"])
def test_a_default_attachment_that_is_a_copy_of_a_rows_own_file_refuses_the_file(first, checksums):
    # GIVEN Alice's letter copied to brochure.pdf, the default of the info set, and Carol's
    # own letter of the same size
    files = {"alice.pdf": OFFER_ALICE, "brochure.pdf": OFFER_ALICE, "carol.pdf": OFFER_CAROL}
    sums = {n: f"CRC64NVME {hash(data)}" for n, data in files.items()} if checksums else None
    contents = FakeContents(files, sums)
    own = ALICE + "carol@example.com,Carol,active,carol.pdf\r\n"
    text = HEADER + (own + INFO_ROWS if first == "own row" else INFO_ROWS + own)

    # WHEN validated with the means to read the files
    with pytest.raises(TemplateError) as raised:
        run(text, catalog=load_catalog(TWO_SETS), index=contents.index(), contents=contents)

    # THEN the file is refused naming the set, the default, Alice's row and her file
    row = 2 if first == "own row" else 4
    assert raised.value.message.startswith(
        "incoming/test.csv: template set 'info' attaches its default_attachment brochure.pdf "
        f"to every row of the set whose Attachment_File is empty, and row {row} names "
        "alice.pdf, a file with the same contents, in Attachment_File as its recipient's own "
        "letter: that person's letter would go to everyone the default goes to, so nothing is "
        "sent"
    )
    # AND Carol's letter, whose print differs, was not read whole where prints are kept
    assert ("carol.pdf" in contents.read) is not checksums


def test_a_default_attachment_no_row_names_goes_to_every_row_beside_own_files_of_its_size():
    # GIVEN a brochure, the info set's default, and Alice's and Carol's own letters of its size
    files = {
        "alice.pdf": OFFER_ALICE,
        "brochure.pdf": OFFER_CAROL.upper(),
        "carol.pdf": OFFER_CAROL,
    }
    contents = FakeContents(files)
    text = HEADER + ALICE + INFO_ROWS + "carol@example.com,Carol,active,carol.pdf\r\n"

    # WHEN validated
    report, rows = run(
        text, catalog=load_catalog(TWO_SETS), index=contents.index(), contents=contents
    )

    # THEN every row goes, each own letter to its recipient and the brochure to the info rows;
    # the manifest tells own letters from the default (the ledger keeps each own one to its
    # recipient)
    assert [(row["email"], row["attachment"], row["own_attachment"]) for row in rows] == [
        ("alice@example.com", "alice.pdf", True),
        ("u0@example.com", "brochure.pdf", False),
        ("u1@example.com", "brochure.pdf", False),
        ("carol@example.com", "carol.pdf", True),
    ]
    assert reasons(report) == [] and report.withdrawn == frozenset()


def test_two_sets_may_give_copies_of_one_brochure_as_their_defaults():
    # GIVEN two sets whose defaults hold the same bytes, and Alice's own letter of their size
    files = dict(TWO_SETS)
    files["manifest.yaml"] += (
        "  news:\n    when: [news]\n    attachment: optional\n"
        "    default_attachment: brochure2.pdf\n"
    )
    files["news/subject.txt"], files["news/body.txt"] = "News", "Hello {{ Name }}"
    brochure = OFFER_CAROL.upper()
    contents = FakeContents(
        {"alice.pdf": OFFER_ALICE, "brochure.pdf": brochure, "brochure2.pdf": brochure}
    )
    text = HEADER + ALICE + INFO_ROWS + "v@example.com,V,news,\r\n"

    report, rows = run(text, catalog=load_catalog(files), index=contents.index(), contents=contents)

    assert [row["attachment"] for row in rows] == [
        "alice.pdf",
        "brochure.pdf",
        "brochure.pdf",
        "brochure2.pdf",
    ]
    assert reasons(report) == []


def test_a_default_attachment_no_row_is_given_is_not_held_to_rows_naming_it():
    # GIVEN the info set's default brochure.pdf, and no row of the file given it: Alice's own
    # row names a file of that name
    report, rows = run(
        HEADER + "alice@example.com,Alice,active,brochure.pdf\r\n",
        catalog=load_catalog(TWO_SETS),
        index=index_of("brochure.pdf"),
    )

    # THEN her row goes (a default the file does not use sends nothing to anyone)
    assert [row["attachment"] for row in rows] == ["brochure.pdf"] and reasons(report) == []


# --- files named .pdf that are no PDF -----------------------------------------------------

WORD = b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml" + bytes(50) + b"PK\x03\x04word/"
NOT_PDF = ", where a PDF starts with %PDF-: put the letter, saved as a PDF, in its place"


def test_a_row_whose_pdf_is_no_pdf_is_rejected_naming_what_the_file_is():
    # GIVEN Bob's letter a Word document saved as bob.pdf, Carol's a text file as carol.PDF,
    # Dan's a notice.txt (no PDF by its name)
    files = {
        "alice.pdf": OFFER_ALICE,
        "bob.pdf": WORD,
        "carol.PDF": b"Dear Carol,\nwelcome",
        "notice.txt": b"Dear Dan",
    }
    contents = FakeContents(files)
    text = HEADER + ALICE + BOB + "carol@example.com,Carol,active,carol.PDF\r\n"
    text += "dan@example.com,Dan,active,notice.txt\r\n"

    # WHEN validated with the means to read the files
    report, rows = run(text, index=contents.index(), contents=contents)

    # THEN Bob's and Carol's rows are rejected, saying what their files are; Alice's and
    # Dan's go; only the files named .pdf were read, each once, a few bytes of each
    assert emails(rows) == ["alice@example.com", "dan@example.com"]
    assert reasons(report) == [
        (
            3,
            "Attachment_File",
            "attachment is not a PDF: bob.pdf looks like a Word document (.docx, a PK zip)"
            + NOT_PDF,
        ),
        (
            4,
            "Attachment_File",
            f"attachment is not a PDF: carol.PDF is text that starts with 'Dear Carol, welcome'"
            f"{NOT_PDF}",
        ),
    ]
    assert contents.started == {"alice.pdf": 1, "bob.pdf": 1, "carol.PDF": 1}


def test_a_default_attachment_that_is_no_pdf_rejects_its_rows_and_is_read_once():
    # GIVEN the info set's default brochure.pdf, a text file, given to three rows
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "brochure.pdf": b"brochure to come"})
    text = HEADER + ALICE + "".join(f"u{i}@example.com,U {i},info,\r\n" for i in range(3))

    # WHEN validated
    report, rows = run(
        text, catalog=load_catalog(TWO_SETS), index=contents.index(), contents=contents
    )

    # THEN the info rows are rejected, the brochure read once for them all
    assert emails(rows) == ["alice@example.com"]
    why = "attachment is not a PDF: brochure.pdf is text that starts with 'brochure to come'"
    assert reasons(report) == [(row, "Attachment_File", why + NOT_PDF) for row in (3, 4, 5)]
    assert contents.started["brochure.pdf"] == 1


def test_a_default_attachment_storage_lacks_refuses_the_file_once_naming_the_manifest():
    # GIVEN the info set's default brochure.pdf stored as Brochure.pdf, and rows given it
    text = HEADER + ALICE + "".join(f"u{i}@example.com,U {i},info,\r\n" for i in range(30))

    # WHEN validated
    with pytest.raises(TemplateError) as caught:
        run(text, catalog=load_catalog(TWO_SETS), index=index_of("alice.pdf", "Brochure.pdf"))

    # THEN the whole file is refused once, naming the manifest, the set, the file and its
    # likely name, not each row whose empty Attachment_File "was not found"
    assert caught.value.message == (
        "manifest.yaml: set 'info': default_attachment brochure.pdf: attachment not found:"
        " brochure.pdf (did you mean Brochure.pdf?); every row of the set whose Attachment_File"
        " is empty (the first: row 3) would attach it, so nothing is sent (put the file in the"
        " attachments folder under that name, or correct default_attachment in manifest.yaml;"
        " then run the file again)"
    )


def test_without_a_cheap_read_of_the_files_start_a_pdf_is_left_to_the_send():
    # GIVEN storage that reads no file's start at validation (S3), and Bob's bob.pdf a Word
    # document
    class Remote(FakeContents):
        def start(self, name: str, tag: str, count: int) -> None:
            self.started[name] += 1
            return None

    contents = Remote({"alice.pdf": OFFER_ALICE, "bob.pdf": WORD})

    # WHEN validated THEN both rows go (the send checks each file it reads)
    report, rows = run(HEADER + ALICE + BOB, index=contents.index(), contents=contents)
    assert emails(rows) == ["alice@example.com", "bob@example.com"]
    assert reasons(report) == [] and contents.started == {"alice.pdf": 1, "bob.pdf": 1}


def test_a_copy_behind_a_link_names_the_name_its_row_gave():
    # GIVEN Alice's row naming a link to her letter, and Bob's naming a copy of it
    listing = [
        ObjectInfo("attachments/alice.pdf", len(OFFER_ALICE), identity="1:1", tag="t1"),
        ObjectInfo("attachments/bob.pdf", len(OFFER_ALICE), identity="1:2", tag="t2"),
        ObjectInfo("attachments/link.pdf", len(OFFER_ALICE), identity="1:1", tag="t1"),
    ]
    index = AttachmentIndex.from_listing(listing)
    links = {"link.pdf": OFFER_ALICE}  # its start is read by the name the row gave
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE, **links})
    text = HEADER + "alice@example.com,Alice,active,link.pdf\r\n" + BOB

    # WHEN validated
    report, _ = run(text, index=index, contents=contents)

    # THEN both are held; the file behind the link is read once, by its first name
    assert report.withdrawn == {2, 3}
    held = {row: reason for row, _, reason in reasons(report)}
    assert held[2].startswith("link.pdf has the same contents as bob.pdf, the attachment of row 3")
    assert held[3].startswith("bob.pdf has the same contents as link.pdf, the attachment of row 2")
    assert contents.read == {"alice.pdf": 1, "bob.pdf": 1}


def test_a_file_changed_while_it_is_compared_stops_validation():
    # GIVEN two recipients' letters of one size, the second replaced since the listing
    class Changing(FakeContents):
        def digest(self, name: str, tag: str) -> bytes:
            if name == "bob.pdf":
                raise ObjectChanged("attachments/bob.pdf changed or went away while validation")
            return super().digest(name, tag)

    contents = Changing({"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_CAROL})

    # WHEN validated THEN it stops, saying which file changed: nothing is sent half-compared
    with pytest.raises(ObjectChanged, match=r"attachments/bob\.pdf changed"):
        run(HEADER + ALICE + BOB, index=contents.index(), contents=contents)


# --- rows withdrawn for a shared file, in the rejects -------------------------------------


def test_withdrawn_rows_are_listed_in_row_order_with_their_address(monkeypatch):
    # GIVEN spools of 4 KiB, and Alice's row, 200 rows with their own letters, 200 rows naming
    # files that do not exist, Carol's row, then Bob's naming Alice's letter and Dave's naming
    # Carol's (so Alice's and Carol's rows, passed on, are withdrawn at the end)
    monkeypatch.setattr("mailmatrix.core.recipients.SPOOL_BYTES", 4096)
    fillers = own_files(200)
    text = HEADER + ALICE
    text += "".join(f"u{i}@example.com,U {i},active,{name}\r\n" for i, name in enumerate(fillers))
    text += "".join(f"m{i}@example.com,M {i},active,missing{i}.pdf\r\n" for i in range(200))
    text += "carol@example.com,Carol,active,carol.pdf\r\n"
    text += "bob@example.com,Bob,active,alice.pdf\r\ndave@example.com,Dave,active,carol.pdf\r\n"
    index = index_of("alice.pdf", "carol.pdf", *fillers)

    # WHEN validated
    report, rows = run(text, index=index)

    # THEN the withdrawn rows are read in their place in row order (both spools on disk),
    # with their addresses masked as every rejected row's, and counted once
    assert report.withdrawn == {2, 403} and report.valid == 200 and len(rows) == 202
    assert report.rejected._spool._rolled
    assert [item["row"] for item in report.rejected] == [2, *range(203, 406)]
    assert len(report.rejected) == 204
    alice, carol = report.rejected[0], report.rejected[201]
    assert alice == {
        "row": 2,
        "column": "Attachment_File",
        "reason": alice["reason"],
        "email": "a***@example.com",
    }
    assert alice["reason"].startswith("alice.pdf is also the attachment of row 404, another")
    assert (carol["row"], carol["email"]) == (403, "c***@example.com")
    assert carol["reason"].startswith("carol.pdf is also the attachment of row 405, another")
    # AND the JSON report's capped list takes them by row order like the others, its count
    # includes them
    cut = report.to_dict(limit=202)
    assert [item["row"] for item in cut["rejected"]][:3] == [2, 203, 204]
    assert cut["rejected"][-1] == carol
    assert cut["truncated"] == {"rejected": 204}
    assert report.to_dict(limit=201)["rejected"][-1]["row"] == 402


def test_a_withdrawn_row_whose_address_was_not_kept_is_still_listed(monkeypatch):
    # GIVEN rows passed on whose addresses are not kept (a safety net: they always are)
    monkeypatch.setattr("mailmatrix.core.recipients._SentAddresses.add", lambda *args: None)
    text = HEADER + ALICE + BOB + "carol@example.com,Carol,active,alice.pdf\r\n"

    # WHEN validated
    report, _ = run(text)

    # THEN the withdrawn row is listed all the same, in its place, without an address
    assert [(item["row"], item["email"]) for item in report.rejected] == [
        (2, ""),
        (4, "c***@example.com"),
    ]
    assert report.withdrawn == {2} and report.valid == 1


def test_the_rejects_report_shows_a_withdrawn_row_in_its_place_and_nothing_else_moves():
    # GIVEN a file with a row of every kind that is not sent: a bad address, an excluded row,
    # a duplicate, a row naming a missing file, and Alice's row whose letter Erin's names later
    text = HEADER + ALICE
    text += "bob@@example.com,Bob,active,bob.pdf\r\n"
    text += "carol@example.com,Carol,unsubscribed,carol.pdf\r\n"
    text += "dave@example.com,Dave,active,dave.pdf\r\nDAVE@example.com,Dave,active,dave.pdf\r\n"
    text += "frank@example.com,Frank,active,missing.pdf\r\n"
    text += "erin@example.com,Erin,active,alice.pdf\r\n"
    report, _ = run(text)
    out = io.BytesIO()

    # WHEN the rejects report is written
    count = write_rejects(report, out)

    # THEN every row not sent is there once, in row order, each as before, and Alice's with
    # her address and the reason
    lines = list(csv.reader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
    also = "alice.pdf is also the attachment of row 8, another recipient: "
    already = "alice.pdf is already the attachment of row 2, another recipient: "
    rest = (
        "each row attaches its recipient's own file, so one of the two rows is wrong and "
        "neither is sent (check both; to send one file to many, leave Attachment_File empty "
        "and set default_attachment)"
    )
    assert count == 6
    assert lines == [
        ["row", "outcome", "column", "reason", "email"],
        ["2", "rejected", "Attachment_File", also + rest, "a***@example.com"],
        ["3", "rejected", "Email",
         "invalid address: The part after the @-sign contains invalid characters: '@'.",
         "b***@example.com"],
        ["4", "excluded", "", "unsubscribed", "c***@example.com"],
        ["6", "duplicate", "Email",
         "duplicate of row 5: the same address and values; only row 5 counts", "D***@example.com"],
        ["7", "rejected", "Attachment_File", "attachment not found: missing.pdf",
         "f***@example.com"],
        ["8", "rejected", "Attachment_File", already + rest, "e***@example.com"],
    ]  # fmt: skip


def _offers(count: int) -> str:
    text = "Email,Name,Status,Attachment_File\r\n"
    for n in range(count):
        text += f"p{n}@example.com,P{n},Active,{FILES[n]}\r\n"
    return text


def test_a_set_whose_first_rows_all_fail_to_render_stops_the_file_naming_them():
    # GIVEN a set whose template fails on every row (an expression the columns check passes)
    catalog = FakeCatalog(broken={"offer"})

    # WHEN a file of five of its rows is validated
    with pytest.raises(TemplateError) as raised:
        run(_offers(5), catalog=catalog)

    # THEN the file is refused before anything is sent, with the template's error and the
    # rows tried (three, not all five)
    assert raised.value.message == (
        "offer/body.txt: render: 'str object' has no attribute 'x' (every row of set offer"
        " tried failed: rows 2, 3, 4): the template, not the rows, is likely at fault"
    )
    assert catalog.rendered == ["P0", "P1", "P2"]


NOT_RENDERED = (
    "its letter does not render: offer/body.txt: render: 'str object' has no attribute 'x'"
    " (fix the template, or this row's values)"
)


def test_a_row_that_fails_to_render_alone_is_rejected_with_the_error():
    # GIVEN a set whose first row fails to render but whose second renders
    catalog = FakeCatalog(failing={"P0"})

    # WHEN the file is validated
    report, rows = run(_offers(4), catalog=catalog)

    # THEN the first row is rejected with the template's error (it would fail at sending),
    # the others pass, and once a row of the set rendered no other is tried
    assert [row["row"] for row in rows] == [3, 4, 5]
    assert (report.valid, reasons(report)) == (3, [(2, "", NOT_RENDERED)])
    assert catalog.rendered == ["P0", "P1"]


def test_a_set_of_one_row_that_fails_to_render_rejects_that_row():
    # GIVEN a file of one row, whose letter fails to render
    catalog = FakeCatalog(failing={"P0"})

    # WHEN it is validated
    report, rows = run(_offers(1), catalog=catalog)

    # THEN the row is rejected with the error, not counted among the rows to send
    assert rows == []
    assert (report.valid, reasons(report)) == (0, [(2, "", NOT_RENDERED)])
    assert catalog.rendered == ["P0"]


def test_a_row_the_same_as_one_that_failed_to_render_fails_alike_without_another_try():
    # GIVEN a row that fails to render, the same row again, then a row that renders
    catalog = FakeCatalog(failing={"P0"})
    first = "p0@example.com,P0,Active,alice.pdf\r\n"
    text = "Email,Name,Status,Attachment_File\r\n" + first + first
    text += "p1@example.com,P1,Active,bob.pdf\r\n"

    # WHEN the file is validated
    report, rows = run(text, catalog=catalog)

    # THEN both copies are rejected for the error, and the copy is not a second failed try
    # (two would have stopped the file as the template's fault)
    assert [row["row"] for row in rows] == [4]
    assert reasons(report) == [(2, "", NOT_RENDERED), (3, "", NOT_RENDERED)]
    assert catalog.rendered == ["P0", "P1"]
