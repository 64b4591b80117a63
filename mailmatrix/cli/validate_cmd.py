"""`mailmatrix validate FILE.csv`: check a recipients file alone and print what would be sent."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import mailmatrix
from mailmatrix.adapters.storage_local import LocalStorage, check_upload_name, open_recipients
from mailmatrix.cli import exits
from mailmatrix.cli.console import RunConsole, reader_may_go
from mailmatrix.cli.defaults import default_workdir
from mailmatrix.cli.failing import JsonCommand, action_of, failure
from mailmatrix.cli.options import check_sender, corrected_option, send_again_option
from mailmatrix.core.addresses import first_real
from mailmatrix.core.attachments import ATTACHMENT_NOT_FOUND, AttachmentIndex
from mailmatrix.core.contents import StoredContents
from mailmatrix.core.recipients import DELIMITER_NAMES, IntakeReport, IntakeRules
from mailmatrix.core.recipients import validate_recipients as run_intake
from mailmatrix.core.rejects import write_rejects
from mailmatrix.core.report import (
    ATTACHMENT_OF_ANOTHER,
    HELD_UNDER,
    MAYBE_SENT_UNDER,
    SENDING_UNDER,
    SENT_UNDER,
    naming_workdir,
    other_letter_hint,
    set_letter_file,
    went_to_outbox,
)
from mailmatrix.core.send import placeholder_constant, placeholder_sender, sender_problem
from mailmatrix.errors import (
    ChoiceRefused,
    ConfigurationError,
    InputFileError,
    MailMatrixError,
    TemplateError,
)
from mailmatrix.jobs import (
    load_templates,
    placeholder_constant_refusal,
    placeholder_sender_refusal,
    row_recipients,
)
from mailmatrix.private import private_files
from mailmatrix.settings import Settings

ATTACHMENTS_PREFIX = "attachments/"
TEMPLATES_PREFIX = "templates/"
SHOWN_PROBLEMS = 50
SHOWN_COLUMNS = 50  # of the header, on the Columns line (--json lists them all)


def bundled_templates() -> Path:
    """The repository's templates/ folder, beside the package."""
    return Path(mailmatrix.__file__).parents[1] / "templates"


def bundled_templates_hint(error_name: str) -> str | None:
    """What to do when the bundled templates, used as no --templates was given, do not fit a
    file (``error_name``: the error's class name), else None."""
    if error_name != "TemplateError":  # not TemplateSetsChanged: that is about earlier runs
        return None
    return (
        f"These are the bundled templates ({bundled_templates()}), used as no --templates was"
        " given: for a file with other columns, give a folder of your own with --templates DIR"
        " (manifest.yaml and a folder per template set, as in the bundled one)."
    )


# How the templates' check names the fields a template uses that the file has no column for
# (mailmatrix.core.templates).
_NOT_COLUMNS = "— not CSV columns"


def missing_columns_hint(message: str) -> str | None:
    """What to do about fields the templates use that the file lacks altogether, when
    ``message`` (a TemplateError's) names such; else None."""
    if _NOT_COLUMNS not in message:
        return None
    return (
        "Add each column named there to the file, or take it out of the template that uses it:"
        " a guard such as {% if Column %} does not help when the file has no such column at"
        " all."
    )


def templates_shown(letters: dict[str, Any]) -> str:
    """The templates folder of ``letters`` (``templates``, ``templates_bundled``) as a summary
    names it: the bundled one as the demo's, so that a forgotten --templates shows."""
    if letters.get("templates_bundled"):
        return f"bundled demo templates ({letters['templates']})"
    return str(letters["templates"])


def attachments_note(folder: Path) -> str:
    """Where the files of rows rejected as not found were looked for: said once, after the
    rows, rather than in every row's reason (a wrong --attachments rejects every row)."""
    links_out = 0
    try:
        real = os.path.realpath(folder)
        with os.scandir(folder) as entries:
            found = list(entries)
        state = "" if any(entry.is_file() for entry in found) else ", which holds no file"
        for entry in found:
            target = os.path.realpath(entry.path) if entry.is_symlink() else real
            links_out += os.path.commonpath([target, real]) != real
    except (OSError, ValueError):
        state = ", which does not exist"
    said = (
        f"Files named in Attachment_File were looked for in {folder}{state}; if they are in"
        " another folder, give it with --attachments DIR."
    )
    if links_out:  # not found though there: listing leaves such links out
        said += (
            f" {links_out} of its entries {'links' if links_out == 1 else 'link'} to files"
            " outside it, which are not followed"
            " (a letter must not leave its folder): copy those files in."
        )
    return said


def folder_storage(folder: Path, prefix: str) -> LocalStorage:
    """``folder`` served under ``prefix`` exactly as a local run serves it.

    The same listing, Unicode normalisation and refusal of links out of the folder, so
    `validate` and `preview` accept what `run` accepts and nothing else.
    """
    return LocalStorage(folder, mounts={prefix: folder})


def load_folder_catalog(folder: Path) -> Any:
    """Read every template file under ``folder`` and build the catalog."""
    storage = folder_storage(folder, TEMPLATES_PREFIX)
    if not any(storage.list(TEMPLATES_PREFIX)):
        raise TemplateError(f"{folder}: no templates found")
    return load_templates(storage, TEMPLATES_PREFIX)


def folder_index(folder: Path) -> AttachmentIndex:
    """List the attachments folder once as an AttachmentIndex."""
    listing = folder_storage(folder, ATTACHMENTS_PREFIX).list(ATTACHMENTS_PREFIX)
    return AttachmentIndex.from_listing(listing, prefix=ATTACHMENTS_PREFIX)


def folder_contents(folder: Path) -> StoredContents:
    """The files of the attachments folder, read to compare their contents."""
    return StoredContents(folder_storage(folder, ATTACHMENTS_PREFIX), ATTACHMENTS_PREFIX)


@click.command("validate", cls=JsonCommand)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--attachments",
    "attachments_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the attachment files (default: 'attachments' beside the CSV).",
)
@click.option(
    "--templates",
    "templates_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Templates folder with manifest.yaml (default: the bundled templates).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the rejects report (CSV, safe to open in a spreadsheet) to this file.",
)
@click.option(
    "--check-deliverability", is_flag=True, help="Also look up each domain in DNS (slower)."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Check the file against its earlier runs in this workdir (the one `run` uses), as "
    "`run` does: the same templates and attachments folders and sender, no template set they "
    "used gone. "
    "Default: the workdir `run` uses without --workdir, when it exists.",
)
@click.option(
    "--sender",
    callback=check_sender,
    help="From address, as `run --sender` takes it (default: MAILMATRIX_SENDER, then the "
    "manifest's sender).",
)
@send_again_option(
    "As `run --send-again-from` takes it: count the letters that went to the same "
    "addresses under OTHERFILE as sent again."
)
@corrected_option(
    "As `run --corrected-address` takes it: count row ROW's letter, held back as another "
    "recipient's (AttachmentOfAnother), as sent to its corrected address."
)
def validate_command(
    csv_file: Path,
    attachments_dir: Path | None,
    templates_dir: Path | None,
    as_json: bool,
    rejects_path: Path | None,
    check_deliverability: bool,
    workdir: Path | None,
    sender: str | None,
    send_again_from: tuple[str, ...],
    corrected: tuple[int, ...],
) -> None:
    """Check FILE.csv as a campaign would: encoding, columns, every row, attachments."""
    attachments_dir = attachments_dir or csv_file.parent / "attachments"
    templates_dir = templates_dir or bundled_templates()
    by_default = workdir is None
    if workdir is None and default_workdir().is_dir():
        workdir = default_workdir()  # where `run` without --workdir finds the earlier runs
    console = RunConsole(highlight=False, soft_wrap=True)
    try:
        # The limit `run` holds messages to (MAILMATRIX_MAX_MESSAGE_BYTES; SES's by default).
        limit = Settings.from_env().max_message_bytes
        rules = IntakeRules(max_message_bytes=limit, check_deliverability=check_deliverability)
        check_upload_name(csv_file)  # as `run` refuses it, before it copies the file
        catalog = load_folder_catalog(templates_dir)
        run_sender, origin = check_run_sender(sender, catalog)
        index = folder_index(attachments_dir)
        if (send_again_from or corrected) and workdir is not None:
            from mailmatrix.choices import check_choices
            from mailmatrix.local import Workdir

            check_choices(Workdir(workdir), csv_file, send_again_from, corrected, attachments_dir)
        from mailmatrix.local import read_known_record

        known = read_known_record()  # once, for the forecast and the earlier runs
        forecast = _forecast(workdir, csv_file, catalog.names, send_again_from, corrected, known)
        contents = folder_contents(attachments_dir)
        real = RealRecipients(
            templates_dir,
            run_sender,
            catalog.context,
            forecast.see if forecast is not None else None,
        )
        try:
            with open_recipients(csv_file) as stream:
                report = run_intake(
                    stream,
                    source=str(csv_file),
                    catalog=catalog,
                    attachments=index,
                    rules=rules,
                    emit=real.see,
                    contents=contents,
                    earlier=forecast.earlier_files(index) if forecast is not None else None,
                    sent_files=(
                        forecast.sent_files(index, contents) if forecast is not None else None
                    ),
                    mailed=forecast.earlier_recipients() if forecast is not None else None,
                    sets=forecast.earlier_sets() if forecast is not None else None,
                )
            if forecast is not None:  # other workdirs' ledgers that could not be read
                report.warnings += [*forecast.unchecked, *forecast.notes()]
        finally:
            if forecast is not None:
                forecast.close()
    except (MailMatrixError, OSError) as error:
        misused = exits.USAGE if isinstance(error, ChoiceRefused) else None  # as `run` exits
        _fail(error, csv_file, as_json, bundled=templates_dir == bundled_templates(), code=misused)
    with report:  # its lists are spooled to temporary files: closed when done
        if rejects_path is not None:
            try:
                with private_files(), rejects_path.open("wb") as out:  # rows of people
                    write_rejects(report, out)
            except OSError as error:  # the option's file, not the CSV: a bad --rejects
                where = f"--rejects {rejects_path}: cannot write the rejects report"
                _fail(error, csv_file, as_json, bundled=False, where=where, code=exits.USAGE)
        earlier, refused = _earlier_runs(
            workdir, csv_file, templates_dir, attachments_dir, sender, catalog, known
        )
        earlier["default_workdir"] = by_default
        if by_default and workdir is None:
            earlier["workdir"] = str(default_workdir())
        if forecast is not None and earlier.get("found") and not earlier.get("error"):
            earlier.update(_what_run_would_do(forecast, report))
            if earlier["halt"] and earlier["halt"]["holds"]:
                refused = exits.RUN_FAILED  # as `run` fails at once
        if workdir is not None and not earlier.get("error"):
            earlier.update(_doubts_and_runs(workdir, csv_file))

        need = catalog.attachment_need(report.header)
        missing = None  # as `run` refuses the file, saying so
        if need and not index and not attachments_dir.is_dir():
            from mailmatrix.local import attachments_missing

            missing = attachments_missing(attachments_dir, need)
        from mailmatrix.local import is_bundled

        letters: dict[str, Any] = {
            "templates": str(templates_dir),
            "templates_bundled": is_bundled(templates_dir),
            "sender": run_sender,
            "sender_from": origin,
            "attachments": str(attachments_dir),
        }
        refusal = real.refusal(csv_file.name, origin)
        if refusal is not None:  # as `run --smtp` (and SES) would refuse the file
            said = {"error": type(refusal).__name__, "message": refusal.message}
            letters["server_refusal"] = said
        # Rows `run` would report failed (again): it would end with 5, so a script that
        # checks validate's status before running is told now.
        failing = ("failed", "unknown", "other_letter", "attachment_of_another")
        code = exits.ROWS_FAILED if any(earlier.get(f"{k}_before") for k in failing) else exits.OK
        if refused is not None:
            code = refused  # as `run` refuses the file
        elif not report.valid and not report.sent_under:
            code = exits.INPUT_UNUSABLE  # as `run` fails with NothingToSend
        elif report.rejected:
            code = exits.ROWS_REJECTED
        if as_json:
            found = report.to_dict() | letters
            found["earlier_runs"] = earlier
            if missing:
                found["attachments_missing"] = missing
            kind = str(earlier.get("error") or "") if refused is not None else ""
            message = str(earlier.get("message") or "") if refused is not None else ""
            found.update(ok=code == exits.OK, exit_code=code, action=action_of(kind, code))
            if code != exits.OK:  # as run's --json says it (failing.py)
                found["failure"] = _failure_of(kind, message, code, report)
            with reader_may_go():
                click.echo(json.dumps(found, ensure_ascii=False))
        else:
            _show(console, report, rejects_path, earlier, letters, missing)
        sys.exit(code)


def _failure_of(kind: str, message: str, code: int, report: IntakeReport) -> dict[str, str]:
    """The ``failure`` of validate's --json output that exits ``code``: the refusal run would
    meet (``kind``, ``message``), else what the rows are."""
    if kind:
        return {"kind": kind, "message": message}
    if code == exits.INPUT_UNUSABLE:
        return {"kind": "NothingToSend", "message": "no row is valid: nothing would be sent"}
    if code == exits.ROWS_REJECTED:
        rejected = f"{len(report.rejected)} row(s) rejected"
        return {"kind": "RowsRejected", "message": f"{rejected}: the file's rejects say why"}
    said = "rows an earlier run failed would fail again: see earlier_runs"
    return {"kind": "RowsFailed", "message": said}


class RealRecipients:
    """Watches the valid rows (``see``, passing each on to ``then``) for the first recipient
    outside the domains reserved for examples when the letters must not reach one through a
    mail server: the demo templates (in ``templates_dir``), a placeholder ``sender``, or a
    placeholder among the templates' constants (``context``)."""

    def __init__(
        self,
        templates_dir: Path,
        sender: str,
        context: dict[str, Any],
        then: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        from mailmatrix.local import is_demo

        self.templates_dir = templates_dir
        self.sender = sender
        self.demo = is_demo(templates_dir)
        self.placeholder = placeholder_sender(sender)
        self.constant = placeholder_constant(context)
        self.guarded = self.demo or self.placeholder or self.constant is not None
        self.then = then
        self.found: tuple[int, str, str] | None = None

    def see(self, row: dict[str, Any]) -> None:
        """Look at one valid row."""
        if self.then is not None:
            self.then(row)
        if self.guarded and self.found is None:
            self.found = first_real(row_recipients(row))

    def refusal(self, name: str, origin: str) -> MailMatrixError | None:
        """How `run --smtp` would refuse the file ``name``, its sender from ``origin``
        (DemoTemplates, PlaceholderSender, PlaceholderConstant), validate taking no --smtp;
        None: it would not."""
        if self.found is None:
            return None
        from mailmatrix.local import demo_templates_refusal

        via = "`run --smtp`"
        if self.demo:
            return demo_templates_refusal(self.templates_dir, self.found, name=name, via=via)
        manifest = self.templates_dir / "manifest.yaml"
        if self.constant is not None and not self.placeholder:
            return placeholder_constant_refusal(
                self.constant,
                self.found,
                name=name,
                via=via,
                manifest=str(manifest),
                then="then validate again",
            )
        own = "Give your own From address with --sender (or MAILMATRIX_SENDER)"
        if origin not in ("--sender", "MAILMATRIX_SENDER"):
            own = f"Set your own From address as 'sender' in {manifest}, or give it with --sender"
        return placeholder_sender_refusal(
            self.sender, origin, self.found, name=name, via=via, own=f"{own}, then validate again"
        )


def check_run_sender(given: str | None, catalog: Any) -> tuple[str, str]:
    """The From address `run` would use and where it comes from; refuse, as `run` does before
    anything is sent (ConfigurationError, exit 3), a missing one or one that cannot be sent
    from (a special-use domain such as .test)."""
    shell = os.environ.get("MAILMATRIX_SENDER", "").strip()
    sender, origin = given, "--sender"
    if not sender:
        sender, origin = shell, "MAILMATRIX_SENDER"
    if not sender:
        sender, origin = catalog.sender, "the templates manifest's sender"
    if not sender:
        raise ConfigurationError(
            "sender: no From address: pass --sender (as to `run`), set MAILMATRIX_SENDER or "
            "'sender' in the templates manifest"
        )
    problem = sender_problem(sender)
    if problem:
        raise ConfigurationError(f"{problem} (from {origin})")
    return sender, origin


@private_files()  # a -shm file SQLite may make to read the ledger's -wal file
def _earlier_runs(
    workdir: Path | None,
    csv_file: Path,
    templates_dir: Path,
    attachments_dir: Path,
    sender: str | None,
    catalog: Any,
    known: Any,
) -> tuple[dict[str, Any], int | None]:
    """What the file's earlier runs in ``workdir`` say of it, for a run with --sender
    ``sender`` (``checked``: whether they were looked at; ``found``: whether there are any;
    ``error`` and ``message``: how `run` would refuse it; ``record_note``: what would stop a
    run of it through a mail server, not into the outbox), and the exit code of that refusal
    (None: none). ``known``: the record of known workdirs as read (local.read_known_record)."""
    from mailmatrix.errors import (
        DeliveriesDamaged,
        DeliveryChanged,
        KnownWorkdirsDamaged,
        LedgerLost,
        NameLikeAnother,
        StateFolderUnsafe,
        TemplateSetsChanged,
    )
    from mailmatrix.local import (
        check_earlier_runs,
        check_known_workdirs,
        last_run_here,
    )

    found: dict[str, Any] = {"checked": workdir is not None}
    # `run` refuses the file so for each, exiting 2 but for TemplateSetsChanged (3)
    usage = (DeliveryChanged, LedgerLost, NameLikeAnother, DeliveriesDamaged)
    try:
        if workdir is not None:
            found["workdir"] = str(workdir)
            found["found"] = check_earlier_runs(
                workdir, csv_file, templates_dir, attachments_dir, sender, catalog.names, known
            )
            if not found["found"]:  # a run that sent nothing (its rows all held back, say)
                found["ran"] = last_run_here(workdir, csv_file)
        problem = check_known_workdirs(workdir, csv_file, known)
    except (*usage, TemplateSetsChanged) as error:
        found.update(found=True, error=type(error).__name__, message=error.message)
        return found, exits.USAGE if isinstance(error, usage) else exits.INPUT_UNUSABLE
    except (KnownWorkdirsDamaged, StateFolderUnsafe) as error:  # as `run --smtp` stops
        found.update(found=True, error=type(error).__name__, message=error.message)
        damaged = isinstance(error, KnownWorkdirsDamaged)
        return found, exits.INPUT_UNUSABLE if damaged else exits.RUN_FAILED
    if problem is not None:
        found["record_note"] = {"error": type(problem).__name__, "message": problem.message}
    return found, None


def _doubts_and_runs(workdir: Path, csv_file: Path) -> dict[str, Any]:
    """The file's rows in doubt in ``workdir`` (``in_doubt_before``) and its runs going on there
    (``running``: their executions), as `settle` reads them; none where the ledger cannot be
    read (`run` says why)."""
    from mailmatrix.doubts import in_doubt_count, running_executions
    from mailmatrix.local import Workdir

    wd = Workdir(workdir)
    try:
        return {
            "in_doubt_before": in_doubt_count(wd, csv_file),
            "running": running_executions(wd, csv_file),
        }
    except MailMatrixError:
        return {}


def _sent_under_forecast(
    held: Sequence[tuple[int, str, str, str]], trials: Collection[str] = ()
) -> str:
    """What `run` does with the rows ``held`` back (row, outcome, file, what was alike: see
    _alike; in order) as their letters went, may have gone (in doubt) or are being sent now,
    to the same addresses under other files, in one line for them all: the table of problems
    leaves them out, for the rows to fix. ``trials``: the files whose letters went only to the
    local outbox (went_to_outbox), so not to the addresses, though the ledger counts them."""
    said = {
        (SENT_UNDER, "file"): "{went} (the same letters: the same attachments); {kept}",
        (SENT_UNDER, "text"): "{went} (the same letters: the same text); {kept}",
        (SENT_UNDER, "set"): "{had} (not the same letters: the text or attachment may differ, a"
        " name spelt anew, say; each reason names the set); {kept}",
        (MAYBE_SENT_UNDER, ""): "may have been sent (in doubt) to the same addresses under"
        " {files}: they are not sent here; once known not to have arrived (each one's reason"
        " says how to tell), a run of this file sends them",
        (SENDING_UNDER, ""): "are being sent now to the same addresses under {files}: they are"
        " not sent here; run this file again once that run has ended",
    }
    parts = []
    for (outcome, alike), words in said.items():
        for trial in (False, True) if outcome == SENT_UNDER else (None,):
            group = [
                (row, file)
                for row, said_as, file, how in held
                if said_as == outcome
                and (how == alike or not alike)
                and (trial is None or (file in trials) == trial)
            ]
            if group:
                rows = [row for row, _ in group]
                files = ", ".join(sorted({file for _, file in group}))
                told = words.format(files=files, **_sent_words(files, trial=bool(trial)))
                parts.append(f"{len(rows)} of these rows ({row_ranges(rows)}) {told}")
    tried = {f for _, outcome, f, _ in held if outcome == SENT_UNDER and f in trials}
    others = {f for _, outcome, f, _ in held if outcome != SENT_UNDER or f not in trials}
    said_next = []
    if tried:
        said_next.append(
            f"To send {'those of the trial' if others else 'them'} for real: `run --smtp URL"
            f" {_again(tried)}` in this workdir, or `run --smtp URL` in another --workdir, whose"
            " ledger holds nothing of that trial"
        )
    if others:
        them = "the others" if tried else "them"
        said_next.append(f"to send {them} again on purpose: `run {_again(others)}`")
    advice = "; ".join(said_next)
    return (
        f"{'; '.join(parts)}. {advice[0].upper()}{advice[1:]}."
        " --rejects FILE (or --json) gives each one's reason."
    )


def _sent_words(files: str, *, trial: bool) -> dict[str, str]:
    """How _sent_under_forecast says letters went under ``files``: to the same addresses, or
    (a ``trial``) only into the local outbox there, which the ledger counts as sent."""
    if trial:
        return {
            "went": f"went only to the local outbox under {files} (a trial?), not to the addresses",
            "had": f"had a letter of the same template set go only to the local outbox under"
            f" {files} (a trial?), not to the addresses",
            "kept": "the ledger counts them sent, so they will not be sent here",
        }
    return {
        "went": f"already went to the same addresses under {files}",
        "had": f"already had a letter of the same template set under {files}",
        "kept": "they will not be sent again",
    }


def _again(files: Collection[str]) -> str:
    """The --send-again-from options that name ``files``."""
    return " ".join(f"--send-again-from {file}" for file in sorted(files))


def _alike(reason: str) -> str:
    """What the letter a row is held back for (its ``reason``, sent_under_reason's) has of the
    row's: ``set`` (a letter of its template set, its text another), ``text`` (the same text,
    no file of its own) or ``file`` (the same letter, its own file the same bytes)."""
    if set_letter_file(reason) is not None:
        return "set"
    return "text" if "this letter (the same text)" in reason else "file"


def row_ranges(rows: Sequence[int], shown: int = 12) -> str:
    """``rows`` (in order) as people read them: "rows 2-20, 22, 24-30", the first ``shown``
    runs of them, then how many more rows."""
    runs: list[list[int]] = []
    for row in rows:
        if runs and row == runs[-1][1] + 1:
            runs[-1][1] = row
        else:
            runs.append([row, row])
    words = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:shown]]
    rest = sum(b - a + 1 for a, b in runs[shown:])
    if rest:
        words.append(f"and {rest} more")
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(words)


@private_files()
def _forecast(
    workdir: Path | None,
    csv_file: Path,
    sets: Collection[str],
    send_again_from: Collection[str],
    corrected: Collection[int],
    known: Any = None,
) -> Any:
    """The file's earlier runs in ``workdir`` as a RunForecast, for a run with the template
    sets ``sets`` and ``--send-again-from`` (None: no workdir given)."""
    if workdir is None:
        return None
    from mailmatrix.local import RunForecast

    return RunForecast(
        workdir,
        csv_file,
        sets=sets,
        send_again_from=send_again_from,
        corrected=corrected,
        known=known,
    )


def _what_run_would_do(forecast: Any, report: IntakeReport) -> dict[str, Any]:
    """What `run` would do with the file's valid rows after its earlier runs: rows it would
    skip as sent (``sent_before``), report failed again (``failed_before``, and
    ``unknown_before`` as OutcomeUnknown) or fail without sending (``other_letter_before``,
    ``attachment_of_another_before``), the rows it would send (``would_send``), and the
    campaign's halt (``halt``; ``holds``: `run` would stop at once, sending nothing)."""
    counts = forecast.counts(report.withdrawn)
    found: dict[str, Any] = {f"{state}_before": count for state, count in counts.items()}
    found["would_send"] = report.valid - sum(counts.values())
    for state in ("other_letter", "attachment_of_another"):  # rows `run` fails: which ones
        if counts[state]:
            found[f"{state}_rows"] = forecast.rows(state, report.withdrawn, SHOWN_ROWS)
    for state in ("failed", "unknown"):  # of them, those a retry holds back as sent elsewhere
        went = forecast.went_under(state, report.withdrawn)
        if went:
            found[f"{state}_went_under"] = [
                {"row": row, "file": file, "in_doubt": doubtful} for row, file, doubtful in went
            ]
    halt = forecast.halt
    found["halt"] = halt and {
        "code": halt.code,
        "reason": halt.reason,
        "age_seconds": round(forecast.halt_age, 1),
        "holds": forecast.hold_left > 0,
        "holds_for_seconds": round(forecast.hold_left, 1),
    }
    return found


def _fail(
    error: BaseException,
    csv_file: Path,
    as_json: bool,
    *,
    bundled: bool,
    where: str | None = None,
    code: int | None = None,
) -> None:
    """Report a file-level problem without a traceback and exit with the matching code
    (``bundled``: the templates are the bundled ones, no --templates given; ``where``: what
    failed, when not the CSV; ``code``: the exit code, when not the one of the error's kind)."""
    message = error.message if isinstance(error, MailMatrixError) else f"{csv_file}: {error}"
    if where is not None:
        message = f"{where}: {getattr(error, 'strerror', None) or error}"
    hints = (
        bundled_templates_hint(type(error).__name__) if bundled else None,
        missing_columns_hint(message),
    )
    hint = " ".join(filter(None, hints)) or None
    if as_json:
        if code is None:
            code = _code_of(error)
        payload = {"source": str(csv_file), **failure(type(error).__name__, message, code)}
        if hint:
            payload["hint"] = hint
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        click.echo(f"Error: {message}", err=True)
        if hint:
            click.echo(hint, err=True)
        if isinstance(error, InputFileError):
            click.echo("Nothing was validated; fix the file and run again.", err=True)
        elif isinstance(error, ConfigurationError):
            click.echo(
                "`run` would stop here too, sending nothing; fix it and validate again.", err=True
            )
    sys.exit(_code_of(error) if code is None else code)


def _code_of(error: BaseException) -> int:
    """The exit code of validate's failure with ``error``: as `run` exits for it."""
    if isinstance(error, (InputFileError, TemplateError, ConfigurationError, OSError)):
        return exits.INPUT_UNUSABLE  # `run` exits so for each of these, sending nothing
    return exits.RUN_FAILED


def _show(
    console: Console,
    report: IntakeReport,
    rejects_path: Path | None,
    earlier: dict[str, Any],
    letters: dict[str, Any],
    missing: str | None = None,
) -> None:
    """Print the report for people: a summary, each row that will not be sent, and what the
    file's earlier runs say (``earlier``, see _earlier_runs) of the file with the templates
    and From in ``letters``; ``missing``: that the attachments folder is missing, said before
    the rows (each row's file is not found for that one reason)."""
    delimiter = DELIMITER_NAMES.get(report.delimiter, repr(report.delimiter))
    console.print(f"[bold]{escape(report.source)}[/]: {report.encoding}, {delimiter}-separated")
    header = ", ".join(report.header[:SHOWN_COLUMNS])
    if len(report.header) > SHOWN_COLUMNS:
        header += f", ... and {len(report.header) - SHOWN_COLUMNS} more"
    console.print(f"Columns: {header}", markup=False)  # the file's own text
    for warning in report.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", soft_wrap=True)
    console.print(f"Templates: {templates_shown(letters)}", markup=False)
    console.print(f"From: {letters['sender']} ({letters['sender_from']})", markup=False)
    held = sum(report.sent_under.values())
    held_rows = sorted(
        (item["row"], item["outcome"], item["file"], _alike(item["reason"]))
        for item in report.skipped
        if item.get("outcome") in HELD_UNDER
    )
    trials = {
        item["file"]
        for item in report.skipped
        if item.get("outcome") == SENT_UNDER and went_to_outbox(item["reason"])
    }
    sent_all = all(outcome == SENT_UNDER for _, outcome, _, _ in held_rows)
    summary = Table(show_header=True, header_style="bold")
    columns = ["rows", "valid", "rejected", "duplicates", "excluded", "empty"]
    values = [
        report.rows,
        report.valid,
        len(report.rejected),
        len(report.duplicates),
        len(report.skipped) - held,
        report.empty,
    ]
    if held:
        columns.insert(5, "sent before" if sent_all else "sent or in doubt")
        values.insert(5, held)
    for column in columns:
        summary.add_column(column, justify="right")
    summary.add_row(*map(str, values))
    console.print(summary)

    problems = [
        (item["row"], "rejected", item["column"], _settling_where(item["reason"], earlier))
        for item in report.rejected
    ]
    for item in report.duplicates:
        problems.append(
            (item["row"], "duplicate", "Email", f"duplicate of row {item['first_row']}")
        )
    problems += [
        (item["row"], item.get("outcome", "excluded"), "", item["reason"])
        for item in report.skipped
        if item.get("outcome") not in HELD_UNDER  # one line for them all (_sent_under_forecast)
    ]
    problems.sort()
    if missing:  # the folder first: the rows whose files are not found follow from it
        console.print(f"[yellow]Note:[/] {escape(missing)}")
    if problems:
        table = Table("row", "outcome", "column", header_style="bold")
        table.add_column("reason", overflow="fold")  # whole, however narrow the terminal
        for row, outcome, column, reason in problems[:SHOWN_PROBLEMS]:
            # The file's own text (names, cells) is shown as it is, never read as markup.
            table.add_row(str(row), outcome, Text(column), Text(reason))
        console.print(table)
        if len(problems) > SHOWN_PROBLEMS:
            more = len(problems) - SHOWN_PROBLEMS
            console.print(f"... and {more} more; --rejects FILE writes them all.")
        if any(ATTACHMENT_NOT_FOUND in item["reason"] for item in report.rejected):
            console.print(attachments_note(Path(letters["attachments"])), markup=False)
    if rejects_path is not None:
        console.print(f"Rejects report: {rejects_path}", markup=False, soft_wrap=True)
    if earlier.get("error"):
        console.print(f"[red]`run` would refuse this file ({escape(earlier['error'])})[/]:")
        console.print(earlier["message"], markup=False)
        if earlier.get("default_workdir"):
            console.print(
                f"(Checked in {earlier['workdir']}, the workdir `run` uses without --workdir;"
                " give --workdir if the run will use another.)",
                markup=False,
            )
        return
    refusal = letters.get("server_refusal")
    would = earlier.get("would_send", report.valid)
    sending = f"{would} of the {report.valid} valid row(s) would be sent"
    if would == report.valid:
        sending = f"the {report.valid} valid row(s) would be sent"
    if not report.valid and not held:
        console.print("[red]Nothing to send[/]: no row is valid and sendable; `run` would stop.")
    elif not report.valid:
        rejected = len(report.rejected)
        console.print(
            "[yellow]Nothing new to send[/]: the letters of the rows `run` could send went"
            f" already{'' if sent_all else ', or may have'} (below), so it would send nothing,"
            " and end without failing"
            + (f"; {rejected} row(s) rejected: fix them and validate again." if rejected else ".")
        )
    elif earlier.get("in_doubt_before"):
        console.print(
            f"[red]Not yet[/]: {earlier['in_doubt_before']} row(s) are in doubt (below): `run`"
            " would stop at once, sending nothing, until they are settled (or run with"
            f" --retry-unknown); then {sending}."
        )
    elif report.rejected:
        console.print(
            f"[red]{len(report.rejected)} row(s) rejected[/]: fix them and validate again; "
            f"{sending}."
        )
    elif (earlier.get("halt") or {}).get("holds"):
        console.print(
            "[red]Not now[/]: a halt holds this file's runs (below): `run` would stop at once,"
            f" sending nothing; after the halt, {sending}."
        )
    elif not would:
        console.print(
            f"[yellow]Nothing new to send[/]: none of the {report.valid} valid row(s) would be"
            " sent."
        )
    elif refusal:
        console.print(
            f"[yellow]Outbox only[/]: {sending} into the outbox by `run` without --smtp, a"
            " trial, and validate exits as that run would; `run --smtp` would be refused"
            " (below)."
        )
    elif report.warnings:  # not errors, but not all good: say so where people look last
        if would == report.valid:
            sending = f"{would} row(s) would be sent"
        console.print(f"[yellow]{sending}; read the warning(s) above[/].")
    elif would == report.valid:
        console.print(f"[green]All good[/]: {would} row(s) would be sent.")
    else:
        console.print(f"[green]All good[/]: {sending}.")
    if held:
        console.print(_sent_under_forecast(held_rows, trials), markup=False)
    if refusal:
        console.print(
            f"[yellow]`run --smtp` would refuse this file ({refusal['error']}), sending nothing;"
            " `run` into the outbox goes[/]:"
        )
        console.print(refusal["message"], markup=False)
    for line in _earlier_sends(earlier, Path(letters["templates"])):
        console.print(line, markup=False)
    note = earlier.get("record_note")
    if note:
        console.print(
            "[yellow]Note[/]: a run through a mail server (--smtp) would stop here, sending"
            f" nothing ({escape(note['error'])}; a run into the outbox does not read this):"
        )
        console.print(note["message"], markup=False)
    console.print(_earlier_note(earlier), markup=False)


def _settling_where(reason: str, earlier: dict[str, Any]) -> str:
    """``reason`` with --workdir added to the `settle` it names (a letter in doubt under
    another file), where the workdir validate checked is not the default; else as it is."""
    if "`settle " not in reason or not earlier.get("checked") or earlier.get("default_workdir"):
        return reason
    return naming_workdir(reason, f"--workdir {shlex.quote(str(earlier['workdir']))}")


# Rows named where validate says `run` would fail rows: the first of them.
SHOWN_ROWS = 20


def _which(earlier: dict[str, Any], state: str) -> str:
    """ " Rows: 3, 7 (and 4 more)." for the rows `run` would fail as ``state``."""
    rows = earlier.get(f"{state}_rows") or []
    if not rows:
        return ""
    more = earlier.get(f"{state}_before", 0) - len(rows)
    tail = f" (and {more} more)" if more > 0 else ""
    return f" Rows: {', '.join(str(row) for row in rows)}{tail}."


def _earlier_sends(earlier: dict[str, Any], templates_dir: Path) -> list[str]:
    """What the file's earlier runs leave `run` to skip, to report failed again, or to wait
    for (see _what_run_would_do), with the templates in ``templates_dir``."""
    lines = []
    if earlier.get("sent_before"):
        lines.append(
            f"{earlier['sent_before']} row(s) were sent by earlier runs of this file: `run`"
            " skips them."
        )
    if earlier.get("failed_before"):
        lines.append(
            f"{earlier['failed_before']} row(s) failed for good in earlier runs: `run` reports"
            " them failed again without sending; `run --retry-failed` sends them"
            + _went_under(earlier, "failed")
        )
    if earlier.get("unknown_before"):
        lines.append(
            f"{earlier['unknown_before']} row(s) failed in earlier runs as OutcomeUnknown (they"
            " may have arrived): `run` reports them failed again without sending; once checked,"
            " `run --retry-unknown` sends them" + _went_under(earlier, "unknown")
        )
    other = other_letter_hint(
        {"other_letter": earlier.get("other_letter_before", 0)},
        manifest=str(templates_dir / "manifest.yaml"),
        failed="would fail",
    )
    if other:
        lines.append(other + _which(earlier, "other_letter"))
    if earlier.get("attachment_of_another_before"):
        lines.append(
            f"{earlier['attachment_of_another_before']} row(s) would fail as"
            f" {ATTACHMENT_OF_ANOTHER}: an earlier run of this file sent the file they name in"
            " Attachment_File to another recipient as their own; `run` does not send them, nor"
            " does any retry (name each recipient's own file; or, where the earlier address was"
            " wrong and this is the same person, `run --corrected-address ROW` sends it)."
            + _which(earlier, "attachment_of_another")
        )
    lines += _unfinished(earlier)
    halt = earlier.get("halt")
    if halt:
        when = _ago(halt["age_seconds"])
        if halt["holds"]:
            lines.append(
                f"An earlier run of this file was halted {when} ({halt['reason']}); the halt"
                f" holds the file's runs for {halt['holds_for_seconds']:.0f} s more (`run`"
                " stops at once, sending nothing), and a run after that tries again."
            )
        else:
            lines.append(
                f"An earlier run of this file was halted {when} ({halt['reason']}); a run now"
                " tries again."
            )
    return lines


def _went_under(earlier: dict[str, Any], state: str) -> str:
    """The end of the line on the rows failed as ``state`` ("failed", "unknown"): ".", or
    which of them a retry holds back as their letters went, or may have, under another file
    since (``{state}_went_under``), and how to send them all the same."""
    went = earlier.get(f"{state}_went_under") or []
    if not went:
        return "."
    option = "--retry-failed" if state == "failed" else "--retry-unknown"
    parts = []
    for doubtful in (False, True):
        rows = [item["row"] for item in went if item["in_doubt"] == doubtful]
        files = sorted({item["file"] for item in went if item["in_doubt"] == doubtful})
        if not rows:
            continue
        held = (
            f"went since to the same addresses under {', '.join(files)}: `run {option}` holds"
            " them back as sent there, sending nothing"
        )
        if doubtful:
            held = (
                f"may have gone since to the same addresses under {', '.join(files)} (in doubt"
                f" there): `run {option}` holds them back until that is settled there (`settle"
                f" {files[0]}`)"
            )
            held = _settling_where(held, earlier)
        parts.append(f"{row_ranges(sorted(rows))} of them {held}")
    files = sorted({item["file"] for item in went})
    again = " ".join(f"--send-again-from {file}" for file in files)
    return f", except: {'; '.join(parts)}. To send those again on purpose: `run {option} {again}`."


def _unfinished(earlier: dict[str, Any]) -> list[str]:
    """What validate says of the rows in doubt a run left, and of a run going on."""
    doubts, running = earlier.get("in_doubt_before"), earlier.get("running")
    in_doubt = (
        f"{doubts} row(s) are in doubt (a run ended while sending them, so they may have"
        " arrived): `settle` lists them, and records which arrived; until then a run of this"
        " file is refused, but `run --retry-unknown`, which sends them again, each marked as a"
        " possible duplicate."
    )
    going_on = (
        "A run of this file is going on in this workdir (its counts may change): execution"
        f" {', '.join(running or [])}."
    )
    return [said for said, given in ((in_doubt, doubts), (going_on, running)) if given]


def _ago(seconds: float) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``."""
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _earlier_note(earlier: dict[str, Any]) -> str:
    """What was, or was not, checked against the file's earlier runs, and in which workdir
    (rows already sent are skipped by `run` in any case)."""
    where = earlier["workdir"]
    if not earlier.get("checked"):
        return (
            f"(Not checked against earlier runs of this file: no --workdir given, and {where},"
            " the workdir `run` uses without --workdir, does not exist yet, so a run without"
            " --workdir has none. If the run will use another workdir, give it as --workdir:"
            " `run` refuses a file whose earlier runs there used other --templates or"
            " --attachments folders or another sender, or a template set since renamed or"
            " removed.)"
        )
    if earlier.get("default_workdir"):
        where += (
            " (the workdir `run` uses without --workdir; give --workdir if the run will use"
            " another)"
        )
    if not earlier.get("found") and earlier.get("ran"):
        return (
            f"(An earlier run of this file in {where}, execution {earlier['ran']}, sent nothing:"
            " the ledger holds none of its letters, so `run` skips none of its rows.)"
        )
    if not earlier.get("found"):
        return f"(No earlier run of this file in {where}.)"
    return (
        f"(Checked against its earlier runs in {where}: the same --templates and --attachments"
        " folders and sender, every template set they used is here; rows they sent are skipped."
        " Their delivery, --smtp or the outbox, is checked by `run`.)"
    )


commands: list[click.Command] = [validate_command]
