"""How a command given --json says it failed: one JSON object on standard output, whatever
the path (a refusal before anything ran, a usage error, a run that ended failing), with what a
script branches on: ``ok``, ``exit_code``, ``failure`` ({kind, message}) and ``action``."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from mailmatrix.cli import exits

# What a script may do next (README, "Exit codes and actions").
RETRY = "retry"  # safe to run again as is: a server unreachable, a full disk, a quota, 4xx
SETTLE = "settle"  # rows in doubt: a person checks the mail server's log, then settles
FIX_INPUT = "fix_input"  # the file, the templates or the attachments
FIX_SETTINGS = "fix_settings"  # the options, the server's URL or login, the workdir
NONE = "none"  # nothing to do: the run did what it was asked

_SETTLE = {"RowsInDoubt", "OutcomesUnknown", "OutcomeUnknown", "LedgerLost"}
_RETRY = {
    "ServiceUnreachable",
    "CannotConnect",
    "Throttled",
    "TransientSendError",
    "ClaimBusy",
    "LedgerError",
    "LedgerNotWritten",
    "WorkdirNotWritable",
    "OSError",
    "QuotaExhausted",
    "Stopped",
}
_INPUT = {
    "InputFileError",
    "TemplateError",
    "TemplateSetsChanged",
    "NothingToSend",
    "AttachmentChanged",
    "AttachmentUnreadable",
    "AttachmentNotPdf",
    "DemoTemplates",
    "PlaceholderSender",
    "PlaceholderConstant",
    "NameLikeAnother",
    "NotSettled",
    "UploadReplaced",
}


def action_of(kind: str | None, code: int, message: str = "") -> str:
    """What a script does after a failure of ``kind`` that exited ``code``."""
    if code == exits.OK:
        return NONE
    if kind == "AccountSendingHalted":  # the halt's reason tells a quota from a login refused
        login = any(word in message.lower() for word in ("login", "auth", "password", "530"))
        return FIX_SETTINGS if login else RETRY
    if kind in _SETTLE:
        return SETTLE
    if kind in _RETRY or code == exits.STOPPED:
        return RETRY
    if kind == "ConfigurationError":  # a setting checked with the file: --attachments, a password
        return FIX_SETTINGS
    if kind in _INPUT or code in (exits.INPUT_UNUSABLE, exits.ROWS_REJECTED):
        return FIX_INPUT
    if code == exits.ROWS_FAILED:  # held as failed by a plain rerun: it would send nothing
        return FIX_INPUT  # a person reads the rows' reasons, then runs with --retry-failed
    return FIX_SETTINGS


def failure(kind: str, message: str, code: int, action: str | None = None) -> dict[str, Any]:
    """The JSON object of a command that failed with ``kind`` before it had a result; its
    ``action`` as action_of says, unless given."""
    return {
        "ok": False,
        "exit_code": code,
        "error": kind,
        "message": message,
        "failure": {"kind": kind, "message": message},
        "action": action or action_of(kind, code, message),
    }


def refuse(
    command: str, kind: str, message: str, code: int, *, as_json: bool, action: str | None = None
) -> NoReturn:
    """Say why ``command`` did nothing (one JSON object on stdout with ``as_json``, else a
    line on stderr) and exit with ``code``."""
    if as_json:
        click.echo(json.dumps(failure(kind, message, code, action), ensure_ascii=False))
    else:
        click.echo(f"mailmatrix {command}: {message}", err=True)
    sys.exit(code)


class JsonCommand(click.Command):
    """A command whose usage errors (a missing file, a bad option) are one JSON object on
    standard output when --json is among its arguments, as its other failures are."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        json_asked = "--json" in args
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            if not json_asked:
                raise
            kind = "BadParameter" if isinstance(error, click.BadParameter) else "UsageError"
            # A CSV_FILE that is not there: the input to fix, not a setting
            action = FIX_INPUT if _names_the_file(error) else None
            message = error.format_message()
            refuse(str(info_name), kind, message, exits.USAGE, as_json=True, action=action)


def _names_the_file(error: click.UsageError) -> bool:
    """Whether ``error`` is about the command's CSV_FILE argument (a file not found)."""
    param = getattr(error, "param", None)
    return isinstance(error, click.BadParameter) and getattr(param, "name", None) == "csv_file"
