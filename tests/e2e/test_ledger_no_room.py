"""A local run whose send ledger meets the file size limit (RLIMIT_FSIZE) as its batches send.

The example campaign runs on the real definition with two worker processes sending; a
batch's ledger meets the limit once its hold has begun, in its worker only: that worker's
file size limit is lowered to the size the ledger's -wal file has then, so no write of the
ledger gets through there any more (its claims fail, and so does the end of its hold). The
engine's retries are not waited out (no sleep).
"""

from __future__ import annotations

import functools
import os
import re
import resource
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mailmatrix.local as local
from mailmatrix.cli.main import cli
from mailmatrix.core.failures import NO_ROOM_REMEDY, NOT_SENT_TWICE
from mailmatrix.core.send import send_batch
from mailmatrix.engine.store import ExecutionStore
from mailmatrix.local import REPO, Workdir, run_campaign

EXAMPLE = REPO / "examples" / "offer-letters"
VALID_ROWS = 18


class _MeetsTheLimitOnceHeld:
    """The ledger of a worker that meets the file size limit as soon as its batch is held."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def begin_batch(self, attempt: str, *, invocation: str, until: float) -> str | None:
        holder = self._ledger.begin_batch(attempt, invocation=invocation, until=until)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        wal = os.path.getsize(f"{self._ledger.path}-wal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (wal, hard))
        return holder


def _first_batch_meets_the_limit(*args: Any, ledger: Any, marker: str, **kwargs: Any) -> Any:
    """send_batch, whose first invocation in the run (the one that makes ``marker``) meets the
    file size limit in its worker."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return send_batch(*args, ledger=ledger, **kwargs)
    return send_batch(*args, ledger=_MeetsTheLimitOnceHeld(ledger), **kwargs)


def _every_batch_meets_the_limit(*args: Any, ledger: Any, **kwargs: Any) -> Any:
    """send_batch, whose every worker meets the file size limit once it holds a batch."""
    return send_batch(*args, ledger=_MeetsTheLimitOnceHeld(ledger), **kwargs)


@pytest.fixture
def two_workers(monkeypatch):
    """Batches sent by two worker processes, forked with the test's patches."""
    monkeypatch.delenv("MAILMATRIX_FAULTS", raising=False)
    monkeypatch.setattr(local, "_worker_processes", lambda faults: 2)


def _send_batch_errors(workdir: Path, execution: str) -> list[str]:
    """The errors of the SendBatch tries of the execution's batches, in the order they came."""
    store = ExecutionStore(Workdir(workdir).executions)
    errors = []
    for run in store.map_runs(execution):
        for child in store.children(execution, run["id"]).values():
            errors += [
                event["taskFailedEventDetails"]["error"]
                for event in child["history"]
                if event["type"] == "TaskFailed"
            ]
    return errors


def test_a_batch_whose_worker_met_the_limit_is_sent_by_its_retry_in_the_other_worker(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of the example campaign (one batch) whose first try of the batch meets the
    # file size limit in its worker once it holds the batch: it sends nothing, and its hold
    # cannot be deleted; that worker runs on
    monkeypatch.setattr(
        "mailmatrix.jobs.send_batch",
        functools.partial(_first_batch_meets_the_limit, marker=str(tmp_path / "first")),
    )
    workdir = tmp_path / "w"

    # WHEN the file runs, its retries not waited out
    record = run_campaign(EXAMPLE / "recipients.csv", workdir=workdir, sleep=lambda seconds: None)

    # THEN a retry sent the batch: the first try failed on the ledger, and no retry waited
    # for its hold as ClaimBusy (it did, in the other worker, until the hold's deadline)
    assert record["status"] == "SUCCEEDED", record.get("cause")
    errors = _send_batch_errors(workdir, record["name"])
    assert errors[:1] == ["LedgerError"]
    assert "ClaimBusy" not in errors
    # AND every valid row went out once
    assert len(list((workdir / "outbox" / "new").iterdir())) == VALID_ROWS


def test_a_ledger_that_meets_the_limit_in_every_worker_ends_the_run_saying_what_to_do(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of the example campaign whose ledger meets the file size limit in each
    # worker once it holds a batch there, the retries not waited out
    monkeypatch.setattr("mailmatrix.jobs.send_batch", _every_batch_meets_the_limit)
    start_engine = local.start_engine
    monkeypatch.setattr(
        local,
        "start_engine",
        lambda workdir, registry, sleep: start_engine(workdir, registry, lambda seconds: None),
    )
    workdir = tmp_path / "w"

    # WHEN the file runs
    result = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    )

    # THEN it failed, sending nothing; it names the file that could not be written and why,
    # says that nothing was sent twice, and what to do: make room, then redrive
    output = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert list((workdir / "outbox" / "new").iterdir()) == []
    ledger = workdir.resolve() / "ledger.sqlite3"
    cause = (
        rf"LedgerError \(1 batch\): ledger {re.escape(str(ledger))}: \w+ \w+: cannot write the"
        r" ledger: it reached the file size limit of this process, \d+ bytes \(ulimit -f\)"
        r" \(SQLite: disk I/O error\)"
    )
    assert re.search(cause, output), output
    advice = (
        f"When to resume: the send ledger could not be written (see above). {NOT_SENT_TWICE}"
        f" First {NO_ROOM_REMEDY}, then redrive: rows recorded as sent are skipped."
    )
    assert advice in output
    assert f"redrive {result.output.split('Execution: ')[1].split()[0]}" in output
