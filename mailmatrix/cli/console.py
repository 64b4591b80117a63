"""The console the local commands print through."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from rich.console import Console


class RunConsole(Console):
    """A rich console whose output may outlive its reader (``mailmatrix run FILE | head -1``).

    rich exits with status 1 when the pipe it writes to is closed, wherever it was: in the
    middle of a run's progress display as well, and after a run that succeeded (1 reads as
    "the execution failed"). This one sends the rest of its output nowhere and lets the
    command go on to its end and its own exit status, as after a hang-up.
    """

    def on_broken_pipe(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.file.fileno())


def stdout_to_nowhere() -> None:
    """Send the rest of standard output nowhere: its reader has gone (``| head -1``), and
    Python flushes it once more at exit."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def reader_may_go() -> Iterator[None]:
    """Print in the block; when the reader of the output has gone, the rest goes nowhere and
    the command ends with its own exit status (click exits 1 for a closed pipe, which reads as
    a failure: `validate FILE | head -1` of a good file)."""
    try:
        yield
    except BrokenPipeError:
        stdout_to_nowhere()
