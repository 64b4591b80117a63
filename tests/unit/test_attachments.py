"""Attachment names: only bare file names, found exactly in one listing, within the size limit."""

from __future__ import annotations

import unicodedata

import pytest

from mailmatrix.core.attachments import (
    MESSAGE_OVERHEAD_BYTES,
    AttachmentIndex,
    Lookup,
    encoded_size,
    message_overhead,
    name_problem,
    pdf_problem,
)
from mailmatrix.ports import ObjectInfo


def index(**sizes: int) -> AttachmentIndex:
    """Index of the given names (keyword names use _ for .)."""
    return AttachmentIndex.from_listing(
        [ObjectInfo(f"attachments/{name.replace('_', '.')}", size) for name, size in sizes.items()]
    )


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/passwd", "absolute path in attachment name '/etc/passwd': give a bare file name"),
        ("C:\\x.pdf", "backslash in attachment name 'C:\\\\x.pdf': give a bare file name "
         "(a backslash is also altered by the Step Functions CSV reader)"),
        ("C:x.pdf", "absolute path in attachment name 'C:x.pdf': give a bare file name"),
        ("..", "parent folder (..) in attachment name '..': give a bare file name"),
        ("../secret.pdf", "parent folder (..) in attachment name '../secret.pdf': give a bare "
         "file name"),
        ("a/../../b.pdf", "parent folder (..) in attachment name 'a/../../b.pdf': give a bare "
         "file name"),
        ("sub/a.pdf", "folder in attachment name 'sub/a.pdf': give a bare file name"),
        ("reports\\alice.pdf", "backslash in attachment name 'reports\\\\alice.pdf': give a bare "
         "file name (a backslash is also altered by the Step Functions CSV reader)"),
        ("a\x00.pdf", "control character (NUL) in attachment name"),
        ("a\n.pdf", "control character (LF) in attachment name"),
        ("a\x85.pdf", "control character (U+0085) in attachment name"),
        ("a..b.pdf", None),
        ("ünïcødé name.pdf", None),
    ],
)  # fmt: skip
def test_only_bare_file_names_pass(name, problem):
    assert name_problem(name) == problem


def test_lookup_finds_exact_name_with_its_size():
    assert index(alice_pdf=120).lookup(" alice.pdf ") == Lookup(name="alice.pdf", size=120)


def test_lookup_gives_the_tag_listed_with_the_size():
    # GIVEN a listing with tags (an S3 ETag, a local file's stat) and one without
    listing = [
        ObjectInfo("attachments/a.pdf", 120, tag="9b2cf535f27731c974343645a3985328"),
        ObjectInfo("attachments/b c.pdf", 7, tag="803:1a2b:7:17f:180"),
        ObjectInfo("attachments/d.pdf", 30),
    ]

    # THEN each name is found with its size and the tag it was listed with
    idx = AttachmentIndex.from_listing(listing)
    assert [idx.lookup(name) for name in ("a.pdf", "b c.pdf", "d.pdf")] == [
        Lookup(name="a.pdf", size=120, tag="9b2cf535f27731c974343645a3985328"),
        Lookup(name="b c.pdf", size=7, tag="803:1a2b:7:17f:180"),
        Lookup(name="d.pdf", size=30),
    ]
    # AND the size checks still read the size of a tagged file
    assert idx.lookup("b c.pdf", max_message_bytes=10).problem is not None


@pytest.mark.parametrize(
    ("asked", "problem"),
    [
        ("", "Attachment_File is empty"),
        ("   ", "Attachment_File is empty"),
        ("bob.pdf", "attachment not found: bob.pdf"),
        ("Carol.PDF", "attachment not found: Carol.PDF (did you mean carol.pdf?)"),
        ("DAVE.pdf", "attachment not found: DAVE.pdf (did you mean Dave.pdf or dave.pdf?)"),
        ("empty.pdf", "attachment is empty (0 bytes): empty.pdf"),
        ("nested.pdf", "attachment not found: nested.pdf"),
        # the extension left out, or another one: the file of that name is suggested
        ("carol", "attachment not found: carol (did you mean carol.pdf?)"),
        ("Carol.docx", "attachment not found: Carol.docx (did you mean carol.pdf?)"),
        ("dave", "attachment not found: dave (did you mean Dave.pdf or dave.pdf?)"),
        (".pdf", "attachment not found: .pdf"),
    ],
)
def test_lookup_problems(asked, problem):
    listing = [
        ObjectInfo("attachments/carol.pdf", 10),
        ObjectInfo("attachments/dave.pdf", 10),
        ObjectInfo("attachments/Dave.pdf", 10),
        ObjectInfo("attachments/empty.pdf", 0),
        ObjectInfo("attachments/sub/nested.pdf", 10),
        ObjectInfo("other/bob.pdf", 10),
    ]
    found = AttachmentIndex.from_listing(listing, prefix="attachments/").lookup(asked)

    assert found == Lookup(problem=problem)


@pytest.mark.parametrize("stored_form", ["NFC", "NFD"])
@pytest.mark.parametrize("asked_form", ["NFC", "NFD"])
def test_names_match_in_either_unicode_form(stored_form, asked_form):
    name = "Zoë Müller.pdf"
    listing = [ObjectInfo("attachments/" + unicodedata.normalize(stored_form, name), 5)]

    found = AttachmentIndex.from_listing(listing).lookup(unicodedata.normalize(asked_form, name))

    # found, under the name the storage knows it by (S3 knows a key in one form only)
    assert found == Lookup(name=unicodedata.normalize(stored_form, name), size=5)


@pytest.mark.parametrize("asked_form", ["NFC", "NFD"])
def test_a_name_two_files_have_in_different_forms_is_refused(asked_form):
    # GIVEN two files whose names differ only in Unicode form (one written on macOS)
    name = "Zoë Müller.pdf"
    listing = [
        ObjectInfo("attachments/" + unicodedata.normalize("NFC", name), 5),
        ObjectInfo("attachments/" + unicodedata.normalize("NFD", name), 7),
    ]

    # WHEN a row names either THEN it is refused: which letter it means cannot be told
    found = AttachmentIndex.from_listing(listing).lookup(unicodedata.normalize(asked_form, name))
    assert found.name == "" and found.problem is not None
    assert "two files in the attachments location are named" in found.problem


def test_encoded_size_counts_base64_and_line_breaks():
    assert [encoded_size(n) for n in (0, 1, 3, 57, 58, 3 * 1024 * 1024)] == [
        0,
        6,
        6,
        78,
        84,
        4 * 1024 * 1024 + 2 * 55189,
    ]


def test_size_limit_applies_to_the_encoded_message():
    limit = 1024 * 1024
    fits = (limit - message_overhead(limit)) * 3 // 4 - 20 * 1024
    too_big = (limit - message_overhead(limit)) * 3 // 4 + 1024
    idx = index(fits_pdf=fits, big_pdf=too_big)

    assert idx.lookup("fits.pdf", max_message_bytes=limit).problem is None
    assert idx.lookup("big.pdf", max_message_bytes=limit) == Lookup(
        problem="attachment too large: big.pdf is 673.0 KiB, about 1.0 MiB as an encoded "
        "message; the limit is 1.0 MiB"
    )


@pytest.mark.parametrize("limit", [40 * 1024 * 1024, 1024 * 1024, 200_000, 30_000])
def test_the_room_kept_beside_the_file_is_at_most_an_eighth_of_the_limit(limit):
    # GIVEN a limit, and a file whose encoded size leaves just that eighth of it (or 256 KiB,
    # the room kept under a large limit) for the rest of the message
    room = min(MESSAGE_OVERHEAD_BYTES, limit // 8)
    assert message_overhead(limit) == room
    fits = (limit - room) * 76 // 78 * 3 // 4 - 8  # base64, and a line break per 76 characters
    idx = index(fits_pdf=fits, big_pdf=fits + 4096)

    # THEN it passes, under a limit below 256 KiB too, and a larger one is too large
    assert idx.lookup("fits.pdf", max_message_bytes=limit).problem is None
    assert "attachment too large" in str(idx.lookup("big.pdf", max_message_bytes=limit).problem)


def test_index_ignores_other_prefixes_and_folders():
    listing = [
        ObjectInfo("attachments/", 0),
        ObjectInfo("attachments/a.pdf", 1),
        ObjectInfo("attachments/x/b.pdf", 1),
        ObjectInfo("attachmentsX/c.pdf", 1),
    ]
    assert len(AttachmentIndex.from_listing(listing, prefix="attachments/")) == 1


def test_names_listed_as_one_file_are_known_as_the_first_of_them():
    # GIVEN a listing where a.pdf and c.pdf are one file (a link), b.pdf and d.pdf another,
    # e.pdf a file of its own, and f.pdf an object without an identity (an S3 key)
    listing = [
        ObjectInfo("attachments/a.pdf", 5, identity="1:10"),
        ObjectInfo("attachments/b.pdf", 5, identity="1:11"),
        ObjectInfo("attachments/c.pdf", 5, identity="1:10"),
        ObjectInfo("attachments/d.pdf", 5, identity="1:11"),
        ObjectInfo("attachments/e.pdf", 5, identity="1:12"),
        ObjectInfo("attachments/f.pdf", 5),
    ]

    # WHEN indexed
    idx = AttachmentIndex.from_listing(listing)

    # THEN every name of a linked file leads to its first name; the others to none
    assert [idx.same_file(n) for n in ("a.pdf", "b.pdf", "c.pdf", "d.pdf")] == [
        "a.pdf",
        "b.pdf",
        "a.pdf",
        "b.pdf",
    ]
    assert (idx.same_file("e.pdf"), idx.same_file("f.pdf"), idx.same_file("x.pdf")) == (None,) * 3
    # AND each name is still found under its own name
    assert idx.lookup("c.pdf") == Lookup(name="c.pdf", size=5)


def test_keys_without_identities_are_each_their_own_file():
    # GIVEN an S3 listing: no identities, even for objects alike in size and ETag
    listing = [ObjectInfo(f"attachments/{n}.pdf", 5, etag="same") for n in "ab"]

    # THEN no two names are one file
    idx = AttachmentIndex.from_listing(listing)
    assert (idx.same_file("a.pdf"), idx.same_file("b.pdf")) == (None, None)


# A Word document's start: a zip whose first parts name word/.
DOCX = b"PK\x03\x04\x14\x00\x06\x00\x08\x00" + b"[Content_Types].xml" + bytes(300)
DOCX += b"PK\x03\x04\x14\x00" + b"word/document.xml"


@pytest.mark.parametrize(
    ("name", "head", "looks"),
    [
        ("a.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", None),
        ("A.PDF", b"\r\n" * 500 + b"%PDF-1.4", None),  # within the first 1024 bytes
        ("a.pdf", b" " * 1024 + b"%PDF-1.4", "starts with the bytes 20 20 20 20 20 20 20 20"),
        ("a.docx", DOCX, None),
        ("a.pdf", DOCX, "looks like a Word document (.docx, a PK zip)"),
        (
            "a.Pdf",
            b"PK\x03\x04" + bytes(60),
            "looks like a ZIP archive (PK zip), or an Office document (.docx, .xlsx)",
        ),
        (
            "a.pdf",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            "looks like a legacy Office document (.doc, .xls)",
        ),
        ("a.pdf", b"{\\rtf1\\ansi Dear Anna", "looks like an RTF document"),
        (
            "a.pdf",
            "Dear Anna,\r\n\r\nwe are pleased to offer you the role of…".encode(),
            "is text that starts with 'Dear Anna, we are pleased to off...'",
        ),
        ("a.pdf", "Liebe Zoë".encode(), "is text that starts with 'Liebe Zoë'"),
        (
            "a.pdf",
            b"\x00\x01\x02\x03\x1b[2J\xff\xfe",
            "starts with the bytes 00 01 02 03 1b 5b 32 4a",
        ),
        ("a.pdf", "Zoë\u202egpj.exe".encode(), "starts with the bytes 5a 6f c3 ab e2 80 ae 67"),
    ],
    ids=[
        "pdf", "pdf-after-line-ends", "pdf-too-far", "not-named-pdf", "docx", "zip", "ole2",
        "rtf", "text", "text-accented", "binary", "bidi-control",
    ],
)  # fmt: skip
def test_a_file_named_pdf_is_checked_for_the_pdf_header(name, head, looks):
    problem = pdf_problem(name, head)

    if looks is None:
        assert problem is None
    else:
        assert problem == (
            f"attachment is not a PDF: {name} {looks}, where a PDF starts with %PDF-: put the"
            " letter, saved as a PDF, in its place"
        )
