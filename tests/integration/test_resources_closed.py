"""What MailMatrix opens it closes: ledger connections and intake's spooled files.

Python 3.13 warns (ResourceWarning) of an SQLite connection or a SpooledTemporaryFile left to
the garbage collector; these tests see the leaks on every Python, by keeping each connection
and spool made while they run and asking whether it was closed.
"""

from __future__ import annotations

import io
import sqlite3
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner

from functions.send_batch import app as send_batch_app
from functions.ses_events import app as ses_events_app
from mailmatrix.adapters import ledger_dynamodb, mailer_ses
from mailmatrix.adapters.mailer_faults import FaultyMailer
from mailmatrix.cli.main import cli
from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.recipients import validate_recipients
from mailmatrix.core.templates import load_catalog
from mailmatrix.engine.registry import make_context
from mailmatrix.errors import InputFileError
from mailmatrix.local import REPO, environment, redrive, run_campaign
from mailmatrix.settings import Settings
from tests.integration.test_send_batch_result import _handle

EXAMPLE = REPO / "examples" / "offer-letters"
CATALOG_FILES = {"subject.txt": "Hello {{ Name }}", "body.txt": "Dear {{ Name }}"}
# Two rows of one address with other names (both held back: rejected), a bad address and
# an exact duplicate: every list of the report holds something.
FILE = (
    b"Email,Name\n"
    b"ann@example.com,Ann\n"
    b"bo@example.com,Bo\n"
    b"bo@example.com,Bob\n"
    b"not-an-address,Cy\n"
    b"ann@example.com,Ann\n"
)


def _keep_made(monkeypatch, owner: Any, name: str) -> list[Any]:
    """Keep every object ``owner.name(...)`` makes while the test runs."""
    made: list[Any] = []
    real = getattr(owner, name)

    def make(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(owner, name, make)
    return made


@pytest.fixture
def spools(monkeypatch) -> list[tempfile.SpooledTemporaryFile]:
    """Every SpooledTemporaryFile made while the test runs."""
    return _keep_made(monkeypatch, tempfile, "SpooledTemporaryFile")


@pytest.fixture
def connections(monkeypatch) -> list[sqlite3.Connection]:
    """Every SQLite connection opened while the test runs (in this process)."""
    return _keep_made(monkeypatch, sqlite3, "connect")


def _open(connections: list[sqlite3.Connection]) -> list[sqlite3.Connection]:
    still = []
    for connection in connections:
        try:
            connection.total_changes  # noqa: B018  (refused once closed)
        except sqlite3.ProgrammingError:
            continue
        still.append(connection)
    return still


def _validate(stream: io.BytesIO) -> Any:
    return validate_recipients(
        stream,
        source="incoming/c.csv",
        catalog=load_catalog(CATALOG_FILES),
        attachments=AttachmentIndex([]),
        emit=lambda row: None,
    )


def test_intake_closes_its_own_spools_and_the_report_its_lists_once_read(spools):
    # GIVEN a file whose rows fill every list of the report
    # WHEN it is validated
    report = _validate(io.BytesIO(FILE))

    # THEN the report's lists (with the rows merged in later) are open to read, and only
    # they: intake closed its own spools
    lists = [report.rejected, report.duplicates, report.skipped]
    lists += [merged for problems in lists for merged in problems._merged]
    assert spools and [s for s in spools if not s.closed] == [p._spool for p in lists]
    with report:
        assert [r["row"] for r in report.rejected] == [3, 4, 5]
        assert [d["row"] for d in report.duplicates] == [6]
    # AND closing the report closes them, its counts still told
    assert [s for s in spools if not s.closed] == []
    assert (len(report.rejected), len(report.duplicates), report.valid) == (3, 1, 1)


def test_a_file_refused_half_way_leaves_no_spool_open(spools):
    # GIVEN a file with a header and no rows (refused once it is read to its end)
    # WHEN it is validated
    with pytest.raises(InputFileError, match="no recipients"):
        _validate(io.BytesIO(b"Email,Name\n\n"))

    # THEN the report nobody gets and intake's own spools are closed
    assert spools and [s for s in spools if not s.closed] == []


def _campaign(tmp_path: Path) -> Path:
    campaign = tmp_path / "c.csv"
    campaign.write_bytes(FILE)
    (tmp_path / "tpl").mkdir()
    for name, text in CATALOG_FILES.items():
        (tmp_path / "tpl" / name).write_text(text, encoding="utf-8")
    return campaign


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_the_validate_command_closes_the_report(tmp_path, spools, json_output):
    # GIVEN a file with rejected and duplicate rows
    campaign = _campaign(tmp_path)
    command = ["validate", str(campaign), "--templates", str(tmp_path / "tpl")]
    command += ["--sender", "hr@example.com"]
    command += ["--rejects", str(tmp_path / "rejects.csv")] + (["--json"] if json_output else [])

    # WHEN `mailmatrix validate` checks it (and writes the rejects report)
    result = CliRunner().invoke(cli, command)

    # THEN it reported the rows, and no spool is left open
    assert result.exit_code == 4, result.output
    assert "bo@example.com" not in (tmp_path / "rejects.csv").read_text(encoding="utf-8")
    assert spools and [s for s in spools if not s.closed] == []


def test_the_preview_command_closes_the_report(tmp_path, spools):
    # GIVEN a file whose row 4 was held back for its address
    campaign = _campaign(tmp_path)
    preview = ["preview", str(campaign), "--row", "4", "--out", str(tmp_path / "out")]

    # WHEN `mailmatrix preview` is asked for that row
    result = CliRunner().invoke(cli, [*preview, "--templates", str(tmp_path / "tpl")])

    # THEN it refuses the row with the reason from the report, and no spool is left open
    assert result.exit_code == 4, result.output
    assert "row 4: rejected" in result.output
    assert spools and [s for s in spools if not s.closed] == []


def test_a_local_run_and_its_redrive_close_every_connection_and_spool(
    tmp_path, spools, connections
):
    # GIVEN the bundled campaign run in this process (a drill keeps SendBatch in threads)
    # with a quota that stops it after 5 messages
    workdir = tmp_path / "work"

    # WHEN it runs, then is redriven with the quota lifted
    record = run_campaign(
        EXAMPLE / "recipients.csv",
        workdir=workdir,
        faults="quota-after=5",
        sleep=lambda seconds: None,
    )
    assert record["status"] == "FAILED"
    assert _open(connections) == [] and [s for s in spools if not s.closed] == []
    ran = len(connections)
    redriven = redrive(workdir, record["name"], sleep=lambda seconds: None)

    # THEN validation, every batch and the summary used the ledger, and closed it: the run
    # and the redrive (which lifted the halt) leave no connection and no spool open
    assert redriven["status"] == "FAILED"  # the drill's quota holds per process: halted again
    assert len(connections) > ran
    assert _open(connections) == []
    assert spools and [s for s in spools if not s.closed] == []


def test_send_batch_reset_closes_the_warm_ledger(tmp_path, connections, monkeypatch):
    # GIVEN two SendBatch invocations, each after a reset, the last one's ledger kept warm
    _handle(_EMPTY, tmp_path, monkeypatch)
    _handle(_EMPTY, tmp_path, monkeypatch)
    assert len(connections) == 2 and len(_open(connections)) == 1  # the second reset closed one

    # WHEN the warm adapters are reset (a local run ends)
    send_batch_app.reset()

    # THEN the warm ledger's connection is closed too
    assert _open(connections) == []


_EMPTY: dict[str, Any] = {"sent": 0, "skipped": 0, "failed": 0, "rows": []}


def test_the_ses_events_handler_closes_its_ledger(tmp_path, connections):
    # GIVEN a delivery event of a message the ledger does not know
    settings = {"MAILMATRIX_LEDGER": f"sqlite://{tmp_path / 'ledger.sqlite3'}"}
    event = {"detail": {"eventType": "Delivery", "mail": {"messageId": "m-unknown"}}}

    # WHEN the SesEvents handler records it
    with environment(settings):
        result = ses_events_app.handler(event, make_context("SesEventsFunction", None, 30))

    # THEN it looked it up in the ledger, and closed the ledger
    assert result["recorded"] is False
    assert len(connections) == 1 and _open(connections) == []


def test_a_dynamodb_ledger_closes_the_client_it_made_and_not_one_it_was_given(monkeypatch):
    # GIVEN a ledger that made its own client and one that was given a client
    made, given = mock.Mock(), mock.Mock()
    monkeypatch.setattr(ledger_dynamodb._aws, "client", lambda service: made)
    own = ledger_dynamodb.DynamoDbLedger("sends")
    lent = ledger_dynamodb.DynamoDbLedger("sends", client=given)

    # WHEN both are closed
    own.close()
    lent.close()

    # THEN only the ledger's own client closed its connections
    made.close.assert_called_once_with()
    given.close.assert_not_called()


def test_send_batch_reset_closes_the_warm_mailer_too(monkeypatch):
    # GIVEN warm adapters (an SMTP mailer holds a connection per thread that sent)
    mailer, ledger = mock.Mock(), mock.Mock()
    monkeypatch.setitem(send_batch_app._warm, Settings(), (mailer, ledger))

    # WHEN they are reset
    send_batch_app.reset()

    # THEN both were closed, and forgotten
    mailer.close.assert_called_once_with()
    ledger.close.assert_called_once_with()
    assert send_batch_app._warm == {}


def test_a_drill_closes_the_mailer_it_wraps_and_ses_only_a_client_it_made(monkeypatch):
    # GIVEN a drill around a mailer, an SES mailer with its own client and one lent a client
    inner, made, given = mock.Mock(), mock.Mock(), mock.Mock()
    monkeypatch.setattr(mailer_ses._aws, "client", lambda service, sends: made)
    mailers = [
        FaultyMailer(inner),
        mailer_ses.SesMailer(),
        mailer_ses.SesMailer(client=given),
    ]

    # WHEN they are closed
    for mailer in mailers:
        mailer.close()

    # THEN the drill closed its mailer, SES the client it made and not the one it was lent
    inner.close.assert_called_once_with()
    made.close.assert_called_once_with()
    given.close.assert_not_called()
