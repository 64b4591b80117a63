"""A local run whose send ledger cannot be written as its batches send.

The example campaign runs on the real definition with two worker processes sending; a
batch's ledger meets the file size limit (RLIMIT_FSIZE) once its hold has begun, in its
worker only: that worker's file size limit is lowered to the size the ledger's -wal file has
then, so no write of the ledger gets through there any more (its claims fail, and so does the
end of its hold). No retry gets through such a fault, nor a ledger file turned read-only:
the run ends at the first try, not after the engine's retries. A busy ledger is retried.
A letter a mail server on loopback took just before the ledger met the limit is kept in the
journal beside the ledger, and its redrive does not send it again.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import socket
import sqlite3
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

import mailmatrix.local as local
from mailmatrix.adapters import ledger_sqlite
from mailmatrix.cli.main import cli
from mailmatrix.core.failures import LEDGER_READ_ONLY_ADVICE, NO_ROOM_REMEDY, NOT_SENT_TWICE
from mailmatrix.core.send import send_batch
from mailmatrix.engine.store import ExecutionStore
from mailmatrix.local import REPO, Workdir, run_campaign

EXAMPLE = REPO / "examples" / "offer-letters"
VALID_ROWS = 18


class _Wrapped:
    """A worker's ledger, as it is but for what a subclass changes."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


class _MeetsTheLimitOnceHeld(_Wrapped):
    """The ledger of a worker that meets the file size limit as soon as its batch is held."""

    def begin_batch(self, attempt: str, *, invocation: str, until: float) -> str | None:
        holder = self._ledger.begin_batch(attempt, invocation=invocation, until=until)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        wal = os.path.getsize(f"{self._ledger.path}-wal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (wal, hard))
        return holder


class _ReadOnlyOnceHeld(_Wrapped):
    """The ledger of a worker whose file turns read-only as soon as its batch is held (made
    so by another hand: chmod, a file system remounted read-only)."""

    def begin_batch(self, attempt: str, *, invocation: str, until: float) -> str | None:
        holder = self._ledger.begin_batch(attempt, invocation=invocation, until=until)
        uri = f"{Path(self._ledger.path).absolute().as_uri()}?mode=ro"
        self._ledger._db = sqlite3.connect(uri, uri=True, isolation_level=None)
        return holder


class _MeetsTheLimitOnceSent(_Wrapped):
    """The ledger of a worker that meets the file size limit right after its first letter
    went out: the claim of the next row, which records that letter, fails, and so does
    recording it on its own."""

    def claim(self, *args: Any, sent_before: Any = None, **kwargs: Any) -> Any:
        if sent_before is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            wal = os.path.getsize(f"{self._ledger.path}-wal")
            resource.setrlimit(resource.RLIMIT_FSIZE, (wal, hard))
        return self._ledger.claim(*args, sent_before=sent_before, **kwargs)


class _BusyOnce(_Wrapped):
    """The ledger of a worker whose first claim finds the database locked for good (another
    process holding its write lock past the busy timeout)."""

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        locked = sqlite3.OperationalError("database is locked")
        locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
        raise ledger_sqlite._error(self._ledger.path, "claim", locked)


def _first_batch_with(
    ledger_kind: type, *args: Any, ledger: Any, marker: str, **kwargs: Any
) -> Any:
    """send_batch, whose first invocation in the run (the one that makes ``marker``) has its
    ledger wrapped in ``ledger_kind``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return send_batch(*args, ledger=ledger, **kwargs)
    return send_batch(*args, ledger=ledger_kind(ledger), **kwargs)


def _run_first_batch_with(
    ledger_kind: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailer: str | None = None
) -> tuple[dict[str, Any], Path, list[float]]:
    """Run the example campaign into a workdir under ``tmp_path`` (through ``mailer`` when
    given), the first invocation of a batch with its ledger wrapped in ``ledger_kind``: the
    run's record, the workdir and the waits of the engine's retries (not waited out)."""
    monkeypatch.setattr(
        "mailmatrix.jobs.send_batch",
        functools.partial(_first_batch_with, ledger_kind, marker=str(tmp_path / "first")),
    )
    workdir = tmp_path / "w"
    waits: list[float] = []
    record = run_campaign(
        EXAMPLE / "recipients.csv", workdir=workdir, sleep=waits.append, mailer=mailer
    )
    return record, workdir, waits


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


def test_a_batch_that_met_the_limit_ends_the_run_at_once_and_its_redrive_sends_it(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of the example campaign (one batch) whose first try of the batch meets the
    # file size limit in its worker once it holds the batch: it sends nothing, and its hold
    # cannot be deleted
    # WHEN the file runs
    record, workdir, waits = _run_first_batch_with(_MeetsTheLimitOnceHeld, tmp_path, monkeypatch)

    # THEN the run ended at that try, not after minutes of retries that meet the same limit:
    # the batch was tried once, its error says the ledger cannot be written, nothing was sent
    assert record["status"] == "FAILED", record.get("cause")
    assert _send_batch_errors(workdir, record["name"]) == ["LedgerNotWritten"]
    assert waits == []
    assert list((workdir / "outbox" / "new").iterdir()) == []

    # WHEN the limit is gone (the next tries do not meet it) and the execution is redriven
    record = local.redrive(workdir, record["name"], sleep=waits.append)

    # THEN the redrive sent the batch, without waiting for the first try's hold as ClaimBusy
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert "ClaimBusy" not in _send_batch_errors(workdir, record["name"])
    assert waits == []
    # AND every valid row went out once
    assert len(list((workdir / "outbox" / "new").iterdir())) == VALID_ROWS


def test_a_ledger_that_meets_the_limit_in_every_worker_ends_the_run_saying_what_to_do(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of the example campaign whose ledger meets the file size limit in each
    # worker once it holds a batch there (retries, were there any, not waited out)
    monkeypatch.setattr("mailmatrix.jobs.send_batch", _every_batch_meets_the_limit)
    monkeypatch.setenv("COLUMNS", "1000")  # a long temporary path is not folded mid-name
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
        rf"LedgerNotWritten \(1 batch\): ledger {re.escape(str(ledger))}: \w+ \w+: cannot write the"
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


def test_a_ledger_turned_read_only_as_a_batch_sends_ends_the_run_at_once(
    tmp_path, monkeypatch, two_workers
):
    # GIVEN a run of the example campaign whose ledger file turns read-only once its batch
    # is held
    # WHEN the file runs
    record, workdir, waits = _run_first_batch_with(_ReadOnlyOnceHeld, tmp_path, monkeypatch)

    # THEN it ended at the batch's first try (it was tried again for a minute or more): the
    # error is the ledger's that no retry heals, its message SQLite's words; nothing was sent
    assert record["status"] == "FAILED"
    assert _send_batch_errors(workdir, record["name"]) == ["LedgerNotWritten"]
    assert waits == []
    assert list((workdir / "outbox" / "new").iterdir()) == []
    details = " ".join(record["failure_details"])
    assert "LedgerNotWritten (1 batch): ledger " in details
    assert "attempt to write a readonly database" in details
    # AND the advice is to make the file writable first, not to redrive at once
    assert record["redrive_advice"] == LEDGER_READ_ONLY_ADVICE


def test_a_busy_ledger_is_retried_and_the_batch_sent(tmp_path, monkeypatch, two_workers):
    # GIVEN a run of the example campaign whose batch finds the ledger locked at its first try
    # WHEN the file runs
    record, workdir, waits = _run_first_batch_with(_BusyOnce, tmp_path, monkeypatch)

    # THEN the state machine retried the batch after a wait (a lock passes), and the retry
    # sent every valid row once
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert _send_batch_errors(workdir, record["name"]) == ["LedgerError"]
    assert len(waits) == 1
    assert len(list((workdir / "outbox" / "new").iterdir())) == VALID_ROWS


class _Recipients:
    """An SMTP server's handler that counts the recipients of the messages it takes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.update(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


def _states(workdir: Path) -> dict[str, int]:
    """How many rows the workdir's ledger holds in each state."""
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as ledger:
        found = ledger.execute("SELECT state, count(*) FROM sends GROUP BY state").fetchall()
    return dict(found)


@pytest.fixture
def mail_server():
    """A mail server on a loopback port: its handler and its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    recipients = _Recipients()
    controller = Controller(recipients, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recipients, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def test_a_letter_sent_as_the_ledger_met_the_limit_is_not_sent_again_by_the_redrive(
    tmp_path, monkeypatch, two_workers, mail_server
):
    # GIVEN a run of the example campaign through a mail server whose batch's ledger meets
    # the file size limit right after the server took its first letter
    recipients, url = mail_server

    # WHEN the file runs
    record, workdir, waits = _run_first_batch_with(
        _MeetsTheLimitOnceSent, tmp_path, monkeypatch, mailer=url
    )

    # THEN the run ended at that try; the letter the server took is recorded as sent (kept
    # in the journal beside the ledger until the ledger was next opened to write)
    assert record["status"] == "FAILED", record.get("cause")
    assert _send_batch_errors(workdir, record["name"]) == ["LedgerNotWritten"]
    assert waits == []
    assert sum(recipients.received.values()) == 1
    journal = workdir.resolve() / "ledger.sqlite3-sent"
    assert _states(workdir) == {"sent": 1} or journal.exists()

    # WHEN the limit is gone and the execution is redriven
    record = local.redrive(workdir, record["name"], sleep=waits.append)

    # THEN the redrive sent the rest: the server took each valid row's letter exactly once,
    # and the journal was recorded in the ledger and removed
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert len(recipients.received) == VALID_ROWS
    assert set(recipients.received.values()) == {1}
    assert not journal.exists()
    assert _states(workdir) == {"sent": VALID_ROWS}
