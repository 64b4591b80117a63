"""Engine overhead: a 100,000-item Distributed Map in batches of 100 with a trivial task,
next to a plain Python loop doing the same work; per-item and per-batch overhead."""

from __future__ import annotations

import json
import pathlib
import time

from mailmatrix.engine import Engine, ResourceRegistry

ITEMS = 100_000
BATCH = 100

DEFINITION = {
    "StartAt": "Fan",
    "States": {
        "Fan": {
            "Type": "Map",
            "ItemReader": {
                "Resource": "arn:aws:states:::s3:getObject",
                "ReaderConfig": {"InputType": "JSONL"},
                "Parameters": {"Bucket": "bench", "Key": "items.jsonl"},
            },
            "ItemBatcher": {"MaxItemsPerBatch": BATCH, "BatchInput": {"run": "bench"}},
            "MaxConcurrency": 8,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "Work",
                "States": {
                    "Work": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": {"FunctionName": "Work", "Payload.$": "$"},
                        "OutputPath": "$.Payload",
                        "End": True,
                    }
                },
            },
            "ResultWriter": {
                "Resource": "arn:aws:states:::s3:putObject",
                "Parameters": {"Bucket": "bench", "Prefix": "results"},
            },
            "End": True,
        }
    },
}


def work(event: dict, context: object) -> dict:
    """The trivial task: count the batch's items and sum a field."""
    return {"n": len(event["Items"]), "total": sum(i["v"] for i in event["Items"])}


def run(out_dir: pathlib.Path) -> dict[str, str]:
    """Time the engine against a plain loop over the same batches."""
    objects: dict[tuple[str, str], bytes] = {}
    lines = [json.dumps({"id": i, "v": i % 7}) for i in range(ITEMS)]
    objects[("bench", "items.jsonl")] = ("\n".join(lines) + "\n").encode()

    began = time.perf_counter()
    items = [json.loads(line) for line in lines]
    for start in range(0, ITEMS, BATCH):
        batch = {"BatchInput": {"run": "bench"}, "Items": items[start : start + BATCH]}
        json.loads(json.dumps(work(json.loads(json.dumps(batch)), None)))
    plain = time.perf_counter() - began

    registry = ResourceRegistry()
    registry.register_lambda("Work", work)
    registry.set_object_store(
        lambda b, k: objects[(b, k)], lambda b, k, d: objects.__setitem__((b, k), d)
    )
    engine = Engine(out_dir / "executions", registry)
    began = time.perf_counter()
    record = engine.start(json.dumps(DEFINITION), {}, name="bench")
    elapsed = time.perf_counter() - began
    if record["status"] != "SUCCEEDED":
        raise RuntimeError(f"bench_engine: the execution failed: {record.get('cause')}")

    batches = ITEMS // BATCH
    figures = {
        "engine_map_100k_s": f"{elapsed:.2f}",
        "plain_loop_100k_s": f"{plain:.2f}",
        "engine_overhead_per_item_us": f"{(elapsed - plain) / ITEMS * 1e6:.1f}",
        "engine_overhead_per_batch_ms": f"{(elapsed - plain) / batches * 1e3:.2f}",
    }
    print(
        f"Distributed Map, {ITEMS} items in batches of {BATCH}: {elapsed:.2f} s "
        f"(plain loop {plain:.2f} s)"
    )
    return figures
