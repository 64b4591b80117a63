"""Intake holds the files earlier runs sent as their recipients' own to those recipients: a
row of another recipient naming a link to one, or a copy of one, is not sent."""

from __future__ import annotations

import io

import pytest

from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.earlier import EarlierFiles
from mailmatrix.core.recipients import IntakeReport, validate_recipients
from mailmatrix.core.templates import load_catalog
from mailmatrix.errors import TemplateError
from mailmatrix.ports import FileOwner
from tests.unit.test_recipients import (
    ALICE,
    BOB,
    HEADER,
    INFO_ROWS,
    OFFER_ALICE,
    OFFER_CAROL,
    TWO_SETS,
    FakeCatalog,
    FakeContents,
    emails,
    linked_index,
    reasons,
)

# Alice's letter, sent by an earlier run (row 2 of that run), carrying alice.pdf
SENT_ALICE = FileOwner("alice.pdf", "r:alice@example.com", 2, "a***@example.com")
ASKED: list[str] = []


def recipient(email: str) -> str:
    """A stand-in for recipient_key of one campaign; counts its calls."""
    ASKED.append(email)
    return "r:" + email.casefold()


def run(
    text: str,
    index: AttachmentIndex,
    owners: list[FileOwner],
    contents: FakeContents | None = None,
    sent_before=None,
    catalog=None,
) -> tuple[IntakeReport, list[dict]]:
    ASKED.clear()
    rows: list[dict] = []
    report = validate_recipients(
        io.BytesIO(text.encode()),
        source="incoming/test.csv",
        catalog=catalog or FakeCatalog(),
        attachments=index,
        emit=rows.append,
        contents=contents,
        sent_before=sent_before,
        earlier=EarlierFiles(owners, index, recipient),
    )
    return report, rows


LINK_REASON = (
    "bob.pdf is the same file as alice.pdf (a link in the attachments folder), which an "
    "earlier run of this file sent to another recipient (a***@example.com) as their own letter"
    " (row 2 of that run): each row attaches its recipient's own file, so this row is not sent"
    " (name this recipient's own file in Attachment_File, or correct the link; then run the "
    "file again)"
)
COPY_REASON = (
    "bob.pdf has the same contents as alice.pdf, which an earlier run of this file sent to "
    "another recipient (a***@example.com) as their own letter (row 2 of that run): this row "
    "names a copy of that person's letter, so it is not sent (name this recipient's own file "
    "in Attachment_File, then run the file again)"
)


def test_a_link_to_a_letter_an_earlier_run_sent_is_not_sent_to_another_recipient():
    # GIVEN Alice's letter sent earlier, her row gone from the file, and Bob's row naming a
    # link to her file
    index = linked_index(("alice.pdf", "bob.pdf"), ("carol.pdf",))

    # WHEN validated
    report, rows = run(HEADER + BOB, index, [SENT_ALICE])

    # THEN Bob's row is rejected, the reason naming the earlier letter and what to do
    assert rows == []
    assert reasons(report) == [(2, "Attachment_File", LINK_REASON)]
    assert report.rejected[0]["email"] == "b***@example.com"


def test_an_earlier_letter_without_a_recorded_address_is_named_by_its_row():
    index = linked_index(("alice.pdf", "bob.pdf"), ("carol.pdf",))
    owner = SENT_ALICE._replace(masked="")
    report, _ = run(HEADER + BOB, index, [owner])
    expected = LINK_REASON.replace("another recipient (a***@example.com)", "another recipient")
    assert reasons(report) == [(2, "Attachment_File", expected)]


@pytest.mark.parametrize(
    "text",
    [
        # her own row again, by the link's name, and by her file's
        "alice@example.com,Alice,active,bob.pdf\r\n",
        ALICE,
        # another recipient naming her file by its very name: the claim refuses that one
        BOB.replace("bob.pdf", "alice.pdf"),
        # another recipient's own file
        "carol@example.com,Carol,active,carol.pdf\r\n",
    ],
)
def test_the_earlier_recipients_own_rows_and_other_files_pass(text):
    index = linked_index(("alice.pdf", "bob.pdf"), ("carol.pdf",))
    report, rows = run(HEADER + text, index, [SENT_ALICE])
    assert report.rejected == [] and len(rows) == 1


def test_a_file_the_attachments_no_longer_hold_is_no_ones():
    # GIVEN Alice's letter sent earlier, her file since removed; bob.pdf and carol.pdf linked
    index = linked_index(("bob.pdf", "carol.pdf"))
    report, rows = run(HEADER + BOB, index, [SENT_ALICE])
    assert report.rejected == [] and emails(rows) == ["bob@example.com"]


def test_a_copy_of_a_letter_an_earlier_run_sent_is_not_sent_to_another_recipient():
    # GIVEN Alice's letter sent earlier, her row gone from the file; Bob's row naming a copy
    # of it, Carol's her own letter of the same size
    contents = FakeContents(
        {"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE, "carol.pdf": OFFER_CAROL}
    )
    text = HEADER + BOB + "carol@example.com,Carol,active,carol.pdf\r\n"

    # WHEN validated
    report, rows = run(text, contents.index(), [SENT_ALICE], contents)

    # THEN Bob's row is withdrawn, the reason naming the earlier letter; Carol's goes
    assert emails(rows) == ["bob@example.com", "carol@example.com"]  # passed on, then...
    assert report.withdrawn == {2} and report.valid == 1
    assert reasons(report) == [(2, "Attachment_File", COPY_REASON)]
    # AND each file was read whole once at most
    assert max(contents.read.values()) == 1


def test_a_row_an_earlier_run_sent_with_a_copy_of_anothers_letter_says_both_went_out():
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "bob.pdf": OFFER_ALICE})
    report, _ = run(HEADER + BOB, contents.index(), [SENT_ALICE], contents, lambda rows: rows)
    assert reasons(report) == [
        (
            2,
            "Attachment_File",
            "bob.pdf went to this row's recipient in an earlier run of this file, and has the "
            "same contents as alice.pdf, which an earlier run sent to another recipient "
            "(a***@example.com) as their own letter (row 2 of that run): one of the two people "
            "may have received the other's letter (open both files to tell which); this row is "
            "not sent again",
        )
    ]


def test_a_copy_of_the_recipients_own_earlier_letter_passes():
    # GIVEN Alice's letter sent earlier, and her row now naming a copy of it
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "alice-2.pdf": OFFER_ALICE})
    text = HEADER + ALICE.replace("alice.pdf", "alice-2.pdf")
    report, rows = run(text, contents.index(), [SENT_ALICE], contents)
    assert report.rejected == [] and emails(rows) == ["alice@example.com"]


def test_a_rerun_against_its_own_owners_reads_no_more_than_a_first_run():
    # GIVEN a file of 40 recipients, each with a letter of their own, all of one size, sent
    # by an earlier run (the ledger has each file's owner)
    files = {f"u{n}.pdf": b"%%PDF-1.4 letter %04d" % n for n in range(40)}
    text = HEADER + "".join(f"p{n}@example.com,P{n},active,u{n}.pdf\r\n" for n in range(40))
    owners = [FileOwner(f"u{n}.pdf", f"r:p{n}@example.com", n + 2, "p***") for n in range(40)]

    # WHEN validated against no owners, then against them
    first = FakeContents(files)
    run(text, first.index(), [], first)
    again = FakeContents(files)
    report, rows = run(text, again.index(), owners, again)

    # THEN every row passes, and the files are asked and read as often as in a first run
    assert report.rejected == [] and len(rows) == 40
    assert (again.asked, again.read) == (first.asked, first.read)
    # AND the recipients were asked once a row
    assert len(ASKED) == 40


def test_without_files_of_an_earlier_letters_size_no_recipient_is_asked_and_nothing_read():
    # GIVEN Alice's letter sent earlier, and rows whose files all have other sizes
    files = {"alice.pdf": OFFER_ALICE, "bob.pdf": b"%PDF-bob", "carol.pdf": b"%PDF-carol"}
    contents = FakeContents(files)
    text = HEADER + BOB + "carol@example.com,Carol,active,carol.pdf\r\n"

    # WHEN validated
    report, rows = run(text, contents.index(), [SENT_ALICE], contents)

    # THEN both go, no recipient was asked and no file read
    assert report.rejected == [] and len(rows) == 2
    assert ASKED == [] and not contents.read and not contents.asked


def test_an_earlier_letter_of_the_row_s_recipient_that_another_earlier_letter_copies_is_held():
    # GIVEN Alice's letter and Carol's, both sent earlier, Carol's a copy of Alice's; and
    # Alice's row again (Carol's gone from the file)
    contents = FakeContents({"alice.pdf": OFFER_ALICE, "carol.pdf": OFFER_ALICE})
    carol = FileOwner("carol.pdf", "r:carol@example.com", 3, "c***@example.com")

    # WHEN validated
    report, _ = run(HEADER + ALICE, contents.index(), [SENT_ALICE, carol], contents)

    # THEN Alice's row is held: one of the two may have the other's letter
    assert report.withdrawn == {2}
    assert reasons(report)[0][2].startswith(
        "alice.pdf has the same contents as carol.pdf, which an earlier run of this file sent to"
        " another recipient (c***@example.com)"
    )


# The refusal of a file whose info set gives its rows, as their default_attachment, the file of
# Alice's earlier letter (WHAT: how the default is that file)
DEFAULT_SENT = (
    "incoming/test.csv: template set 'info' attaches its default_attachment brochure.pdf to "
    "every row of the set whose Attachment_File is empty, and an earlier run of this file sent "
    "{what} to another recipient (a***@example.com) as their own letter (row 2 of that run): "
    "that person's letter would go to everyone the default goes to, so nothing is sent (point "
    "default_attachment at the file meant for everyone; then run the file again)"
)


@pytest.mark.parametrize("how", ["name", "link"])
def test_a_default_attachment_that_is_an_earlier_letters_file_refuses_the_file(how):
    # GIVEN Alice's letter sent earlier with alice.pdf, her row gone from the file, and the
    # info set's default_attachment that very file (by its name, or a link to it)
    if how == "name":
        owner = SENT_ALICE._replace(attachment="brochure.pdf")
        index = linked_index(("brochure.pdf",), ("carol.pdf",))
        what = "that file"
    else:
        index = linked_index(("alice.pdf", "brochure.pdf"), ("carol.pdf",))
        owner = SENT_ALICE
        what = "alice.pdf, the same file (a link in the attachments folder),"

    # WHEN a file whose rows are given the default is validated
    with pytest.raises(TemplateError) as raised:
        run(HEADER + INFO_ROWS, index, [owner], catalog=load_catalog(TWO_SETS))

    # THEN it is refused whole: her letter would go to everyone the set gives its default
    assert raised.value.message == DEFAULT_SENT.format(what=what)


@pytest.mark.parametrize("own_row", [False, True], ids=["default rows only", "with an own row"])
@pytest.mark.parametrize("checksums", [False, True], ids=["folder", "s3 checksums"])
def test_a_default_attachment_that_is_a_copy_of_an_earlier_letter_refuses_the_file(
    own_row, checksums
):
    # GIVEN Alice's letter sent earlier, her row gone from the file; the info set's default
    # brochure.pdf a copy of it (and maybe Carol's own letter of that size)
    files = {"alice.pdf": OFFER_ALICE, "brochure.pdf": OFFER_ALICE, "carol.pdf": OFFER_CAROL}
    sums = {n: f"CRC64NVME {hash(data)}" for n, data in files.items()} if checksums else None
    contents = FakeContents(files, sums)
    text = HEADER + INFO_ROWS
    if own_row:
        text += "carol@example.com,Carol,active,carol.pdf\r\n"

    # WHEN validated with the means to read the files
    with pytest.raises(TemplateError) as raised:
        run(text, contents.index(), [SENT_ALICE], contents, catalog=load_catalog(TWO_SETS))

    # THEN the file is refused whole, naming the earlier letter
    what = "alice.pdf, a file with the same contents,"
    assert raised.value.message == DEFAULT_SENT.format(what=what)


def test_a_default_attachment_other_than_the_earlier_letters_goes_to_its_rows():
    # GIVEN Alice's letter sent earlier, and the info set's default brochure.pdf of its size
    # but other bytes
    files = {"alice.pdf": OFFER_ALICE, "brochure.pdf": OFFER_CAROL}
    contents = FakeContents(files)

    # WHEN validated
    report, rows = run(
        HEADER + INFO_ROWS, contents.index(), [SENT_ALICE], contents, catalog=load_catalog(TWO_SETS)
    )

    # THEN its rows go, the brochure to each
    assert report.rejected == [] and [row["attachment"] for row in rows] == ["brochure.pdf"] * 2
