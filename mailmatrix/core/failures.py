"""Why an execution stopped, and when a redrive makes sense: the words of the failure alert,
of a local run that failed and of `mailmatrix aws status`.

A Distributed Map whose batches fail ends with States.ExceedToleratedFailureThreshold, and its
cause says only that the threshold was exceeded: the operator needs the batches' own errors
(an account halt and its reason, a throttle that outlasted the retries...). The callers
gather those (from the local engine, or from Step Functions' child executions) and hand them
here as (error, message) pairs, the message without Lambda's stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailmatrix.ports import Notification

# The Map state's own error when too many batches failed: the symptom, not the cause.
THRESHOLD_EXCEEDED = "States.ExceedToleratedFailureThreshold"
# How much of one message is shown: whole messages (a halt's ends with when to redrive), not
# pages of them.
MESSAGE_CHARS = 2000

# How a mail server's adapter says, after the check before sending passed, that the server
# no longer answers a connection (mailmatrix.adapters.mailer_smtp): stopped, or restarting.
UNREACHABLE_WORDS = "the mail server could not be reached"

# Errors that a later try may not meet again: a redrive can go at once.
_PASSING = frozenset(
    {
        "TransientSendError",
        "LedgerError",
        "StorageError",
        "Sandbox.Timedout",
        "States.Timeout",
        "States.TaskFailed",
        "Lambda.Unknown",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ClientExecutionTimeoutException",
    }
)
# How a drill's used-up quota (``--faults quota-after=N``) begins its message, in the failed
# row's batch and in every batch its halt holds: the account's real quota is not used up.
DRILL_QUOTA = "faults: quota-after="
# The code of the halt such a drill records (a new run without the drill lifts it).
DRILL_QUOTA_CODE = "DrillQuota"

# When to redrive an execution that only a drill's used-up quota stopped: not at all (whoever
# prints it offers the run again without --faults instead of the redrive).
DRILL_QUOTA_ADVICE = (
    "the daily quota ran out in a drill (--faults quota-after), not in the account: to "
    "send the rest, run the file again without --faults (that run lifts the drill's "
    "halt; rows already sent are skipped). A redrive goes on with the drill's faults, "
    "so it stops the same way after as many messages."
)

# The code of the halt a local run records when the operator stops it (Ctrl-C, SIGTERM,
# SIGHUP): its batches stop after the email they are on.
STOPPED_BY_OPERATOR = "StoppedByOperator"

# The code of the halt a local run records when its engine cannot write the execution's
# records (a full disk, a file size limit): its batches stop after the email they are on.
RECORDS_NOT_WRITTEN = "RecordsNotWritten"
# The engine's error for such an execution (mailmatrix.engine.errors).
ENGINE_RECORDS_NOT_WRITTEN = "Engine.RecordsNotWritten"
# The engine's error for an execution whose process ended while it ran (Engine._settled).
ENGINE_PROCESS_ENDED = "Engine.ProcessEnded"

# The code of the halt a batch records when the mail service refused every try of several rows
# in a row (send_batch), and the words its reason begins with.
SERVICE_REFUSING = "ServiceRefusing"
REFUSING_WORDS = "the mail service refused every try of"

# The code of the halt a batch records when several rows in a row ended with an unknown
# outcome (OutcomeUnknown: the service took their tries without answering), and the words its
# reason begins with.
OUTCOMES_UNKNOWN = "OutcomesUnknown"
UNKNOWN_WORDS = "the mail service confirmed no try of"

# How a mail server's halt says it takes no login, given a URL with one (mailer_smtp).
NO_SMTP_AUTH = "the server offers no SMTP AUTH"

# The error of a mail server that refused the connection when checked before sending.
CANNOT_CONNECT = "CannotConnect"

# Why a file of a local run could not be written for want of room, as its error says it
# (mailmatrix.disk): the disk full, the user's quota used up, or the file size limit.
DISK_FULL = "the disk holding it is full"
QUOTA_USED = "the disk quota of this user is used up"
SIZE_LIMIT = "the file size limit of this process"
# What to do then, and why no letter went out twice (a row is claimed in the ledger first).
NO_ROOM_REMEDY = "free space on its disk, or raise the file size limit (ulimit -f)"
# And when it could not be written for another reason (its permissions, an immutable flag, a
# read-only file system); see write_remedy.
WRITABLE_REMEDY = (
    "make the file named above and its folder writable (for the ledger, its -wal and -shm"
    " files too; chmod u+w, and chattr -i as root for an immutable one)"
)
NOT_SENT_TWICE = (
    "Nothing was sent twice: each row is claimed in the ledger before it is sent, so a row"
    " whose claim could not be written was not sent, and a row sent when the ledger could not"
    " record it was kept as sent in a journal beside it (ledger.sqlite3-sent), which a"
    " redrive reads: it is not sent again."
)
# How a ledger's error says a letter it could record neither in the ledger nor in its
# journal (mailmatrix.adapters.ledger_sqlite): "the letter of row 12 was sent but ...".
IN_DOUBT_WORDS = "was sent but could not be recorded"
_IN_DOUBT_ROW = re.compile(r"the letter of row (\d+) " + IN_DOUBT_WORDS)

# The error of a file of the run that could not be written (mailmatrix.errors.FileNotWritten).
FILE_NOT_WRITTEN = "FileNotWritten"

# The state machine's error names, in the operator's words (the name stays beside them: it
# is what the console, the history, the report and the AWS documentation call it).
_PLAIN = {
    THRESHOLD_EXCEEDED: "more batches of rows failed than the campaign tolerates",
    "States.Timeout": "a step ran longer than its time limit",
    "States.TaskFailed": "a step failed",
    "States.Runtime": "the state machine met an error in its own data",
    "States.DataLimitExceeded": "a step's data grew past the 256 KiB Step Functions allows",
    "States.ItemReaderFailed": "the validated rows could not be read",
    "States.ResultWriterFailed": "the batches' results could not be written",
    "States.Permissions": "a step was not allowed to do what it needed",
    # and MailMatrix's own that end a run before it sends
    "InputFileError": "the file cannot be used as it is",
    "TemplateError": "the templates cannot be used with this file",
    "TemplateSetsChanged": "the templates lack a set that earlier runs used",
    "NameLikeAnother": "a file of a name alike this one's was run before",
    "DemoTemplates": "the templates are the bundled demo's, and the file names real people",
    "PlaceholderSender": "the sender is a placeholder at a domain reserved for examples",
    "PlaceholderConstant": "a constant of the templates is a placeholder address",
    "ConfigurationError": "a setting is missing or wrong",
    "NothingToSend": "no row of the file can be sent",
    "AccountSendingHalted": "the mail service will not take this run's mail",
    "TransientSendError": "the mail service failed for now",
    CANNOT_CONNECT: "the mail server cannot be reached",
    ENGINE_RECORDS_NOT_WRITTEN: "the engine could not write the execution's records in the workdir",
    ENGINE_PROCESS_ENDED: "the run's process ended while it ran (killed, or out of memory)",
    "LedgerNotWritten": "the send ledger cannot be written",
    FILE_NOT_WRITTEN: "a file of the run could not be written",
}


def plain_error(error: str | None) -> str:
    """``error`` as the operator reads it: what it means, then its name in brackets; an error
    without words here as it is."""
    if error in _PLAIN:
        return f"{_PLAIN[error]} ({error})"
    return error or ""


def no_room_in(message: str) -> bool:
    """Whether ``message`` says a file could not be written for want of room (a full disk,
    a used-up quota, the file size limit)."""
    return any(words in message for words in (DISK_FULL, QUOTA_USED, SIZE_LIMIT))


def write_remedy(*messages: str) -> str:
    """What to do first about a file of the run that could not be written, as its error
    ``messages`` say why: make room when it had none (NO_ROOM_REMEDY), else make it writable
    (WRITABLE_REMEDY)."""
    return NO_ROOM_REMEDY if any(map(no_room_in, messages)) else WRITABLE_REMEDY


def generic_cause(error: str | None, cause: str) -> bool:
    """Whether ``cause`` only repeats what the error says (the Map's cause when its batches
    failed): the batches' own errors, shown with it, are the cause."""
    return error == THRESHOLD_EXCEEDED and "threshold was exceeded" in cause


# The errors of a ledger that could not be written: LedgerNotWritten for a cause no retry
# heals (no room, no write access), LedgerError for another (and before LedgerNotWritten).
_LEDGER_ERRORS = frozenset({"LedgerError", "LedgerNotWritten"})

# Errors of the file or the templates, which a redrive meets again until they are fixed.
_UNUSABLE_INPUT = frozenset({"InputFileError", "TemplateError", "NothingToSend"})


@dataclass(frozen=True)
class Stopped:
    """What stopped an execution's sending: the (error, message) of each failed batch looked
    at, how many failed batches were not looked at, how many were never started."""

    batches: Sequence[tuple[str, str]] = ()
    unseen: int = 0
    not_started: int = 0


def batches(count: int) -> str:
    """``1 batch``, ``2 batches``."""
    return f"{count} batch" if count == 1 else f"{count} batches"


def why_lines(stopped: Stopped) -> list[str]:
    """The batches' errors, most frequent first, each counted with its first message, e.g.
    ``AccountSendingHalted (4 batches): ses: Throttling: Daily message quota exceeded.``"""
    errors: dict[str, list[str]] = {}
    for error, message in stopped.batches:
        errors.setdefault(error, []).append(message)
    lines = [
        f"{error} ({batches(len(messages))}): {messages[0][:MESSAGE_CHARS]}"
        for error, messages in sorted(errors.items(), key=lambda item: -len(item[1]))
    ]
    if stopped.unseen:
        lines.append(f"{batches(stopped.unseen)} more failed (the console lists them)")
    if stopped.not_started:
        verb = "was" if stopped.not_started == 1 else "were"
        lines.append(f"{batches(stopped.not_started)} {verb} not started")
    return lines


def redrive_advice(status: str, error: str | None, message: str, stopped: Stopped) -> str:
    """When a redrive of the execution makes sense, given how it ended: its status, its own
    error and message, and its batches' errors."""
    if error == ENGINE_PROCESS_ENDED:
        return (
            "its process ended without finishing (killed, by SIGKILL or for want of memory,"
            " or the machine restarted), so nothing ended its batches cleanly: a redrive goes"
            " on from the state it was in, rows recorded as sent are skipped. A row being sent"
            " as it ended is in doubt: settle it first (show lists how), or no redrive goes on."
            " If memory ran out, free some first."
        )
    if status == "ABORTED":
        return "it was stopped on purpose: a redrive sends the rest (rows sent are skipped)."
    if status == "TIMED_OUT":
        return "it ran out of time: a redrive goes on where it stopped."
    if error == ENGINE_RECORDS_NOT_WRITTEN:
        return (
            "once the file named above can be written again (room made on its disk, or the"
            " file size limit raised): a redrive goes on where it stopped. No batch started"
            " after the failure, and those running were asked to stop after the email they"
            " were on. The counts come from the ledger: a row counted in doubt may have gone"
            " out; settle it first (the summary prints how), or no redrive goes on."
        )
    pairs = list(stopped.batches)
    if error and error != THRESHOLD_EXCEEDED:
        pairs.append((error, message))
    errors = {name for name, _ in pairs}
    if any(name in _LEDGER_ERRORS and _read_only(text) for name, text in pairs):
        return LEDGER_READ_ONLY_ADVICE
    halts = [text.casefold() for name, text in pairs if name == "AccountSendingHalted"]
    # The account's own halts first: a run without the drill does not lift theirs (the
    # ledger keeps the halt recorded last, which may be either), and meets their cause again.
    real = [text for text in halts if DRILL_QUOTA not in text]
    outbox = _outbox_of(pairs)  # before the quota: a disk quota is not the account's
    if outbox is not None:
        return outbox_advice(outbox)
    if any(UNKNOWN_WORDS in text for text in real):
        return (
            "the mail server took messages without confirming them (it dropped the connection,"
            " or did not answer, after each message): do not redrive yet. Ask its operator"
            " why, or look at what arrived: a redrive sends the rows not tried yet through the"
            " same server. The rows failed as OutcomeUnknown (named above) may have arrived,"
            " some twice: no redrive sends them; once checked, send those that did not arrive"
            " with --retry-unknown."
        )
    if any("quota" in text for text in real):
        return (
            "the 24-hour sending quota is used up, so a redrive now stops the same way. Redrive "
            "once enough of it is free again: each message counts for 24 hours after it was "
            "sent (for SES: aws sesv2 get-account shows SentLast24Hours of Max24HourSend), "
            "or once the quota has been raised."
        )
    if any(REFUSING_WORDS in text for text in real):
        return (
            "the mail service took no message for now (see above: a greylisting or busy"
            " server, one that holds this sender's mail, or an outbox that cannot be"
            " written): redrive in a few minutes, rows already sent are skipped; if it stops"
            " the same way, look into that cause first (a server: ask its operator why it"
            " refuses the mail)."
        )
    if any(NO_SMTP_AUTH.casefold() in text for text in real):
        return (
            "the mail server takes no login, and a redrive logs in again with the same URL."
            " Run the file again with the --smtp URL without its user:password@ (or with the"
            " URL of the server that needs this login): rows already sent are skipped."
        )
    if any("smtp " in text for text in real):
        return (
            "the mail server would not take mail from this run (see above: its login, or the"
            " sender), and a redrive stops the same way until that is fixed (the user and"
            " password, MAILMATRIX_SMTP_PASSWORD; a sender the server takes): redrive once it"
            " is."
        )
    if real:
        return (
            "the account could not send (see above), and a redrive stops the same way until "
            "that is fixed (sending resumed, the sender verified): redrive once it is."
        )
    if halts:
        return DRILL_QUOTA_ADVICE
    if CANNOT_CONNECT in errors:
        return (
            "once the URL names a mail server that answers as its scheme says (started, at that"
            " host and port): a redrive connects to the same URL (for another host, port or"
            " scheme, run the file again with that URL)."
        )
    if "NameLikeAnother" in errors:
        return (
            "a file of a name alike this one's (but for case, spacing or invisible characters)"
            " was run before, so a redrive meets it again. Run the file under that name if it"
            " is the same file (its rows sent are skipped), or under a name that differs by"
            " more than that if it is a new campaign."
        )
    if "DemoTemplates" in errors:
        return (
            "nothing was sent: the templates are the bundled demo's (their manifest.yaml says"
            " demo: true), and a redrive refuses them the same way. Upload your own templates"
            " over them as the cause says, then redrive (or send the file again)."
        )
    if "PlaceholderSender" in errors:
        return (
            "nothing was sent: the From address is a placeholder at a domain reserved for"
            " examples. Set one of your own as the cause says, then redrive (it validates the"
            " file again, with the new sender) or send the file again."
        )
    if "PlaceholderConstant" in errors:
        return (
            "nothing was sent: a constant of the templates (under context in their"
            " manifest.yaml) writes an address at a domain reserved for examples. Make it your"
            " own as the cause says, then redrive (it validates the file again, with the"
            " templates as they are then) or send the file again."
        )
    doubts = [text for name, text in pairs if name in _LEDGER_ERRORS and IN_DOUBT_WORDS in text]
    if doubts:
        return _in_doubt_advice(doubts)
    if any(name in _LEDGER_ERRORS and no_room_in(text) for name, text in pairs):
        return (
            f"the send ledger could not be written (see above). {NOT_SENT_TWICE} First"
            f" {NO_ROOM_REMEDY}, then redrive: rows recorded as sent are skipped."
        )
    written = [text for name, text in pairs if name == FILE_NOT_WRITTEN]
    if written:
        fix = write_remedy(*written)
        return (
            "a file of the run could not be written (see above), and a redrive meets that"
            f" again until it can be: first {fix}, then redrive (rows already sent are"
            " skipped)."
        )
    if "TemplateError" in errors and not errors & {"InputFileError", "NothingToSend"}:
        return (
            "the templates are unusable: fix them and redrive (it reads the same file), or run"
            " the file again."
        )
    if errors & _UNUSABLE_INPUT:
        return (
            "the file is unusable (see above), and a redrive reads the same file: fix the file,"
            " then run it again (a new run; rows already sent are skipped)."
        )
    if "ClaimBusy" in errors:
        return (
            "another invocation was still sending these rows: redrive once it has ended "
            "(a function runs 15 minutes at most)."
        )
    if "Throttled" in errors:
        return (
            "the mail service kept throttling after every retry: redrive in a few minutes, "
            "when it takes mail at the full rate again."
        )
    if "TransientSendError" in errors and any(UNREACHABLE_WORDS in text for _, text in pairs):
        return (
            f"{UNREACHABLE_WORDS} (see above): is it running, and is the port right? Redrive"
            " once it is back (rows already sent are skipped); a redrive before that stops the"
            " same way."
        )
    if errors and errors <= _PASSING:
        return (
            "a passing fault outlasted the retries: redrive now; if it stops the same way, "
            "look into the cause first."
        )
    return "fix the cause, then redrive: rows already sent are skipped."


def _in_doubt_advice(messages: Sequence[str]) -> str:
    """The advice of a run whose ledger could record neither in itself nor in its journal
    letters that had gone out (``messages``: the errors that say so)."""
    rows = sorted({int(row) for text in messages for row in _IN_DOUBT_ROW.findall(text)})
    which = "a row" if not rows else f"row {rows[0]}"
    if len(rows) > 1:
        which = f"rows {', '.join(map(str, rows))}"
    fix = write_remedy(*messages)
    return (
        f"the send ledger could not be written (see above), nor the journal beside it: {which}"
        " went to the mail server (or the outbox) and could not be recorded as sent. A redrive"
        " sends it again, marked as a possible duplicate, unless the server's log (or the"
        f" outbox) shows it arrived. First {fix}, look there for {which} and record what it"
        " shows (`mailmatrix settle FILE --sent ROWS` if it arrived, `--not-sent ROWS` if not),"
        " then redrive: rows recorded as sent are skipped."
    )


# How the Maildir outbox's halts begin (mailmatrix.adapters.mailer_maildir): "maildir DIR: ".
_OUTBOX_HALT = re.compile(r"maildir (.+?): cannot (?:write|make)")


def _outbox_of(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The folder of the Maildir outbox that halted the campaign as it could not be written,
    from the batches' (error, message) ``pairs``; None when no such halt stopped it."""
    for name, text in pairs:
        found = _OUTBOX_HALT.search(text) if name == "AccountSendingHalted" else None
        if found:
            return found.group(1)
    return None


def outbox_advice(folder: str) -> str:
    """When to redrive an execution whose outbox ``folder`` could not be written."""
    return (
        f"the outbox {folder} cannot be written (see above why: its permissions, an immutable"
        " flag, a read-only or full disk, or a file in the place of one of its folders new/,"
        " tmp/ and cur/), and a redrive stops the same way until it can be. Nothing was lost:"
        " a letter counts as sent only once its file is in new/, so those sent (counted"
        " above) are there, and the rows not written there are still to send, each once."
        " Make the folder writable (chmod u+w; chattr -i, as root, for an immutable one),"
        " make room on its disk, or move aside the file in a folder's place; then redrive:"
        " rows already sent are skipped."
    )


# How SQLite says a ledger file cannot be written (a read-only file, or one in a folder where
# its -wal and -shm files cannot be made).
_READ_ONLY_WORDS = ("attempt to write a readonly database", "unable to open database file")

# When to redrive an execution stopped by a ledger that cannot be written.
LEDGER_READ_ONLY_ADVICE = (
    "the ledger file cannot be written (read-only: its permissions, an immutable flag or a"
    " read-only file system; or its folder, where SQLite makes its -wal and -shm files): no"
    " passing fault, a redrive stops the same way until it can be. Each email is claimed in"
    " the ledger before it is sent, so nothing more was sent once it could not be written; one"
    " being sent just then may have gone out unrecorded (counted in doubt: the redrive sends"
    " it again, and the report marks it a possible duplicate). Make the file writable (chmod"
    " u+w; chattr -i, as root, for an immutable one), then redrive: rows already sent are"
    " skipped."
)


def _read_only(message: str) -> bool:
    """Whether a LedgerError's ``message`` says the ledger file cannot be written."""
    return any(words in message for words in _READ_ONLY_WORDS)


@dataclass(frozen=True)
class Ending:
    """How an execution ended, as Step Functions describes it (the cause without Lambda's
    stack trace)."""

    name: str
    arn: str
    status: str
    error: str | None = None
    cause: str = ""


# The headline of an execution stopped with no error of its own (StopExecution; locally
# Ctrl-C, SIGTERM or a closed terminal), or of one that timed out.
_STOPPED = "stopped before the end, a redrive sends the rest"


def failure_alert(
    ending: Ending, stopped: Stopped, *, redrive: str, console: str | None = None
) -> Notification:
    """The alert for an execution that failed, timed out or was aborted: why it stopped, when
    a redrive makes sense, and the redrive command."""
    why = why_lines(stopped)
    lines = [
        f"MailMatrix execution {ending.name} ended {ending.status}.",
        f"Error: {plain_error(ending.error) or '-'}",
        f"Cause: {ending.cause[:MESSAGE_CHARS] or '-'}",
    ]
    if why:
        lines += ["Why sending stopped:", *(f"  {line}" for line in why)]
    advice = redrive_advice(ending.status, ending.error, ending.cause, stopped)
    lines += [f"When to redrive: {advice}", f"Redrive: {redrive}", f"Execution: {ending.arn}"]
    if console:
        lines.append(f"Console: {console}")
    headline = why[0].split(" (", 1)[0] if stopped.batches else ending.error or _STOPPED
    return Notification(
        subject=f"MailMatrix execution {ending.status}: {headline}"[:100],
        message="\n".join(lines) + "\n",
        attributes={"status": ending.status},
    )
