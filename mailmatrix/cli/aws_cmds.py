"""`mailmatrix aws send|status|redrive|settle`: campaigns on a deployed MailMatrix stack.

The stack's outputs (CloudFormation DescribeStacks) name the bucket and the state machine.
`send` uploads the CSV under incoming/ (incoming/dry-run/ with --dry-run), waits for the
execution that the EventBridge rule starts for that object, follows it with a progress bar fed
by DescribeMapRun, and ends with the console link and the summary. With --retry-failed the
upload carries the S3 metadata mailmatrix-retry-failed=true: ValidateRecipients then releases
the campaign's rows that failed for good in earlier runs, before anything is sent; with
--retry-unknown, mailmatrix-retry-unknown=true, those failed as OutcomeUnknown. The
operator's choices travel the same way: --send-again-from OTHERFILE as
mailmatrix-send-again-from, --corrected-address ROW as mailmatrix-corrected-address, once the
stack's ledger bears them out (those `run` refuses are refused before the upload).

Rows a Lambda left in doubt (stack_doubts) hold back `send` and `redrive` of their file,
before anything is uploaded or redriven, until `settle` records what arrived, or the command
is given --retry-unknown (which sends them again, as possible duplicates).
"""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import unquote_plus

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from mailmatrix.adapters.executions_sfn import console_link, ending, stopped_batches
from mailmatrix.adapters.storage_local import open_recipients
from mailmatrix.cli import exits
from mailmatrix.cli.options import (
    SEND_AGAIN_HELP,
    corrected_address_option,
    finite,
    send_again_option,
)
from mailmatrix.cli.settle_cmd import print_settled, settle_options
from mailmatrix.core.failures import (
    MESSAGE_CHARS,
    Ending,
    Stopped,
    redrive_advice,
    why_lines,
)
from mailmatrix.doubts import Choice, doubt_line
from mailmatrix.errors import (
    ChoiceRefused,
    InputFileError,
    LedgerError,
    NotSettled,
    RowsInDoubt,
    StorageError,
)
from mailmatrix.jobs import Source, choice_metadata, retry_metadata, stored_source
from mailmatrix.ports import Storage
from mailmatrix.program import program

DONE = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
POLL_SECONDS = 2.0

# Replaced in tests: how the CLI waits between polls, and how it gets its AWS clients.
sleep: Callable[[float], None] = time.sleep


def client(service: str, region: str | None) -> Any:
    """Return a boto3 client for ``service`` in ``region`` (default: the configured one)."""
    import boto3
    from botocore.exceptions import InvalidRegionError, NoRegionError

    try:
        return boto3.client(service, region_name=region) if region else boto3.client(service)
    except (NoRegionError, InvalidRegionError) as error:
        raise AwsSetupError(
            f"AWS region: {error} Give the stack's region with --region, or set AWS_REGION."
        ) from None


def aws_errors() -> tuple[type[Exception], ...]:
    """botocore's errors, imported once an AWS call has failed: other commands (a local run)
    need no botocore."""
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError


def make_console() -> Console:
    """A console that never breaks ARNs and links across lines (they must stay copyable)."""
    return Console(soft_wrap=True, highlight=False, markup=False)


class AwsCommandError(click.ClickException):
    """A stack, an execution or an AWS call the command needs is not there."""


class AwsSetupError(click.ClickException):
    """No AWS region, or one that is no region name: a usage problem (exit 2), not a failed
    command."""

    exit_code = exits.USAGE


class ChoiceNotTaken(click.ClickException):
    """A --send-again-from or --corrected-address that `run` would refuse too (ChoiceRefused):
    a usage problem (exit 2), refused before anything is uploaded."""

    exit_code = exits.USAGE


class RowsInDoubtRefused(click.ClickException):
    """A send or redrive of a file some of whose rows are in doubt on the stack: refused (exit
    2) before anything is uploaded or started, until they are settled or --retry-unknown."""

    exit_code = exits.USAGE


@dataclass(frozen=True)
class Stack:
    """What the CLI needs from a deployed stack's outputs."""

    name: str
    region: str
    bucket: str
    state_machine_arn: str
    ledger_table: str | None = None  # None: a stack from before the output was given

    @classmethod
    def describe(cls, name: str, region: str | None) -> Stack:
        """Read the stack's outputs with DescribeStacks."""
        cfn = client("cloudformation", region)
        try:
            (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
        except aws_errors() as error:
            where = cfn.meta.region_name
            raise AwsCommandError(
                f"stack {name} in region {where}: cannot describe it: {error} (a stack in another"
                " region is named with --region, or AWS_REGION)"
            ) from error
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        missing = {"BucketName", "StateMachineArn"} - set(outputs)
        if missing:
            raise AwsCommandError(
                f"stack {name}: outputs {sorted(missing)} missing: is it a MailMatrix stack?"
            )
        return cls(
            name=name,
            region=cfn.meta.region_name,
            bucket=outputs["BucketName"],
            state_machine_arn=outputs["StateMachineArn"],
            ledger_table=outputs.get("LedgerTableName"),
        )

    def execution_arn(self, execution: str) -> str:
        """Accept an execution ARN or a bare execution name of this stack's state machine."""
        if execution.startswith("arn:"):
            return execution
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + execution


def find_execution(
    sfn: Any,
    state_machine_arn: str,
    key: str,
    *,
    etag: str,
    wait_seconds: float,
    version: str | None = None,
    uploaded: datetime | None = None,
) -> str:
    """Return the ARN of the execution that EventBridge started for this upload of ``key``.

    The same file uploaded again has the same ETag: the upload's ``version`` (the bucket is
    versioned) tells this upload's execution from the earlier ones, and without a version,
    executions started before the upload (``uploaded``, S3's own clock) are passed over.
    """
    deadline = time.monotonic() + wait_seconds
    seen: set[str] = set()
    while True:
        response = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=50)
        for execution in response.get("executions", []):
            arn = execution["executionArn"]
            if arn in seen:
                continue
            seen.add(arn)
            started = execution.get("startDate")
            if uploaded is not None and isinstance(started, datetime) and started < uploaded:
                continue
            detail = json.loads(sfn.describe_execution(executionArn=arn).get("input") or "{}")
            obj = detail.get("detail", {}).get("object", {})
            if version is not None and obj.get("version-id", version) != version:
                continue
            if obj.get("key") == key and obj.get("etag", etag).strip('"') == etag:
                return arn
        if time.monotonic() >= deadline:
            raise AwsCommandError(
                f"{key}: no execution started within {wait_seconds:.0f} s; check the stack's "
                "UploadRule and its dead-letter queue (DeadLetterQueueUrl output)"
            )
        sleep(POLL_SECONDS)


def _answered_at(response: dict[str, Any]) -> datetime | None:
    """When AWS answered a call, by its own clock (the Date header), a second early: the
    execution an upload starts starts after it."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date) - timedelta(seconds=1) if date else None
    except (TypeError, ValueError):
        return None


def map_run_counts(sfn: Any, execution_arn: str) -> dict[str, int] | None:
    """Item counts of the execution's Map Run (DescribeMapRun), or None before it starts."""
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if not runs:
        return None
    counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts") or {}
    return {name: int(counts.get(name, 0)) for name in ("total", "succeeded", "failed", "pending")}


def follow(sfn: Any, execution_arn: str, console: Console) -> dict[str, Any]:
    """Poll the execution to its end, showing the Map Run's progress; return DescribeExecution."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("batches", total=None)
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            counts = map_run_counts(sfn, execution_arn)
            if counts and counts["total"]:
                done = counts["succeeded"] + counts["failed"]
                label = f"batches ({counts['failed']} failed)" if counts["failed"] else "batches"
                progress.update(task, total=counts["total"], completed=done, description=label)
            if described["status"] in DONE:
                return described
            sleep(POLL_SECONDS)


def report(console: Console, stack: Stack, described: dict[str, Any], sfn: Any = None) -> int:
    """Print the outcome, the summary and the console link, and for an execution that failed,
    why it stopped (its batches' errors, read with ``sfn``) and when to redrive it; return
    the exit code."""
    status = described["status"]
    console.print(f"execution {described.get('name', '')}: {status}")
    if described.get("output"):
        summary = json.loads(described["output"])
        if isinstance(summary, dict) and summary.get("message"):
            console.print(summary["message"], markup=False)
        if isinstance(summary, dict) and summary.get("counts"):
            counts = summary["counts"]
            console.print(", ".join(f"{name} {value}" for name, value in counts.items()))
    ended = ending(described)
    if ended.error or ended.cause:
        console.print(f"error: {ended.error or ''}: {ended.cause[:MESSAGE_CHARS]}", markup=False)
    console.print(f"console: {console_link(stack.region, described['executionArn'])}")
    if status not in DONE:
        console.print("still running: run this command again later to see how it ended")
    elif status != "SUCCEEDED":
        stopped = _stopped(console, sfn, ended)
        why = why_lines(stopped)
        if why:
            console.print("why sending stopped:")
            for line in why:
                console.print(f"  {line}", markup=False)
        console.print(
            f"when to redrive: {redrive_advice(status, ended.error, ended.cause, stopped)}"
        )
        console.print(
            f"to rerun what failed: {program()} aws redrive {described['executionArn']} "
            f"--stack {stack.name}"
        )
    return exits.OK if status == "SUCCEEDED" else exits.RUN_FAILED


def _stopped(console: Console, sfn: Any, ended: Ending) -> Stopped:
    """The failed batches of a failed execution (none read without ``sfn``, or when AWS
    refuses: the command says so and goes on)."""
    if sfn is None or ended.status != "FAILED":
        return Stopped()
    try:
        return stopped_batches(sfn, ended.arn)
    except aws_errors() as error:
        console.print(f"(the failed batches could not be read: {error})", markup=False)
        return Stopped()


_stack_option = click.option("--stack", "stack_name", required=True, help="The stack's name.")
# The most executions one ListExecutions call answers with (its maxResults).
MAX_LISTED = 1000
_region_option = click.option("--region", default=None, help="AWS region (default: configured).")


@click.group("aws")
def aws() -> None:
    """Run and watch campaigns on a deployed MailMatrix stack."""


@aws.command("send")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@_stack_option
@_region_option
@click.option("--dry-run", is_flag=True, help="Validate and render previews; send nothing.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Send again the rows of this file that failed for good in earlier runs (after "
    "fixing the cause), except those failed as OutcomeUnknown. Rows already sent are still "
    "skipped.",
)
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Send again the rows of this file that failed as OutcomeUnknown, and those an "
    "earlier run left in doubt, each marked as a possible duplicate (they may have arrived: "
    "check first; `aws settle` the rows in doubt that did, and take the others that did out "
    "of the file). Without it, a send of a file with rows in doubt is refused.",
)
@send_again_option(SEND_AGAIN_HELP)
@corrected_address_option
@click.option("--no-follow", is_flag=True, help="Return once the execution has started.")
@click.option(
    "--wait-start",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    callback=finite("a number of seconds"),
    help="Seconds to wait for it.",
)
def send(
    csv_file: pathlib.Path,
    stack_name: str,
    region: str | None,
    dry_run: bool,
    retry_failed: bool,
    retry_unknown: bool,
    send_again_from: tuple[str, ...],
    corrected: tuple[int, ...],
    no_follow: bool,
    wait_start: float,
) -> None:
    """Upload CSV_FILE to the stack's bucket and follow the campaign it starts."""
    if csv_file.suffix.lower() != ".csv":
        raise click.BadParameter("the upload rule starts only on *.csv files", param_hint="FILE")
    for flag, given in (("--retry-failed", retry_failed), ("--retry-unknown", retry_unknown)):
        if dry_run and given:
            raise click.UsageError(f"{flag} sends rows: a --dry-run sends none")
    try:
        with open_recipients(csv_file) as stream:  # a FIFO with no writer: refused, not waited for
            body = stream.read()
    except InputFileError as error:
        raise click.BadParameter(error.message, param_hint="FILE") from None
    metadata = retry_metadata(retry_failed, retry_unknown)
    metadata.update(choice_metadata(send_again_from, corrected))
    console = make_console()
    if send_again_from:  # what needs no stack is refused before AWS is asked anything
        from mailmatrix.choices import refuse_names

        try:
            refuse_names(csv_file, send_again_from, "Nothing was uploaded, sent or recorded")
        except ChoiceRefused as refused:
            raise ChoiceNotTaken(f"aws send: {refused.message}") from None
    stack = Stack.describe(stack_name, region)
    if send_again_from or corrected:
        _check_choices(stack, csv_file, send_again_from, corrected)
    if not dry_run and not retry_unknown:  # their letters may have arrived: the operator says
        stack_args = _stack_args(stack_name, region)
        flags = [*stack_args, "--retry-unknown"]
        flags += [f"--send-again-from={name}" for name in send_again_from]
        flags += [f"--corrected-address={row}" for row in corrected]
        again = f"{program()} aws send {shlex.join([str(csv_file), *flags])}"
        _refuse_rows_in_doubt(
            console, stack, stack_args, "aws send", csv_file.name, again, csv_file
        )
    key = ("incoming/dry-run/" if dry_run else "incoming/") + csv_file.name
    s3 = client("s3", stack.region)
    sfn = client("stepfunctions", stack.region)
    try:
        put = s3.put_object(
            Bucket=stack.bucket,
            Key=key,
            Body=body,
            ContentType="text/csv",
            Metadata=metadata,
        )
        # The version is the upload's own: its execution reads it, whatever is uploaded next.
        version = put.get("VersionId")
        console.print(
            f"uploaded s3://{stack.bucket}/{key}" + (f" (version {version})" if version else ""),
            markup=False,
        )
        for name, value in sorted(metadata.items()):
            console.print(f"  with metadata {name}={value}", markup=False)
        arn = find_execution(
            sfn,
            stack.state_machine_arn,
            key,
            etag=put["ETag"].strip('"'),
            wait_seconds=wait_start,
            version=version,
            uploaded=_answered_at(put),
        )
        console.print(f"execution started: {arn}")
        if no_follow:
            console.print(f"console: {console_link(stack.region, arn)}")
            return
        described = follow(sfn, arn, console)
    except aws_errors() as error:
        raise AwsCommandError(f"aws send: {error}") from error
    raise SystemExit(report(console, stack, described, sfn))


def _check_choices(
    stack: Stack,
    csv_file: pathlib.Path,
    send_again_from: tuple[str, ...],
    corrected: tuple[int, ...],
) -> None:
    """Refuse, before anything is uploaded, the choices `run` and `validate` refuse (exit 2),
    reading the stack's ledger."""
    from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger
    from mailmatrix.choices import check_deployed_choices

    if stack.ledger_table is None:
        raise AwsCommandError(
            f"stack {stack.name}: no LedgerTableName output, so --send-again-from and"
            " --corrected-address cannot be checked against its ledger. Nothing was uploaded:"
            " update the stack (deploy this version), then send the file again"
        )
    ledger = DynamoDbLedger(stack.ledger_table, client("dynamodb", stack.region))
    try:
        check_deployed_choices(
            ledger, stack.bucket, stack.name, csv_file, send_again_from, corrected
        )
    except ChoiceRefused as refused:
        raise ChoiceNotTaken(f"aws send: {refused.message}") from None
    except LedgerError as error:
        raise AwsCommandError(
            f"aws send: the stack's ledger could not be read to check the choices: {error}."
            " Nothing was uploaded: send the file again once it can be read (an OperatorPolicy"
            " from before this version does not grant its query: update the stack)"
        ) from error


@aws.command("status")
@click.argument("execution", required=False)
@_stack_option
@_region_option
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LISTED),
    default=10,
    show_default=True,
    help="Executions to list.",
)
def status(execution: str | None, stack_name: str, region: str | None, limit: int) -> None:
    """Show one execution (name or ARN), or list the stack's latest executions."""
    console = make_console()
    stack = Stack.describe(stack_name, region)
    sfn = client("stepfunctions", stack.region)
    try:
        if execution is None:
            listed = sfn.list_executions(stateMachineArn=stack.state_machine_arn, maxResults=limit)
            for item in listed.get("executions", []):
                started = item["startDate"].strftime("%Y-%m-%d %H:%M:%S")
                console.print(f"{started}  {item['status']:<10} {item['name']}")
            if not listed.get("executions"):
                console.print("no executions yet")
            return
        described = sfn.describe_execution(executionArn=stack.execution_arn(execution))
        counts = map_run_counts(sfn, described["executionArn"])
    except aws_errors() as error:
        raise AwsCommandError(f"aws status: {error}") from error
    if counts:
        console.print(
            f"batches: {counts['succeeded']} succeeded, {counts['failed']} failed, "
            f"{counts['pending']} pending of {counts['total']}"
        )
    code = report(console, stack, described, sfn)
    if described["status"] not in DONE:
        code = exits.OK
    raise SystemExit(code)


@aws.command("redrive")
@click.argument("execution")
@_stack_option
@_region_option
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Redrive though rows of the execution's file are in doubt (an earlier run ended as "
    "it sent them): they are sent again, each marked as a possible duplicate. Without it, "
    "such a redrive is refused: `aws settle` them first.",
)
@click.option("--no-follow", is_flag=True, help="Return once the redrive has started.")
def redrive(
    execution: str, stack_name: str, region: str | None, retry_unknown: bool, no_follow: bool
) -> None:
    """Redrive a failed execution (RedriveExecution): rerun what failed, then follow it."""
    console = make_console()
    stack = Stack.describe(stack_name, region)
    sfn = client("stepfunctions", stack.region)
    arn = stack.execution_arn(execution)
    try:
        if not retry_unknown:  # their letters may have arrived: the operator says
            from mailmatrix.adapters.storage_s3 import S3Storage

            name = _file_of(sfn, arn, S3Storage(stack.bucket, client("s3", stack.region)))
            if name is not None:
                stack_args = _stack_args(stack_name, region)
                again = (
                    f"{program()} aws redrive {shlex.join([arn, *stack_args, '--retry-unknown'])}"
                )
                _refuse_rows_in_doubt(console, stack, stack_args, "aws redrive", name, again)
        sfn.redrive_execution(executionArn=arn)
        console.print(f"redriven: {arn}")
        if no_follow:
            console.print(f"console: {console_link(stack.region, arn)}")
            return
        described = follow(sfn, arn, console)
    except aws_errors() as error:
        raise AwsCommandError(f"aws redrive: {error}") from error
    raise SystemExit(report(console, stack, described, sfn))


def _stack_args(stack_name: str, region: str | None) -> list[str]:
    """The options that name the stack in a command the CLI prints."""
    return ["--stack", stack_name, *(["--region", region] if region else [])]


def _file_of(sfn: Any, arn: str, storage: Storage | None = None) -> str | None:
    """The name of the file an execution sends (its key under incoming/); None for a dry run's
    or an execution not started by an upload (nothing of a file's to check).

    The event's key may be URL-encoded ("offers+2026.csv" for "offers 2026.csv"): read as
    Validate reads it (jobs.stored_source) in ``storage``, the stack's bucket; where neither
    key names an object now, the key decoded, as S3's events encode it.
    """
    try:
        event = json.loads(sfn.describe_execution(executionArn=arn).get("input") or "{}")
    except ValueError:  # not started by an upload's event
        return None
    detail = event.get("detail") if isinstance(event, dict) else None
    upload = detail.get("object") if isinstance(detail, dict) else None
    key = upload.get("key") if isinstance(upload, dict) else None
    if not isinstance(key, str) or not key.startswith("incoming/"):
        return None
    if storage is not None and ("+" in key or "%" in key):
        version = upload.get("version-id") if isinstance(upload, dict) else None
        source = Source("", key, "", version if isinstance(version, str) else None)
        try:
            key = stored_source(storage, source).key
        except StorageError:  # gone since: its rows in doubt are the decoded name's
            key = unquote_plus(key)
    name = key.removeprefix("incoming/")
    return None if name.startswith("dry-run/") else name


def _ledger_of(stack: Stack) -> Any:
    """The stack's ledger (DynamoDbLedger); None for a stack that does not name it."""
    from mailmatrix.adapters.ledger_dynamodb import DynamoDbLedger

    if stack.ledger_table is None:
        return None
    return DynamoDbLedger(stack.ledger_table, client("dynamodb", stack.region))


def _refuse_rows_in_doubt(
    console: Console,
    stack: Stack,
    stack_args: list[str],
    command: str,
    name: str,
    again: str,
    csv_file: pathlib.Path | None = None,
) -> None:
    """Refuse (exit 2), before anything is uploaded or started, a send or redrive of the file
    ``name`` while rows of it are in doubt on the stack (stack_doubts.refuse_rows_in_doubt)."""
    from mailmatrix.stack_doubts import refuse_rows_in_doubt

    ledger = _ledger_of(stack)
    if ledger is None:
        console.print(
            f"(stack {stack.name} has no LedgerTableName output: rows in doubt of {name} could"
            " not be looked for; update the stack to deploy this version)",
            markup=False,
        )
        return
    try:
        refuse_rows_in_doubt(ledger, stack.bucket, name, stack_args, again, csv_file=csv_file)
    except RowsInDoubt as refused:
        raise RowsInDoubtRefused(f"{command}: {refused.message}") from None
    except LedgerError as error:
        raise AwsCommandError(
            f"{command}: the stack's ledger could not be read to look for rows in doubt:"
            f" {error}. Nothing was uploaded or started: run the command again once it can be"
            " read (or with --retry-unknown, which sends rows in doubt again)"
        ) from error


@aws.command("settle")
@click.argument(
    "csv_file",
    metavar="CSV_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
)
@_stack_option
@_region_option
@settle_options("SES's sending events (or its recipient) show arrived", "send or redrive")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def settle(
    csv_file: pathlib.Path,
    stack_name: str,
    region: str | None,
    sent_rows: Choice | None,
    not_sent_rows: Choice | None,
    as_json: bool,
) -> None:
    """List the rows of CSV_FILE in doubt on the stack (a Lambda ended as it sent them, and
    the ledger could not record them as sent), or settle them once SES's events were checked.

    The listing names each as settle takes it: its row number, or ROW:LETTER (the start of its
    letter's key in the ledger) where two letters in doubt share a row, or the file's row of
    that number holds another address (rows moved between runs)."""
    from mailmatrix import stack_doubts

    if sent_rows is not None and not_sent_rows is not None:
        raise click.UsageError("give --sent or --not-sent, not both: settle one kind at a time")
    stack = Stack.describe(stack_name, region)
    ledger = _ledger_of(stack)
    if ledger is None:
        raise AwsCommandError(
            f"stack {stack.name}: no LedgerTableName output, so its ledger cannot be read."
            " Nothing was settled: update the stack (deploy this version), then run the"
            " command again"
        )
    stack_args = _stack_args(stack_name, region)
    rows = sent_rows if sent_rows is not None else not_sent_rows
    try:
        if rows is None:
            _list_doubts(ledger, stack, csv_file, stack_args, as_json)
            return
        done = stack_doubts.settle(
            ledger, stack.bucket, csv_file, rows, stack_args, sent=sent_rows is not None
        )
    except NotSettled as error:
        _not_settled(error.message, exits.USAGE)
    except InputFileError as error:
        _not_settled(error.message, exits.INPUT_UNUSABLE)
    except LedgerError as error:
        _not_settled(
            f"{error}: nothing was settled; run it again (an OperatorPolicy from before this"
            " version does not grant what settle needs: update the stack)",
            exits.RUN_FAILED,
        )
    console = make_console()
    print_settled(console, done, sent=sent_rows is not None, as_json=as_json)
    if as_json:
        return
    then = (
        "an `aws send` or `aws redrive` of the file skips them, and counts them as sent"
        if sent_rows is not None
        else "the next `aws send` or `aws redrive` of the file sends them, as rows never tried"
        " (a row no longer in the file is not sent)"
    )
    console.print(f"Recorded in the stack's ledger: {then}.")


def _list_doubts(
    ledger: Any, stack: Stack, csv_file: pathlib.Path, stack_args: list[str], as_json: bool
) -> None:
    """Print the file's rows in doubt on the stack, those being sent now, and the commands
    that settle them."""
    from mailmatrix import stack_doubts

    found = stack_doubts.doubts_of_file(ledger, stack.bucket, csv_file)
    live = sorted({doubt.row for doubt in found.doubts if doubt.live})
    if as_json:
        shown: dict[str, Any] = {
            "file": str(csv_file),
            "stack": stack.name,
            "in_doubt": [row.to_dict() | {"ses_event": row.evidence} for row in found.rows],
            "being_sent": live,
        }
        click.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    console = make_console()
    if not found.rows and not ledger.has_entries(found.campaign):
        console.print(
            f"{csv_file.name}: no file of this name was sent to the stack {stack.name}, so none"
            " of its rows is in doubt there (a file is known there by its name, as `aws send`"
            " uploaded it).",
            markup=False,
        )
    elif not found.rows:
        console.print(f"No row of {csv_file.name} is in doubt on the stack {stack.name}.")
    else:
        console.print(
            f"Rows of {csv_file.name} in doubt on the stack {stack.name} (their letter may have"
            f" gone out, and the ledger has them as not sent): {len(found.rows)}"
        )
        for row in found.rows:
            console.print(f"  {doubt_line(row.to_dict())}; settle names it {row.settle_as}")
            if row.evidence:
                console.print(f"    {row.evidence}", markup=False)
        names = [row.settle_as for row in found.rows]
        console.print(
            f"Check {stack_doubts.LOG_OF} for them, then record what they say:", markup=False
        )
        for said, sent in (("arrived", True), ("did not arrive", False)):
            command = stack_doubts.settle_command(str(csv_file), stack_args, names, sent=sent)
            console.print(f"  {said}: {command}")
        console.print(
            "(Give only the rows of each kind.) Until they are settled, `aws send` and"
            " `aws redrive` of the file are refused, but with --retry-unknown, which sends"
            " them again, each marked as a possible duplicate."
        )
    if live:
        rows = ", ".join(str(row) for row in live)
        console.print(
            "Being sent by a run now (their lease has not ended; in doubt if it ends so):"
            f" row(s) {rows}"
        )


def _not_settled(said: str, code: int) -> NoReturn:
    """Say why nothing was settled, as `settle` says it, and exit with ``code``."""
    click.echo(f"{program()} aws settle: {said}", err=True)
    sys.exit(code)


commands: list[click.Command] = [aws]
