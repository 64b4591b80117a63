"""The Distributed Map: ItemReader, ItemSelector, ItemBatcher, child workflows on a thread pool,
tolerated failures, ResultWriter, Map Run persistence and Map Run redrive.

Behaviour from the Step Functions developer guide: "Using Map state in Distributed mode"
(https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html), "ItemReader",
"ItemBatcher", "ResultWriter" and "Redriving Map Runs" pages.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from typing import Any

from mailmatrix.engine import errors as E
from mailmatrix.engine import jsonpath
from mailmatrix.engine.errors import ExecutionAborted, StatesError
from mailmatrix.engine.interpreter import (
    EventLog,
    Interpreter,
    Scope,
    check_size,
    dumps,
    item_value,
    now_iso,
)
from mailmatrix.engine.listener import Notifier
from mailmatrix.engine.reader import read_items
from mailmatrix.engine.registry import ACCOUNT, REGION
from mailmatrix.engine.store import ExecutionStore

# Distributed Map runs up to 10,000 children at once on AWS; locally threads are capped.
LOCAL_THREAD_CAP = 64
_FLUSH_EVERY = 200
_SNAPSHOT_SECONDS = 0.5


class MapRunner:
    """Runs Distributed Map states of one parent execution."""

    def __init__(self, store: ExecutionStore, notifier: Notifier, machine_name: str) -> None:
        self.store = store
        self.notifier = notifier
        self.machine_name = machine_name

    def __call__(
        self,
        interp: Interpreter,
        name: str,
        state: dict[str, Any],
        effective: Any,
        scope: Scope,
        context: dict[str, Any],
    ) -> Any:
        """Run the Map state's Map Run and return its result (array or ResultWriter details)."""
        items = self._items(interp, name, state, effective, context)
        children_inputs = self._batches(interp, state, effective, context, items)
        processor: dict[str, Any] = state.get("ItemProcessor") or state["Iterator"]
        settings = self._settings(state, effective, context)

        previous: dict[int, dict[str, Any]] = {}
        run_id = scope.redrive_map_runs.pop(name, None)
        if run_id:
            run = self.store.load_map_run(scope.execution_id, run_id)
            previous = self.store.children(scope.execution_id, run_id)
            run["redriveCount"] = run.get("redriveCount", 0) + 1
            run["status"] = "RUNNING"
            scope.log.add(
                "MapRunRedriven",
                {"mapRunArn": run["mapRunArn"], "redriveCount": run["redriveCount"]},
            )
        else:
            run_id = uuid.uuid4().hex
            label = state.get("Label", name)
            run = {
                "id": run_id,
                "mapRunArn": f"arn:aws:states:{REGION}:{ACCOUNT}:mapRun:{self.machine_name}/"
                f"{label}:{run_id}",
                "stateName": name,
                "executionId": scope.execution_id,
                "startDate": now_iso(),
                "redriveCount": 0,
            }
            scope.log.add("MapRunStarted", {"mapRunArn": run["mapRunArn"]})
        run.update(settings, total=len(children_inputs), status="RUNNING")
        self.store.save_map_run(scope.execution_id, run)
        results = self._run_children(run, processor, children_inputs, previous, interp, scope)
        return self._conclude(
            run, state, effective, context, interp, scope, results, children_inputs
        )

    # ---- items -------------------------------------------------------------------------

    def _items(
        self,
        interp: Interpreter,
        name: str,
        state: dict[str, Any],
        effective: Any,
        context: dict[str, Any],
    ) -> list[Any]:
        reader = state.get("ItemReader")
        if reader is None:
            items = jsonpath.select(state.get("ItemsPath", "$"), effective, context, "ItemsPath")
            if not isinstance(items, list):
                raise StatesError(E.RUNTIME, f"state '{name}': ItemsPath did not select an array")
            return items
        params = interp.render(reader.get("Parameters", {}), effective, context)
        config = reader.get("ReaderConfig", {})
        max_items = config.get("MaxItems")
        if "MaxItemsPath" in config:
            max_items = jsonpath.select(config["MaxItemsPath"], effective, context, "MaxItemsPath")
        get = interp.hooks.registry.object_get
        if get is None:
            raise StatesError(E.ITEM_READER_FAILED, "no object store is registered")
        try:
            data = get(params["Bucket"], params["Key"])
        except Exception as exc:  # any store failure is the reader's failure
            raise StatesError(
                E.ITEM_READER_FAILED,
                f"Unable to read s3://{params.get('Bucket')}/{params.get('Key')}: {exc}",
            ) from exc
        return read_items(data, config, max_items)

    def _batches(
        self,
        interp: Interpreter,
        state: dict[str, Any],
        effective: Any,
        context: dict[str, Any],
        items: list[Any],
    ) -> list[Any]:
        selector = state.get("ItemSelector", state.get("Parameters"))
        if selector is not None:
            items = [
                item_value(interp, selector, effective, context, i, item)
                for i, item in enumerate(items)
            ]
        batcher = state.get("ItemBatcher")
        if batcher is None:
            return items
        max_items = _number(batcher, "MaxItemsPerBatch", effective, context)
        max_bytes = _number(batcher, "MaxInputBytesPerBatch", effective, context)
        base: dict[str, Any] = {}
        if "BatchInput" in batcher:
            base["BatchInput"] = interp.render(batcher["BatchInput"], effective, context)
        overhead = len(dumps({**base, "Items": []}).encode("utf-8"))
        batches: list[Any] = []
        current: list[Any] = []
        size = overhead
        for item in items:
            item_size = len(dumps(item).encode("utf-8")) + 1
            full = (max_items and len(current) >= max_items) or (
                max_bytes and current and size + item_size > max_bytes
            )
            if full:
                batches.append({**base, "Items": current})
                current, size = [], overhead
            current.append(item)
            size += item_size
        if current:
            batches.append({**base, "Items": current})
        return batches

    @staticmethod
    def _settings(state: dict[str, Any], effective: Any, context: dict[str, Any]) -> dict:
        return {
            "maxConcurrency": _number(state, "MaxConcurrency", effective, context) or 0,
            "toleratedFailurePercentage": _number(
                state, "ToleratedFailurePercentage", effective, context
            )
            or 0,
            "toleratedFailureCount": _number(state, "ToleratedFailureCount", effective, context)
            or 0,
        }

    # ---- children ----------------------------------------------------------------------

    def _run_children(
        self,
        run: dict[str, Any],
        processor: dict[str, Any],
        inputs: list[Any],
        previous: dict[int, dict[str, Any]],
        interp: Interpreter,
        scope: Scope,
    ) -> dict[int, dict[str, Any]]:
        results = {
            i: {k: v for k, v in c.items() if k != "history"}
            for i, c in previous.items()
            if c["status"] == "SUCCEEDED"
        }
        todo = [i for i in range(len(inputs)) if i not in results]
        counts = {"succeeded": len(results), "failed": 0, "running": 0}
        total = len(inputs)
        lock = threading.Lock()
        buffer: list[dict[str, Any]] = []
        last_snapshot = [0.0]

        def publish(force: bool = False) -> None:
            run.update(counts, pending=total - sum(counts.values()))
            self.notifier.map_run(_snapshot(run))
            if force or time.monotonic() - last_snapshot[0] > _SNAPSHOT_SECONDS:
                last_snapshot[0] = time.monotonic()
                self.store.save_map_run(scope.execution_id, run)

        def flush() -> None:
            if buffer:
                self.store.append_children(scope.execution_id, run["id"], list(buffer))
                buffer.clear()

        def child(index: int) -> dict[str, Any]:
            with lock:
                counts["running"] += 1
                publish()
            record = self._child(run, processor, index, inputs[index], interp, previous.get(index))
            with lock:
                counts["running"] -= 1
                counts["succeeded" if record["status"] == "SUCCEEDED" else "failed"] += 1
                # The history goes to the store only: the result files do not need it, and
                # keeping every child's events in memory made a run's memory grow with its rows.
                results[index] = {k: v for k, v in record.items() if k != "history"}
                buffer.append(record)
                if len(buffer) >= _FLUSH_EVERY:
                    flush()
                publish()
            return record

        workers = run["maxConcurrency"] or LOCAL_THREAD_CAP
        workers = max(1, min(workers, LOCAL_THREAD_CAP, len(todo) or 1))
        aborted = False
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            pending = iter(todo)
            in_flight: set[concurrent.futures.Future] = set()
            try:
                while True:
                    while len(in_flight) < workers and not _exceeded(run, counts, total):
                        index = next(pending, None)
                        if index is None:
                            break
                        in_flight.add(pool.submit(child, index))
                    if not in_flight:
                        break
                    done, in_flight = concurrent.futures.wait(
                        in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        future.result()
            except KeyboardInterrupt:
                # Stopped: start no more children and let those in flight end, as a running
                # Lambda invocation ends after StopExecution; a redrive runs the rest.
                aborted = True
                concurrent.futures.wait(in_flight)
        with lock:
            flush()
            if aborted:
                run["status"] = "ABORTED"
            publish(force=True)
        if aborted:
            scope.log.add("MapRunAborted")
            raise ExecutionAborted(run["id"])
        return results

    def _child(
        self,
        run: dict[str, Any],
        processor: dict[str, Any],
        index: int,
        child_input: Any,
        interp: Interpreter,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        child_id = uuid.uuid4().hex if previous is None else previous["name"]
        arn = run["mapRunArn"].replace(":mapRun:", ":execution:", 1).rsplit(":", 1)[0]
        arn = f"{arn}:{child_id}"
        started = now_iso()
        log = EventLog()
        redrives = 0 if previous is None else previous.get("redriveCount", 0) + 1
        context = {
            "Execution": {
                "Id": arn,
                "Input": child_input,
                "Name": child_id,
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/local-engine",
                "StartTime": started,
                "RedriveCount": redrives,
            },
            "StateMachine": {"Id": run["mapRunArn"], "Name": run["stateName"]},
        }
        record: dict[str, Any] = {
            "index": index,
            "name": child_id,
            "executionArn": arn,
            "startDate": started,
            "redriveCount": redrives,
        }
        try:
            text = check_size(child_input, "child workflow input")
            log.add("ExecutionStarted", {"input": text, "inputDetails": {"truncated": False}})
            output = interp.run_machine(
                processor, json.loads(text), Scope(log, context, run["executionId"])
            )
            out_text = check_size(output, "child workflow output")
            log.add(
                "ExecutionSucceeded", {"output": out_text, "outputDetails": {"truncated": False}}
            )
            record.update(status="SUCCEEDED", input=child_input, output=output)
        except StatesError as err:
            log.add("ExecutionFailed", {"error": err.error, "cause": err.cause})
            record.update(status="FAILED", input=child_input, error=err.error, cause=err.cause)
        record["stopDate"] = now_iso()
        record["history"] = log.events
        return record

    # ---- conclusion --------------------------------------------------------------------

    def _conclude(
        self,
        run: dict[str, Any],
        state: dict[str, Any],
        effective: Any,
        context: dict[str, Any],
        interp: Interpreter,
        scope: Scope,
        results: dict[int, dict[str, Any]],
        inputs: list[Any],
    ) -> Any:
        total = len(inputs)
        failed = sum(1 for r in results.values() if r["status"] != "SUCCEEDED")
        pending = total - len(results)
        exceeded = _over(run, failed + pending, total)
        run["stopDate"] = now_iso()
        output: Any = None
        writer_error: StatesError | None = None
        if "ResultWriter" in state:
            try:
                output = self._write_results(
                    run, state, effective, context, interp, results, inputs
                )
            except StatesError as err:
                writer_error = err
        else:
            output = [
                results[i].get("output")
                if results[i]["status"] == "SUCCEEDED"
                else {"Error": results[i].get("error"), "Cause": results[i].get("cause")}
                for i in sorted(results)
            ]
        error = writer_error
        if exceeded and error is None:
            error = StatesError(
                E.EXCEED_TOLERATED_FAILURE,
                "The specified tolerated failure threshold was exceeded",
            )
        run["status"] = "FAILED" if error else "SUCCEEDED"
        run.update(pending=pending)
        self.store.save_map_run(scope.execution_id, run)
        self.notifier.map_run(_snapshot(run))
        if error:
            scope.log.add("MapRunFailed", {"error": error.error, "cause": error.cause})
            error.map_run_id = run["id"]  # type: ignore[attr-defined]
            raise error
        scope.log.add("MapRunSucceeded")
        return output

    def _write_results(
        self,
        run: dict[str, Any],
        state: dict[str, Any],
        effective: Any,
        context: dict[str, Any],
        interp: Interpreter,
        results: dict[int, dict[str, Any]],
        inputs: list[Any],
    ) -> dict[str, Any]:
        params = interp.render(state["ResultWriter"].get("Parameters", {}), effective, context)
        bucket = params.get("Bucket")
        prefix = (params.get("Prefix") or "").rstrip("/")
        base = f"{prefix}/{run['id']}" if prefix else run["id"]
        put = interp.hooks.registry.object_put
        groups: dict[str, list[dict[str, Any]]] = {"SUCCEEDED": [], "FAILED": [], "PENDING": []}
        for index in range(len(inputs)):
            record = results.get(index)
            if record is None:
                groups["PENDING"].append(
                    {
                        "Input": dumps(inputs[index]),
                        "InputDetails": {"Included": True},
                        "Status": "PENDING",
                    }
                )
                continue
            entry = {
                "ExecutionArn": record["executionArn"],
                "Input": dumps(record["input"]),
                "InputDetails": {"Included": True},
                "Name": record["name"],
                "RedriveCount": record.get("redriveCount", 0),
                "StartDate": record["startDate"],
                "StateMachineArn": run["mapRunArn"],
                "Status": record["status"],
                "StopDate": record["stopDate"],
            }
            if record["status"] == "SUCCEEDED":
                entry.update(
                    Output=dumps(record["output"]),
                    OutputDetails={"Included": True},
                    RedriveStatus="NOT_REDRIVABLE",
                    RedriveStatusReason="Execution is SUCCEEDED and cannot be redriven",
                )
                groups["SUCCEEDED"].append(entry)
            else:
                entry.update(
                    Error=record.get("error"), Cause=record.get("cause"), RedriveStatus="REDRIVABLE"
                )
                groups["FAILED"].append(entry)
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        try:
            if put is None:
                raise RuntimeError("no object store is registered")
            for status, entries in groups.items():
                if not entries:
                    continue
                key = f"{base}/{status}_0.json"
                body = json.dumps(entries).encode("utf-8")
                put(bucket, key, body)
                files[status].append({"Key": key, "Size": len(body)})
            manifest = {
                "DestinationBucket": bucket,
                "MapRunArn": run["mapRunArn"],
                "ResultFiles": files,
            }
            put(bucket, f"{base}/manifest.json", json.dumps(manifest).encode("utf-8"))
        except Exception as exc:  # any store failure is the writer's failure
            raise StatesError(
                E.RESULT_WRITER_FAILED, f"Unable to write results to s3://{bucket}/{base}: {exc}"
            ) from exc
        return {
            "MapRunArn": run["mapRunArn"],
            "ResultWriterDetails": {"Bucket": bucket, "Key": f"{base}/manifest.json"},
        }


def _number(holder: dict[str, Any], name: str, effective: Any, context: Any) -> Any:
    if f"{name}Path" in holder:
        value = jsonpath.select(holder[f"{name}Path"], effective, context, f"{name}Path")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise StatesError(E.RUNTIME, f"{name}Path selected {value!r}, not a number >= 0")
        return value
    return holder.get(name)


def _over(run: dict[str, Any], failed: int, total: int) -> bool:
    """True when failures exceed ToleratedFailurePercentage or ToleratedFailureCount."""
    percentage = run.get("toleratedFailurePercentage") or 0
    count = run.get("toleratedFailureCount") or 0
    if not percentage and not count:
        return failed > 0
    if percentage and total and failed * 100.0 / total > percentage:
        return True
    return bool(count) and failed > count


def _exceeded(run: dict[str, Any], counts: dict[str, int], total: int) -> bool:
    return _over(run, counts["failed"], total)


def _snapshot(run: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "mapRunArn",
        "stateName",
        "status",
        "total",
        "succeeded",
        "failed",
        "running",
        "pending",
        "redriveCount",
    )
    return {k: run.get(k, 0) for k in keys}
