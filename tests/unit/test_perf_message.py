"""encode_message writes exactly the bytes of message_bytes(build_message(...)).

The fast path skips the EmailMessage tree; these tests hold it to the email package's output
byte for byte, with the random parts (boundaries, Message-ID) drawn the same way in both.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmatrix.core import message
from mailmatrix.core.message import build_message, destinations, encode_message, message_bytes
from mailmatrix.core.templates import Rendered
from mailmatrix.errors import PermanentSendError

DATE = datetime(2026, 12, 4, 16, 5, 47, tzinfo=UTC)
HTML = '<!DOCTYPE html><p style="color: #243b53">Dear Zoë, a = b &amp; 100% sure</p>\n'
TEXT = "Dear Zoë,\n\nThank you.\n  Annual salary: €68,000\n" + "x" * 120 + "\n.\nFrom here\n"


def both(monkeypatch: pytest.MonkeyPatch, seed: int = 1, **kwargs):
    """(slow bytes, slow destinations), (fast bytes, fast destinations) with equal randomness."""
    fixed = uuid.UUID(int=seed)
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    kwargs.setdefault("date", DATE)
    random.seed(seed)
    message = build_message(**kwargs)
    slow = (message_bytes(message), destinations(message))
    random.seed(seed)
    fast = encode_message(**kwargs)
    return slow, fast


BASE = {
    "sender": "Acme Talent <talent@example.com>",
    "to_name": "Zoë Ångström",
    "to_email": "zoe@example.com",
}


@pytest.mark.parametrize("html", [None, HTML, ""])
@pytest.mark.parametrize(
    "attachment",
    [
        None,
        ("letter-0000001.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 200),
        ("offer letter.pdf", b""),
        ("a.pdf", b"x" * 57),
        ("notes.unknownext", b"\x00\x01"),
        ("archive.tar.gz", b"gz"),
        ("Lettre d'offre – Zoë.pdf", b"%PDF"),
        ('quote"semi;colon.pdf', b"%PDF"),
        ("two  spaces.pdf", b"%PDF"),
        ("trailing .pdf ", b"%PDF"),
        ("very-long-" + "n" * 80 + ".docx", b"%PDF"),
        ("名前の長いファイル名前の長いファイル名前の長いファイル.pdf", b"%PDF"),
    ],
)
def test_every_shape_matches_the_email_package(monkeypatch, html, attachment):
    # GIVEN a message with or without HTML and an attachment of any name
    rendered = Rendered(
        subject="Your offer from Acme Corporation: Data Engineer", html=html, text=TEXT
    )
    # WHEN both paths build it
    slow, fast = both(monkeypatch, rendered=rendered, attachment=attachment, **BASE)
    # THEN the bytes and the envelope are identical
    assert fast == slow


@pytest.mark.parametrize(
    "extra",
    [
        {"cc": ["Ben & Jo <ben@example.com>", "c@example.org"], "bcc": ["audit@example.com"]},
        {"cc": ["ZOE@example.com"], "bcc": ["zoe@EXAMPLE.com", "x@example.com"]},
        {"reply_to": '"Talent, Team" <reply@example.com>'},
        {"unsubscribe": "https://example.com/u?id=1"},
        {"unsubscribe": ["mailto:u@example.com", "https://example.com/u"]},
        {"headers": {"X-Campaign": "c-1234", "X-Long": "word " * 40}},
        {"message_id_domain": "bücher.example"},
        {"to_name": 'Sean "Junior" O\'Brien, Jr.'},
        {"to_name": "陈静" * 30},
        {"to_email": "user@bücher.example"},
        {"sender": "talent@example.com"},
    ],
)
def test_headers_match_the_email_package(monkeypatch, extra):
    rendered = Rendered(subject="Hello", html=HTML, text="Hi\n")
    kwargs = {**BASE, **extra}
    slow, fast = both(monkeypatch, rendered=rendered, attachment=("a.pdf", b"1"), **kwargs)
    assert fast == slow


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "  leading and trailing  ",
        "Double  space",
        "A long ASCII subject " * 8,
        "Ünïcödé " * 20,
        "=?utf-8?q?encoded_looking?= text",
        "tab\there and\r\nnewline",
        "x" * 200,
    ],
)
def test_subjects_match_the_email_package(monkeypatch, subject):
    rendered = Rendered(subject=subject, html=None, text="Body\r\nwith CRLF\rand CR\n")
    slow, fast = both(monkeypatch, rendered=rendered, **BASE)
    assert fast == slow


def test_errors_are_the_same(monkeypatch):
    # GIVEN an invalid recipient and a bad header name
    rendered = Rendered(subject="s", html=None, text="t")
    for kwargs in (
        {**BASE, "to_email": "not-an-address"},
        {**BASE, "headers": {"Bad Name": "x"}},
        {**BASE, "bcc": ["nope"]},
    ):
        # WHEN both paths try to build the message THEN both refuse with the same message
        with pytest.raises(PermanentSendError) as slow:
            build_message(rendered=rendered, **kwargs)
        with pytest.raises(PermanentSendError) as fast:
            encode_message(rendered=rendered, **kwargs)
        assert str(fast.value) == str(slow.value)


text_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(max_size=60),
    subject=text_values,
    text=text_values,
    html=st.none() | text_values,
    filename=st.none() | st.text(min_size=1, max_size=80),
    data=st.binary(max_size=300),
)
def test_any_values_match_the_email_package(monkeypatch, name, subject, text, html, filename, data):
    rendered = Rendered(subject=subject, html=html, text=text)
    attachment = None if filename is None else (filename, data)
    kwargs = {**BASE, "to_name": name, "rendered": rendered, "attachment": attachment}
    try:
        slow, fast = both(monkeypatch, **kwargs)
    except PermanentSendError:
        with pytest.raises(PermanentSendError):
            encode_message(**kwargs, date=DATE)
        return
    assert fast == slow


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n\n",
        "line with trailing space \nand tab\t\n" * 3,
        "a=b " * 700 + "\n" + "ü" * 1500,
        "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 separators that are not line ends\r\n",
        "no final newline",
    ],
)
def test_bodies_match_the_email_package(monkeypatch, text):
    # GIVEN text and HTML bodies with long lines, odd separators and blanks at line ends
    rendered = Rendered(subject="s", html=text, text=text)
    # WHEN both paths encode them THEN the bytes are identical (each encoded twice: cache)
    for _ in range(2):
        slow, fast = both(monkeypatch, rendered=rendered, attachment=("a.pdf", b"1"), **BASE)
        assert fast == slow


@pytest.mark.parametrize(
    "text",
    ["a" * 300, "é" * 200, "a= " * 100, "x" * 75 + "é\n" + "y" * 76 + "\t\n", "€ " * 120],
)
def test_quoted_printable_lines_are_76_characters_at_most(monkeypatch, text):
    # GIVEN bodies with long lines of characters that quoted-printable escapes
    rendered = Rendered(subject="s", html=text, text=text)

    # WHEN both paths encode them
    slow, fast = both(monkeypatch, rendered=rendered, attachment=None, **BASE)

    # THEN they agree, and no line of the message is over RFC 2045's 76 characters (the
    # email package's own default, the policy's 78, is the headers' limit)
    assert fast == slow
    assert max(len(line) for line in fast[0].split(b"\r\n")) <= 76


def test_bodies_match_the_email_package_when_the_line_cache_fills(monkeypatch):
    # GIVEN a cache of encoded lines kept small, and bodies whose lines differ each time
    monkeypatch.setattr(message, "_QP_LINES_KEPT", 5)
    monkeypatch.setattr(message, "_QP_LINES", {})
    shared = "Dear Zoë, a = b \n"
    for n in range(12):
        text = shared + "".join(f"row {n} line {i} é\n" for i in range(3))
        rendered = Rendered(subject="s", html=None, text=text)
        # WHEN both paths encode them THEN the bytes are identical, and the cache stays small
        slow, fast = both(monkeypatch, rendered=rendered, attachment=None, **BASE)
        assert fast == slow
        assert len(message._QP_LINES) <= 5


@pytest.mark.parametrize(
    "size",
    [0, 1, 2, 3, 56, 57, 58, 57 * 63, 57 * 64 - 1, 57 * 64, 57 * 64 + 1, 57 * 129 + 5, 51_200],
)
def test_attachment_base64_lines_match_the_email_package(monkeypatch, size):
    # the struct-cut lines: around a line, a block of 64 lines, and a typical 50 KB PDF
    data = random.Random(size).randbytes(size)
    rendered = Rendered(subject="Letter", text="See attached.\n", html=None)
    slow, fast = both(monkeypatch, rendered=rendered, attachment=("letter.pdf", data), **BASE)
    assert fast == slow
    assert len(fast[0]) > len(data) * 4 // 3


@pytest.mark.parametrize(
    "filename",
    [
        "letter.pdf",
        "LETTER.PDF",
        "a.b.c.pdf",
        "archive.tar.gz",
        "x.tgz",
        "a..tar.gz",
        ".pdf",
        "noext",
        "trailing.",
        "two..dots.docx",
        "data.json.bz2",
        "name.unknownext",
        "a.b.c",
        "..pdf",
        "..tar.gz",
        "a.b.tgz",
        "x.svgz",
        "a:b.pdf",
        "data:x.pdf",
        "sub/dir.d/file",
        "Letter-0000001.PDF",
    ],
)
def test_content_types_are_the_mimetypes_guess(filename):
    import mimetypes

    from mailmatrix.core.message import content_type_of

    kind, encoding = mimetypes.guess_type(filename, strict=False)
    assert content_type_of(filename) == (
        kind if kind and not encoding else "application/octet-stream"
    )


def test_the_date_header_is_now_when_no_date_is_given(monkeypatch):
    import email.utils
    import time

    from mailmatrix.core.message import encode_message

    rendered = Rendered(subject="Letter", text="Hello.\n", html=None)
    for moment in (1_796_400_000.2, 1_796_400_000.9, 1_796_400_001.1):
        monkeypatch.setattr(time, "time", lambda moment=moment: moment)
        raw = encode_message(**BASE, rendered=rendered)[0].decode("ascii")
        date = next(line for line in raw.split("\r\n") if line.startswith("Date: "))
        assert email.utils.parsedate_to_datetime(date[6:]).timestamp() == int(moment)
