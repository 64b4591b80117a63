"""The live progress display of a local run or redrive: its state, its Map Run's batches, and
how many messages have gone out so far (counted across the worker processes: see
mailmatrix.adapters.deliveries)."""

from __future__ import annotations

from rich.console import Console
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

from mailmatrix.adapters import deliveries


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
