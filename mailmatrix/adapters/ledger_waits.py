"""The letters sent that wait for a busy ledger to record them, across a local run's worker
processes, so that the console can say what the run waits for.

Once the mail server (or the outbox) has taken a letter, recording it sent is all that is
left: where another process holds the SQLite ledger, record_sent waits for it, up to
SENT_PATIENCE_SECONDS (ledger_sqlite), in whichever worker process sent the letter. The logs
said so, and the console looked hung meanwhile. A local run counts those waits in shared
memory, made before the worker processes are forked (as deliveries counts the messages sent),
and its console reads them (cli.progress.LedgerWaitNotices). Nothing is counted where no
count was started (on AWS, in tests that start none).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

# The fields of the count: letters waiting now, when the first of them began (monotonic
# seconds, the same clock in every process of the machine), the longest any of them waits
# at most, and how many waits ended with the letter recorded, and kept in the journal.
_WAITING, _SINCE, _PATIENCE, _RECORDED, _KEPT = range(5)

_count: Any = None  # the last count started (a multiprocessing.Array), read after it stops
_counting = False
_ledger = ""  # the ledger the last count is of, as the console names it


@dataclass(frozen=True)
class Waits:
    """The waits of a run's letters for its busy ledger, as counted so far."""

    ledger: str  # the ledger's file
    waiting: int  # letters waiting now
    since: float  # time.monotonic() when the first of them began waiting
    patience: float  # how long, in seconds, the longest of them waits at most
    recorded: int  # letters whose wait ended with them recorded
    kept: int  # letters whose wait ended with them kept in the journal beside the ledger


def start(ledger: str) -> None:
    """Count from none the waits for the ledger ``ledger`` (before forking workers)."""
    global _count, _counting, _ledger
    _count = multiprocessing.get_context("fork").Array("d", 5)
    _counting, _ledger = True, ledger


def stop() -> None:
    """Count no wait from now on; the count so far stays readable."""
    global _counting
    _counting = False


def counted() -> Waits | None:
    """The waits counted since the last start(), None when none was started."""
    count = _count
    if count is None:
        return None
    with count.get_lock():
        fields = list(count)
    return Waits(
        _ledger,
        int(fields[_WAITING]),
        fields[_SINCE],
        fields[_PATIENCE],
        int(fields[_RECORDED]),
        int(fields[_KEPT]),
    )


class Wait:
    """One letter's wait for the busy ledger: counted from begin() (when it must wait) to
    end(), while a count runs."""

    def __init__(self) -> None:
        self._count = _count if _counting else None
        self._begun = False

    def begin(self, patience: float) -> None:
        """The letter waits, for up to ``patience`` seconds: counted once."""
        if self._count is None or self._begun:
            return
        self._begun = True
        with self._count.get_lock():
            if not self._count[_WAITING]:
                self._count[_SINCE] = time.monotonic()
                self._count[_PATIENCE] = 0.0
            self._count[_WAITING] += 1
            self._count[_PATIENCE] = max(self._count[_PATIENCE], patience)

    def end(self, outcome: str) -> None:
        """The wait ended: the letter ``recorded``, ``kept`` in the journal, or neither
        (``lost``: the error that ends the run says it is in doubt). Nothing when it did not
        wait."""
        if self._count is None or not self._begun:
            return
        self._begun = False
        with self._count.get_lock():
            self._count[_WAITING] -= 1
            if outcome == "recorded":
                self._count[_RECORDED] += 1
            elif outcome == "kept":
                self._count[_KEPT] += 1
