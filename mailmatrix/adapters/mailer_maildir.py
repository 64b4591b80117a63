"""A Maildir outbox: every message becomes one file in ``new/``, written atomically.

The message is written to ``tmp/`` under a unique name, then renamed into ``new/`` (a rename
within one file system is atomic), so a reader of ``new/`` never sees a half-written message,
and many threads and processes may send at once: names never collide.

No fsync per message: once the rename returns, the message survives a crash of this process
(the kernel holds it); only a crash of the machine itself within the kernel's write-back delay
(seconds) could lose messages recorded as sent, as it could lose the SQLite ledger's last
commits (synchronous=NORMAL). An fsync per message cost 4 ms here, more than everything
else a send does.

Envelope: a Maildir file has no envelope, and Bcc recipients are (rightly) not in the
headers. So the mailer prepends two trace headers, as a delivery agent prepends
Return-Path and Delivered-To: ``Return-Path: <sender>`` and ``X-MailMatrix-Envelope-To:``
listing every envelope recipient (To, Cc and Bcc). The message bytes after them are exactly
what was handed to ``send`` (CRLF line ends kept).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import socket
import time
from pathlib import Path

from mailmatrix.core.message import envelope_address
from mailmatrix.errors import AccountSendingHalted, PermanentSendError, TransientSendError

ENVELOPE_TO_HEADER = "X-MailMatrix-Envelope-To"

# Faults the operator has to fix (permissions, full or read-only disk): retrying cannot help.
_HALTING_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class MaildirMailer:
    """Delivers each message into the Maildir at ``path`` (created when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "local"
        try:
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            self._tmp, self._new = str(self.path / "tmp"), str(self.path / "new")
        except OSError as exc:
            raise AccountSendingHalted(
                f"maildir {self.path}: cannot create the outbox: {exc.strerror or exc}"
            ) from exc

    def send(self, raw: bytes, *, sender: str, destinations: list[str]) -> str:
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
        tmp = os.path.join(self._tmp, name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                try:
                    _write_all(fd, trace, raw)
                finally:
                    os.close(fd)
                os.rename(tmp, os.path.join(self._new, name))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            kind = AccountSendingHalted if exc.errno in _HALTING_ERRNOS else TransientSendError
            raise kind(f"maildir {self.path}: cannot write {name}: {exc.strerror or exc}") from exc
        return name


_DELIVERIES = itertools.count(1)
_RANDOM = secrets.token_hex(4)


def _write_all(fd: int, *chunks: bytes) -> None:
    """Write every chunk, in one system call when the kernel takes it all at once."""
    left = sum(len(chunk) for chunk in chunks)
    written = os.writev(fd, chunks)
    if written == left:
        return
    rest = memoryview(b"".join(chunks))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


def _trace_headers(sender: str, destinations: list[str]) -> bytes:
    """``Return-Path`` and the envelope recipients as 7-bit header lines, folded."""
    addresses = [envelope_address(a, where="maildir recipient") for a in destinations]
    lines = [f"Return-Path: <{envelope_address(sender, where='maildir sender')}>"]
    line = f"{ENVELOPE_TO_HEADER}:"
    for index, address in enumerate(addresses):
        token = address + ("," if index < len(addresses) - 1 else "")
        if len(line) + 1 + len(token) > 78 and not line.endswith(":"):
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
