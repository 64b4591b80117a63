"""A letter sent that the SQLite ledger cannot record: kept in the journal beside it, counted
as sent by every claim, recorded in the ledger at its next writable open."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from mailmatrix.adapters import ledger_sqlite
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.sent_journal import SentJournal
from mailmatrix.core.failures import NOT_SENT_TWICE, WRITABLE_REMEDY, Stopped, redrive_advice
from mailmatrix.errors import LedgerError
from mailmatrix.ports import SENT, Claim, LetterFile, Outcome, SentCopy
from tests.fixtures.sending.kit import FakeClock

# A busy timeout and a patience far shorter than the ledger's own, so that a lock held for
# the whole of a test outlasts them both
SHORT = {"busy_timeout": 0.01, "sent_patience": 0.05}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=5000.0)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


@contextmanager
def held_exclusive(path: Path) -> Iterator[None]:
    """Another connection holding the ledger's write lock (BEGIN EXCLUSIVE) meanwhile."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def test_a_letter_sent_while_the_ledger_is_locked_is_kept_and_never_sent_again(
    tmp_path, clock, stack
):
    # GIVEN a worker's ledger that claimed row 2, and another worker's, both open
    path = tmp_path / "ledger.sqlite3"
    worker = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))
    other = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))
    lease = clock.now + 60
    assert worker.claim("k1", campaign="c", row=2, attempt="a", lease_until=lease).state == (
        "claimed"
    )

    with held_exclusive(path):
        # WHEN its letter went out, and another connection holds the ledger's write lock past
        # the busy timeout and the patience of record_sent
        worker.record_sent("k1", message_id="m-1")

        # THEN the letter is kept in the journal beside the ledger
        journal = Path(f"{path}-sent")
        assert journal.exists()
        # AND once its claim's lease has passed, a claim of the row in the other worker (a
        # takeover, as the lock still holds) says it was sent, by the attempt that sent it
        clock.sleep(61)
        taken = other.claim("k1", campaign="c", row=2, attempt="b")
        assert taken == Claim("sent", message_id="m-1", attempt="a")

    # WHEN the ledger is next opened to write (the lock gone)
    reopened = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))

    # THEN the letter is recorded sent in it, and the journal removed
    assert not journal.exists()
    assert reopened.outcomes("c") == [
        Outcome(key="k1", row=2, state="sent", message_id="m-1", attempt="a", takeovers=0)
    ]
    # AND a claim in the other worker, which had read the journal, still says sent
    assert other.claim("k1", campaign="c", row=2, attempt="b").state == "sent"


def test_a_journal_that_cannot_be_replayed_yet_stays(tmp_path, clock, stack):
    # GIVEN a letter kept in the journal while the ledger was locked
    path = tmp_path / "ledger.sqlite3"
    worker = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))
    worker.claim("k1", campaign="c", row=2, attempt="a", lease_until=clock.now + 60)
    with held_exclusive(path):
        worker.record_sent("k1", message_id="m-1")

        # WHEN the ledger is opened while it is still locked
        reader = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))

        # THEN the journal stays, and its letter counts as sent there
        assert Path(f"{path}-sent").exists()
        assert reader.claim("k1", campaign="c", row=2, attempt="b").state == "sent"


def test_a_letter_neither_the_ledger_nor_its_journal_can_keep_is_said_in_doubt(
    tmp_path, clock, stack
):
    # GIVEN a claimed row whose ledger is locked, and a journal that cannot be written (a
    # folder stands where it would be)
    path = tmp_path / "ledger.sqlite3"
    worker = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))
    worker.claim("k1", campaign="c", row=7, attempt="a", lease_until=clock.now + 60)
    os.mkdir(f"{path}-sent")

    # WHEN its letter goes out
    with held_exclusive(path), pytest.raises(LedgerError) as raised:
        worker.record_sent("k1", message_id="m-1")

    # THEN the error names the row in doubt, and what a redrive does with it
    message = str(raised.value)
    assert "database is locked" in message
    assert "the letter of row 7 was sent but could not be recorded" in message
    assert "once the mail server's log shows whether it arrived, settle it" in message

    # AND the advice of the run it stopped does not say that nothing was sent twice
    stopped = Stopped(batches=[("LedgerError", message)])
    advice = redrive_advice("FAILED", "States.ExceedToleratedFailureThreshold", "", stopped)
    assert NOT_SENT_TWICE not in advice
    assert "Nothing was sent twice" not in advice
    assert advice.startswith(
        "the send ledger could not be written (see above), nor the journal beside it: row 7"
        " went to the mail server (or the outbox) and could not be recorded as sent. A redrive"
        " sends it again, marked as a possible duplicate, unless the server's log (or the"
        f" outbox) shows it arrived. First {WRITABLE_REMEDY}, look there for row 7"
    )


def test_rows_in_doubt_from_several_batches_are_named_together():
    # GIVEN two batches whose ledger met the file size limit, neither journal written
    doubt = "; the letter of row {} was sent but could not be recorded, nor kept in x (No space)"
    limit = "ledger l: record_sent k: cannot write the ledger: the file size limit of this process"
    messages = [limit + doubt.format(12), limit, limit + doubt.format(3)]
    stopped = Stopped(batches=[("LedgerNotWritten", message) for message in messages])

    # WHEN the advice is written
    advice = redrive_advice("FAILED", "States.ExceedToleratedFailureThreshold", "", stopped)

    # THEN it names both rows and the remedy for want of room, and never says nothing was
    # sent twice
    assert "rows 3, 12 went to the mail server" in advice
    assert "First free space on its disk, or raise the file size limit (ulimit -f)" in advice
    assert "Nothing was sent twice" not in advice


@pytest.mark.parametrize(
    "line",
    [
        b"null",
        b"[]",
        b"1",
        b'"x"',
        b'{"key":"k9","message_id":"m-9","uncertain":"false","attempt":"a","at":1.0}',
        b'{"key":"k9","message_id":"m-9","uncertain":false,"attempt":"a","at":1.0,'
        b'"file":"abcdefg"}',
        b'{"key":"k9","message_id":"m-9","uncertain":false,"attempt":"a","at":true}',
        b'{"key":"k1","message_id":"m-1","uncer',
    ],
    ids=["null", "list", "number", "string", "text-flag", "text-file", "bool-time", "cut"],
)
def test_a_journal_line_that_holds_no_letter_is_set_aside_said_not_a_traceback(
    tmp_path, clock, stack, caplog, line
):
    # GIVEN a letter kept in the journal while the ledger was locked, and a line after it
    # that holds no letter as the journal writes one (damaged, or written by hand)
    path = tmp_path / "ledger.sqlite3"
    worker = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))
    worker.claim("k1", campaign="c", row=2, attempt="a", lease_until=clock.now + 60)
    with held_exclusive(path):
        worker.record_sent("k1", message_id="m-1")
    journal = Path(f"{path}-sent")
    with journal.open("ab") as stream:
        stream.write(line + b"\n")

    # WHEN a claim reads the journal, and the ledger is next opened to write
    assert worker.claim("k9", campaign="c", row=9, attempt="a").state == "claimed"
    caplog.set_level("WARNING")
    reopened = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))

    # THEN the letter it holds is recorded sent, the line holds no letter (row 9 is not sent)
    states = {o.key: o.state for o in reopened.outcomes("c")}
    assert states == {"k1": "sent", "k9": "claimed"}
    # AND the journal is not removed but set aside, and that is said
    assert not journal.exists()
    (aside,) = tmp_path.glob("ledger.sqlite3-sent.damaged-*")
    assert line in aside.read_bytes()
    said = caplog.text
    assert "1 line(s) of the journal of letters sent and not recorded could not be read" in said
    assert aside.name in said


def test_a_folder_in_the_place_of_the_journal_is_named_before_anything_is_sent(
    tmp_path, clock, stack
):
    from mailmatrix.errors import LedgerNotWritten

    # GIVEN a ledger with a folder where its journal would be
    path = tmp_path / "ledger.sqlite3"
    worker = stack.enter_context(closing(SqliteLedger(path, clock=clock, **SHORT)))
    os.mkdir(f"{path}-sent")

    # WHEN a row is claimed (before its letter is sent) THEN it is refused, naming the
    # folder, saying nothing was sent and what to do, in an error no retry repeats
    with pytest.raises(LedgerNotWritten) as raised:
        worker.claim("k1", campaign="c", row=2, attempt="a", lease_until=clock.now + 60)
    message = str(raised.value)
    assert message.startswith(f"{path}-sent: not a file (a folder, or another kind of file")
    assert "nothing was sent. Move it aside" in message


@pytest.mark.parametrize("source", ["recipients.csv", None], ids=["with-source", "older"])
def test_a_kept_letter_with_its_file_reads_back_as_written(source):
    from mailmatrix.adapters.sent_journal import KeptLetter, _letter
    from mailmatrix.ports import LetterFile

    # GIVEN a letter that carried its recipient's own file, as the journal writes it (a line
    # of a version that kept no source: its file's last field left out)
    file = LetterFile("amelia-hart.pdf", 17510, "29" * 32, "8c4d959a", "83" * 32, "a***@x.org")
    if source:
        file = file._replace(source=source)
    letter = KeptLetter("k1", "m-1@example.com", False, "attempt-a", 5000.5, file)
    line = letter.line().strip()
    if not source:
        line = line.replace(b',""]', b"]")

    # WHEN it is read back THEN it is the same letter
    assert _letter(line) == letter


def _files_beside(path: Path) -> dict[str, bytes]:
    """The files of the ledger's folder, with their contents."""
    return {file.name: file.read_bytes() for file in sorted(path.parent.iterdir())}


def _kept_in_journal(path: Path, clock: FakeClock, file: LetterFile | None = None) -> None:
    """A ledger at ``path`` whose row 2 (k1) is sent and recorded, and whose row 3 (k2) is
    sent and kept in the journal (the ledger was locked), carrying ``file``; all closed."""
    with closing(SqliteLedger(path, clock=clock, **SHORT)) as worker:
        worker.claim("k1", campaign="c", row=2, attempt="a")
        worker.record_sent("k1", message_id="m-1")
        owner = None if file is None else (file.name, file.recipient, file.masked)
        worker.claim("k2", campaign="c", row=3, attempt="a", owner=owner)
        with held_exclusive(path):
            worker.record_sent("k2", message_id="m-2", uncertain=True, file=file)
    assert Path(f"{path}-sent").exists()


def test_a_read_only_open_counts_the_journal_s_letters_as_sent_and_writes_nothing(tmp_path, clock):
    # GIVEN a ledger whose row 3 was sent, with its own file, and kept in the journal
    path = tmp_path / "ledger.sqlite3"
    file = LetterFile("b.pdf", 10, "e" * 64, "12345678", "r-jose", "j***@x.org", "c.csv")
    _kept_in_journal(path, clock, file)
    before = _files_beside(path)
    assert sorted(before) == ["ledger.sqlite3", "ledger.sqlite3-lock", "ledger.sqlite3-sent"]
    kept_at = SentJournal(str(path)).letters()["k2"].at

    # WHEN it is opened read-only (validate, show) where it could be written
    with closing(SqliteLedger(path, clock=clock, read_only=True)) as reader:
        # THEN the letter the journal keeps reads as sent, with its file, as a run counts it
        read = (
            reader.sent_count("c"),
            list(reader.settled_keys("c")),
            reader.outcomes("c"),
            reader.sent_sizes([10]),
            list(reader.sent_copies(10, "12345678")),
        )
        assert read[:2] == (2, ["k1", "k2"])
        assert [(o.key, o.state, o.message_id, o.uncertain) for o in read[2]] == [
            ("k1", "sent", "m-1", False),
            ("k2", "sent", "m-2", True),
        ]
        assert read[3:] == (
            {10},
            [SentCopy("c", "b.pdf", "r-jose", 3, "j***@x.org", "e" * 64, "c.csv", kept_at, SENT)],
        )

    # AND nothing was written: not the ledger, nor the journal, nor a file beside them (no
    # -wal, -shm or lock file)
    assert _files_beside(path) == before

    # WHEN it is next opened to write THEN the journal is replayed: it reads as it was read
    with closing(SqliteLedger(path, clock=clock)) as writer:
        assert not Path(f"{path}-sent").exists()
        assert writer.outcomes("c") == read[2]
        assert list(writer.sent_copies(10, "12345678")) == read[4]


def test_a_read_only_open_reads_the_letters_a_run_holds_in_its_wal_file(tmp_path, clock):
    # GIVEN a run's ledger, open, that recorded a letter (in its -wal file)
    path = tmp_path / "ledger.sqlite3"
    with closing(SqliteLedger(path, clock=clock)) as run:
        run.claim("k1", campaign="c", row=2, attempt="a")
        run.record_sent("k1", message_id="m-1")
        before = sorted(_files_beside(path))
        assert "ledger.sqlite3-wal" in before

        # WHEN it is read meanwhile THEN the letter is read, and no file is made
        with closing(SqliteLedger(path, clock=clock, read_only=True)) as reader:
            assert reader.sent_count("c") == 1
        assert sorted(_files_beside(path)) == before


@pytest.mark.skipif(ledger_sqlite._LOCK_WITHOUT_WAITING is None, reason="no OFD locks here")
def test_a_writer_that_ends_while_a_reader_reads_leaves_the_file_as_the_reader_found_it(
    tmp_path, clock
):
    # GIVEN a ledger no run has open (no -wal file), read (as immutable)
    path = tmp_path / "ledger.sqlite3"
    with closing(SqliteLedger(path, clock=clock)) as first:
        first.claim("k1", campaign="c", row=2, attempt="a")
        first.record_sent("k1", message_id="m-1")
    main_file = path.read_bytes()
    with closing(SqliteLedger(path, clock=clock, read_only=True)) as reader:
        assert reader.sent_count("c") == 1

        # WHEN a run opens it meanwhile, records a letter and ends
        with closing(SqliteLedger(path, clock=clock)) as run:
            run.claim("k2", campaign="c", row=3, attempt="b")
            run.record_sent("k2", message_id="m-2")

        # THEN its letter stays in its -wal file, not written into the file being read
        assert path.read_bytes() == main_file
        assert Path(f"{path}-wal").exists()
        assert reader.sent_count("c") == 1

    # AND the next open reads it
    with closing(SqliteLedger(path, clock=clock, read_only=True)) as later:
        assert later.sent_count("c") == 2


def test_a_journal_whose_lines_all_hold_no_letter_is_not_said_recorded(tmp_path, clock, caplog):
    # GIVEN a ledger whose journal holds one line, damaged
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path, clock=clock).close()
    Path(f"{path}-sent").write_bytes(b'{"key":"k1","message_id":"m-1","uncer\n')

    # WHEN it is opened to write
    caplog.set_level("INFO")
    SqliteLedger(path, clock=clock).close()

    # THEN the damaged line is said, and no letter is said recorded
    assert "1 line(s) of the journal of letters sent and not recorded" in caplog.text
    assert "recorded 0 letter(s)" not in caplog.text
    assert "letter(s) kept in the journal" not in caplog.text
