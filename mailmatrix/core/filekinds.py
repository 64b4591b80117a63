"""What a file is by its first bytes, for the messages that say a file is not what it should be:
a recipients file that is a workbook, an attachment named .pdf that is a Word document."""

from __future__ import annotations

_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document (.doc, .xls)"),
    (b"{\\rtf", "an RTF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
)
_ZIP = b"PK\x03\x04"
# The parts an Office file's zip names near its start, and what they make it.
_ZIP_PARTS = (
    (b"word/", "a Word document (.docx, a PK zip)"),
    (b"xl/", "an Excel workbook (.xlsx, a PK zip)"),
    (b"ppt/", "a PowerPoint presentation (.pptx, a PK zip)"),
    (b"[Content_Types].xml", "an Office document (.docx, .xlsx, a PK zip)"),
)


def file_kind(head: bytes) -> str | None:
    """What a file starting with ``head`` is ("a PNG image"), or None when its first bytes do
    not say. A zip (Office files are zips) is told apart by the part names in ``head``."""
    if head.startswith(_ZIP):
        kind = next((kind for part, kind in _ZIP_PARTS if part in head), None)
        return kind or "a ZIP archive (PK zip), or an Office document (.docx, .xlsx)"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)
