"""A campaign under faults on the real definition and engine, redriven until it succeeds."""

from __future__ import annotations

import collections
import email
import email.policy
import sqlite3
from contextlib import closing
from pathlib import Path

from mailmatrix.local import redrive, run_campaign

ROWS = 300
FAULTS = "throttle=0.2,transient=0.05,crash-after=120"


def _campaign(tmp_path: Path) -> Path:
    attachments = tmp_path / "attachments"
    attachments.mkdir()
    lines = ["Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary"]
    for n in range(ROWS):
        status = "Offer" if n % 2 else "Rejection"
        start, salary = ("2027-01-11", "€50,000") if status == "Offer" else ("", "")
        fields = f'User {n},{status},u{n}.pdf,Engineer,Platform,{start},"{salary}"'
        lines.append(f"user{n:04d}@example.com,{fields}")
        (attachments / f"u{n}.pdf").write_bytes(b"%PDF-1.4\n% drill letter " + str(n).encode())
    csv_path = tmp_path / "drill.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def _delivered(workdir: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for path in (workdir / "outbox" / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        counts[message["To"].addresses[0].addr_spec] += 1
    return counts


def _redrive_until_done(workdir: Path, record) -> tuple[object, int]:
    redrives = 0
    while record["status"] != "SUCCEEDED" and redrives < 10:
        assert record["status"] == "FAILED", record.get("cause")
        record = redrive(workdir, record["name"], sleep=lambda seconds: None)
        redrives += 1
    return record, redrives


def test_a_crash_mid_batch_is_retried_and_only_the_crash_window_repeats(tmp_path):
    # GIVEN a 300-row campaign sent through a mailer that throttles 20%, fails 5% and
    # crashes (like a Lambda killed mid-batch) after 120 accepted messages
    workdir = tmp_path / "work"

    # WHEN it runs (the state machine's Retry reruns the crashed batch)
    record = run_campaign(
        _campaign(tmp_path),
        workdir=workdir,
        faults="throttle=0.2,transient=0.05,crash-after=120",
        max_concurrency=4,
        batch_size=25,
        sleep=lambda seconds: None,
    )
    record, _ = _redrive_until_done(workdir, record)

    # THEN everyone got one message, except the one the crash left unrecorded: the ledger's
    # takeover of the crashed attempt's claim measures that window exactly
    assert record["status"] == "SUCCEEDED", record.get("cause")
    delivered = _delivered(workdir)
    assert set(delivered) == {f"user{n:04d}@example.com" for n in range(ROWS)}
    extra = sum(count - 1 for count in delivered.values())
    assert extra == _takeovers(workdir) == 1


def test_a_daily_quota_halt_fails_the_run_and_redrives_resume_without_resending(tmp_path):
    # GIVEN a mailer whose account runs out of daily quota after 100 messages per process
    workdir = tmp_path / "work"

    # WHEN the campaign runs, it stops with the account-level error instead of failing rows
    record = run_campaign(
        _campaign(tmp_path),
        workdir=workdir,
        faults="quota-after=100",
        max_concurrency=4,
        batch_size=25,
        sleep=lambda seconds: None,
    )
    assert record["status"] == "FAILED"
    assert record["error"] == "States.ExceedToleratedFailureThreshold"
    assert record["failure_details"][0].startswith("AccountSendingHalted (")
    first = sum(_delivered(workdir).values())
    assert 0 < first < ROWS

    # AND the alert went out with the cause and the redrive command
    alerts = (workdir / "notifications.jsonl").read_text(encoding="utf-8")
    assert "Daily message quota exceeded" in alerts
    assert f"mailmatrix redrive {record['name']}" in alerts

    # WHEN the operator redrives (each redrive gets another 100 messages of quota)
    record, redrives = _redrive_until_done(workdir, record)

    # THEN it finished, everyone got exactly one message, no row was sent twice
    assert record["status"] == "SUCCEEDED", record.get("cause")
    assert redrives >= 2
    delivered = _delivered(workdir)
    assert set(delivered) == {f"user{n:04d}@example.com" for n in range(ROWS)}
    assert set(delivered.values()) == {1}


def _takeovers(workdir: Path) -> int:
    from mailmatrix.adapters.ledger_sqlite import SqliteLedger

    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db:
        (campaign,) = {row[0] for row in db.execute("select distinct campaign from sends")}
    with closing(SqliteLedger(workdir / "ledger.sqlite3")) as ledger:
        return sum(o.takeovers for o in ledger.outcomes(campaign))
