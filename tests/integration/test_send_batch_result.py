"""The SendBatch handler returns a result a Step Functions state can hold, however long the
reasons of its failed rows."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from functions.send_batch import app
from mailmatrix.core.payload import CUT_MARK, RESULT_BUDGET_BYTES, result_size
from mailmatrix.engine.registry import make_context
from mailmatrix.local import LAMBDA_LOGGER, REPO, environment
from tests.unit.test_payload import STATE_LIMIT, failed_batch


def _handle(result: dict, tmp_path, monkeypatch) -> dict:
    """What the SendBatch handler returns for a batch whose rows came out as ``result``."""
    monkeypatch.setattr(app, "send_job", lambda items, campaign, **_: result)
    settings = {
        "MAILMATRIX_STORAGE": (tmp_path / "bucket").as_uri(),
        "MAILMATRIX_STORAGE_MOUNTS": f"templates/={REPO / 'templates'}",
        "MAILMATRIX_MAILER": f"maildir://{tmp_path / 'outbox'}",
        "MAILMATRIX_LEDGER": f"sqlite://{tmp_path / 'ledger.sqlite3'}",
    }
    event = {
        "BatchInput": {
            "campaign": {
                "id": "c-1",
                "source": {"bucket": "local"},
                "templates_prefix": "templates/",
            }
        },
        "Items": [{"row": row["row"]} for row in result["rows"]],
        "owner": "arn:aws:states:eu-west-1:123456789012:execution:m/SendEmails:child-1",
    }
    with environment(settings):
        app.reset()
        return app.handler(event, make_context("SendBatchFunction", None, 900))


@contextlib.contextmanager
def _logged() -> Iterator[list[logging.LogRecord]]:
    """The records the handlers' logger logs in the block."""
    records: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = records.append  # type: ignore[method-assign]
    handler_logger = logging.getLogger(LAMBDA_LOGGER)
    handler_logger.addHandler(listener)
    try:
        yield records
    finally:
        handler_logger.removeHandler(listener)


def test_the_handler_returns_every_row_of_a_large_failed_batch_within_the_budget(
    tmp_path, monkeypatch
):
    # GIVEN a batch of 1,000 rows that all failed with 500-character reasons
    result = failed_batch(1000)
    assert result_size(result) > STATE_LIMIT

    # WHEN the Lambda handler returns the batch
    returned = _handle(result, tmp_path, monkeypatch)

    # THEN the result fits, with every row, its status and code, the reasons cut and marked
    assert result_size(returned) <= RESULT_BUDGET_BYTES
    assert [(r["row"], r["status"], r["code"]) for r in returned["rows"]] == [
        (r["row"], r["status"], r["code"]) for r in result["rows"]
    ]
    assert (returned["failed"], returned["sent"]) == (1000, 0)
    assert all(r["reason"].endswith(CUT_MARK) for r in returned["rows"])


def test_the_handler_warns_of_a_result_too_big_even_without_its_reasons(tmp_path, monkeypatch):
    # GIVEN a batch of so many failed rows that their numbers and codes alone pass the budget
    result = failed_batch(6000, reason_chars=20)

    # WHEN the Lambda handler returns the batch
    with _logged() as records:
        returned = _handle(result, tmp_path, monkeypatch)

    # THEN every row is still there, and the operator is warned, once, with the sizes
    assert len(returned["rows"]) == 6000
    assert result_size(returned) > RESULT_BUDGET_BYTES
    warnings = [r for r in records if r.getMessage() == "Batch result over budget"]
    assert [(w.levelname, w.budget, w.bytes) for w in warnings] == [  # type: ignore[attr-defined]
        ("WARNING", RESULT_BUDGET_BYTES, result_size(returned))
    ]


def test_a_log_file_that_cannot_be_written_is_said_once_without_tracebacks(tmp_path, capsys):
    import errno
    import io

    from mailmatrix import local

    # GIVEN the handlers' logs routed to a workdir's log file, on a disk that then fills up
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    handler_logger = logging.getLogger(LAMBDA_LOGGER)
    handler = logging.StreamHandler()
    handler_logger.addHandler(handler)
    try:
        local._route_handler_logs(local.Workdir(tmp_path))
        handler.stream.close()
        handler.stream = Full()

        # WHEN the handlers log line after line
        for number in range(5):
            handler_logger.warning("line %d", number)
    finally:
        handler_logger.removeHandler(handler)

    # THEN it is said once, naming the file and why (it was a "--- Logging error ---" and a
    # traceback per line, about thirty on a full disk)
    said = capsys.readouterr().err
    assert said == (
        f"mailmatrix: log lines are not written to {tmp_path / 'logs' / 'lambda.jsonl'}"
        " (No space left on device)\n"
    )


def test_a_row_given_up_logs_one_warning_with_its_row_and_code_not_its_address(
    tmp_path, monkeypatch
):
    # GIVEN a batch whose row 3 the server refused for good, row 2 sent, row 4 left to a newer run
    result = {
        "sent": 1,
        "skipped": 0,
        "failed": 2,
        "rows": [
            {"row": 2, "status": "sent", "message_id": "m-2"},
            {"row": 3, "status": "failed", "code": "550", "reason": "550 no such user a@x.org"},
            {"row": 4, "status": "failed", "code": "Superseded", "reason": "a newer run"},
        ],
    }

    # WHEN the Lambda handler returns the batch
    with _logged() as records:
        _handle(result, tmp_path, monkeypatch)

    # THEN one WARNING names row 3 and its code, and nothing of its address
    given_up = [r for r in records if r.getMessage() == "Row given up"]
    assert [(r.levelname, r.row, r.code) for r in given_up] == [("WARNING", 3, "550")]  # type: ignore[attr-defined]
    assert not any("@" in str(vars(r)) for r in given_up)
