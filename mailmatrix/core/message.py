"""MIME building: mixed(alternative(text, html), attachment), with headers every client reads.

The tree is ``multipart/mixed`` -> [``multipart/alternative`` -> [text/plain, text/html],
the attachment]; without an attachment the alternative part is the top; without HTML the
text part stands alone. Text and HTML go quoted-printable (7-bit, lines of 76 characters at
most, as RFC 2045 asks). Every header is 7-bit ASCII: non-ASCII display names and subjects as
RFC 2047 encoded-words, non-ASCII file names as RFC 2231 parameters (and, for clients that
read no RFC 2231, as the attachment's Content-Type name in encoded-words), domains as IDNA
(Punycode).

Display names are quoted unless they are only ASCII letters, digits and spaces: RFC 5322
allows some specials bare (an apostrophe), but some receivers (Yahoo) refuse them.
CSV values cannot add headers: CR, LF and other control characters in any value that goes
into a header are replaced by a space (and runs of blanks in display names by one).
"""

from __future__ import annotations

import base64
import functools
import itertools
import mimetypes
import os
import random
import re
import struct
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email import quoprimime
from email import utils as email_utils
from email.headerregistry import (
    Address,
    ContentDispositionHeader,
    ContentTypeHeader,
    HeaderRegistry,
    UniqueAddressHeader,
    UniqueUnstructuredHeader,
    UnstructuredHeader,
)
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import idna
import pybase64

from mailmatrix.core.templates import Rendered
from mailmatrix.errors import PermanentSendError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_BARE_PHRASE = re.compile(r"^[A-Za-z0-9 ]+$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_ADDRESS_HEADERS = ("from", "to", "cc", "reply-to", "sender")
# An encoded-word is at most 75 characters (RFC 2047 section 2); 45 bytes of UTF-8 make
# 60 characters of base64, plus "=?utf-8?b?" and "?=".
_EW_BYTES = 45
_MAX_LINE = 78
# Quoted-printable lines, their soft line break included: RFC 2045 6.7 (5) allows 76 (the email
# package takes the policy's max_line_length, 78, the headers' length).
_QP_LINE = 76
_PLAIN_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
_PARAMETER_CHUNK = 54  # " filename*0*=utf-8''" + 54 + ";" stays under 78 characters


class _QuotingAddressHeader(UniqueAddressHeader):
    """An address header that writes display names our way (see the module docstring)."""

    name: str  # set by BaseHeader, which the registry mixes in

    def fold(self, *, policy: Any) -> str:
        """Render ``Name: addr, addr`` folded between words, ending in the policy's linesep."""
        tokens: list[str] = []
        for group in self.groups:
            for index, address in enumerate(group.addresses):
                words = format_address(address).split(" ")
                if index < len(group.addresses) - 1 or group is not self.groups[-1]:
                    words[-1] += ","
                tokens.extend(words)
        return _fold_tokens(f"{self.name}:", tokens, policy.linesep)


class _EncodedSubjectHeader(UniqueUnstructuredHeader):
    """A Subject in whole encoded-words when it is not ASCII.

    Python's own folding can lose the space between two encoded-words of a long subject
    (both Python's and an independent parser then read "ÜnïcödéÜnd"); our words keep every
    space inside an encoded-word.
    """

    name: str  # set by BaseHeader, which the registry mixes in

    def fold(self, *, policy: Any) -> str:
        """ASCII subjects fold as usual; others become encoded-words split after spaces."""
        if str(self).isascii() and "=?" not in str(self):
            return super().fold(policy=policy)  # type: ignore[misc]
        return _fold_tokens(f"{self.name}:", _encoded_words(str(self)), policy.linesep)


class _FilenameDispositionHeader(ContentDispositionHeader):
    """Content-Disposition whose file name survives every parser.

    Plain names (letters, digits, spaces and ``._-+``) are quoted; any other name goes in
    RFC 2231 form (``filename*=utf-8''...``), continued over several lines when long, so
    characters such as ``;`` or ``"`` are percent-encoded instead of quoted, which some
    parsers split on.
    """

    name: str  # set by BaseHeader, which the registry mixes in

    def fold(self, *, policy: Any) -> str:
        """Render the disposition and its file name as described above."""
        filename = self.params.get("filename")
        if filename is None:
            return super().fold(policy=policy)  # type: ignore[misc]
        head = f"{self.name}: {self.content_disposition};"
        if _plain_filename(filename):
            return f'{head}{policy.linesep} filename="{filename}"{policy.linesep}'
        pieces = _percent_pieces(filename)
        if len(pieces) == 1:
            lines = [f"filename*=utf-8''{pieces[0]}"]
        else:
            lines = [f"filename*0*=utf-8''{pieces[0]};"]
            lines += [f"filename*{n}*={piece};" for n, piece in enumerate(pieces[1:], start=1)]
            lines[-1] = lines[-1].rstrip(";")
        return head + "".join(f"{policy.linesep} {line}" for line in lines) + policy.linesep


class _NamedContentTypeHeader(ContentTypeHeader):
    """Content-Type whose ``name`` (an attachment's, set only for a file name that is not
    plain) is RFC 2047 encoded-words in quotes: the form clients that read no RFC 2231 show
    (its ``filename*`` on Content-Disposition stays the standard one)."""

    name: str  # set by BaseHeader, which the registry mixes in

    def fold(self, *, policy: Any) -> str:
        """Render the type and its name as described above; any other as usual."""
        filename = self.params.get("name")
        if filename is None or len(self.params) > 1:
            return super().fold(policy=policy)  # type: ignore[misc]
        return _named_type_line(self.content_type, filename, policy.linesep)


def _plain_filename(filename: str) -> bool:
    """Whether a file name goes quoted as it is (else in RFC 2231 form, see above)."""
    return bool(_PLAIN_FILENAME.match(filename)) and len(filename) < 60


def _named_type_line(content_type: str, filename: str, linesep: str) -> str:
    """``Content-Type: type;`` and `` name="=?utf-8?b?...?="`` on the next line, folded
    between encoded-words."""
    words = _encoded_words(filename, _NAME_EW_BYTES)
    words[0] = f'name="{words[0]}'
    words[-1] = f'{words[-1]}"'
    return f"Content-Type: {content_type};{linesep}" + _fold_tokens("", words, linesep)


# Bytes of a file name in one encoded-word of the name parameter: ' name="', the word and
# its closing quote stay within 78 characters.
_NAME_EW_BYTES = 42


def _percent_pieces(filename: str) -> list[str]:
    """Percent-encode ``filename`` in pieces of at most _PARAMETER_CHUNK, whole characters each.

    RFC 2231 joins the pieces before decoding, but some parsers decode each piece alone, so
    no piece ends inside a character's UTF-8 bytes.
    """
    pieces = [""]
    for char in filename:
        encoded = quote(char, safe="")
        if len(pieces[-1]) + len(encoded) > _PARAMETER_CHUNK:
            pieces.append("")
        pieces[-1] += encoded
    return pieces


def _policy() -> email_policy.EmailPolicy[Any]:
    registry = HeaderRegistry()
    for name in _ADDRESS_HEADERS:
        registry.map_to_type(name, _QuotingAddressHeader)  # type: ignore[arg-type]
    registry.map_to_type("subject", _EncodedSubjectHeader)  # type: ignore[arg-type]
    registry.map_to_type("content-disposition", _FilenameDispositionHeader)  # type: ignore[arg-type]
    registry.map_to_type("content-type", _NamedContentTypeHeader)  # type: ignore[arg-type]
    return email_policy.SMTP.clone(header_factory=registry, max_line_length=_MAX_LINE)


POLICY = _policy()
_BODY_POLICY = POLICY.clone(max_line_length=_QP_LINE)


def build_message(
    *,
    sender: str,
    to_name: str | None,
    to_email: str,
    rendered: Rendered,
    attachment: tuple[str, bytes] | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    unsubscribe: str | Sequence[str] | None = None,
    message_id_domain: str | None = None,
    headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
    message_token: str | None = None,
) -> EmailMessage:
    """Build one recipient's message; ``bcc`` goes to the envelope only (see destinations).

    ``message_token``: the Message-ID's left part (letters and digits), the same for every
    copy of one letter (see message_token); a random one when not given.
    """
    sender_address = parse_address(sender, where="sender")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender_address
    msg["To"] = make_address(to_name, to_email, where="to")
    if cc:
        msg["Cc"] = [parse_address(a, where="cc") for a in cc]
    if reply_to:
        msg["Reply-To"] = parse_address(reply_to, where="reply-to")
    subject = _header_text(rendered.subject)
    # Setting a header parses it, decoding anything shaped like an encoded-word: hand such
    # text over already encoded, so the header holds the literal characters.
    msg["Subject"] = " ".join(_encoded_words(subject)) if "=?" in subject else subject
    msg["Date"] = email_utils.format_datetime(date or datetime.now(UTC))
    domain = message_id_domain or sender_address.domain
    token = message_token or uuid.uuid4().hex
    msg["Message-ID"] = f"<{token}@{_ascii_domain(domain, where='message id')}>"
    for name, value in _unsubscribe_headers(unsubscribe).items():
        msg[name] = value
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise PermanentSendError(f"message: header name {name!r}: not a valid field name")
        msg[name] = _header_text(value)

    msg.policy = _BODY_POLICY  # the bodies' quoted-printable lines (the headers fold later)
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    msg.policy = POLICY
    if attachment is not None:
        filename, data = attachment
        maintype, subtype = content_type_of(filename).split("/", 1)
        filename = _header_text(filename)
        msg.add_attachment(
            data,
            maintype=maintype,
            subtype=subtype,
            disposition=_disposition_value(filename),
        )
        if not _plain_filename(filename):  # in place: set_param would move it after the rest
            named = f"{maintype}/{subtype}; name*=utf-8''{quote(filename, safe='')}"
            next(msg.iter_attachments()).replace_header("Content-Type", named)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # only the top needs it; add_* copies it into parts
    bcc_list = [parse_address(a, where="bcc").addr_spec for a in bcc]
    msg.mailmatrix_bcc = bcc_list  # type: ignore[attr-defined]
    return msg


def encode_message(
    *,
    sender: str,
    to_name: str | None,
    to_email: str,
    rendered: Rendered,
    attachment: tuple[str, bytes] | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    unsubscribe: str | Sequence[str] | None = None,
    message_id_domain: str | None = None,
    headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
    message_token: str | None = None,
) -> tuple[bytes, list[str]]:
    """The bytes ``message_bytes(build_message(...))`` gives, and the envelope recipients.

    The same headers, parts, encodings and folding as build_message, written straight to
    bytes: headers that vary per row go through the policy's own header classes, the MIME
    headers that never vary are folded once and reused, bodies use the email package's
    encoders. It skips the EmailMessage tree, which costs more than everything else in a
    send. tests/unit/test_perf_message.py checks it against build_message byte for byte.
    """
    sender_address = _sender_address(sender)
    to_address = make_address(to_name, to_email, where="to")
    cc_addresses = [parse_address(a, where="cc") for a in cc] if cc else []
    top = [_fixed_line("From", sender), _address_line("To", to_address)]
    if cc_addresses:
        top.append(_header_line("Cc", cc_addresses))
    if reply_to:
        top.append(_header_line("Reply-To", parse_address(reply_to, where="reply-to")))
    top.append(_header_line("Subject", _header_text(rendered.subject)))
    top.append(f"Date: {_date_text(date)}\r\n")
    domain = message_id_domain or sender_address.domain
    message_id = f"<{message_token or uuid.uuid4().hex}@{_ascii_domain(domain, 'message id')}>"
    if _PLAIN_MESSAGE_ID.match(message_id) and len(message_id) <= _MAX_LINE - 12:
        top.append(f"Message-ID: {message_id}\r\n")
    else:
        top.append(_header_line("Message-ID", message_id))
    for name, value in _unsubscribe_headers(unsubscribe).items():
        top.append(_fixed_line(name, value))
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise PermanentSendError(f"message: header name {name!r}: not a valid field name")
        top.append(_header_line(name, _header_text(value)))

    try:
        body = _mime_body(rendered, attachment, top)
    except _BoundaryClash:
        message = build_message(
            sender=sender,
            to_name=to_name,
            to_email=to_email,
            rendered=rendered,
            attachment=attachment,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            unsubscribe=unsubscribe,
            message_id_domain=message_id_domain,
            headers=headers,
            date=date,
            message_token=message_token,
        )
        return message_bytes(message), destinations(message)
    bcc_list = [parse_address(a, where="bcc").addr_spec for a in bcc]
    recipients = _unique([to_address.addr_spec, *(a.addr_spec for a in cc_addresses), *bcc_list])
    return b"".join([("".join(top)).encode("ascii", "surrogateescape"), *body]), recipients


@functools.lru_cache(maxsize=16)
def _sender_address(sender: str) -> Address:
    """The campaign's From address, parsed once (it is the same for every row)."""
    return parse_address(sender, where="sender")


def _mime_body(
    rendered: Rendered, attachment: tuple[str, bytes] | None, top: list[str]
) -> list[bytes]:
    """The MIME headers (appended to ``top``), the blank line and the body, as pieces to join
    once (the attachment, most of the bytes, is copied once more after its encoding)."""
    text = _quoted_printable(rendered.text)
    if rendered.html is None and attachment is None:
        top.append(_TEXT_HEAD["plain"] + "MIME-Version: 1.0\r\n\r\n")
        return [text]
    first = (_TEXT_HEAD["plain"] + "\r\n").encode("ascii") + text
    if rendered.html is not None:
        html = (_TEXT_HEAD["html"] + "\r\n").encode("ascii") + _quoted_printable(rendered.html)
        inner = _boundary()  # drawn before the outer one, as the generator does
        first = _boundary_line("alternative", inner) + _multipart(inner, [first, html])
        if attachment is None:
            top.append("MIME-Version: 1.0\r\n")
            return [first]
    assert attachment is not None
    filename, data = attachment
    filename = _header_text(filename)
    content_type = content_type_of(filename)
    head = (
        (
            _fixed_line("Content-Type", content_type)
            if _plain_filename(filename)
            else _named_type_line(content_type, filename, "\r\n")
        )
        + "Content-Transfer-Encoding: base64\r\n"
        + _disposition_line(filename)
        + "\r\n"
    )
    outer = _boundary()
    top.append("MIME-Version: 1.0\r\n")
    marker = b"--" + outer.encode("ascii")
    if marker in first:  # the base64 part cannot hold it: no '-' in its alphabet
        raise _BoundaryClash(outer)
    # _multipart(outer, [first, head + base64]), without copying the base64 twice
    return [
        _boundary_line("mixed", outer),
        marker,
        b"\r\n",
        first,
        b"\r\n",
        marker,
        b"\r\n",
        head.encode("ascii"),
        _base64_lines(data),
        b"\r\n",
        marker,
        b"--\r\n",
    ]


_QP_CACHED_LINE = 1000  # longer lines are encoded without the cache, so it stays small
_PLAIN_VALUE = re.compile(r"^[!-~]+(?: [!-~]+)*$")
_PLAIN_MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@[a-z0-9-]+(?:\.[a-z0-9-]+)*>$")
_B64_LINE = _MAX_LINE // 4 * 4  # what email.contentmanager._encode_base64 writes
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
_BOUNDARY_SAMPLE = "=" * 15 + "0" * _BOUNDARY_DIGITS + "=="


class _BoundaryClash(Exception):
    """Internal: a drawn boundary occurs in a body (never with QP and base64 bodies)."""


def _boundary() -> str:
    """A boundary drawn exactly as email.generator draws one (same form, same random calls)."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_DIGITS}d}" + "=="


@functools.lru_cache(maxsize=256)
def _fixed_line(name: str, value: str) -> str:
    """A header line whose value recurs (From, MIME headers), folded once by the policy."""
    if name == "From":
        return _header_line(name, parse_address(value, where="sender"))
    return str(POLICY.header_factory(name, value).fold(policy=POLICY))


@functools.lru_cache(maxsize=64)
def _header_class(name: str) -> Any:
    registry: HeaderRegistry = POLICY.header_factory  # type: ignore[assignment]
    return registry[name]


def _header_line(name: str, value: Any) -> str:
    """``Name: value`` folded exactly as the generator folds a header set with msg[name].

    Short plain ASCII values of unstructured headers come back as they are, and non-ASCII
    subjects become our encoded-words, without parsing (what the header classes would do).
    """
    cls = _header_class(name)
    if isinstance(value, str) and "=?" in value and issubclass(cls, _EncodedSubjectHeader):
        # Text that looks like an encoded-word is data: encode it, or readers decode it.
        return _fold_tokens(f"{name}:", _encoded_words(value), "\r\n")
    if isinstance(value, str) and "=?" not in value and issubclass(cls, UnstructuredHeader):
        if len(name) + 2 + len(value) <= _MAX_LINE and _PLAIN_VALUE.match(value):
            return f"{name}: {value}\r\n"
        if issubclass(cls, _EncodedSubjectHeader) and not value.isascii():
            return _fold_tokens(f"{name}:", _encoded_words(value), "\r\n")
    return str(cls(name, value).fold(policy=POLICY))


def _address_line(name: str, address: Address) -> str:
    """A one-address header, as _QuotingAddressHeader.fold writes it."""
    return _fold_tokens(f"{name}:", format_address(address).split(" "), "\r\n")


@functools.lru_cache(maxsize=4)
def _boundary_template(subtype: str) -> str:
    return _fixed_line("Content-Type", f'multipart/{subtype}; boundary="{_BOUNDARY_SAMPLE}"')


def _boundary_line(subtype: str, boundary: str) -> bytes:
    """The Content-Type header of a multipart part with its boundary, then the blank line."""
    line = _boundary_template(subtype).replace(_BOUNDARY_SAMPLE, boundary)
    return (line + "\r\n").encode("ascii")


def _multipart(boundary: str, parts: list[bytes]) -> bytes:
    """The body of a multipart entity, as email.generator writes it."""
    marker = b"--" + boundary.encode("ascii")
    if any(marker in part for part in parts):
        raise _BoundaryClash(boundary)
    separator = b"\r\n" + marker + b"\r\n"
    return marker + b"\r\n" + separator.join(parts) + b"\r\n" + marker + b"--\r\n"


def _quoted_printable(text: str) -> bytes:
    """A text body as set_content(..., cte="quoted-printable") stores and the generator writes.

    quoprimime.body_encode encodes each line on its own (only CR and LF end lines once the
    other control characters are escaped), so lines are encoded one by one, and the lines
    every row shares (most of a template) come from a dict looked up inline: a function call
    a line cost more than the lookup.
    """
    lines = text.encode("utf-8").splitlines()
    if not lines:
        return b"\r\n"
    known = _QP_LINES.get
    encoded = [done if (done := known(line)) is not None else _qp_line(line) for line in lines]
    encoded.append(b"")
    return b"\r\n".join(encoded)


_QP_LINES: dict[bytes, bytes] = {}  # line -> its encoding, for lines up to _QP_CACHED_LINE
_QP_LINES_KEPT = 4096


def _qp_line(line: bytes) -> bytes:
    """One line not met lately, quoted-printable, soft-wrapped with CRLF (no CR or LF in it)."""
    encoded = quoprimime.body_encode(line.decode("latin-1"), _QP_LINE, "\r\n").encode("ascii")
    if len(line) <= _QP_CACHED_LINE:
        if len(_QP_LINES) >= _QP_LINES_KEPT:  # templates changed, or lines differ row by row
            _QP_LINES.clear()
        _QP_LINES[line] = encoded
    return encoded


def _base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF (as add_attachment writes it).

    pybase64 encodes with the CPU's vector instructions (50 KB: about 2 us, binascii 37 us).
    The lines are cut by struct, 64 at a time, rather than sliced one by one in Python,
    which cost more than the encoding itself.
    """
    encoded = pybase64.b64encode(data)
    if not encoded:
        return b""
    full = len(encoded) // _B64_LINE
    blocks, rest = divmod(full, _B64_BLOCK_LINES)
    block = _b64_line_cutter(_B64_BLOCK_LINES)
    end = blocks * block.size
    lines = list(itertools.chain.from_iterable(block.iter_unpack(memoryview(encoded)[:end])))
    if rest:
        lines.extend(_b64_line_cutter(rest).unpack_from(encoded, end))
    if len(encoded) > full * _B64_LINE:
        lines.append(encoded[full * _B64_LINE :])
    lines.append(b"")
    return b"\r\n".join(lines)


_B64_BLOCK_LINES = 64


@functools.lru_cache(maxsize=_B64_BLOCK_LINES)
def _b64_line_cutter(lines: int) -> struct.Struct:
    """A struct that splits ``lines`` base64 lines of 76 bytes into as many bytes objects."""
    return struct.Struct(f"{_B64_LINE}s" * lines)


def _disposition_line(filename: str) -> str:
    """The attachment's Content-Disposition, folded as add_attachment(filename=) leaves it."""
    if (
        _PLAIN_FILENAME.match(filename)
        and len(filename) < 60
        and "  " not in filename
        and not filename.endswith(" ")
    ):
        return f'Content-Disposition: attachment;\r\n filename="{filename}"\r\n'
    part = EmailMessage(policy=POLICY)
    part["Content-Disposition"] = _disposition_value(filename)
    return str(part["Content-Disposition"].fold(policy=POLICY))


def _disposition_value(filename: str) -> str:
    """``attachment; filename*=utf-8''...``: the header parser reads the name back literally.

    A quoted name shaped like an encoded-word (``"=?utf-8?b?...?="``) would be decoded by
    the parser, and the attachment would go out under the decoded name (``../evil.exe``);
    set_param quotes ASCII names, so the parameter is written here in RFC 2231 form.
    """
    return "attachment; filename*=utf-8''" + quote(filename, safe="")


def _text_head(subtype: str) -> str:
    return (
        _fixed_line("Content-Type", f'text/{subtype}; charset="utf-8"')
        + "Content-Transfer-Encoding: quoted-printable\r\n"
    )


_TEXT_HEAD = {"plain": _text_head("plain"), "html": _text_head("html")}


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def message_bytes(msg: EmailMessage) -> bytes:
    """Serialise ``msg`` as sent: CRLF line ends, 7-bit headers."""
    return msg.as_bytes(policy=POLICY)


def destinations(msg: EmailMessage) -> list[str]:
    """Every envelope recipient of ``msg``: To, Cc and the Bcc given to build_message."""
    found: list[str] = []
    for name in ("To", "Cc"):
        header = msg[name]
        if header is not None:
            found.extend(a.addr_spec for a in header.addresses)
    found.extend(getattr(msg, "mailmatrix_bcc", []))
    seen: set[str] = set()
    unique = []
    for address in found:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def content_type_of(filename: str) -> str:
    """The MIME type for an attachment name (application/octet-stream when unknown)."""
    # guess_type reads no more than the last two extensions (".tar.gz"), so names that end
    # alike share one cached lookup ("x.pdf"); a colon could make a name a URL: not cached.
    root, ext = os.path.splitext(filename)
    if not ext or ":" in filename:
        return _content_type.__wrapped__(filename)
    return _content_type("x" + os.path.splitext(root)[1] + ext)


@functools.lru_cache(maxsize=256)
def _content_type(filename: str) -> str:
    kind, encoding = mimetypes.guess_type(filename, strict=False)
    return kind if kind and not encoding else "application/octet-stream"


_date_of_second: tuple[int, str] = (-1, "")


def _date_text(date: datetime | None) -> str:
    """The Date header's value for ``date``, or for now (formatted once a second)."""
    global _date_of_second
    if date is not None:
        return email_utils.format_datetime(date)
    second = int(time.time())
    if _date_of_second[0] != second:
        now = datetime.fromtimestamp(second, UTC)
        _date_of_second = (second, email_utils.format_datetime(now))
    return _date_of_second[1]


def make_address(name: str | None, email: str, *, where: str) -> Address:
    """An Address from a display name and an address, with the domain in IDNA form."""
    email = _header_text(email).strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise PermanentSendError(f"message: {where}: not an email address: {email!r}")
    if not local.isascii():
        raise PermanentSendError(
            f"message: {where}: {email!r}: non-ASCII local part (SES and most SMTP servers "
            f"without SMTPUTF8 cannot deliver it)"
        )
    display = " ".join(_header_text(name or "").split())
    try:
        return Address(display_name=display, username=local, domain=_ascii_domain(domain, where))
    except (ValueError, IndexError) as exc:
        raise PermanentSendError(f"message: {where}: {email!r}: {exc}") from exc


def parse_address(text: str, *, where: str) -> Address:
    """Parse ``Name <addr>`` or a bare address; the name may hold commas and quotes."""
    text = " ".join(_header_text(text).split())
    if text.endswith(">") and "<" in text:
        name, _, email = text[:-1].rpartition("<")
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        return make_address(name, email, where=where)
    return make_address(None, text, where=where)


def format_address(address: Address) -> str:
    """``addr``, ``Name <addr>``, ``"Quoted, Name" <addr>`` or ``=?utf-8?b?...?= <addr>``."""
    spec = address.addr_spec
    name = address.display_name
    if not name:
        return spec
    return f"{_phrase(name)} <{spec}>"


def _phrase(name: str) -> str:
    if not name.isascii() or "=?" in name:  # "=?...?=" would be decoded by readers
        return " ".join(_encoded_words(name))
    if _BARE_PHRASE.match(name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _encoded_words(text: str, most: int = _EW_BYTES) -> list[str]:
    """RFC 2047 base64 encoded-words, each at most 75 characters long (``most`` bytes of
    ``text`` each).

    Long names are split after a space where possible (the space stays inside the earlier
    word): decoders that wrongly keep the blank between encoded-words then show a doubled
    space rather than a space in the middle of a name.
    """
    chunks: list[bytes] = []
    chunk = b""
    last_space = -1
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > most:
            cut = last_space + 1 if last_space >= 0 else len(chunk)
            chunks.append(chunk[:cut])
            chunk = chunk[cut:]
            last_space = -1
        chunk += data
        if char == " ":
            last_space = len(chunk) - 1
    chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks if c]


def _fold_tokens(head: str, tokens: Iterable[str], linesep: str) -> str:
    lines = [head]
    for token in tokens:
        if len(lines[-1]) + 1 + len(token) > _MAX_LINE and lines[-1] != head:
            lines.append("")
        lines[-1] += " " + token
    return linesep.join(lines) + linesep


def _ascii_domain(domain: str, where: str) -> str:
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise PermanentSendError(f"message: {where}: domain {domain!r}: {exc}") from exc


def _header_text(value: str) -> str:
    """Replace CR, LF and other control characters so a value can never start a new header."""
    return _CONTROL.sub(" ", value)


def _unsubscribe_headers(unsubscribe: str | Sequence[str] | None) -> dict[str, str]:
    """List-Unsubscribe, plus List-Unsubscribe-Post when an https URL allows one click."""
    if not unsubscribe:
        return {}
    targets = [unsubscribe] if isinstance(unsubscribe, str) else list(unsubscribe)
    targets = [_header_text(t).strip() for t in targets if t and t.strip()]
    for target in targets:
        if not target.startswith(("mailto:", "https:")) or not target.isascii():
            raise PermanentSendError(
                f"message: unsubscribe: {target!r}: must be an ASCII mailto: or https: URI"
            )
    result = {"List-Unsubscribe": ", ".join(f"<{t}>" for t in targets)}
    # RFC 8058: one-click unsubscribe needs an https URI and this exact POST body.
    if any(t.startswith("https:") for t in targets):
        result["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return result


def envelope_address(text: str, *, where: str) -> str:
    """The bare 7-bit address of ``Name <addr>`` or ``addr`` (domain in IDNA form)."""
    return parse_address(text, where=where).addr_spec
