"""MIME building: tree, headers, encodings, envelope, and what CSV data cannot do to headers."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from urllib.parse import unquote

import fast_mail_parser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmatrix.core.message import (
    build_message,
    content_type_of,
    destinations,
    envelope_address,
    message_bytes,
)
from mailmatrix.core.templates import Rendered
from mailmatrix.errors import PermanentSendError

RENDERED = Rendered(subject="Your offer", html="<p>Dear Amy,</p>", text="Dear Amy,\n")
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def build(**overrides):
    arguments = {
        "sender": "Acme Talent <talent@example.com>",
        "to_name": "Amy Example",
        "to_email": "amy@example.com",
        "rendered": RENDERED,
        "attachment": ("letter.pdf", PDF),
        "message_id_domain": "example.com",
    }
    arguments.update(overrides)
    return build_message(**arguments)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def content(part) -> str:
    """Decoded text of a part, with the wire's CRLF line ends as LF."""
    return part.get_content().replace("\r\n", "\n")


def header_block(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii")


def tree(part) -> object:
    if part.is_multipart():
        return (part.get_content_type(), [tree(p) for p in part.iter_parts()])
    return part.get_content_type()


def test_full_message_has_the_required_headers_and_mime_tree():
    # GIVEN a rendered offer with a PDF WHEN the message is built and serialised
    date = datetime(2027, 1, 11, 9, 30, tzinfo=UTC)
    raw = message_bytes(build(date=date))

    # THEN the headers are exactly the expected ones, in order, with CRLF line ends
    lines = header_block(raw).split("\r\n")
    names = [line.split(":", 1)[0] for line in lines if not line.startswith(" ")]
    assert names == ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
    assert lines[:4] == [
        "From: Acme Talent <talent@example.com>",
        "To: Amy Example <amy@example.com>",
        "Subject: Your offer",
        "Date: Mon, 11 Jan 2027 09:30:00 +0000",
    ]
    assert re.fullmatch(r"Message-ID: <[0-9a-f]{32}@example\.com>", lines[4])
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.count(b"MIME-Version") == 1  # only on the top part

    parsed = parse(raw)
    assert tree(parsed) == (
        "multipart/mixed",
        [("multipart/alternative", ["text/plain", "text/html"]), "application/pdf"],
    )
    text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert content(text) == "Dear Amy,\n"
    assert content(html) == "<p>Dear Amy,</p>\n"
    pdf = next(parsed.iter_attachments())
    assert pdf["Content-Transfer-Encoding"] == "base64"
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_filename() == "letter.pdf"
    assert pdf.get_content() == PDF


def test_without_attachment_the_alternative_part_is_the_top():
    parsed = parse(message_bytes(build(attachment=None)))
    assert tree(parsed) == ("multipart/alternative", ["text/plain", "text/html"])


def test_without_html_the_text_part_stands_alone_or_with_the_attachment():
    text_only = Rendered(subject="S", html=None, text="Hi\n")
    assert tree(parse(message_bytes(build(rendered=text_only, attachment=None)))) == "text/plain"
    assert tree(parse(message_bytes(build(rendered=text_only)))) == (
        "multipart/mixed",
        ["text/plain", "application/pdf"],
    )


def test_non_ascii_text_is_quoted_printable_with_short_lines():
    long_line = " ".join(["Grüße"] * 400)
    rendered = Rendered(subject="Grüße", html=f"<p>{long_line}</p>", text=long_line + "\n")
    raw = message_bytes(build(rendered=rendered))
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = parse(raw)
    assert content(parsed.get_body(("plain",))) == long_line + "\n"
    assert parsed["Subject"] == "Grüße"


def test_cc_reply_to_and_bcc_envelope():
    msg = build(
        cc=["Doe, Jane <jane@example.com>", "kim@example.com"],
        bcc=["audit@example.com", "AMY@example.com"],
        reply_to="Hiring Team <hiring@example.com>",
    )
    raw = message_bytes(msg)
    headers = header_block(raw)
    assert 'Cc: "Doe, Jane" <jane@example.com>, kim@example.com' in headers
    assert "Reply-To: Hiring Team <hiring@example.com>" in headers
    assert "audit@example.com" not in raw.decode("ascii")
    assert "Bcc" not in headers
    # AMY@ is the To address in another case: one envelope recipient, not two
    assert destinations(msg) == [
        "amy@example.com",
        "jane@example.com",
        "kim@example.com",
        "audit@example.com",
    ]


def test_unsubscribe_headers_follow_rfc_8058():
    headers = header_block(
        message_bytes(build(unsubscribe=["https://example.com/u?c=1", "mailto:u@example.com"]))
    )
    assert "List-Unsubscribe: <https://example.com/u?c=1>, <mailto:u@example.com>" in headers
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in headers

    mailto_only = header_block(message_bytes(build(unsubscribe="mailto:u@example.com")))
    assert "List-Unsubscribe: <mailto:u@example.com>" in mailto_only
    assert "List-Unsubscribe-Post" not in mailto_only  # one click needs an https URI

    with pytest.raises(PermanentSendError, match="must be an ASCII mailto: or https: URI"):
        build(unsubscribe="http://example.com/u")


@pytest.mark.parametrize(
    "name",
    [
        "Amy\r\nBcc: victim@example.com",
        "Amy\nSubject: free money",
        "Amy\rX-Injected: 1",
        "Amy\u2028Bcc: victim@example.com",
        "Amy\x00\x0bBcc: victim@example.com",
    ],
    ids=["crlf", "lf", "cr", "line-separator", "nul-vt"],
)
def test_control_characters_in_names_cannot_add_headers(name):
    rendered = Rendered(subject="Offer for " + name, html=None, text="x\n")
    raw = message_bytes(build(to_name=name, rendered=rendered, cc=[f"{name} <c@example.com>"]))
    parsed = parse(raw)
    header_names = [n.lower() for n in parsed]
    assert "bcc" not in header_names and "x-injected" not in header_names
    assert header_names.count("subject") == 1
    assert len(parsed["To"].addresses) == 1
    assert parsed["To"].addresses[0].addr_spec == "amy@example.com"
    assert destinations(build(to_name=name)) == ["amy@example.com"]


def test_control_characters_in_extra_headers_and_names_of_headers():
    raw = message_bytes(build(headers={"X-Campaign": "c-1\r\nBcc: victim@example.com"}))
    assert "X-Campaign: c-1 Bcc: victim@example.com" in header_block(raw)
    with pytest.raises(PermanentSendError, match="not a valid field name"):
        build(headers={"X-Bad Name": "1"})


def test_idn_domain_goes_as_punycode_and_non_ascii_local_part_is_refused():
    msg = build(to_email="anna@bücher.example", to_name="Anna")
    assert "To: Anna <anna@xn--bcher-kva.example>" in header_block(message_bytes(msg))
    assert destinations(msg) == ["anna@xn--bcher-kva.example"]
    with pytest.raises(PermanentSendError, match="non-ASCII local part"):
        build(to_email="jörg@example.com")
    with pytest.raises(PermanentSendError, match="not an email address"):
        build(to_email="no-at-sign")


def test_many_cc_addresses_are_folded_between_addresses():
    cc = [f"Person Number {i} <person{i}@example.com>" for i in range(12)]
    raw = message_bytes(build(cc=cc))
    cc_lines = header_block(raw).split("Cc:", 1)[1].split("\r\nSubject:", 1)[0].split("\r\n")
    assert len(cc_lines) > 1
    assert all(len(line) <= 78 for line in cc_lines)
    assert [a.addr_spec for a in parse(raw)["Cc"].addresses] == [
        f"person{i}@example.com" for i in range(12)
    ]


def test_long_non_ascii_display_name_uses_several_encoded_words():
    name = " ".join(["Zoë Ångström-Østergaard"] * 6)
    raw = message_bytes(build(to_name=name))
    to_lines = header_block(raw).split("To:", 1)[1].split("\r\nSubject:", 1)[0]
    words = re.findall(r"=\?utf-8\?b\?[^?]*\?=", to_lines)
    assert len(words) > 1 and all(len(word) <= 75 for word in words)
    # RFC 2047 decoders drop the blank between encoded-words (the split is after a space)
    decoded = str(make_header(decode_header(to_lines.replace("\r\n", "").strip())))
    assert decoded == f"{name} <amy@example.com>"
    # Python's address parser keeps that blank: a doubled space, never a split word
    assert " ".join(parse(raw)["To"].addresses[0].display_name.split()) == name


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("letter.pdf", "application/pdf"),
        ("photo.JPG", "image/jpeg"),
        ("notes.txt", "text/plain"),
        ("archive.tar.gz", "application/octet-stream"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_attachment_content_type_from_the_name(filename, expected):
    assert content_type_of(filename) == expected


def test_envelope_address_strips_the_display_name():
    assert envelope_address('"Doe, Jane" <jane@Example.COM>', where="t") == "jane@example.com"
    assert envelope_address("zoe@bücher.example", where="t") == "zoe@xn--bcher-kva.example"


def test_message_ids_are_unique():
    ids = {build()["Message-ID"] for _ in range(200)}
    assert len(ids) == 200


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("letter.pdf", ["Content-Disposition: attachment;", ' filename="letter.pdf"']),
        (
            'a;b="c".pdf',
            ["Content-Disposition: attachment;", " filename*=utf-8''a%3Bb%3D%22c%22.pdf"],
        ),
    ],
    ids=["plain", "tspecials"],
)
def test_attachment_names_are_quoted_or_rfc2231_encoded(filename, expected):
    raw = message_bytes(build(attachment=(filename, PDF)))
    lines = raw.decode("ascii").split("\r\n")
    start = lines.index("Content-Disposition: attachment;")
    assert lines[start : start + len(expected)] == expected
    assert next(parse(raw).iter_attachments()).get_filename() == filename


def test_long_non_ascii_attachment_name_is_continued_in_whole_characters():
    filename = "Ångström " * 8 + ".pdf"
    raw = message_bytes(build(attachment=(filename, PDF)))
    lines = raw.decode("ascii").split("\r\n")
    start = lines.index("Content-Disposition: attachment;")
    pieces = [line for line in lines[start + 1 :] if line.startswith(" filename*")]
    assert [p.split("=", 1)[0] for p in pieces] == [
        f" filename*{n}*" for n in range(len(pieces))
    ] and len(pieces) > 1
    assert all(len(line) <= 78 for line in pieces)
    values = [p.split("=", 1)[1].removeprefix("utf-8''").rstrip(";") for p in pieces]
    assert all(unquote(v, errors="strict") for v in values)  # each piece decodes alone
    assert "".join(unquote(v) for v in values) == filename
    assert next(parse(raw).iter_attachments()).get_filename() == filename


def test_non_ascii_subject_is_whole_encoded_words_keeping_every_space():
    subject = " ".join(["Ünïcödé ünd ëmöjï 🎉"] * 4)
    raw = message_bytes(build(rendered=Rendered(subject=subject, html=None, text="x\n")))
    block = header_block(raw)
    subject_lines = block.split("Subject:", 1)[1].split("\r\nDate:", 1)[0].split("\r\n")
    assert all(len(line) <= 78 for line in subject_lines)
    assert all(re.fullmatch(r" =\?utf-8\?b\?[A-Za-z0-9+/=]+\?=", line) for line in subject_lines)
    assert parse(raw)["Subject"] == subject


_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_names, subject=_names.filter(lambda s: s.strip()), filename=_names)
def test_any_name_subject_and_file_name_survive_both_parsers(name, subject, filename):
    # GIVEN any text at all WHEN it becomes display name, subject and attachment name
    filename = (" ".join(_CONTROLS.sub(" ", filename).split()) or "letter") + ".pdf"
    raw = message_bytes(
        build(
            to_name=name,
            rendered=Rendered(subject=subject, html="<p>x</p>", text="x\n"),
            attachment=(filename, PDF),
        )
    )

    # THEN the headers are 7-bit, short enough, and there is exactly one To address
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    parsed = parse(raw)
    expected_name = " ".join(_CONTROLS.sub(" ", name).split())
    assert [a.addr_spec for a in parsed["To"].addresses] == ["amy@example.com"]
    # Python's address parser keeps the blank between two encoded-words (RFC 2047 says to
    # drop it), so it may show an extra space where a long name was split; nothing else
    python_name = parsed["To"].addresses[0].display_name
    assert "".join(python_name.split()) == "".join(expected_name.split())
    # AND the independent parser reads the exact name, subject and file name back
    other = fast_mail_parser.parse_email(raw)
    assert [(a.display_name or "", a.address) for a in other.to] == [
        (expected_name, "amy@example.com")
    ]
    assert other.subject.strip() == _CONTROLS.sub(" ", subject).strip()
    assert [a.filename for a in other.attachments] == [filename]
    assert next(parsed.iter_attachments()).get_filename() == filename


@pytest.mark.parametrize("build", [build_message, "encode"], ids=["build", "encode"])
def test_text_shaped_like_an_encoded_word_stays_literal(build):
    # A CSV value "=?utf-8?q?Bcc=3A_x?=" must read back as itself, not as "Bcc: x".
    literal = "=?utf-8?q?Bcc=3A_x?="
    rendered = Rendered(subject=f"Hi {literal}", html="<p>x</p>", text="x")
    arguments = dict(
        sender="A <a@example.com>",
        to_name=literal,
        to_email="b@example.com",
        rendered=rendered,
        attachment=None,
    )
    if build == "encode":
        from mailmatrix.core.message import encode_message

        raw, _ = encode_message(**arguments)
    else:
        raw = message_bytes(build_message(**arguments))

    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["To"].addresses[0].display_name == literal
    assert parsed["Subject"] == f"Hi {literal}"
    assert b"Bcc: x" not in raw
