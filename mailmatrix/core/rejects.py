"""The rejects report: one CSV line per row that will not be sent, safe to open in a spreadsheet.

Spreadsheets run a cell that begins with =, +, -, @ (and, in some, TAB or CR) as a formula, so
such cells get a leading apostrophe (the OWASP "CSV injection" advice). Addresses are masked.
"""

from __future__ import annotations

import codecs
import csv
import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

COLUMNS = ("row", "outcome", "column", "reason", "email")
# The delimiters a report may be written with: those of the recipients file (intake's).
REPORT_DELIMITERS = (",", ";", "\t", "|")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: object) -> str:
    """Return ``cell`` as text that a spreadsheet shows as text and never runs as a formula."""
    text = "" if cell is None else str(cell)
    if text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def report_delimiter(header: str) -> str:
    """The delimiter of a report whose first line is ``header`` (its column names hold none)."""
    return max(REPORT_DELIMITERS, key=header.count) if header else ","


def report_lines(report: Any) -> Iterator[dict[str, Any]]:
    """Yield the rejected, duplicate and excluded (by Status) rows of an IntakeReport, in row
    order.

    Each list is already in file order, so they are merged as streams, never held at once.
    """
    rejected = ({"outcome": "rejected", **item} for item in report.rejected)
    duplicates = (_duplicate_line(item) for item in report.duplicates)
    # "excluded", as the run summary counts them: "skipped" there means sent by an earlier run
    excluded = (
        {"outcome": "excluded", "column": "", "email": "", **item} for item in report.skipped
    )
    return heapq.merge(rejected, duplicates, excluded, key=lambda line: line["row"])


def _duplicate_line(item: Mapping[str, Any]) -> dict[str, Any]:
    """Word a duplicate for the report (a row with other values is rejected, not a duplicate)."""
    first = item["first_row"]
    return {
        "row": item["row"],
        "outcome": "duplicate",
        "column": "Email",
        "reason": f"duplicate of row {first}: the same address and values; only row {first} counts",
        "email": item.get("email", ""),
    }


def write_rejects(report: Any, out: BinaryIO) -> int:
    """Write the report's rejected, duplicate and excluded rows to ``out``, separated as the
    recipients file was (a spreadsheet set for semicolons shows a comma file as one column);
    return the count."""
    return write_lines(report_lines(report), out, delimiter=report.delimiter or ",")


def write_lines(lines: Iterable[Mapping[str, Any]], out: BinaryIO, *, delimiter: str = ",") -> int:
    """Write the lines as UTF-8 CSV (with a BOM, so Excel reads it as UTF-8); return the count."""
    text = codecs.getwriter("utf-8")(out)
    out.write(codecs.BOM_UTF8)
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count = 0
    for line in lines:
        writer.writerow([neutralise(line.get(column, "")) for column in COLUMNS])
        count += 1
    text.flush()
    return count
