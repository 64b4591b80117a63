"""`mailmatrix run`: send a campaign on this machine through the real state machine."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailmatrix.cli import exits
from mailmatrix.errors import ConfigurationError, InputFileError, MailMatrixError
from mailmatrix.local import Workdir, run_campaign

DEFAULT_WORKDIR = "demo"


class ProgressListener:
    """Feeds the engine's progress into a rich progress bar (states, then the Map Run)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.state_task = progress.add_task("Starting", total=None) if progress else None
        self.map_task: Any = None

    def on_event(self, execution_id: str, event: dict[str, Any]) -> None:
        """Show which state the parent execution is in."""
        if self.progress is None or not event.get("type", "").endswith("StateEntered"):
            return
        details = event.get("stateEnteredEventDetails") or {}
        name = details.get("name")
        if name and ":" not in execution_id.split(":execution:")[-1].split(":")[-1]:
            self.progress.update(self.state_task, description=f"State: {name}")

    def on_map_run(self, map_run: dict[str, Any]) -> None:
        """Advance the bar as batches of the Map Run finish."""
        if self.progress is None:
            return
        total = map_run.get("total") or None
        done = (map_run.get("succeeded") or 0) + (map_run.get("failed") or 0)
        if self.map_task is None:
            self.map_task = self.progress.add_task("Sending batches", total=total)
        self.progress.update(self.map_task, completed=done, total=total)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _rejects(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError:
        return []
    return list(csv.DictReader(io.StringIO(text)))


def outcome_of(record: Any, workdir: Workdir) -> dict[str, Any]:
    """The run's result as the JSON object `run --json` prints."""
    output = record.get("output")
    if isinstance(output, str):
        output = json.loads(output or "{}")
    output = output if isinstance(output, dict) else {}
    validation = _validation_of(record)
    campaign = validation.get("campaign", {})
    counts = dict(output.get("counts") or {})
    if not counts:
        vcounts = validation.get("counts", {})
        counts = {
            "rows": vcounts.get("rows", 0),
            "valid": vcounts.get("valid", 0),
            "sent": 0,
            "skipped": 0,
            "rejected": vcounts.get("rejected", 0),
            "duplicates": vcounts.get("duplicates", 0),
            "excluded": vcounts.get("excluded", 0),
            "failed": 0,
        }
    report = output.get("report_key") or (
        f"reports/{campaign['id']}/report.csv" if campaign else None
    )
    result = {
        "execution": record["name"],
        "execution_arn": record["executionArn"],
        "status": record["status"],
        "counts": counts,
        "outbox": str(workdir.outbox),
        "report": str(workdir.bucket / report) if report else None,
        "rejects": str(workdir.bucket / campaign["rejects_key"]) if campaign else None,
        "outcome": output.get("outcome"),
    }
    if record["status"] != "SUCCEEDED":
        result["error"] = record.get("error")
        result["cause"] = record.get("cause")
        result["failure_details"] = record.get("failure_details") or []
    return result


def _validation_of(record: Any) -> dict[str, Any]:
    """The ValidateRecipients result, from the execution's history."""
    for event in record.get("history") or []:
        details = event.get("stateExitedEventDetails") or {}
        if details.get("name") == "AnythingToSend":
            return json.loads(details.get("output") or "{}").get("validation", {})
    return {}


def exit_code(result: dict[str, Any]) -> int:
    """0 when the execution succeeded; 3 when the file was unusable; 1 for any other failure."""
    if result["status"] == "SUCCEEDED":
        return exits.OK
    if result.get("error") in ("InputFileError", "TemplateError", "NothingToSend"):
        return exits.INPUT_UNUSABLE
    return exits.RUN_FAILED


def print_summary(console: Console, result: dict[str, Any]) -> None:
    """Tell the operator what happened and what to do next."""
    counts = result["counts"]
    table = Table(title="Campaign summary", show_header=False)
    for label, key in (
        ("Rows in the file", "rows"),
        ("Valid", "valid"),
        ("Sent now", "sent"),
        ("Already sent (skipped)", "skipped"),
        ("Rejected by validation", "rejected"),
        ("Duplicates (not sent)", "duplicates"),
        ("Failed", "failed"),
    ):
        table.add_row(label, str(counts.get(key, 0)))
    console.print(table)

    rejects = _rejects(Path(result["rejects"])) if result.get("rejects") else []
    if rejects:
        console.print(f"[bold]Rejected rows[/bold] ({len(rejects)}):")
        for reject in rejects[:20]:
            column = f" [{reject.get('column')}]" if reject.get("column") else ""
            console.print(f"  row {reject.get('row')}{column}: {reject.get('reason')}")
        if len(rejects) > 20:
            console.print(f"  ... and {len(rejects) - 20} more in the rejects report")

    if result["status"] == "SUCCEEDED":
        if counts.get("sent", 0) == 0 and counts.get("skipped", 0):
            console.print(
                f"[yellow]Nothing new sent: all {counts['skipped']} valid rows were already "
                "sent by an earlier run (the ledger remembers).[/yellow]"
            )
        console.print(f"Outbox:  {result['outbox']}")
        console.print(f"Report:  {result['report']}")
        if result.get("rejects"):
            console.print(f"Rejects: {result['rejects']}")
        if counts.get("failed"):
            console.print("Some rows failed: see the report for each reason.")
    else:
        console.print(f"[red]The run failed: {result.get('error')}[/red]")
        console.print(str(result.get("cause") or "")[:2000], markup=False)
        for line in result.get("failure_details") or []:
            console.print(f"  {line}", markup=False)
        console.print(
            f"Fix the cause, then rerun the failed part with: "
            f"mailmatrix redrive {result['execution']}"
        )


@click.command("run")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--attachments",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of the PDFs named in Attachment_File (default: attachments/ beside the CSV).",
)
@click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Template folder with its manifest (default: the bundled templates/).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORKDIR,
    show_default=True,
    help="Where the local bucket, outbox, ledger and executions live.",
)
@click.option("--sender", help="From address, e.g. 'Talent <talent@example.com>'.")
@click.option("--smtp", "smtp_url", help="Deliver through this SMTP server instead of the outbox.")
@click.option("--send-rate", type=float, help="Messages per second for the whole campaign.")
@click.option("--faults", help="Drill: fail on purpose, e.g. throttle=0.2,crash-after=500.")
@click.option("--concurrency", type=click.IntRange(1, 64), help="Batches sent at once.")
@click.option("--batch-size", type=click.IntRange(1, 1000), help="Rows per batch.")
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
    as_json: bool,
) -> None:
    """Validate CSV_FILE and send one email per valid row, on this machine."""
    console = Console(stderr=as_json)
    progress = (
        None
        if as_json or not console.is_terminal
        else Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
    )
    listener = ProgressListener(progress)
    try:
        if progress is not None:
            progress.start()
        else:
            console.print(f"Running {csv_file} (workdir {workdir}) ...")
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
        )
    except MailMatrixError as error:
        if progress is not None:
            progress.stop()
        click.echo(f"mailmatrix run: {error}", err=True)
        unusable = isinstance(error, InputFileError | ConfigurationError)
        sys.exit(exits.INPUT_UNUSABLE if unusable else exits.RUN_FAILED)
    finally:
        if progress is not None:
            progress.stop()

    result = outcome_of(record, Workdir(workdir))
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_summary(console, result)
    sys.exit(exit_code(result))


commands: list[click.Command] = [run]
