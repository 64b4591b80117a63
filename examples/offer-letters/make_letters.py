"""Generate one small PDF letter per candidate of recipients.csv into attachments/.

The PDFs are committed, so the demo needs neither this script nor fpdf2; rerun it after
changing the candidates: `.venv/bin/python examples/offer-letters/make_letters.py`.
Deliberately skips the row named in MISSING so the demo shows a missing attachment.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from fpdf import FPDF

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


def letter(row: dict[str, str], out: Path) -> None:
    """Write the offer or rejection letter of one candidate."""
    pdf = FPDF(format="A4")
    pdf.set_creator("MailMatrix example campaign")
    pdf.set_title(f"{row['Status']} letter")
    font = _font(pdf)
    pdf.add_page()
    pdf.set_font(font, "B", 16)
    pdf.cell(0, 12, "Acme Corporation", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, "", 11)
    pdf.cell(0, 8, "Talent Acquisition", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    name = _printable(row["Name"], font)
    pdf.multi_cell(0, 7, f"Dear {name}," if name else "Dear candidate,")
    pdf.ln(3)
    if row["Status"] == "Offer":
        body = (
            f"We are delighted to offer you the position of {row['Position']} in our "
            f"{row['Department']} team, starting on {row['Start_Date']}, with an annual "
            f"salary of {row['Salary']}.\n\nPlease sign and return this letter within "
            "ten working days."
        )
    else:
        body = (
            f"Thank you for applying for the position of {row['Position']}. After careful "
            "consideration we have decided not to move forward with your application.\n\n"
            "We wish you every success."
        )
    pdf.multi_cell(0, 7, body)
    pdf.ln(10)
    pdf.multi_cell(0, 7, "Kind regards,\nDana Whitfield, Head of Talent Acquisition")
    pdf.output(str(out))


def main() -> int:
    """Generate every letter listed in recipients.csv except those in MISSING."""
    out = HERE / "attachments"
    out.mkdir(exist_ok=True)
    with (HERE / "recipients.csv").open(encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream):
            if row["Attachment_File"] not in MISSING:
                letter(row, out / row["Attachment_File"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
