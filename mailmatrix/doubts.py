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
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailmatrix.adapters.ledger_sqlite import Doubt, SqliteLedger
from mailmatrix.adapters.storage_local import LocalStorage
from mailmatrix.core.addresses import mask
from mailmatrix.core.recipients import read_rows
from mailmatrix.core.report import report_writer, row_identity, write_report_row
from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.errors import MailMatrixError, NotFoundError, NotSettled
from mailmatrix.jobs import report_key
from mailmatrix.local import (
    LOCAL_BUCKET,
    Workdir,
    campaign_of_file,
    incoming_key,
    validation_of,
)
from mailmatrix.ports import OUTCOME_UNKNOWN, Outcome
from mailmatrix.program import program

log = logging.getLogger(__name__)

# The report's status of a row in doubt, and why.
IN_DOUBT = "in_doubt"
IN_DOUBT_REASON = (
    "may have gone out: the run ended as it sent this row, and the ledger could not record it"
    " as sent. Check the mail server's log (or the outbox), then settle it: `{program} settle"
    " FILE --sent ROW` if it arrived, `--not-sent ROW` if not; unsettled, a redrive sends it"
    " again, marked as a possible duplicate"
)


@dataclass(frozen=True)
class DoubtfulRow:
    """A row in doubt, as people are shown it: its address masked."""

    row: int
    email: str  # masked (mask()); "" where neither a manifest nor the ledger has it
    template: str | None
    attachment: str | None
    tried_at: float  # when its attempt claimed it (or gave it back), seconds since the epoch

    def to_dict(self) -> dict[str, Any]:
        """As `run --json` prints it."""
        return {
            "row": self.row,
            "email": self.email,
            "template": self.template,
            "attachment": self.attachment,
            "tried_at": when(self.tried_at),
        }

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
    parts.append(f"tried {row['tried_at']}")
    return ", ".join(parts)


def when(at: float) -> str:
    """``at`` (seconds since the epoch) as the console says times: UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def settle_command(csv_file: str, workdir: Path, rows: Iterable[int], *, sent: bool) -> str:
    """The command that settles ``rows`` of ``csv_file``'s campaign in ``workdir``."""
    listed = ",".join(str(row) for row in sorted(rows))
    flag = "--sent" if sent else "--not-sent"
    where = shlex.quote(str(workdir))
    return f"{program()} settle {shlex.quote(csv_file)} {flag} {listed} --workdir {where}"


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
    return _described(ours, _manifest_items(wd, [validation], {d.key for d in ours}))


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
        _write_report(path, rows)
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


def _write_report(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as a report at ``path``, whole or not at all (a file beside, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".report-", suffix=".csv", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write("\ufeff")  # the byte-order mark Excel needs, as Summarize writes it
            writer = report_writer(out)
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
    file_rows: dict[int, str]  # the file's rows: their number, and Email cell masked


def doubts_of_file(wd: Workdir, csv_file: Path) -> FileDoubts:
    """The rows in doubt of ``csv_file``'s campaign in the workdir (its name names it)."""
    campaign = campaign_of_file(csv_file)
    found: list[Doubt] = []
    if wd.has_ledger():  # none: no row was ever claimed here (and none is made)
        with _ledger(wd, read_only=True) as ledger:
            found = ledger.doubts(campaign)
    resting = [doubt for doubt in found if not doubt.live]
    items = _manifest_items(wd, _validations(wd, campaign), {d.key for d in resting})
    return FileDoubts(
        csv_file, campaign, found, _described(resting, items), _rows_of_file(csv_file)
    )


def settle(wd: Workdir, csv_file: Path, rows: Collection[int], *, sent: bool) -> list[DoubtfulRow]:
    """Record ``rows`` of the file's campaign as ``sent`` (no run sends them again) or not
    (the next run sends them, as rows never tried); return them as shown. Refused (NotSettled,
    nothing written) when a run of the file is going on, or a row is not in doubt."""
    running = running_executions(wd, csv_file)
    if running:
        raise NotSettled(
            f"{csv_file.name}: a run of it is going on in the workdir {wd.root} (execution"
            f" {running[0]}): nothing was settled. Wait for it to end (or stop it), then settle"
            " the rows it leaves in doubt"
        )
    found = doubts_of_file(wd, csv_file)
    settling = _rows_to_settle(wd, found, rows)
    with _ledger(wd) as ledger:
        ledger.settle(settling, sent=sent, by=_who())
    shown = {row.row: row for row in found.rows}
    done = [shown[doubt.row] for doubt in settling]
    log.info(
        "doubts: %d row(s) of %s settled as %s",
        len(done),
        found.campaign,
        "sent" if sent else "not sent",
    )
    return done


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


def _rows_to_settle(wd: Workdir, found: FileDoubts, rows: Collection[int]) -> list[Doubt]:
    """The ledger's doubts of ``rows``; NotSettled naming each row that is not in doubt, and
    why, when any is not."""
    by_row: dict[int, list[Doubt]] = {}
    for doubt in found.doubts:
        by_row.setdefault(doubt.row, []).append(doubt)
    problems = []
    settling = []
    outcomes: dict[int, Outcome] = {}
    if wd.has_ledger():
        with _ledger(wd, read_only=True) as ledger:
            outcomes = {outcome.row: outcome for outcome in ledger.outcomes(found.campaign)}
    for row in sorted(set(rows)):
        doubts = by_row.get(row, [])
        if len(doubts) == 1 and not doubts[0].live:
            settling.append(doubts[0])
        elif doubts and any(doubt.live for doubt in doubts):
            problems.append(f"row {row} is being sent by a run now")
        elif doubts:
            problems.append(
                f"row {row} names {len(doubts)} letters in doubt (the file's rows moved between"
                " its runs): settle them by the server's log, with the help of the report"
            )
        else:
            problems.append(_not_in_doubt(row, outcomes.get(row), found))
    if problems:
        listed = "; ".join(problems)
        shown = shlex.join([str(found.csv_file), "--workdir", str(wd.root)])
        raise NotSettled(
            f"{found.csv_file.name}: {listed}. Nothing was settled. `{program()} settle"
            f" {shown}` lists the rows in doubt"
        )
    return settling


def _not_in_doubt(row: int, outcome: Outcome | None, found: FileDoubts) -> str:
    """Why ``row`` of the file is not in doubt (``outcome``: the ledger's entry of that row)."""
    if outcome is not None and outcome.state == "sent":
        return f"row {row} is already recorded as sent (a run skips it)"
    if outcome is not None and outcome.state == "failed" and outcome.code == OUTCOME_UNKNOWN:
        return (
            f"row {row} failed as {OUTCOME_UNKNOWN}, not in doubt: once you checked that it did"
            " not arrive, `run FILE --retry-unknown` sends it"
        )
    if outcome is not None and outcome.state == "failed":
        return f"row {row} failed for good ({outcome.code}): nothing went out"
    if outcome is not None:
        return f"row {row} was given back unsent (the next run sends it): not in doubt"
    if row in found.file_rows:
        return f"row {row} was never tried: no run of this file sent it"
    if found.file_rows:
        first, last = min(found.file_rows), max(found.file_rows)
        return f"there is no row {row} in the file (its rows are {first} to {last})"
    return f"there is no row {row} in the file (it holds no rows)"


def _described(doubts: list[Doubt], items: Mapping[str, Mapping[str, Any]]) -> list[DoubtfulRow]:
    """``doubts`` as people are shown them, from their manifest lines (``items``, by key) where
    found, else from what the ledger kept."""
    shown = []
    for doubt in doubts:
        item = items.get(doubt.key, {})
        email = mask(str(item["email"])) if item.get("email") else doubt.masked
        attachment = item.get("attachment") or doubt.attachment
        template = item.get("template")
        shown.append(DoubtfulRow(doubt.row, email, template, attachment, doubt.at))
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


def _rows_of_file(csv_file: Path) -> dict[int, str]:
    """The rows of ``csv_file`` (not blank), each with its Email cell masked."""
    with csv_file.open("rb") as stream:
        return {
            row: mask(cells.get("Email", ""))
            for row, cells in read_rows(stream, source=csv_file.name)
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


def _who() -> str:
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
