"""Rows in doubt in a local workdir: their letter may have gone out, and the ledger has them as
not sent (a run's process died as it sent them, or the disk was full, so that neither the
ledger nor the journal beside it could record the letter a mail server had taken).

The ledger's claims outlive a full disk: each row is claimed, in the ledger, before its letter
is made, and a claim that could not be written sent nothing. A claim never recorded sent nor
given back names a row in doubt. This module names those rows (the run's summary, `show`, the
report of a run that ended without its summary) and records what the operator found in the
mail server's log (`mailmatrix settle`): sent, and no run sends them again; or not sent, and
the next run sends them as rows never tried, not as possible duplicates.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shlex
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.storage_local import LocalStorage
from mailmatrix.core.addresses import mask
from mailmatrix.core.recipients import read_rows
from mailmatrix.core.report import report_writer, row_identity, write_report_row
from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.errors import MailMatrixError, NotFoundError, NotSettled, RowsInDoubt
from mailmatrix.jobs import report_key
from mailmatrix.local import (
    LOCAL_BUCKET,
    Workdir,
    campaign_of_file,
    incoming_key,
    ran_in,
    validation_of,
    workdirs_that_ran,
)
from mailmatrix.ports import OUTCOME_UNKNOWN, Doubt, Outcome
from mailmatrix.program import program

log = logging.getLogger(__name__)

# The report's status of a row in doubt, and why.
IN_DOUBT = "in_doubt"
IN_DOUBT_REASON = (
    "may have gone out: the run ended as it sent this row, and the ledger could not record it"
    " as sent. Check the mail server's log (or the outbox), then settle it: `{program} settle"
    " FILE --sent ROW` if it arrived, `--not-sent ROW` if not; until then no run or redrive of"
    " the file goes on, but a run with --retry-unknown, which sends it again, marked as a"
    " possible duplicate"
)


# How many hex digits of a letter's ledger key `settle` shows to name it (ROW:LETTER).
LETTER_LENGTH = 8


@dataclass(frozen=True)
class Choice:
    """The letters in doubt an operator names to settle: ``ranges`` of row numbers as the run
    numbered them (FIRST, LAST; one row is a range of one), and ``letters`` (ROW, the start of
    its letter's ledger key) as `settle` lists them, whatever row of the file they now hold."""

    ranges: tuple[tuple[int, int], ...] = ()
    letters: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class DoubtfulRow:
    """A row in doubt, as people are shown it: its address masked."""

    row: int
    email: str  # masked (mask()); "" where neither a manifest nor the ledger has it
    template: str | None
    attachment: str | None
    # When the try that may have sent its letter claimed it (or gave it back), seconds since
    # the epoch: the time to look for in the mail server's log.
    tried_at: float
    key: str = ""  # the ledger's key of its letter
    settle_as: str = ""  # how `settle` names it: its row, or ROW:LETTER where that is ambiguous
    address: str = ""  # whole, from the run's manifest (never shown); "" where it is gone
    evidence: str = ""  # what the mail service reported of its letter (on a stack: SES's event)
    # When a later try ended; None: none did. It surely sent nothing (a refused connection)
    # unless ``again``: it ended holding its claim (killed), or with its outcome unknown.
    last_tried_at: float | None = None
    again: bool = False
    tried_by: str = ""  # the attempt of the try at ``tried_at`` (run's log names it), if kept

    @property
    def letter(self) -> str:
        """Its letter as `settle` names it whatever the file now holds: ROW:LETTER."""
        return f"{self.row}:{self.key[:LETTER_LENGTH]}"

    def to_dict(self) -> dict[str, Any]:
        """As `run --json` prints it."""
        return {
            "row": self.row,
            "email": self.email,
            "template": self.template,
            "attachment": self.attachment,
            "tried_at": when(self.tried_at),
            "settle_as": self.settle_as or str(self.row),
        } | self._tries()

    def _tries(self) -> dict[str, Any]:
        """The later try, and the attempt of the doubtful one, where known."""
        tries: dict[str, Any] = {"tried_by": self.tried_by} if self.tried_by else {}
        if self.last_tried_at:
            tries |= {"last_tried_at": when(self.last_tried_at), "again": self.again}
        return tries

    def line(self) -> str:
        """One line for the console (doubt_line)."""
        return doubt_line(self.to_dict())


def doubt_line(row: Mapping[str, Any]) -> str:
    """A row in doubt (DoubtfulRow.to_dict) on one line for the console: row, masked address,
    template, attachment, time of the try."""
    parts = [f"row {row['row']}", row.get("email") or "(address not recorded)"]
    template = row.get("template")
    parts.append(f"template {template}" if template else "template not recorded")
    if row.get("attachment"):
        parts.append(f"attachment {row['attachment']}")
    if row.get("last_tried_at") and row.get("again"):
        parts.append(f"tried {row['tried_at']} (it may have gone out then)")
        parts.append(f"tried again up to {row['last_tried_at']} (it may have gone out then too)")
    elif row.get("last_tried_at"):
        parts.append(f"tried {row['tried_at']} (it may have gone out then)")
        parts.append(f"last tried {row['last_tried_at']}")
    else:
        parts.append(f"tried {row['tried_at']}")
    return ", ".join(parts)


def when(at: float) -> str:
    """``at`` (seconds since the epoch) as the console says times: UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def settle_command(csv_file: str, workdir: Path, names: Iterable[object], *, sent: bool) -> str:
    """The command that settles the letters ``names`` names (rows, or ROW:LETTER as
    DoubtfulRow.settle_as) of ``csv_file``'s campaign in ``workdir``."""
    listed = ",".join(str(name) for name in names)
    flag = "--sent" if sent else "--not-sent"
    where = shlex.quote(str(workdir))
    named = f"./{csv_file}" if csv_file.startswith("-") else csv_file  # not read as an option
    return f"{program()} settle {shlex.quote(named)} {flag} {listed} --workdir {where}"


def doubts_of(wd: Workdir, execution_id: str) -> list[DoubtfulRow]:
    """The rows in doubt an execution left (its own batches' claims), by row; none while a
    batch of it still holds them (it is sending them)."""
    engine = Engine(wd.executions, ResourceRegistry())
    validation = validation_of(engine.history(execution_id))
    campaign = (validation.get("campaign") or {}).get("id")
    if not campaign or not wd.has_ledger():
        return []
    with _ledger(wd, read_only=True) as ledger:
        found = ledger.doubts(campaign)
    attempts = engine.child_execution_arns(execution_id)
    ours = [doubt for doubt in found if doubt.attempt in attempts and not doubt.live]
    if not ours:
        return []
    shown = described(ours, _manifest_items(wd, [validation], {d.key for d in ours}))
    return named(shown, found, None)


def write_doubts_report(wd: Workdir, record: Mapping[str, Any]) -> None:
    """Write the report of an execution that ended without its summary and left rows in doubt:
    each row it validated as the ledger has it (sent, already sent, failed, in doubt, not sent
    yet), where Summarize would have written it; and again after each redrive that ends so.
    Summarize's report (a summary.json beside it) is left as it is; one that cannot be
    written (a full disk) is logged, not raised."""
    if record.get("status") in ("SUCCEEDED", "RUNNING"):
        return
    engine = Engine(wd.executions, ResourceRegistry())
    validation = validation_of(engine.history(record["name"]))
    campaign = (validation.get("campaign") or {}).get("id")
    if not campaign or not wd.has_ledger():
        return
    path = wd.bucket / report_key(campaign, record["name"])
    if path.with_name("summary.json").exists():
        return
    try:
        items = _manifest_lines(wd, validation)
        with _ledger(wd, read_only=True) as ledger:
            outcomes = ledger.outcomes_of([item["key"] for item in items])
            doubtful = {d.key for d in ledger.doubts(campaign) if not d.live}
        attempts = engine.child_execution_arns(record["name"])
        rows = [_report_row(item, outcomes.get(item["key"]), attempts, doubtful) for item in items]
        if not path.exists() and not any(row["status"] == IN_DOUBT for row in rows):
            return
        _write_report(path, rows, (validation.get("campaign") or {}).get("delimiter") or ",")
    except (OSError, MailMatrixError) as error:
        log.warning("doubts: the report of the rows in doubt could not be written: %s", error)


def _report_row(
    item: Mapping[str, Any], outcome: Outcome | None, attempts: Collection[str], doubtful: set[str]
) -> dict[str, Any]:
    """The report row of a validated row of an execution that ended without its summary."""
    row = row_identity(item)
    ours = outcome is not None and outcome.attempt in attempts
    if outcome is not None and outcome.state == "sent":
        status = "sent" if ours else "skipped"
        reason = "" if ours else "already sent"
        return {**row, "status": status, "message_id": outcome.message_id, "reason": reason}
    if outcome is not None and outcome.state == "failed":
        return {**row, "status": "failed", "code": outcome.code, "reason": outcome.reason}
    if outcome is not None and ours and outcome.key in doubtful:
        reason = IN_DOUBT_REASON.format(program=program())
        return {**row, "status": IN_DOUBT, "reason": reason}
    return {**row, "status": "unsent", "reason": "not sent yet: the execution ended before it"}


def _write_report(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> None:
    """Write ``rows`` as a report at ``path``, whole or not at all (a file beside, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".report-", suffix=".csv", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write("\ufeff")  # the byte-order mark Excel needs, as Summarize writes it
            writer = report_writer(out, delimiter)
            for row in rows:
                write_report_row(writer, row)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@dataclass(frozen=True)
class FileDoubts:
    """The rows in doubt of a file's campaign in a workdir, and what the file holds."""

    csv_file: Path
    campaign: str
    doubts: list[Doubt]  # the ledger's, live ones (being sent) too
    rows: list[DoubtfulRow]  # those not live, as shown
    file_rows: dict[int, str]  # the file's rows: their number, and Email cell (whole: mask it)


def doubts_of_file(wd: Workdir, csv_file: Path) -> FileDoubts:
    """The rows in doubt of ``csv_file``'s campaign in the workdir (its name names it)."""
    campaign = campaign_of_file(csv_file)
    found: list[Doubt] = []
    if wd.has_ledger():  # none: no row was ever claimed here (and none is made)
        with _ledger(wd, read_only=True) as ledger:
            found = ledger.doubts(campaign)
    resting = [doubt for doubt in found if not doubt.live]
    items = _manifest_items(wd, _validations(wd, campaign), {d.key for d in resting})
    file_rows = rows_of_file(csv_file) if csv_file.is_file() else {}  # {}: moved since
    shown = named(described(resting, items), found, file_rows)
    return FileDoubts(csv_file, campaign, found, shown, file_rows)


def named(
    shown: list[DoubtfulRow], doubts: list[Doubt], file_rows: Mapping[int, str] | None
) -> list[DoubtfulRow]:
    """``shown`` each with the name `settle` accepts for it: its row, where no other letter in
    doubt has that row and the file's row of that number (``file_rows``, where known) holds its
    address (or is gone); else ROW:LETTER."""
    per_row = Counter(doubt.row for doubt in doubts)
    named = []
    for row in shown:
        plain = per_row[row.row] == 1 and _same_address(row, file_rows)
        named.append(replace(row, settle_as=str(row.row) if plain else row.letter))
    return named


def _same_address(row: DoubtfulRow, file_rows: Mapping[int, str] | None) -> bool:
    """Whether the file's row of ``row``'s number holds its address, or is not in the file.
    Whole addresses are compared: masked, most of a sorted file's look alike (p***@x.com).
    Where the run's manifest is gone, only the masked address the ledger kept is left."""
    if file_rows is None or row.row not in file_rows:
        return True
    if row.address:
        return _folded(file_rows[row.row]) == _folded(row.address)
    return bool(row.email) and _folded(mask(file_rows[row.row].strip())) == _folded(row.email)


def _folded(address: str) -> str:
    """An address as two cells of one address compare: no outer blanks, case folded."""
    return address.strip().casefold()


def settle(wd: Workdir, csv_file: Path, choice: Choice, *, sent: bool) -> list[DoubtfulRow]:
    """Record the letters ``choice`` names of the file's campaign as ``sent`` (no run sends them
    again) or not (the next run sends them, as rows never tried); return them as shown.
    Refused (NotSettled, nothing written) when a run of the file is going on, or a row named
    is not in doubt, or names a letter other than the file's row of that number now holds."""
    running = running_executions(wd, csv_file)
    if running:
        raise NotSettled(
            f"{csv_file.name}: a run of it is going on in the workdir {wd.root} (execution"
            f" {running[0]}): nothing was settled. Wait for it to end (or stop it), then settle"
            " the rows it leaves in doubt"
        )
    absent = not_run_here(wd, csv_file)
    if absent is not None:
        what, then = absent
        raise NotSettled(f"{what}: nothing was settled. {then}")
    found = doubts_of_file(wd, csv_file)
    listing = f"{program()} settle {shlex.join([str(csv_file), '--workdir', str(wd.root)])}"
    retry = "`run FILE --retry-unknown` sends it"
    settling = rows_to_settle(found, choice, lambda: _outcomes(wd, found.campaign), listing, retry)
    with _ledger(wd) as ledger:
        return record_settled(ledger, found, settling, sent=sent)


class SettlingLedger(Protocol):
    """A ledger that settles rows in doubt (SqliteLedger, DynamoDbLedger)."""

    def settle(self, doubts: Collection[Doubt], *, sent: bool, by: str) -> None: ...


def record_settled(
    ledger: SettlingLedger, found: FileDoubts, settling: list[Doubt], *, sent: bool
) -> list[DoubtfulRow]:
    """Record ``settling``, rows of ``found``, in ``ledger`` as ``sent`` or not, said by the
    user running the command; return them as shown."""
    ledger.settle(settling, sent=sent, by=who())
    shown = {row.key: row for row in found.rows}
    done = [shown[doubt.key] for doubt in settling]
    log.info(
        "doubts: %d row(s) of %s settled as %s",
        len(done),
        found.campaign,
        "sent" if sent else "not sent",
    )
    return done


def not_run_here(wd: Workdir, csv_file: Path) -> tuple[str, str] | None:
    """What to say of a file that never ran in the workdir: that none of its rows can be in
    doubt there, and then the --workdir to give (naming those known to have run it, where
    found); None when it ran there."""
    campaign = campaign_of_file(csv_file)
    if ran_in(wd, campaign):
        return None
    what = (
        f"{csv_file.name}: no file of this name ran in the workdir {wd.root}, so none of its"
        " rows is in doubt there"
    )
    then = "Give settle the --workdir its run used (the run's summary names it)"
    try:
        here = Path.cwd()
    except OSError:  # the current folder is gone: no workdir below it to look in
        return what, then
    found = [w for w in workdirs_that_ran(campaign, here) if w.resolve() != wd.root.resolve()]
    if not found:
        return what, then
    # Those that hold rows of the file in doubt first, and named so: a workdir where only
    # another campaign of the same file name ran must not be the one the command names.
    doubts = {workdir: _doubts_in(workdir, csv_file) for workdir in found}
    found.sort(key=lambda workdir: doubts[workdir] == 0)
    shown = [w.relative_to(here) if w.is_relative_to(here) else w for w in found]
    listed = " and ".join(
        f"{shown_as} ({doubts[workdir]} row(s) in doubt)" if doubts[workdir] else str(shown_as)
        for workdir, shown_as in zip(found, shown, strict=True)
    )
    command = f"{program()} settle {shlex.join([str(csv_file), '--workdir', str(shown[0])])}"
    return what, f"{then}: it ran in {listed}; `{command}` lists its rows in doubt there"


def _doubts_in(workdir: Path, csv_file: Path) -> int:
    """How many rows of the file are in doubt in ``workdir``; 0 where it cannot be read."""
    try:
        return in_doubt_count(Workdir(workdir), csv_file)
    except (MailMatrixError, OSError):
        return 0


def refuse_rows_in_doubt(wd: Workdir, csv_file: Path, again: str, *, shown: int = 10) -> None:
    """Refuse (RowsInDoubt, nothing sent) a run or redrive of ``csv_file``'s campaign while an
    earlier run's rows are in doubt: their letters may have arrived, and only the operator,
    with the mail server's log, can tell. The error names them and the commands that settle
    them; ``again`` is the command that sends them again all the same (run --retry-unknown).
    One read of the ledger's doubts when there are none; the file is read only when there are."""
    if not in_doubt_count(wd, csv_file):
        return
    rows = doubts_of_file(wd, csv_file).rows
    if not rows:
        return
    names = [row.settle_as or str(row.row) for row in rows]
    commands = [settle_command(str(csv_file), wd.root, names, sent=sent) for sent in (True, False)]
    listing = f"`{program()} settle FILE`"
    raise rows_in_doubt(csv_file.name, rows, commands, again, listing, shown=shown)


def rows_in_doubt(
    name: str,
    rows: Sequence[DoubtfulRow],
    commands: Sequence[str],
    again: str,
    listing: str,
    *,
    shown: int = 10,
    log_of: str = "the mail server's log (or the outbox)",
) -> RowsInDoubt:
    """The refusal of a run of the file ``name`` while ``rows`` are in doubt: the first
    ``shown`` of them (``listing``, the command that lists all), the ``commands`` that settle
    them, and ``again``, which sends them again all the same."""
    listed = [f"  {row.line()}" for row in rows[:shown]]
    if len(rows) > shown:
        listed.append(f"  ... and {len(rows) - shown} more ({listing} lists all)")
    return RowsInDoubt(
        "\n".join(
            [
                f"{name}: nothing was sent: {len(rows)} row(s) of it are in doubt (an earlier"
                " run ended as it sent them, so their letters may have arrived, and the ledger"
                " could not record them as sent):",
                *listed,
                f"Look for them in {log_of}, then tell the ledger which arrived (leave out of"
                " each command the rows that belong to the other), and run again:",
                *(f"  {command}" for command in commands),
                "To send them all again without looking, each marked as a possible duplicate:",
                f"  {again}",
            ]
        )
    )


def in_doubt_count(wd: Workdir, csv_file: Path) -> int:
    """How many letters of ``csv_file``'s campaign are in doubt in the workdir (not those
    being sent now), as `settle` lists them; without reading the file."""
    if not wd.has_ledger():
        return 0
    with _ledger(wd, read_only=True) as ledger:
        return sum(not doubt.live for doubt in ledger.doubts(campaign_of_file(csv_file)))


def running_executions(wd: Workdir, csv_file: Path) -> list[str]:
    """The executions of ``csv_file``'s campaign running in the workdir (their process alive)."""
    if not wd.executions.is_dir():
        return []
    engine = Engine(wd.executions, ResourceRegistry())
    campaign, key = campaign_of_file(csv_file), incoming_key(csv_file)
    found = []
    for record in engine.list_executions(with_data=True):
        if record.get("status") != "RUNNING":
            continue
        ran = (validation_of(_history(engine, record["name"])).get("campaign") or {}).get("id")
        if ran == campaign or (ran is None and _input_key(record.get("input")) == key):
            found.append(str(record["name"]))
    return found


def rows_to_settle(
    found: FileDoubts,
    choice: Choice,
    outcomes: Callable[[], Mapping[int, Outcome]],
    listing: str,
    retry: str,
) -> list[Doubt]:
    """The ledger's doubts ``choice`` names; NotSettled naming each row named that is not in
    doubt, and why, when any is not. Ranges are compared, never expanded: what is listed is
    bounded by the file's rows and the ledger's doubts, and at most _PROBLEMS_SHOWN problems.
    ``outcomes``: the ledger's entries of the campaign by row, read only to say why a row is
    not in doubt; ``listing``: the command that lists the rows in doubt; ``retry``: what sends
    a row failed as OUTCOME_UNKNOWN again."""
    by_row: dict[int, list[Doubt]] = {}
    for doubt in found.doubts:
        by_row.setdefault(doubt.row, []).append(doubt)
    shown = {row.key: row for row in found.rows}
    settling: dict[str, Doubt] = {}
    problems: list[str] = []
    for row, start in choice.letters:
        matches = [doubt for doubt in by_row.get(row, []) if doubt.key.startswith(start.lower())]
        if len(matches) == 1 and not matches[0].live:
            settling[matches[0].key] = matches[0]
        elif matches and any(doubt.live for doubt in matches):
            problems.append(f"row {row} is being sent by a run now")
        elif matches:
            problems.append(f"{row}:{start} names {len(matches)} letters: give more of its key")
        else:
            problems.append(f"no letter {row}:{start} of this file is in doubt")
    for low, high in choice.ranges:
        in_doubt = sorted(row for row in by_row if low <= row <= high)
        for row in in_doubt:
            problem = _doubt_problem(row, by_row[row], shown, found.file_rows)
            if problem:
                problems.append(problem)
            else:
                settling[by_row[row][0].key] = by_row[row][0]
        in_file = [row for row in sorted(found.file_rows) if low <= row <= high]
        # The spans past the file first: one clause each, however long.
        problems[:0] = _not_in_file(low, high, sorted({*in_doubt, *in_file}), found.file_rows)
        missing = [row for row in in_file if row not in by_row]
        entries = outcomes() if missing else {}
        problems += [_not_in_doubt(row, entries.get(row), retry) for row in missing]
    if problems:
        raise NotSettled(_refusal(found, list(dict.fromkeys(problems)), listing))
    return list(settling.values())


# How many of the problems of a refused settle it names (the others are counted).
_PROBLEMS_SHOWN = 10


def _refusal(found: FileDoubts, problems: list[str], listing: str) -> str:
    """Why nothing was settled: the first problems, the count of the others, what to do."""
    listed = "; ".join(problems[:_PROBLEMS_SHOWN])
    if len(problems) > _PROBLEMS_SHOWN:
        listed += f"; and {len(problems) - _PROBLEMS_SHOWN} more"
    return (
        f"{found.csv_file.name}: {listed}. Nothing was settled. `{listing}` lists the rows in"
        " doubt, each as settle names it"
    )


def _doubt_problem(
    row: int, doubts: list[Doubt], shown: Mapping[str, DoubtfulRow], file_rows: Mapping[int, str]
) -> str | None:
    """Why the run's row ``row`` (``doubts``: its letters in doubt) cannot be settled by its
    number alone; None when it can."""
    if any(doubt.live for doubt in doubts):
        return f"row {row} is being sent by a run now"
    letters = [shown[doubt.key] for doubt in doubts if doubt.key in shown]
    if len(doubts) > 1:
        names = " or ".join(letter.letter for letter in letters)
        return (
            f"row {row} names {len(doubts)} letters in doubt (the file's rows moved between its"
            f" runs): name each as the listing does, {names}"
        )
    if not letters or _same_address(letters[0], file_rows):
        return None
    letter = letters[0]
    held = letter.email or "an address the ledger did not keep"
    return (
        f"row {row} in doubt is the run's row {row} ({held}), and the file's row {row} now holds"
        f" {mask(file_rows[row].strip())}: row numbers are the run's, and the file's rows moved"
        " since; if you"
        f" mean the run's letter, name it as {letter.letter}"
    )


def _not_in_file(low: int, high: int, named: list[int], file_rows: Mapping[int, str]) -> list[str]:
    """The spans of ``low``-``high`` that are neither in the file nor in doubt (``named``:
    the rows of the range that are, in order), each as one problem."""
    spans = []
    start = low
    for row in [*named, high + 1]:
        if row > start:
            spans.append((start, row - 1))
        start = row + 1
    if file_rows:
        rows = f"(its rows are {min(file_rows)} to {max(file_rows)})"
    else:
        rows = "(it holds no rows)"
    return [
        f"there is no row {first} in the file {rows}"
        if first == last
        else f"rows {first} to {last} are not in the file {rows}"
        for first, last in spans
    ]


def _not_in_doubt(row: int, outcome: Outcome | None, retry: str) -> str:
    """Why ``row`` of the file is not in doubt (``outcome``: the ledger's entry of that row;
    ``retry``: what sends a row failed as OUTCOME_UNKNOWN again)."""
    if outcome is not None and outcome.state == "sent":
        return f"row {row} is already recorded as sent (a run skips it)"
    if outcome is not None and outcome.state == "failed" and outcome.code == OUTCOME_UNKNOWN:
        return (
            f"row {row} failed as {OUTCOME_UNKNOWN}, not in doubt: once you checked that it did"
            f" not arrive, {retry}"
        )
    if outcome is not None and outcome.state == "failed":
        return f"row {row} failed for good ({outcome.code}): nothing went out"
    if outcome is not None:
        return f"row {row} was given back unsent (the next run sends it): not in doubt"
    return f"row {row} was never tried: no run of this file sent it"


def _outcomes(wd: Workdir, campaign: str) -> dict[int, Outcome]:
    """The workdir ledger's entries of ``campaign`` by row; none where it has no ledger."""
    if not wd.has_ledger():
        return {}
    with _ledger(wd, read_only=True) as ledger:
        return {outcome.row: outcome for outcome in ledger.outcomes(campaign)}


def described(doubts: list[Doubt], items: Mapping[str, Mapping[str, Any]]) -> list[DoubtfulRow]:
    """``doubts`` as people are shown them, from their manifest lines (``items``, by key) where
    found, else from what the ledger kept."""
    shown = []
    for doubt in doubts:
        item = items.get(doubt.key, {})
        email = mask(str(item["email"])) if item.get("email") else doubt.masked
        attachment = item.get("attachment") or doubt.attachment
        template = item.get("template")
        address = str(item.get("email") or "")
        later = doubt.at if doubt.doubtful_at is not None and doubt.at > doubt.tried_at else None
        shown.append(
            DoubtfulRow(
                doubt.row,
                email,
                template,
                attachment,
                doubt.tried_at,
                doubt.key,
                "",
                address,
                last_tried_at=later,
                again=later is not None and doubt.doubtful_again,
                tried_by=doubt.doubtful_attempt or "",
            )
        )
    return shown


def _validations(wd: Workdir, campaign: str) -> list[dict[str, Any]]:
    """The validation results of the campaign's executions in the workdir, newest first."""
    if not wd.executions.is_dir():
        return []
    engine = Engine(wd.executions, ResourceRegistry())
    found = []
    for record in reversed(engine.list_executions()):
        validation = validation_of(_history(engine, record["name"]))
        if (validation.get("campaign") or {}).get("id") == campaign:
            found.append(validation)
    return found


def _manifest_items(
    wd: Workdir, validations: Iterable[Mapping[str, Any]], keys: set[str]
) -> dict[str, dict[str, Any]]:
    """The manifest lines of ``keys`` in the manifests of ``validations``, the first found of
    each; none where a manifest is gone."""
    found: dict[str, dict[str, Any]] = {}
    for validation in validations:
        if not keys - found.keys():
            break
        with contextlib.suppress(OSError, MailMatrixError):
            for item in _manifest_lines(wd, validation):
                if item.get("key") in keys and item["key"] not in found:
                    found[item["key"]] = item
    return found


def _manifest_lines(wd: Workdir, validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lines of a validation's manifest (the rows it validated); NotFoundError when gone."""
    key = (validation.get("manifest") or {}).get("key")
    if not key:
        raise NotFoundError("the execution has no manifest")
    storage = LocalStorage(wd.bucket, bucket=LOCAL_BUCKET)
    with storage.open(key) as manifest:
        return [json.loads(line) for line in manifest if line.strip()]


def rows_of_file(csv_file: Path) -> dict[int, str]:
    """The rows of ``csv_file`` (not blank), each with its Email cell (whole: shown masked)."""
    with csv_file.open("rb") as stream:
        return {
            row: cells.get("Email", "") for row, cells in read_rows(stream, source=csv_file.name)
        }


def _history(engine: Engine, execution_id: str) -> list[dict[str, Any]]:
    """The execution's history; none where it has none yet (just started) or it cannot be
    read (`show` says why)."""
    try:
        return engine.history(execution_id)
    except MailMatrixError:
        return []


def _input_key(text: Any) -> str | None:
    """The object key an execution's input (an S3 event) names, if any."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    found = ((value.get("detail") or {}).get("object") or {}).get("key")
    return found if isinstance(found, str) else None


def who() -> str:
    """Who settles: the user running the command (their uid where it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@contextlib.contextmanager
def _ledger(wd: Workdir, *, read_only: bool = False) -> Iterator[SqliteLedger]:
    """The workdir's ledger; ``read_only`` for what only looks."""
    ledger = SqliteLedger(str(wd.ledger), read_only=read_only)
    try:
        yield ledger
    finally:
        ledger.close()
