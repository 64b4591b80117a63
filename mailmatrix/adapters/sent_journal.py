"""The letters a local ledger could not record as sent, kept in a small file beside it.

Once the mail server (or the outbox) has taken a letter, recording it sent is all that is
left; a SQLite ledger that cannot be written then (busy past its patience, a full disk, the
file size limit, read-only) keeps the mark here instead (``<ledger>-sent``): one JSON line a
letter, appended (O_APPEND), fsynced, under an flock of the file. A fresh small file is
written where the large ledger is not (the file size limit). Every claim of the ledger reads
it (again, once it has grown), so a letter kept here counts as sent in every process; the
ledger's next writable open records its letters and removes it, under the same flock, after
the commit: a crash between the two records them again, which changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

try:
    import fcntl
except ImportError:  # not on this system: appends and replays are not kept apart
    fcntl = None  # type: ignore[assignment]

from mailmatrix.errors import LedgerNotWritten
from mailmatrix.ports import LetterFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptLetter:
    """A letter sent that the ledger could not record: its key, message id, whether it may
    have gone out twice, the attempt that sent it, when, and the file it carried as its
    recipient's own."""

    key: str
    message_id: str
    uncertain: bool
    attempt: str | None
    at: float
    file: LetterFile | None = None

    def line(self) -> bytes:
        """The letter as a line of the journal: a newline first ends a line a failed write
        may have left unfinished."""
        fields = {
            "key": self.key,
            "message_id": self.message_id,
            "uncertain": self.uncertain,
            "attempt": self.attempt,
            "at": self.at,
            "file": None if self.file is None else list(self.file),
        }
        return b"\n" + json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _letter(text: bytes) -> KeptLetter | None:
    """The letter of a line of the journal; None for one that holds none as this module
    writes it (unfinished, damaged, or written by hand)."""
    try:
        fields = json.loads(text)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    key, message_id, uncertain = (
        fields.get("key"),
        fields.get("message_id"),
        fields.get("uncertain"),
    )
    attempt, at, file = fields.get("attempt"), fields.get("at"), fields.get("file")
    if not (isinstance(key, str) and key and isinstance(message_id, str) and message_id):
        return None
    if not isinstance(uncertain, bool) or not isinstance(attempt, (str, type(None))):
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        return None
    if file is not None and not _file_fields(file):
        return None
    return KeptLetter(
        key=key,
        message_id=message_id,
        uncertain=uncertain,
        attempt=attempt,
        at=float(at),
        file=None if file is None else LetterFile(*file),
    )


def _file_fields(file: Any) -> bool:
    """Whether ``file`` holds a LetterFile's fields, as ``KeptLetter.line`` writes them: its
    size a whole number, the others text; the last (``source``) may be left out."""
    kinds = [int if name == "size" else str for name in LetterFile._fields]
    return (
        isinstance(file, list)
        and len(kinds) - 1 <= len(file) <= len(kinds)
        and all(
            isinstance(value, kind) and not isinstance(value, bool)
            for value, kind in zip(file, kinds, strict=False)
        )
    )


class SentJournal:
    """The journal of letters sent and not recorded beside the ledger at ``ledger_path``."""

    def __init__(self, ledger_path: str) -> None:
        self.path = f"{ledger_path}-sent"
        self._letters: dict[str, KeptLetter] = {}
        self._read: tuple[int, int] | None = None  # (inode, bytes read) of the file read
        self._unreadable = 0  # lines of the journal being replayed that hold no letter

    def keep(self, letter: KeptLetter) -> None:
        """Append ``letter`` and sync it to the disk; raise OSError when it cannot be."""
        line = letter.line()
        while True:
            with self._opened(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
                if os.fstat(fd).st_nlink == 0:
                    continue  # replayed and removed as it was opened: a new file
                if os.write(fd, line) != len(line):
                    raise OSError(f"{self.path}: the line was written in part")
                os.fsync(fd)
                break
        _sync_folder(self.path)
        self._letters[letter.key] = letter

    def sent(self, key: str) -> KeptLetter | None:
        """The letter of ``key`` kept here, by this process or another; None when not."""
        self._catch_up()
        return self._letters.get(key)

    def letters(self) -> dict[str, KeptLetter]:
        """Every letter kept here, by key."""
        self._catch_up()
        return dict(self._letters)

    @contextmanager
    def replaying(self) -> Iterator[list[KeptLetter] | None]:
        """The letters kept here, the journal held while the caller records them (no letter
        is added meanwhile); None when there is none. The caller calls ``remove`` once they
        are committed."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:  # another process replayed it first
                yield None
                return
            lines = [line for line in _read_from(fd, 0)[0] if line.strip()]
            letters = [letter for letter in map(_letter, lines) if letter]
            self._unreadable = len(lines) - len(letters)
            yield letters
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Remove the journal (its letters recorded in the ledger): called inside replaying.
        One with lines that hold no letter is kept aside, said: a letter it may have held is
        not known as sent, so its row is sent again, as a possible duplicate."""
        if self._unreadable:
            aside = f"{self.path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
            os.replace(self.path, aside)
            log.warning(
                "ledger: %d line(s) of the journal of letters sent and not recorded could not"
                " be read; kept as %s. A row whose letter such a line held is in doubt: a run"
                " sends it again, as a possible duplicate",
                self._unreadable,
                aside,
            )
        else:
            os.unlink(self.path)
        self._letters.clear()
        self._read = None

    @contextmanager
    def _opened(self, flags: int) -> Iterator[int]:
        """The journal opened with ``flags`` and locked (flock) while in use."""
        fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _catch_up(self) -> None:
        """Read what was added to the journal since the last read: the whole of a new file,
        nothing when it is gone (replayed into the ledger)."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            self._letters.clear()
            self._read = None
            return
        except OSError as exc:
            log.debug("ledger: cannot read %s (%s)", self.path, exc)
            return
        if not stat.S_ISREG(found.st_mode):
            raise LedgerNotWritten(
                f"{self.path}: not a file (a folder, or another kind of file, in its place). It"
                " is the journal of the letters sent that the ledger beside it could not record,"
                " read before each letter is sent; nothing was sent. Move it aside (it is none"
                " of MailMatrix's), then redrive or run the file again"
            )
        if self._read is not None and self._read == (found.st_ino, found.st_size):
            return
        offset = 0
        if self._read is not None and self._read[0] == found.st_ino:
            offset = self._read[1]
        else:
            self._letters.clear()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._letters.clear()
            self._read = None
            return
        try:
            lines, read = _read_from(fd, offset)
        finally:
            os.close(fd)
        for letter in filter(None, map(_letter, lines)):
            self._letters[letter.key] = letter
        self._read = (found.st_ino, offset + read)


def _read_from(fd: int, offset: int) -> tuple[list[bytes], int]:
    """The finished lines of the file ``fd`` from ``offset``, and how many bytes they take."""
    data = b""
    while chunk := os.pread(fd, 65536, offset + len(data)):
        data += chunk
    finished = data.rfind(b"\n") + 1
    return data[:finished].split(b"\n"), finished


def _sync_folder(path: str) -> None:
    """Sync the folder of ``path``, so that the file itself survives a crash."""
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
