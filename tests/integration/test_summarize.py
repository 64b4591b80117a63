"""Summarize reads the Map Run's result files one record at a time, and refuses damaged ones.

On AWS, ResultWriter puts every batch's input and output of a campaign into one file of up to
5 GB (about 640 MB for a million rows): parsed whole, it would not fit in the function. A file
that is not what ResultWriter writes must fail the summary (the execution stays redrivable),
never count as a campaign that sent nothing.
"""

from __future__ import annotations

import csv
import json
import tracemalloc

import pytest

from mailmatrix.adapters.storage_local import LocalStorage
from mailmatrix.errors import StorageError
from mailmatrix.jobs import summarize_job

CAMPAIGN = {
    "id": "c-big",
    "source": {"bucket": "local", "key": "incoming/big.csv"},
    "rejects_key": "reports/c-big/rejects.csv",
}
BATCHES, BATCH_ROWS = 300, 100
PADDING = "x" * 300  # a row's other columns, as a real manifest item carries them


def _result_file(storage: LocalStorage, batches: int = BATCHES) -> int:
    """One SUCCEEDED result file of ``batches`` records, as ResultWriter writes it; its size."""
    records = []
    for batch in range(batches):
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


SEND = {"ResultWriterDetails": {"Bucket": "local", "Key": "results/c-big/run/manifest.json"}}


def _counts(valid: int) -> dict[str, int]:
    return {"rows": valid, "valid": valid, "rejected": 0, "duplicates": 0, "excluded": 0}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"not": "an array"}', "no JSON array"),
        (b"[1, 2, 3]", "a record is not a JSON object"),
        (b'[{"Status": "SUCCEEDED"', "premature EOF"),
        (b"", "premature EOF"),
        (b"garbage\x00\x01", "lexical error"),
    ],
)
def test_a_damaged_result_file_fails_the_summary_naming_the_file(tmp_path, body, said):
    # GIVEN a Map Run whose result file was damaged
    storage = LocalStorage(tmp_path / "bucket")
    _result_file(storage, batches=2)
    storage.put("results/c-big/run/SUCCEEDED_0.json", body)

    # WHEN summarized THEN it fails, naming the file and what is wrong, and writes no report
    with pytest.raises(StorageError) as raised:
        summarize_job(storage, CAMPAIGN, _counts(2 * BATCH_ROWS), SEND, "exec-1")
    assert "results/c-big/run/SUCCEEDED_0.json" in str(raised.value)
    assert said in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not list(storage.list("reports/"))


def test_results_short_of_the_validated_rows_fail_the_summary(tmp_path):
    # GIVEN results of 2 batches for a campaign that validated 3 batches' rows
    storage = LocalStorage(tmp_path / "bucket")
    _result_file(storage, batches=2)

    # WHEN summarized THEN it fails, saying how many rows the results account for
    with pytest.raises(StorageError, match="account for 200 of the 300 validated rows"):
        summarize_job(storage, CAMPAIGN, _counts(3 * BATCH_ROWS), SEND, "exec-1")


@pytest.mark.parametrize("name", ["run-1", "envío-1", "a" * 80 + "b"])
def test_an_execution_keeps_one_report_folder_whatever_its_name(name):
    from mailmatrix.jobs import report_key

    arn = f"arn:aws:states:eu-west-1:123456789012:execution:machine:{name}"
    key = report_key("c-1", arn)
    assert key == report_key("c-1", name)  # the same, asked twice, by ARN or by name
    assert key.startswith("reports/c-1/") and key.endswith("/report.csv")
    assert key.count("/") == 3
