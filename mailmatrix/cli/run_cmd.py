"""`mailmatrix run`: send a campaign on this machine through the real state machine."""

from __future__ import annotations

import contextlib
import csv
import functools
import itertools
import json
import os
import shlex
import signal
import sys
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from mailmatrix.adapters.smtp_urls import PASSWORD_VARIABLE, redacted, url_warnings
from mailmatrix.choices import check_choices
from mailmatrix.cli import exits
from mailmatrix.cli.console import RunConsole, stdout_to_nowhere
from mailmatrix.cli.defaults import DEFAULT_WORKDIR_TEXT, default_workdir
from mailmatrix.cli.failing import JsonCommand, action_of, refuse
from mailmatrix.cli.options import (
    SEND_AGAIN_HELP,
    check_send_rate,
    check_sender,
    corrected_address_option,
    send_again_option,
)
from mailmatrix.cli.progress import LedgerWaitNotices, notice_console, progress_display
from mailmatrix.cli.validate_cmd import (
    attachments_note,
    bundled_templates_hint,
    missing_columns_hint,
    templates_shown,
)
from mailmatrix.core.attachments import ATTACHMENT_NOT_FOUND
from mailmatrix.core.failures import (
    DRILL_QUOTA_ADVICE,
    NO_ROOM_REMEDY,
    NOT_SENT_TWICE,
    generic_cause,
    plain_error,
    write_remedy,
)
from mailmatrix.core.rejects import report_delimiter
from mailmatrix.core.report import (
    DOUBT_UNDER,
    DOUBT_UNDER_CODE,
    FAILED_APART,
    HELD_UNDER,
    MAYBE_SENT_UNDER,
    SENT_UNDER,
    SENT_UNDER_CODE,
    SUPERSEDED,
    attachment_changed_advice,
    attachment_of_another_hint,
    naming_workdir,
    other_letter_hint,
    progress_counts,
    set_letter_file,
    superseded_hint,
    unknown_advice,
)
from mailmatrix.disk import no_room, write_fault
from mailmatrix.doubts import doubt_line, doubts_of, refuse_rows_in_doubt, settle_command
from mailmatrix.engine import stopping
from mailmatrix.engine.errors import SHOWN_CAUSE_CHARS, cause_message
from mailmatrix.errors import (
    BadWorkdir,
    ChoiceRefused,
    ConfigurationError,
    DeliveriesDamaged,
    DeliveryChanged,
    DemoTemplates,
    InputFileError,
    LedgerLost,
    LedgerNotWritten,
    MailMatrixError,
    NameLikeAnother,
    NoEarlierRun,
    PlaceholderConstant,
    PlaceholderSender,
    RowsInDoubt,
)
from mailmatrix.jobs import report_key
from mailmatrix.local import (
    DEFAULT_TEMPLATES,
    RECORD_NOT_KEPT,
    Workdir,
    header_warnings,
    incoming_key,
    is_bundled,
    naming_run_options,
    progress_of,
    run_campaign,
    run_choices,
    run_command,
    sender_of,
    unsubscribe_of,
    validation_of,
)
from mailmatrix.program import program


class ProgressListener:
    """Feeds the engine's progress into a rich progress bar (states, then the Map Run).

    The bar is drawn from the engine's first event on: its refresh thread must not run yet
    when the run forks its worker processes (a fork with other threads running may leave a
    worker deadlocked on a lock one of them held), and the engine's events come after it.
    """

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.state_task = progress.add_task("Starting", total=None) if progress else None
        self.map_task: TaskID | None = None

    def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
        """Show which state the parent execution is in."""
        if self.progress is None or self.state_task is None:
            return
        if not event.get("type", "").endswith("StateEntered"):
            return
        self.progress.start()  # the first call starts the display; the others do nothing
        details = event.get("stateEnteredEventDetails") or {}
        name = details.get("name")
        if name and ":" not in execution_id.split(":execution:")[-1].split(":")[-1]:
            self.progress.update(self.state_task, description=f"State: {escape(name)}")

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        """Advance the bar as batches of the Map Run finish."""
        if self.progress is None:
            return
        self.progress.start()
        total = map_run.get("total") or None
        done = (map_run.get("succeeded") or 0) + (map_run.get("failed") or 0)
        if self.map_task is None:
            self.map_task = self.progress.add_task("Sending batches", total=total, sending=True)
        self.progress.update(self.map_task, completed=done, total=total)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def validation_warnings(result: dict[str, Any], *, said: Collection[str] = ()) -> list[str]:
    """The warnings validation gave the run's file (kept in validation.json beside its rejects
    report: a check given up, rows sent earlier that a new row made look wrong), but those the
    run ``said`` before it sent anything."""
    rejects = result.get("rejects")
    if not rejects:
        return []
    found = _read_json(Path(rejects).with_name("validation.json")).get("warnings") or []
    return [str(warning) for warning in found if warning not in said]


def _rejects(path: Path, shown: int) -> tuple[list[dict[str, str]], int, bool]:
    """The first ``shown`` rows of a rejects.csv, how many it has, and whether any was not
    found in the attachments folder; read as a stream (a campaign may reject a million rows).
    Rows held back as sent under another file are left to their own list (_print_held_under)."""
    first: list[dict[str, str]] = []
    count = 0
    not_found = False
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            for reject in _report_rows(stream):
                if reject.get("outcome") in HELD_UNDER:
                    continue
                count += 1
                if count <= shown:
                    first.append(reject)
                not_found = not_found or ATTACHMENT_NOT_FOUND in (reject.get("reason") or "")
    except OSError:
        return [], 0, False
    return first, count, not_found


INPUT_ERRORS = (
    "InputFileError",
    "TemplateError",
    "TemplateSetsChanged",
    "NameLikeAnother",
    "ConfigurationError",
    "NothingToSend",
)


def outcome_of(
    record: Any,
    workdir: Workdir,
    *,
    smtp: str | None = None,
    templates: Path | str | None = None,
    attachments: Path | str | None = None,
) -> dict[str, Any]:
    """The run's result as the JSON object `run --json` prints (``templates``: the folder the
    run made its letters from, None: the bundled one; ``attachments``: the folder it looked
    for the files in, None: not known)."""
    output = record.get("output")
    if isinstance(output, str):
        output = json.loads(output or "{}")
    output = output if isinstance(output, dict) else {}
    validation = validation_of(record.get("history") or [])
    campaign = validation.get("campaign", {})
    counts = dict(output.get("counts") or {})
    if not counts:  # no summary: the ledger says what it got done (0s: nothing validated)
        counts = progress_of(workdir, record["name"]) or progress_counts({}, (), {}, ())
    # An execution that failed after Summarize (publishing the summary) still has its report.
    report = output.get("report_key") or (
        report_key(campaign["id"], record["name"]) if campaign else None
    )
    report_path = workdir.bucket / report if report else None
    result = {
        "execution": record["name"],
        "execution_arn": record["executionArn"],
        "status": record["status"],
        "redrives": int(record.get("redriveCount") or 0),
        "counts": counts,
        "outbox": None if smtp else str(workdir.outbox),
        "delivered_via": redacted(smtp) if smtp else "maildir",
        "report": str(report_path) if report_path and report_path.exists() else None,
        "rejects": str(workdir.bucket / campaign["rejects_key"]) if campaign else None,
        "outcome": output.get("outcome"),
        "workdir": str(workdir.root),
        "templates": str(templates or DEFAULT_TEMPLATES),
        "templates_bundled": is_bundled(Path(templates or DEFAULT_TEMPLATES)),
        "sender": campaign.get("sender"),  # the From validation settled on (None: no campaign)
        "attachments": str(attachments) if attachments else None,
    }
    if counts.get("in_doubt") and record["status"] != "RUNNING":
        result["in_doubt"] = [row.to_dict() for row in doubts_of(workdir, record["name"])]
    if counts.get("superseded") and report_path is not None:
        summary = _read_json(report_path.with_name("summary.json"))
        result["superseded_by"] = summary.get("superseded_by")
    if record.get(RECORD_NOT_KEPT):
        result[RECORD_NOT_KEPT] = record[RECORD_NOT_KEPT]
    if record["status"] != "SUCCEEDED":
        result["error"] = record.get("error")
        result["cause"] = cause_message(record.get("cause"))
        if campaign and isinstance(result["cause"], str):  # the report where it can be opened
            key = campaign["rejects_key"]
            result["cause"] = result["cause"].replace(f" {key}", f" {result['rejects']}")
        result["failure_details"] = record.get("failure_details") or []
        stopped = [error for error, _ in getattr(record.get("stopped"), "batches", ())]
        if stopped:  # the error that stopped most batches (a halt's kind), as failure_details
            result["batch_error"] = max(set(stopped), key=stopped.count)
        if record.get("redrive_advice"):
            result["redrive_advice"] = record["redrive_advice"]
    return result


def failed_rows(counts: dict[str, Any]) -> int:
    """The rows that failed, not counting those left to a newer run of the file (Superseded:
    that run sends them, so nothing failed here)."""
    return int(counts.get("failed", 0)) - int(counts.get("superseded", 0))


def exit_code(result: dict[str, Any]) -> int:
    """0 succeeded; 5 succeeded but rows failed; 3 the file or templates are unusable;
    130 stopped; 1 any other failure, and a run that succeeded but whose letters the record of
    known workdirs could not take (the state folder broke as it ran, as it stops a run)."""
    if result["status"] == "SUCCEEDED" and result.get(RECORD_NOT_KEPT):
        return exits.RUN_FAILED
    if result["status"] == "SUCCEEDED":
        return exits.ROWS_FAILED if failed_rows(result["counts"]) else exits.OK
    if result["status"] == "ABORTED":
        return exits.STOPPED
    if result.get("error") in INPUT_ERRORS:
        return exits.INPUT_UNUSABLE
    return exits.RUN_FAILED


def print_summary(
    console: Console, result: dict[str, Any], *, templates: Path | str | None = None
) -> None:
    """Tell the operator what happened and what to do next (``templates``: the templates
    folder the run used, None: the bundled one), and last, what the record of known
    workdirs could not keep, if anything."""
    _print_outcome(console, result, templates=templates)
    for warning in result.get("validation_warnings") or []:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
    _print_choices(console, result)
    if result.get(RECORD_NOT_KEPT):
        console.print("[red]Warning: the record of known workdirs is not up to date[/red]")
        console.print(result[RECORD_NOT_KEPT], markup=False, soft_wrap=True)


def add_choices(
    result: dict[str, Any],
    record: Any,
    send_again_from: tuple[str, ...],
    corrected: tuple[int, ...],
) -> None:
    """Add the choices given to the run against rules that hold letters back (``choices``:
    --send-again-from's files, --corrected-address's rows), and whether the ledger recorded
    them: validation records them before anything is sent by them."""
    if not send_again_from and not corrected:
        return
    validated = bool(validation_of(record.get("history") or []).get("campaign"))
    result["choices"] = {
        "send_again_from": list(dict.fromkeys(send_again_from)),
        "corrected_address": sorted(set(corrected)),
        "recorded": validated,
    }


def _print_choices(console: Console, result: dict[str, Any]) -> None:
    """One line for each choice the run was given (add_choices): used and recorded in the
    ledger, or not used, the run having ended before its file passed validation."""
    choices = result.get("choices") or {}
    given = {
        "--send-again-from": ", ".join(choices.get("send_again_from") or []),
        "--corrected-address": ", ".join(map(str, choices.get("corrected_address") or [])),
    }
    for option, values in given.items():
        if not values:
            continue
        if choices.get("recorded"):
            line = f"{option} {values}: used, and recorded in the ledger ({_CHOICE_USED[option]})."
        else:
            line = (
                f"{option} {values}: not used, the run ended before its file passed validation, and"
                " nothing was recorded (a redrive of this execution validates it with the choice;"
                " a new run needs it given again)."
            )
        console.print(line, markup=False, soft_wrap=True)


# What each choice did in a run that validated its file.
_CHOICE_USED = {
    "--send-again-from": "the letters that went to the same addresses under it are not held back",
    "--corrected-address": "each row's letter goes to its corrected address, though its"
    " attachment went to the earlier one",
}


def _print_outcome(
    console: Console, result: dict[str, Any], *, templates: Path | str | None = None
) -> None:
    """The summary of the run, the failures, and what to do next."""
    counts = result["counts"]
    where = f"--workdir {shlex.quote(str(result['workdir']))}"  # for the commands printed
    if result["status"] != "SUCCEEDED" and result.get("error") in INPUT_ERRORS:
        console.print(f"[red]Nothing was sent: {escape(plain_error(result.get('error')))}[/red]")
        # It begins with the file's path: on one line, however narrow the terminal.
        console.print(str(result.get("cause") or ""), markup=False, soft_wrap=True)
        _print_rejects(console, result)
        rejects = result.get("rejects")
        if rejects and Path(rejects).is_file() and rejects not in str(result.get("cause")):
            console.print(f"Rejects: {result['rejects']}", markup=False, soft_wrap=True)
        by_set = _print_held_under(console, result)
        if _print_sent_under(console, counts, by_set) and not counts.get("rejected"):
            return  # the rows held back went already: nothing to fix
        what = {
            "ConfigurationError": "the setting",
            "NameLikeAnother": "the file's name",
        }.get(str(result.get("error")), "the file or the templates")
        console.print(f"Fix {what} and run again.")
        if result.get("hint"):
            console.print(result["hint"], markup=False, soft_wrap=True)
        return
    if result["status"] != "SUCCEEDED" and not any(counts.values()):
        # Stopped before any row was read (e.g. the mail server checked first): no table of 0s
        why = result.get("error") or ("stopped" if result["status"] == "ABORTED" else "")
        console.print(
            f"[red]Nothing was sent: {escape(plain_error(why or result['status']))}[/red]"
        )
        cause = str(result.get("cause") or "")[:SHOWN_CAUSE_CHARS]
        console.print(cause, markup=False, soft_wrap=True)  # a path in it stays whole
        if result.get("redrive_advice"):
            console.print(f"When to resume: {result['redrive_advice']}", markup=False)
        console.print(
            "Once the cause is fixed, run the file again (other settings may be given), or "
            "resume this execution with its settings:",
            markup=False,
        )
        command = f"{program()} redrive {result['execution']} {where}"
        console.print(command, markup=False, soft_wrap=True)
        return

    table = Table(title="Campaign summary", show_header=False)
    rows = [
        ("Rows in the file", "rows"),
        ("Valid", "valid"),
        (_sent_label(result), "sent"),
        ("Already sent earlier (skipped)", "skipped"),
        ("Rejected by validation", "rejected"),
        ("Duplicates (not sent)", "duplicates"),
        ("Excluded by Status", "excluded"),
        ("Already sent under another file (not sent again)", "sent_under"),
        ("In doubt under another file (not sent here)", "doubt_under"),
        ("Failed", "failed"),
        ("  of them failed in an earlier run, not tried again", "failed_earlier"),
        ("Left to a newer run of the file (not failed)", "superseded"),
        ("  of them with an attachment changed since validation", "attachment_changed"),
        ("Being sent as the run ended (in doubt)", "in_doubt"),
        ("Not attempted" if result["status"] == "SUCCEEDED" else "Not sent yet", "unsent"),
    ]
    # Rows left to a newer run of the file are its to send, not failed here (said below)
    shown = {**counts, "failed": failed_rows(counts)}
    for label, key in rows:
        if key in _SHOWN_IF_ANY and not shown.get(key):
            continue
        table.add_row(label, str(shown.get(key, 0)))
    console.print(table)
    _print_rejects(console, result)
    _print_sent_under(console, counts, _print_held_under(console, result))
    failed = failed_rows(counts)
    if failed > 0 and result.get("report"):
        _print_failures(console, Path(result["report"]), failed, _workdir_option(result))
    if counts.get("in_doubt"):
        _print_doubts(console, result)
    if counts.get("possible_duplicates"):
        console.print(
            f"[yellow]{counts['possible_duplicates']} recipient(s) may have received the "
            "email more than once (an attempt ended, or lost the service's reply, after the "
            "service had accepted it); the report marks them.[/yellow]"
        )

    execution = result["execution"]
    console.print(
        f"Execution: {execution}  (details: {program()} show {execution} {where})",
        soft_wrap=True,
        markup=False,
    )
    if result["status"] == "SUCCEEDED":
        if counts.get("sent", 0) == 0 and counts.get("skipped", 0):
            earlier = (
                f"all {counts['skipped']} valid rows were"
                if counts["skipped"] == counts.get("valid")
                else f"{counts['skipped']} of the {counts.get('valid', 0)} valid rows were"
            )
            held = counts.get("sent_under", 0) + counts.get("doubt_under", 0)
            also = (
                f"; {held} row(s) more were held back for letters of another file, not sent"
                " (said above)"
                if held
                else ""
            )
            console.print(
                f"[yellow]Nothing new sent: {earlier} already sent by an earlier run (the "
                f"ledger remembers){also}.[/yellow]"
            )
        elif not counts.get("valid") and counts.get("sent_under"):
            console.print(
                f"[yellow]Nothing new sent: the letters of all {counts['sent_under']} rows"
                " that could be sent went already to the same addresses under another file"
                " (listed above); nothing failed.[/yellow]"
            )
        if counts.get("skipped", 0):
            console.print(
                "Rows are skipped when an earlier run of a file with this name sent the same "
                "address with the same template (whatever other columns changed); to mail "
                "them again on purpose, run a copy under a new file name with "
                "--send-again-from and this file's name."
            )
        _print_where(console, result)
        retryable = _retryable(counts)
        if retryable:
            console.print(
                f"[yellow]{retryable} row(s) failed: the report"
                " gives each reason. Once the cause is fixed, send them with:[/yellow]"
            )
            console.print(
                result.get("retry_command") or f"{program()} run FILE --retry-failed",
                markup=False,
                soft_wrap=True,
            )
        if counts.get("attachment_changed"):
            console.print(f"[yellow]{attachment_changed_advice(counts['attachment_changed'])}[/]")
            console.print(
                result.get("run_again_command") or f"{program()} run FILE",
                markup=False,
                soft_wrap=True,
            )
        _print_unknown(console, result)
        by = result.get("superseded_by")
        hints = (
            other_letter_hint(
                counts, manifest=str(Path(templates or DEFAULT_TEMPLATES) / "manifest.yaml")
            ),
            attachment_of_another_hint(counts),
            superseded_hint(counts, by),
        )
        for hint in hints:
            if hint:
                console.print(f"[yellow]{escape(hint)}[/yellow]")
        if failed_rows(counts) and result.get("retry_note"):
            console.print(f"({result['retry_note']})", markup=False)
        if counts.get("rejected"):
            console.print(
                f"[yellow]{counts['rejected']} row(s) rejected: fix them and run the same"
                " command again (the rows sent now are skipped).[/yellow]"
            )
        return
    if result["status"] == "ABORTED":
        console.print(
            "[yellow]Stopped: no new batch started, and each running batch ended after the "
            "email it was on.[/yellow]"
        )
    else:
        error, cause = result.get("error"), str(result.get("cause") or "")
        console.print(f"[red]The run failed: {escape(plain_error(error))}[/red]")
        if not (generic_cause(error, cause) and result.get("failure_details")):
            console.print(cause[:SHOWN_CAUSE_CHARS], markup=False, soft_wrap=True)
    for line in result.get("failure_details") or []:  # a path in it stays whole: it is copied
        console.print(f"  {line}", markup=False, soft_wrap=True)
    _print_where(console, result)
    if result.get("redrive_advice"):
        console.print(f"When to resume: {result['redrive_advice']}", markup=False)
    if result.get("run_again_command"):  # the advice says why not a redrive
        heading, command = "Send the rest, without the drill", result["run_again_command"]
    else:
        heading, command = "Resume", f"{program()} redrive {result['execution']} {where}"
    console.print(
        f"{heading} (rows already sent are skipped):", style="bold", end=" ", highlight=False
    )
    console.print(command, markup=False, soft_wrap=True)
    _print_unknown(console, result)


def _print_doubts(console: Console, result: dict[str, Any], shown: int = 20) -> None:
    """The rows in doubt, each named, and how to settle them once the mail server's log (or the
    outbox) was checked; unsettled, they hold back the file's next run (refuse_rows_in_doubt)."""
    count = result["counts"]["in_doubt"]
    console.print(
        f"[yellow]{count} row(s) were being sent as the run ended and may have gone out; the"
        " ledger could not record them as sent (in doubt):[/yellow]"
    )
    rows = result.get("in_doubt") or []
    for row in rows[:shown]:
        console.print(f"  {doubt_line(row)}", markup=False, soft_wrap=True)
    if len(rows) > shown:
        console.print(f"  ... and {len(rows) - shown} more (settle FILE lists them all)")
    commands = result.get("settle_commands") or {}
    console.print(
        "[yellow]Check the mail server's log (or the outbox) for them. Those that arrived: no"
        " run should send them again; those that did not: the next run should send them, not"
        " as possible duplicates. Tell the ledger which:[/yellow]"
    )
    for key, placeholder in (("sent", "--sent ROWS"), ("not_sent", "--not-sent ROWS")):
        command = commands.get(key) or f"{program()} settle FILE {placeholder}"
        console.print(f"  {command}", markup=False, soft_wrap=True)
    console.print(
        "Until they are settled, no run or redrive of this file goes on, but a run with"
        " --retry-unknown, which sends them again, each marked as a possible duplicate."
    )


def add_settle_commands(result: dict[str, Any], csv_file: str, workdir: Path) -> None:
    """Add the commands that settle the result's rows in doubt (``settle_commands``: each
    with every row), for the summary and `--json`."""
    rows = [row.get("settle_as") or row["row"] for row in result.get("in_doubt") or []]
    if rows:
        result["settle_commands"] = {
            "sent": settle_command(csv_file, workdir, rows, sent=True),
            "not_sent": settle_command(csv_file, workdir, rows, sent=False),
        }


def _print_sent_under(
    console: Console, counts: dict[str, Any], by_set: Mapping[str, Counter[str]] | None = None
) -> int:
    """Say why rows were held back as their letters went, or may have gone, to the same
    addresses under another file (the reasons above name it), those held back by their set
    (``by_set``, _print_held_under's) apart, and how to send them all the same; return how
    many."""
    said = {
        "sent_under": "the same letter already went to the same address under another file"
        " (each reason above names it and when). A file of a new name is a new campaign, but a"
        " copy of a file sent already does not mail its people again. To send them again on"
        " purpose, run this file with --send-again-from OTHERFILE (recorded in the ledger);"
        " where a reason says that file's letters went to the local outbox (a trial), that is"
        " how to send them for real.",
        "doubt_under": "the same letter may already have gone to the same address under"
        " another file, where it is in doubt (each reason above names that file, and what"
        " settles it there). Once it is known not to have arrived, a run of this file sends"
        " it; or run this file with --send-again-from OTHERFILE.",
    }
    went = {"sent_under": "went", "doubt_under": "may have gone (in doubt there)"}
    for key, why in said.items():
        under = (by_set or {}).get(key) or Counter()
        same = int(counts.get(key) or 0) - under.total()
        if same > 0:
            console.print(f"[yellow]{same} row(s) not sent: {why}[/yellow]")
        if under:
            named = ", ".join(sorted(under))
            console.print(
                f"[yellow]{under.total()} row(s) not sent: a letter of the same set"
                f" {went[key]} to that address under {escape(named)} (each reason above names the"
                " set; its text may differ: a name spelt anew, say). To send them all the same on"
                f" purpose, run this file with --send-again-from {escape(min(under))}.[/yellow]"
            )
    return sum(int(counts.get(key) or 0) for key in said)


def _print_unknown(console: Console, result: dict[str, Any]) -> None:
    """What to do about the rows failed as OutcomeUnknown, if any, and the command that sends
    them: no retry or redrive sends them (they may have arrived)."""
    unknown = result["counts"].get("unknown", 0)
    if not unknown:
        return
    console.print(f"[yellow]{unknown_advice(unknown)}[/yellow]")
    console.print(
        result.get("retry_unknown_command") or f"{program()} run FILE --retry-unknown",
        markup=False,
        soft_wrap=True,
    )


# The rows of the summary's table shown only when their count is not 0.
_SHOWN_IF_ANY = (
    "excluded",
    "sent_under",
    "doubt_under",
    "failed_earlier",
    "superseded",
    "attachment_changed",
    "in_doubt",
    "unsent",
)


def _print_where(console: Console, result: dict[str, Any]) -> None:
    """Where the letters went (the outbox or the mail server), what they were made with, and
    the run's reports: for a run that did not succeed, those written, and that no report was
    when none was (a failed or stopped run may have none, its summary never reached)."""
    # Paths on one line each, however narrow the terminal or log: they are copied.
    if result.get("outbox"):
        console.print(f"Outbox:  {result['outbox']}", soft_wrap=True, markup=False)
    elif result.get("delivered_via"):
        console.print(f"Mail server: {result['delivered_via']}", soft_wrap=True, markup=False)
    _print_letters(console, result)
    succeeded = result["status"] == "SUCCEEDED"
    if succeeded or result.get("report"):
        console.print(f"Report:  {result['report']}", soft_wrap=True, markup=False)
    else:
        console.print(f"Report:  {NO_REPORT}", soft_wrap=True, markup=False)
    rejects = result.get("rejects")
    if rejects and (succeeded or Path(rejects).is_file()):
        console.print(f"Rejects: {rejects}", soft_wrap=True, markup=False)


# What the summary of a run that ended before its report was written says of it.
NO_REPORT = (
    "none written: the run ended before its summary, which writes it (a redrive that gets"
    " to the end writes it)"
)


def _print_letters(console: Console, result: dict[str, Any]) -> None:
    """Which templates folder and From the letters were made with: a run that forgot
    --templates shows it sent the bundled demo company's letters."""
    if not result.get("templates"):
        return
    console.print(f"Templates: {templates_shown(result)}", soft_wrap=True, markup=False)
    if result.get("sender"):
        console.print(f"From:    {result['sender']}", soft_wrap=True, markup=False)


def _sent_label(result: dict[str, Any]) -> str:
    """What the sent count covers: a redriven execution's count includes its earlier tries."""
    if result["status"] != "SUCCEEDED":
        return "Sent so far"
    return "Sent by this execution" if result.get("redrives") else "Sent by this run"


def _print_rejects(console: Console, result: dict[str, Any], shown: int = 20) -> None:
    rejects, count, not_found = (
        _rejects(Path(result["rejects"]), shown) if result.get("rejects") else ([], 0, False)
    )
    if not count:
        return
    console.print(f"[bold]Rows not sent, and why[/bold] ({count}):")
    where = _workdir_option(result)
    for reject in rejects:
        column = f" [{reject.get('column')}]" if reject.get("column") else ""
        outcome = reject.get("outcome") or "rejected"
        reason = _settling_where(reject.get("reason") or "", where)
        line = f"  row {reject.get('row')} {outcome}{column}: {reason}"
        console.print(line, markup=False)
    if count > shown:
        more = f"  ... and {count - shown} more in {result['rejects']}"
        console.print(more, markup=False, soft_wrap=True)
    if not_found and result.get("attachments"):
        console.print(attachments_note(Path(result["attachments"])), markup=False, soft_wrap=True)


def _print_held_under(
    console: Console, result: dict[str, Any], shown: int = 10
) -> dict[str, Counter[str]]:
    """The first rows held back as their letters went to the same addresses under another
    file, with their reasons: one list, as the summary counts them, of those validation held
    (read from the rejects report) and those held as they were sent (validation cannot tell
    a letter without a file of its own; read from the report). Return, of them, those held
    back by their set (a letter of it went, its text another): by count (``sent_under``,
    ``doubt_under``), how many under each file."""
    rows: list[dict[str, str]] = []
    count = 0
    files: list[str] = []
    by_set: dict[str, Counter[str]] = {"sent_under": Counter(), "doubt_under": Counter()}
    for key in ("rejects", "report"):
        found = 0
        for row in _csv_rows(result.get(key)):
            if _held_under(row):
                found += 1
                if len(rows) < shown:
                    rows.append(row)
                under = set_letter_file(row.get("reason") or "")
                if under is not None:
                    by_set["doubt_under" if _in_doubt_under(row) else "sent_under"][under] += 1
        count += found
        files += [str(result[key])] if found else []
    if not rows:
        return by_set
    counts = result.get("counts", {})
    went = "went already, or may have," if counts.get("sent_under") else "may have gone"
    went = went if counts.get("doubt_under") else "went already,"
    console.print(f"[bold]Rows not sent: their letters {went} under another file[/bold] ({count}):")
    where = _workdir_option(result)
    for row in rows:
        said = DOUBT_UNDER if _in_doubt_under(row) else row.get("outcome")
        said = said or SENT_UNDER  # a row of the report (held as it was sent) has no outcome
        reason = naming_workdir(_naming_options(row.get("reason") or "", result), where)
        console.print(f"  row {row.get('row')} {said}: {reason}", markup=False)
    if count > len(rows):
        more = f"  ... and {count - len(rows)} more in {' and '.join(files)}"
        console.print(more, markup=False, soft_wrap=True)
    return by_set


def _in_doubt_under(row: Mapping[str, str]) -> bool:
    """Whether a held row (_held_under) was held as its letter may have gone under another
    file, in doubt there: as it was sent, or by validation (it may have been sent)."""
    return row.get("code") == DOUBT_UNDER_CODE or row.get("outcome") == MAYBE_SENT_UNDER


def _naming_options(reason: str, result: Mapping[str, Any]) -> str:
    """``reason`` with the retry it names for another file written whole, as that file runs
    in the run's workdir (naming_run_options)."""
    return naming_run_options(reason, Workdir(Path(str(result.get("workdir") or "."))))


def _settling_where(reason: str, where: str) -> str:
    """``reason`` with the run's ``--workdir W`` (_workdir_option: "" where it is the default)
    added to the commands it names when it names a `settle` (a letter in doubt under another
    file); else as it is."""
    return naming_workdir(reason, where) if "`settle " in reason else reason


def _workdir_option(result: Mapping[str, Any]) -> str:
    """``--workdir W`` for the commands a held row's reason names (`settle F`), where the run's
    workdir is not the default those commands take; else ""."""
    try:
        default = default_workdir()
    except MailMatrixError:  # a MAILMATRIX_WORKDIR the commands could not use either
        default = None
    workdir = Path(str(result.get("workdir") or "."))
    if default is not None and workdir.resolve() == default.resolve():
        return ""
    return f"--workdir {shlex.quote(str(workdir))}"


def _held_under(row: dict[str, str]) -> bool:
    """Whether a row of the rejects report (held by validation) or of the report (held as it
    was sent) was held back as its letter went, or may have gone, to its address under another
    file."""
    held = row.get("code") in (SENT_UNDER_CODE, DOUBT_UNDER_CODE)
    return (row.get("status") == "skipped" and held) or row.get("outcome") in HELD_UNDER


def _report_rows(stream: TextIO) -> Iterator[dict[str, str]]:
    """The rows of a report read from ``stream``, with the delimiter it was written with (the
    recipients file's)."""
    header = stream.readline()
    rows = itertools.chain([header], stream)
    return csv.DictReader(rows, delimiter=report_delimiter(header))


def _csv_rows(path: Path | str | None) -> Iterator[dict[str, str]]:
    """The rows of a report (rejects.csv, report.csv) as a stream; none when it cannot be
    read (a run that failed may have written neither)."""
    if not path:
        return
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as stream:
            yield from _report_rows(stream)
    except OSError:
        return


def _print_failures(
    console: Console, report: Path, failed: int, where: str = "", shown: int = 10
) -> None:
    """The first rows that failed at sending, with their reasons, read from the report (not
    those left to a newer upload of the file: one hint says it for them all); ``where``: the
    run's --workdir, for the `settle` a reason names, where it is not the default."""
    rows = []
    try:
        with report.open(encoding="utf-8-sig", newline="") as stream:
            for row in _report_rows(stream):
                if row.get("status") == "failed" and row.get("code") != SUPERSEDED:
                    rows.append(row)
                    if len(rows) == shown:
                        break
    except OSError:
        return
    if not rows:
        return
    console.print(f"[bold]Rows that failed at sending[/bold] ({failed}):")
    for row in rows:
        reason = _settling_where(_shown_reason(row.get("reason") or ""), where)
        console.print(f"  row {row.get('row')} [{row.get('code')}]: {reason}", markup=False)
    if failed > len(rows):
        more = f"  ... and {failed - len(rows)} more in {report}"
        console.print(more, markup=False, soft_wrap=True)


# Long enough for the reasons that end with what to do (OtherLetterSent, AttachmentChanged);
# a server's long refusal is cut.
SHOWN_REASON_CHARS = 600


def _shown_reason(reason: str, limit: int = SHOWN_REASON_CHARS) -> str:
    """``reason`` on one line of at most ``limit`` characters: a longer one loses its middle,
    not its end, where a reason says what to do (the per-row report has the rest)."""
    text = " ".join(reason.split())
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    tail = limit - 3 - head
    return f"{text[:head]} … {text[-tail:]}"


@click.command("run", cls=JsonCommand)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--attachments",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of the PDFs named in Attachment_File (default: attachments/ beside the CSV; "
    "not needed when no row attaches a file).",
)
@click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Template folder with its manifest (default: the bundled templates/).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_workdir,
    show_default=DEFAULT_WORKDIR_TEXT,
    help="Where the local bucket, outbox, ledger and executions live; the ledger there is "
    "what keeps a rerun from mailing anyone twice, so use the same one for a file's runs.",
)
@click.option(
    "--sender",
    callback=check_sender,
    help="From address, e.g. 'Talent <talent@example.com>'.",
)
@click.option(
    "--smtp",
    "smtp_url",
    callback=lambda ctx, param, value: _check_smtp(value),
    help="Deliver through this SMTP server instead of the outbox "
    "(smtp://, smtp+starttls:// or smtps://, optionally user:password@).",
)
@click.option(
    "--send-rate",
    type=click.FloatRange(min=0),
    callback=check_send_rate,
    help="Messages per second for the whole campaign (0: as fast as it goes; else at "
    "least 0.0167, one a minute).",
)
@click.option(
    "--faults",
    callback=lambda ctx, param, value: _check_faults(value),
    help="Drill: fail on purpose, e.g. throttle=0.2,transient=0.05,crash-after=500.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Batches sent at once (default 4; with --send-rate, one per core).",
)
@click.option("--batch-size", type=click.IntRange(1, 1000), help="Rows per batch.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Send again the rows of this file that failed for good in earlier runs (after "
    "fixing the cause, e.g. the mail server), except those failed as OutcomeUnknown. Rows "
    "already sent are still skipped.",
)
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Send again the rows of this file that failed as OutcomeUnknown, and those an "
    "earlier run left in doubt, each marked as a possible duplicate (they may have arrived: "
    "check first; settle the rows in doubt that did, and take the others that did out of the "
    "file). Without it, a run of a file with rows in doubt is refused.",
)
@send_again_option(SEND_AGAIN_HELP)
@corrected_address_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def run(
    csv_file: Path,
    attachments: Path | None,
    templates: Path | None,
    workdir: Path,
    sender: str | None,
    smtp_url: str | None,
    send_rate: float | None,
    faults: str | None,
    concurrency: int | None,
    batch_size: int | None,
    retry_failed: bool,
    retry_unknown: bool,
    send_again_from: tuple[str, ...],
    corrected: tuple[int, ...],
    as_json: bool,
) -> None:
    """Validate CSV_FILE and send one email per valid row, on this machine."""
    console = RunConsole(stderr=as_json)
    progress = None if as_json or not console.is_terminal else progress_display(console)
    listener = LedgerWaitNotices(notice_console(progress), ProgressListener(progress))
    stop_on_signals()
    warnings = header_warnings(csv_file, templates or DEFAULT_TEMPLATES)
    warnings += url_warnings(smtp_url, PASSWORD_VARIABLE in os.environ)
    for warning in warnings:  # before anything is sent: the run may still be stopped
        console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
    given = {
        "--templates": templates,
        "--attachments": attachments,
        "--sender": sender_of(sender),
        "--smtp": smtp_url,
        "--send-rate": send_rate,
        "--concurrency": concurrency,
        "--batch-size": batch_size,
    }
    try:
        if progress is None:
            console.print(
                f"Running {csv_file} (workdir {workdir}) ...", soft_wrap=True, markup=False
            )
        if send_again_from or corrected:  # before anything is sent or recorded
            folder = attachments or csv_file.parent / "attachments"
            check_choices(Workdir(workdir), csv_file, send_again_from, corrected, folder)
        in_doubt = None
        if not retry_unknown:  # their letters may have arrived: the operator says
            chosen = [f"--send-again-from {shlex.quote(name)}" for name in send_again_from]
            chosen += [f"--corrected-address {row}" for row in corrected]
            flags = ("--retry-unknown", *chosen)
            again = run_command(str(csv_file), workdir, given, unsubscribe_of(), *flags)
            in_doubt = functools.partial(refuse_rows_in_doubt, Workdir(workdir), csv_file, again)
        record = run_campaign(
            csv_file,
            workdir=workdir,
            templates_dir=templates,
            attachments_dir=attachments,
            mailer=smtp_url,
            sender=sender,
            send_rate=send_rate,
            faults=faults,
            max_concurrency=concurrency,
            batch_size=batch_size,
            listener=listener,
            retry_failed=retry_failed,
            retry_unknown=retry_unknown,
            send_again_from=send_again_from,
            corrected=corrected,
            before_sending=in_doubt,
        )
    except MailMatrixError as error:
        stop_display(progress)
        said = with_notes(error, ledger_remedy(error))
        refusals = (
            DeliveryChanged
            | ChoiceRefused
            | NoEarlierRun
            | DemoTemplates
            | PlaceholderSender
            | PlaceholderConstant
            | BadWorkdir
            | LedgerLost
            | NameLikeAnother
            | DeliveriesDamaged
            | RowsInDoubt
        )
        unusable = isinstance(error, InputFileError | ConfigurationError)
        code = exits.INPUT_UNUSABLE if unusable else exits.RUN_FAILED
        code = exits.USAGE if isinstance(error, refusals) else code
        refuse("run", type(error).__name__, said, code, as_json=as_json)
    except OSError as error:  # disk full, a file size limit, permissions
        stop_display(progress)
        said = with_notes(error, os_error_hint(error, workdir))
        refuse("run", "OSError", said, exits.RUN_FAILED, as_json=as_json)
    except KeyboardInterrupt:  # the engine turns one inside an execution into ABORTED
        stop_display(progress)
        stopped_outside_the_engine("run", workdir, as_json=as_json)
    finally:
        stop_display(progress)
        listener.close()

    result = outcome_of(
        record,
        Workdir(workdir),
        smtp=smtp_url,
        templates=templates,
        attachments=attachments or csv_file.parent / "attachments",
    )
    name_the_file(result, str(csv_file))
    add_settle_commands(result, str(csv_file), workdir)
    # As the run used them: with the files its earlier runs were told to send again
    add_choices(result, record, *run_choices(Workdir(workdir), result["execution"]))
    result["warnings"] = warnings
    result["validation_warnings"] = validation_warnings(result, said=warnings)
    if result["counts"].get("failed"):
        result.update(
            retry_commands(str(csv_file), workdir, given, unsubscribe_of(), result["counts"])
        )
    add_run_without_drill(result, str(csv_file), workdir, given, unsubscribe_of())
    hints = (
        bundled_templates_hint(str(result.get("error"))) if templates is None else None,
        missing_columns_hint(str(result.get("cause") or "")),
    )
    hint = " ".join(filter(None, hints))
    if hint and result["status"] != "SUCCEEDED":
        result["hint"] = hint
    code = exit_code(result)
    with output_after_hangup():
        if as_json:
            click.echo(json.dumps(add_action(result, code), ensure_ascii=False, indent=2))
        else:
            print_summary(console, result, templates=templates)
    sys.exit(code)


def add_action(result: dict[str, Any], code: int) -> dict[str, Any]:
    """``result`` as `--json` prints it, with what a script branches on (failing.py): ``ok``,
    ``exit_code`` (``code``), ``action`` and, where the run failed, ``failure``: the batches'
    error where they stopped it (a halt: AccountSendingHalted, OutcomesUnknown, ...), else the
    execution's. Its ``failed`` count leaves out the rows left to a newer run (``superseded``):
    nothing failed there, and a monitor alerting on failed rows must not fire."""
    failed = failed_rows(result["counts"])  # once: the counts below are already without them
    result["counts"] = {**result["counts"], "failed": failed}
    kind = str(result.get("batch_error") or result.get("error") or "")
    message = str(result.get("cause") or "")
    if result["counts"].get("in_doubt") and code != exits.OK:
        kind, message = kind or "RowsInDoubt", message or "rows are in doubt: settle them"
    elif code == exits.ROWS_FAILED:
        kind, message = "RowsFailed", f"{failed} row(s) failed"
    result.update(ok=code == exits.OK, exit_code=code, action=action_of(kind, code, message))
    if code != exits.OK:
        result["failure"] = {"kind": kind or result["status"], "message": message}
    return result


def ledger_remedy(error: MailMatrixError, redrive: str | None = None) -> str | None:
    """What a ledger that cannot be written (LedgerNotWritten), met outside the execution
    (opened as the run starts or ends), says, and then what to do; for a redrive, ending
    with its ``redrive`` command. None for other errors."""
    if not isinstance(error, LedgerNotWritten):
        return None
    text = str(error).rstrip(".")
    then = "run the same command again; the rows it holds as sent are skipped."
    if redrive is not None:
        then = f"redrive again (the rows it holds as sent are skipped): {redrive}"
    return (
        f"{text}. The ledger records each email sent, before and after it is sent:"
        f" {write_remedy(text)}, then {then}"
    )


def with_notes(error: BaseException, said: str | None = None) -> str:
    """What ``error`` says (``said``: as told), and then its notes: what a run that raised it
    as it ended could not keep (see local._note_not_kept)."""
    return "\n".join([said or str(error), *getattr(error, "__notes__", [])])


def name_the_file(result: dict[str, Any], csv_file: str) -> None:
    """Name the file in the result's cause as it was given (``csv_file``), not by its key in
    the local bucket (``incoming/NAME.csv``), which the handlers know it by."""
    cause = result.get("cause")
    if isinstance(cause, str):
        result["cause"] = cause.replace(f"{incoming_key(Path(csv_file))}:", f"{csv_file}:")


def retry_commands(
    csv_file: str,
    workdir: Path,
    given: dict[str, Any],
    unsubscribe: str | None,
    counts: dict[str, int],
) -> dict[str, str]:
    """The commands the summary prints for the rows failed as ``counts`` says: the one that
    sends the file's failed rows again (retry_command), those failed as OutcomeUnknown
    (retry_unknown_command), and the file as it is now (run_again_command, for rows failed
    as AttachmentChanged); none for failures no retry sends (OtherLetterSent,
    AttachmentOfAnother, Superseded). Each has every option ``given`` that the campaign's
    letters and delivery came from: a retry without them is refused (check_campaign_way),
    or would send other letters. The SMTP password is left out (retry_note says so)."""
    wanted = {
        "retry_command": (_retryable(counts) > 0, ("--retry-failed",)),
        "retry_unknown_command": (counts.get("unknown", 0) > 0, ("--retry-unknown",)),
        "run_again_command": (counts.get("attachment_changed", 0) > 0, ()),
    }
    commands = {
        key: run_command(csv_file, workdir, given, unsubscribe, *flags)
        for key, (needed, flags) in wanted.items()
        if needed
    }
    smtp = given.get("--smtp")
    if commands and smtp and redacted(smtp) != smtp:
        commands["retry_note"] = (
            "the SMTP password is left out: set MAILMATRIX_SMTP_PASSWORD, or put it back "
            "into the URL"
        )
    return commands


def _retryable(counts: dict[str, int]) -> int:
    """The failed rows `run --retry-failed` sends: those not counted apart (FAILED_APART)."""
    return max(0, counts.get("failed", 0) - sum(counts.get(name, 0) for name in FAILED_APART))


def add_run_without_drill(
    result: dict[str, Any],
    csv_file: str,
    workdir: Path,
    given: dict[str, Any],
    unsubscribe: str | None,
) -> None:
    """When only a drill's used-up quota stopped the run, add the run of the file without the
    drill (``run_again_command``), which the advice offers instead of a redrive: a redrive
    goes on with the drill."""
    if result.get("redrive_advice") == DRILL_QUOTA_ADVICE:
        result["run_again_command"] = run_command(csv_file, workdir, given, unsubscribe)


def os_error_hint(error: OSError, workdir: Path) -> str:
    """What an OSError that ended a run (or a redrive) means, and what to do next: the file
    it met, why in plain words, and how to see what ran."""
    shown = shlex.quote(str(workdir))
    where = Path(error.filename).resolve() if error.filename else None
    if where is not None and where.is_relative_to(workdir.resolve()):
        once = (
            f"{NOT_SENT_TWICE} First {NO_ROOM_REMEDY}, then"
            if no_room(error)
            else "Once it can be written (access given)"
        )
        return (
            f"cannot write the workdir {workdir}: {error.filename}: {write_fault(error)}. {once}:"
            f" if the run had begun, `{program()} executions --workdir {shown}` shows it, with"
            " what it sent"
            f" and what is in doubt, and `{program()} redrive ID --workdir {shown}` sends the"
            " rest (rows already sent are skipped); if it lists none, run the file again."
        )
    what = f"{error.filename}: {write_fault(error)}" if error.filename else write_fault(error)
    return f"{what}. Fix it, then `{program()} executions --workdir {shown}` shows what ran."


def stop_on_signals() -> None:
    """Take SIGTERM, and SIGHUP (the terminal closed), as Ctrl-C: the engine aborts the
    execution, batches end after the email they are on, and a redrive resumes it. A SIGHUP
    ignored from the start (``nohup``) stays ignored. Each also records the stop for the
    engine (engine.stopping), which sees it even where Python dropped the KeyboardInterrupt."""
    stopping.clear()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    hangup = getattr(signal, "SIGHUP", None)  # POSIX
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        signal.signal(hangup, _interrupt)


_hung_up: list[int] = []  # SIGHUP, once it came


def _interrupt(signum: int, frame: Any) -> None:
    if signum == getattr(signal, "SIGHUP", None):
        _hung_up.append(signum)
    stopping.request()
    raise KeyboardInterrupt


def stopped_outside_the_engine(command: str, workdir: Path, *, as_json: bool = False) -> NoReturn:
    """Exit as stopped (130) for a stop that came before the engine ran an execution, or
    after it ended: say so (with ``as_json``, as one JSON object on standard output), and how
    to see whether one began."""
    shown = shlex.quote(str(workdir))
    said = (
        f"stopped (Ctrl-C, SIGTERM or SIGHUP) outside an execution's"
        f" run: `{program()} executions --workdir {shown}` shows whether one began, and"
        f" `{program()} redrive ID` sends the rest of one that was stopped"
    )
    with output_after_hangup():
        refuse(command, "Stopped", said, exits.STOPPED, as_json=as_json)
    sys.exit(exits.STOPPED)  # the output went nowhere (a terminal hung up): the code stands


def stop_display(progress: Progress | None) -> None:
    """Take the progress display off the terminal (which a SIGHUP may have closed)."""
    if progress is not None:
        with output_after_hangup():
            progress.stop()


@contextlib.contextmanager
def output_after_hangup() -> Iterator[None]:
    """Print the result; after a SIGHUP the terminal may be gone, and writing to it fails, as
    it does to a pipe whose reader has gone (``| head -1``): then what is left of the output
    goes nowhere, and the command still exits with the run's code (not a traceback, nor
    click's exit 1 for a closed pipe, which reads as a failed run)."""
    try:
        yield
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            stdout_to_nowhere()
            return
        if not _hung_up:
            raise
        sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def _check_faults(value: str | None) -> str | None:
    """Refuse a malformed drill spec before anything runs."""
    if value:
        from mailmatrix.adapters.mailer_faults import parse_spec

        try:
            parse_spec(value)
        except MailMatrixError as error:
            raise click.BadParameter(error.message) from None
    return value


def _check_smtp(value: str | None) -> str | None:
    """Refuse a URL that names no SMTP server before anything runs."""
    if value:
        from urllib.parse import urlparse

        try:
            url = urlparse(value)
        except ValueError as error:  # e.g. an unclosed [ of an IPv6 address
            raise click.BadParameter(
                f"{redacted(value)}: not a URL ({error}): expected smtp://HOST[:PORT], "
                "smtp+starttls://... or smtps://..."
            ) from None
        if url.scheme not in ("smtp", "smtps", "smtp+starttls") or not url.hostname:
            raise click.BadParameter(
                f"{redacted(value)}: expected smtp://HOST[:PORT], smtp+starttls://... or smtps://..."
            )
        from mailmatrix.adapters.mailer_smtp import port_problem, query_problem

        problem = port_problem(url) or query_problem(url.query)
        if problem:
            raise click.BadParameter(f"{redacted(value)}: {problem}")
        if url.password == "***":
            raise click.BadParameter(
                f"{value}: '***' is how MailMatrix masks a password when it prints a URL; give "
                "the real one, or leave it out (smtp://USER@HOST) and set MAILMATRIX_SMTP_PASSWORD"
            )
    return value


commands: list[click.Command] = [run]
