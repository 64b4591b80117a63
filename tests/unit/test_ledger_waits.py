"""A letter sent that waits for a busy ledger to record it: counted across the run's worker
processes, and said on the console once as the wait starts and once as it ends."""

from __future__ import annotations

import io
import multiprocessing
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mailmatrix.adapters import ledger_sqlite, ledger_waits
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.cli.progress import SHOWN_AFTER_SECONDS, LedgerWaitNotices
from tests.unit.test_sent_journal import SHORT, held_exclusive

# A guard against a test that hangs, never a time the test measures
GUARD_SECONDS = 60


@pytest.fixture
def ledger_path(tmp_path, monkeypatch) -> Path:
    """A ledger whose row 2 (k1) is claimed, its waits counted from now (as a run counts
    them), the count forgotten after the test."""
    for name, value in (("_count", None), ("_counting", False), ("_ledger", "")):
        monkeypatch.setattr(ledger_waits, name, value)
    path = tmp_path / "ledger.sqlite3"
    with closing(SqliteLedger(path)) as ledger:
        ledger.claim("k1", campaign="c", row=2, attempt="a", lease_until=time.time() + 3600)
    ledger_waits.start(str(path))
    return path


def _console() -> tuple[Console, io.StringIO]:
    said = io.StringIO()
    return Console(file=said, width=400, color_system=None), said


def test_a_letter_the_busy_ledger_never_took_is_counted_kept(ledger_path):
    # GIVEN a ledger another connection holds past the patience of record_sent
    patience = {**SHORT, "sent_patience": 0.3}  # a few tries, then the journal
    with closing(SqliteLedger(ledger_path, **patience)) as ledger, held_exclusive(ledger_path):
        # WHEN a letter sent is recorded
        ledger.record_sent("k1", message_id="m-1")

    # THEN its wait is counted, ended with the letter kept in the journal
    waits = ledger_waits.counted()
    assert waits is not None
    assert (waits.ledger, waits.waiting, waits.recorded, waits.kept) == (str(ledger_path), 0, 0, 1)
    assert waits.patience == patience["sent_patience"]


def test_a_wait_is_counted_from_the_first_try_that_finds_the_ledger_busy(ledger_path, monkeypatch):
    # GIVEN a ledger another connection holds, and let go at the first pause of a try
    seen: list[int] = []
    ledger = SqliteLedger(ledger_path)
    other = sqlite3.connect(ledger_path, isolation_level=None)
    with closing(ledger), closing(other):
        other.execute("BEGIN EXCLUSIVE")

        real_sleep, here = time.sleep, threading.get_ident()

        def pause(seconds: float) -> None:
            if threading.get_ident() != here:  # another thread's sleep (time.sleep is shared)
                real_sleep(seconds)
                return
            waits = ledger_waits.counted()
            seen.append(waits.waiting if waits else -1)
            if other.in_transaction:
                other.execute("ROLLBACK")

        monkeypatch.setattr(ledger_sqlite.time, "sleep", pause)

        # WHEN a letter sent is recorded
        ledger.record_sent("k1", message_id="m-1")

    # THEN its wait was counted at the first pause (not after the busy timeout of a try,
    # 30 s), and ended with the letter recorded
    assert seen[0] == 1
    waits = ledger_waits.counted()
    assert waits is not None
    assert (waits.waiting, waits.recorded, waits.kept) == (0, 1, 0)


def test_a_letter_recorded_at_once_counts_no_wait(ledger_path):
    with closing(SqliteLedger(ledger_path)) as ledger:
        ledger.record_sent("k1", message_id="m-1")

    waits = ledger_waits.counted()
    assert waits is not None
    assert (waits.waiting, waits.recorded, waits.kept) == (0, 0, 0)


def _record_in_a_worker(path: Path, locked: Any, waiting: Any, polled: Any) -> None:
    """A worker process's record of row 2's letter, once the ledger is ``locked``: at its
    first pause once its wait for the busy ledger is counted, it says it is ``waiting``, and
    goes on once the test has ``polled``."""
    real_sleep = time.sleep

    def pause(seconds: float) -> None:
        waits = ledger_waits.counted()
        if waits is None or not waits.waiting:
            real_sleep(seconds)  # a pause of a try before the wait
            return
        time.sleep = real_sleep
        waiting.set()
        polled.wait(GUARD_SECONDS)

    time.sleep = pause
    with closing(SqliteLedger(path, busy_timeout=0.01)) as ledger:
        locked.wait(GUARD_SECONDS)
        ledger.record_sent("k1", message_id="m-1")


def test_a_wait_in_a_worker_process_is_said_once_as_it_starts_and_once_as_it_ends(ledger_path):
    # GIVEN the console of a run, and a worker process whose letter went out while another
    # process holds the ledger
    console, said = _console()
    notices = LedgerWaitNotices(console)
    forked = multiprocessing.get_context("fork")
    locked, waiting, polled = forked.Event(), forked.Event(), forked.Event()
    worker = forked.Process(target=_record_in_a_worker, args=(ledger_path, locked, waiting, polled))
    worker.start()  # (before the lock is taken: a connection must not cross a fork)
    with closing(sqlite3.connect(ledger_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        locked.set()
        assert waiting.wait(GUARD_SECONDS)

        # WHEN the console looks as the worker waits: first at once, then once the wait has
        # lasted long enough to be said
        notices.poll()
        assert said.getvalue() == ""  # (a short wait is said nowhere but the logs)
        notices.poll(now=time.monotonic() + SHOWN_AFTER_SECONDS)
        notices.poll(now=time.monotonic() + SHOWN_AFTER_SECONDS + 5)

        # THEN one line says what it waits for, how long at most, and that nothing is sent
        # twice
        lines = said.getvalue().splitlines()
        assert lines == [
            f"Waiting for the send ledger ({ledger_path}), which another process holds, to"
            " record 1 letter(s) already sent, for 10 minutes at most. Nothing is sent twice:"
            " a letter it cannot record by then is kept in the journal beside it, and counts"
            " as sent."
        ]

        # WHEN the other process lets the ledger go, and the worker records the letter
        other.execute("ROLLBACK")
    polled.set()
    worker.join(GUARD_SECONDS)
    assert worker.exitcode == 0
    notices.close()

    # THEN one more line says the wait is over
    assert said.getvalue().splitlines()[1:] == [
        "The send ledger is free again: the letters sent that waited are recorded."
    ]
    with closing(SqliteLedger(ledger_path, read_only=True)) as ledger:
        assert ledger.outcomes("c")[0].state == "sent"


def test_a_wait_that_ends_in_the_journal_is_said_so(ledger_path):
    # GIVEN a wait said on the console
    console, said = _console()
    notices = LedgerWaitNotices(console)
    wait = ledger_waits.Wait()
    wait.begin(42.0)
    notices.poll(now=time.monotonic() + SHOWN_AFTER_SECONDS)

    # WHEN it ends with the letter kept in the journal
    wait.end("kept")
    notices.poll()

    # THEN the console says where the letter is and that it counts as sent
    assert said.getvalue().splitlines() == [
        f"Waiting for the send ledger ({ledger_path}), which another process holds, to record"
        " 1 letter(s) already sent, for 42 second(s) at most. Nothing is sent twice: a letter"
        " it cannot record by then is kept in the journal beside it, and counts as sent.",
        f"The send ledger stayed busy: 1 letter(s) sent are kept in the journal beside it"
        f" ({ledger_path}-sent), and count as sent; its next run or redrive records them.",
    ]


def test_the_end_of_the_execution_says_the_end_of_a_wait_before_the_summary(ledger_path):
    # GIVEN a listener of a run whose letter waits, said on the console
    console, said = _console()
    seen: list[str] = []

    class Inner:
        def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
            seen.append(event["type"])

    notices = LedgerWaitNotices(console, Inner())
    notices.on_event("x", {"type": "ExecutionStarted"})
    wait = ledger_waits.Wait()
    wait.begin(600.0)
    notices.poll(now=time.monotonic() + SHOWN_AFTER_SECONDS)
    wait.end("recorded")

    # WHEN the execution ends
    notices.on_event("x", {"type": "ExecutionSucceeded"})

    # THEN the events were passed on, and the end of the wait is said then, once
    assert seen == ["ExecutionStarted", "ExecutionSucceeded"]
    assert said.getvalue().splitlines()[1:] == [
        "The send ledger is free again: the letters sent that waited are recorded."
    ]
    notices.close()
    assert len(said.getvalue().splitlines()) == 2


def test_a_run_says_its_waits_above_its_live_display_else_on_standard_error():
    from rich.progress import Progress

    from mailmatrix.cli.progress import notice_console

    # GIVEN a run's live display on a console
    console, _ = _console()
    display = Progress(console=console)

    # WHEN a console for its notices is chosen THEN it is the display's (a line written to
    # the terminal past the display is drawn over), else one on standard error
    assert notice_console(display) is console
    assert notice_console(None).stderr
