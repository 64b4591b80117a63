"""The Distributed Map: ItemReader, ItemSelector, ItemBatcher, child workflows on a thread pool,
tolerated failures, ResultWriter, Map Run persistence and Map Run redrive.

Behaviour from the Step Functions developer guide: "Using Map state in Distributed mode"
(https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html), "ItemReader",
"ItemBatcher", "ResultWriter" and "Redriving Map Runs" pages.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import io
import itertools
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from mailmatrix.engine import errors as E
from mailmatrix.engine import jsonpath, stopping
from mailmatrix.engine.errors import ExecutionAborted, RecordNotWritten, StatesError
from mailmatrix.engine.interpreter import (
    EventLog,
    Interpreter,
    Scope,
    check_size,
    check_text,
    dumps,
    item_value,
    now_iso,
)
from mailmatrix.engine.listener import Notifier
from mailmatrix.engine.reader import iter_bounded_items
from mailmatrix.engine.registry import ACCOUNT, REGION, ObjectPut
from mailmatrix.engine.store import ExecutionStore

logger = logging.getLogger(__name__)

# Distributed Map runs up to 10,000 children at once on AWS; locally threads are capped.
LOCAL_THREAD_CAP = 64
_SNAPSHOT_SECONDS = 0.5
# ResultWriter starts a new file for a status when its current one would grow past this.
RESULT_FILE_BYTES = 8 * 1024 * 1024
# What a redrive keeps of an earlier child: its outcome and what a rerun of it needs.
_SUMMARY_KEYS = ("status", "name", "redriveCount", "error", "cause")
_DONE = {"status": "SUCCEEDED"}


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
        batches = self._batches(interp, state, effective, context, items)
        # A first pass reads (and checks) every item to count the children the thresholds
        # and the Map Run's counts need; the children's inputs are formed again as they start.
        total = sum(1 for _ in batches())
        processor: dict[str, Any] = state.get("ItemProcessor") or state["Iterator"]
        settings = self._settings(state, effective, context)
        keep_output = "ResultWriter" not in state

        previous: dict[int, dict[str, Any]] = {}
        run_id = scope.redrive_map_runs.pop(name, None)
        if run_id:
            run = self.store.load_map_run(scope.execution_id, run_id)
            keys = _SUMMARY_KEYS + (("output",) if keep_output else ())
            previous = self.store.child_summaries(scope.execution_id, run_id, keys)
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
        run.update(settings, total=total, status="RUNNING")
        spool = None
        try:
            self.store.save_map_run(scope.execution_id, run)
            if not keep_output:
                spool = _ResultSpool(self.store.map_run_dir(scope.execution_id, run_id))
            results = self._run_children(
                run, processor, batches, total, previous, interp, scope, keep_output, spool
            )
            return self._conclude(
                run, state, effective, context, interp, scope, results, total, batches, spool
            )
        except RecordNotWritten as error:
            error.map_run_id = run_id  # type: ignore[attr-defined]  # a redrive goes on with it
            raise
        finally:
            if spool is not None:
                spool.close()

    # ---- items -------------------------------------------------------------------------

    def _items(
        self,
        interp: Interpreter,
        name: str,
        state: dict[str, Any],
        effective: Any,
        context: dict[str, Any],
    ) -> Callable[[], Iterator[tuple[Any, int | None]]]:
        """A function that reads the Map's items afresh on each call, one at a time, each with
        a bound on its size in a batch or None (reader.iter_bounded_items)."""
        reader = state.get("ItemReader")
        if reader is None:
            items = jsonpath.select(state.get("ItemsPath", "$"), effective, context, "ItemsPath")
            if not isinstance(items, list):
                raise StatesError(E.RUNTIME, f"state '{name}': ItemsPath did not select an array")
            return lambda: ((item, None) for item in items)
        params = interp.render(reader.get("Parameters", {}), effective, context)
        config = reader.get("ReaderConfig", {})
        max_items = config.get("MaxItems")
        if "MaxItemsPath" in config:
            max_items = jsonpath.select(config["MaxItemsPath"], effective, context, "MaxItemsPath")
        get = interp.hooks.registry.object_get
        opener = interp.hooks.registry.object_open
        if get is None and opener is None:
            raise StatesError(E.ITEM_READER_FAILED, "no object store is registered")
        where = f"s3://{params.get('Bucket')}/{params.get('Key')}"
        if opener is None:
            assert get is not None
            try:
                data = get(params["Bucket"], params["Key"])
            except Exception as exc:  # any store failure is the reader's failure
                raise StatesError(E.ITEM_READER_FAILED, f"Unable to read {where}: {exc}") from exc
            return lambda: iter_bounded_items(io.BytesIO(data), config, max_items)
        open_object = opener

        def stream() -> Iterator[tuple[Any, int | None]]:
            try:
                handle = open_object(params["Bucket"], params["Key"])
            except Exception as exc:  # any store failure is the reader's failure
                raise StatesError(E.ITEM_READER_FAILED, f"Unable to read {where}: {exc}") from exc
            with handle:
                yield from iter_bounded_items(handle, config, max_items)

        return stream

    def _batches(
        self,
        interp: Interpreter,
        state: dict[str, Any],
        effective: Any,
        context: dict[str, Any],
        items: Callable[[], Iterator[tuple[Any, int | None]]],
    ) -> Callable[[], Iterator[Any]]:
        """A function that forms the children's inputs afresh on each call, one at a time.

        The first call that runs to the end records how many items each batch took, so the
        later calls cut the same batches without sizing every item again. Against a byte
        limit, an item the reader gave a bound is serialised only once the bounds of its
        batch pass the limit: the cut is where exact sizes put it, at a fraction of the cost.
        """
        selector = state.get("ItemSelector", state.get("Parameters"))
        batcher = state.get("ItemBatcher")
        counted: list[int] = []

        def selected(values: Iterator[tuple[Any, int | None]]) -> Iterator[tuple[Any, int | None]]:
            if selector is None:
                yield from values
                return
            for i, (item, _) in enumerate(values):
                yield item_value(interp, selector, effective, context, i, item), None

        def generate() -> Iterator[Any]:
            source = items()
            # The first item is read before the batcher's settings are: the reader's failure
            # to open or parse the object comes first, as it did when items were a list.
            head = list(itertools.islice(source, 1))
            values = selected(itertools.chain(head, source))
            if batcher is None:
                for item, _ in values:
                    yield item
                return
            max_items = _number(batcher, "MaxItemsPerBatch", effective, context)
            max_bytes = _number(batcher, "MaxInputBytesPerBatch", effective, context)
            base: dict[str, Any] = {}
            if "BatchInput" in batcher:
                base["BatchInput"] = interp.render(batcher["BatchInput"], effective, context)
            if counted:
                for count in counted:
                    batch = [item for item, _ in itertools.islice(values, count)]
                    if len(batch) != count:
                        raise _items_changed()
                    yield {**base, "Items": batch}
                if next(values, None) is not None:
                    raise _items_changed()
                return
            overhead = len(dumps({**base, "Items": []}).encode("utf-8"))
            counts: list[int] = []
            current: list[Any] = []
            sizes: list[int] = []  # of current's items: exact, or a bound for those in bounded
            bounded: list[int] = []
            size = overhead
            for item, bound in values:
                # Sized only against a byte limit; the 256 KiB payload limit is checked when
                # the child starts.
                item_size = 0
                if max_bytes:
                    item_size = _batch_bytes(item) if bound is None else bound
                    if current and size + item_size > max_bytes and (bounded or bound is not None):
                        for i in bounded:
                            exact = _batch_bytes(current[i])
                            size += exact - sizes[i]
                            sizes[i] = exact
                        bounded = []
                        if bound is not None:
                            item_size, bound = _batch_bytes(item), None
                full = (max_items and len(current) >= max_items) or (
                    max_bytes and current and size + item_size > max_bytes
                )
                if full:
                    counts.append(len(current))
                    yield {**base, "Items": current}
                    current, sizes, bounded, size = [], [], [], overhead
                if max_bytes and bound is not None:
                    bounded.append(len(current))
                current.append(item)
                sizes.append(item_size)
                size += item_size
            if current:
                counts.append(len(current))
                yield {**base, "Items": current}
            counted[:] = counts

        return generate

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
        batches: Callable[[], Iterator[Any]],
        total: int,
        previous: dict[int, dict[str, Any]],
        interp: Interpreter,
        scope: Scope,
        keep_output: bool,
        spool: _ResultSpool | None,
    ) -> dict[int, dict[str, Any]]:
        # Per child only what decides the Map's outcome (and its output when the Map returns
        # an array): each whole record, history included, goes to the store as it finishes.
        results = {i: _summary(c, keep_output) for i, c in previous.items() if _succeeded(c)}
        done_before = frozenset(results)
        todo = ((i, value) for i, value in enumerate(batches()) if i not in done_before)
        counts = {"succeeded": len(results), "failed": 0, "running": 0}
        lock = threading.Lock()
        last_snapshot = [0.0]

        def publish(force: bool = False) -> None:
            run.update(counts, pending=total - sum(counts.values()))
            self.notifier.map_run(_snapshot(run))
            if force or time.monotonic() - last_snapshot[0] > _SNAPSHOT_SECONDS:
                last_snapshot[0] = time.monotonic()
                self.store.save_map_run(scope.execution_id, run)

        def child(index: int, child_input: Any) -> None:
            with lock:
                counts["running"] += 1
                publish()
            record = self._child(run, processor, index, child_input, interp, previous.get(index))
            # Stored at once: records kept back for fewer writes held tens of MB (a batch of
            # 100 rows is about 600 KB of objects), and the heap they left fragmented grew the
            # main process with the campaign's size.
            self.store.append_children(scope.execution_id, run["id"], [record])
            if spool is not None:
                spool.add(index, *_result_entry(record, run["mapRunArn"]))
            with lock:
                counts["running"] -= 1
                counts["succeeded" if _succeeded(record) else "failed"] += 1
                results[index] = _summary(record, keep_output)
                publish()

        workers = run["maxConcurrency"] or LOCAL_THREAD_CAP
        workers = max(1, min(workers, LOCAL_THREAD_CAP, (total - len(done_before)) or 1))
        aborted = False
        unwritten: RecordNotWritten | None = None
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            in_flight: set[concurrent.futures.Future] = set()
            try:
                while True:
                    stopping.check()  # a stop whose KeyboardInterrupt Python dropped
                    while len(in_flight) < workers and not _exceeded(run, counts, total):
                        nxt = next(todo, None)
                        if nxt is None:
                            break
                        in_flight.add(pool.submit(child, *nxt))
                    if not in_flight:
                        break
                    done, in_flight = concurrent.futures.wait(
                        in_flight,
                        timeout=_STOP_LOOK_SECONDS,
                        return_when=concurrent.futures.FIRST_COMPLETED,
                    )
                    for future in done:
                        future.result()
            except KeyboardInterrupt:
                # Stopped: start no more children and let those in flight end, as a running
                # Lambda invocation ends after StopExecution; a redrive runs the rest.
                aborted = True
                _despite_interrupts(self.notifier.stopping)
                _despite_interrupts(lambda: concurrent.futures.wait(in_flight))
            except RecordNotWritten as error:
                # No room for the records (a full disk, a file size limit): no more children
                # start, and those in flight are asked to stop after the item they are on,
                # as in a stop, rather than run on unrecorded; then the execution fails.
                unwritten = error
                _despite_interrupts(functools.partial(self._stopping, run, error))
                _despite_interrupts(lambda: concurrent.futures.wait(in_flight))
        if unwritten is not None:
            with lock, contextlib.suppress(RecordNotWritten):  # recorded where it still can be
                run["status"] = "FAILED"
                publish(force=True)
            with contextlib.suppress(RecordNotWritten):
                cause = unwritten.cause
                scope.log.add("MapRunFailed", {"error": E.RECORDS_NOT_WRITTEN, "cause": cause})
            raise unwritten
        with lock:
            if aborted:
                run["status"] = "ABORTED"
            publish(force=True)
        if aborted:
            scope.log.add("MapRunAborted")
            raise ExecutionAborted(run["id"])
        return results

    def _stopping(self, run: dict[str, Any], error: RecordNotWritten) -> None:
        """Ask the children in flight to stop, as ``error`` keeps the Map Run's records from
        being written; a listener that cannot (it writes too) leaves them to end."""
        try:
            self.notifier.stopping(error.cause)
        except Exception as failure:  # the records' error, not the listener's, is the cause
            logger.warning("map run %s: children not asked to stop: %s", run["id"], failure)

    def _child(
        self,
        run: dict[str, Any],
        processor: dict[str, Any],
        index: int,
        child_input: Any,
        interp: Interpreter,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        child_id = child_name(run["mapRunArn"], index) if previous is None else previous["name"]
        arn = child_arn(run["mapRunArn"], child_id)
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
            output, out_text = interp.run_machine_text(
                processor,
                json.loads(text),
                Scope(log, context, run["executionId"]),
                input_text=text,
            )
            check_text(out_text, "child workflow output")
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
        total: int,
        batches: Callable[[], Iterator[Any]],
        spool: _ResultSpool | None,
    ) -> Any:
        failed = sum(1 for r in results.values() if not _succeeded(r))
        pending = total - len(results)
        exceeded = _over(run, failed + pending, total)
        run["stopDate"] = now_iso()
        output: Any = None
        writer_error: StatesError | None = None
        if "ResultWriter" in state:
            try:
                output = self._write_results(
                    run, state, effective, context, interp, scope, results, total, batches, spool
                )
            except StatesError as err:
                writer_error = err
        else:
            output = [
                results[i].get("output")
                if _succeeded(results[i])
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
        scope: Scope,
        results: dict[int, dict[str, Any]],
        total: int,
        batches: Callable[[], Iterator[Any]],
        spool: _ResultSpool | None,
    ) -> dict[str, Any]:
        params = interp.render(state["ResultWriter"].get("Parameters", {}), effective, context)
        bucket = params.get("Bucket")
        prefix = (params.get("Prefix") or "").rstrip("/")
        base = f"{prefix}/{run['id']}" if prefix else run["id"]
        put = interp.hooks.registry.object_put
        try:
            if put is None:
                raise RuntimeError("no object store is registered")
            files = _ResultFiles(put, bucket, base)
            # Entries are written in index order: those of the children this Map Run ran were
            # made as each finished; the others' from the store's records, one child at a
            # time; the inputs of children that never ran are formed again from the items.
            spooled = spool.entries() if spool is not None else {}
            stored = any(i not in spooled for i in results)  # children of an earlier run
            offsets = self.store.child_offsets(scope.execution_id, run["id"]) if stored else {}
            inputs = batches() if len(results) < total else None
            records = self.store.children_at(
                scope.execution_id,
                run["id"],
                (
                    None if i in spooled else offsets.get(i) if i in results else None
                    for i in range(total)
                ),
                events=1,
            )
            for index, record in enumerate(records):
                child_input = next(inputs) if inputs is not None else None
                if index in spooled:
                    assert spool is not None
                    files.add_text(spooled[index], spool.text(index))
                    continue
                if index not in results or record is None:
                    files.add(
                        "PENDING",
                        {
                            "Input": dumps(child_input),
                            "InputDetails": {"Included": True},
                            "Status": "PENDING",
                        },
                    )
                    continue
                files.add_text(*_result_entry(record, run["mapRunArn"]))
            files.close()
            manifest = {
                "DestinationBucket": bucket,
                "MapRunArn": run["mapRunArn"],
                "ResultFiles": files.files,
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


class _ResultFiles:
    """ResultWriter's files: each status's entries as JSON arrays of at most about
    RESULT_FILE_BYTES, ``<base>/<STATUS>_<n>.json``, put as each one fills."""

    def __init__(self, put: ObjectPut, bucket: Any, base: str) -> None:
        self.put = put
        self.bucket = bucket
        self.base = base
        self.files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        self._open: dict[str, bytearray] = {}

    def add(self, status: str, entry: dict[str, Any]) -> None:
        """Add one entry; put the status's file first when the entry would overfill it."""
        self.add_text(status, _entry_text(entry))

    def add_text(self, status: str, text: bytes) -> None:
        """add, given the entry's JSON text (_entry_text)."""
        body = self._open.get(status)
        if body is not None and len(body) + len(text) + 3 > RESULT_FILE_BYTES:
            self._put(status)
            body = None
        if body is None:
            self._open[status] = bytearray(b"[" + text)
        else:
            body += b", " + text

    def close(self) -> None:
        """Put every status's last file, in the order SUCCEEDED, FAILED, PENDING."""
        for status in ("SUCCEEDED", "FAILED", "PENDING"):
            if status in self._open:
                self._put(status)

    def _put(self, status: str) -> None:
        body = self._open.pop(status)
        body += b"]"
        key = f"{self.base}/{status}_{len(self.files[status])}.json"
        # The buffer itself, not a copy of its 8 MB: stores take any bytes-like body.
        self.put(self.bucket, key, body)
        self.files[status].append({"Key": key, "Size": len(body)})


class _ResultSpool:
    """ResultWriter's entries of the children this Map Run ran, made as each finishes (by the
    child's thread, while the others run) and kept in an unnamed file of the Map Run's folder
    until the results are written: after the Map, each is copied, not formed again from the
    store's record (about 0.7 ms of CPU a child of 100 rows, with nothing else running)."""

    def __init__(self, folder: Any) -> None:
        # Unbuffered: a write that fails fails in add(), not in a later flush.
        self._file = tempfile.TemporaryFile(dir=folder, buffering=0)  # noqa: SIM115 (close())
        self._lock = threading.Lock()
        self._where: dict[int, tuple[str, int, int]] = {}  # index -> status, offset, length

    def add(self, index: int, status: str, text: bytes) -> None:
        """Keep child ``index``'s entry (its status and JSON text), if the file takes it."""
        with self._lock:
            try:
                offset = self._file.seek(0, os.SEEK_END)
                done = 0
                while done < len(text):
                    written = self._file.write(memoryview(text)[done:])
                    if not written:
                        return  # the file takes no more: as below
                    done += written
            except OSError:  # no room: the entry is formed from the store's record instead
                return
            self._where[index] = (status, offset, len(text))

    def entries(self) -> dict[int, str]:
        """The status of each child whose entry is kept, by index."""
        with self._lock:
            return {index: status for index, (status, _, _) in self._where.items()}

    def text(self, index: int) -> bytes:
        """The JSON text of child ``index``'s entry."""
        _, offset, length = self._where[index]
        return os.pread(self._file.fileno(), length, offset)

    def close(self) -> None:
        self._file.close()


def _result_entry(record: dict[str, Any], map_run_arn: str) -> tuple[str, bytes]:
    """ResultWriter's entry for a child record: its status (its results file) and JSON text."""
    entry = {
        "ExecutionArn": record["executionArn"],
        "Input": _input_text(record),
        "InputDetails": {"Included": True},
        "Name": record["name"],
        "RedriveCount": record.get("redriveCount", 0),
        "StartDate": record["startDate"],
        "StateMachineArn": map_run_arn,
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
        return "SUCCEEDED", _entry_text(entry)
    entry.update(Error=record.get("error"), Cause=record.get("cause"), RedriveStatus="REDRIVABLE")
    return "FAILED", _entry_text(entry)


def _entry_text(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry).encode("utf-8")


# How often a Map waiting for its children looks for a stop whose KeyboardInterrupt was lost.
_STOP_LOOK_SECONDS = 0.5


def _despite_interrupts(step: Callable[[], object]) -> None:
    """Run ``step`` to its end, from its start again each time an interrupt cuts it short: the
    Map is stopping already, and another Ctrl-C (or a SIGTERM after a SIGHUP) must not end the
    execution while children run. A child cut off would leave its batch's claim in doubt, and
    once the execution ends, the ledger and mailer children share in threads are closed."""
    while True:
        try:
            step()
        except KeyboardInterrupt:
            continue
        return


def _batch_bytes(item: Any) -> int:
    """The bytes ``item`` adds to a batch's input: its compact JSON and a separator."""
    return len(dumps(item).encode("utf-8")) + 1


def child_name(map_run_arn: str, index: int) -> str:
    """The name of a Map Run's child for item ``index``.

    The same for the same item of the same Map Run, recorded or not: a redrive reruns the child
    a killed run never recorded under the name it had, as Step Functions redrives a child
    execution (SendBatch's ledger claims go by that name).
    """
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{map_run_arn}/{index}").hex


def child_arn(map_run_arn: str, name: str) -> str:
    """The execution ARN of a Map Run's child named ``name``."""
    prefix = map_run_arn.replace(":mapRun:", ":execution:", 1).rsplit(":", 1)[0]
    return f"{prefix}:{name}"


def _succeeded(record: dict[str, Any]) -> bool:
    return record["status"] == "SUCCEEDED"


def _summary(record: dict[str, Any], keep_output: bool) -> dict[str, Any]:
    """What the Map's outcome needs of one child record."""
    if _succeeded(record):
        return {"status": "SUCCEEDED", "output": record.get("output")} if keep_output else _DONE
    return {k: record[k] for k in _SUMMARY_KEYS if k in record}


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


def _input_text(record: dict[str, Any]) -> str:
    """A child's input as JSON: the text its ExecutionStarted event holds, else serialised."""
    first = (record.get("history") or [{}])[0]
    if first.get("type") == "ExecutionStarted":
        text = (first.get("executionStartedEventDetails") or {}).get("input")
        if isinstance(text, str):
            return text
    return dumps(record["input"])


def _items_changed() -> StatesError:
    """The error of a later read of the items that does not match the first, counting, one."""
    return StatesError(
        E.ITEM_READER_FAILED,
        "the Map's items changed between reads: the batches cut on the first read no longer fit",
    )
