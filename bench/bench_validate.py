"""Validate a 1,000,000-row recipients CSV: seconds and peak memory (targets: < 60 s, < 200 MB).

The file is generated in the parent; the validation runs in a fresh child process so that its
peak RSS is its own. The attachment listing is a stub that answers for the generated names
(a real listing of a million files would be memory of the listing, not of the intake).
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROWS = 1_000_000
TARGET_SECONDS = 60.0
TARGET_MB = 200.0
HEADER = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\r\n"
_FIRST = ("Anna", "José", "Zoë", "Chen", "Amelia", "Oskar", "Fatima", "Liam", "Åsa", "Noah")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "bücher.example", "corp.example")


def address(i: int) -> str:
    """The generated address of row ``i`` (ASCII local part; some IDN domains)."""
    local = _FIRST[i % len(_FIRST)].encode("ascii", "ignore").decode().lower() or "user"
    return f"{local}.{i}@{_DOMAINS[i % len(_DOMAINS)]}"


def generate(path: pathlib.Path, rows: int = ROWS) -> int:
    """Write the benchmark CSV (mostly valid rows, 0.1% rejects, 0.05% rows with an earlier
    row's address and other values: both held back); return bytes."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        chunk: list[str] = []
        for i in range(rows):
            first = _FIRST[i % len(_FIRST)]
            email = address(i)
            twin = i - 1000 if i % 2000 == 13 and i > 1000 else i
            if twin != i:
                email = address(twin).upper()  # an earlier row's address, another Name
            if i % 1000 == 7:
                email = email.replace("@", "")  # rejected: no @-sign
            status = "Offer" if twin % 3 else "Rejection"
            name = f'"{first} Example-{i}"' if i % 10 else f"{first} O'Brien {i}"
            chunk.append(
                f"{email},{name},{status},letter-{i}.pdf,Data Engineer,Analytics,"
                f'2027-01-{1 + i % 28:02d},"€{60000 + i % 20000:,}"\r\n'
            )
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return path.stat().st_size


def child(csv_path: str, attachments: bool = True) -> None:
    """Validate ``csv_path`` in this process and print the figures as JSON.

    Without ``attachments`` the listing is empty, so every row is rejected (the worst case
    for the report's memory: a wrong attachments folder).
    """
    import re

    from mailmatrix.core.attachments import AttachmentIndex
    from mailmatrix.core.recipients import IntakeRules, validate_recipients
    from mailmatrix.core.rejects import write_rejects
    from mailmatrix.core.templates import load_catalog

    class GeneratedNames(dict):
        """Answers like a listing holding letter-N.pdf (50 KB each) for every N."""

        pattern = re.compile(r"letter-\d+\.pdf")

        def get(self, name, default=None):
            return 50_000 if attachments and self.pattern.fullmatch(name) else default

    root = pathlib.Path(__file__).parents[1] / "templates"
    files = {p.relative_to(root).as_posix(): p.read_text("utf-8") for p in root.rglob("*")
             if p.is_file()}  # fmt: skip
    catalog = load_catalog(files)
    emitted = 0

    def emit(row: dict) -> None:
        nonlocal emitted
        emitted += 1

    started = time.perf_counter()
    with open(csv_path, "rb") as stream:
        report = validate_recipients(
            stream,
            source="incoming/bench.csv",
            catalog=catalog,
            attachments=AttachmentIndex(GeneratedNames()),
            rules=IntakeRules(),
            emit=emit,
        )
    with open(os.devnull, "wb") as sink:
        write_rejects(report, sink)  # the report streams out too, whatever its length
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_kb": peak_kb,
                "rows": report.rows,
                "valid": report.valid,
                "emitted": emitted,
                "rejected": len(report.rejected),
                "duplicates": len(report.duplicates),
            }
        )
    )


def measure(path: pathlib.Path, attachments: bool) -> dict:
    """Validate ``path`` in a fresh child process; return its figures (peak RSS in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    code = f"from bench.bench_validate import child; child({str(path)!r}, {attachments!r})"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=pathlib.Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"validation child failed: {done.stderr.strip()[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall"] = time.perf_counter() - started
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # RUSAGE_CHILDREN is the largest of all children so far; it is this one's only if it grew.
    figures["peak_mb"] = (children_kb if children_kb > before else figures["peak_kb"]) / 1024
    return figures


def run(out_dir: pathlib.Path) -> dict[str, str]:
    """Generate the CSV, validate it in a child process, print and return the figures."""
    path = out_dir / "bench-1m.csv"
    size = generate(path)
    good = measure(path, attachments=True)
    seconds = good["seconds"]
    print(
        f"validate: {good['rows']:,} rows ({size / 1e6:.0f} MB) in {seconds:.1f} s "
        f"({good['rows'] / seconds:,.0f} rows/s; {good['wall']:.1f} s with start-up), "
        f"peak RSS {good['peak_mb']:.0f} MB; valid {good['valid']:,}, rejected "
        f"{good['rejected']:,}, duplicates {good['duplicates']:,} "
        f"(targets: < {TARGET_SECONDS:.0f} s, < {TARGET_MB:.0f} MB)"
    )
    bad = measure(path, attachments=False)
    print(
        "validate, every row rejected (no attachments), rejects report written: "
        f"{bad['seconds']:.1f} s, "
        f"peak RSS {bad['peak_mb']:.0f} MB; rejected {bad['rejected']:,}"
    )
    return {
        "validate_rows": str(good["rows"]),
        "validate_seconds": f"{seconds:.1f}",
        "validate_peak_rss_mb": f"{good['peak_mb']:.0f}",
        "validate_all_rejected_peak_rss_mb": f"{bad['peak_mb']:.0f}",
    }
