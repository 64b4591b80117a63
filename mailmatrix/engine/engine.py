"""The Engine: start, redrive, list and describe executions persisted under a store directory."""

from __future__ import annotations

import json
import logging
import pathlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from mailmatrix.engine import definition as definitions
from mailmatrix.engine.distributed import MapRunner, child_arn, child_name
from mailmatrix.engine.errors import (
    RECORDS_NOT_WRITTEN,
    ExecutionAborted,
    RecordNotWritten,
    StatesError,
)
from mailmatrix.engine.interpreter import EventLog, Hooks, Interpreter, Scope, dumps, now_iso
from mailmatrix.engine.listener import Notifier
from mailmatrix.engine.registry import ACCOUNT, REGION, ResourceRegistry
from mailmatrix.engine.store import ExecutionStore
from mailmatrix.errors import EngineError
from mailmatrix.processes import running, this_process

logger = logging.getLogger(__name__)

# "Maximum input or output size for a task, state, or execution: 256 KiB"
# (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html).
_INPUT_LIMIT = 256 * 1024
REDRIVABLE = ("FAILED", "TIMED_OUT", "ABORTED")


class ExecutionRecord(dict):
    """An execution record: the persisted dict, also readable through attributes.

    ``record["status"]`` and ``record.status`` are the same; ``record.history`` holds the
    parent execution's history events (not persisted in execution.json, see history.jsonl).
    """

    history: list[dict[str, Any]]

    def __init__(self, data: dict[str, Any], history: list[dict[str, Any]] | None = None):
        super().__init__(data)
        self.history = history or []

    @property
    def execution_id(self) -> str:
        """The execution's name, its id in the store."""
        return str(self["name"])

    @property
    def execution_arn(self) -> str:
        """The execution's ARN ($$.Execution.Id)."""
        return str(self["executionArn"])

    @property
    def status(self) -> str:
        """RUNNING, SUCCEEDED, FAILED or TIMED_OUT."""
        return str(self["status"])

    @property
    def output(self) -> Any:
        """The execution's output (None unless it succeeded)."""
        return self.get("output")

    @property
    def error(self) -> str | None:
        """The error name of a failed execution."""
        return self.get("error")

    @property
    def cause(self) -> str | None:
        """The cause of a failed execution."""
        return self.get("cause")

    @property
    def redrive_count(self) -> int:
        """How many times the execution was redriven."""
        return int(self.get("redriveCount", 0))


class Engine:
    """Runs state machine definitions locally and keeps their executions on disk."""

    def __init__(
        self,
        store_dir: pathlib.Path | str,
        registry: ResourceRegistry,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = ExecutionStore(store_dir)
        self.registry = registry
        self.sleep = sleep

    def start(
        self,
        definition_text: str,
        input_dict: Any = None,
        name: str | None = None,
        substitutions: dict[str, str] | None = None,
        listener: Any = None,
        state_machine_name: str = "LocalStateMachine",
    ) -> ExecutionRecord:
        """Run a definition to its end and return the execution record."""
        machine = definitions.load(definition_text, substitutions)
        data = {} if input_dict is None else input_dict
        text = dumps(data)
        if len(text.encode("utf-8")) > _INPUT_LIMIT:
            raise EngineError(f"engine: execution input is above {_INPUT_LIMIT} bytes")
        execution_id = name or str(uuid.uuid4())
        record = {
            "name": execution_id,
            "executionArn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{state_machine_name}:"
            f"{execution_id}",
            "stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:"
            f"{state_machine_name}",
            "stateMachineName": state_machine_name,
            "status": "RUNNING",
            "startDate": now_iso(),
            "input": data,
            "definition": definitions.substitute(definition_text, substitutions),
            "redriveCount": 0,
            "engine": this_process(),
        }
        self.store.create(record)
        log = self._log(execution_id, listener, first_id=1)
        log.add(
            "ExecutionStarted",
            {
                "input": text,
                "inputDetails": {"truncated": False},
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/local-engine",
            },
        )
        return self._run(
            record, machine, data, log, listener, start_at=None, map_runs={}, partials={}
        )

    def redrive(self, execution_id: str, listener: Any = None) -> ExecutionRecord:
        """Rerun a failed execution from the state that failed, as RedriveExecution does."""
        record = self._settled(self.store.load(execution_id))
        if record["status"] not in REDRIVABLE:
            raise EngineError(
                f"engine: redrive {execution_id}: execution is {record['status']} and cannot be "
                "redriven"
            )
        failed_at = record.get("failedState")
        if not failed_at:
            raise EngineError(f"engine: redrive {execution_id}: no failed state was recorded")
        machine = definitions.load(record["definition"])
        history = self.store.history(execution_id)
        record.update(
            status="RUNNING",
            redriveCount=record.get("redriveCount", 0) + 1,
            redriveDate=now_iso(),
            engine=this_process(),
        )
        for key in ("stopDate", "error", "cause", "output"):
            record.pop(key, None)
        self.store.save(record)
        log = self._log(execution_id, listener, first_id=len(history) + 1)
        log.add("ExecutionRedriven", {"redriveCount": record["redriveCount"]})
        map_runs = {failed_at["state"]: failed_at["mapRunId"]} if failed_at.get("mapRunId") else {}
        return self._run(
            record,
            machine,
            failed_at["input"],
            log,
            listener,
            start_at=failed_at["state"],
            map_runs=map_runs,
            partials={
                failed_at["state"]: {int(k): v for k, v in failed_at.get("completed", {}).items()}
            },
        )

    def list_executions(self, *, with_data: bool = False) -> list[dict[str, Any]]:
        """Every execution record in the store, oldest first (without definition and data,
        but with the execution's input and output if ``with_data``)."""
        keep: tuple[str, ...] = (
            "name",
            "executionArn",
            "stateMachineName",
            "status",
            "startDate",
            "stopDate",
            "redriveCount",
            "redriveDate",
            "error",
        )
        if with_data:
            keep += ("input", "output")
        records = [self._settled(r) for r in self.store.list_records()]
        return [{k: r[k] for k in keep if k in r} for r in records]

    def describe(self, execution_id: str) -> ExecutionRecord:
        """The full record of one execution, with its Map Runs and history."""
        record = self._settled(self.store.load(execution_id))
        runs = self.store.map_runs(execution_id)
        if record.get("status") != "RUNNING":
            runs = [self._ended_map_run(record, run) for run in runs]
        record["mapRuns"] = runs
        return ExecutionRecord(record, self.store.history(execution_id))

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        """The history events of one execution."""
        return self.store.history(execution_id)

    def child_execution_arns(self, execution_id: str) -> set[str]:
        """The ARNs of every child workflow of an execution's Map Runs, started or not.

        Each item's child keeps its ARN in every redrive, so this holds the children that a
        killed run started but never recorded too.
        """
        arns: set[str] = set()
        for run in self.store.map_runs(execution_id):
            arn = run["mapRunArn"]
            arns.update(child_arn(arn, child_name(arn, i)) for i in range(run.get("total") or 0))
        return arns

    def map_run_children(self, execution_id: str, map_run_id: str) -> list[dict[str, Any]]:
        """The latest record of each child workflow of a Map Run, in item order."""
        children = self.store.children(execution_id, map_run_id)
        return [children[i] for i in sorted(children)]

    # ---- internals ---------------------------------------------------------------------

    def _settled(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record``, marked ABORTED if it is RUNNING but the process that ran it is gone.

        A process killed outright (SIGKILL, a machine restart) leaves its execution RUNNING
        for ever; Step Functions itself never dies. The state it was in (the earliest entered
        and not exited) becomes the failed state, so a redrive resumes there. It ended when
        it last wrote a record, as far as the store can tell; not when it was looked at.
        """
        if record.get("status") != "RUNNING" or running(record.get("engine")):
            return record
        history = self.store.history(record["name"])
        open_states: dict[str, Any] = {}
        for event in history:
            if "stateEnteredEventDetails" in event:
                details = event["stateEnteredEventDetails"]
                open_states.setdefault(details["name"], json.loads(details.get("input") or "null"))
            elif "stateExitedEventDetails" in event:
                open_states.pop(event["stateExitedEventDetails"]["name"], None)
        if not open_states:
            return record
        state, data = next(iter(open_states.items()))
        runs = [r for r in self.store.map_runs(record["name"]) if r.get("stateName") == state]
        engine = record.get("engine") or {}
        cause = f"the engine process {engine.get('pid')} ended while the execution ran"
        stopped = self.store.last_written(record["name"]) or now_iso()
        record.update(status="ABORTED", stopDate=stopped, error="Engine.ProcessEnded")
        record["cause"] = cause
        record["failedState"] = {
            "state": state,
            "input": data,
            "mapRunId": runs[-1]["id"] if runs else None,
            "completed": {},
        }
        try:
            log = self._log(record["name"], None, first_id=len(history) + 1)
            log.add("ExecutionAborted", {"error": "Engine.ProcessEnded", "cause": cause})
            self.store.save(record)
        except OSError as error:
            # A full disk (what ended the run, often): the commands that only look still show
            # it as it is, ABORTED; it is written by the first of them once there is room.
            logger.warning("engine: execution %s ended, not recorded: %s", record["name"], error)
            return record
        logger.debug("engine: execution %s left RUNNING by a process that ended", record["name"])
        return record

    def _unrecorded(
        self,
        record: dict[str, Any],
        error: RecordNotWritten,
        log: EventLog,
        state: str,
        data: Any,
    ) -> ExecutionRecord:
        """End the execution FAILED as RECORDS_NOT_WRITTEN: ``error`` kept one of its records
        from being written. The end is recorded if it still can be; if not, the execution is
        taken as ended when it is next looked at (see _settled). Either way a redrive goes on
        from the state it was in (``state``, with its input ``data``, where nothing else says).
        """
        record.update(
            status="FAILED", stopDate=now_iso(), error=RECORDS_NOT_WRITTEN, cause=error.cause
        )
        record["failedState"] = {
            "state": getattr(error, "state_name", state),
            "input": getattr(error, "state_input", data),
            "mapRunId": getattr(error, "map_run_id", None),
            "completed": {},
        }
        try:
            log.add("ExecutionFailed", {"error": RECORDS_NOT_WRITTEN, "cause": error.cause})
            self.store.save(record)
        except RecordNotWritten as again:
            logger.warning("engine: execution %s failed, not recorded: %s", record["name"], again)
        logger.debug("execution %s failed: %s", record["name"], error.cause)
        return ExecutionRecord(record, self.store.history(record["name"]))

    def _ended_map_run(self, record: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
        """``run`` of the execution ``record``, which has ended: ABORTED if still RUNNING, as
        Step Functions aborts the Map Runs of an execution that stops.

        Such a run is one whose process was killed: its counts are the last snapshot, taken
        every few seconds, and its running children never finished. They are counted again
        from the children stored as each finished; the rest are pending (which of them had
        started is not recorded), so that the counts add up to the total. Not written back:
        a redrive starting meanwhile owns the stored run.
        """
        if run.get("status") != "RUNNING":
            return run
        children = self.store.child_summaries(record["name"], run["id"], ("status",))
        succeeded = sum(1 for child in children.values() if child.get("status") == "SUCCEEDED")
        failed = len(children) - succeeded
        total = int(run.get("total") or 0)
        return {
            **run,
            "status": "ABORTED",
            "stopDate": run.get("stopDate") or record.get("stopDate"),
            "succeeded": succeeded,
            "failed": failed,
            "running": 0,
            "pending": max(0, total - succeeded - failed),
        }

    def _log(self, execution_id: str, listener: Any, first_id: int) -> EventLog:
        notifier = Notifier(execution_id, listener)

        def sink(event: dict[str, Any]) -> None:
            self.store.append_event(execution_id, event)
            notifier.event(event)

        log = EventLog(sink, first_id=first_id)
        log.notifier = notifier  # type: ignore[attr-defined]
        return log

    def _run(
        self,
        record: dict[str, Any],
        machine: dict[str, Any],
        data: Any,
        log: EventLog,
        listener: Any,
        start_at: str | None,
        map_runs: dict[str, str],
        partials: dict[str, dict[int, Any]],
    ) -> ExecutionRecord:
        notifier: Notifier = log.notifier  # type: ignore[attr-defined]
        map_runner = MapRunner(self.store, notifier, record["stateMachineName"])
        began = time.monotonic()
        slept = [0.0]

        def sleep(seconds: float) -> None:
            slept[0] += seconds
            self.sleep(seconds)

        def expired() -> bool:
            # Elapsed time counts the waits asked for, so an injected sleep still expires.
            elapsed = max(time.monotonic() - began, slept[0])
            return "TimeoutSeconds" in machine and elapsed > machine["TimeoutSeconds"]

        interp = Interpreter(Hooks(self.registry, sleep, map_runner))
        context = {
            "Execution": {
                "Id": record["executionArn"],
                "Input": record["input"],
                "Name": record["name"],
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/local-engine",
                "StartTime": record["startDate"],
                "RedriveCount": record.get("redriveCount", 0),
            },
            "StateMachine": {"Id": record["stateMachineArn"], "Name": record["stateMachineName"]},
        }
        if record.get("redriveDate"):
            context["Execution"]["RedriveTime"] = record["redriveDate"]
        scope = Scope(
            log,
            context,
            record["name"],
            top=True,
            redrive_map_runs=map_runs,
            redrive_partials=partials,
            expired=expired,
        )
        try:
            output, text = interp.run_machine_text(machine, data, scope, start_at=start_at)
        except ExecutionAborted as aborted:
            log.add("ExecutionAborted", {"error": "Aborted", "cause": "stopped by the user"})
            record.update(status="ABORTED", stopDate=now_iso())
            record["failedState"] = {
                "state": getattr(aborted, "state_name", start_at or machine["StartAt"]),
                "input": getattr(aborted, "state_input", data),
                "mapRunId": aborted.map_run_id,
                "completed": {},
            }
            self.store.save(record)
            return ExecutionRecord(record, self.store.history(record["name"]))
        except StatesError as err:
            timed_out = getattr(err, "execution_timeout", False)
            log.add(
                "ExecutionTimedOut" if timed_out else "ExecutionFailed",
                {"error": err.error, "cause": err.cause},
            )
            record.update(
                status="TIMED_OUT" if timed_out else "FAILED",
                stopDate=now_iso(),
                error=err.error,
                cause=err.cause,
            )
            record["failedState"] = {
                "state": getattr(err, "state_name", start_at or machine["StartAt"]),
                "input": getattr(err, "state_input", data),
                "mapRunId": getattr(err, "map_run_id", None),
                # Outputs of the branches / inline iterations that succeeded (redrive skips them).
                "completed": {str(k): v for k, v in getattr(err, "completed", {}).items()},
            }
            self.store.save(record)
            logger.debug("execution %s failed: %s", record["name"], err.error)
            return ExecutionRecord(record, self.store.history(record["name"]))
        except RecordNotWritten as unwritten:
            return self._unrecorded(record, unwritten, log, start_at or machine["StartAt"], data)
        log.add("ExecutionSucceeded", {"output": text, "outputDetails": {"truncated": False}})
        record.update(status="SUCCEEDED", stopDate=now_iso(), output=output)
        record.pop("failedState", None)
        self.store.save(record)
        return ExecutionRecord(record, self.store.history(record["name"]))


__all__ = ["Engine"]
