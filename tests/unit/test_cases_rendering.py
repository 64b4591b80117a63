"""Cases 10, 15, 16 and 17 from ../shared/cases (inputs copied to tests/fixtures/rendering/).

Each case runs through the real catalog and message builder, and every message is read back
with Python's parser and with fast-mail-parser (an independent parser, in Rust).
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
import unicodedata
from pathlib import Path

import fast_mail_parser
import pytest

from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.message import build_message, destinations, message_bytes
from mailmatrix.core.recipients import validate_recipients
from mailmatrix.core.templates import Rendered, load_catalog
from mailmatrix.errors import TemplateError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rendering"
CASE_10 = FIXTURES / "10-display-name-quoting-and-encoding"
CASE_15 = FIXTURES / "15-mime-structure-and-attachment-filename"
CASE_16 = FIXTURES / "16-undefined-template-variable"
CASE_17 = FIXTURES / "17-html-escaping-vs-subject"
SENDER_A = 'Büro Müller, Abteilung "Rechnungen"'
SENDER_B = "Kim's Corner Books"


def rows(case: Path) -> list[dict[str, str]]:
    with (case / "recipients.csv").open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def catalog_of(folder: Path):
    return load_catalog({p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()})


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def header_lines(raw: bytes) -> list[str]:
    """The header block unfolded, one header a line."""
    block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return block.replace("\r\n ", " ").split("\r\n")


def text_of(part) -> str:
    return part.get_content().replace("\r\n", "\n")


def tree(part) -> object:
    if part.is_multipart():
        return (part.get_content_type(), [tree(p) for p in part.iter_parts()])
    return part.get_content_type()


# --- case 10: display names with commas, quotes, brackets, parentheses, non-ASCII -------------

PLAIN = Rendered(subject="Your invoice", html=None, text="Hello\n")
EXPECTED_TO = {
    "jane@example.com": 'To: "Doe, Jane" <jane@example.com>',
    "zoe@example.com": "To: =?utf-8?b?Wm/DqyDDhW5nc3Ryw7Zt?= <zoe@example.com>",
    "chen@example.com": "To: =?utf-8?b?6ZmI6Z2Z5oCh?= <chen@example.com>",
    "sam@example.com": 'To: "Sam \\"The Man\\" <Admin>" <sam@example.com>',
    "pat@example.com": 'To: "Pat (Billing)" <pat@example.com>',
}


@pytest.mark.parametrize("row", rows(CASE_10), ids=lambda r: r["Email"])
@pytest.mark.parametrize("sender_name", [SENDER_A, SENDER_B], ids=["sender-a", "sender-b"])
def test_case10_every_name_is_one_address_with_the_exact_name(row, sender_name):
    # GIVEN a recipient name with specials or non-ASCII, and a sender name likewise
    msg = build_message(
        sender=f'"{sender_name.replace(chr(34), chr(92) + chr(34))}" <billing@example.com>',
        to_name=row["Name"],
        to_email=row["Email"],
        rendered=PLAIN,
    )
    raw = message_bytes(msg)
    parsed = parse(raw)

    # THEN To and From each hold exactly one address, with the names exactly as given
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [
        (row["Name"], row["Email"])
    ]
    assert [(a.display_name, a.addr_spec) for a in parsed["From"].addresses] == [
        (sender_name, "billing@example.com")
    ]
    # AND every header byte is 7-bit, specials quoted, encoded-words for the name only
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()
    assert EXPECTED_TO[row["Email"]] in header_lines(raw)
    # AND the envelope holds only the bare address
    assert destinations(msg) == [row["Email"]]
    # AND the independent parser agrees
    other = fast_mail_parser.parse_email(raw)
    assert [(a.display_name, a.address) for a in other.to] == [(row["Name"], row["Email"])]
    assert (other.from_.display_name, other.from_.address) == (
        sender_name,
        "billing@example.com",
    )


def test_case10_sender_headers_are_quoted_or_encoded():
    for name, line in [
        (SENDER_B, 'From: "Kim\'s Corner Books" <billing@example.com>'),
        (
            SENDER_A,
            "From: =?utf-8?b?QsO8cm8gTcO8bGxlciwgQWJ0ZWlsdW5nICJSZWNobnVuZ2VuIg==?= "
            "<billing@example.com>",
        ),
    ]:
        # the sender as an operator would write it in the manifest, unquoted
        sender = f"{name} <billing@example.com>"
        raw = message_bytes(
            build_message(sender=sender, to_name="", to_email="a@example.com", rendered=PLAIN)
        )
        assert line in header_lines(raw)
        assert "To: a@example.com" in header_lines(raw)


# --- case 15: HTML + text + PDF, non-ASCII attachment names -----------------------------------


@pytest.mark.parametrize("row", rows(CASE_15), ids=lambda r: r["Email"])
def test_case15_mime_tree_and_attachment_names(row):
    catalog = catalog_of(CASE_15 / "templates")
    pdf = (CASE_15 / "attachments" / row["Attachment_File"]).read_bytes()
    rendered = catalog.render("default", row)
    raw = message_bytes(
        build_message(
            sender="Certificates <certs@example.com>",
            to_name=row["Name"],
            to_email=row["Email"],
            rendered=rendered,
            attachment=(row["Attachment_File"], pdf),
        )
    )
    parsed = parse(raw)

    # 1. mixed -> [alternative -> [text, html], pdf]; text before HTML
    assert tree(parsed) == (
        "multipart/mixed",
        [("multipart/alternative", ["text/plain", "text/html"]), "application/pdf"],
    )
    text, html = parsed.get_payload()[0].get_payload()
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    # 2. application/pdf in base64, as an attachment
    attachment = parsed.get_payload()[1]
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_content() == pdf
    # 3. ASCII names quoted, non-ASCII names in RFC 2231 form, never an encoded-word
    unfolded = raw.decode("ascii").replace("\r\n ", " ").split("\r\n")
    disposition = [h for h in unfolded if h.startswith("Content-Disposition")]
    expected = {
        "certificate pat.pdf": 'Content-Disposition: attachment; filename="certificate pat.pdf"',
        "Diplom_Zdeňka Šťastná.pdf": (
            "Content-Disposition: attachment; "
            "filename*=utf-8''Diplom_Zde%C5%88ka%20%C5%A0%C5%A5astn%C3%A1.pdf"
        ),
    }
    assert disposition == [expected[row["Attachment_File"]]]
    assert "=?" not in disposition[0]
    assert raw.isascii()
    # 4. the name reads back exactly (NFC), in both parsers
    assert attachment.get_filename() == unicodedata.normalize("NFC", row["Attachment_File"])
    other = fast_mail_parser.parse_email(raw)
    assert [(a.filename, a.mimetype, a.content) for a in other.attachments] == [
        (row["Attachment_File"], "application/pdf", pdf)
    ]
    assert text_of(text) == f"Dear {row['Name']},\n\nplease find your certificate attached.\n"
    assert other.text_plain == [text.get_content()]


def test_case15_nfd_file_name_is_sent_in_nfc():
    nfd = unicodedata.normalize("NFD", "Diplom_Zdeňka Šťastná.pdf")
    raw = message_bytes(
        build_message(
            sender="certs@example.com",
            to_name="Z",
            to_email="z@example.com",
            rendered=PLAIN,
            attachment=(unicodedata.normalize("NFC", nfd), b"%PDF-1.4"),
        )
    )
    assert next(parse(raw).iter_attachments()).get_filename() == "Diplom_Zdeňka Šťastná.pdf"


# --- case 16: a template uses a column the CSV does not have ---------------------------------


def test_case16_unknown_variables_are_listed_with_their_files():
    catalog = catalog_of(CASE_16 / "templates")
    columns = list(rows(CASE_16)[0])
    assert catalog.check_columns(columns) == [
        "body.txt: FirstName; body.html: Balance — not CSV columns "
        "(available: Email, Name, Status, Attachment_File) "
        "(the templates use 'FirstName': did you mean the column 'Name'?)"
    ]


def test_case16_validation_fails_before_any_row_is_emitted():
    # GIVEN the broken templates WHEN intake validates the file THEN it stops at the header
    emitted: list[dict] = []
    index = AttachmentIndex({name: 1000 for name in ("alice.pdf", "bob.pdf", "carol.pdf")})
    with pytest.raises(TemplateError) as caught:
        validate_recipients(
            io.BytesIO((CASE_16 / "recipients.csv").read_bytes()),
            source="incoming/statements.csv",
            catalog=catalog_of(CASE_16 / "templates"),
            attachments=index,
            emit=emitted.append,
        )
    assert emitted == []
    assert "body.txt: FirstName; body.html: Balance" in caught.value.message


def test_case16_fixed_templates_render_and_an_empty_name_is_never_dear_comma():
    catalog = catalog_of(CASE_16 / "templates_fixed")
    assert catalog.check_columns(list(rows(CASE_16)[0])) == []
    assert catalog.required_columns("default") == {"Name"}
    alice, bob, carol = rows(CASE_16)

    for row in (alice, bob):
        rendered = catalog.render("default", row)
        assert rendered.subject == f"Statement for {row['Name']}"
        assert rendered.text.startswith(f"Dear {row['Name']},\n")

    # carol's Name is empty: the row fails with a reason instead of "Dear ,"
    with pytest.raises(TemplateError) as caught:
        catalog.render("default", carol)
    assert caught.value.message == (
        "subject.txt: render: Name is empty in this row but the template prints it"
    )


def test_case16_intake_rejects_the_row_with_the_empty_name():
    emitted: list[dict] = []
    index = AttachmentIndex({name: 1000 for name in ("alice.pdf", "bob.pdf", "carol.pdf")})
    report = validate_recipients(
        io.BytesIO((CASE_16 / "recipients.csv").read_bytes()),
        source="incoming/statements.csv",
        catalog=catalog_of(CASE_16 / "templates_fixed"),
        attachments=index,
        emit=emitted.append,
    )
    assert [item["email"] for item in emitted] == ["alice@example.com", "bob@example.com"]
    assert [(r["row"], r["column"]) for r in report.rejected] == [(4, "Name")]


# --- case 17: HTML escaped, Subject and text not -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "html_name"),
    [
        ("Seán O'Brien", "Seán O&#39;Brien"),
        ("Ben & Jo <Studio>", "Ben &amp; Jo &lt;Studio&gt;"),
        ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ],
    ids=["apostrophe", "ampersand-brackets", "html-tag"],
)
def test_case17_html_is_escaped_subject_and_text_are_not(name, html_name):
    row = next(r for r in rows(CASE_17) if r["Name"] == name)
    rendered = catalog_of(CASE_17 / "templates").render("default", row)
    raw = message_bytes(
        build_message(
            sender="Statements <s@example.com>",
            to_name=row["Name"],
            to_email=row["Email"],
            rendered=rendered,
        )
    )
    parsed = parse(raw)

    html = text_of(parsed.get_body(("html",)))
    assert f"<p>Hello {html_name},</p>" in html
    assert "<img" not in html
    assert text_of(parsed.get_body(("plain",))).startswith(f"Hello {name},\n")
    assert parsed["Subject"] == f"Statement for {name}"
    assert not re.search(r"&(amp|lt|gt|#39|#x27|apos);", parsed["Subject"])

    other = fast_mail_parser.parse_email(raw)
    assert other.subject == f"Statement for {name}"
    assert other.text_html == [parsed.get_body(("html",)).get_content()]
