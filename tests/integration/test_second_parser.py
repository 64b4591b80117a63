"""Every example message parses the same in Python's email package and in fast-mail-parser.

fast-mail-parser wraps a MIME parser written in Rust (the mailparse crate): it shares no code
with Python's email package, so agreeing on parts, file names and decoded text is evidence
that the bytes are right, not that one parser's quirks match the builder's.
"""

from __future__ import annotations

import email
import email.policy
import io
from pathlib import Path
from typing import Any

import fast_mail_parser
import pytest
from click.testing import CliRunner

from mailmatrix.cli.preview_cmd import preview_command
from mailmatrix.cli.validate_cmd import folder_index, load_folder_catalog
from mailmatrix.core.message import build_message, message_bytes
from mailmatrix.core.recipients import validate_recipients
from mailmatrix.core.templates import Rendered

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "offer-letters"
TEMPLATES = REPO / "templates"


def valid_rows() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    with (EXAMPLE / "recipients.csv").open("rb") as stream:
        validate_recipients(
            io.BytesIO(stream.read()),
            source="recipients.csv",
            catalog=load_folder_catalog(TEMPLATES),
            attachments=folder_index(EXAMPLE / "attachments"),
            emit=items.append,
        )
    return items


ROWS = valid_rows()


def python_view(raw: bytes) -> dict[str, Any]:
    """What Python's email package reads from the message."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)

    def tree(part) -> Any:
        if part.is_multipart():
            return [part.get_content_type(), [tree(p) for p in part.iter_parts()]]
        return [part.get_content_type(), part.get_filename()]

    leaves = [p for p in msg.walk() if not p.is_multipart()]
    return {
        "subject": str(msg["Subject"]),
        "from": [(a.display_name, a.addr_spec) for a in msg["From"].addresses],
        "to": [(a.display_name, a.addr_spec) for a in msg["To"].addresses],
        "tree": tree(msg),
        "text": [
            p.get_content()
            for p in leaves
            if p.get_content_type() == "text/plain" and not p.get_filename()
        ],
        "html": [
            p.get_content()
            for p in leaves
            if p.get_content_type() == "text/html" and not p.get_filename()
        ],
        "attachments": [
            (p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
            for p in msg.iter_attachments()
        ],
    }


def rust_view(raw: bytes) -> dict[str, Any]:
    """What fast-mail-parser (Rust) reads from the same bytes."""
    flat = fast_mail_parser.parse_email(raw)
    root = fast_mail_parser.parse_email_tree(raw)

    def tree(part) -> Any:
        if part.children:
            return [part.content_type, [tree(p) for p in part.children]]
        return [part.content_type, part.filename or None]

    return {
        "subject": flat.subject,
        "from": [(flat.from_.display_name, flat.from_.address)],
        "to": [(a.display_name, a.address) for a in flat.to],
        "tree": tree(root),
        "text": list(flat.text_plain),
        "html": list(flat.text_html),
        "attachments": [(a.filename, a.mimetype, bytes(a.content)) for a in flat.attachments],
    }


def normalised(view: dict[str, Any]) -> dict[str, Any]:
    """Line ends as LF: parsers differ in what they hand back, not in the text."""

    def lf(texts: list[str]) -> list[str]:
        return [t.replace("\r\n", "\n") for t in texts]

    return {**view, "text": lf(view["text"]), "html": lf(view["html"])}


def test_the_demo_campaign_has_rows_of_both_sets():
    assert {item["template"] for item in ROWS} == {"offer", "rejection"}
    assert len(ROWS) >= 10


@pytest.mark.parametrize("item", ROWS, ids=lambda item: f"row{item['row']}")
def test_demo_message_reads_the_same_in_both_parsers(item):
    # GIVEN a validated demo row WHEN its message is built as SendBatch builds it
    catalog = load_folder_catalog(TEMPLATES)
    pdf = (EXAMPLE / "attachments" / item["attachment"]).read_bytes()
    raw = message_bytes(
        build_message(
            sender=catalog.sender,
            to_name=item["name"],
            to_email=item["email"],
            rendered=catalog.render(item["template"], item["fields"]),
            attachment=(item["attachment"], pdf),
        )
    )

    # THEN both parsers see the same headers, tree, file names and decoded text
    python, rust = normalised(python_view(raw)), normalised(rust_view(raw))
    assert python == rust
    assert python["tree"] == [
        "multipart/mixed",
        [
            ["multipart/alternative", [["text/plain", None], ["text/html", None]]],
            ["application/pdf", item["attachment"]],
        ],
    ]
    assert python["to"] == [(item["name"], item["email"])]
    assert python["attachments"] == [(item["attachment"], "application/pdf", pdf)]
    assert python["text"][0].startswith(f"Dear {item['name']},\n")


ODD = [
    ("Doe, Jane", "Offer: Data & AI <Lead> — 100% remote", "Zeugnis Zdeňka Šťastná.pdf"),
    ('Sam "The Man" <Admin>', "Ünïcödé ünd ëmöjï 🎉 " * 4, "certificate pat.pdf"),
    ("陈静怡", "Line\r\nBcc: injected@example.com", "履歴書.pdf"),
    ("Seán O'Brien", "x" * 300, 'a;b=c "quoted".pdf'),
    ("Zoë", "Ångström " * 30, "履歴書_" * 20 + "Zoë Ångström.pdf"),
]


@pytest.mark.parametrize(
    ("name", "subject", "filename"),
    ODD,
    ids=["specials", "emoji", "cjk", "tspecials", "long-names"],
)
def test_odd_names_subjects_and_file_names_read_the_same(name, subject, filename):
    rendered = Rendered(
        subject=" ".join(subject.split()),
        html=f"<p>Hello {name.replace('<', '&lt;')}</p>\n",
        text=f"Hello {name}\n" + "Grüße " * 50 + "\n",
    )
    raw = message_bytes(
        build_message(
            sender='Büro Müller, Abteilung "Rechnungen" <billing@example.com>',
            to_name=name,
            to_email="someone@example.com",
            rendered=rendered,
            attachment=(filename, b"%PDF-1.4\n" + bytes(range(256))),
        )
    )
    python, rust = normalised(python_view(raw)), normalised(rust_view(raw))
    assert python == rust
    assert python["subject"] == " ".join(subject.split())
    assert python["attachments"][0][0] == filename


def test_preview_output_reads_the_same_in_both_parsers(tmp_path):
    # GIVEN the demo CSV WHEN `mailmatrix preview --row N` renders the first valid row
    row = ROWS[0]["row"]
    result = CliRunner().invoke(
        preview_command,
        [str(EXAMPLE / "recipients.csv"), "--row", str(row), "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output

    # THEN N.eml and N.html are written, and the .eml parses the same in both parsers
    raw = (tmp_path / f"{row}.eml").read_bytes()
    python, rust = normalised(python_view(raw)), normalised(rust_view(raw))
    assert python == rust
    page = (tmp_path / f"{row}.html").read_text(encoding="utf-8")
    assert page.strip() == rust["html"][0].strip()
    assert f"{row}.eml" in result.output
    assert "  multipart/mixed\n    multipart/alternative\n" in result.output
    assert f"Subject: {python['subject']}\n" in result.output
