"""The rejects report: readable CSV, addresses masked, nothing a spreadsheet would execute."""

from __future__ import annotations

import codecs
import csv
import io

import pytest

from mailmatrix.core.recipients import IntakeReport
from mailmatrix.core.rejects import neutralise, write_rejects


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("Name is empty", "Name is empty"),
        ("a=b", "a=b"),
        (7, "7"),
        (None, ""),
    ],
)  # fmt: skip
def test_formula_starts_are_neutralised(cell, shown):
    assert neutralise(cell) == shown


def test_report_lists_every_row_not_sent_in_row_order():
    # GIVEN a report with a reject, a duplicate and a skipped row
    report = IntakeReport(source="s")
    report.rejected.append(
        {"row": 5, "column": "Name", "reason": "=cmd|' /C calc'!A0", "email": "e***@example.com"}
    )
    report.duplicates.append({"row": 4, "first_row": 2, "email": "a***@example.com"})
    report.skipped.append({"row": 3, "reason": "unsubscribed"})
    out = io.BytesIO()

    # WHEN it is written
    count = write_rejects(report, out)

    # THEN it is UTF-8 CSV with a BOM, one line per row, formulas neutralised
    data = out.getvalue()
    assert data.startswith(codecs.BOM_UTF8)
    lines = list(csv.reader(io.StringIO(data[3:].decode("utf-8"))))
    assert count == 3
    assert lines == [
        ["row", "outcome", "column", "reason", "email"],
        ["3", "excluded", "", "unsubscribed", ""],
        ["4", "duplicate", "Email",
         "duplicate of row 2: the same address and values; only row 2 counts",
         "a***@example.com"],
        ["5", "rejected", "Name", "'=cmd|' /C calc'!A0", "e***@example.com"],
    ]  # fmt: skip


def test_empty_report_has_only_the_header():
    out = io.BytesIO()

    assert write_rejects(IntakeReport(source="s"), out) == 0
    assert out.getvalue() == codecs.BOM_UTF8 + b"row,outcome,column,reason,email\r\n"


def test_rejects_merged_in_later_are_written_in_row_order():
    # GIVEN rejects at rows 5 and 9, then rows 3 and 7 found wanting at the end (withdrawn)
    report = IntakeReport(source="s")
    for row in (5, 9):
        report.rejected.append({"row": row, "column": "Name", "reason": "r", "email": "e***@x.org"})
    report.rejected.merge(
        {"row": row, "column": "Attachment_File", "reason": "w", "email": "w***@x.org"}
        for row in (3, 7)
    )
    report.skipped.append({"row": 4, "reason": "unsubscribed"})
    out = io.BytesIO()

    # WHEN written THEN each is in its place, counted once
    assert write_rejects(report, out) == 5
    lines = list(csv.reader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
    assert [(line[0], line[3], line[4]) for line in lines[1:]] == [
        ("3", "w", "w***@x.org"),
        ("4", "unsubscribed", ""),
        ("5", "r", "e***@x.org"),
        ("7", "w", "w***@x.org"),
        ("9", "r", "e***@x.org"),
    ]
    assert len(report.rejected) == 4


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_rejects_are_separated_as_the_recipients_file_was(delimiter):
    # GIVEN the report of a file a German Excel saved (semicolons), or another
    report = IntakeReport(source="s", delimiter=delimiter)
    report.rejected.append(
        {"row": 2, "column": "Email", "reason": "Email is missing; see row 2", "email": ""}
    )
    out = io.BytesIO()

    # WHEN it is written
    write_rejects(report, out)

    # THEN its columns are split by that delimiter, a cell holding one quoted
    text = out.getvalue().decode("utf-8-sig")
    assert text.splitlines()[0] == delimiter.join(["row", "outcome", "column", "reason", "email"])
    assert list(csv.reader(io.StringIO(text), delimiter=delimiter))[1] == [
        "2",
        "rejected",
        "Email",
        "Email is missing; see row 2",
        "",
    ]
