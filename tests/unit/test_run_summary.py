"""`mailmatrix run`'s summary for people: what it reads of the run's reports."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console

from mailmatrix.cli.run_cmd import print_summary
from tests.memory import TracedPeak

COLUMNS = ["row", "email", "column", "reason", "outcome"]


def rejects_report(path: Path, rows: int) -> Path:
    """A rejects report as validation writes it (UTF-8 with a byte-order mark), ``rows`` long."""
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in range(2, rows + 2):
            reason = f"Attachment_File is empty (row {row}, line one\nand line two)"
            writer.writerow([row, f"p***{row}@example.com", "Attachment_File", reason, "rejected"])
    return path


def test_the_summary_lists_the_first_rejects_and_counts_the_rest_row_by_row(tmp_path):
    # GIVEN a run that rejected every one of 20,000 rows (about 1.6 MB of report)
    rejects = rejects_report(tmp_path / "rejects.csv", 20_000)
    result = {
        "status": "FAILED",
        "error": "NothingToSend",
        "cause": "No valid rows in incoming/recipients.csv",
        "counts": {"rows": 20_000, "rejected": 20_000},
        "rejects": str(rejects),
        "workdir": str(tmp_path),
    }
    small = {**result, "rejects": str(rejects_report(tmp_path / "small.csv", 30))}
    print_summary(Console(file=io.StringIO(), width=200), small)  # rich's first-use imports
    out = io.StringIO()
    # WHEN the summary is printed
    with TracedPeak() as peak:
        print_summary(Console(file=out, width=200), result)

    # THEN it shows the first 20 rows with their reasons and counts the others
    lines = out.getvalue().splitlines()
    start = lines.index("Rows not sent, and why (20000):")
    assert lines[start + 1] == (
        "  row 2 rejected [Attachment_File]: Attachment_File is empty (row 2, line one"
    )
    assert lines[start + 2] == "and line two)"
    assert lines[start + 40] == "and line two)"
    assert lines[start + 41] == f"  ... and 19980 more in {rejects}"
    # AND it read the report a row at a time: the whole of it as rows took over 20 MB
    assert peak.bytes < 5_000_000
