"""The Distributed Map streams: items read through the store's open(), batches formed as
children start, result files written from the store and split, redrive from the store."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

import mailmatrix.engine.distributed as distributed_map
import mailmatrix.engine.store as store_module
from mailmatrix.engine import Engine, ResourceRegistry
from mailmatrix.engine.errors import RecordNotWritten, StatesError
from mailmatrix.engine.reader import iter_items
from mailmatrix.engine.store import ExecutionStore
from tests.engine.test_spec import LAMBDA_END
from tests.engine.test_spec import distributed as map_definition
from tests.memory import TracedPeak


class StreamingObjects:
    """An object store that can only be read through open(); get() fails the test."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}
        self.opened: list[str] = []

    def get(self, bucket: str, key: str) -> bytes:
        raise AssertionError(f"get({bucket!r}, {key!r}) read the whole object")

    def open(self, bucket: str, key: str) -> io.BytesIO:
        self.opened.append(key)
        return io.BytesIO(self.data[(bucket, key)])

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.data[(bucket, key)] = body


@pytest.fixture
def objects() -> StreamingObjects:
    return StreamingObjects()


@pytest.fixture
def registry(objects: StreamingObjects) -> ResourceRegistry:
    reg = ResourceRegistry()
    reg.set_object_store(objects.get, objects.put, objects.open)
    return reg


@pytest.fixture
def engine(tmp_path: pathlib.Path, registry: ResourceRegistry) -> Engine:
    return Engine(tmp_path / "executions", registry, sleep=lambda _: None)


READER = {
    "Resource": "arn:aws:states:::s3:getObject",
    "ReaderConfig": {"InputType": "JSONL"},
    "Parameters": {"Bucket": "b", "Key": "rows.jsonl"},
}
WRITER = {
    "Resource": "arn:aws:states:::s3:putObject",
    "Parameters": {"Bucket": "b", "Prefix": "out"},
}


def put_rows(objects: StreamingObjects, count: int) -> None:
    objects.put("b", "rows.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(count)))


def result_entries(objects: StreamingObjects, manifest_key: str) -> dict[str, list[dict]]:
    """Every status's entries, the files of each status read in the manifest's order."""
    manifest = json.loads(objects.data[("b", manifest_key)])
    entries: dict[str, list[dict]] = {}
    for status, files in manifest["ResultFiles"].items():
        for file in files:
            body = objects.data[("b", file["Key"])]
            assert file["Size"] == len(body)
            entries.setdefault(status, []).extend(json.loads(body))
    return entries


def one_child_at_a_time(**fields: Any) -> dict[str, Any]:
    """A Distributed Map of the rows object, running one child at a time, with a writer."""
    return map_definition(
        LAMBDA_END, ItemReader=READER, MaxConcurrency=1, ResultWriter=WRITER, **fields
    )


def batch_work(broken: set[int], calls: list[list[int]]) -> Any:
    """A handler that notes the "i" of its batch's items in ``calls`` and returns them; it
    fails a batch holding one of ``broken``."""

    def handler(event: Any, context: Any) -> Any:
        rows = [item["i"] for item in event["Items"]]
        calls.append(rows)
        if broken & set(rows):
            raise RuntimeError(f"broken {rows}")
        return rows

    return handler


def run_with_a_failed_batch(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects, name: str
) -> tuple[dict[str, Any], list[list[int]]]:
    """Run 6 rows in batches of 2, one child at a time, the batch holding row 2 failing;
    return the execution and the batches the handler was called with."""
    put_rows(objects, 6)
    calls: list[list[int]] = []
    registry.register_lambda("Work", batch_work({2}, calls))
    definition = one_child_at_a_time(ItemBatcher={"MaxItemsPerBatch": 2})
    return engine.start(json.dumps(definition), {}, name=name), calls


def store_with_a_map_run(folder: pathlib.Path) -> ExecutionStore:
    """A store in ``folder`` holding execution "ex", RUNNING, with the Map Run "run"."""
    store = ExecutionStore(folder)
    store.create({"name": "ex", "status": "RUNNING"})
    store.save_map_run("ex", {"id": "run"})
    return store


def test_iter_items_reads_jsonl_lazily() -> None:
    # GIVEN a JSON Lines object whose third line is broken
    stream = io.BytesIO(b'{"a": 1}\n{"a": 2}\n{oops\n')
    # WHEN items are taken one at a time THEN the first two come before the broken line is read
    items = iter_items(stream, {"InputType": "JSONL"}, None)
    assert [next(items), next(items)] == [{"a": 1}, {"a": 2}]
    with pytest.raises(StatesError, match="JSONL: line 3 is not valid JSON"):
        next(items)


@pytest.mark.parametrize(
    ("data", "kind", "where"),
    [
        (b'{"a": 1}\n{"a": "x\\ud800"}\n', "JSONL", "JSONL: line 2"),
        (b'[{"a": 1}, {"a": ["\\uDC00"]}]', "JSON", "JSON: item 1"),
    ],
    ids=["jsonl", "json"],
)
def test_an_item_holding_a_lone_surrogate_fails_the_reader_naming_it(data, kind, where) -> None:
    # GIVEN an object whose second item holds a surrogate escape not in a pair
    items = iter_items(io.BytesIO(data), {"InputType": kind}, None)
    # WHEN its items are read THEN the first comes, and the second fails the reader, named
    assert next(items) == {"a": 1}
    with pytest.raises(StatesError, match=f"^States.ItemReaderFailed: {where} holds a lone"):
        next(items)


def test_surrogate_pairs_and_escaped_backslashes_are_read_as_they_are() -> None:
    data = b'{"a": "\\ud83d\\ude00"}\n{"a": "\\\\ud800"}\n'
    items = list(iter_items(io.BytesIO(data), {"InputType": "JSONL"}, None))
    assert items == [{"a": "\U0001f600"}, {"a": "\\ud800"}]


def test_a_map_over_an_item_holding_a_lone_surrogate_fails_with_the_readers_error(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects
) -> None:
    # GIVEN a JSON Lines object whose line 2 holds "\ud800", batched or not
    objects.put("b", "rows.jsonl", b'{"i": 0}\n{"i": 1, "s": "\\ud800"}\n{"i": 2}\n')
    registry.register_lambda("Work", lambda event, context: event)
    for name, fields in (("one", {}), ("batched", {"ItemBatcher": {"MaxItemsPerBatch": 2}})):
        # WHEN the Map runs THEN it fails with a States error naming the line, no traceback
        record = engine.start(json.dumps(one_child_at_a_time(**fields)), {}, name=name)
        assert (record["status"], record["error"]) == ("FAILED", "States.ItemReaderFailed")
        assert record["cause"].startswith("JSONL: line 2 holds a lone surrogate")


def test_reader_opens_the_object_and_never_gets_it_whole(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects
) -> None:
    # GIVEN 7 rows readable only through open(), batched by 3 under a MaxItems of 5
    put_rows(objects, 7)
    registry.register_lambda("Work", lambda e, c: [item["n"] for item in e["Items"]])
    definition = map_definition(
        LAMBDA_END,
        ItemReader={**READER, "ReaderConfig": {"InputType": "JSONL", "MaxItems": 5}},
        ItemSelector={"n.$": "$$.Map.Item.Value.i"},
        ItemBatcher={"MaxItemsPerBatch": 3, "BatchInput": {"k": 1}},
    )
    # WHEN the Map runs THEN its children got every batch, and get() was never called
    record = engine.start(json.dumps(definition), {})
    assert (record["status"], record["output"]) == ("SUCCEEDED", [[0, 1, 2], [3, 4]])
    assert set(objects.opened) == {"rows.jsonl"}
    assert engine.describe(record["name"])["mapRuns"][0]["total"] == 2


def test_result_writer_splits_a_status_into_several_files(
    engine: Engine,
    registry: ResourceRegistry,
    objects: StreamingObjects,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN result files bounded to about 2 KB and 12 children of about 500 bytes each
    monkeypatch.setattr(distributed_map, "RESULT_FILE_BYTES", 2000)
    put_rows(objects, 12)
    registry.register_lambda("Work", lambda e, c: {"i": e["i"], "pad": "x" * 50})
    definition = map_definition(LAMBDA_END, ItemReader=READER, ResultWriter=WRITER)
    # WHEN the Map runs
    record = engine.start(json.dumps(definition), {})
    assert record["status"] == "SUCCEEDED"
    manifest_key = record["output"]["ResultWriterDetails"]["Key"]
    manifest = json.loads(objects.data[("b", manifest_key)])
    run_id = engine.describe(record["name"])["mapRuns"][0]["id"]
    # THEN SUCCEEDED is split into numbered files, none over the bound, nothing else written
    files = manifest["ResultFiles"]["SUCCEEDED"]
    assert len(files) > 1
    assert [f["Key"] for f in files] == [
        f"out/{run_id}/SUCCEEDED_{n}.json" for n in range(len(files))
    ]
    assert all(f["Size"] <= 2000 for f in files)
    assert (manifest["ResultFiles"]["FAILED"], manifest["ResultFiles"]["PENDING"]) == ([], [])
    # AND the files hold every child once, in item order, as one file would have
    entries = result_entries(objects, manifest_key)["SUCCEEDED"]
    assert [json.loads(e["Input"]) for e in entries] == [{"i": i} for i in range(12)]
    assert [json.loads(e["Output"])["i"] for e in entries] == list(range(12))


def test_result_writer_holds_one_file_of_entries_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN result files of at most 1 MiB, and 150 entries of about 20 KB (three files)
    monkeypatch.setattr(distributed_map, "RESULT_FILE_BYTES", 1 << 20)
    sizes: list[int] = []
    files = distributed_map._ResultFiles(lambda b, k, body: sizes.append(len(body)), "b", "out")
    entry = {"Status": "SUCCEEDED", "Output": "x" * 20_000}
    # WHEN they are written
    with TracedPeak() as peak:
        for _ in range(150):
            files.add("SUCCEEDED", entry)
        files.close()
    # THEN each file was put as it filled, and no more than one file's bytes and one entry
    # were held at a time (the body is handed over as it is: a copy of it doubled that)
    assert len(sizes) == 3 and sum(sizes) > 3_000_000
    assert all(size <= 1 << 20 for size in sizes)
    assert peak.bytes < 1.4 * (1 << 20)


def test_redrive_after_a_streamed_map_reruns_only_failed_and_unrun_batches(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects
) -> None:
    # GIVEN 6 rows in batches of 2, where the batch holding row 2 fails, one child at a time
    first, calls = run_with_a_failed_batch(engine, registry, objects, "streamed")
    assert first["error"] == "States.ExceedToleratedFailureThreshold"
    assert calls == [[0, 1], [2, 3]]
    (map_run,) = engine.describe("streamed")["mapRuns"]
    first_files = result_entries(objects, f"out/{map_run['id']}/manifest.json")
    # THEN the batch that never ran is PENDING with its input formed again from the rows
    assert [json.loads(e["Input"]) for e in first_files["PENDING"]] == [
        {"Items": [{"i": 4}, {"i": 5}]}
    ]
    assert [e["Status"] for e in first_files["FAILED"]] == ["FAILED"]

    # WHEN it is redriven with the fault gone
    calls.clear()
    registry.register_lambda("Work", batch_work(set(), calls))
    again = engine.redrive("streamed")
    # THEN only the failed and the unrun batches ran, and the results hold all three batches
    assert again["status"] == "SUCCEEDED"
    assert calls == [[2, 3], [4, 5]]
    entries = result_entries(objects, f"out/{map_run['id']}/manifest.json")
    assert list(entries) == ["SUCCEEDED"]
    assert [json.loads(e["Output"]) for e in entries["SUCCEEDED"]] == [[0, 1], [2, 3], [4, 5]]
    assert [e["RedriveCount"] for e in entries["SUCCEEDED"]] == [
        0,
        1,
        0,
    ]  # the unrun batch runs first time


def test_store_finds_each_childs_latest_record_in_any_key_order(tmp_path: pathlib.Path) -> None:
    # GIVEN a Map Run whose child 1 was recorded twice, the second time with "index" not first
    store = store_with_a_map_run(tmp_path)
    store.append_children("ex", "run", [{"index": 0, "v": "a"}, {"index": 1, "v": "b"}])
    path = store.map_run_dir("ex", "run") / "children.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"v": "c", "index": 1}\n')
    # WHEN the offsets are read and the records fetched in index order (and one skipped)
    offsets = store.child_offsets("ex", "run")
    fetched = list(store.children_at("ex", "run", [offsets[0], None, offsets[1]]))
    # THEN the latest record of each child comes back
    assert fetched == [{"index": 0, "v": "a"}, None, {"v": "c", "index": 1}]


def test_each_child_goes_to_the_store_as_it_finishes(
    engine: Engine,
    registry: ResourceRegistry,
    objects: StreamingObjects,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a Map of 10 batches run one at a time, and a log of the batches run and of the
    # child records appended to the store
    log: list[tuple[str, list[int]]] = []
    real_append = ExecutionStore.append_children

    def spy(self, execution_id, map_run_id, children):
        log.append(("stored", [child["index"] for child in children]))
        real_append(self, execution_id, map_run_id, children)

    def work(event: dict[str, Any], context: Any) -> int:
        log.append(("ran", [event["Items"][0]["i"] // 4]))
        return len(event["Items"])

    monkeypatch.setattr(ExecutionStore, "append_children", spy)
    put_rows(objects, 40)
    registry.register_lambda("Work", work)
    definition = map_definition(
        LAMBDA_END,
        ItemReader=READER,
        ItemBatcher={"MaxItemsPerBatch": 4},
        MaxConcurrency=1,
    )
    # WHEN the Map runs
    record = engine.start(json.dumps(definition), {})
    # THEN each child's record (its history: most of the Map's memory) reached the store
    # before the next child ran: the Map holds no finished child's record, however many
    assert record["status"] == "SUCCEEDED"
    assert log == [entry for i in range(10) for entry in (("ran", [i]), ("stored", [i]))]
    (map_run,) = engine.describe(record["name"])["mapRuns"]
    children = engine.map_run_children(record["name"], map_run["id"])
    assert [(c["index"], c["status"], c["output"]) for c in children] == [
        (i, "SUCCEEDED", 4) for i in range(10)
    ]


def items_sized(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The "i" of each item holding "pad" that the Map serialises, in order, from now on."""
    sized: list[Any] = []
    real_dumps = distributed_map.dumps

    def counting_dumps(value: Any) -> str:
        if isinstance(value, dict) and "pad" in value:
            sized.append(value["i"])
        return real_dumps(value)

    monkeypatch.setattr(distributed_map, "dumps", counting_dumps)
    return sized


def test_items_are_sized_once_and_later_passes_cut_the_same_batches(
    engine: Engine,
    registry: ResourceRegistry,
    objects: StreamingObjects,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN 20 items of uneven sizes under a byte limit, and a child that fails on item 13,
    # so the Map reads its items three times (count, children, results of the unrun batches)
    rows = [{"i": i, "pad": "é" * (7 * (i % 4))} for i in range(20)]
    objects.put("b", "rows.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    sized = items_sized(monkeypatch)

    registry.register_lambda("Work", batch_work({13}, []))
    definition = one_child_at_a_time(ItemBatcher={"MaxInputBytesPerBatch": 120})
    # WHEN the Map runs
    record = engine.start(json.dumps(definition), {})
    assert record["error"] == "States.ExceedToleratedFailureThreshold"
    (map_run,) = engine.describe(record["name"])["mapRuns"]
    entries = result_entries(objects, f"out/{map_run['id']}/manifest.json")
    # THEN each item was sized once, by the first pass
    assert sized == list(range(20))
    # AND the batches the children got and the unrun ones hold every item once, in order,
    # each within the byte limit
    batches = [json.loads(e["Input"]) for status in entries.values() for e in status]
    batches.sort(key=lambda batch: batch["Items"][0]["i"])
    assert [item for batch in batches for item in batch["Items"]] == rows
    compact = [json.dumps(b, ensure_ascii=False, separators=(",", ":")) for b in batches]
    assert all(len(text.encode()) <= 120 for text in compact)
    assert len(batches) == map_run["total"] > 2
    assert entries["PENDING"]


def exact_cuts(items: list[Any], max_bytes: int, max_items: int) -> list[int]:
    """How many items each batch takes when every item is sized by its compact JSON."""
    counts, size, current = [], len('{"Items":[]}'), 0
    for item in items:
        item_size = len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode())
        if current and (current >= max_items or size + item_size + 1 > max_bytes):
            counts.append(current)
            size, current = len('{"Items":[]}'), 0
        size += item_size + 1
        current += 1
    return [*counts, current]


# Lines whose compact JSON is shorter (blanks, escapes, repeated keys) or, for numbers with a
# fraction or exponent, longer than the line.
UNEVEN_LINES = [
    b'{"i": 0, "pad": "\\u00e9\\u00e9\\u00e9"}',
    b'{"i":1,"n":1e5,"m":1E22}',
    b'{"i":2,"pad":"\\ud83d\\ude00 \\/ \\u0001","i":2}',
    b'   {"i" :  3 ,  "pad" : [ 1 , 2 , 3 ] }   ',
    b'{"i":4,"f":123456789012345678.0}',
    b'{"i":5,"pad":"' + "é".encode() * 9 + b'"}',
    b'{"i":6}',
    b'{"i":7,"n":-0,"big":12345678901234567890}',
    b'{"i":8,"n":[1e9,1e9,1e9,1e9,1e9,1e9]}',
]


@pytest.mark.parametrize("max_bytes", [40, 64, 90, 150, 10_000])
def test_batches_cut_where_exact_sizes_cut_them_whatever_the_lines_hold(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects, max_bytes: int
) -> None:
    # GIVEN lines whose compact JSON is shorter or longer than the line, repeated in turn
    lines = [UNEVEN_LINES[(i * 5) % len(UNEVEN_LINES)] for i in range(45)]
    objects.put("b", "rows.jsonl", b"\n".join(lines) + b"\n")
    items = [json.loads(line) for line in lines]
    calls: list[list[int]] = []
    registry.register_lambda("Work", batch_work(set(), calls))
    definition = one_child_at_a_time(
        ItemBatcher={"MaxInputBytesPerBatch": max_bytes, "MaxItemsPerBatch": 7}
    )
    # WHEN the Map runs
    record = engine.start(json.dumps(definition), {})
    # THEN its batches are those exact sizes give, each within the limit unless of one item
    assert record["status"] == "SUCCEEDED"
    assert [len(batch) for batch in calls] == exact_cuts(items, max_bytes, 7)


def test_items_that_fit_by_their_lines_are_not_serialised_to_be_sized(
    engine: Engine,
    registry: ResourceRegistry,
    objects: StreamingObjects,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN 30 compact lines well under the byte limit, and one holding a float
    rows: list[dict[str, Any]] = [{"i": i, "pad": "x" * 20} for i in range(30)]
    rows[17]["f"] = 2.5
    objects.put("b", "rows.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    sized = items_sized(monkeypatch)
    registry.register_lambda("Work", batch_work(set(), []))
    definition = one_child_at_a_time(
        ItemBatcher={"MaxInputBytesPerBatch": 4096, "MaxItemsPerBatch": 10}
    )
    # WHEN the Map runs
    record = engine.start(json.dumps(definition), {})
    # THEN only the item with a float, whose line bounds nothing, was serialised to size it
    assert record["status"] == "SUCCEEDED"
    assert sized == [17]


def test_store_reads_a_childs_first_events_without_the_rest_of_its_history(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN child records appended to the store: one whose output holds "history" lists, one
    # without a history, one whose history is not its last key; and one written by hand
    store = store_with_a_map_run(tmp_path)
    events = [{"type": "ExecutionStarted", "d": {"input": '{"a":"]}"}'}}, {"type": "B"}, {}]
    written = [
        {"index": 0, "output": {"history": [1, {"history": []}]}, "history": events},
        {"index": 1, "status": "FAILED"},
        {"index": 2, "history": events, "tags": ["x"]},
    ]
    store.append_children("ex", "run", written)
    path = store.map_run_dir("ex", "run") / "children.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"index": 3, "history": [{"type": "A"}, {"type": "B"}], "v": 1}\n')
    offsets = store.child_offsets("ex", "run")
    # WHEN the records are read with their first event, or none
    firsts = list(store.children_at("ex", "run", [offsets[i] for i in range(4)], events=1))
    summaries = store.child_summaries("ex", "run", ("output", "status", "tags", "v"))
    # THEN each is the record as written, its history cut to those events
    assert firsts == [
        {**written[0], "history": events[:1]},
        written[1],
        {**written[2], "history": events[:1]},
        {"index": 3, "history": [{"type": "A"}], "v": 1},
    ]
    assert summaries == {
        0: {"output": written[0]["output"]},
        1: {"status": "FAILED"},
        2: {"tags": ["x"]},
        3: {"v": 1},
    }
    # AND read whole, they are as written
    assert list(store.children("ex", "run").values())[:3] == written


def test_store_takes_a_torn_last_line_as_never_written_and_cuts_it_before_appending(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN a history and a Map Run whose last lines a killed process left without their newline
    store = store_with_a_map_run(tmp_path)
    store.append_event("ex", {"type": "ExecutionStarted"})
    store.append_children("ex", "run", [{"index": 0, "v": "a"}])
    history = store.execution_dir("ex") / "history.jsonl"
    children = store.map_run_dir("ex", "run") / "children.jsonl"
    with history.open("a", encoding="utf-8") as handle:
        handle.write('{"type":"TaskSucc')
    with children.open("a", encoding="utf-8") as handle:
        handle.write('{"index":1,"v":"b","history":[{"ty')
    # WHEN another process reads them
    reader = ExecutionStore(tmp_path)
    # THEN the torn records count as never written
    assert reader.history("ex") == [{"type": "ExecutionStarted"}]
    assert list(reader.children("ex", "run")) == [0]
    assert list(reader.child_offsets("ex", "run")) == [0]
    assert list(reader.child_summaries("ex", "run", ("v",))) == [0]
    # AND appending cuts each torn line off first, so every line is whole again
    reader.append_event("ex", {"type": "ExecutionAborted"})
    reader.append_children("ex", "run", [{"index": 1, "v": "c"}])
    assert history.read_text(encoding="utf-8").splitlines() == [
        '{"type":"ExecutionStarted"}',
        '{"type":"ExecutionAborted"}',
    ]
    assert reader.children("ex", "run") == {0: {"index": 0, "v": "a"}, 1: {"index": 1, "v": "c"}}


def test_a_file_that_is_one_torn_line_is_emptied_before_the_next_append(
    tmp_path: pathlib.Path,
) -> None:
    # GIVEN a history whose only line is torn, longer than one read-back step
    store = ExecutionStore(tmp_path)
    store.create({"name": "ex", "status": "RUNNING"})
    history = store.execution_dir("ex") / "history.jsonl"
    history.write_text('{"type":"' + "x" * 200_000, encoding="utf-8")
    assert store.history("ex") == []
    # WHEN an event is appended THEN it is the only line
    store.append_event("ex", {"type": "ExecutionStarted"})
    assert history.read_text(encoding="utf-8") == '{"type":"ExecutionStarted"}\n'


def test_redrive_reruns_a_batch_whose_record_a_killed_process_tore(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects
) -> None:
    # GIVEN a streamed Map whose batch holding row 2 failed, and a torn record of that batch
    # appended after it, as if the process died while writing a later record of it
    _, calls = run_with_a_failed_batch(engine, registry, objects, "torn")
    (map_run,) = engine.describe("torn")["mapRuns"]
    children = engine.store.map_run_dir("torn", map_run["id"]) / "children.jsonl"
    whole = children.read_bytes().splitlines()
    with children.open("ab") as handle:
        handle.write(whole[-1][: len(whole[-1]) // 2])
    # WHEN it is redriven with the fault gone
    calls.clear()
    registry.register_lambda("Work", batch_work(set(), calls))
    again = engine.redrive("torn")
    # THEN the failed and the unrun batches ran, and every line of the file is whole JSON
    assert again["status"] == "SUCCEEDED"
    assert calls == [[2, 3], [4, 5]]
    assert all(json.loads(line) for line in children.read_bytes().splitlines())


@pytest.mark.parametrize("added", [b'{"i": 6}\n', b"null\n", b"false\n"])
def test_items_added_between_reads_fail_the_map_whatever_they_hold(
    engine: Engine,
    registry: ResourceRegistry,
    objects: StreamingObjects,
    added: bytes,
) -> None:
    # GIVEN 6 rows in batches of 2, to which an item (a JSON null among them) is added once
    # the Map has counted its batches, before it reads the items again to start the children
    put_rows(objects, 6)

    def open_grown(bucket: str, key: str) -> io.BytesIO:
        if len(objects.opened) == 1:
            objects.data[(bucket, key)] += added
        return objects.open(bucket, key)

    registry.set_object_store(objects.get, objects.put, open_grown)
    registry.register_lambda("Work", batch_work(set(), []))
    definition = one_child_at_a_time(ItemBatcher={"MaxItemsPerBatch": 2})
    # WHEN the Map runs
    record = engine.start(json.dumps(definition), {})
    # THEN the execution fails, naming the change, instead of leaving the new item unsent
    assert record["status"] == "FAILED"
    assert "changed between reads" in record["cause"]


@pytest.mark.parametrize("rows_after", [0, 3])
def test_items_that_shrink_between_reads_fail_the_map_rather_than_lose_rows(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects, rows_after: int
) -> None:
    # GIVEN 6 rows in batches of 2, and a child that replaces the rows object with fewer rows
    # while the Map runs, after the batches were counted
    put_rows(objects, 6)
    calls: list[list[int]] = []
    work = batch_work({2}, calls)

    def replacing(event: Any, context: Any) -> Any:
        if not calls:
            put_rows(objects, rows_after)
        return work(event, context)

    registry.register_lambda("Work", replacing)
    definition = one_child_at_a_time(ItemBatcher={"MaxItemsPerBatch": 2})
    # WHEN the Map reads its items again to write the results of the batches that did not run
    record = engine.start(json.dumps(definition), {})
    # THEN the execution fails, naming the change, instead of writing batches cut wrongly
    assert record["status"] == "FAILED"
    assert "changed between reads" in record["cause"]


def files_from_the_store(engine: Engine, name: str, objects: StreamingObjects) -> list[bytes]:
    """The Map Run's result files as put, next to what each entry is when formed from the
    child's record in the store, joined in the same order."""
    (map_run,) = engine.describe(name)["mapRuns"]
    manifest = json.loads(objects.data[("b", f"out/{map_run['id']}/manifest.json")])
    records = sorted(engine.map_run_children(name, map_run["id"]), key=lambda r: r["index"])
    formed: dict[str, list[bytes]] = {}
    for record in records:
        status, text = distributed_map._result_entry(record, map_run["mapRunArn"])
        formed.setdefault(status, []).append(text)
    put = [
        objects.data[("b", f["Key"])]
        for s in ("SUCCEEDED", "FAILED")
        for f in manifest["ResultFiles"][s]
    ]
    return [
        b"".join(put),
        b"".join(
            b"[" + b", ".join(t) + b"]"
            for t in (formed.get("SUCCEEDED", []), formed.get("FAILED", []))
            if t
        ),
    ]


def test_result_entries_made_as_children_finish_are_those_the_store_gives(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects
) -> None:
    # GIVEN 6 rows in batches of 2, the batch holding row 2 failing (the Map fails)
    run_with_a_failed_batch(engine, registry, objects, "spooled")
    # THEN each child's entry, made as it finished, is what its stored record makes
    put, formed = files_from_the_store(engine, "spooled", objects)
    assert put == formed


@pytest.mark.parametrize("refusal", ["raises", "takes nothing"])
def test_result_entries_come_from_the_store_when_the_spool_cannot_keep_them(
    engine: Engine,
    registry: ResourceRegistry,
    objects: StreamingObjects,
    monkeypatch: pytest.MonkeyPatch,
    refusal: str,
) -> None:
    # GIVEN a spool file that takes nothing (its disk is full)
    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            if refusal == "raises":
                raise OSError(28, "No space left on device")
            return 0

    monkeypatch.setattr(distributed_map.tempfile, "TemporaryFile", lambda **kwargs: Full())
    # WHEN a Map with a failing batch runs
    record, _ = run_with_a_failed_batch(engine, registry, objects, "full")
    # THEN it ends as it would, its result files written whole from the store's records
    assert record["error"] == "States.ExceedToleratedFailureThreshold"
    put, formed = files_from_the_store(engine, "full", objects)
    assert put == formed
    entries = result_entries(
        objects, f"out/{engine.describe('full')['mapRuns'][0]['id']}/manifest.json"
    )
    assert [e["Status"] for e in entries["SUCCEEDED"] + entries["FAILED"]] == [
        "SUCCEEDED",
        "FAILED",
    ]


@contextlib.contextmanager
def children_file_full_after(records: int, code: int) -> Iterator[list[str]]:
    """Within it, the Map Runs' children files take ``records`` appends, then fail each with
    the OSError of errno ``code`` (a full disk, a file size limit), as a write into them
    fails; it gives the files appended to, in order."""
    appends: list[str] = []
    cut_torn_tail = store_module._cut_torn_tail

    def limited(handle: Any) -> None:
        if handle.name.endswith("children.jsonl"):
            appends.append(handle.name)
            if len(appends) > records:
                raise OSError(code, os.strerror(code))
        cut_torn_tail(handle)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(store_module, "_cut_torn_tail", limited)
        yield appends


class StopsAsked:
    """A listener noting the reason of each stop the engine asks of the children in flight."""

    def __init__(self) -> None:
        self.reasons: list[str | None] = []

    def on_stopping(self, execution_id: str, reason: str | None = None) -> None:
        self.reasons.append(reason)


def test_a_child_record_the_store_cannot_write_ends_the_map_and_a_redrive_goes_on(
    engine: Engine, registry: ResourceRegistry, objects: StreamingObjects
) -> None:
    # GIVEN 8 rows in batches of 2, one child at a time, and a store whose children file takes
    # nothing more once the first child's record is in (the disk is full)
    put_rows(objects, 8)
    calls: list[list[int]] = []
    registry.register_lambda("Work", batch_work(set(), calls))
    stops = StopsAsked()
    definition = one_child_at_a_time(ItemBatcher={"MaxItemsPerBatch": 2})

    # WHEN the Map runs
    with children_file_full_after(1, errno.ENOSPC):
        record = engine.start(json.dumps(definition), {}, name="full", listener=stops)

    # THEN no batch started after the record that could not be written, the children in
    # flight were asked to stop, and the execution failed naming the file and the cause
    assert calls == [[0, 1], [2, 3]]
    (map_run,) = engine.describe("full")["mapRuns"]
    children = engine.store.map_run_dir("full", map_run["id"]) / "children.jsonl"
    cause = f"cannot write {children}: the disk holding it is full (No space left on device)"
    assert (record["status"], record["error"], record["cause"]) == (
        "FAILED",
        "Engine.RecordsNotWritten",
        cause,
    )
    assert stops.reasons == [cause]
    # AND it is recorded so (the other files could still be written), at the Map Run
    stored = engine.store.load("full")
    assert (stored["status"], stored["failedState"]["mapRunId"]) == ("FAILED", map_run["id"])
    assert map_run["status"] == "FAILED"
    ended = [
        (e["type"], e.get("mapRunFailedEventDetails") or e.get("executionFailedEventDetails"))
        for e in engine.history("full")
        if e["type"].endswith("Failed")
    ]
    said = {"error": "Engine.RecordsNotWritten", "cause": cause}
    assert ended == [("MapRunFailed", said), ("ExecutionFailed", said)]

    # AND once there is room, a redrive runs the batches not recorded, to the end
    calls.clear()
    again = engine.redrive("full")
    assert again["status"] == "SUCCEEDED"
    assert calls == [[2, 3], [4, 5], [6, 7]]
    entries = result_entries(objects, f"out/{map_run['id']}/manifest.json")
    assert [json.loads(e["Output"]) for e in entries["SUCCEEDED"]] == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
    ]


def test_a_record_that_cannot_be_written_is_named_and_leaves_no_temporary_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an execution in a store whose files take only their first bytes (a size limit)
    store = store_with_a_map_run(tmp_path)
    folder = store.execution_dir("ex")
    before = sorted(path.name for path in folder.iterdir())

    def cut_short(path: pathlib.Path, text: str, encoding: str | None = None) -> int:
        with open(path, "w", encoding=encoding) as handle:
            handle.write(text[:5])
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(pathlib.Path, "write_text", cut_short)

    # WHEN its record is saved THEN the error names the record, not the file written first
    with pytest.raises(RecordNotWritten) as raised:
        store.save({"name": "ex", "status": "FAILED"})
    assert (raised.value.filename, raised.value.errno) == (str(folder / "execution.json"), 27)
    # AND what was written of it is gone, and the record is as it was
    assert sorted(path.name for path in folder.iterdir()) == before
    assert store.load("ex")["status"] == "RUNNING"
