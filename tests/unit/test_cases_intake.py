"""The intake cases of ../shared/cases (copied under tests/fixtures/intake/caseNN), each with
the outcome it calls for, and their neighbours of the same kind."""

from __future__ import annotations

import codecs
import io
import json
import pathlib

import pytest

from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.recipients import IntakeRules, validate_recipients
from mailmatrix.core.templates import load_catalog
from mailmatrix.ports import ObjectInfo
from tests.unit.test_recipients import FakeCatalog, emails, index_of, reasons, run

CASES = pathlib.Path(__file__).parents[1] / "fixtures" / "intake"
REPO = pathlib.Path(__file__).parents[2]


def case(name: str) -> bytes:
    return (CASES / name).read_bytes()


def names(rows: list[dict]) -> list[str]:
    return [row["name"] for row in rows]


# --- 01: UTF-8 byte-order mark glued to the first header ----------------------------------


def test_01_bom_header_is_exactly_email():
    report, rows = run(case("case01/recipients.csv"))

    assert report.encoding == "utf-8-sig"
    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert [(r["email"], r["attachment"]) for r in rows] == [
        ("alice@example.com", "alice.pdf"),
        ("bob@example.com", "bob.pdf"),
    ]
    assert all("\ufeff" not in key for r in rows for key in r["fields"])


def test_01_same_file_without_bom_gives_identical_rows():
    raw = case("case01/recipients.csv")
    _, with_bom = run(raw)

    report, without = run(raw.removeprefix(codecs.BOM_UTF8))

    assert report.encoding == "utf-8"
    assert without == with_bom


@pytest.mark.parametrize("first", ["Name", "Status"])
def test_01_neighbour_bom_before_another_first_column(first):
    # The BOM sits on whichever column comes first; Email further right must still be found.
    columns = [first, "Email"] + [c for c in ("Name", "Status", "Attachment_File") if c != first]
    values = {"Email": "alice@example.com", "Name": "Alice", "Status": "active"}
    values["Attachment_File"] = "alice.pdf"
    text = ",".join(columns) + "\r\n" + ",".join(values[c] for c in columns) + "\r\n"

    report, rows = run(codecs.BOM_UTF8 + text.encode())

    assert report.header == columns
    assert emails(rows) == ["alice@example.com"]


def test_01_a_bom_at_the_ends_of_a_cell_goes_like_a_space():
    # GIVEN two "UTF-8 with BOM" exports glued together: the second's mark starts a data line
    raw = case("case01/recipients.csv")
    glued = raw + codecs.BOM_UTF8 + b"carol@example.com,Carol \xef\xbb\xbf,active,carol.pdf\r\n"

    # WHEN it is read
    report, rows = run(glued)

    # THEN the marks are gone from Carol's address and name, and her row is valid
    assert report.rejected == []
    assert emails(rows) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert names(rows)[-1] == "Carol"


# --- 02: semicolon-separated export from a comma-decimal locale ---------------------------


def test_02_semicolon_file_is_read_with_its_delimiter():
    report, rows = run(case("case02/recipients.csv"))

    assert report.delimiter == ";"
    assert report.header == ["Email", "Name", "Status", "Attachment_File", "Amount"]
    assert names(rows) == ["Alice Example", "Bob; Jr. Example"]
    assert [r["fields"]["Amount"] for r in rows] == ["12,50", "7,00"]
    assert emails(rows) == ["alice@example.com", "bob@example.com"]


@pytest.mark.parametrize("delimiter", ["\t", "|"], ids=["tab", "pipe"])
def test_02_neighbour_other_delimiters_with_decimal_commas(delimiter):
    raw = case("case02/recipients.csv").decode().replace(";", delimiter)
    raw = raw.replace(f"Bob{delimiter} Jr.", "Bob, Jr.")

    report, rows = run(raw)

    assert report.delimiter == delimiter
    assert names(rows) == ["Alice Example", "Bob, Jr. Example"]
    assert [r["fields"]["Amount"] for r in rows] == ["12,50", "7,00"]


def test_02_neighbour_a_delimiter_that_finds_no_email_column_is_never_chosen():
    # Splitting this header by "|" or ";" would give one column; only "," finds Email.
    text = "Email,Name|Nick;Alias,Status,Attachment_File\r\n"
    text += "alice@example.com,A|B;C,active,alice.pdf\r\n"

    report, rows = run(text, catalog=FakeCatalog(uses={}))

    assert report.delimiter == ","
    assert rows[0]["fields"]["Name|Nick;Alias"] == "A|B;C"


# --- 04: Excel "Unicode Text" (UTF-16LE, tab-separated) and NUL bytes -----------------------


def test_04_utf16_tab_file_keeps_its_unicode_names():
    report, rows = run(case("case04/recipients.csv"))

    assert (report.encoding, report.delimiter) == ("utf-16-le", "\t")
    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert names(rows) == ["Åsa Öberg", "王芳"]


def test_04_nul_in_a_field_rejects_that_row_only():
    report, rows = run(case("case04/recipients_nul_in_field.csv"))

    assert reasons(report) == [(2, "Name", "control character (NUL) in Name")]
    assert emails(rows) == ["dave@example.com"]


def test_04_neighbour_utf16_big_endian_and_semicolons():
    text = case("case04/recipients.csv").decode("utf-16").replace("\t", ";")

    report, rows = run(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))

    assert (report.encoding, report.delimiter) == ("utf-16-be", ";")
    assert names(rows) == ["Åsa Öberg", "王芳"]


@pytest.mark.parametrize("column", ["Email", "Status", "Attachment_File"])
def test_04_neighbour_nul_in_any_column(column):
    values = {"Email": "carol@example.com", "Name": "Carol", "Status": "active"}
    values["Attachment_File"] = "carol.pdf"
    values[column] = values[column][:3] + "\x00" + values[column][3:]
    text = "Email,Name,Status,Attachment_File\n" + ",".join(values.values()) + "\n"

    report, rows = run(text)

    assert reasons(report) == [(2, column, f"control character (NUL) in {column}")]
    assert rows == []


# --- 06: comma-only and blank rows left by spreadsheet exports ----------------------------


def test_06_blank_and_comma_only_rows_are_counted_not_reported():
    report, rows = run(case("case06/recipients.csv"))

    assert emails(rows) == ["alice@example.com", "bob@example.com"]
    assert reasons(report) == [
        (5, "Email; Attachment_File", "Email is missing; attachment not found: dan.pdf")
    ]
    assert report.empty == 5
    assert (report.rows, report.valid) == (3, 2)


def test_06_trailing_unnamed_empty_column_is_ignored():
    report, rows = run(case("case06/recipients_trailing_commas.csv"))

    assert report.header == ["Email", "Name", "Status", "Attachment_File"]
    assert report.rejected == []
    assert emails(rows) == ["alice@example.com", "bob@example.com"]
    assert list(rows[0]["fields"]) == ["Email", "Name", "Status", "Attachment_File"]


def test_06_trailing_unnamed_column_with_a_value_is_reported():
    raw = case("case06/recipients_trailing_commas.csv").replace(b"bob.pdf,", b"bob.pdf,oops")

    report, rows = run(raw)

    assert reasons(report) == [
        (3, "column 5 (no header)", "value in a column without a header name")
    ]
    assert emails(rows) == ["alice@example.com"]


def test_06_neighbour_rows_with_one_trailing_comma_more_than_the_header():
    text = "Email,Name,Status,Attachment_File\r\nalice@example.com,Alice,active,alice.pdf,,\r\n"

    report, rows = run(text)

    assert report.rejected == []
    assert emails(rows) == ["alice@example.com"]


def test_06_scale_100000_trailing_comma_lines_stream_through():
    raw = case("case06/recipients.csv") + b",,,\r\n" * 100_000

    report, rows = run(raw)

    assert emails(rows) == ["alice@example.com", "bob@example.com"]
    assert len(report.rejected) == 1
    assert report.empty == 100_005


# --- 08: the same recipient several times --------------------------------------------------


def test_08_exact_copy_kept_once_case_variant_with_other_values_holds_both():
    # Decision (differs from the case's proposal, which sends line 2 and reports line 4 as a
    # conflicting duplicate): line 4 has Alice's address with another Name and letter, so
    # either it is someone else's row with her address typed in, and line 2 would send her
    # the right letter only by luck of the order, or line 2 is the wrong one. Only a person
    # can tell: lines 2 and 4 are both held back, like two recipients naming one file. Line 5,
    # an exact copy of line 2, is a duplicate as before.
    index = index_of("alice.pdf", "alice2.pdf", "bob.pdf")

    report, rows = run(case("case08/recipients.csv"), index=index)

    assert [(r["email"], r["attachment"]) for r in rows if r["row"] not in report.withdrawn] == [
        ("bob@example.com", "bob.pdf")
    ]
    assert report.withdrawn == {2} and report.valid == 1
    assert [(row, column) for row, column, _ in reasons(report)] == [(2, "Email"), (4, "Email")]
    assert reasons(report)[1][2].startswith(
        "row 2 has the same address with other values in Name, Attachment_File: "
    )
    assert report.duplicates == [{"row": 5, "first_row": 2, "email": "a***@example.com"}]


@pytest.mark.parametrize(
    "variant",
    ["alice@EXAMPLE.COM", "ALICE@example.com", " alice@example.com ", "alice@Example.Com"],
)
def test_08_neighbour_case_and_space_variants_are_the_same_mailbox(variant):
    # Policy: the local part compares case-insensitively, as most mailbox providers treat it.
    text = "Email,Name,Status,Attachment_File\nalice@example.com,A,active,alice.pdf\n"
    text += f"{variant},A,active,alice.pdf\n"

    report, rows = run(text)

    assert len(rows) == 1 and report.rejected == []
    assert [(d["row"], d["first_row"]) for d in report.duplicates] == [(3, 2)]


def test_08_neighbour_plus_tags_and_dots_are_different_mailboxes():
    text = "Email,Name,Status,Attachment_File\n"
    for address, file in (
        ("alice@example.com", "alice.pdf"),
        ("alice+x@example.com", "bob.pdf"),
        ("a.lice@example.com", "carol.pdf"),
    ):
        text += f"{address},A,active,{file}\n"

    report, rows = run(text)

    assert len(rows) == 3
    assert report.duplicates == []


# --- 11: internationalised domains and non-ASCII local parts -----------------------------


def test_11_idn_domains_go_out_as_punycode_non_ascii_local_parts_are_refused():
    index = index_of("anna.pdf", "jose.pdf", "jose2.pdf", "bob.pdf")

    report, rows = run(case("case11/recipients.csv"), index=index)

    assert emails(rows) == [
        "anna@xn--bcher-kva.example",
        "jose.garcia@example.com",
        "bob@xn--bcher-kva.example",
    ]
    assert names(rows)[1] == "José García"
    # Line 6 is line 2's mailbox after normalisation (lower case, Punycode). Decision (the case
    # proposes a duplicate, line 2 sent): it holds another Name, so both are held back (case
    # 08), and Anna gets nothing until a person says which row is hers.
    assert report.withdrawn == {2}
    assert [(row, column) for row, column, _ in reasons(report)] == [
        (2, "Email"),
        (4, "Email"),
        (6, "Email"),
    ]
    assert reasons(report)[1][2] == "non-ASCII local part not supported by SES (no SMTPUTF8)"
    assert reasons(report)[2][2].startswith("row 2 has the same address with other values in Name:")
    assert report.duplicates == []


@pytest.mark.parametrize(
    ("address", "sent_as"),
    [
        ("info@münchen.example", "info@xn--mnchen-3ya.example"),
        ("info@MÜNCHEN.example", "info@xn--mnchen-3ya.example"),
        ("info@例え.テスト", "info@xn--r8jz45g.xn--zckzah"),
        ("info@xn--mnchen-3ya.example", "info@xn--mnchen-3ya.example"),
    ],
)
def test_11_neighbour_other_idn_domains(address, sent_as):
    text = f"Email,Name,Status,Attachment_File\n{address},A,active,alice.pdf\n"

    _, rows = run(text)

    assert emails(rows) == [sent_as]


@pytest.mark.parametrize(
    "address", ["müller@example.com", "用户@example.com", "zoë@bücher.example"]
)
def test_11_neighbour_other_non_ascii_local_parts(address):
    text = f"Email,Name,Status,Attachment_File\n{address},A,active,alice.pdf\n"

    report, rows = run(text)

    assert reasons(report) == [
        (2, "Email", "non-ASCII local part not supported by SES (no SMTPUTF8)")
    ]
    assert rows == []


# --- 14: per-recipient attachment missing, wrong case, blank or empty ---------------------


def case14_index() -> AttachmentIndex:
    folder = CASES / "case14" / "attachments"
    listing = [ObjectInfo(f"attachments/{p.name}", p.stat().st_size) for p in folder.iterdir()]
    return AttachmentIndex.from_listing(listing, prefix="attachments/")


def test_14_attachment_problems_are_each_reported_before_sending():
    report, rows = run(case("case14/recipients.csv"), index=case14_index())

    assert emails(rows) == ["alice@example.com"]
    assert reasons(report) == [
        (3, "Attachment_File", "attachment not found: bob.pdf"),
        (4, "Attachment_File", "attachment not found: Carol.PDF (did you mean carol.pdf?)"),
        (5, "Attachment_File", "Attachment_File is empty"),
        (6, "Attachment_File", "attachment is empty (0 bytes): empty.pdf"),
    ]


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("attachments/alice.pdf", "folder in attachment name 'attachments/alice.pdf': "
         "give a bare file name"),
        ("../alice.pdf", "parent folder (..) in attachment name '../alice.pdf': "
         "give a bare file name"),
        ("/alice.pdf", "absolute path in attachment name '/alice.pdf': give a bare file name"),
        ("C:\\\\letters\\\\alice.pdf", "backslash in attachment name"),
        ("ALICE.PDF", "attachment not found: ALICE.PDF (did you mean alice.pdf?)"),
    ],
)  # fmt: skip
def test_14_neighbour_paths_and_case_variants_are_refused(cell, reason):
    text = f'Email,Name,Status,Attachment_File\nalice@example.com,A,active,"{cell}"\n'

    report, rows = run(text, index=case14_index())

    assert [(r, c, why[: len(reason)]) for r, c, why in reasons(report)] == [
        (2, "Attachment_File", reason)
    ]
    assert rows == []


def test_14_neighbour_attachment_over_the_message_limit():
    index = index_of("huge.pdf", sizes={"huge.pdf": 9 * 1024 * 1024})
    text = "Email,Name,Status,Attachment_File\nalice@example.com,A,active,huge.pdf\n"

    report, rows = run(text, index=index, rules=IntakeRules(max_message_bytes=10 * 1024 * 1024))

    assert reasons(report) == [
        (
            2,
            "Attachment_File",
            "attachment too large: huge.pdf is 9.0 MiB, about 12.6 MiB as an encoded message; "
            "the limit is 10.0 MiB",
        )
    ]
    assert rows == []


# --- 23: the validator and the Distributed Map ItemReader must read the same values ------


def test_23_rows_the_itemreader_would_read_differently_are_rejected():
    report, rows = run(case("case23/recipients.csv"))

    # Decision: the Map reads our JSON Lines manifest, never the raw CSV, so a backslash in a
    # free-text column is harmless; in Attachment_File it is refused (a path separator, and
    # the CSV reader would alter it).
    assert reasons(report) == [
        (
            2,
            "Attachment_File",
            "backslash in attachment name 'reports\\\\alice.pdf': give a bare file name "
            "(a backslash is also altered by the Step Functions CSV reader)",
        ),
        (4, "", "3 fields, header has 4"),
        (5, "", "5 fields, header has 4"),
        (6, "Name", "line break in Name"),
    ]
    assert [(r["row"], r["name"]) for r in rows] == [
        (3, 'Bob "Bobby" Example'),
        (8, "Frank, Example"),
    ]


def test_23_accepted_values_are_what_the_map_child_receives():
    # The invariant: each accepted row reaches the Map as a JSON Lines item whose fields equal,
    # byte for byte, what was validated; expected_parse.json records where raw CSV would not.
    expected = json.loads(case("case23/expected_parse.json"))
    lines: list[str] = []
    validate_recipients(
        io.BytesIO(case("case23/recipients.csv")),
        source="incoming/case23.csv",
        catalog=FakeCatalog(),
        attachments=index_of(),
        emit=lambda row: lines.append(json.dumps(row, ensure_ascii=False)),
    )

    items = [json.loads(line) for line in lines]
    assert [item["fields"]["Name"] for item in items] == [
        expected["bob"]["itemreader"]["Name"],
        expected["frank"]["itemreader"]["Name"],
    ]
    assert expected["alice"]["python"] != expected["alice"]["itemreader"]


def test_23_neighbour_backslash_in_a_text_column_is_kept_exactly():
    text = "Email,Name,Status,Attachment_File,Note\r\n"
    text += "bob@example.com,Bob,active,bob.pdf,C:\\temp\\n is not a newline\r\n"

    report, rows = run(text)

    assert report.rejected == []
    assert rows[0]["fields"]["Note"] == "C:\\temp\\n is not a newline"


# --- 25: Status values: unsubscribed, blank and misspelled --------------------------------


def test_25_status_is_an_allow_list_after_strip_and_casefold():
    # Decision: our Status picks the template set; "unsubscribed" is a skip value the manifest
    # lists (counted as skipped, not an error); any other value fails closed as a reject.
    report, rows = run(case("case25/recipients.csv"))

    assert emails(rows) == ["alice@example.com", "frank@example.com"]
    assert report.skipped == [
        {"row": 3, "reason": "unsubscribed", "email": "b***@example.com"},
        {"row": 4, "reason": "unsubscribed", "email": "c***@example.com"},
    ]
    assert reasons(report) == [
        (5, "Status", "Status is empty"),
        (6, "Status", "unknown Status value 'actve'"),
    ]
    assert (report.rows, report.valid, len(report.skipped), len(report.rejected)) == (6, 2, 2, 2)


def bundled_catalog():
    """The real catalog of the repository's templates/ folder."""
    root = REPO / "templates"
    files = {
        p.relative_to(root).as_posix(): p.read_text("utf-8") for p in root.rglob("*") if p.is_file()
    }
    return load_catalog(files)


def test_25_with_the_bundled_templates_status_picks_the_set_or_skips():
    # GIVEN the bundled catalog (Offer, Rejection; skip Withdrawn, Unsubscribed)
    text = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\r\n"
    text += "a@example.com,Ann,offer,alice.pdf,Engineer,Data,2027-01-01,1\r\n"
    text += "b@example.com,Bob, UNSUBSCRIBED ,bob.pdf,Engineer,Data,2027-01-01,1\r\n"
    text += "c@example.com,Cy,Rejection ,carol.pdf,Designer,,,\r\n"
    text += "d@example.com,Di,Hired,dave.pdf,Designer,Design,,\r\n"
    text += "e@example.com,Ed,Offer,erin.pdf,Engineer,Data,,1\r\n"

    # WHEN validated against it
    report, rows = run(text.encode(), catalog=bundled_catalog())

    # THEN Status chooses the set, skip values are skipped and the rest fails closed
    assert [(r["row"], r["template"], r["attachment"]) for r in rows] == [
        (2, "offer", "alice.pdf"),
        (4, "rejection", "carol.pdf"),
    ]
    assert report.skipped == [
        {"row": 3, "reason": "the recipient asked not to be contacted", "email": "b***@example.com"}
    ]
    assert reasons(report) == [
        (
            5,
            "Status",
            "unknown Status value 'Hired' (expected one of: Offer, Rejection, Withdrawn, "
            "Unsubscribed)",
        ),
        (
            6,
            "Start_Date",
            "Start_Date is empty but used by template offer (fill the cell, or print it in the"
            " template within {% if Start_Date %}...{% endif %})",
        ),
    ]
