"""On-disk persistence of executions, histories and Map Runs, readable by another process.

Layout under the store directory::

    <execution name>/execution.json        the execution record (rewritten atomically)
    <execution name>/history.jsonl         one history event a line, appended as it happens
    <execution name>/mapruns/<id>/maprun.json     the Map Run record and its counts
    <execution name>/mapruns/<id>/children.jsonl  one finished child execution a line,
                                                  its index first and its history last

A process killed while appending can leave a last line without its newline: readers take
such a line as never written, and the next append first cuts it off. So does an append that
failed (a full disk, a file size limit): each write that fails raises RecordNotWritten, which
names the record's file.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from mailmatrix.engine.errors import RecordNotWritten
from mailmatrix.errors import EngineError

# A children.jsonl record as append_children writes it begins with its index and ends with
# its history.
_INDEX_FIRST = re.compile(rb'\{"index":(\d+),')
_HISTORY_LAST = b',"history":['
_DECODER = json.JSONDecoder()
# Execution names: 1-80 characters without whitespace, brackets, wildcards or the special
# characters " # % \\ ^ | ~ ` $ & , ; : / (StartExecution API reference, "name").
_NAME = re.compile(r"[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/]{1,80}")


class ExecutionStore:
    """Reads and writes execution records, histories and Map Runs under one directory."""

    def __init__(self, root: pathlib.Path | str) -> None:
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def execution_dir(self, execution_id: str) -> pathlib.Path:
        """The directory of one execution."""
        if not _NAME.fullmatch(execution_id) or execution_id in (".", ".."):
            raise EngineError(f"store: {execution_id!r} is not a valid execution name")
        return self.root / execution_id

    def create(self, record: dict[str, Any]) -> None:
        """Create a new execution; refuse a name already used."""
        folder = self.execution_dir(record["name"])
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            raise EngineError(
                f"store: execution {record['name']!r} already exists in {self.root}"
            ) from None
        self.save(record)

    def save(self, record: dict[str, Any]) -> None:
        """Rewrite an execution record atomically."""
        _write_json(self.execution_dir(record["name"]) / "execution.json", record)

    def load(self, execution_id: str) -> dict[str, Any]:
        """The record of an execution by name (id)."""
        path = self.execution_dir(execution_id) / "execution.json"
        if not path.is_file():
            raise EngineError(f"store: no execution {execution_id!r} in {self.root}")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:  # not JSON, or not UTF-8 text
            raise EngineError(f"store: {path}: unreadable: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise EngineError(f"store: {path}: unreadable: not an execution record")
        return record

    def list_records(self) -> list[dict[str, Any]]:
        """Every readable execution record, oldest first (see unreadable)."""
        records = []
        for path in self.root.glob("*/execution.json"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                records.append(record)
        return sorted(records, key=lambda r: (r.get("startDate", ""), r["name"]))

    def unreadable(self) -> list[str]:
        """Why each execution record that list_records leaves out cannot be read (damaged:
        not JSON, or not a record), so that no execution disappears without a word."""
        problems = []
        for path in sorted(self.root.glob("*/execution.json")):
            try:
                self.load(path.parent.name)
            except EngineError as error:
                problems.append(error.message.removeprefix("store: "))
        return problems

    def last_written(self, execution_id: str) -> str | None:
        """When the execution's process last wrote any of its records (its record, history,
        Map Runs), as Step Functions writes a time; None when none can be read."""
        times = []
        for path in self.execution_dir(execution_id).rglob("*"):
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
        if not times:
            return None
        stamp = datetime.datetime.fromtimestamp(max(times), datetime.UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def append_event(self, execution_id: str, event: dict[str, Any]) -> None:
        """Append one event to an execution's history."""
        line = json.dumps(event, separators=(",", ":")) + "\n"
        self._append(self.execution_dir(execution_id) / "history.jsonl", line)

    def _append(self, path: pathlib.Path, text: str) -> None:
        """Append whole lines to ``path``, after cutting off a line a killed process tore."""
        with self._lock, _recording(path), open(path, "a+b") as handle:
            _cut_torn_tail(handle)
            handle.write(text.encode("utf-8"))

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        """An execution's history events in order."""
        path = self.execution_dir(execution_id) / "history.jsonl"
        if not path.is_file():
            raise EngineError(f"store: no history for execution {execution_id!r}")
        events = _read_jsonl(path)
        for number, event in enumerate(events, 1):
            if not isinstance(event.get("type"), str):
                raise EngineError(f"store: {path}: event {number} has no type")
        return events

    def map_run_dir(self, execution_id: str, map_run_id: str) -> pathlib.Path:
        """The directory of one Map Run."""
        return self.execution_dir(execution_id) / "mapruns" / map_run_id

    def save_map_run(self, execution_id: str, run: dict[str, Any]) -> None:
        """Rewrite a Map Run record atomically."""
        folder = self.map_run_dir(execution_id, run["id"])
        with _recording(folder / "maprun.json"):
            folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "maprun.json", run)

    def map_runs(self, execution_id: str) -> list[dict[str, Any]]:
        """Every Map Run record of an execution."""
        folder = self.execution_dir(execution_id) / "mapruns"
        runs = [json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*/maprun.json")]
        return sorted(runs, key=lambda r: r.get("startDate", ""))

    def load_map_run(self, execution_id: str, map_run_id: str) -> dict[str, Any]:
        """One Map Run record."""
        path = self.map_run_dir(execution_id, map_run_id) / "maprun.json"
        return json.loads(path.read_text(encoding="utf-8"))

    def append_children(
        self, execution_id: str, map_run_id: str, children: list[dict[str, Any]]
    ) -> None:
        """Append finished child executions (with their histories) to a Map Run."""
        text = "".join(json.dumps(_history_last(c), separators=(",", ":")) + "\n" for c in children)
        self._append(self.map_run_dir(execution_id, map_run_id) / "children.jsonl", text)

    def children(self, execution_id: str, map_run_id: str) -> dict[int, dict[str, Any]]:
        """The latest record of each child of a Map Run, by item (batch) index."""
        path = self.map_run_dir(execution_id, map_run_id) / "children.jsonl"
        latest: dict[int, dict[str, Any]] = {}
        if path.is_file():
            for child in _read_jsonl(path):
                latest[child["index"]] = child
        return latest

    def child_summaries(
        self, execution_id: str, map_run_id: str, keys: tuple[str, ...]
    ) -> dict[int, dict[str, Any]]:
        """The latest record of each child, by index, with only the given keys (no history)."""
        path = self.map_run_dir(execution_id, map_run_id) / "children.jsonl"
        latest: dict[int, dict[str, Any]] = {}
        if path.is_file():
            with open(path, "rb") as handle:
                for line in handle:
                    if _whole(line):
                        child = _child_head(line, 0) if "history" not in keys else json.loads(line)
                        latest[child["index"]] = {k: child[k] for k in keys if k in child}
        return latest

    def child_offsets(self, execution_id: str, map_run_id: str) -> dict[int, int]:
        """Where the latest record of each child starts in children.jsonl, by index."""
        path = self.map_run_dir(execution_id, map_run_id) / "children.jsonl"
        offsets: dict[int, int] = {}
        if path.is_file():
            with open(path, "rb") as handle:
                offset = 0
                for line in handle:
                    if _whole(line):
                        offsets[_child_index(line)] = offset
                    offset += len(line)
        return offsets

    def children_at(
        self,
        execution_id: str,
        map_run_id: str,
        offsets: Iterable[int | None],
        *,
        events: int | None = None,
    ) -> Iterator[dict[str, Any] | None]:
        """The child records starting at the given offsets, one at a time (None for None).

        With ``events``, a record's history holds only its first ``events`` events: the rest,
        most of a record's text, is not decoded.
        """
        path = self.map_run_dir(execution_id, map_run_id) / "children.jsonl"
        handle = open(path, "rb") if path.is_file() else None  # noqa: SIM115
        try:
            for offset in offsets:
                if offset is None or handle is None:
                    yield None
                    continue
                handle.seek(offset)
                line = handle.readline()
                yield json.loads(line) if events is None else _child_head(line, events)
        finally:
            if handle is not None:
                handle.close()


def _child_index(line: bytes) -> int:
    """A children.jsonl record's index: read from its start, as append_children writes it
    first, without decoding the whole record and its history."""
    head = _INDEX_FIRST.match(line)
    return int(head.group(1)) if head else json.loads(line)["index"]


def _history_last(child: dict[str, Any]) -> dict[str, Any]:
    """The child record with its history as its last key (see _child_head)."""
    if "history" not in child or next(reversed(child)) == "history":
        return child
    return {**{k: v for k, v in child.items() if k != "history"}, "history": child["history"]}


def _child_head(line: bytes, events: int) -> dict[str, Any]:
    """A children.jsonl record with only the first ``events`` events of its history decoded.

    append_children writes the history last: the record is decoded up to it, then the events
    one at a time. A line laid out otherwise is decoded whole.
    """
    cut = line.rfind(_HISTORY_LAST)
    if cut >= 0 and line.rstrip().endswith(b"]}"):
        try:
            record = json.loads(line[:cut] + b"}")
            rest = line[cut + len(_HISTORY_LAST) :].decode("utf-8")
            history: list[Any] = []
            at = 0
            while len(history) < events and not rest.startswith("]", at):
                event, at = _DECODER.raw_decode(rest, at)
                history.append(event)
                at += rest.startswith(",", at)
            record["history"] = history
            return record
        except ValueError:
            pass
    record = json.loads(line)
    if "history" in record:
        record["history"] = record["history"][:events]
    return record


def _write_json(path: pathlib.Path, value: Any) -> None:
    """Replace ``path`` with ``value`` at once (written beside it, then renamed)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with _recording(path):
        try:
            temporary.write_text(json.dumps(value, indent=1), encoding="utf-8")
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)  # what was written of it takes room
            raise


@contextlib.contextmanager
def _recording(path: pathlib.Path) -> Iterator[None]:
    """Raise a write's OSError as RecordNotWritten, naming the record ``path``."""
    try:
        yield
    except RecordNotWritten:
        raise
    except OSError as error:
        raise RecordNotWritten(error.errno, error.strerror, str(path)) from error


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    """The records of a .jsonl file; an EngineError names the line that is not one."""
    records = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not _whole(line):
                continue
            try:
                record = json.loads(line)
            except ValueError as error:  # not JSON, or not UTF-8 text
                raise EngineError(f"store: {path}: line {number} unreadable: {error}") from None
            if not isinstance(record, dict):
                raise EngineError(f"store: {path}: line {number} unreadable: not a JSON object")
            records.append(record)
    return records


def _whole(line: bytes) -> bool:
    """Whether a line read from a .jsonl file holds a record that was written whole."""
    return line.endswith(b"\n") and bool(line.strip())


def _cut_torn_tail(handle: BinaryIO) -> None:
    """Cut off a last line without its newline (an append a killed process did not finish).

    ``handle`` is open for appending; it costs a seek and a one-byte read when all is whole.
    """
    end = handle.seek(0, os.SEEK_END)
    if end == 0 or os.pread(handle.fileno(), 1, end - 1) == b"\n":
        return
    start = end
    while start > 0:  # back to the newline that ends the last whole line
        step = min(start, 1 << 16)
        newline = os.pread(handle.fileno(), step, start - step).rfind(b"\n")
        if newline >= 0:
            start = start - step + newline + 1
            break
        start -= step
    handle.truncate(start)
