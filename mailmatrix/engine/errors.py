"""Errors raised while a state machine runs, carrying the ASL error name and cause."""

from __future__ import annotations

import json
from typing import Any

from mailmatrix.errors import EngineError

# The States.* error names the engine raises (States Language specification, "Errors";
# https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
RUNTIME = "States.Runtime"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
BRANCH_FAILED = "States.BranchFailed"
ITEM_READER_FAILED = "States.ItemReaderFailed"
RESULT_WRITER_FAILED = "States.ResultWriterFailed"
EXCEED_TOLERATED_FAILURE = "States.ExceedToleratedFailureThreshold"
PERMISSIONS = "States.Permissions"

# The error of an execution whose engine could not write its records in the store (a full
# disk, a file size limit): an engine's own, as Engine.ProcessEnded is; a redrive goes on.
RECORDS_NOT_WRITTEN = "Engine.RecordsNotWritten"

# "States.ALL ... does not match States.Runtime" and the terminal data-limit error
# (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
NOT_MATCHED_BY_ALL = frozenset({RUNTIME, DATA_LIMIT_EXCEEDED})

# How much of one cause the commands print: whole messages (a halt's names the batch that
# halted by its execution ARN and ends with when to redrive), not pages of them. Step
# Functions keeps up to 32,768 characters of a cause.
SHOWN_CAUSE_CHARS = 2000


def cause_message(cause: Any) -> Any:
    """The message of a Lambda error's cause, which is a JSON document with a stack trace;
    any other cause as it is."""
    if not isinstance(cause, str):
        return cause
    try:
        document = json.loads(cause)
    except json.JSONDecodeError:
        return cause
    if isinstance(document, dict) and "errorMessage" in document:
        return str(document["errorMessage"])
    return cause


class StatesError(EngineError):
    """An error inside a running state machine: `error` is the ASL name, `cause` the text."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class ExecutionAborted(BaseException):
    """The execution was stopped (Ctrl-C or SIGTERM locally; StopExecution on AWS).

    A BaseException, like the KeyboardInterrupt it stands for, so no Retry or Catch of the
    definition can intercept it. ``state_name``, ``state_input`` and ``map_run_id`` are set on
    the way out so a redrive resumes at the stopped state (a Map Run reruns what did not run).
    """

    def __init__(self, map_run_id: str | None = None) -> None:
        super().__init__("execution aborted")
        self.map_run_id = map_run_id


class RecordNotWritten(OSError):
    """A record of the store (an execution, its history, a Map Run and its children) could
    not be written; ``filename`` names the record's file, whatever file the write failed in
    (a temporary one beside it, say). An OSError, so that what catches those (the commands,
    a look at an execution) takes it as before; the engine ends the execution with it as
    RECORDS_NOT_WRITTEN, which no Retry or Catch of the definition sees."""

    @property
    def cause(self) -> str:
        """The file, and why it could not be written (the execution's cause)."""
        from mailmatrix.disk import write_fault

        return f"cannot write {self.filename}: {write_fault(self)}"
