"""`mailmatrix preview FILE.csv --row N`: render one row as it would be sent, without sending."""

from __future__ import annotations

import email
import email.policy
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import click

from mailmatrix.adapters.storage_local import open_recipients
from mailmatrix.cli import exits
from mailmatrix.cli.console import reader_may_go
from mailmatrix.cli.options import check_sender
from mailmatrix.cli.validate_cmd import (
    ATTACHMENTS_PREFIX,
    bundled_templates,
    folder_contents,
    folder_index,
    folder_storage,
    load_folder_catalog,
    missing_columns_hint,
    templates_shown,
)
from mailmatrix.core.message import destinations
from mailmatrix.core.recipients import IntakeRules, validate_recipients
from mailmatrix.core.send import attachment_fetcher, compose, sender_problem
from mailmatrix.errors import InputFileError, MailMatrixError, TemplateError
from mailmatrix.private import private_files
from mailmatrix.settings import Settings

SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID")


@click.command("preview")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--row",
    "row",
    type=int,
    callback=lambda ctx, param, value: _row_number(value),
    required=True,
    help="Line number of the row in the file (the header is line 1).",
)
@click.option(
    "--templates",
    "templates_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Templates folder (default: the bundled templates).",
)
@click.option(
    "--attachments",
    "attachments_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the attachment files (default: 'attachments' beside the CSV).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where N.eml and N.html are written.",
)
@click.option(
    "--sender",
    callback=check_sender,
    help="From header (default: MAILMATRIX_SENDER, then the manifest).",
)
@click.option(
    "--unsubscribe", help="mailto: or https: URI for List-Unsubscribe (MAILMATRIX_UNSUBSCRIBE)."
)
def preview_command(
    csv_file: Path,
    row: int,
    templates_dir: Path | None,
    attachments_dir: Path | None,
    out_dir: Path,
    sender: str | None,
    unsubscribe: str | None,
) -> None:
    """Validate FILE.csv, render row N, write N.eml and N.html, print headers and parts."""
    attachments_dir = attachments_dir or csv_file.parent / "attachments"
    templates_dir = templates_dir or bundled_templates()

    try:
        catalog = load_folder_catalog(templates_dir)
        item, report = _validated_row(csv_file, row, catalog, attachments_dir)
    except TemplateError as error:
        hint = missing_columns_hint(error.message)
        _fail(f"templates: {error.message}{f' {hint}' if hint else ''}", exits.INPUT_UNUSABLE)
    except InputFileError as error:
        _fail(error.message, exits.INPUT_UNUSABLE)
    except (MailMatrixError, OSError) as error:
        _fail(str(error), exits.RUN_FAILED)
    with report:  # only a row not passed on is looked up in it
        if item is None:
            _explain_missing_row(csv_file, row, report)

    sender = sender or os.environ.get("MAILMATRIX_SENDER") or catalog.sender
    if not sender:
        _fail(
            "sender: no From address: pass --sender, set MAILMATRIX_SENDER or 'sender' in "
            "the templates manifest",
            exits.USAGE,
        )
    problem = sender_problem(sender)
    if problem:  # from MAILMATRIX_SENDER or the manifest: as `run` refuses it
        _fail(problem, exits.INPUT_UNUSABLE)
    unsubscribe = unsubscribe or os.environ.get("MAILMATRIX_UNSUBSCRIBE") or None
    attachments = folder_storage(attachments_dir, ATTACHMENTS_PREFIX)
    try:
        rendered = catalog.render(item["template"], item["fields"])
        raw, _ = compose(
            item,
            {"sender": sender, "unsubscribe": unsubscribe},
            catalog=catalog,
            fetch_attachment=attachment_fetcher(attachments, ATTACHMENTS_PREFIX),
        )
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except MailMatrixError as error:
        _fail(f"{csv_file}: row {row}: {error.message}", exits.ROWS_REJECTED)
    except OSError as error:
        _fail(f"{csv_file}: row {row}: attachment: {error}", exits.ROWS_REJECTED)

    eml_path, html_path = out_dir / f"{row}.eml", out_dir / f"{row}.html"
    try:
        with private_files():  # a person's letter: open to its owner only, as in a workdir
            out_dir.mkdir(parents=True, exist_ok=True)
            eml_path.write_bytes(raw)
            page = _html_page(message, rendered.html, rendered.text)
            html_path.write_text(page, encoding="utf-8")
    except OSError as error:  # no access, no room: said in one line, nothing else to undo
        _fail(f"--out {out_dir}: cannot write the preview: {error}", exits.RUN_FAILED)
    with reader_may_go():
        _print_summary(csv_file, row, item, message, raw, (eml_path, html_path), templates_dir)


def _validated_row(
    csv_file: Path, row: int, catalog: Any, attachments_dir: Path
) -> tuple[dict[str, Any] | None, Any]:
    """Run intake over the whole file (as a campaign would); keep only row ``row``."""
    found: list[dict[str, Any]] = []

    def keep(item: dict[str, Any]) -> None:
        if item["row"] == row:
            found.append(item)

    # The limit `run` holds messages to (MAILMATRIX_MAX_MESSAGE_BYTES; SES's by default).
    rules = IntakeRules(max_message_bytes=Settings.from_env().max_message_bytes)
    with open_recipients(csv_file) as stream:
        report = validate_recipients(
            stream,
            source=str(csv_file),
            catalog=catalog,
            attachments=folder_index(attachments_dir),
            rules=rules,
            emit=keep,
            contents=folder_contents(attachments_dir),
        )
    kept = found[0] if found and row not in report.withdrawn else None
    return kept, report


def _column_of(rejected: dict[str, Any]) -> str:
    """The column a rejected row is rejected for, as the message names it (``Email: ``), or
    nothing for a row rejected as a whole (its letter does not render)."""
    return f"{rejected['column']}: " if rejected.get("column") else ""


def _explain_missing_row(csv_file: Path, row: int, report: Any) -> NoReturn:
    for rejected in report.rejected:
        if rejected["row"] == row:
            _fail(
                f"{csv_file}: row {row}: rejected: {_column_of(rejected)}{rejected['reason']}",
                exits.ROWS_REJECTED,
            )
    for skipped in report.skipped:
        if skipped["row"] == row:
            _fail(f"{csv_file}: row {row}: excluded: {skipped['reason']}", exits.ROWS_REJECTED)
    for duplicate in report.duplicates:
        if duplicate["row"] == row:
            _fail(
                f"{csv_file}: row {row}: duplicate of row {duplicate['first_row']}",
                exits.ROWS_REJECTED,
            )
    last = report.last_row
    _fail(
        f"{csv_file}: no row starts on line {row} (the header is line 1; blank lines hold no row)"
        + (f"; the last row is row {last}" if last and last < row else ""),
        exits.USAGE,
    )


def _row_number(value: int) -> int:
    """Refuse a row number that is no recipient's: the header is row 1."""
    if value < 2:
        raise click.BadParameter(
            f"{value}: rows are numbered as the file's lines, and line 1 is the header: the"
            " first recipient is row 2"
        )
    return value


def _html_page(message: EmailMessage, html: str | None, text: str) -> str:
    """The HTML body as a mail client shows it (the text in <pre> when there is no HTML)."""
    if html is not None:
        return html
    from html import escape

    subject = escape(str(message["Subject"]))
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{subject}</title></head>'
        f"<body><pre>{escape(text)}</pre></body></html>\n"
    )


def _print_summary(
    csv_file: Path,
    row: int,
    item: dict[str, Any],
    message: EmailMessage,
    raw: bytes,
    written: tuple[Path, Path],
    templates_dir: Path,
) -> None:
    """What row ``row`` would be sent as (``written``: the .eml and .html files), naming the
    templates folder it was made from: the bundled one as the demo's."""
    from mailmatrix.local import is_bundled

    eml_path, html_path = written
    click.echo(f"{csv_file}: row {row}: template {item['template']}")
    folder = {"templates": str(templates_dir), "templates_bundled": is_bundled(templates_dir)}
    click.echo(f"Templates: {templates_shown(folder)}")
    for name in SHOWN_HEADERS:
        value = message[name]
        if value is not None:
            click.echo(f"{name}: {value}")
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post"):
        if message[name] is not None:
            click.echo(f"{name}: {message[name]}")
    click.echo(f"Envelope: {', '.join(destinations(message))}")
    click.echo("")
    click.echo("MIME tree:")
    for line in mime_tree(message):
        click.echo(f"  {line}")
    click.echo("")
    click.echo(f"{len(raw):,} bytes as sent")
    click.echo(f"wrote {eml_path} and {html_path}")


def mime_tree(part: EmailMessage, depth: int = 0) -> list[str]:
    """One line per MIME part: type, charset or file name, decoded size."""
    indent = "  " * depth
    if part.is_multipart():
        lines = [f"{indent}{part.get_content_type()}"]
        for child in part.iter_parts():
            lines.extend(mime_tree(child, depth + 1))  # type: ignore[arg-type]
        return lines
    details = []
    if part.get_filename():
        details.append(f"{part.get_content_disposition()}; {part.get_filename()!r}")
    elif part.get_content_charset():
        details.append(f"charset={part.get_content_charset()}")
    payload = part.get_payload(decode=True) or b""
    details.append(f"{len(payload):,} bytes, {part['Content-Transfer-Encoding'] or '7bit'}")
    return [f"{indent}{part.get_content_type()} ({'; '.join(details)})"]


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"mailmatrix preview: {message}", err=True)
    raise SystemExit(code)


commands: list[click.Command] = [preview_command]
