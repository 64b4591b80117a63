"""Generate one small PDF letter per row of a recipients CSV, named by its Attachment_File.

The example's PDFs are committed, so the demo needs neither this script nor fpdf2; rerun it
after changing the candidates: `.venv/bin/python examples/offer-letters/make_letters.py
--overwrite`.
It deliberately skips the example's row named in MISSING, so the demo shows a missing
attachment. To try a campaign of your own, give your CSV and a folder:
`.venv/bin/python examples/offer-letters/make_letters.py my.csv my-attachments/` writes a
letter for each row naming a file not there yet (with `--overwrite`, every one): an offer
where Status is Offer and the row has Position, Department, Start_Date and Salary; otherwise
a short letter naming the row's Status. The CSV
is read as `mailmatrix run` reads it (its encoding and delimiter, and its header's aliases:
`Full Name` is Name, `E-mail` is Email), and each letter names its row and recipient, so that
no two rows get the same bytes (which validation would reject as one person's letter copied
to another).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpdf import FPDF

from mailmatrix.core.recipients import read_rows

HERE = Path(__file__).parent
MISSING = {"sofia-bianchi.pdf"}
FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu")]


def _font(pdf: FPDF) -> str:
    """Use DejaVu Sans when the system has it (Greek, Cyrillic, accents); else Helvetica."""
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.exists() and bold.exists():
            pdf.add_font("DejaVu", "", str(regular))
            pdf.add_font("DejaVu", "B", str(bold))
            return "DejaVu"
    return "Helvetica"


def _printable(text: str, font: str) -> str:
    """Return ``text`` if the font can draw it, else an empty string."""
    if font == "Helvetica":
        return text if text.isascii() else ""
    return "" if any("\u2e80" <= ch <= "\u9fff" for ch in text) else text


def letter(row: dict[str, str], out: Path, number: int | None = None) -> None:
    """Write the offer or rejection letter of one candidate (``row``: cells by the column
    names intake gives them), ending with a reference to its row (``number``, its line in
    the CSV) and recipient that makes it the row's own."""
    pdf = FPDF(format="A4")
    pdf.set_creator("MailMatrix example campaign")
    pdf.set_title(f"{row.get('Status') or 'Your'} letter")
    font = _font(pdf)
    pdf.add_page()
    pdf.set_font(font, "B", 16)
    pdf.cell(0, 12, "Acme Corporation", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, "", 11)
    pdf.cell(0, 8, "Talent Acquisition", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    name = _printable(row.get("Name") or "", font)
    pdf.multi_cell(0, 7, f"Dear {name}," if name else "Dear candidate,")
    pdf.ln(3)
    offer_columns = ("Position", "Department", "Start_Date", "Salary")
    if row.get("Status") == "Offer" and all(row.get(column) for column in offer_columns):
        body = (
            f"We are delighted to offer you the position of {row['Position']} in our "
            f"{row['Department']} team, starting on {row['Start_Date']}, with an annual "
            f"salary of {row['Salary']}.\n\nPlease sign and return this letter within "
            "ten working days."
        )
    elif row.get("Status") != "Rejection" or not row.get("Position"):
        body = f"This letter is about your {row.get('Status') or 'request'}."
    else:
        body = (
            f"Thank you for applying for the position of {row['Position']}. After careful "
            "consideration we have decided not to move forward with your application.\n\n"
            "We wish you every success."
        )
    pdf.multi_cell(0, 7, body)
    pdf.ln(10)
    pdf.multi_cell(0, 7, "Kind regards,\nDana Whitfield, Head of Talent Acquisition")
    if number is not None:
        email = _printable((row.get("Email") or "").strip(), font)
        pdf.ln(10)
        pdf.set_font(font, "", 8)
        pdf.multi_cell(0, 5, f"Reference: row {number}" + (f", {email}" if email else ""))
    pdf.output(str(out))


def _bare_file_name(name: str) -> bool:
    """Whether ``name`` names a file right in the folder (not a path, nor the folder itself
    or its parent, ``.`` and ``..``, which a row may hold by mistake)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def main(argv: list[str]) -> int:
    """Write the letters of ``argv``'s CSV into its folder (the example's when none is given,
    without those in MISSING); say how many. A letter already there is kept as it is, unless
    ``--overwrite`` is given: it may have been sent, and a new one of other bytes would be
    another letter."""
    overwrite = "--overwrite" in argv
    argv = [arg for arg in argv if arg != "--overwrite"]
    if len(argv) not in (0, 2):
        usage = "usage: make_letters.py [--overwrite] [RECIPIENTS.csv ATTACHMENTS_DIR]"
        print(usage, file=sys.stderr)
        return 2
    source = Path(argv[0]) if argv else HERE / "recipients.csv"
    out = Path(argv[1]) if argv else HERE / "attachments"
    skipped = set() if argv else MISSING
    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    kept = again = 0
    with source.open("rb") as stream:
        for number, row in read_rows(stream, source=str(source)):
            name = (row.get("Attachment_File") or "").strip()
            if name in skipped or not _bare_file_name(name):
                continue
            if name in written:  # an earlier row's letter, made by this run: not its own
                again += 1
                continue
            if (out / name).exists() and not overwrite:
                kept += 1
                continue
            letter(row, out / name, number)
            written.add(name)
    said = f"{len(written)} letter(s) written into {out}"
    if kept:
        said += f"; {kept} already there kept as they were (--overwrite writes them anew)"
    if again:
        said += (
            f"; {again} row(s) named the file of an earlier row, whose letter it is: not"
            " written again"
        )
    print(said)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
