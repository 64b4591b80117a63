"""The send ledger in one SQLite file (the local counterpart of the DynamoDB ledger).

Every claim is one ``BEGIN IMMEDIATE`` transaction, so two threads or two processes asking
for the same key never both get ``claimed`` while its lease holds. Writes and reads of a single
statement (record_sent, halted) run without BEGIN/COMMIT: SQLite makes each such statement a
transaction of its own, at half the round trips. One connection is shared
by the threads of a process behind a lock; other processes are kept apart by SQLite's file
lock (``busy_timeout``).

A row naming its own attachment also records, in its claim's transaction, the recipient the
file goes to (the table attachment_owners, with the address masked): the file is refused to
another recipient of the campaign while that letter may have gone out, and validation holds
links to it and copies of it to that recipient (file_owners); a copy of it is refused to
another recipient by any other campaign whatever became of that letter (_same_file). When that
letter is recorded sent, the same UPDATE keeps with it the file's name, size, SHA-256 and
sample print (columns ``file``, ``file_size``, ``file_sha256``, ``file_print``, and
``file_source``, the name of the campaign's CSV; NULL in rows written before them, and for
letters without a file of their own): validation of any campaign finds the letters
that carried a file of a size and print by the index ``sends_by_file`` (sent_copies).

A letter about to be sent keeps its print (``letter_print``: a SHA-256 of its address,
subject, bodies and own file, core.send.letter_print) and the name of its campaign's CSV
(``file_source``) in its row, in the transaction that finds no letter of another campaign
with that print that may have gone out (by the index ``sends_by_letter``): the letter's
claim, where it was composed first (claim's ``letter``), else hold_letter. A renamed copy of a
file sent already does not mail its people again, files or none, and of two copies run at
once only one sends. So too a hash of its address and template set (``letter_person``, by the
index ``sends_by_person``): a letter of the set that went to the address under another file
holds it back, its text changed or not; validation asks it a row at a time (letters_of_sets),
only where letters of another campaign are kept (sets_elsewhere).

Writers take turns on a lock file beside the ledger (``<ledger>-lock``, flock): a worker that
finds the ledger busy sleeps until the other's transaction ends, woken by the kernel, where
polling SQLite's lock left it idle for a fraction of a millisecond after most claims (both
workers claim a row each message). Where the file cannot be made (a read-only folder) or
flock is missing, writers fall back to polling.

The ledger is local to one machine, so each claim and batch also records the process that
made it: one whose process has ended (a run or a worker killed) is not waited for until its
lease or deadline passes, and a later run or redrive takes its rows over at once. An
invocation holding a batch also locks a byte of a file beside the ledger (``<ledger>-holds``)
until it ends: a hold it could not end (the ledger could not be written) is not waited for
either, by a retry in any process (begin_batch).

A ledger told how its letters go out (a local run's: the outbox, or a mail server) notes it
per campaign in the transaction of the campaign's first claim it grants (the table
``deliveries``): a run of a file another way than its letters went is refused even where the
workdir's own record of its runs (deliveries.json) is lost.

A write that fails for want of room (a full disk, the file size limit) says so in plain words
(_no_room), where SQLite says "disk I/O error" for the file size limit. Such a write, and one
refused as the file cannot be written (read-only, no access), raises LedgerNotWritten: no
retry gets through, so the run ends at once; a busy database raises LedgerError, retried.

A letter the mail server (or the outbox) took is recorded sent by one more write, whose loss
would send it again: record_sent waits out a busy ledger far longer than other writes
(``sent_patience``, within the lease of the letter's claim), and where it still cannot write,
keeps the mark in a journal beside the ledger (sent_journal: ``<ledger>-sent``). Claims read
the journal first; the ledger's next writable open records its letters and removes it. An open
read-only (validate, show) writes nothing, there or beside it, and reads them as sent.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import random
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # not on this system: writers poll SQLite's lock instead
    fcntl = None  # type: ignore[assignment]

from mailmatrix.adapters.ledger_waits import Wait
from mailmatrix.adapters.sent_journal import KeptLetter, SentJournal
from mailmatrix.core.failures import DISK_FULL
from mailmatrix.disk import file_size_limit, size_limit_words
from mailmatrix.errors import LedgerError, LedgerNotWritten, NotSettled
from mailmatrix.ports import (
    DEFAULT_CLAIM_LEASE_SECONDS,
    IN_DOUBT,
    NAMED,
    OUTCOME_UNKNOWN,
    SENDING,
    SENT,
    UNCERTAIN_RELEASE,
    UNKNOWN,
    CampaignName,
    CampaignStatus,
    Claim,
    Doubt,
    FileOwner,
    Halt,
    LetterFile,
    LetterPrint,
    Outcome,
    SentCopy,
    SentLetter,
    Unanswered,
    Upload,
    doubt_reason,
    letter_parts,
    name_fold,
    sending_elsewhere,
)
from mailmatrix.processes import process_token, token_running

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 30.0
# How long record_sent waits for a busy ledger (another process holding its write lock)
# before it keeps the letter in the journal instead: the letter is out, and recording it is
# all that is left (the claim's lease bounds it too: past it, another attempt may take over).
SENT_PATIENCE_SECONDS = 600.0
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    key TEXT PRIMARY KEY,
    campaign TEXT NOT NULL,
    row INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('claimed', 'sent', 'failed', 'released')),
    attempt TEXT,
    lease_until REAL,
    message_id TEXT,
    code TEXT,
    reason TEXT,
    takeovers INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    uncertain INTEGER NOT NULL DEFAULT 0,
    holder TEXT,
    file TEXT,
    file_size INTEGER,
    file_sha256 TEXT,
    file_print TEXT,
    file_source TEXT,
    settled TEXT,
    letter_print TEXT,
    letter_person TEXT,
    doubtful_at REAL,
    doubtful_attempt TEXT,
    doubtful_again INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sends_by_campaign ON sends (campaign, row);
CREATE TABLE IF NOT EXISTS batches (
    attempt TEXT PRIMARY KEY,
    invocation TEXT NOT NULL,
    holder TEXT,
    until REAL NOT NULL,
    locked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS uploads (
    campaign TEXT PRIMARY KEY,
    upload TEXT NOT NULL,
    sort TEXT NOT NULL,
    execution TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS halts (
    campaign TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempt TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attachment_owners (
    campaign TEXT NOT NULL,
    attachment TEXT NOT NULL,
    recipient TEXT NOT NULL,
    letter TEXT NOT NULL,
    masked TEXT,
    PRIMARY KEY (campaign, attachment)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS template_sets (
    campaign TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (campaign, name)
);
CREATE TABLE IF NOT EXISTS unanswered (
    campaign TEXT PRIMARY KEY,
    rows TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS names (
    folded TEXT PRIMARY KEY,
    campaign TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS choices (
    campaign TEXT NOT NULL,
    choice TEXT NOT NULL,
    value TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (campaign, choice, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    campaign TEXT NOT NULL,
    delivery TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (campaign, delivery)
) WITHOUT ROWID;
"""


_RECORD_SENT = (
    "UPDATE sends SET state = 'sent', message_id = ?, lease_until = NULL,"
    " code = NULL, reason = NULL, uncertain = MAX(uncertain, ?), updated_at = ? WHERE key = ?"
)
# The same, for a letter that carried its recipient's own file: the file is kept with it.
_FILE_SET = ", file = ?, file_size = ?, file_sha256 = ?, file_print = ?, file_source = ?"
_RECORD_SENT_FILE = _RECORD_SENT.replace(" WHERE", _FILE_SET + " WHERE")
_NOTE_DELIVERY = (
    "INSERT INTO deliveries (campaign, delivery, at) VALUES (?, ?, ?)"
    " ON CONFLICT (campaign, delivery) DO UPDATE SET at = excluded.at"
)
_TEMPLATE_SETS = "SELECT name FROM template_sets WHERE campaign = ?"
_ADD_TEMPLATE_SET = "INSERT OR IGNORE INTO template_sets (campaign, name) VALUES (?, ?)"
_CLAIM_NEW = (
    "INSERT INTO sends (key, campaign, row, state, attempt, lease_until, updated_at, holder,"
    " letter_print, file_source, file, file_size, file_sha256, file_print, letter_person)"
    " VALUES (?, ?, ?, 'claimed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"
)
_OWN_NEW = (
    "INSERT INTO attachment_owners (campaign, attachment, recipient, letter, masked)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (campaign, attachment) DO NOTHING"
)
# An entry whose letter may have gone out: sent, claimed (by a live attempt or a dead one),
# failed as OUTCOME_UNKNOWN, or doubtful (taken over, or a try released with an unknown outcome).
_GONE = "(state IN ('sent', 'claimed') OR code IS ? OR takeovers > 0 OR uncertain)"
# The letters of other campaigns of a print that may have gone out (hold_letter), by the
# index sends_by_letter.
_SAME_LETTER = (
    "SELECT campaign, row, file, file_source, updated_at, state, lease_until, holder, code,"
    " letter_print FROM sends"
    f" WHERE letter_print = ? AND campaign != ? AND {_GONE} ORDER BY updated_at"
)
# The letters of other campaigns of a set to an address (LetterPrint.person), by the index
# sends_by_person: a letter of the set whose text changed (a name spelt anew) holds it back.
_SAME_SET = _SAME_LETTER.replace("letter_print = ?", "letter_person = ?")

# The letters of other campaigns with a file of the same bytes as their recipients' own (a
# letter's own file, LetterPrint.file), each with its owner and whether it may have gone out,
# by the index sends_by_file: gone or not, the file is its owner's.
_SAME_FILE = (
    f"SELECT {_GONE}, sends.campaign, file, recipient, row, masked, file_source, updated_at,"
    " state, lease_until, sends.holder, code FROM sends JOIN attachment_owners"
    " ON attachment_owners.campaign = sends.campaign AND attachment = file AND letter = key"
    " WHERE file_size = ? AND file_print = ? AND file_sha256 = ? AND sends.campaign != ?"
    " ORDER BY updated_at"
)
# What a claim, or hold_letter, keeps of a letter about to be sent (_stamp).
_STAMP = (
    "letter_print = coalesce(?, letter_print), file_source = coalesce(file_source, ?),"
    " file = coalesce(?, file), file_size = coalesce(?, file_size),"
    " file_sha256 = coalesce(?, file_sha256), file_print = coalesce(?, file_print),"
    " letter_person = coalesce(?, letter_person)"
)


# Whether there is such a letter (_claim_unless).
_SAME_LETTER_ANY = f"SELECT 1 FROM sends WHERE letter_print = ? AND campaign != ? AND {_GONE}"
# Whether another campaign has a letter of the same own file, to anyone (_claim_unless:
# which recipient's, _same_file reads once it inserts nothing).
_SAME_FILE_ANY = (
    "SELECT 1 FROM sends WHERE file_size = ? AND file_print = ? AND file_sha256 = ?"
    " AND campaign != ?"
)
_SAME_SET_ANY = _SAME_LETTER_ANY.replace("letter_print", "letter_person")
# _CLAIM_NEW, unless {where} holds.
_CLAIM_NEW_UNLESS = (
    "INSERT INTO sends (key, campaign, row, state, attempt, lease_until, updated_at, holder,"
    " letter_print, file_source, file, file_size, file_sha256, file_print, letter_person)"
    " SELECT ?, ?, ?, 'claimed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE {where}"
    " ON CONFLICT (key) DO NOTHING"
)


# An entry whose letter may have gone out unrecorded (a row in doubt, see SqliteLedger.doubts):
# claimed by an attempt that ended holding it, or given back after a try that may have been taken.
_IN_DOUBT = "(state = 'claimed' OR (state = 'released' AND (uncertain OR takeovers > 0)))"
# The SET clause that keeps, the first time a row's try may have sent its letter (its claim
# outlived its attempt, or ``?``: its try ended with the outcome unknown), that try's claim
# time and attempt: later tries refused (a refused connection) surely sent nothing, and the
# operator looks in the server's log at the doubtful one; a later try that may have sent it
# too is marked (doubtful_again), and both are looked for. Old values: its claim's.
_DOUBTFUL_TRY = (
    "doubtful_at = CASE WHEN {0} AND doubtful_at IS NULL THEN updated_at ELSE doubtful_at END,"
    " doubtful_attempt = CASE WHEN {0} AND doubtful_at IS NULL THEN attempt"
    " ELSE doubtful_attempt END,"
    " doubtful_again = CASE WHEN {0} AND doubtful_at IS NOT NULL THEN 1"
    " ELSE doubtful_again END"
)
_TAKEN_OVER_TRY = _DOUBTFUL_TRY.format("state = 'claimed'")


_T = TypeVar("_T")


def _unlock(lock: int | None) -> None:
    """Drop a batch hold's lock (SqliteLedger._hold_lock), if taken."""
    if lock is not None:
        os.close(lock)


def _error(path: str, what: str, exc: sqlite3.Error) -> LedgerError:
    """The LedgerError of ``what`` on the ledger at ``path`` that failed with ``exc``: where
    a write found no room, why, in plain words (_no_room). A write no retry gets through (no
    room, no write access) is a LedgerNotWritten, which ends the run at once."""
    why = _no_room(path, exc)
    if why is not None:
        return LedgerNotWritten(
            f"ledger {path}: {what}: cannot write the ledger: {why} (SQLite: {exc})"
        )
    if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in _NOT_WRITABLE:
        return LedgerNotWritten(f"ledger {path}: {what}: {exc}")
    return LedgerError(f"ledger {path}: {what}: {exc}")


# SQLite's result codes of a ledger that cannot be written, whatever the retry: the file is
# read-only (its permissions, a read-only file system), access to it is denied, or it cannot
# be opened to write (its folder, where the -wal and -shm files are made). A locked or busy
# database (SQLITE_BUSY, SQLITE_LOCKED) passes, and so may an I/O error of another kind.
_NOT_WRITABLE = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN})


def _no_room(path: str, exc: sqlite3.Error) -> str | None:
    """Why ``exc`` could not write the ledger at ``path`` (or the -wal file beside it), in
    plain words, when it is for want of room; else None.

    SQLite reports a full disk (ENOSPC) as SQLITE_FULL, and every other failed write, the
    file size limit's EFBIG included, as an SQLITE_IOERR without the errno: a ledger whose
    file or -wal file is as large as the limit (nearly: the write would have passed it) has
    met it; a disk with no space left for this user is full.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL):
        return None
    if code & 0xFF == sqlite3.SQLITE_FULL:
        return DISK_FULL
    limit = file_size_limit()
    if limit is not None:
        for file in (path, f"{path}-wal"):
            with contextlib.suppress(OSError):
                if os.path.getsize(file) + _NEAR_THE_LIMIT >= limit:
                    return size_limit_words(limit)
    try:
        found = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return DISK_FULL if found.f_bavail == 0 else None


def _while_busy(
    action: Callable[[], _T],
    timeout: float = BUSY_TIMEOUT_SECONDS,
    on_busy: Callable[[], None] | None = None,
) -> _T:
    """Run ``action``, again while another connection holds the lock it needs (up to
    ``timeout`` seconds), after pauses from 0.1 ms doubling to 2 ms (SQLite's own handler
    sleeps 1, 2, 5, 10 ms); ``on_busy`` is called at each time the lock is found held."""
    delay = 0.0001
    give_up = time.monotonic() + timeout
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _BUSY or time.monotonic() > give_up:
                raise
        if on_busy is not None:
            on_busy()
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.002)


def _busy(error: LedgerError) -> bool:
    """Whether ``error`` is a ledger's found busy (locked by another connection)."""
    cause = error.__cause__
    code = getattr(cause, "sqlite_errorcode", None) or 0
    return not isinstance(error, LedgerNotWritten) and code & 0xFF in _BUSY


def _read_only_uri(path: str, live: bool = False) -> tuple[str, int | None]:
    """The URI that opens the ledger at ``path`` to read only, making and changing nothing
    beside it, and the descriptor that guards it (_reader_guard), to close with it, if any;
    ``live``: one that sees the letters writers commit after it opened (never immutable),
    which makes the -wal and -shm files of a WAL ledger where they are missing.

    SQLite reads a WAL database through a -wal and a -shm file beside it, which a read-only
    connection makes where they are missing (and leaves there). With a -wal file, a run
    writes the ledger or one left it: the letters it holds are read through it, under
    SQLite's locks (and a -shm file, made only when that one is missing). Without one, no
    connection writes the ledger (a writer's -wal lasts until its last connection closes):
    it is read as immutable, guarded against a writer that opens it meanwhile. A ledger that
    is no WAL database (never one this project made) is read as usual.
    """
    file = Path(path).absolute()
    uri = f"{file.as_uri()}?mode=ro"
    if live or not _in_wal_mode(file):
        return uri, None
    guard = _reader_guard(file)
    if not file.with_name(f"{file.name}-wal").exists():
        return f"{uri}&immutable=1", guard
    _unlock(guard)
    return uri, None


def _in_wal_mode(file: Path) -> bool:
    """Whether the SQLite file ``file`` is a WAL database (its header's write version, 2)."""
    try:
        with file.open("rb") as stream:
            header = stream.read(20)
    except OSError:  # said as SQLite opens it
        return False
    return len(header) == 20 and header[18] == 2


# SQLite's lock bytes in a database file (see os_unix.c): each connection reading it holds a
# read lock on the SHARED range; the last connection to close takes a write lock on it (not
# waiting) before it checkpoints its -wal into the file and removes the -wal and -shm.
_SHARED_FIRST = 0x40000000 + 2
_SHARED_SIZE = 510


def _reader_guard(file: Path) -> int | None:
    """A new descriptor of the ledger ``file`` that holds a read lock on SQLite's SHARED
    range, or None: the system cannot lock so, or a writer's last close holds the range now.

    An immutable reader holds no lock of SQLite's, and a writer that opened the file after it
    would checkpoint its -wal into the file under it as it closes: this lock keeps that close
    from it (the -wal stays, for the next writer). An open file description lock: a close of
    another descriptor of the file, by SQLite in this process, leaves it held.
    NOTE: a checkpoint a writer makes while it runs (every 10,000 pages of its -wal, about
    2,000 letters) is not kept off: a run that long, begun while a `validate` reads, may make
    its forecast read some pages as they were and some as they are.
    """
    if _LOCK_WITHOUT_WAITING is None:
        return None
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    lock = struct.pack("hhqqi", fcntl.F_RDLCK, os.SEEK_SET, _SHARED_FIRST, _SHARED_SIZE, 0)
    try:
        fcntl.fcntl(fd, _LOCK_WITHOUT_WAITING, lock)
    except OSError:
        os.close(fd)
        return None
    return fd


# How an invocation locks its batch hold (see begin_batch): an open file description lock
# (Linux), which belongs to the descriptor that took it, not to the process, so two threads
# of a process lock apart; None where the system has none.
# NOTE: there (macOS, BSD) holds are recorded unlocked, and one whose end could not be written
# is waited for until its ``until``, in this process too.
_LOCK_WITHOUT_WAITING = getattr(fcntl, "F_OFD_SETLK", None) if fcntl is not None else None
# How far below the file size limit a ledger file counts as having reached it: a write that
# failed there would have passed it (SQLite writes a page and its header at a time).
_NEAR_THE_LIMIT = 64 * 1024


class SqliteLedger:
    """Ledger port on a SQLite file; safe to share between threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        live: bool = False,
        delivery: str | None = None,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        sent_patience: float = SENT_PATIENCE_SECONDS,
    ) -> None:
        """Open the ledger at ``path``, made and brought up to date as needed; ``read_only``:
        for what only reads it (validate, show), which writes nothing, there or beside it
        (_read_only_uri), and reads the letters its journal keeps as sent (_with_kept_letters);
        ``live`` (with ``read_only``): it sees the letters writers commit later too (another
        workdir's ledger, asked before each letter), making its -wal and -shm files if missing;
        ``delivery``: how the letters of the claims it grants go out (delivery_of: ``outbox``
        or ``smtp://user@host:port``), kept per campaign (deliveries). A write waits up to
        ``busy_timeout`` seconds for another connection's lock, record_sent up to
        ``sent_patience`` (then it keeps the letter in the journal)."""
        self.path = str(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._sent_patience = sent_patience
        self._journal = SentJournal(self.path)
        # The keys claimed here and not recorded yet: their rows, leases and attempts
        self._claimed: dict[str, tuple[int, float, str]] = {}
        self._told_busy = False  # record_sent said once that it waits for a busy ledger
        self._delivery = delivery
        # The campaigns whose claims here have noted the delivery (once per campaign)
        self._noted: set[str] = set()
        self._lock = threading.Lock()
        self._turns: tuple[int, int] | None = None  # (pid, fd) of the lock file, once opened
        # The descriptors locking the batches held here, by (attempt, invocation): begin_batch
        # opens each, end_batch closes it.
        self._holds: dict[tuple[str, str], int] = {}
        self._read_only = read_only
        self._guard: int | None = None  # a read-only open's lock (_reader_guard)
        uri, self._guard = _read_only_uri(self.path, live) if read_only else (None, None)
        try:
            self._db = sqlite3.connect(
                uri or self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=uri is not None,
            )
        except sqlite3.Error as exc:
            _unlock(self._guard)
            raise _error(self.path, "cannot open", exc) from exc
        if uri is not None:
            try:
                self._db = _up_to_date(self._db, self.path)
                _with_kept_letters(self._db, self.path, self._journal.letters().values())
            except BaseException:
                self._db.close()
                _unlock(self._guard)
                raise
            return
        try:
            # Several processes open a new ledger at once (the workers of a run): switching
            # to WAL may answer "database is locked" without waiting, so the set-up, which
            # can run twice, is tried again until it gets through.
            _while_busy(self._set_up, busy_timeout)
            # Waiting for another process's write lock is done by _locked below, in steps of
            # a fraction of a millisecond; SQLite's own busy handler sleeps 1, 2, 5, 10... ms,
            # which left the sending processes idle half the time.
            self._db.execute("PRAGMA busy_timeout = 0")
        except BaseException as exc:
            self._db.close()  # a file that is no ledger (or busy for good): not left open
            if isinstance(exc, sqlite3.Error):
                raise _error(self.path, "cannot open", exc) from exc
            raise
        self._replay_journal()

    def _replay_journal(self) -> None:
        """Record the letters the journal kept (sent when the ledger could not record them),
        then remove it; where the ledger cannot be written yet, the journal stays."""
        try:
            with self._journal.replaying() as letters:
                if letters is None:
                    return
                with self._transaction("record the letters kept in the journal") as db:
                    for letter in letters:
                        parts = (letter.key, letter.message_id, letter.uncertain, letter.file)
                        db.execute(*_record_sent(parts, letter.at))
                self._journal.remove()  # only once they are committed
        except (LedgerError, OSError) as exc:
            log.debug("ledger: the journal %s stays: %s", self._journal.path, exc)
            return
        if letters:  # none: every line was unreadable, which remove() said
            log.info("ledger: recorded %d letter(s) kept in the journal", len(letters))

    def _set_up(self) -> None:
        db = self._db
        # Every commit appends each page it changed to the WAL, whole: with 4 KiB pages and
        # an index on message ids, 10,000 emails wrote 260 MB here; with 1 KiB pages and no
        # such index, 64 MB. (page_size only applies to a new file; message-id lookups, for
        # delivery events on AWS, scan a local ledger instead.)
        db.execute("PRAGMA page_size = 1024")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint every 10,000 WAL pages rather than 1,000: each checkpoint syncs, and on
        # ext4 a sync waits for the outbox's pending writes too; a 2,000-row run made 122
        # syncs with the default, 17 with this.
        db.execute("PRAGMA wal_autocheckpoint=10000")
        _bring_up_to_date(db)

    @classmethod
    def from_url(cls, url: str) -> SqliteLedger:
        """Open ``sqlite:///abs/file.db`` (the MAILMATRIX_LEDGER form)."""
        prefix = "sqlite://"
        if not url.startswith(prefix):
            raise LedgerError(f"ledger {url}: not a sqlite:// URL")
        return cls(url[len(prefix) :])

    def close(self) -> None:
        """Close the connection (and the lock file). A batch still held here keeps its lock
        until its end_batch, or this process's end: its invocation may still be sending."""
        with self._lock:
            self._db.close()
            _unlock(self._guard)
            self._guard = None
            if self._turns is not None and self._turns[0] == os.getpid() and self._turns[1] >= 0:
                os.close(self._turns[1])
            self._turns = None

    def _locked(
        self,
        sql: str,
        parameters: tuple[object, ...] = (),
        on_busy: Callable[[], None] | None = None,
    ) -> sqlite3.Cursor:
        """Execute ``sql``, retrying while another connection holds the write lock (30 s)."""
        return _while_busy(lambda: self._db.execute(sql, parameters), self._busy_timeout, on_busy)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the writers' lock file while a write runs (see the module's docstring); a
        process forked with this ledger open opens the file anew, as flock is shared by the
        copies of one open file."""
        fd = None if self._read_only else self._turn_file()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _turn_file(self) -> int | None:
        """This process's descriptor of the lock file, opened at its first write; None where
        it cannot be made (writers poll then)."""
        pid = os.getpid()
        if self._turns is not None:
            opened_by, fd = self._turns
            if opened_by == pid:
                return fd if fd >= 0 else None
        fd = -1
        if fcntl is not None:
            try:
                fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.debug("ledger: no lock file beside %s (%s): writers poll", self.path, exc)
        self._turns = (pid, fd)
        return fd if fd >= 0 else None

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._turn():
            try:
                self._locked("BEGIN" if self._read_only else "BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _error(self.path, what, exc) from exc

    def claim(
        self,
        key: str,
        *,
        campaign: str,
        row: int,
        attempt: str,
        lease_until: float | None = None,
        sent_before: SentLetter | None = None,
        others: Mapping[str, str] | None = None,
        owner: tuple[str, str] | tuple[str, str, str] | None = None,
        corrected: bool = False,
        letter: LetterPrint | None = None,
    ) -> Claim:
        """Claim ``key`` (see _claim); the first claim of each campaign granted here also
        notes, in its transaction, how its letter goes out (deliveries). A key whose letter
        the journal kept (sent, not recorded here) is sent."""
        kept = self._journal.sent(key)
        if kept is not None:
            if sent_before is not None:
                before, message_id, uncertain, file = letter_parts(sent_before)
                self.record_sent(before, message_id=message_id, uncertain=uncertain, file=file)
            doubt = doubt_reason(kept.uncertain, 0)
            return Claim("sent", message_id=kept.message_id, attempt=kept.attempt, reason=doubt)
        granted = self._claim(
            key,
            campaign=campaign,
            row=row,
            attempt=attempt,
            lease_until=lease_until,
            sent_before=sent_before,
            others=others,
            owner=owner,
            corrected=corrected,
            letter=letter,
        )
        if sent_before is not None:
            self._claimed.pop(sent_before[0], None)
        if granted.state == "claimed":
            lease = lease_until
            if lease is None:
                lease = self._clock() + DEFAULT_CLAIM_LEASE_SECONDS
            self._claimed[key] = (row, lease, attempt)
            if self._delivery is not None:
                self._noted.add(campaign)  # committed with the claim
        return granted

    def _claim(
        self,
        key: str,
        *,
        campaign: str,
        row: int,
        attempt: str,
        lease_until: float | None,
        sent_before: SentLetter | None,
        others: Mapping[str, str] | None,
        owner: tuple[str, str] | tuple[str, str, str] | None,
        corrected: bool = False,
        letter: LetterPrint | None = None,
    ) -> Claim:
        """Atomically claim ``key`` for ``attempt`` unless settled or held by a live attempt,
        or (``others``) another set's letter to the address may have gone out, or (``owner``)
        the row's own file may have gone to another recipient; with ``letter``, a granted
        claim is also held back as hold_letter would, or keeps the letter's print.

        ``sent_before`` (the previous row's key and message id) is recorded sent in the same
        transaction: one write transaction per email. A new key is claimed by one insert that
        also looks up the other sets' letters (only when the campaign has several), the letters
        of its print elsewhere and those of its own file elsewhere (only for a letter with a
        file of its own), by their indexes, and keeps the print and the file; only when it
        inserts nothing are they read to name them (a letter of the file to the same person
        is then claimed as new). The file's owner is recorded in the same transaction (one
        insert, only for a row naming its own file; more statements only when the file
        already has an owner).
        """
        now = self._clock()
        lease = now + DEFAULT_CLAIM_LEASE_SECONDS if lease_until is None else lease_until
        process = process_token()
        with self._transaction(f"claim {key[:12]}") as db:
            if sent_before is not None:
                db.execute(*_record_sent(sent_before, now))
            # Most keys are new, no other set's letter to the address may have gone out and no
            # letter of their print elsewhere: one insert claims them, checking both as it
            # goes. The reads below, which name what they find, run only when it inserts nothing.
            new = (key, campaign, row, attempt, lease, now, process)
            if db.execute(*_claim_unless(new, others, letter)).rowcount:
                return self._inserted(db, campaign, key, owner, corrected=corrected, now=now)
            other = _other_letter(db, others) if others else None
            # The key is not new, or the insert found a letter that may have gone out: which?
            held = None
            if letter is not None and other is None:
                held = _same_file(db, letter, now) or _same_letter(db, letter, now)
            sending = held if held is not None and held.state == SENDING else None
            stamp = _stamp(None if held else letter)
            # A new key whose letter's like went out elsewhere is claimed (held back by the
            # caller), without its print or file; one of the operator's ``again`` with it, or
            # with a file another campaign sent to the same person, with them.
            if (
                other is None
                and sending is None
                and db.execute(_CLAIM_NEW, (*new, *stamp)).rowcount
            ):
                return self._inserted(
                    db, campaign, key, owner, corrected=corrected, now=now, held=held
                )
            found = db.execute(
                "SELECT state, attempt, lease_until, message_id, code, reason, uncertain,"
                " takeovers, holder, file FROM sends WHERE key = ?",
                (key,),
            ).fetchone()
            if found is None and sending is not None:  # a new key, its letter being sent
                return _sending_elsewhere(sending)
            if found is None:  # a new key, refused for the other letter
                return Claim("other", letter=other)
            (
                state,
                holder,
                holder_lease,
                message_id,
                code,
                reason,
                uncertain,
                takeovers,
                holder_process,
                file,
            ) = found
            if state == "sent":
                doubt = doubt_reason(bool(uncertain), takeovers)
                return Claim("sent", message_id=message_id, attempt=holder, reason=doubt, file=file)
            if state == "failed":
                return Claim("failed", code=code, reason=reason, attempt=holder)
            # A claim outlives its process only by accident (killed): a local ledger can tell.
            if (
                state == "claimed"
                and holder != attempt
                and holder_lease > now
                and token_running(holder_process)
            ):
                return Claim(
                    "busy",
                    reason=f"claimed by attempt {holder} until {holder_lease:.3f}",
                    attempt=holder,
                )
            if other is not None:
                return Claim("other", letter=other)
            if sending is not None:
                return _sending_elsewhere(sending)
            if owner is not None and not _own(db, campaign, key, owner, corrected=corrected):
                return Claim("owned")
            takeover = state == "claimed"
            db.execute(
                "UPDATE sends SET state = 'claimed', attempt = ?, lease_until = ?,"
                f" {_TAKEN_OVER_TRY},"
                f" takeovers = takeovers + ?, updated_at = ?, holder = ?, {_STAMP} WHERE key = ?",
                (attempt, lease, int(takeover), now, process, *stamp, key),
            )
            self._note_delivery(db, campaign, now)
        doubts = takeovers + int(takeover) + int(bool(uncertain))
        if takeover:
            log.debug("ledger: row %s taken over from attempt %s by %s", row, holder, attempt)
            reason = f"taken over from attempt {holder}"
            return Claim("claimed", reason=reason, attempt=holder, doubts=doubts, held=held)
        if uncertain:
            reason = UNCERTAIN_RELEASE.format(holder)
            return Claim("claimed", reason=reason, attempt=holder, doubts=doubts, held=held)
        return Claim("claimed", doubts=doubts, held=held)

    def _inserted(
        self,
        db: sqlite3.Connection,
        campaign: str,
        key: str,
        owner: tuple[str, str] | tuple[str, str, str] | None,
        *,
        corrected: bool,
        now: float,
        held: SentCopy | None = None,
    ) -> Claim:
        """The claim of ``key``, just inserted new: granted, unless its own file is another
        recipient's (then the insert is undone: nothing written)."""
        if owner is None or _own(db, campaign, key, owner, corrected=corrected):
            self._note_delivery(db, campaign, now)
            return Claim("claimed", held=held)
        db.execute("DELETE FROM sends WHERE key = ?", (key,))
        return Claim("owned")

    def _note_delivery(self, db: sqlite3.Connection, campaign: str, now: float) -> None:
        """Note, in a claim's transaction, that letters of ``campaign`` go out the ledger's
        way (its ``delivery``): once per campaign, the first claim of it granted here."""
        if self._delivery is not None and campaign not in self._noted:
            db.execute(_NOTE_DELIVERY, (campaign, self._delivery, now))

    def begin_batch(self, attempt: str, *, invocation: str, until: float) -> str | None:
        """Mark ``attempt``'s batch as sent by ``invocation`` (see the Ledger port); an earlier
        invocation still holds it while before its ``until``, while its process runs, and, if
        it locked its hold, while the lock is held.

        The lock (_hold_lock) lasts as long as the invocation: end_batch drops it before it
        deletes the hold, and so does the end of its process. A hold that could not be
        deleted (a full disk, a file size limit) would keep the batch's retries in the other
        worker processes of the run, whose holder still runs, waiting as ClaimBusy until its
        ``until`` (a quarter of an hour): its free lock tells them it has ended. A hold
        recorded unlocked (by an earlier version, or where the lock could not be taken) is
        waited for as before.
        """
        lock = self._hold_lock(attempt)
        try:
            other = self._hold(attempt, invocation, until, locked=lock is not None)
        except BaseException:
            _unlock(lock)
            raise
        if other is not None:
            _unlock(lock)
        elif lock is not None:
            self._holds[(attempt, invocation)] = lock
        return other

    def _hold(self, attempt: str, invocation: str, until: float, *, locked: bool) -> str | None:
        """Record ``invocation``'s hold on ``attempt``'s batch (``locked``: it holds the lock
        of the attempt's byte) unless another invocation holds it; return that one, or None."""
        with self._transaction(f"begin_batch {attempt[-12:]}") as db:
            found = db.execute(
                "SELECT invocation, holder, until, locked FROM batches WHERE attempt = ?",
                (attempt,),
            ).fetchone()
            if found is not None:
                other, holder, other_until, other_locked = found
                ended = other_locked and locked  # the other's lock was free to take
                if (
                    other != invocation
                    and other_until > self._clock()
                    and token_running(holder)
                    and not ended
                ):
                    return str(other)
            db.execute(
                "INSERT INTO batches (attempt, invocation, holder, until, locked)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (attempt) DO UPDATE SET"
                " invocation = excluded.invocation, holder = excluded.holder,"
                " until = excluded.until, locked = excluded.locked",
                (attempt, invocation, process_token(), until, int(locked)),
            )
        return None

    def end_batch(self, attempt: str, *, invocation: str) -> None:
        """Forget ``invocation``'s hold on ``attempt``'s batch. Its lock goes first, which
        needs no write: where the hold cannot be deleted, it is known to have ended."""
        _unlock(self._holds.pop((attempt, invocation), None))
        self._statement(
            f"end_batch {attempt[-12:]}",
            "DELETE FROM batches WHERE attempt = ? AND invocation = ?",
            (attempt, invocation),
            write=True,
        )

    def _hold_lock(self, attempt: str) -> int | None:
        """A new descriptor of ``<ledger>-holds`` that locks ``attempt``'s byte, or None: a
        live invocation of the attempt holds it (or, by a rare chance, of another attempt
        whose byte is the same), or the system cannot lock so. The lock needs no room on
        the disk: the file stays empty."""
        if _LOCK_WITHOUT_WAITING is None:
            return None
        try:
            fd = os.open(f"{self.path}-holds", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.debug("ledger: no holds file beside %s (%s): holds unlocked", self.path, exc)
            return None
        byte = int.from_bytes(hashlib.sha256(attempt.encode()).digest()[:6], "big")
        # struct flock: type, whence, start, length, pid (0, as an open file description
        # lock requires)
        lock = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
        try:
            fcntl.fcntl(fd, _LOCK_WITHOUT_WAITING, lock)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):  # not merely held
                log.debug("ledger: cannot lock a hold in %s-holds (%s)", self.path, exc)
            return None
        return fd

    def _statement(
        self,
        what: str,
        sql: str,
        parameters: tuple[object, ...],
        *,
        write: bool = False,
        on_busy: Callable[[], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """One statement on its own: SQLite runs it as a transaction of its own (autocommit);
        its rows, whose values are typed by the table's columns, not by the driver. A
        ``write`` waits its turn (_turn); a read needs none. ``on_busy``: see _while_busy."""
        with self._lock, self._turn() if write else contextlib.nullcontext():
            try:
                return self._locked(sql, parameters, on_busy).fetchall()
            except sqlite3.Error as exc:
                raise _error(self.path, what, exc) from exc

    def record_sent(
        self,
        key: str,
        *,
        message_id: str,
        uncertain: bool = False,
        file: LetterFile | None = None,
    ) -> None:
        """Mark ``key`` as sent with the service's message id, and the file it carried as
        its recipient's own, in one statement (see the Ledger port). A busy ledger is waited
        for up to ``sent_patience`` (within the claim's lease); where it still cannot be
        written, the letter is kept in the journal (a LedgerNotWritten still raised: the run
        ends); only when neither can be written is the letter left in doubt (LedgerError,
        its row named)."""
        row, lease, attempt = self._claimed.get(key, (None, None, None))
        now = self._clock()
        wait = Wait()  # counted for the console while the letter waits for a busy ledger
        try:
            self._write_sent((key, message_id, uncertain, file), now, lease, wait)
            wait.end("recorded")
        except LedgerError as error:
            kept = KeptLetter(key, message_id, uncertain, attempt, now, file)
            try:
                self._journal.keep(kept)
            except OSError as fault:
                raise type(error)(
                    f"{error}; {_in_doubt(row, self._journal.path, fault)}",
                    details={"in_doubt": [] if row is None else [row]},
                ) from error
            wait.end("kept")
            log.warning(
                "ledger: a letter sent could not be recorded in the ledger: kept in the"
                " journal beside it (%s): %s",
                self._journal.path,
                error,
            )
            if isinstance(error, LedgerNotWritten):
                raise  # no later write gets through: the run ends, the letter kept
        finally:
            wait.end("lost")  # in doubt, or interrupted; nothing once it ended otherwise
        self._claimed.pop(key, None)

    def _write_sent(self, letter: SentLetter, now: float, lease: float | None, wait: Wait) -> None:
        """Record ``letter`` sent at ``now``, waiting for a busy ledger up to sent_patience,
        and never past the claim's ``lease`` (when known): then another attempt may take the
        row over, and only the journal keeps it from sending the letter again. The ``wait``
        begins as the ledger is first found busy."""
        patience = self._sent_patience
        if lease is not None:
            patience = min(patience, lease - now)
        give_up = time.monotonic() + patience
        delay = 0.05
        begin = functools.partial(wait.begin, patience)  # said from the first busy try on
        while True:
            try:
                what = f"record_sent {letter[0][:12]}"
                self._statement(what, *_record_sent(letter, now), write=True, on_busy=begin)
                return
            except LedgerError as error:
                if not _busy(error) or time.monotonic() + delay > give_up:
                    raise
            if not self._told_busy:
                self._told_busy = True
                log.warning(
                    "ledger: %s is busy (another process holds it): a letter sent waits to be"
                    " recorded, for up to %.0f s",
                    self.path,
                    patience,
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def record_failed(
        self,
        key: str,
        *,
        code: str,
        reason: str,
        permanent: bool,
        uncertain: bool = False,
        file: LetterFile | None = None,
    ) -> None:
        """Mark ``key`` failed for good, or release the claim after a passing failure; an
        ``uncertain`` release is remembered; ``file`` is kept with the letter in the same
        statement (see the Ledger port)."""
        self._claimed.pop(key, None)
        state = "failed" if permanent else "released"
        update = (
            "UPDATE sends SET state = ?, code = ?, reason = ?, lease_until = NULL,"
            f" {_DOUBTFUL_TRY.format('?')}, uncertain = MAX(uncertain, ?), updated_at = ?{{}}"
            " WHERE key = ? AND state != 'sent'"
        )
        sure = int(uncertain)
        values: tuple[object, ...] = (state, code, reason, sure, sure, sure, sure, self._clock())
        with self._transaction(f"record_failed {key[:12]}") as db:
            if file is None:
                db.execute(update.format(""), (*values, key))
            else:
                db.execute(update.format(_FILE_SET), (*values, *_file_values(file), key))

    def sent_sizes(self, sizes: Collection[int]) -> set[int]:
        """Of ``sizes``, those of letters' own files with a digest (see the Ledger port):
        one read of the index sends_by_file per _KEYS_PER_SELECT sizes."""
        found: set[int] = set()
        for chunk in _chunks(sorted(sizes)):
            marks = ", ".join("?" * len(chunk))
            page = self._statement(
                "sent_sizes",
                f"SELECT DISTINCT file_size FROM sends WHERE file_size IN ({marks})",
                tuple(chunk),
            )
            found.update(int(row[0]) for row in page)
        return found

    def sent_copies(self, size: int, print: str) -> Iterator[SentCopy]:
        """The letters of any campaign with their recipient's own file of ``size`` and
        ``print``, gone or not (NAMED; see the Ledger port), by the index sends_by_file, each
        with its file's owner (the owner record of its campaign and file naming it)."""
        after = ""
        now = self._clock()
        outbox = functools.cache(functools.partial(_went_to_outbox, self._read))
        while True:
            page = self._statement(
                f"sent_copies {size}",
                "SELECT key, sends.campaign, file, recipient, row, masked, file_sha256,"
                f" file_source, updated_at, state, code, lease_until, sends.holder, {_GONE}"
                " FROM sends JOIN attachment_owners"
                " ON attachment_owners.campaign = sends.campaign AND attachment = file"
                " AND letter = key"
                " WHERE file_size = ? AND file_print = ? AND key > ?"
                " ORDER BY key LIMIT ?",
                (OUTCOME_UNKNOWN, size, print, after, _SETTLED_PAGE),
            )
            for _, campaign, name, recipient, row, masked, sha256, source, at, *kept in page:
                state, code, lease, holder, gone = kept
                yield SentCopy(
                    str(campaign),
                    str(name),
                    str(recipient),
                    int(row),
                    str(masked or ""),
                    str(sha256),
                    str(source or ""),
                    float(at or 0),
                    _letter_state(state, code, lease, holder, now) if gone else NAMED,
                    outbox=outbox(str(campaign)),
                )
            if len(page) < _SETTLED_PAGE:
                return
            after = str(page[-1][0])

    def hold_letter(self, key: str, letter: LetterPrint) -> SentCopy | None:
        """The letter of another campaign of ``letter``'s print that may have gone out, not
        of a file it sends again; else None, and the print kept with ``key`` (see the Ledger
        port). One transaction, one read of the index sends_by_letter, and one of the index
        sends_by_file for a letter with a file of its own."""
        with self._transaction(f"hold_letter {key[:12]}") as db:
            now = self._clock()
            held = _same_file(db, letter, now) or _same_letter(db, letter, now)
            if held is None:
                db.execute(f"UPDATE sends SET {_STAMP} WHERE key = ?", (*_stamp(letter), key))
            else:
                held = held._replace(outbox=_went_to_outbox(db.execute, held.campaign))
        return held

    def sets_elsewhere(self, campaign: str) -> bool:
        """Whether letters of other campaigns than ``campaign`` are kept with their address
        and set (see the Ledger port): two reads of the index sends_by_campaign's ends, and
        one of sends_by_person only where there are."""
        found = self._statement(
            "sets_elsewhere",
            "SELECT EXISTS (SELECT 1 FROM sends WHERE campaign < ?)"
            " OR EXISTS (SELECT 1 FROM sends WHERE campaign > ?)",
            (campaign, campaign),
        )
        if not found[0][0]:
            return False
        kept = self._statement(
            "sets_elsewhere", "SELECT 1 FROM sends WHERE letter_person IS NOT NULL LIMIT 1", ()
        )
        return bool(kept)

    def letters_of_sets(
        self,
        campaign: str,
        people: Mapping[str, str],
        again: Collection[str] = (),
        *,
        among: Collection[str] | None = None,
    ) -> dict[str, SentCopy]:
        """For each of ``people``, the letter of its set to its address under another
        campaign (of ``among`` only, where given) that may have gone out (see the Ledger
        port): one read of the index sends_by_person per _KEYS_PER_SELECT people."""
        found: dict[str, list[tuple[Any, ...]]] = {}
        for chunk in _chunks(list(people)):
            marks = ", ".join("?" * len(chunk))
            page = self._statement(
                "letters_of_sets",
                _SAME_SET.replace("letter_person = ?", f"letter_person IN ({marks})").replace(
                    "letter_print FROM", "letter_print, letter_person FROM"
                ),
                (*chunk, campaign, OUTCOME_UNKNOWN),
            )
            for *letter, person in page:
                if among is None or letter[0] in among:
                    found.setdefault(str(person), []).append(tuple(letter))
        now = self._clock()
        letters = {
            person: _first_letter(rows, again, now, template=people[person])
            for person, rows in found.items()
        }
        outbox = functools.cache(functools.partial(_went_to_outbox, self._read))
        return {
            person: letter._replace(outbox=outbox(letter.campaign))
            for person, letter in letters.items()
            if letter is not None
        }

    def halt(self, campaign: str, *, code: str, reason: str, attempt: str) -> Halt:
        """Record that ``campaign`` must stop sending, replacing an earlier halt."""
        halt = Halt(campaign=campaign, code=code, reason=reason, attempt=attempt, at=self._clock())
        with self._transaction(f"halt {campaign}") as db:
            db.execute(
                "INSERT INTO halts (campaign, code, reason, attempt, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (campaign) DO UPDATE SET code = excluded.code,"
                " reason = excluded.reason, attempt = excluded.attempt, at = excluded.at",
                (campaign, code, reason, attempt, halt.at),
            )
        return halt

    def halted(self, campaign: str) -> Halt | None:
        """Return the campaign's recorded halt, or None."""
        found = self._statement(
            f"halted {campaign}",
            "SELECT code, reason, attempt, at FROM halts WHERE campaign = ?",
            (campaign,),
        )
        if not found:
            return None
        code, reason, attempt, at = found[0]
        return Halt(campaign=campaign, code=code, reason=reason, attempt=attempt, at=at)

    def clear_halt(self, campaign: str) -> None:
        """Remove the campaign's halt."""
        with self._transaction(f"clear_halt {campaign}") as db:
            db.execute("DELETE FROM halts WHERE campaign = ?", (campaign,))

    def note_unanswered(self, campaign: str, row: int, *, answered_at: float | None) -> Unanswered:
        """Add ``row`` to the campaign's rows in a row unanswered, unless the calling batch
        had a row answered after the last of them (``answered_at``): then it starts them
        again; one transaction (see the Ledger port)."""
        now = self._clock()
        with self._transaction(f"note_unanswered {campaign}") as db:
            found = db.execute(
                "SELECT rows, at FROM unanswered WHERE campaign = ?", (campaign,)
            ).fetchone()
            rows: tuple[int, ...] = ()
            if found is not None and (answered_at is None or found[1] >= answered_at):
                rows = _row_numbers(found[0])
            if row not in rows:
                rows = (*rows, row)
            db.execute(
                "INSERT INTO unanswered (campaign, rows, at) VALUES (?, ?, ?)"
                " ON CONFLICT (campaign) DO UPDATE SET rows = excluded.rows, at = excluded.at",
                (campaign, ",".join(map(str, rows)), now),
            )
        return Unanswered(rows, now)

    def clear_unanswered(self, campaign: str) -> None:
        """End the campaign's rows in a row unanswered."""
        self._statement(
            f"clear_unanswered {campaign}",
            "DELETE FROM unanswered WHERE campaign = ?",
            (campaign,),
            write=True,
        )

    def unanswered(self, campaign: str) -> Unanswered | None:
        """The campaign's rows in a row unanswered, or None."""
        found = self._statement(
            f"unanswered {campaign}",
            "SELECT rows, at FROM unanswered WHERE campaign = ?",
            (campaign,),
        )
        return Unanswered(_row_numbers(found[0][0]), float(found[0][1])) if found else None

    def record_upload(self, upload: Upload) -> Upload:
        """Record ``upload`` as its campaign's latest validated one unless a newer one (a
        greater ``order``) is recorded; return the latest (see the Ledger port)."""
        with self._transaction(f"record_upload {upload.campaign}") as db:
            db.execute(
                "INSERT INTO uploads (campaign, upload, sort, execution) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (campaign) DO UPDATE SET upload = excluded.upload,"
                " sort = excluded.sort, execution = excluded.execution"
                " WHERE excluded.sort >= uploads.sort",
                (upload.campaign, upload.upload, upload.order, upload.execution),
            )
            found = db.execute(
                "SELECT upload, sort, execution FROM uploads WHERE campaign = ?", (upload.campaign,)
            ).fetchone()
        return Upload(upload.campaign, *found)

    def record_name(self, campaign: str, name: str) -> CampaignName | None:
        """Record ``name`` as ``campaign``'s file, unless a name alike is another campaign's:
        return that one (see the Ledger port). One insert, and one read of what it holds."""
        with self._transaction(f"record_name {campaign}") as db:
            folded = name_fold(name)
            db.execute(
                "INSERT INTO names (folded, campaign, name) VALUES (?, ?, ?)"
                " ON CONFLICT (folded) DO NOTHING",
                (folded, campaign, name),
            )
            found = db.execute(
                "SELECT campaign, name FROM names WHERE folded = ?", (folded,)
            ).fetchone()
        return None if found[0] == campaign else CampaignName(*found)

    def record_choice(self, campaign: str, choice: str, value: str) -> None:
        """Keep the operator's ``choice`` for ``campaign`` (see the Ledger port); given again,
        its time is the latest."""
        self._statement(
            f"record_choice {campaign}",
            "INSERT INTO choices (campaign, choice, value, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (campaign, choice, value) DO UPDATE SET at = excluded.at",
            (campaign, choice, value, self._clock()),
            write=True,
        )

    def choices(self, campaign: str) -> list[tuple[str, str, float]]:
        """The choices kept for ``campaign`` (record_choice): choice, value, time."""
        found = self._statement(
            f"choices {campaign}",
            "SELECT choice, value, at FROM choices WHERE campaign = ? ORDER BY at",
            (campaign,),
        )
        return [(str(choice), str(value), float(at)) for choice, value, at in found]

    def named_alike(self, name: str) -> CampaignName | None:
        """The campaign recorded for a file of a name alike ``name``, or None."""
        found = self._statement(
            "named_alike", "SELECT campaign, name FROM names WHERE folded = ?", (name_fold(name),)
        )
        return CampaignName(*found[0]) if found else None

    def latest_upload(self, campaign: str) -> Upload | None:
        """The campaign's latest validated upload, or None."""
        found = self._statement(
            f"latest_upload {campaign}",
            "SELECT upload, sort, execution FROM uploads WHERE campaign = ?",
            (campaign,),
        )
        return Upload(campaign, *found[0]) if found else None

    def campaign_status(self, campaign: str) -> CampaignStatus:
        """The campaign's halt, latest upload, set names and rows unanswered: four reads of a
        local file, each a few rows at most (see the Ledger port)."""
        return CampaignStatus(
            halt=self.halted(campaign),
            latest_upload=self.latest_upload(campaign),
            template_sets=self.template_sets(campaign),
            unanswered=self.unanswered(campaign),
        )

    def template_sets(self, campaign: str) -> frozenset[str]:
        """The names of the template sets ``campaign`` has used."""
        found = self._statement(f"template_sets {campaign}", _TEMPLATE_SETS, (campaign,))
        return frozenset(str(row[0]) for row in found)

    def record_template_sets(
        self, campaign: str, names: Collection[str], *, catalog: Collection[str]
    ) -> list[str]:
        """Add ``names`` to the sets ``campaign`` has used, in one transaction with the check
        that ``catalog`` has every set used before; return those it lacks (see the Ledger
        port)."""
        with self._transaction(f"record_template_sets {campaign}") as db:
            earlier = {row[0] for row in db.execute(_TEMPLATE_SETS, (campaign,))}
            missing = sorted(earlier - set(catalog))
            if not missing:
                db.executemany(_ADD_TEMPLATE_SET, [(campaign, name) for name in set(names)])
        return missing

    def add_template_sets(self, campaign: str, names: Collection[str]) -> None:
        """Add ``names`` to the sets ``campaign`` has used, unchecked (sets a workdir recorded
        before the ledger did)."""
        with self._transaction(f"add_template_sets {campaign}") as db:
            db.executemany(_ADD_TEMPLATE_SET, [(campaign, name) for name in set(names)])

    def has_entries(self, campaign: str) -> bool:
        """Whether any row of ``campaign`` was ever claimed here."""
        return bool(
            self._statement(
                f"has_entries {campaign}",
                "SELECT 1 FROM sends WHERE campaign = ? LIMIT 1",
                (campaign,),
            )
        )

    def _read(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """One read on its own (_statement), named by its SQL's first words."""
        return self._statement(" ".join(sql.split()[:4]), sql, parameters)

    def deliveries(self, campaign: str) -> list[str]:
        """How the letters of ``campaign`` claimed here went out (``outbox``, or a mail
        server's ``smtp://user@host:port``), the latest used last; none in a ledger from
        before they were kept, or of claims granted by one not told its delivery."""
        found = self._statement(
            f"deliveries {campaign}",
            f"{_DELIVERIES_OF} ORDER BY at",
            (campaign,),
        )
        return [str(row[0]) for row in found]

    def sent_ids_named(self, campaign: str, pattern: str) -> tuple[bool, bool]:
        """Whether letters of ``campaign`` recorded sent here have message ids that match the
        GLOB ``pattern`` and hold no ``@`` (a file's name, never a Message-ID), and whether
        some have other ids: how their letters went, for a ledger from before it kept that
        (deliveries). One pass over the campaign's rows."""
        found = self._statement(
            f"sent_ids_named {campaign}",
            "SELECT DISTINCT message_id GLOB ? AND instr(message_id, '@') = 0 FROM sends"
            " WHERE campaign = ? AND state = 'sent' AND message_id IS NOT NULL",
            (pattern, campaign),
        )
        named = {bool(row[0]) for row in found}
        return True in named, False in named

    def sent_count(self, campaign: str) -> int:
        """How many rows of ``campaign`` are recorded sent here."""
        found = self._statement(
            f"sent_count {campaign}",
            "SELECT count(*) FROM sends WHERE campaign = ? AND state = 'sent'",
            (campaign,),
        )
        return int(found[0][0]) if found else 0

    def failed_keys(
        self, campaign: str, *, failed_before: float | None = None, unknown: bool = False
    ) -> list[str]:
        """The keys of the rows release_failed would give back (see the Ledger port)."""
        where, parameters = _failed_rows(campaign, failed_before, unknown)
        return [
            str(r[0])
            for r in self._statement(
                "failed_keys", f"SELECT key FROM sends WHERE {where}", parameters
            )
        ]

    def file_owners(self, campaign: str) -> Iterator[FileOwner]:
        """The files of ``campaign`` a claim of another recipient is refused (state "owned"),
        each with its owner: those whose owner's letter may have gone out (see the Ledger
        port). Read _SETTLED_PAGE at a time along the table's key, each letter by its key."""
        after = ""
        while True:
            page = self._statement(
                f"file_owners {campaign}",
                "SELECT attachment, recipient, row, masked FROM attachment_owners"
                " JOIN sends ON key = letter WHERE attachment_owners.campaign = ?"
                f" AND attachment > ? AND {_GONE} ORDER BY attachment LIMIT ?",
                (campaign, after, OUTCOME_UNKNOWN, _SETTLED_PAGE),
            )
            for attachment, recipient, row, masked in page:
                yield FileOwner(str(attachment), str(recipient), int(str(row)), str(masked or ""))
            if len(page) < _SETTLED_PAGE:
                return
            after = str(page[-1][0])

    def settled_keys(self, campaign: str) -> Iterator[str]:
        """The keys of ``campaign``'s rows sent or failed for good (see the Ledger port)."""
        return self._keys_where(f"settled_keys {campaign}", campaign, "state IN ('sent', 'failed')")

    def unsent_gone_keys(self, campaign: str) -> Iterator[str]:
        """The keys of ``campaign``'s letters not recorded sent that may have gone out all the
        same, as a claim's check of the address's other letters counts them (``others``):
        claimed, failed as OUTCOME_UNKNOWN, or doubtful (a few, as a rule). With the keys
        recorded sent, `validate` reads them once for the whole file."""
        where = f"state != 'sent' AND {_GONE}"
        return self._keys_where(f"unsent_gone_keys {campaign}", campaign, where, OUTCOME_UNKNOWN)

    def _keys_where(
        self, what: str, campaign: str, condition: str, *parameters: object
    ) -> Iterator[str]:
        """The keys of ``campaign``'s entries that meet ``condition``, read _SETTLED_PAGE at a
        time in (row, key) order along the campaign's index: a rerun of a million-row file
        held every key as a tuple at once (over 100 MB)."""
        after: tuple[object, object] = (-1, "")
        while True:
            page = self._statement(
                what,
                "SELECT row, key FROM sends WHERE campaign = ? AND (row, key) > (?, ?)"
                f" AND {condition} ORDER BY row, key LIMIT ?",
                (campaign, *after, *parameters, _SETTLED_PAGE),
            )
            yield from (str(key) for _, key in page)
            if len(page) < _SETTLED_PAGE:
                return
            after = page[-1]

    def release_failed(
        self,
        campaign: str,
        *,
        failed_before: float | None = None,
        unknown: bool = False,
        keys: Collection[str] | None = None,
    ) -> int:
        """Give back the rows of ``campaign`` that failed for good (before ``failed_before``,
        epoch seconds, when given), those failed as OUTCOME_UNKNOWN or the others, of ``keys``
        when given (see the Ledger port), so a run sends them again; return how many. A row's
        takeovers become its possible-duplicate mark: counted as doubts they would fail it
        again before it is sent."""
        where, parameters = _failed_rows(campaign, failed_before, unknown)
        update = (
            "UPDATE sends SET state = 'released', uncertain = MAX(uncertain, takeovers > 0),"
            # its doubtful tries were given back on purpose: the next try's doubt is its own
            " takeovers = 0, doubtful_at = NULL, doubtful_attempt = NULL, doubtful_again = 0,"
            f" updated_at = ? WHERE {where}"
        )
        chunks = [None] if keys is None else _chunks(list(keys))
        released = 0
        with self._transaction(f"release_failed {campaign}") as db:
            for chunk in chunks:
                if chunk is None:
                    cursor = db.execute(update, (self._clock(), *parameters))
                else:
                    marks = ", ".join("?" * len(chunk))
                    cursor = db.execute(
                        f"{update} AND key IN ({marks})", (self._clock(), *parameters, *chunk)
                    )
                released += cursor.rowcount
        return released

    def doubts(self, campaign: str) -> list[Doubt]:
        """The rows of ``campaign`` in doubt, by row: their letter may have gone out, and the
        ledger has them as not sent. One whose claim is still held (its process runs, within
        its lease) is ``live``: it is being sent. A letter the journal beside the ledger kept
        is sent, not in doubt."""
        now = self._clock()
        have: Collection[str] = _DOUBT_COLUMNS
        if self._read_only:
            found = self._statement("columns", "SELECT name FROM pragma_table_info('sends')", ())
            have = tuple(str(name) for (name,) in found)
        doubt = _doubt_columns(have)
        found = self._statement(
            f"doubts {campaign}",
            "SELECT key, row, state, attempt, updated_at, lease_until, holder,"
            f" coalesce(file, attachment), masked, {doubt}"
            " FROM sends LEFT JOIN attachment_owners"
            " ON attachment_owners.campaign = sends.campaign AND letter = key"
            f" WHERE sends.campaign = ? AND {_IN_DOUBT} ORDER BY row, key",
            (campaign,),
        )
        doubts = []
        for key, row, state, attempt, at, lease, holder, attachment, masked, *doubtful in found:
            if self._journal.sent(key) is not None:
                continue
            live = state == "claimed" and (lease or 0) > now and token_running(holder)
            doubtful_at, doubtful_attempt, again = doubtful
            doubts.append(
                Doubt(
                    key,
                    int(row),
                    state,
                    attempt,
                    float(at),
                    live,
                    attachment,
                    masked or "",
                    holder,
                    doubtful_at=doubtful_at,
                    doubtful_attempt=doubtful_attempt,
                    # the last try may have sent it too: it ended holding its claim, or unknown
                    doubtful_again=doubtful_at is not None and (state == "claimed" or bool(again)),
                )
            )
        return doubts

    def settle(self, doubts: Collection[Doubt], *, sent: bool, by: str) -> None:
        """Record what the operator found of rows in doubt (``doubts``, as read): ``sent``,
        each is sent (a run skips it); else each is given back unsent, no longer a possible
        duplicate (the next run sends it, as a row never tried). ``by``: who said so, kept with
        the time in the column ``settled``. One transaction: where a row changed since it was
        read (a run took it up), nothing is written and NotSettled names it."""
        now = self._clock()
        said = "sent" if sent else "not sent"
        mark = f"{said}, said by {by} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC"
        # Either way the operator read in the server's log what arrived: no mark of a
        # possible duplicate stays.
        with self._transaction(f"settle {len(doubts)} row(s)") as db:
            for doubt in doubts:
                if not db.execute(
                    "UPDATE sends SET state = ?, lease_until = NULL, code = NULL, reason = NULL,"
                    " uncertain = 0, takeovers = 0, doubtful_at = NULL, doubtful_attempt = NULL,"
                    " doubtful_again = 0, settled = ?, updated_at = ? WHERE key = ?"
                    " AND state = ? AND attempt IS ? AND holder IS ? AND updated_at = ?",
                    (
                        "sent" if sent else "released",
                        mark,
                        now,
                        doubt.key,
                        doubt.state,
                        doubt.attempt,
                        doubt.holder,
                        doubt.at,
                    ),
                ).rowcount:
                    raise NotSettled(
                        f"ledger {self.path}: row {doubt.row} changed as it was being settled"
                        " (a run of the file took it up): nothing was settled. Wait for that"
                        " run to end, then list the rows in doubt again"
                    )
        log.debug("ledger: %d row(s) settled as %s", len(doubts), said)

    def outcomes(self, campaign: str) -> list[Outcome]:
        """Return every entry of ``campaign`` ordered by row."""
        with self._transaction(f"outcomes {campaign}") as db:
            found = db.execute(
                f"SELECT {_OUTCOME_COLUMNS} FROM sends WHERE campaign = ? ORDER BY row, key",
                (campaign,),
            ).fetchall()
        return [_outcome(values) for values in found]

    def outcomes_of(self, keys: Sequence[str]) -> dict[str, Outcome]:
        """Return the entries of ``keys`` by key (absent keys left out)."""
        found: dict[str, Outcome] = {}
        with self._transaction("outcomes_of") as db:
            for chunk in _chunks(list(keys)):
                marks = ", ".join("?" * len(chunk))
                for values in db.execute(
                    f"SELECT {_OUTCOME_COLUMNS} FROM sends WHERE key IN ({marks})", chunk
                ):
                    outcome = _outcome(values)
                    found[outcome.key] = outcome
        return found

    def find_by_message_id(self, message_id: str) -> Outcome | None:
        """Return the entry that recorded ``message_id`` (for delivery events), or None."""
        with self._transaction("find_by_message_id") as db:
            found = db.execute(
                f"SELECT {_OUTCOME_COLUMNS} FROM sends WHERE message_id = ?",
                (message_id,),
            ).fetchone()
        return None if found is None else _outcome(found)


# The columns later versions added to the tables, with their types: a ledger file from before
# one is brought up to date as it is opened (_bring_up_to_date).
_ADDED_COLUMNS = (
    ("sends", "uncertain", "INTEGER NOT NULL DEFAULT 0"),
    ("sends", "holder", "TEXT"),
    ("attachment_owners", "masked", "TEXT"),
    ("sends", "file", "TEXT"),
    ("sends", "file_size", "INTEGER"),
    ("sends", "file_sha256", "TEXT"),
    ("sends", "file_print", "TEXT"),
    ("sends", "file_source", "TEXT"),
    ("batches", "locked", "INTEGER NOT NULL DEFAULT 0"),
    ("sends", "settled", "TEXT"),
    ("sends", "letter_print", "TEXT"),
    ("sends", "letter_person", "TEXT"),
    ("sends", "doubtful_at", "REAL"),
    ("sends", "doubtful_attempt", "TEXT"),
    ("sends", "doubtful_again", "INTEGER NOT NULL DEFAULT 0"),
    # A whole table: a ledger read-only from before it is read from a copy that has it.
    ("unanswered", "rows", "TEXT NOT NULL"),
    ("names", "name", "TEXT NOT NULL"),
    ("deliveries", "delivery", "TEXT NOT NULL"),
    ("choices", "value", "TEXT NOT NULL"),
)


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The _ADDED_COLUMNS the ledger ``db`` has not (all of a table it has not)."""
    have: dict[str, set[str]] = {}
    for table, _, _ in _ADDED_COLUMNS:
        if table not in have:
            have[table] = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    return [added for added in _ADDED_COLUMNS if added[1] not in have[added[0]]]


def _bring_up_to_date(db: sqlite3.Connection) -> None:
    """Make the tables, columns and indexes a ledger file of an earlier version lacks."""
    db.executescript(SCHEMA)
    for table, column, kind in _missing_columns(db):
        try:  # a ledger file from before the column
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it first
                raise
    # Only letters with a file of their own are in it: the others cost it nothing.
    db.execute(
        "CREATE INDEX IF NOT EXISTS sends_by_file ON sends (file_size, file_print)"
        " WHERE file_size IS NOT NULL"
    )
    # Only letters sent since prints were kept are in it (hold_letter).
    db.execute(
        "CREATE INDEX IF NOT EXISTS sends_by_letter ON sends (letter_print)"
        " WHERE letter_print IS NOT NULL"
    )
    # Only letters sent since addresses' sets were kept are in it (_same_letter's person).
    db.execute(
        "CREATE INDEX IF NOT EXISTS sends_by_person ON sends (letter_person)"
        " WHERE letter_person IS NOT NULL"
    )


# The columns of doubt this version added (written when a letter falls in doubt): the ledger
# an earlier version wrote has none in doubt so.
_DOUBT_COLUMNS = ("doubtful_at", "doubtful_attempt", "doubtful_again")


def _only_writers_read(table: str, column: str) -> bool:
    """Whether a ledger read-only may lack the added ``column`` of ``table`` as it is: what
    reads it is a writer's (batches), or reads it as NULL where it is missing (doubts)."""
    return table == "batches" or (table == "sends" and column in _DOUBT_COLUMNS)


def _doubt_columns(have: Collection[str]) -> str:
    """The columns of doubt to select of a table of sends with the columns ``have``, NULL
    for one a ledger of an earlier version, read-only, has not (_up_to_date)."""
    return ", ".join(c if c in have else f"NULL AS {c}" for c in _DOUBT_COLUMNS)


def _up_to_date(db: sqlite3.Connection, path: str) -> sqlite3.Connection:
    """``db``, a ledger opened read-only, as is when it is up to date; else a copy of it in
    memory brought up to date and ``db`` closed. A ledger an earlier version wrote is not
    changed by what only reads it (validate, show; nor can it be, in a workdir the user
    cannot write), and its readers ask for the columns of this version (a letter's file):
    the copy has them, empty for what the earlier version did not record. Its cost, the
    ledger in memory, only then."""
    try:
        # Only begin_batch reads the batches table, which a ledger read-only never runs;
        # only writers and doubts() the columns of doubt, which doubts() reads as NULL
        # where they are missing (_doubt_columns).
        if all(_only_writers_read(table, column) for table, column, _ in _missing_columns(db)):
            return db
        copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.backup(copy)
        _bring_up_to_date(copy)
    except sqlite3.Error as exc:
        db.close()
        raise _error(path, "cannot open", exc) from exc
    db.close()
    log.debug("ledger: %s is of an earlier version: read from a copy brought up to date", path)
    return copy


# What a letter of the journal makes of its row's columns as it is recorded (_record_sent):
# ``k`` is the letter, NULL for a row the journal holds none of; ``s`` the row.
_KEPT_FILE_COLUMNS = ("file", "file_size", "file_sha256", "file_print", "file_source")
_AS_RECORDED = {
    "state": "CASE WHEN k.key IS NULL THEN s.state ELSE 'sent' END",
    "message_id": "COALESCE(k.message_id, s.message_id)",
    "lease_until": "CASE WHEN k.key IS NULL THEN s.lease_until END",
    "code": "CASE WHEN k.key IS NULL THEN s.code END",
    "reason": "CASE WHEN k.key IS NULL THEN s.reason END",
    "uncertain": "MAX(s.uncertain, COALESCE(k.uncertain, 0))",
    "updated_at": "COALESCE(k.at, s.updated_at)",
    **{c: f"CASE WHEN k.file IS NULL THEN s.{c} ELSE k.{c} END" for c in _KEPT_FILE_COLUMNS},
}


def _with_kept_letters(db: sqlite3.Connection, path: str, letters: Collection[KeptLetter]) -> None:
    """Make ``db``, the ledger at ``path`` opened read-only, read the ``letters`` its journal
    keeps as recorded sent, as its next writable open records them (_replay_journal): what
    `validate` forecasts is what a run does. Nothing is written: the letters go to a table in
    memory, and a temporary view ``sends`` takes them into the ledger's table of that name,
    read in its place (SQLite looks a name up among the temporary tables and views first)."""
    if not letters:
        return
    rows = [
        (letter.key, letter.message_id, int(letter.uncertain), letter.at)
        + (_file_values(letter.file) if letter.file else (None,) * len(_KEPT_FILE_COLUMNS))
        for letter in letters
    ]
    try:
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute(
            "CREATE TEMP TABLE kept (key TEXT PRIMARY KEY, message_id TEXT, uncertain INTEGER,"
            f" at REAL, {', '.join(_KEPT_FILE_COLUMNS)})"
        )
        db.executemany(f"INSERT OR REPLACE INTO kept VALUES ({', '.join('?' * 9)})", rows)
        columns = [str(row[1]) for row in db.execute("PRAGMA main.table_info(sends)")]
        read = ", ".join(f"{_AS_RECORDED.get(c, f's.{c}')} AS {c}" for c in columns)
        db.execute(
            f"CREATE TEMP VIEW sends AS SELECT {read}"
            " FROM main.sends AS s LEFT JOIN kept AS k ON k.key = s.key"
        )
    except sqlite3.Error as exc:
        raise _error(path, "cannot open", exc) from exc
    log.debug("ledger: %d letter(s) of the journal read as sent, not recorded", len(rows))


def _in_doubt(row: int | None, journal: str, fault: OSError) -> str:
    """What a letter sent that neither the ledger nor its journal could record means."""
    which = "a letter" if row is None else f"the letter of row {row}"
    return (
        f"{which} was sent but could not be recorded, nor kept in {journal}"
        f" ({fault.strerror or fault}): it is in doubt; once the mail server's log shows whether"
        " it arrived, settle it (no run or redrive of the file goes on until then, but one"
        " with --retry-unknown, which sends it again as a possible duplicate)"
    )


def _record_sent(letter: SentLetter, now: float) -> tuple[str, tuple[object, ...]]:
    """The statement, and its values, that records ``letter`` (key, message id, uncertain,
    and maybe its own file) sent at ``now``."""
    key, message_id, uncertain, file = letter_parts(letter)
    if file is None:
        return _RECORD_SENT, (message_id, int(uncertain), now, key)
    return _RECORD_SENT_FILE, (message_id, int(uncertain), now, *_file_values(file), key)


def _file_values(file: LetterFile) -> tuple[object, ...]:
    """The values of _FILE_SET for ``file``."""
    return (file.name, file.size, file.sha256, file.print, file.source)


def _same_letter(db: sqlite3.Connection, letter: LetterPrint, now: float) -> SentCopy | None:
    """The letter of another campaign of ``letter``'s print, or of its set to its address
    (``person``), that may have gone out, not of a file it sends again, or None (hold_letter;
    a claim given the print): one indexed read, two with a person. One sent comes first, then
    one a live attempt is sending now, then one in doubt; of one state, one of the print."""
    found = db.execute(_SAME_LETTER, (letter.print, letter.campaign, OUTCOME_UNKNOWN)).fetchall()
    if letter.person:
        found += db.execute(_SAME_SET, (letter.person, letter.campaign, OUTCOME_UNKNOWN))
    return _first_letter(found, letter.again, now, letter.print, letter.template)


def _first_letter(
    found: Iterable[tuple[Any, ...]],
    again: Collection[str],
    now: float,
    print: str = "",
    template: str = "",
) -> SentCopy | None:
    """Of the letters ``found`` (rows of _SAME_LETTER), not of a file or campaign of
    ``again``, the one to name: sent first, then being sent, then in doubt; of one state, one
    of ``print`` (the same text) before one of the set ``template`` only."""
    best: SentCopy | None = None
    again = frozenset(again)
    for other, row, file, other_source, at, state, lease, holder, code, printed in found:
        if again & {other, other_source}:
            continue  # the operator sends that file's letters again
        kind = _letter_state(state, code, lease, holder, now)
        named = "" if printed == print else template
        rank = (_LETTER_STATES.index(kind), bool(named))
        if best is None or rank < (_LETTER_STATES.index(best.state), bool(best.template)):
            source = str(other_source or "")
            best = SentCopy(
                str(other),
                str(file or ""),
                "",
                int(row),
                "",
                "",
                source,
                float(at),
                state=kind,
                template=named,
            )
    return best


def _same_file(db: sqlite3.Connection, letter: LetterPrint, now: float) -> SentCopy | None:
    """The letter of another campaign to another recipient with a file of the same bytes as
    ``letter``'s own as theirs, whether it went out or not (NAMED), or None (hold_letter; a
    claim given the print): one indexed read, none for a letter without a file of its own.
    Its files sent again do not excuse it: that file is another person's letter. Ordered as
    _same_letter, NAMED last."""
    file, whose = letter.file, letter.whose
    if file is None or whose is None:
        return None
    found = db.execute(
        _SAME_FILE, (OUTCOME_UNKNOWN, file.size, file.print, file.sha256, letter.campaign)
    )
    best: SentCopy | None = None
    for gone, campaign, name, recipient, row, masked, source, at, *kept in found.fetchall():
        if recipient == whose(str(campaign)):
            continue  # the same person's letter under another file: sent_under's to tell
        state, lease, holder, code = kept
        kind = _letter_state(state, code, lease, holder, now) if gone else NAMED
        if best is None or _LETTER_STATES.index(kind) < _LETTER_STATES.index(best.state):
            best = SentCopy(
                str(campaign),
                str(name),
                str(recipient),
                int(row),
                str(masked or ""),
                file.sha256,
                str(source or ""),
                float(at),
                kind,
                owned=True,
            )
    return best


# How the table deliveries names the local outbox; any other delivery is a mail server's URL.
_OUTBOX = "outbox"
_DELIVERIES_OF = "SELECT delivery FROM deliveries WHERE campaign = ?"


def _went_to_outbox(read: Callable[..., Any], campaign: str) -> bool:
    """Whether every letter of ``campaign`` claimed here went to the local outbox (an outbox
    trial), as the table deliveries tells; False where it tells nothing or names a server."""
    found = {str(row[0]) for row in read(_DELIVERIES_OF, (campaign,))}
    return found == {_OUTBOX}


def _letter_state(
    state: str, code: str | None, lease: float | None, holder: str | None, now: float
) -> str:
    """SentCopy.state of a letter that may have gone out (_GONE), from its entry."""
    if state == "sent":
        return SENT
    if state == "claimed" and (lease or 0) > now and token_running(holder):
        return SENDING
    if state == "failed" and code == OUTCOME_UNKNOWN:
        return UNKNOWN
    return IN_DOUBT  # its attempt ended holding it, or a try of it may have been taken


# SentCopy.state, the first named first (_same_letter; NAMED, _same_file's only).
_LETTER_STATES = (SENT, SENDING, IN_DOUBT, UNKNOWN, NAMED)


def _sending_elsewhere(held: SentCopy) -> Claim:
    """The claim of a letter whose like another campaign is sending now: busy, to be tried
    again once that one is sent (held back then) or given back (sent then)."""
    return Claim("busy", reason=sending_elsewhere(held))


def _stamp(letter: LetterPrint | None) -> tuple[object, ...]:
    """The values of _STAMP (and of _CLAIM_NEW's last columns) for ``letter``: its print, its
    campaign's file name, its own file and its person (address and set) as kept with its key;
    all None for none."""
    if letter is None:
        return (None,) * 7
    person = letter.person or None
    file = letter.file
    if file is None:
        return letter.print, letter.source or None, None, None, None, None, person
    source = letter.source or file.source or None
    return letter.print, source, file.name, file.size, file.sha256, file.print, person


def _claim_unless(
    new: tuple[object, ...], others: Mapping[str, str] | None, letter: LetterPrint | None
) -> tuple[str, tuple[object, ...]]:
    """The insert, and its values, that claims a new key (``new``: _CLAIM_NEW's values but
    the print, file and person) unless a letter of ``others`` may have gone out (as
    _other_letter finds them) or one of ``letter``'s print elsewhere (as _same_letter finds
    them, the operator's ``again`` aside), or one of its own file elsewhere to anyone
    (_same_file tells whose), or one of its set to its address elsewhere: then it inserts
    nothing, and the claim reads which."""
    stamp = _stamp(letter)
    if not others and letter is None:
        return _CLAIM_NEW, (*new, *stamp)
    unless: list[str] = []
    values: list[object] = [*new, *stamp]
    if others:
        marks = ", ".join("?" * len(others))
        unless.append(f"SELECT 1 FROM sends WHERE key IN ({marks}) AND {_GONE}")
        values += [*others, OUTCOME_UNKNOWN]
    if letter is not None:
        unless.append(_SAME_LETTER_ANY)
        values += [letter.print, letter.campaign, OUTCOME_UNKNOWN]
    if letter is not None and letter.file is not None and letter.whose is not None:
        file = letter.file
        unless.append(_SAME_FILE_ANY)
        values += [file.size, file.print, file.sha256, letter.campaign]
    if letter is not None and letter.person:
        unless.append(_SAME_SET_ANY)
        values += [letter.person, letter.campaign, OUTCOME_UNKNOWN]
    where = " AND ".join(f"NOT EXISTS ({query})" for query in unless)
    return _CLAIM_NEW_UNLESS.format(where=where), tuple(values)


def _other_letter(db: sqlite3.Connection, others: Mapping[str, str]) -> str | None:
    """The set of the first of ``others`` (keys, with their sets) whose letter may have gone
    out (see the Ledger port's claim), or None."""
    marks = ", ".join("?" * len(others))
    found = db.execute(
        f"SELECT key FROM sends WHERE key IN ({marks}) AND {_GONE}", (*others, OUTCOME_UNKNOWN)
    ).fetchall()
    gone = {row[0] for row in found}
    return next((name for key, name in others.items() if key in gone), None)


def _own(
    db: sqlite3.Connection,
    campaign: str,
    key: str,
    owner: tuple[str, str] | tuple[str, str, str],
    *,
    corrected: bool = False,
) -> bool:
    """Record ``owner``'s recipient, with the letter ``key``, as the owner of its file in
    ``campaign``, unless another recipient owns it whose letter may have gone out (and the
    address was not ``corrected``); return whether the file is now the recipient's (see the
    Ledger port's claim)."""
    attachment, recipient, *more = owner
    masked = more[0] if more else None
    if db.execute(_OWN_NEW, (campaign, attachment, recipient, key, masked)).rowcount:
        return True  # the file's first letter: one insert
    where = "WHERE campaign = ? AND attachment = ?"
    held, letter = db.execute(
        f"SELECT recipient, letter FROM attachment_owners {where}", (campaign, attachment)
    ).fetchone()
    if (
        held != recipient
        and not corrected
        and db.execute(
            f"SELECT 1 FROM sends WHERE key = ? AND {_GONE}", (letter, OUTCOME_UNKNOWN)
        ).fetchone()
    ):
        return False
    if (held, letter) != (recipient, key):  # the letter that carries the file now
        db.execute(
            f"UPDATE attachment_owners SET recipient = ?, letter = ?, masked = ? {where}",
            (recipient, key, masked, campaign, attachment),
        )
    return True


_SETTLED_PAGE = 10_000
_KEYS_PER_SELECT = 500  # below SQLite's limit on a statement's parameters (999 before 3.32)


def _row_numbers(text: str) -> tuple[int, ...]:
    """The row numbers of the unanswered table's ``rows`` ("12,13")."""
    return tuple(int(part) for part in text.split(",") if part)


def _chunks(keys: list[_T]) -> list[list[_T]]:
    """``keys`` in lists of _KEYS_PER_SELECT at most, each the parameters of one statement."""
    return [
        keys[start : start + _KEYS_PER_SELECT] for start in range(0, len(keys), _KEYS_PER_SELECT)
    ]


def _failed_rows(
    campaign: str, failed_before: float | None, unknown: bool
) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (and its parameters) of a campaign's rows failed for good before
    ``failed_before``: those failed as OUTCOME_UNKNOWN, or (``unknown`` False) the others."""
    before = float("inf") if failed_before is None else failed_before
    return (
        "campaign = ? AND state = 'failed' AND updated_at < ? AND (code IS ?) = ?",
        (campaign, before, OUTCOME_UNKNOWN, int(unknown)),
    )


_OUTCOME_COLUMNS = "key, row, state, message_id, code, reason, attempt, takeovers, uncertain"


def _outcome(values: tuple[Any, ...]) -> Outcome:
    """The Outcome of a row of _OUTCOME_COLUMNS."""
    key, row, state, message_id, code, reason, attempt, takeovers, uncertain = values
    return Outcome(
        key=key,
        row=row,
        state=state,
        message_id=message_id,
        code=code,
        reason=reason,
        attempt=attempt,
        takeovers=takeovers,
        uncertain=bool(uncertain),
    )
