"""The SQLite send ledger: claims, leases, takeovers, halts, outcomes, and many threads at once."""

from __future__ import annotations

import functools
import multiprocessing
import os
import resource
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from typing import Any

import pytest

from mailmatrix.adapters import ledger_sqlite
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.doubts import described, when
from mailmatrix.errors import LedgerError, LedgerNotWritten
from mailmatrix.ports import (
    DEFAULT_CLAIM_LEASE_SECONDS,
    SENT,
    Claim,
    FileOwner,
    Halt,
    LetterFile,
    LetterPrint,
    Outcome,
    SentCopy,
)
from mailmatrix.processes import process_token
from tests.fixtures.sending.kit import FakeClock
from tests.fixtures.sending.ledger_contract import (
    OTHER_LETTER_CASES,
    PRINT_CHECKS,
    SET_CHECKS,
    check_attachment_owner,
    check_attachment_owner_rules,
    check_batch_holds,
    check_campaign_status,
    check_doubts_and_settle,
    check_earlier_recipients,
    check_exclusive_claim,
    check_exclusive_claim_order,
    check_file_owners,
    check_file_owners_by_state,
    check_latest_upload,
    check_letters_of_sets,
    check_names,
    check_outcomes_of,
    check_release_failed,
    check_sent_copies,
    check_settled_keys,
    check_template_sets,
    check_unanswered,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=5000.0)


@pytest.fixture
def ledger(tmp_path, clock) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(str(tmp_path / "ledger.db"), clock=clock)) as kept:
        yield kept


class _Opened:
    """Opens ledgers for one test, each closed when the test ends."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack

    def __call__(self, path: str, **kwargs: Any) -> SqliteLedger:
        return self._stack.enter_context(closing(SqliteLedger(path, **kwargs)))

    def from_url(self, url: str) -> SqliteLedger:
        return self._stack.enter_context(closing(SqliteLedger.from_url(url)))


@pytest.fixture
def opened() -> Iterator[_Opened]:
    with ExitStack() as stack:
        yield _Opened(stack)


def claim(ledger, key="k1", attempt="a", lease_until=None, row=2):
    return ledger.claim(key, campaign="c", row=row, attempt=attempt, lease_until=lease_until)


def test_a_new_key_is_claimed_then_sent_then_skipped(ledger):
    assert claim(ledger) == Claim("claimed")
    ledger.record_sent("k1", message_id="m-1")

    assert claim(ledger, attempt="b") == Claim("sent", message_id="m-1", attempt="a")
    assert ledger.outcomes("c") == [
        Outcome(key="k1", row=2, state="sent", message_id="m-1", attempt="a", takeovers=0)
    ]


def test_another_attempt_is_busy_while_the_lease_holds(ledger, clock):
    claim(ledger, attempt="a", lease_until=clock.now + 60)

    assert claim(ledger, attempt="b") == Claim(
        "busy", reason=f"claimed by attempt a until {clock.now + 60:.3f}", attempt="a"
    )


def test_another_attempt_takes_over_once_the_lease_has_passed(ledger, clock):
    claim(ledger, attempt="a", lease_until=clock.now + 60)
    clock.sleep(61)

    taken = claim(ledger, attempt="b")

    assert taken == Claim("claimed", reason="taken over from attempt a", attempt="a")
    assert [(o.attempt, o.takeovers) for o in ledger.outcomes("c")] == [("b", 1)]


def test_the_same_attempt_takes_over_its_dead_predecessors_claim_at_once(ledger, clock):
    claim(ledger, attempt="child-1", lease_until=clock.now + 600)

    again = claim(ledger, attempt="child-1")

    assert again.state == "claimed"
    assert again.reason == "taken over from attempt child-1"
    assert ledger.outcomes("c")[0].takeovers == 1


def test_the_default_lease_is_the_longest_lambda_invocation(ledger, clock):
    claim(ledger, attempt="a")
    clock.sleep(DEFAULT_CLAIM_LEASE_SECONDS - 1)
    assert claim(ledger, attempt="b").state == "busy"
    clock.sleep(2)
    assert claim(ledger, attempt="b").state == "claimed"


def test_a_claim_given_its_lease_reads_the_clock_once(tmp_path, clock):
    # GIVEN a ledger whose clock counts its reads
    reads: list[float] = []

    def counted() -> float:
        reads.append(clock.now)
        return clock.now

    with closing(SqliteLedger(str(tmp_path / "ledger.db"), clock=counted)) as ledger:
        # WHEN a row is claimed with its lease given
        lease = clock.now + 60
        granted = ledger.claim("k1", campaign="c", row=2, attempt="a", lease_until=lease)

        # THEN the clock was read once (the claim's time), not again for a lease not needed
        assert granted == Claim("claimed")
        assert len(reads) == 1
        # AND the lease given is the one a record of the letter waits within
        assert ledger._claimed["k1"] == (2, lease, "a")


def test_a_permanent_failure_is_final_and_keeps_its_reason(ledger):
    claim(ledger)
    ledger.record_failed("k1", code="MessageRejected", reason="not verified", permanent=True)

    assert claim(ledger, attempt="b") == Claim(
        "failed", code="MessageRejected", reason="not verified", attempt="a"
    )


def test_a_passing_failure_releases_the_claim_for_anyone(ledger):
    claim(ledger, attempt="a")
    ledger.record_failed("k1", code="Throttling", reason="slow down", permanent=False)

    assert claim(ledger, attempt="b") == Claim("claimed")
    assert ledger.outcomes("c")[0].takeovers == 0


def test_a_late_failure_never_overwrites_a_sent_key(ledger):
    claim(ledger)
    ledger.record_sent("k1", message_id="m-1")
    ledger.record_failed("k1", code="X", reason="late", permanent=True)

    assert ledger.outcomes("c")[0].state == "sent"
    assert ledger.outcomes("c")[0].message_id == "m-1"


def test_halt_is_recorded_replaced_and_cleared(ledger, clock):
    assert ledger.halted("c") is None
    ledger.halt("c", code="Throttling", reason="Daily message quota exceeded.", attempt="a")
    clock.sleep(5)
    ledger.halt("c", code="SendingPausedException", reason="paused", attempt="b")

    assert ledger.halted("c") == Halt(
        campaign="c", code="SendingPausedException", reason="paused", attempt="b", at=5005.0
    )
    assert ledger.halted("other") is None
    ledger.clear_halt("c")
    assert ledger.halted("c") is None


def test_outcomes_are_per_campaign_in_row_order_and_found_by_message_id(ledger):
    for row in (5, 2, 9):
        ledger.claim(f"k{row}", campaign="c", row=row, attempt="a")
    ledger.claim("other", campaign="d", row=1, attempt="a")
    ledger.record_sent("k9", message_id="m-9")

    assert [o.row for o in ledger.outcomes("c")] == [2, 5, 9]
    assert ledger.find_by_message_id("m-9").key == "k9"
    assert ledger.find_by_message_id("nope") is None


def test_the_ids_of_letters_sent_tell_the_outbox_from_a_mail_server(ledger, tmp_path):
    from mailmatrix.adapters.mailer_maildir import NAME_GLOB, MaildirMailer

    # GIVEN letters recorded sent: one with the name the outbox gave its file, one with the
    # Message-ID a mail server's letter keeps, one with the outbox's name of earlier versions
    outbox = MaildirMailer(tmp_path / "outbox")
    name = outbox.send(
        b"Subject: x\r\n\r\nx\r\n", sender="a@example.com", destinations=["b@example.com"]
    )
    sent = {"outbox": name, "server": "3f2a9c@example.com", "earlier": "1796517583.M9f3eP22.vm"}
    for key, message_id in sent.items():
        ledger.claim(key, campaign=key, row=2, attempt="a")
        ledger.record_sent(key, message_id=message_id)
    ledger.claim("both", campaign="outbox", row=3, attempt="a")

    # THEN each campaign's letters are told apart by their ids (a claim not sent counts not)
    assert ledger.sent_ids_named("outbox", NAME_GLOB) == (True, False)
    assert ledger.sent_ids_named("server", NAME_GLOB) == (False, True)
    assert ledger.sent_ids_named("earlier", NAME_GLOB) == (True, False)
    assert ledger.sent_ids_named("none", NAME_GLOB) == (False, False)
    ledger.record_sent("both", message_id="<1796517583.M1P2Q3Rab.host@example.com>")
    assert ledger.sent_ids_named("outbox", NAME_GLOB) == (True, True)


def test_the_ledger_survives_reopening(tmp_path, opened):
    path = str(tmp_path / "ledger.db")
    first = opened(path)
    first.claim("k1", campaign="c", row=2, attempt="a")
    first.record_sent("k1", message_id="m-1")
    first.close()

    assert opened.from_url(f"sqlite://{path}").claim(
        "k1", campaign="c", row=2, attempt="b"
    ) == Claim("sent", message_id="m-1", attempt="a")


def test_a_bad_url_or_path_is_a_ledger_error(tmp_path):
    with pytest.raises(LedgerError, match="not a sqlite:// URL"):
        SqliteLedger.from_url("dynamodb://table")
    with pytest.raises(LedgerError, match="cannot open"):
        SqliteLedger(str(tmp_path / "missing-dir" / "ledger.db"))


def test_a_file_that_is_not_a_ledger_is_refused_and_its_connection_closed(tmp_path, monkeypatch):
    # GIVEN a file that is not a SQLite database where the ledger should be, and every
    # connection the ledger opens
    path = tmp_path / "ledger.db"
    path.write_bytes(b"not a database, " * 64)
    connections: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recorded(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connections.append(connect(*args, **kwargs))
        return connections[-1]

    monkeypatch.setattr(sqlite3, "connect", recorded)

    # WHEN it is opened THEN it is refused
    with pytest.raises(LedgerError, match="cannot open: file is not a database"):
        SqliteLedger(str(path))

    # AND the connection it made is closed, not left to the garbage collector
    assert len(connections) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connections[0].execute("SELECT 1")


def race(*workers: Callable[[], list[str]]) -> Counter[str]:
    """Run each worker on a thread of its own, all started at once; count what they won."""
    start = threading.Barrier(len(workers))
    won: list[list[str]] = []

    def run(worker: Callable[[], list[str]]) -> None:
        start.wait()
        won.append(worker())

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(name for names in won for name in names)


def test_many_threads_and_two_connections_never_claim_a_key_twice(tmp_path, opened):
    # GIVEN two ledger objects on one file (like two processes) and 8 threads racing
    path = str(tmp_path / "ledger.db")
    ledgers = [opened(path), opened(path)]
    keys = [f"k{n}" for n in range(150)]

    def worker(number: int) -> list[str]:
        ledger, attempt = ledgers[number % 2], f"w{number}"
        claims = {key: ledger.claim(key, campaign="c", row=2, attempt=attempt) for key in keys}
        return [key for key, got in claims.items() if got.state == "claimed"]

    wins = race(*(functools.partial(worker, n) for n in range(8)))

    # THEN every key was claimed by exactly one attempt; the others were told it is busy
    assert wins == Counter({key: 1 for key in keys})
    assert {o.state for o in ledgers[0].outcomes("c")} == {"claimed"}


def test_threads_on_two_connections_claim_one_letter_per_address(tmp_path, opened):
    # GIVEN two ledger objects on one file (like two processes), and for each of 100
    # addresses one thread claiming its offer while another claims its rejection
    path = str(tmp_path / "ledger.db")
    ledgers = [opened(path), opened(path)]
    addresses = [f"person{n}" for n in range(100)]

    def worker(mine: str, theirs: str, ledger: SqliteLedger) -> list[str]:
        claims = {
            address: ledger.claim(
                f"{address}|{mine}",
                campaign="c",
                row=2,
                attempt=mine,
                others={f"{address}|{theirs}": theirs},
            )
            for address in addresses
        }
        return [address for address, got in claims.items() if got.state == "claimed"]

    wins = race(
        functools.partial(worker, "offer", "rejection", ledgers[0]),
        functools.partial(worker, "rejection", "offer", ledgers[1]),
    )

    # THEN each address had one of its two letters claimed, never both
    assert wins == Counter(dict.fromkeys(addresses, 1))
    assert len(ledgers[0].outcomes("c")) == len(addresses)


def test_threads_on_two_connections_send_one_file_to_one_recipient(tmp_path, opened):
    # GIVEN two ledger objects on one file (like two batches at once), and for each of 100
    # files one thread claiming it for Ann while another claims it for Bob
    path = str(tmp_path / "ledger.db")
    ledgers = [opened(path), opened(path)]
    files = [f"letter-{n}.pdf" for n in range(100)]

    def worker(recipient: str, ledger: SqliteLedger) -> list[str]:
        claims = {
            name: ledger.claim(
                f"{recipient}|{name}",
                campaign="c",
                row=2,
                attempt=recipient,
                owner=(name, recipient),
            )
            for name in files
        }
        return [name for name, got in claims.items() if got.state == "claimed"]

    wins = race(
        functools.partial(worker, "ann", ledgers[0]), functools.partial(worker, "bob", ledgers[1])
    )

    # THEN each file was claimed for one of the two, never both, and nothing else was written
    assert wins == Counter(dict.fromkeys(files, 1))
    assert len(ledgers[0].outcomes("c")) == len(files)


def test_threads_on_two_connections_send_one_letter_of_a_set_per_address(tmp_path, opened):
    # GIVEN two ledger objects on one file (like two files run at once: a re-export beside
    # the original), and for each of 100 addresses one thread claiming its letter of the set
    # under each file, the texts differing (a name spelt anew)
    path = str(tmp_path / "ledger.db")
    ledgers = [opened(path), opened(path)]
    people = [f"person{n}" for n in range(100)]

    def worker(campaign: str, ledger: SqliteLedger) -> list[str]:
        def letter(person: str) -> LetterPrint:
            return LetterPrint(
                campaign, f"{campaign}-{person}", "", frozenset(), person=person, template="absage"
            )

        claims = {
            person: ledger.claim(
                f"{campaign}|{person}",
                campaign=campaign,
                row=2,
                attempt=campaign,
                letter=letter(person),
            )
            for person in people
        }
        return [p for p, got in claims.items() if got.state == "claimed" and got.held is None]

    wins = race(
        functools.partial(worker, "c-old", ledgers[0]),
        functools.partial(worker, "c-new", ledgers[1]),
    )

    # THEN each address got its letter of the set under one file, never under both: the
    # other file's claim waited for it (busy) or found it gone
    assert wins == Counter(dict.fromkeys(people, 1))


def test_a_letter_of_a_set_claimed_after_validation_looked_is_held_by_the_claim(ledger):
    # GIVEN a re-export validated while the ledger held no letter of the set to the address
    assert ledger.letters_of_sets("c-new", {"s1": "absage"}) == {}
    mine = LetterPrint("c-new", "p-new", "neu.csv", frozenset(), person="s1", template="absage")

    # WHEN the original file's letter is claimed meanwhile, then the re-export's
    rival = LetterPrint("c-old", "p-old", "alt.csv", frozenset(), person="s1", template="absage")
    assert ledger.claim("k-old", campaign="c-old", row=57, attempt="o", letter=rival).held is None
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)
    waiting = ledger.claim("k-new", campaign="c-new", row=2, attempt="n", letter=mine)

    # THEN the re-export's claim waits for it (busy), nothing written; its one insert looked
    # for the set's letter as it went, and only then was it read to be named
    assert waiting.state == "busy" and "being sent under alt.csv" in str(waiting.reason)
    assert ledger.outcomes("c-new") == []
    assert statements[1].split()[0] == "INSERT" and "letter_person" in statements[1]

    # WHEN the original's letter went out THEN the re-export's is held back, named by its set
    ledger.record_sent("k-old", message_id="m-old")
    held = ledger.claim("k-new", campaign="c-new", row=2, attempt="n", letter=mine).held
    assert held is not None and (held.source, held.row, held.template) == ("alt.csv", 57, "absage")


def test_a_claim_of_a_new_letter_with_its_set_is_one_insert(ledger):
    # GIVEN every statement the ledger's connection runs
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)

    # WHEN a letter is claimed with its print and its address and set
    letter = LetterPrint("c", "p1", "offers.csv", frozenset(), person="s1", template="offer")
    assert ledger.claim("k1", campaign="c", row=2, attempt="a", letter=letter) == Claim("claimed")

    # THEN it is one insert that looks for the print and the set elsewhere as it goes, and
    # keeps both
    assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "COMMIT"]
    assert statements[1].count("NOT EXISTS") == 2
    assert ledger.letters_of_sets("d", {"s1": "offer"})["s1"].source == "offers.csv"


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_a_claim_is_refused_while_another_sets_letter_may_have_gone_out(ledger, clock, case):
    check_exclusive_claim(ledger, clock.sleep, case)


def test_a_rows_own_entry_is_answered_before_the_other_letters(ledger):
    check_exclusive_claim_order(ledger)


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_a_file_that_may_have_gone_to_one_recipient_is_refused_to_another(ledger, clock, case):
    check_attachment_owner(ledger, clock.sleep, case)


def test_the_file_owner_check_comes_after_the_rows_own_entry_and_keeps_to_its_campaign(ledger):
    check_attachment_owner_rules(ledger)


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_the_files_owners_are_those_whose_letter_may_have_gone_out(ledger, clock, case):
    check_file_owners_by_state(ledger, clock.sleep, case)


def test_the_files_owners_are_read_a_page_at_a_time(ledger, monkeypatch):
    monkeypatch.setattr(ledger_sqlite, "_SETTLED_PAGE", 7)
    check_file_owners(ledger)


def test_a_claim_reads_the_other_letters_only_in_a_campaign_of_several_sets(ledger):
    # GIVEN every statement the ledger's connection runs
    statements: list[str] = []
    ledger._db.set_trace_callback(statements.append)

    # WHEN a row of a campaign of one set is claimed, then one of a campaign of two
    claim(ledger, key="k1")
    ledger.claim("k2", campaign="c", row=3, attempt="a", others={"k2-other": "rejection"})

    # THEN each is one insert in its transaction: the first's checks nothing, the second's
    # looks for the other letter as it inserts
    assert [s.split()[0] for s in statements] == [
        *("BEGIN", "INSERT", "COMMIT"),
        *("BEGIN", "INSERT", "COMMIT"),
    ]
    assert "'k2-other'" not in statements[1] and "NOT EXISTS" not in statements[1]
    assert "NOT EXISTS" in statements[4] and "'k2-other'" in statements[4]
    assert ledger.outcomes_of(["k2"])["k2"].state == "claimed"


def test_a_sent_rows_claim_with_its_print_and_own_file_is_one_insert_for_each(ledger):
    # GIVEN a campaign of two sets whose row 2 was claimed with its letter's print
    def letter(row: int) -> LetterPrint:
        return LetterPrint("c", f"print-{row}", source="offers.csv")

    statements: list[str] = []
    others = {"k3-other": "rejection"}
    owner = ("r3.pdf", "recipient-3", "r***@example.com")
    ledger.claim("k2", campaign="c", row=2, attempt="a", letter=letter(2))

    # WHEN row 3 is claimed, recording row 2 sent, with its print and own file
    ledger._db.set_trace_callback(statements.append)
    granted = ledger.claim(
        "k3",
        campaign="c",
        row=3,
        attempt="a",
        sent_before=("k2", "<m2@example.com>", False),
        others=others,
        owner=owner,
        letter=letter(3),
    )

    # THEN it is claimed by one insert (checking the other set's letter and the print as it
    # goes) and the file's owner by another: no read of its own
    assert granted.state == "claimed" and granted.held is None
    assert [s.split()[0] for s in statements] == ["BEGIN", "UPDATE", "INSERT", "INSERT", "COMMIT"]
    assert ledger.outcomes_of(["k2"])["k2"].state == "sent"
    # AND another campaign's letters of those prints still find them: row 2's, sent, holds
    # it back; row 3's, being sent, makes it wait
    held = ledger.claim(
        "k8", campaign="copy", row=2, attempt="b", letter=letter(2)._replace(campaign="copy")
    )
    assert held.state == "claimed" and held.held is not None and held.held.row == 2
    busy = ledger.claim(
        "k9", campaign="copy", row=3, attempt="b", letter=letter(3)._replace(campaign="copy")
    )
    assert busy.state == "busy"


def test_a_claim_records_the_previous_row_sent_in_the_same_transaction(ledger):
    assert claim(ledger, key="k1", row=2) == Claim("claimed")
    claimed = ledger.claim("k2", campaign="c", row=3, attempt="a", sent_before=("k1", "m-1", False))
    assert claimed == Claim("claimed")
    assert [(o.key, o.state, o.message_id) for o in ledger.outcomes("c")] == [
        ("k1", "sent", "m-1"),
        ("k2", "claimed", None),
    ]


def test_a_failed_claim_rolls_back_the_previous_rows_record(ledger):
    claim(ledger, key="k1", row=2)
    # row=None breaks the NOT NULL constraint of the claim's INSERT, after the record ran
    with pytest.raises(LedgerError):
        ledger.claim("k2", campaign="c", row=None, attempt="a", sent_before=("k1", "m-1", False))
    assert [(o.key, o.state) for o in ledger.outcomes("c")] == [("k1", "claimed")]


def test_a_new_ledger_file_has_small_pages_so_each_commit_writes_little(tmp_path):
    import sqlite3

    SqliteLedger(str(tmp_path / "new.db")).close()
    with closing(sqlite3.connect(tmp_path / "new.db")) as db:
        assert db.execute("PRAGMA page_size").fetchone() == (1024,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_uncertain_release_is_remembered_and_told_to_the_next_claim(ledger):
    claim(ledger, key="k1", attempt="a")
    ledger.record_failed("k1", code="Timeout", reason="no reply", permanent=False, uncertain=True)
    found = claim(ledger, key="k1", attempt="b")
    assert found.state == "claimed" and found.attempt == "a"
    assert "may have been accepted" in found.reason
    # a later release that is certain does not wipe the mark: the first try may still arrive
    ledger.record_failed("k1", code="Throttling", reason="rate", permanent=False)
    assert "may have been accepted" in claim(ledger, key="k1", attempt="c").reason
    # a release without doubt leaves no mark
    claim(ledger, key="k2", attempt="a")
    ledger.record_failed("k2", code="Throttling", reason="rate", permanent=False)
    assert claim(ledger, key="k2", attempt="b") == Claim("claimed")


def _old_ledger_file(folder, more_columns: str, insert: str):
    """A ledger file as an earlier version wrote it: the first columns, ``more_columns``."""
    import sqlite3

    path = folder / "old.db"
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(
            "CREATE TABLE sends (key TEXT PRIMARY KEY, campaign TEXT NOT NULL,"
            " row INTEGER NOT NULL, state TEXT NOT NULL, attempt TEXT, lease_until REAL,"
            " message_id TEXT, code TEXT, reason TEXT, takeovers INTEGER NOT NULL DEFAULT 0,"
            f" updated_at REAL NOT NULL{more_columns}); {insert};"
        )
    return path


def test_a_ledger_file_from_before_the_uncertain_column_is_upgraded(tmp_path, opened):
    path = _old_ledger_file(
        tmp_path,
        "",
        "INSERT INTO sends VALUES ('k1', 'c', 2, 'sent', 'a', NULL, 'm-1', NULL, NULL, 0, 1)",
    )
    ledger = opened(str(path))
    assert ledger.claim("k1", campaign="c", row=2, attempt="b") == Claim(
        "sent", message_id="m-1", attempt="a"
    )
    ledger.claim("k2", campaign="c", row=3, attempt="b")
    ledger.record_failed("k2", code="Timeout", reason="x", permanent=False, uncertain=True)
    assert "may have been accepted" in ledger.claim("k2", campaign="c", row=3, attempt="c").reason


def test_release_failed_gives_back_only_the_campaigns_failed_rows(ledger, clock):
    check_release_failed(ledger, clock, clock.sleep)


def test_a_doubtful_send_is_kept_and_told_to_its_own_attempt_later(ledger):
    claim(ledger, key="k1", attempt="a")
    ledger.record_sent("k1", message_id="m-1", uncertain=True)
    claim(ledger, key="k2", attempt="a")
    ledger.claim("k3", campaign="c", row=4, attempt="a", sent_before=("k2", "m-2", False))
    again = claim(ledger, key="k1", attempt="a")
    assert (again.state, again.message_id) == ("sent", "m-1")
    assert "may have arrived more than once" in again.reason
    assert claim(ledger, key="k2", attempt="a").reason is None
    assert [(o.key, o.doubtful) for o in ledger.outcomes("c")] == [
        ("k1", True),
        ("k2", False),
        ("k3", False),
    ]


def _open_at_once(path: str, barrier, answers) -> None:
    barrier.wait()
    try:
        SqliteLedger(path).close()
    except LedgerError as exc:
        answers.put(str(exc))
        return
    answers.put("ok")


@pytest.mark.parametrize("old_file", [False, True], ids=["new-file", "file-before-uncertain"])
def test_processes_opening_one_ledger_at_once_all_get_it(tmp_path, old_file):
    import multiprocessing
    import sqlite3

    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = str(tmp_path / f"ledger-{attempt}.db")
        if old_file:
            with closing(sqlite3.connect(path)) as db, db:
                db.execute(
                    "CREATE TABLE sends (key TEXT PRIMARY KEY, campaign TEXT NOT NULL,"
                    " row INTEGER NOT NULL, state TEXT NOT NULL, attempt TEXT,"
                    " lease_until REAL, message_id TEXT, code TEXT, reason TEXT,"
                    " takeovers INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL)"
                )
        barrier, answers = context.Barrier(4), context.Queue()
        workers = [
            context.Process(target=_open_at_once, args=(path, barrier, answers)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert sorted(answers.get(timeout=5) for _ in workers) == ["ok"] * 4


# --- writers take turns on the lock file --------------------------------------------------------


def test_a_writer_waits_while_another_holds_the_lock_file_and_goes_on_when_it_is_free(
    tmp_path, opened
):
    import fcntl
    import os

    # GIVEN another process's writer holding the ledger's lock file (another open of it)
    path = str(tmp_path / "ledger.db")
    ledger = opened(path)
    other = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)
    answers: list[Claim] = []
    claimer = threading.Thread(target=lambda: answers.append(claim(ledger)))

    # WHEN a claim is asked meanwhile
    try:
        claimer.start()
        claimer.join(timeout=0.3)

        # THEN it waits its turn, nothing written yet
        assert claimer.is_alive()
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT COUNT(*) FROM sends").fetchone() == (0,)
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)  # AND once the other is done, it goes on
        os.close(other)
    claimer.join(timeout=30)
    assert [answer.state for answer in answers] == ["claimed"]


def test_the_lock_file_is_made_private_at_the_first_write_and_never_for_reads(tmp_path, opened):
    import stat

    path = tmp_path / "ledger.db"
    ledger = opened(str(path))
    lock = tmp_path / "ledger.db-lock"

    ledger.halted("c")
    ledger.latest_upload("c")
    assert not lock.exists()

    ledger.record_sent("k1", message_id="m-1")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_writers_poll_when_the_lock_file_cannot_be_made(tmp_path, opened):
    # GIVEN a folder in the lock file's place (as good as a read-only folder for open())
    path = tmp_path / "ledger.db"
    (tmp_path / "ledger.db-lock").mkdir()
    ledger = opened(str(path))

    # WHEN rows are claimed and recorded THEN the ledger works as before
    assert claim(ledger).state == "claimed"
    ledger.record_sent("k1", message_id="m-1")
    assert [(o.key, o.state) for o in ledger.outcomes("c")] == [("k1", "sent")]


def test_a_forked_copy_of_an_open_ledger_opens_the_lock_file_anew(tmp_path, opened, monkeypatch):
    import os

    # flock is shared by the copies of one open file: a child using its parent's would never
    # wait for it, so each process opens its own.
    ledger = opened(str(tmp_path / "ledger.db"))
    parents = ledger._turn_file()
    monkeypatch.setattr(ledger_sqlite.os, "getpid", lambda: -7)

    childs = ledger._turn_file()

    assert parents is not None and childs is not None and childs != parents
    assert ledger._turn_file() == childs
    monkeypatch.undo()
    os.close(parents)  # the ledger knows only the "child's" now, which close() leaves alone
    os.close(childs)


# --- claims and batches of processes that have ended -------------------------------------------


def _in_a_process_that_then_ends(action, *args) -> None:
    """Run ``action(*args)`` in a child process that exits without cleaning up (as if killed)."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=action, args=args)
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0


def _claim_rows(path: str, lease_until: float) -> None:
    with closing(SqliteLedger(path)) as ledger:
        for row in (2, 3):
            ledger.claim(f"k{row}", campaign="c", row=row, attempt="run-1", lease_until=lease_until)


def _hold_batch(path: str, until: float) -> None:
    assert SqliteLedger(path).begin_batch("child-1", invocation="req-1", until=until) is None


def test_a_claim_whose_process_has_ended_is_taken_over_before_its_lease_passes(tmp_path, opened):
    # GIVEN rows claimed by a run whose process ended (killed) with an hour of lease left
    path = str(tmp_path / "ledger.db")
    now = time.time()
    _in_a_process_that_then_ends(_claim_rows, path, now + 3600)
    ledger = opened(path)

    # WHEN another run claims them
    taken = [ledger.claim(f"k{row}", campaign="c", row=row, attempt="run-2") for row in (2, 3)]

    # THEN it takes them over at once, each marked as a takeover (a possible duplicate)
    assert [claim.reason for claim in taken] == ["taken over from attempt run-1"] * 2
    assert [(o.attempt, o.takeovers) for o in ledger.outcomes("c")] == [("run-2", 1)] * 2


def test_a_claim_of_a_running_process_stays_busy_for_another_attempt(tmp_path, opened):
    path = str(tmp_path / "ledger.db")
    now = time.time()
    _claim_rows(path, now + 3600)  # this process, which runs

    found = opened(path).claim("k2", campaign="c", row=2, attempt="run-2")

    assert found.state == "busy"


def test_one_invocation_of_an_attempt_holds_its_batch_until_it_ends(ledger, clock):
    check_batch_holds(ledger, clock, clock.sleep)


def test_a_campaigns_rows_unanswered_in_a_row_are_counted_across_its_batches(ledger, clock):
    check_unanswered(ledger, clock, clock.sleep)


def test_a_hold_whose_invocation_ended_here_unrecorded_does_not_keep_its_retry_waiting(
    ledger, monkeypatch
):
    # GIVEN a batch held by an invocation of this process, which ended but could not record
    # that it ended (the ledger file could not be written: a disk full, a file size limit)
    until = ledger._clock() + 3600
    assert ledger.begin_batch("child-1", invocation="req-1", until=until) is None

    def unwritable(*args: Any, **kwargs: Any) -> None:
        raise LedgerError("ledger: end_batch: disk I/O error")

    with monkeypatch.context() as patched:
        patched.setattr(ledger, "_statement", unwritable)
        with pytest.raises(LedgerError):
            ledger.end_batch("child-1", invocation="req-1")

    # WHEN its retry, or any batch, begins in this process (it waited out the hold before)
    # THEN it takes the batch at once
    assert ledger.begin_batch("child-1", invocation="req-2", until=until) is None


def _hold_then_run_on(path: str, end_at_the_limit: bool, test: Any) -> None:
    """In a process that runs on until ``test`` says so (a worker of the run): hold a batch as
    req-1; with ``end_at_the_limit``, end the invocation where the ledger cannot record it
    (its -wal file at the file size limit), and tell ``test`` what the end raised."""
    said = "held"
    try:
        ledger = SqliteLedger(path)
        assert ledger.begin_batch("child-1", invocation="req-1", until=time.time() + 3600) is None
        if end_at_the_limit:
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(f"{path}-wal"), hard))
            try:
                ledger.end_batch("child-1", invocation="req-1")
            except LedgerError as error:
                said = error.message
            else:
                said = "ended"
    except BaseException as error:
        said = f"failed: {error!r}"
    test.send(said)
    test.recv()


@contextmanager
def _held_by_a_running_process(path: str, *, end_at_the_limit: bool) -> Iterator[str]:
    """Run the block while another process holds a batch (_hold_then_run_on); yield what it
    said."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    holder = context.Process(target=_hold_then_run_on, args=(path, end_at_the_limit, theirs))
    holder.start()
    try:
        assert ours.poll(60), "the holding process said nothing"
        said = ours.recv()
        assert holder.is_alive()
        yield said
    finally:
        ours.send("done")
        holder.join(timeout=60)
    assert holder.exitcode == 0


def test_a_hold_ended_unrecorded_in_a_process_still_running_keeps_no_retry_waiting(
    tmp_path, opened
):
    # GIVEN a batch held by an invocation in another process of the run, which still runs
    # (a worker); the invocation ended, but its end could not be written: the ledger's -wal
    # file had reached the file size limit of that process
    path = str(tmp_path / "ledger.db")
    ledger = opened(path)
    with _held_by_a_running_process(path, end_at_the_limit=True) as said:
        # THEN that end said which file could not be written, and why, in plain words
        limit = os.path.getsize(f"{path}-wal")
        assert said == (
            f"ledger {path}: end_batch child-1: cannot write the ledger: it reached the file"
            f" size limit of this process, {limit} bytes (ulimit -f) (SQLite: disk I/O error)"
        )

        # WHEN the batch's retry begins in this process THEN it takes the batch at once
        assert ledger.begin_batch("child-1", invocation="req-2", until=time.time() + 60) is None


def test_a_hold_of_an_invocation_still_sending_in_another_process_keeps_its_retry_waiting(
    tmp_path, opened
):
    # GIVEN a batch held by an invocation still sending in another process of the run
    path = str(tmp_path / "ledger.db")
    ledger = opened(path)
    with _held_by_a_running_process(path, end_at_the_limit=False) as said:
        assert said == "held"

        # WHEN its retry begins in this process THEN it waits for the batch
        assert ledger.begin_batch("child-1", invocation="req-2", until=time.time() + 60) == "req-1"


def test_a_hold_recorded_unlocked_is_waited_for_while_its_process_runs(ledger):
    # GIVEN a batch held by an invocation of this process that took no lock (an earlier
    # version, or a system without open file description locks)
    until = ledger._clock() + 3600
    with ledger._transaction("hold") as db:
        db.execute(
            "INSERT INTO batches (attempt, invocation, holder, until, locked)"
            " VALUES ('child-1', 'req-1', ?, ?, 0)",
            (process_token(), until),
        )

    # WHEN its retry begins (its lock is free: none was taken) THEN it waits for the batch
    assert ledger.begin_batch("child-1", invocation="req-2", until=until) == "req-1"


def test_a_full_disk_is_said_in_plain_words_naming_the_ledger(ledger, monkeypatch):
    # GIVEN a disk that is full when the ledger writes (SQLite: "database or disk is full")
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL

    class FullDisk:
        def execute(self, *args: Any) -> None:
            raise full

    # WHEN a letter is recorded sent THEN the error names the ledger and says why
    with monkeypatch.context() as patched, pytest.raises(LedgerError) as raised:
        patched.setattr(ledger, "_db", FullDisk())
        ledger.record_sent("k1", message_id="m-1")
    assert raised.value.message == (
        f"ledger {ledger.path}: record_sent k1: cannot write the ledger: the disk holding it"
        " is full (SQLite: database or disk is full)"
    )


def _sqlite_error(code: int, words: str) -> sqlite3.OperationalError:
    """SQLite's error of ``code``, as the driver raises it."""
    failure = sqlite3.OperationalError(words)
    failure.sqlite_errorcode = code
    return failure


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (sqlite3.SQLITE_FULL, "database or disk is full"),
        (sqlite3.SQLITE_READONLY, "attempt to write a readonly database"),
        (sqlite3.SQLITE_CANTOPEN, "unable to open database file"),
    ],
    ids=["disk full", "read-only", "cannot open"],
)
def test_a_write_no_retry_gets_through_is_a_ledger_not_written(ledger, monkeypatch, code, words):
    # GIVEN a ledger whose writes fail with SQLite's error of that kind
    class Failing:
        def execute(self, *args: Any) -> None:
            raise _sqlite_error(code, words)

    # WHEN a letter is recorded sent
    with monkeypatch.context() as patched, pytest.raises(LedgerError) as raised:
        patched.setattr(ledger, "_db", Failing())
        ledger.record_sent("k1", message_id="m-1")

    # THEN the error is the one the state machine does not retry: the run ends at once
    assert type(raised.value) is LedgerNotWritten
    assert words in raised.value.message


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (sqlite3.SQLITE_BUSY, "database is locked"),
        (sqlite3.SQLITE_LOCKED, "database table is locked"),
        (sqlite3.SQLITE_IOERR, "disk I/O error"),
    ],
    ids=["busy", "locked", "I/O error"],
)
def test_a_write_that_may_pass_is_a_ledger_error(ledger, code, words):
    # GIVEN SQLite's error of a write that a later try may get through (the ledger's folder
    # has room: an I/O error is not for want of it)
    failure = _sqlite_error(code, words)

    # WHEN the ledger words it THEN it is the error the state machine retries
    error = ledger_sqlite._error(ledger.path, "claim k1", failure)
    assert type(error) is LedgerError
    assert error.message == f"ledger {ledger.path}: claim k1: {words}"


def test_a_hold_of_an_invocation_still_sending_in_this_process_keeps_its_retry_waiting(ledger):
    # GIVEN a batch held by an invocation still sending here (a thread the engine gave up on)
    until = ledger._clock() + 3600
    assert ledger.begin_batch("child-1", invocation="req-1", until=until) is None

    # WHEN its retry begins in this process THEN it waits for the batch
    assert ledger.begin_batch("child-1", invocation="req-2", until=until) == "req-1"
    ledger.end_batch("child-1", invocation="req-1")


def test_a_batch_hold_ends_with_its_process(tmp_path, opened):
    path = str(tmp_path / "other.db")
    _in_a_process_that_then_ends(_hold_batch, path, time.time() + 3600)
    assert opened(path).begin_batch("child-1", invocation="req-2", until=0.0) is None


def test_a_ledger_file_from_before_the_holder_column_is_upgraded(tmp_path, opened):
    path = _old_ledger_file(
        tmp_path,
        ", uncertain INTEGER NOT NULL DEFAULT 0",
        "INSERT INTO sends VALUES ('k1', 'c', 2, 'claimed', 'a', 9e12, NULL, NULL, NULL, 0, 1, 0)",
    )

    ledger = opened(str(path))

    # A claim from before holders were recorded counts as running: its lease decides
    assert ledger.claim("k1", campaign="c", row=2, attempt="b").state == "busy"
    assert ledger.claim("k2", campaign="c", row=3, attempt="b") == Claim("claimed")


def _ledger_before_owners_kept_an_address(folder):
    """A ledger file from before owners kept an address: Amelia's letter sent with a.pdf."""
    return _old_ledger_file(
        folder,
        ", uncertain INTEGER NOT NULL DEFAULT 0, holder TEXT",
        "INSERT INTO sends VALUES ('k1', 'c', 2, 'sent', 'a', NULL, 'm', NULL, NULL, 0, 1, 0,"
        " NULL); CREATE TABLE attachment_owners (campaign TEXT NOT NULL, attachment TEXT NOT NULL,"
        " recipient TEXT NOT NULL, letter TEXT NOT NULL, PRIMARY KEY (campaign, attachment))"
        " WITHOUT ROWID; INSERT INTO attachment_owners VALUES ('c', 'a.pdf', 'r-amelia', 'k1')",
    )


def test_a_ledger_file_from_before_owners_kept_an_address_is_upgraded(tmp_path, opened):
    # GIVEN a ledger file whose file owners were recorded without an address: Amelia's sent
    path = _ledger_before_owners_kept_an_address(tmp_path)

    # WHEN it is opened and a new letter claims a file of its own
    ledger = opened(str(path))
    owner = ("b.pdf", "r-jose", "j***@example.com")
    assert ledger.claim("k2", campaign="c", row=3, attempt="b", owner=owner) == Claim("claimed")
    ledger.record_sent("k2", message_id="m-2")

    # THEN both files are listed, the old one without an address; the old owner still holds
    assert sorted(ledger.file_owners("c")) == [
        FileOwner("a.pdf", "r-amelia", 2, ""),
        FileOwner("b.pdf", "r-jose", 3, "j***@example.com"),
    ]
    taken = ledger.claim("k3", campaign="c", row=4, attempt="b", owner=("a.pdf", "r-x", "x"))
    assert taken == Claim("owned")


def test_a_ledger_file_from_before_letters_kept_their_files_is_upgraded(tmp_path, opened):
    # GIVEN a ledger file from before letters kept their files: Amelia's sent with a.pdf
    path = _old_ledger_file(
        tmp_path,
        ", uncertain INTEGER NOT NULL DEFAULT 0, holder TEXT",
        "INSERT INTO sends VALUES ('k1', 'c', 2, 'sent', 'a', NULL, 'm', NULL, NULL, 0, 1, 0,"
        " NULL); CREATE TABLE attachment_owners (campaign TEXT NOT NULL, attachment TEXT NOT NULL,"
        " recipient TEXT NOT NULL, letter TEXT NOT NULL, masked TEXT,"
        " PRIMARY KEY (campaign, attachment)) WITHOUT ROWID;"
        " INSERT INTO attachment_owners VALUES ('c', 'a.pdf', 'r-amelia', 'k1', 'a***')",
    )

    # WHEN it is opened and a new letter is sent with its own file
    ledger = opened(str(path))
    owner = ("b.pdf", "r-jose", "j***@example.com")
    assert ledger.claim("k2", campaign="d", row=3, attempt="b", owner=owner) == Claim("claimed")
    file = LetterFile("b.pdf", 10, "e" * 64, "12345678", "r-jose", "j***@example.com", "d.csv")
    ledger.record_sent("k2", message_id="m-2", file=file)

    # THEN the new letter's file is found; the old letter has no digest, its owner still holds
    assert ledger.sent_sizes([10, 20]) == {10}
    assert [copy._replace(at=0.0) for copy in ledger.sent_copies(10, "12345678")] == [
        SentCopy("d", "b.pdf", "r-jose", 3, "j***@example.com", "e" * 64, "d.csv", 0, SENT)
    ]
    assert list(ledger.file_owners("c")) == [FileOwner("a.pdf", "r-amelia", 2, "a***")]


@pytest.mark.parametrize("writable", [False, True], ids=["closed", "writable"])
def test_a_ledger_file_from_before_letters_kept_their_files_is_read_not_brought_up_to_date(
    tmp_path, monkeypatch, writable
):
    # GIVEN a ledger file from before letters kept their files (and owners their addresses),
    # in a workdir the user may not write, or may: Amelia's letter sent with a.pdf
    path = _ledger_before_owners_kept_an_address(tmp_path)
    before = path.read_bytes()
    if not writable:
        monkeypatch.setattr(ledger_sqlite.os, "access", lambda *args, **kwargs: False)

    # WHEN validation opens it to read
    with closing(SqliteLedger(str(path), read_only=True)) as ledger:
        # THEN what it asks is answered: no letter has a digest; the owner is listed
        assert ledger.sent_sizes([10, 20]) == set()
        assert list(ledger.sent_copies(10, "12345678")) == []
        assert list(ledger.file_owners("c")) == [FileOwner("a.pdf", "r-amelia", 2, "")]
        assert ledger.has_entries("c")
        # (and a batch's read of its campaign, from before rows unanswered were counted)
        assert ledger.campaign_status("c").unanswered is None

    # AND the file is as it was, nothing made beside it
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def test_outcomes_of_given_keys(ledger):
    check_outcomes_of(ledger)


def test_settled_keys_are_the_campaigns_sent_and_failed_rows(ledger):
    check_settled_keys(ledger)


def test_settled_keys_come_a_page_at_a_time_each_once(ledger, monkeypatch):
    # GIVEN a campaign with 8 settled rows, two of them sharing a row number (an earlier
    # upload's content at that row), and a claimed one; pages of 3 keys
    import mailmatrix.adapters.ledger_sqlite as module

    monkeypatch.setattr(module, "_SETTLED_PAGE", 3)
    rows = {f"k{n}": n for n in range(1, 8)} | {"k4b": 4}
    for key, row in rows.items():
        ledger.claim(key, campaign="c", row=row, attempt="a")
        ledger.record_sent(key, message_id=f"m-{key}")
    ledger.claim("k9", campaign="c", row=9, attempt="a")
    statements: list[int] = []
    answer = ledger._statement

    def counted(what, sql, parameters):
        found = answer(what, sql, parameters)
        statements.append(len(found))
        return found

    monkeypatch.setattr(ledger, "_statement", counted)

    # WHEN the settled keys are read THEN each comes once, in pages no larger than 3
    assert sorted(ledger.settled_keys("c")) == sorted(rows)
    assert statements == [3, 3, 2]


def test_a_files_name_is_its_campaigns_and_a_name_alike_is_refused(ledger):
    check_names(ledger)


def test_the_latest_validated_upload_is_the_one_stored_last(ledger):
    check_latest_upload(ledger)


def test_a_campaigns_halt_latest_upload_and_sets_are_read_at_once(ledger):
    check_campaign_status(ledger)


def test_template_sets_only_grow_and_a_catalog_lacking_one_is_refused(ledger):
    check_template_sets(ledger)


def test_template_sets_are_kept_across_connections_and_added_unchecked(tmp_path, opened):
    # GIVEN names recorded through one connection
    path = str(tmp_path / "ledger.db")
    first = opened(path)
    assert first.record_template_sets("c", {"offer"}, catalog=["offer"]) == []

    # WHEN another adds names a workdir had recorded before the ledger did (unchecked)
    second = opened(path)
    second.add_template_sets("c", ["rejection", "offer"])

    # THEN both see them all, and a catalog without one is refused through either
    assert first.template_sets("c") == second.template_sets("c") == {"offer", "rejection"}
    assert first.record_template_sets("c", {"offer"}, catalog=["offer"]) == ["rejection"]


def test_a_ledger_file_from_before_template_sets_gets_them(tmp_path, opened):
    # GIVEN a ledger file written before the template_sets table existed
    path = _old_ledger_file(tmp_path, "", "")

    # WHEN it is opened THEN the names of a campaign's sets can be recorded and read
    ledger = opened(str(path))
    assert ledger.record_template_sets("c", {"offer"}, catalog=["offer"]) == []
    assert ledger.template_sets("c") == {"offer"}


def test_letters_sent_with_their_own_file_are_found_by_its_size_and_print_in_any_campaign(
    ledger,
):
    check_sent_copies(ledger)


def test_the_recipients_earlier_runs_may_have_mailed_are_found_by_address(ledger):
    check_earlier_recipients(ledger)


def test_each_campaign_keeps_the_ways_its_granted_claims_went(tmp_path, opened, clock):
    # GIVEN a ledger of a run into the outbox, and one of a run through a server, on one file
    path = str(tmp_path / "ledger.db")
    outbox = opened(path, clock=clock, delivery="outbox")
    server = opened(path, clock=clock, delivery="smtp://hr@mail.example:587")

    # WHEN the outbox claims rows of a campaign, and its rows that the server then finds
    # sent, or that another set's letter refuses, are not claimed by it
    assert outbox.claim("k1", campaign="c", row=2, attempt="a") == Claim("claimed")
    assert outbox.claim("k2", campaign="c", row=3, attempt="a") == Claim("claimed")
    outbox.record_sent("k1", message_id="m-1")
    assert server.claim("k1", campaign="c", row=2, attempt="b").state == "sent"
    refused = server.claim("k3", campaign="c", row=4, attempt="b", others={"k1": "offer"})
    assert refused.state == "other"

    # THEN the campaign went through the outbox alone; another campaign not at all
    assert server.deliveries("c") == ["outbox"]
    assert server.deliveries("d") == []

    # AND once the server takes over a claim of it (granted), it is kept too, the latest last
    clock.sleep(DEFAULT_CLAIM_LEASE_SECONDS + 1)
    assert server.claim("k2", campaign="c", row=3, attempt="b").state == "claimed"
    assert outbox.deliveries("c") == ["outbox", "smtp://hr@mail.example:587"]
    # (a ledger told no way, as the AWS-like tests open one, notes none)
    opened(path).claim("k9", campaign="e", row=2, attempt="a")
    assert server.deliveries("e") == []


def test_a_ledger_file_from_before_it_kept_the_ways_gets_them(tmp_path, opened, monkeypatch):
    # GIVEN a ledger file an earlier version wrote: a letter of campaign c sent, no way kept
    path = _old_ledger_file(
        tmp_path,
        "",
        "INSERT INTO sends VALUES ('k1', 'c', 2, 'sent', 'a', NULL, 'm-1', NULL, NULL, 0, 1)",
    )
    before = path.read_bytes()

    # WHEN it is read where it cannot be written THEN it keeps no way, and stays as it was
    with monkeypatch.context() as closed:
        closed.setattr(ledger_sqlite.os, "access", lambda *args, **kwargs: False)
        with closing(SqliteLedger(str(path), read_only=True)) as ledger:
            assert ledger.deliveries("c") == []
    assert path.read_bytes() == before

    # WHEN it is opened to write THEN its table is made, and the ways of new claims are kept
    ledger = opened(str(path), delivery="outbox")
    assert ledger.deliveries("c") == []
    assert ledger.claim("k2", campaign="c", row=3, attempt="b") == Claim("claimed")
    assert ledger.deliveries("c") == ["outbox"]
    with closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "deliveries" in tables


def _claimed(ledger: SqliteLedger, key: str, campaign: str, row: int = 2) -> None:
    assert ledger.claim(key, campaign=campaign, row=row, attempt=f"{campaign}/a") == Claim(
        "claimed"
    )


@pytest.mark.parametrize("check", PRINT_CHECKS)
def test_letter_prints_hold_back_another_campaigns_letter_alike(ledger, clock, check):
    PRINT_CHECKS[check](ledger, clock)


@pytest.mark.parametrize("check", SET_CHECKS)
def test_a_letter_of_a_set_holds_back_another_campaigns_letter_of_it(ledger, clock, check):
    SET_CHECKS[check](ledger, clock)


def test_validation_finds_the_letters_of_other_campaigns_by_address_and_set(ledger, clock):
    check_letters_of_sets(ledger, clock)


def _claim_with(ledger: SqliteLedger, key: str, letter: LetterPrint, row: int = 2) -> Claim:
    return ledger.claim(
        key, campaign=letter.campaign, row=row, attempt=f"{letter.campaign}/a", letter=letter
    )


def test_a_letter_held_keeps_no_print_and_one_sent_again_keeps_its_own(ledger):
    # GIVEN news.csv's letter sent with its print, and a copy's held back by it
    _claim_with(ledger, "k-news", LetterPrint("c-news", "p1", "news.csv"))
    ledger.record_sent("k-news", message_id="m-news")
    assert _claim_with(ledger, "k-copy", LetterPrint("c-copy", "p1", "copy.csv")).held
    ledger.record_failed("k-copy", code="SentUnder", reason="held", permanent=False)

    # WHEN the copy names news.csv to send again THEN it passes, its print kept with its key
    again = LetterPrint("c-copy", "p1", "copy.csv", frozenset({"news.csv"}))
    assert _claim_with(ledger, "k-copy", again).held is None
    with closing(sqlite3.connect(ledger.path)) as db:
        kept = db.execute(
            "SELECT key, letter_print, file_source FROM sends WHERE letter_print IS NOT NULL"
            " ORDER BY key"
        ).fetchall()
    assert kept == [("k-copy", "p1", "copy.csv"), ("k-news", "p1", "news.csv")]


def test_a_print_given_with_a_claim_not_granted_holds_nothing_and_keeps_nothing(ledger):
    # GIVEN a letter sent without a print, and another campaign's letter sent with one
    _claimed(ledger, "k-old", "c-old")
    ledger.record_sent("k-old", message_id="m-1")
    assert _claim_with(ledger, "k-news", LetterPrint("c-news", "p1")).held is None
    ledger.record_sent("k-news", message_id="m-2")

    # WHEN the sent key is claimed again with a print THEN it is skipped as sent, no print
    # of it kept; a claim of the same campaign's next row is not held by its own letter
    skipped = _claim_with(ledger, "k-old", LetterPrint("c-old", "p9"))
    assert skipped.state == "sent" and skipped.held is None
    own = _claim_with(ledger, "k-news-2", LetterPrint("c-news", "p1"), row=3)
    assert own == Claim("claimed") and own.held is None
    with closing(sqlite3.connect(ledger.path)) as db:
        prints = dict(db.execute("SELECT key, letter_print FROM sends").fetchall())
    assert prints == {"k-old": None, "k-news": "p1", "k-news-2": "p1"}


def test_a_letter_given_back_and_claimed_again_with_a_print_keeps_the_new_print(ledger):
    # GIVEN a letter claimed with a print, then given back unsent (nothing went out)
    _claim_with(ledger, "k-news", LetterPrint("c-news", "p1"))
    ledger.record_failed("k-news", code="Throttled", reason="slow down", permanent=False)

    # WHEN it is claimed again with the print of its letter as now rendered THEN that is kept
    again = _claim_with(ledger, "k-news", LetterPrint("c-news", "p2", "news.csv"))
    assert again == Claim("claimed") and again.held is None
    with closing(sqlite3.connect(ledger.path)) as db:
        kept = db.execute("SELECT letter_print, file_source FROM sends").fetchall()
    assert kept == [("p2", "news.csv")]


def test_a_letter_is_held_by_one_read_of_the_index_of_prints(tmp_path):
    with closing(SqliteLedger(str(tmp_path / "ledger.db"))):
        pass
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as db:
        plan = db.execute(
            f"EXPLAIN QUERY PLAN {ledger_sqlite._SAME_LETTER}", ("p1", "c", "OutcomeUnknown")
        ).fetchall()
    assert any("USING INDEX sends_by_letter" in str(step[-1]) for step in plan), plan


def test_rows_in_doubt_are_listed_and_settled(ledger, clock):
    check_doubts_and_settle(ledger, clock, clock.sleep)


def test_a_doubt_names_the_try_that_may_have_sent_it_not_the_refused_retries(ledger, clock):
    # GIVEN a row whose first try ended with its outcome unknown (the server took the letter
    # and died), then two retries against a refused connection, 30 s apart
    doubtful_try = clock.now
    claim(ledger, attempt="a")
    ledger.record_failed(
        "k1", code="Unanswered", reason="no reply", permanent=False, uncertain=True
    )
    for attempt in ("b", "c"):
        clock.sleep(30)
        claim(ledger, attempt=attempt)
        ledger.record_failed("k1", code="Refused", reason="refused", permanent=False)

    # WHEN its doubt is read THEN it names the first try (its time and attempt) and the last
    [doubt] = ledger.doubts("c")
    assert (doubt.tried_at, doubt.doubtful_attempt) == (doubtful_try, "a")
    assert (doubt.at, doubt.attempt) == (doubtful_try + 60, "c")


def test_a_doubt_after_retry_unknown_names_the_new_try_not_the_one_given_back(ledger, clock):
    # GIVEN a row failed with its outcome unknown, given back by --retry-unknown, then
    # claimed again by a try whose process was killed
    claim(ledger, attempt="a")
    ledger.record_failed(
        "k1", code="OutcomeUnknown", reason="no reply", permanent=True, uncertain=True
    )
    assert ledger.release_failed("c", unknown=True) == 1
    clock.sleep(4000)
    killed = clock.now
    claim(ledger, attempt="b")

    # WHEN its doubt is read THEN it is the new try's: the one given back is forgotten
    [doubt] = ledger.doubts("c")
    assert (doubt.tried_at, doubt.doubtful_at, doubt.doubtful_again) == (killed, None, False)
    [row] = described([doubt], {})
    assert row.line().endswith(f"tried {when(killed)}")


def test_a_doubt_whose_later_try_was_killed_says_both_may_have_gone(ledger, clock):
    # GIVEN a row whose first try ended with its outcome unknown, then a try that was killed
    first = clock.now
    claim(ledger, attempt="a")
    ledger.record_failed(
        "k1", code="Unanswered", reason="no reply", permanent=False, uncertain=True
    )
    clock.sleep(4000)
    claim(ledger, attempt="b")

    # WHEN its doubt is read and shown
    [doubt] = ledger.doubts("c")
    [row] = described([doubt], {})

    # THEN both tries are named as ones that may have sent it, and the first's attempt kept
    assert (doubt.tried_at, doubt.doubtful_again) == (first, True)
    assert row.line().endswith(
        f"tried {when(first)} (it may have gone out then), tried again up to"
        f" {when(first + 4000)} (it may have gone out then too)"
    )
    assert (row.to_dict()["again"], row.to_dict()["tried_by"]) == (True, "a")


def test_a_doubt_whose_later_try_was_unknown_too_says_both_may_have_gone(ledger, clock):
    # GIVEN a row whose two tries each ended with the outcome unknown
    for attempt in ("a", "b"):
        claim(ledger, attempt=attempt)
        ledger.record_failed(
            "k1", code="Unanswered", reason="no reply", permanent=False, uncertain=True
        )
        clock.sleep(30)

    # WHEN its doubt is read THEN the later try may have sent it too
    [doubt] = ledger.doubts("c")
    assert (doubt.doubtful_again, described([doubt], {})[0].again) == (True, True)


def test_a_doubt_taken_over_names_the_claim_that_died_and_settling_forgets_it(ledger, clock):
    # GIVEN a claim whose process died, taken over later by a retry refused by the server
    died = clock.now
    claim(ledger, attempt="a", lease_until=clock.now + 60)
    clock.sleep(61)
    claim(ledger, attempt="b")
    ledger.record_failed("k1", code="Refused", reason="refused", permanent=False)

    # WHEN its doubt is read THEN it names the claim that died
    [doubt] = ledger.doubts("c")
    assert (doubt.tried_at, doubt.doubtful_attempt, doubt.attempt) == (died, "a", "b")

    # AND once settled as not sent, a new doubt names its own try, not the old one
    ledger.settle([doubt], sent=False, by="ops")
    clock.sleep(5)
    claim(ledger, attempt="d")
    ledger.record_failed(
        "k1", code="Unanswered", reason="no reply", permanent=False, uncertain=True
    )
    [again] = ledger.doubts("c")
    assert (again.tried_at, again.doubtful_attempt) == (clock.now, "d")


def test_a_ledger_from_before_the_columns_of_doubt_is_read_in_place_not_copied(tmp_path):
    # GIVEN a ledger file from before rows in doubt kept when and by whom: Amelia's letter
    # sent, Bo's in doubt (its sending timed out)
    path = tmp_path / "old.db"
    with closing(SqliteLedger(str(path))) as writer:
        claim(writer, key="k1")
        writer.record_sent("k1", message_id="m-1")
        claim(writer, key="k2", row=3)
        writer.record_failed("k2", code="Timeout", reason="x", permanent=False, uncertain=True)
    with closing(sqlite3.connect(path)) as db:
        for column in ("doubtful_at", "doubtful_attempt"):
            db.execute(f"ALTER TABLE sends DROP COLUMN {column}")

    # WHEN it is opened read-only (validate, show, another workdir's batch)
    with closing(SqliteLedger(str(path), read_only=True)) as ledger:
        # THEN it is read in place, not from a copy in memory (a frozen snapshot that costs
        # the whole ledger), and read right: Bo's row is in doubt, its columns of doubt empty
        (_, _, file), *_ = ledger._db.execute("PRAGMA database_list").fetchall()
        assert os.path.samefile(file, path)
        assert [(d.key, d.doubtful_at, d.doubtful_attempt) for d in ledger.doubts("c")] == [
            ("k2", None, None)
        ]
        assert ledger.has_entries("c")
