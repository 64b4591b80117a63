"""How many messages a local run's mailers have handed over, across its worker processes.

A local run's progress bar advances as batches finish (the Map Run's counts, as the console
shows them on AWS), which at a send rate or over SMTP leaves it still for minutes. The run
counts each message its mailer accepted in one number in shared memory, made before the
worker processes are forked, so the bar can also say how many went out so far. Nothing is
counted on AWS (no count started: the mailer is used as it is).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from mailmatrix.ports import Mailer

_count: Any = None  # the last count started (a multiprocessing.Value), read after it stops
_counting = False


def start() -> None:
    """Count from zero the messages of mailers built from now on (before forking workers)."""
    global _count, _counting
    _count = multiprocessing.get_context("fork").Value("q", 0)
    _counting = True


def stop() -> None:
    """Build mailers that do not count from now on; the count so far stays readable."""
    global _counting
    _counting = False


def handed_over() -> int | None:
    """Messages the mailers counted since the last start(), None when none was started."""
    count = _count
    return None if count is None else int(count.value)


def counted(mailer: Mailer) -> Mailer:
    """``mailer``, counting its messages while a count runs."""
    return CountedMailer(mailer, _count) if _counting else mailer


class CountedMailer:
    """A mailer that adds one to ``count`` for each message its inner mailer accepted."""

    def __init__(self, inner: Mailer, count: Any) -> None:
        self.inner = inner
        self._count = count

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Send through the inner mailer; count the message once it has accepted it."""
        message_id = self.inner.send(raw, sender=sender, destinations=destinations, key=key)
        with self._count.get_lock():
            self._count.value += 1
        return message_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
