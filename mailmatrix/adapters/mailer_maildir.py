"""A Maildir outbox: every message becomes one file in ``new/``, written atomically.

The message is written to a file without a name (``O_TMPFILE`` in ``tmp/``), then linked into
``new/`` under a unique name once it is whole; where the file system or the platform cannot
make such files, it is written to ``tmp/`` under that name and renamed into ``new/`` (a rename
within one file system is atomic). Either way a reader of ``new/`` never sees a half-written
message, and many threads and processes may send at once: names never collide. The unnamed
file costs the kernel one directory change a message instead of three (create and remove in
``tmp/``, add in ``new/``), and a process killed while writing leaves nothing in ``tmp/``.

No fsync per message: once the link or rename returns, the message survives a crash of this process
(the kernel holds it); only a crash of the machine itself within the kernel's write-back delay
(seconds) could lose messages recorded as sent, as it could lose the SQLite ledger's last
commits (synchronous=NORMAL). An fsync per message cost 4 ms here, more than everything
else a send does.

The link or rename is the moment of delivery. An error before it (a file size limit, an I/O
error) left nothing in ``new/``, so the try is refused for sure (``refused=True``): it is tried
again, never reported as a message that may have gone out. An error after it (closing a
descriptor) cannot undo the delivery and is only logged.

Envelope: a Maildir file has no envelope, and Bcc recipients are (rightly) not in the
headers. So the mailer prepends two trace headers, as a delivery agent prepends
Return-Path and Delivered-To: ``Return-Path: <sender>`` and ``X-MailMatrix-Envelope-To:``
listing every envelope recipient (To, Cc and Bcc). The message bytes after them are exactly
what was handed to ``send`` (CRLF line ends kept).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import secrets
import socket
import time
from pathlib import Path

from mailmatrix.core.message import envelope_address
from mailmatrix.disk import write_fault
from mailmatrix.errors import AccountSendingHalted, PermanentSendError, TransientSendError

log = logging.getLogger(__name__)

ENVELOPE_TO_HEADER = "X-MailMatrix-Envelope-To"
# The names send gives its files (and returns as their message ids), as a SQLite GLOB: seconds,
# then M and microseconds, P and the process id, Q, a counter, R and random hex, and the host
# (earlier versions: M and random hex, P and the process id, the host). A Message-ID, which a
# mail server's letter keeps instead, holds an @, which no such name does.
NAME_GLOB = "[0-9]*.M[0-9a-f]*P[0-9]*.?*"

# Faults the operator has to fix (permissions, full or read-only disk, a file in the place of
# a folder): retrying cannot help.
_HALTING_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
)


class MaildirMailer:
    """Delivers each message into the Maildir at ``path`` (created when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "local"
        for sub in ("tmp", "new", "cur"):
            folder = self.path / sub
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AccountSendingHalted(
                    f"maildir {self.path}: cannot make the outbox's folder {folder}:"
                    f" {_fault(exc, folder=True)}"
                ) from exc
        self._tmp, self._new = str(self.path / "tmp"), str(self.path / "new")
        self._unnamed = bool(_O_TMPFILE)  # unnamed files until one cannot be made

    def close(self) -> None:
        """Nothing to release: each delivery closes the files it opened."""

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Write the message into ``new/``; return its Maildir file name."""
        if not destinations:
            raise PermanentSendError(f"maildir {self.path}: no envelope recipients")
        trace = _trace_headers(sender, destinations)
        # time.MmicrosecondsPpidQcount.host, the usual unique name, plus random bits against a
        # recycled pid within the same second.
        now = time.time_ns() // 1000
        name = (
            f"{now // 1_000_000}.M{now % 1_000_000}P{os.getpid()}Q{next(_DELIVERIES)}"
            f"R{_RANDOM}.{self._host}"
        )
        try:
            if not (self._unnamed and self._link_unnamed(name, trace, raw)):
                self._write_and_rename(name, trace, raw)
        except OSError as exc:
            # Raised before the message was linked into new/ (see _close): nothing delivered.
            message = f"maildir {self.path}: cannot write {name}: {_fault(exc)}"
            if exc.errno in _HALTING_ERRNOS:
                raise AccountSendingHalted(message) from exc
            if exc.errno == errno.EFBIG:  # over the size a file may have here: it never fits
                raise PermanentSendError(f"{message} (larger than a file may be)") from exc
            raise TransientSendError(message, refused=True) from exc
        return name

    def _link_unnamed(self, name: str, *chunks: bytes) -> bool:
        """Write an unnamed file in ``tmp/`` and link it into ``new/`` as ``name``.

        False (nothing written) when this system cannot: the caller writes and renames, and
        so does every later send of this mailer.
        """
        try:
            fd = os.open(self._tmp, os.O_WRONLY | _O_TMPFILE | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in _NO_UNNAMED_FILES:
                raise
            self._unnamed = False
            return False
        linked = False
        try:
            _write_all(fd, *chunks)
            # linkat() of an open file needs its /proc/self/fd link followed: os.link calls
            # linkat only when given a directory fd.
            new = os.open(self._new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=new, follow_symlinks=True)
                linked = True
            except FileNotFoundError:
                if os.path.isdir("/proc/self/fd"):
                    raise
                self._unnamed = False  # no /proc: the file cannot be given a name
                return False
            finally:
                _close(new, delivered=linked)
        finally:
            _close(fd, delivered=linked)
        return True

    def _write_and_rename(self, name: str, *chunks: bytes) -> None:
        tmp = os.path.join(self._tmp, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                _write_all(fd, *chunks)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(self._new, name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


# O_TMPFILE is Linux-only; where the kernel or the file system lacks it, open() fails with one
# of these (EISDIR: a kernel older than 3.11 takes the flag for O_DIRECTORY).
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_NO_UNNAMED_FILES = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
_DELIVERIES = itertools.count(1)
_RANDOM = secrets.token_hex(4)


def _fault(error: OSError, *, folder: bool = False) -> str:
    """Why ``error`` kept a message, or (``folder``) a folder, of the outbox from being made,
    in plain words: a file in the place of a folder, or a fault of mailmatrix.disk."""
    if folder and error.errno == errno.EEXIST:
        return f"a file is in its place ({error.strerror or error})"
    if error.errno == errno.ENOTDIR:
        return f"a file stands where a folder on its path should be ({error.strerror or error})"
    return write_fault(error)


def _close(fd: int, *, delivered: bool) -> None:
    """Close ``fd``; once the message is in ``new/``, a failure to close is only logged: the
    message went out, and an error would have it sent again."""
    try:
        os.close(fd)
    except OSError as exc:
        if not delivered:
            raise
        log.debug("maildir: message delivered, but closing a descriptor failed: %s", exc)


def _write_all(fd: int, *chunks: bytes) -> None:
    """Write every chunk, in one system call when the kernel takes it all at once."""
    left = sum(len(chunk) for chunk in chunks)
    written = os.writev(fd, chunks)
    if written == left:
        return
    rest = memoryview(b"".join(chunks))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


@functools.lru_cache(maxsize=16)
def _return_path(sender: str) -> str:
    """The Return-Path line of the campaign's sender, parsed once (the same for every row)."""
    return f"Return-Path: <{envelope_address(sender, where='maildir sender')}>"


def _trace_headers(sender: str, destinations: list[str]) -> bytes:
    """``Return-Path`` and the envelope recipients as 7-bit header lines, folded."""
    addresses = [envelope_address(a, where="maildir recipient") for a in destinations]
    lines = [_return_path(sender)]
    line = f"{ENVELOPE_TO_HEADER}:"
    for index, address in enumerate(addresses):
        token = address + ("," if index < len(addresses) - 1 else "")
        if len(line) + 1 + len(token) > 78 and not line.endswith(":"):
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
