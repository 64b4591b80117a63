"""The live progress display of a local run or redrive: its state, its Map Run's batches, and
how many messages have gone out so far (counted across the worker processes: see
mailmatrix.adapters.deliveries); and the lines that say a wait for a busy ledger
(LedgerWaitNotices), counted across them too (mailmatrix.adapters.ledger_waits)."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from mailmatrix.adapters import deliveries, ledger_waits
from mailmatrix.cli.console import RunConsole


class SentColumn(ProgressColumn):
    """ "N sent" on a Map Run's line, read afresh at every refresh of the display (the batches'
    counts move only as whole batches finish)."""

    def render(self, task: Task) -> Text:
        count = deliveries.handed_over() if task.fields.get("sending") else None
        return Text("" if count is None else f"{count:,} sent", style="progress.download")


def progress_display(console: Console) -> Progress:
    """A transient display on ``console``: description, bar, batches done, messages sent, time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SentColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


# A wait for a busy ledger that ends sooner than this is not said on the console (the logs
# say it); one that lasts is said within about _POLL_SECONDS more.
SHOWN_AFTER_SECONDS = 2.0
_POLL_SECONDS = 1.0
_ENDED = frozenset(
    {"ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"}
)


def notice_console(progress: Progress | None) -> Console:
    """Where a run says what happens as it runs (LedgerWaitNotices): above its live display,
    when it has one (a line written to the terminal past it is drawn over), else standard
    error."""
    return progress.console if progress is not None else RunConsole(stderr=True)


class LedgerWaitNotices:
    """A listener that passes the engine's calls on to ``inner`` (None: none) and says on
    ``console`` when letters sent wait for a busy ledger to record them, in any process of the
    run (ledger_waits), and when the wait ends: a line each, none for a wait shorter than
    SHOWN_AFTER_SECONDS. From the engine's first call on (the run's worker processes are
    forked by then) a thread of its own reads the count every second, until the execution
    ends or close()."""

    def __init__(self, console: Console, inner: Any = None) -> None:
        self.console = console
        self.inner = inner
        self._said: ledger_waits.Waits | None = None  # the count as a wait's start was said
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
        if self.inner is not None and hasattr(self.inner, "on_event"):
            self.inner.on_event(execution_id, event)
        if event.get("type") in _ENDED:  # (the parent's: a Map's children send none)
            self.close()  # said before the run's summary, or its error
        else:
            self._watch()

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        if self.inner is not None and hasattr(self.inner, "on_map_run"):
            self.inner.on_map_run(map_run)
        self._watch()

    def poll(self, now: float | None = None) -> None:
        """Say a wait that has lasted SHOWN_AFTER_SECONDS at ``now`` (time.monotonic()), or
        the end of one said."""
        waits = ledger_waits.counted()
        if waits is None:
            return
        if self._said is None:
            now = time.monotonic() if now is None else now
            if waits.waiting and now - waits.since >= SHOWN_AFTER_SECONDS:
                self._said = waits
                self._print(wait_started(waits))
        elif not waits.waiting:
            ended = wait_ended(self._said, waits)
            self._said = None
            if ended:
                self._print(ended)

    def close(self) -> None:
        """Stop reading the count, once it is read a last time."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.poll()

    def _watch(self) -> None:
        """Start the thread that reads the count, unless it runs or has ended."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._polls, name="ledger-waits", daemon=True)
            self._thread.start()

    def _polls(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            self.poll()

    def _print(self, line: str) -> None:
        self.console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True)


def wait_started(waits: ledger_waits.Waits) -> str:
    """What the console says as letters sent begin to wait for the busy ledger."""
    return (
        f"Waiting for the send ledger ({waits.ledger}), which another process holds, to record"
        f" {waits.waiting} letter(s) already sent, for {_duration(waits.patience)} at most."
        " Nothing is sent twice: a letter it cannot record by then is kept in the journal"
        " beside it, and counts as sent."
    )


def wait_ended(said: ledger_waits.Waits, waits: ledger_waits.Waits) -> str | None:
    """What the console says as the waits said at ``said`` have all ended, as counted at
    ``waits``; None when none ended recorded or kept (the run's error says the rest)."""
    kept = waits.kept - said.kept
    if kept:
        return (
            f"The send ledger stayed busy: {kept} letter(s) sent are kept in the journal beside"
            f" it ({waits.ledger}-sent), and count as sent; its next run or redrive records them."
        )
    if waits.recorded > said.recorded:
        return "The send ledger is free again: the letters sent that waited are recorded."
    return None


def _duration(seconds: float) -> str:
    """``seconds`` in words: whole minutes from two on, else seconds."""
    if seconds >= 120:
        return f"{round(seconds / 60)} minutes"
    return f"{max(1, round(seconds))} second(s)"
