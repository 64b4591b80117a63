"""Intake refuses a row whose own file holds the bytes of a letter that went to another person,
in any campaign (the ledger's digests: SentFiles), whatever the file is named now."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.cli.validate_cmd import folder_contents, folder_index
from mailmatrix.core.addresses import mask
from mailmatrix.core.contents import sample_print
from mailmatrix.core.earlier import SentFiles
from mailmatrix.core.recipients import IntakeReport, validate_recipients
from mailmatrix.core.send import recipient_key
from mailmatrix.ports import OUTCOME_UNKNOWN, LetterFile
from tests.unit.test_recipients import HEADER, FakeCatalog, reasons

LETTER = b"%PDF-1.4 Anna's offer " + bytes(range(256)) * 80  # 20 KB: three samples apart


@pytest.fixture
def ledger(tmp_path) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(str(tmp_path / "ledger.db"))) as kept:
        yield kept


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "attachments"
    folder.mkdir()
    return folder


def sent(ledger: SqliteLedger, campaign: str, email: str, name: str, data: bytes, row: int = 2):
    """Record the letter of ``email`` in ``campaign`` sent with ``name`` (``data``) as its own,
    as send_batch does: the claim makes the owner, the record keeps the file."""
    key = f"{campaign}:{email}"
    recipient = recipient_key(campaign, email)
    owner = (name, recipient, mask(email))
    assert ledger.claim(key, campaign=campaign, row=row, attempt="a", owner=owner).state == (
        "claimed"
    )
    digest = hashlib.sha256(data).hexdigest()
    file = LetterFile(name, len(data), digest, sample_print(data), recipient, mask(email), "a.csv")
    ledger.record_sent(key, message_id=f"m-{key}", file=file)


def run(
    text: str, folder: Path, ledger: SqliteLedger, campaign: str, *, again: tuple[str, ...] = ()
) -> tuple[IntakeReport, list]:
    """Validate ``text`` as a file of ``campaign`` with the ledger's digests (``again``: the
    files whose letters are sent again, run --send-again-from)."""
    index, contents = folder_index(folder), folder_contents(folder)
    rows: list[dict] = []
    report = validate_recipients(
        io.BytesIO(text.encode()),
        source="incoming/b.csv",
        catalog=FakeCatalog(),
        attachments=index,
        emit=rows.append,
        contents=contents,
        sent_files=SentFiles(
            ledger,
            index,
            contents,
            campaign=campaign,
            recipient=recipient_key,
            send_again_from=again,
        ),
    )
    return report, rows


KIM = "kim@example.com,Kim Example,active,kim.pdf\r\n"
OTHER_CAMPAIGN_REASON = (
    "kim.pdf has the same contents as anna.pdf, which a run of a.csv (campaign c-a) sent to"
    " another recipient (a***@example.com) as their own letter (row 2 of that run): this row"
    " names a copy of that person's letter, so it is not sent (name this recipient's own file"
    " in Attachment_File, then run the file again)"
)


def test_the_very_file_another_campaign_sent_is_not_to_be_overwritten(folder, ledger):
    # GIVEN Anna's letter sent by campaign c-a, and Kim's row of c-b naming that very file
    sent(ledger, "c-a", "anna@example.com", "anna.pdf", LETTER)
    (folder / "anna.pdf").write_bytes(LETTER)
    kim = "kim@example.com,Kim Example,active,anna.pdf\r\n"

    # WHEN the file is validated
    with run(HEADER + kim, folder, ledger, "c-b")[0] as report:
        # THEN the advice is to name Kim's own file, never to put her letter in anna.pdf
        ((row, column, reason),) = reasons(report)
        assert (row, column) == (2, "Attachment_File")
        assert "own letter in" not in reason
        assert (
            "so it is not sent to this recipient. Name this recipient's own file in"
            " Attachment_File (leave that file as it is: it is what went out), then run the file"
            " again; or, if that address was wrong" in reason
        )


def test_a_copy_of_a_letter_another_campaign_sent_to_another_person_is_rejected(folder, ledger):
    # GIVEN Anna's letter sent by campaign c-a, and a copy of it named for Kim
    sent(ledger, "c-a", "anna@example.com", "anna.pdf", LETTER)
    (folder / "kim.pdf").write_bytes(LETTER)

    # WHEN a file of another campaign names it for Kim
    with run(HEADER + KIM, folder, ledger, "c-b")[0] as report:
        # THEN Kim's row is rejected, naming the earlier campaign and the masked owner
        assert reasons(report) == [(2, "Attachment_File", OTHER_CAMPAIGN_REASON)]
        assert report.valid == 0


def test_a_letter_renamed_after_it_went_out_is_rejected_for_another_recipient(folder, ledger):
    # GIVEN Alice's letter sent by this campaign, then alice.pdf renamed carol.pdf
    sent(ledger, "c-b", "alice@example.com", "alice.pdf", LETTER)
    (folder / "carol.pdf").write_bytes(LETTER)

    # WHEN Carol's row names it
    carol = "carol@example.com,Carol Example,active,carol.pdf\r\n"
    with run(HEADER + carol, folder, ledger, "c-b")[0] as report:
        # THEN it is rejected as a copy of the earlier letter of this file
        assert reasons(report) == [
            (
                2,
                "Attachment_File",
                "carol.pdf has the same contents as alice.pdf, which an earlier run of this file"
                " sent to another recipient (a***@example.com) as their own letter (row 2 of that"
                " run): this row names a copy of that person's letter, so it is not sent (name"
                " this recipient's own file in Attachment_File, then run the file again)",
            )
        ]


def test_the_same_letter_to_the_same_person_in_a_new_campaign_is_held_back(folder, ledger):
    # GIVEN Anna's letter sent by c-a (a.csv); her file again, under another name
    sent(ledger, "c-a", "anna@example.com", "anna.pdf", LETTER)
    (folder / "anna-again.pdf").write_bytes(LETTER)

    # WHEN a new campaign names it for Anna, her address in another case
    anna = "ANNA@example.com,Anna Example,active,anna-again.pdf\r\n"
    report, rows = run(HEADER + anna, folder, ledger, "c-b")

    # THEN her row is not sent: held back as sent under a.csv, saying when and the way out
    with report:
        assert rows == []
        assert reasons(report) == []
        [held] = report.skipped.first(None)
        assert held["row"] == 2 and held["outcome"] == "already sent"
        assert held["file"] == "a.csv"
        assert held["reason"].startswith(
            "this address already received this letter (anna.pdf, the same contents) under"
            " a.csv (campaign c-a) on "
        )
        assert held["reason"].endswith(
            "UTC, as row 2 of that run: it is not sent again. If it is meant to go again, run"
            " this file with --send-again-from a.csv"
        )
        assert report.sent_under == {"a.csv": 1}


def test_the_same_letter_failed_as_outcome_unknown_elsewhere_is_held_as_maybe_sent(folder, ledger):
    # GIVEN Anna's letter of c-a (a.csv) failed as OutcomeUnknown: the server may have taken it
    key, recipient = "c-a:anna@example.com", recipient_key("c-a", "anna@example.com")
    owner = ("anna.pdf", recipient, mask("anna@example.com"))
    assert ledger.claim(key, campaign="c-a", row=2, attempt="a", owner=owner).state == "claimed"
    digest = hashlib.sha256(LETTER).hexdigest()
    file = LetterFile("anna.pdf", len(LETTER), digest, sample_print(LETTER), recipient, "a***")
    ledger.record_failed(
        key,
        code=OUTCOME_UNKNOWN,
        reason="timed out",
        permanent=True,
        file=file._replace(source="a.csv"),
    )
    (folder / "anna-again.pdf").write_bytes(LETTER)

    # WHEN a new campaign names her file for her
    anna = "anna@example.com,Anna Example,active,anna-again.pdf\r\n"
    report, rows = run(HEADER + anna, folder, ledger, "c-b")

    # THEN her row is held back as it may have been sent (in doubt), not as already sent
    with report:
        assert rows == []
        [held] = report.skipped.first(None)
        assert (held["row"], held["outcome"], held["file"]) == (
            2,
            "may have been sent (in doubt)",
            "a.csv",
        )
        assert "already received" not in held["reason"]
        assert "which failed as OutcomeUnknown" in held["reason"]


def test_the_same_letter_to_the_same_person_is_sent_again_when_its_file_is_named(folder, ledger):
    # GIVEN Anna's letter sent by c-a (a.csv); her file again, under another name
    sent(ledger, "c-a", "anna@example.com", "anna.pdf", LETTER)
    (folder / "anna-again.pdf").write_bytes(LETTER)

    # WHEN a new campaign names it for Anna, a.csv named to send again
    anna = "anna@example.com,Anna Example,active,anna-again.pdf\r\n"
    report, rows = run(HEADER + anna, folder, ledger, "c-b", again=("a.csv",))

    # THEN her row is sent
    with report:
        assert [row["row"] for row in rows] == [2]
        assert reasons(report) == [] and len(report.skipped) == 0


def test_a_file_of_the_same_name_with_new_contents_is_free_in_another_campaign(folder, ledger):
    # GIVEN letter-001.pdf sent to Anna by c-a; a new batch regenerated it for Kim, same size
    sent(ledger, "c-a", "anna@example.com", "letter-001.pdf", LETTER)
    (folder / "letter-001.pdf").write_bytes(LETTER.replace(b"Anna", b"Kim!"))

    # WHEN the new campaign names it for Kim
    kim = "kim@example.com,Kim Example,active,letter-001.pdf\r\n"
    report, rows = run(HEADER + kim, folder, ledger, "c-b")

    # THEN it is sent: only the contents decide across campaigns
    with report:
        assert [row["row"] for row in rows] == [2]


def test_the_very_name_of_this_campaigns_letter_is_left_to_the_claim(folder, ledger):
    # GIVEN Alice's letter sent by this campaign with alice.pdf, still there
    sent(ledger, "c-b", "alice@example.com", "alice.pdf", LETTER)
    (folder / "alice.pdf").write_bytes(LETTER)

    # WHEN Bob's row names alice.pdf itself
    bob = "bob@example.com,Bob Example,active,alice.pdf\r\n"
    report, rows = run(HEADER + bob, folder, ledger, "c-b")

    # THEN intake passes it on: the claim refuses it by name (AttachmentOfAnother), as before
    with report:
        assert [row["row"] for row in rows] == [2]


def test_a_file_of_no_letters_size_is_not_read(folder, ledger, monkeypatch):
    # GIVEN a letter sent with a file of another size than Kim's
    sent(ledger, "c-a", "anna@example.com", "anna.pdf", LETTER)
    (folder / "kim.pdf").write_bytes(LETTER + b"!")
    asked: list[int] = []
    real = ledger.sent_copies
    monkeypatch.setattr(ledger, "sent_copies", lambda size, p: asked.append(size) or real(size, p))

    # WHEN Kim's row is validated THEN it is sent, the ledger not asked for that size
    report, rows = run(HEADER + KIM, folder, ledger, "c-b")
    with report:
        assert [row["row"] for row in rows] == [2]
    assert asked == []


def test_a_copy_of_a_letter_whose_file_was_replaced_since_is_rejected(folder, ledger):
    # GIVEN Alice's letter sent by this campaign; alice.pdf since replaced by a new letter of
    # the same size, and carol.pdf a copy of the one that went out
    sent(ledger, "c-b", "alice@example.com", "alice.pdf", LETTER)
    (folder / "alice.pdf").write_bytes(LETTER.replace(b"Anna", b"Alix"))
    (folder / "carol.pdf").write_bytes(LETTER)

    # WHEN Carol's row names carol.pdf
    carol = "carol@example.com,Carol Example,active,carol.pdf\r\n"
    report, rows = run(HEADER + carol, folder, ledger, "c-b")

    # THEN it is rejected: the ledger's digest tells what went out, not the file there now
    with report:
        assert rows == []
        assert [reason[2][:45] for reason in reasons(report)] == [
            "carol.pdf has the same contents as alice.pdf,"
        ]


def test_the_file_of_a_letter_the_run_skips_is_not_asked_after(folder, ledger, monkeypatch):
    # GIVEN Anna's letter sent by campaign c-a, and a copy of it named for Kim
    sent(ledger, "c-a", "anna@example.com", "anna.pdf", LETTER)
    (folder / "kim.pdf").write_bytes(LETTER)
    index, contents = folder_index(folder), folder_contents(folder)
    asked: list[tuple[str, str]] = []

    def skipped(email: str, template: str) -> bool:
        asked.append((email, template))
        return True  # as if Kim's letter were settled: the run skips it

    copies: list[int] = []
    real = ledger.sent_copies
    monkeypatch.setattr(ledger, "sent_copies", lambda *a: copies.append(1) or real(*a))
    rows: list[dict] = []

    # WHEN a file of campaign c-b naming it is validated, its letter one the run skips
    report = validate_recipients(
        io.BytesIO((HEADER + KIM).encode()),
        source="incoming/b.csv",
        catalog=FakeCatalog(),
        attachments=index,
        emit=rows.append,
        contents=contents,
        sent_files=SentFiles(
            ledger, index, contents, campaign="c-b", recipient=recipient_key, skipped=skipped
        ),
    )

    # THEN the row passes (its letter goes nowhere) and the ledger is not asked about its file
    with report:
        assert reasons(report) == []
    assert [row["row"] for row in rows] == [2]
    assert asked == [("kim@example.com", rows[0]["template"])]
    assert copies == []
