"""Summarize reads the Map Run's result files one record at a time.

On AWS, ResultWriter puts every batch's input and output of a campaign into one file of up to
5 GB (about 640 MB for a million rows): parsed whole, it would not fit in the function.
"""

from __future__ import annotations

import csv
import json
import tracemalloc

from mailmatrix.adapters.storage_local import LocalStorage
from mailmatrix.jobs import summarize_job

CAMPAIGN = {
    "id": "c-big",
    "source": {"bucket": "local", "key": "incoming/big.csv"},
    "rejects_key": "reports/c-big/rejects.csv",
}
BATCHES, BATCH_ROWS = 300, 100
PADDING = "x" * 300  # a row's other columns, as a real manifest item carries them


def _result_file(storage: LocalStorage) -> int:
    """One SUCCEEDED result file of BATCHES records, as ResultWriter writes it; its size."""
    records = []
    for batch in range(BATCHES):
        rows = range(2 + batch * BATCH_ROWS, 2 + (batch + 1) * BATCH_ROWS)
        items = [
            {"row": r, "email": f"p{r}@example.com", "name": f"P {r}", "template": "offer",
             "key": f"k{r}", "fields": {"Notes": PADDING}}
            for r in rows
        ]  # fmt: skip
        output = {"rows": [{"row": r, "status": "sent", "message_id": f"m{r}"} for r in rows]}
        records.append(
            {
                "Status": "SUCCEEDED",
                "Name": f"child-{batch}",
                "Input": json.dumps({"BatchInput": {"campaign": CAMPAIGN}, "Items": items}),
                "Output": json.dumps(output),
            }
        )
    body = json.dumps(records).encode()
    storage.put("results/c-big/run/SUCCEEDED_0.json", body)
    manifest = {"ResultFiles": {"SUCCEEDED": [{"Key": "results/c-big/run/SUCCEEDED_0.json"}]}}
    storage.put("results/c-big/run/manifest.json", json.dumps(manifest).encode())
    return len(body)


def test_summary_of_a_big_result_file_holds_one_record_at_a_time(tmp_path):
    # GIVEN a result file of 30,000 rows (about 15 MB)
    storage = LocalStorage(tmp_path / "bucket")
    size = _result_file(storage)
    rows = BATCHES * BATCH_ROWS
    send = {"ResultWriterDetails": {"Bucket": "local", "Key": "results/c-big/run/manifest.json"}}
    counts = {"rows": rows, "valid": rows, "rejected": 0, "duplicates": 0, "excluded": 0}

    # WHEN it is summarized, its memory traced
    tracemalloc.start()
    try:
        summary = summarize_job(storage, CAMPAIGN, counts, send, "exec-1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # THEN every row is counted and reported, and the peak stayed far below the file's size
    # (parsing it whole held the bytes, the text and every record at once: over 3x its size)
    assert summary["counts"]["sent"] == rows
    report = storage.get(summary["report_key"]).decode("utf-8-sig")
    assert len(list(csv.DictReader(report.splitlines()))) == rows
    assert size > 12_000_000
    assert peak < size / 5, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
