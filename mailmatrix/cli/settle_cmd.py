"""`mailmatrix settle`: list a file's rows in doubt, and record what the mail server's log says
of them (sent, or not sent)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from mailmatrix.cli import exits
from mailmatrix.cli.console import RunConsole
from mailmatrix.cli.defaults import DEFAULT_WORKDIR_TEXT, default_workdir
from mailmatrix.cli.failing import JsonCommand, refuse
from mailmatrix.core.failures import NO_ROOM_REMEDY, no_room_in
from mailmatrix.doubts import (
    Choice,
    DoubtfulRow,
    doubt_line,
    doubts_of_file,
    not_run_here,
    settle,
    settle_command,
)
from mailmatrix.errors import (
    InputFileError,
    LedgerError,
    LedgerNotWritten,
    MailMatrixError,
    NotSettled,
)
from mailmatrix.local import Workdir
from mailmatrix.private import private_files

# One name in --sent / --not-sent: ROW, FIRST-LAST, or ROW:LETTER (ASCII digits only: int()
# would take "2_0", "+2" or other scripts' digits as numbers).
_NAME = re.compile(r"(?P<first>[0-9]+)(?:-(?P<last>[0-9]+)|:(?P<letter>[0-9a-fA-F]{4,64}))?")


def parse_rows(ctx: click.Context, param: click.Parameter, value: str | None) -> Choice | None:
    """ROW[,ROW...] (a range as FIRST-LAST, a letter as ROW:LETTER) as a Choice; refused when
    it is not. Ranges stay ranges: a huge one costs nothing."""
    if value is None:
        return None
    ranges: list[tuple[int, int]] = []
    letters: list[tuple[int, str]] = []
    for part in value.replace(" ", ",").split(","):
        if not part:
            continue
        found = _NAME.fullmatch(part)
        try:
            low = int(found["first"]) if found else 0
            high = int(found["last"] or low) if found else 0
        except ValueError:  # more digits than int() reads
            found = None
        if found is None:
            raise click.BadParameter(
                f"{part!r}: expected rows as the listing names them, in digits 0-9: e.g. 7,12,"
                " 7-9, or 7:1a2b3c4d for a letter whose row the file no longer holds"
            )
        if low < 1 or high < low:
            raise click.BadParameter(f"{part!r}: not a row number, nor a range FIRST-LAST")
        if found["letter"]:
            letters.append((low, found["letter"]))
        else:
            ranges.append((low, high))
    if not ranges and not letters:
        raise click.BadParameter("no row given: expected e.g. 7,12 or 7-9")
    return Choice(tuple(ranges), tuple(letters))


def settle_options(arrived: str, again: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The --sent and --not-sent options of a settle command: ``arrived``, what shows that a
    letter arrived, as "the mail server's log shows arrived"; ``again``, what sends a row."""
    sent = click.option(
        "--sent",
        "sent_rows",
        metavar="ROW[,ROW...]",
        callback=parse_rows,
        help=f"Rows whose letter {arrived}: recorded as sent, no {again} sends"
        " them again. Rows are numbered as the run numbered them (7, or 7-9); where the file's"
        " rows moved since, name a letter as the listing does (ROW:LETTER, e.g. 7:1a2b3c4d).",
    )
    not_sent = click.option(
        "--not-sent",
        "not_sent_rows",
        metavar="ROW[,ROW...]",
        callback=parse_rows,
        help=f"Rows whose letter did not arrive: given back, the next {again} sends them (not"
        " marked as possible duplicates). Named as for --sent.",
    )
    return lambda command: sent(not_sent(command))


@click.command("settle", cls=JsonCommand)
@click.argument(
    "csv_file", metavar="CSV_FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@settle_options("the mail server's log (or the outbox) shows arrived", "run or redrive")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_workdir,
    show_default=DEFAULT_WORKDIR_TEXT,
    help="The workdir the file ran in (its ledger).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@private_files()  # the ledger's files, should it make any
def settle_cmd(
    csv_file: Path,
    sent_rows: Choice | None,
    not_sent_rows: Choice | None,
    workdir: Path,
    as_json: bool,
) -> None:
    """List the rows of CSV_FILE in doubt (a run ended as it sent them, and the ledger could
    not record them as sent), or settle them once the mail server's log was checked.

    The listing names each as settle takes it: its row number, or ROW:LETTER (the start of its
    letter's key in the ledger) where two letters in doubt share a row, or the file's row of
    that number now holds another address (rows moved between runs). A row number alone is
    refused where it would be ambiguous."""
    if sent_rows is not None and not_sent_rows is not None:
        said = "give --sent or --not-sent, not both: settle one kind at a time"
        if as_json:
            refuse("settle", "UsageError", said, exits.USAGE, as_json=True)
        raise click.UsageError(said)
    wd = Workdir(workdir)
    rows = sent_rows if sent_rows is not None else not_sent_rows
    try:
        if rows is None:
            _list(wd, csv_file, as_json)
            return
        done = settle(wd, csv_file, rows, sent=sent_rows is not None)
    except NotSettled as error:
        _refuse(error, exits.USAGE, as_json=as_json)
    except InputFileError as error:
        _refuse(error, exits.INPUT_UNUSABLE, as_json=as_json)
    except LedgerNotWritten as error:
        _refuse(error, exits.RUN_FAILED, _ledger_remedy(error), as_json=as_json)
    except LedgerError as error:
        said = f"{error}: nothing was settled; run it again"
        _refuse(error, exits.RUN_FAILED, said, as_json=as_json)
    except MailMatrixError as error:
        _refuse(error, exits.RUN_FAILED, as_json=as_json)
    console = RunConsole()
    print_settled(console, done, sent=sent_rows is not None, as_json=as_json)
    if as_json:
        return
    then = (
        "a run or redrive of the file skips them, and counts them as sent (for good: to send"
        " one after all, run a file of that row alone, under another name, with"
        f" --send-again-from {csv_file.name})"
        if sent_rows is not None
        else "the next run or redrive of the file sends them, as rows never tried (a row no"
        " longer in the file is not sent)"
    )
    console.print(f"Recorded in the ledger: {then}.", markup=False)


def print_settled(console: Console, done: list[DoubtfulRow], *, sent: bool, as_json: bool) -> None:
    """Print the rows settled (``done``) as ``sent`` or not; one JSON object with ``as_json``."""
    said = "sent" if sent else "not sent"
    if as_json:
        settled = [row.to_dict() for row in done]
        click.echo(json.dumps({"settled_as": said, "rows": settled}, ensure_ascii=False, indent=2))
        return
    console.print(f"Settled as {said} ({len(done)} row(s)):", markup=False)
    for row in done:
        console.print(f"  {row.line()}", markup=False, soft_wrap=True)


def _list(wd: Workdir, csv_file: Path, as_json: bool) -> None:
    """Print the file's rows in doubt, those being sent now, and the commands that settle."""
    found = doubts_of_file(wd, csv_file)
    live = sorted({doubt.row for doubt in found.doubts if doubt.live})
    if as_json:
        shown: dict[str, Any] = {
            "file": str(csv_file),
            "workdir": str(wd.root),
            "in_doubt": [row.to_dict() for row in found.rows],
            "being_sent": live,
        }
        click.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    console = RunConsole()
    where = shlex.quote(str(wd.root))
    absent = not_run_here(wd, csv_file) if not found.rows else None
    if absent is not None:
        console.print(f"{absent[0]}. {absent[1]}.", markup=False, soft_wrap=True)
    elif not found.rows:
        console.print(
            f"No row of {csv_file.name} is in doubt in the workdir {where}.",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"Rows of {csv_file.name} in doubt in the workdir {where} (their letter may have"
            f" gone out, and the ledger has them as not sent): {len(found.rows)}",
            markup=False,
            soft_wrap=True,
        )
        for row in found.rows:
            line = f"  {doubt_line(row.to_dict())}; settle names it {row.settle_as}"
            console.print(line, markup=False, soft_wrap=True)
        numbers = [row.settle_as for row in found.rows]
        console.print(
            "Check the mail server's log (or the outbox) for them, then record what it says:",
            markup=False,
        )
        for said, sent in (("arrived", True), ("did not arrive", False)):
            command = settle_command(str(csv_file), wd.root, numbers, sent=sent)
            console.print(f"  {said}: {command}", markup=False, soft_wrap=True)
        console.print(
            "(Give only the rows of each kind.) Until they are settled, a run or redrive of the"
            " file is refused, but a run with --retry-unknown, which sends them again, each"
            " marked as a possible duplicate.",
            markup=False,
        )
    if live:
        rows = ", ".join(str(row) for row in live)
        console.print(
            f"Being sent by a run now (not in doubt unless it ends so): row(s) {rows}",
            markup=False,
        )


def _ledger_remedy(error: LedgerNotWritten) -> str:
    """What a ledger that cannot be written means for settle, and what to do."""
    fix = (
        NO_ROOM_REMEDY
        if no_room_in(str(error))
        else "make the ledger, its -wal and -shm files, and its folder writable"
    )
    return f"{str(error).rstrip('.')}. Nothing was settled: {fix}, then run the same command again."


def _refuse(
    error: MailMatrixError, code: int, said: str | None = None, *, as_json: bool = False
) -> None:
    """Say why nothing was settled, as `run` says its refusals, and exit with ``code``."""
    refuse("settle", type(error).__name__, said or str(error), code, as_json=as_json)


commands: list[click.Command] = [settle_cmd]
