"""`mailmatrix settle`: the rows a run left in doubt (claimed by a process that ended, never
recorded sent), listed and settled as sent or not sent; each refusal leaves the ledger as it was.

The rows in doubt are made as a run leaves them: a process claims them in the workdir's ledger
and ends without recording them.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.cli import exits
from mailmatrix.cli.main import cli
from mailmatrix.engine.store import ExecutionStore
from mailmatrix.local import REPO, campaign_of_file, object_created_event
from mailmatrix.processes import this_process
from tests.e2e.test_workdir_faults import _run_with_file_size_limit

EXAMPLE = REPO / "examples" / "offer-letters" / "recipients.csv"
DEAD_ATTEMPT = "arn:aws:states:local:000000000000:execution:mailmatrix:run/batch-1"

# A process that claims rows (key, row) in a ledger and ends without recording them.
_CLAIM_AND_END = """
import json, sys
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
ledger = SqliteLedger(sys.argv[1])
for key, row in json.loads(sys.argv[3]):
    owner = (f"file-{row}.pdf", f"recipient-{row}", f"p{row}***@example.com")
    ledger.claim(key, campaign=sys.argv[2], row=row, attempt=sys.argv[4], owner=owner)
"""


@pytest.fixture
def campaign(tmp_path) -> tuple[Path, Path]:
    """The example's file, in a folder of the test's, and a workdir for it: (file, workdir)."""
    csv_file = tmp_path / "offers.csv"
    shutil.copy(EXAMPLE, csv_file)
    workdir = tmp_path / "w"
    workdir.mkdir()
    return csv_file, workdir


def _leave_in_doubt(workdir: Path, csv_file: Path, rows: list[int]) -> None:
    """Claim ``rows`` of the file's campaign in a process that then ends, as a run whose disk
    was full leaves the row it was sending."""
    keys = [(f"key-{row}", row) for row in rows]
    args = [str(workdir / "ledger.sqlite3"), campaign_of_file(csv_file), json.dumps(keys)]
    subprocess.run([sys.executable, "-c", _CLAIM_AND_END, *args, DEAD_ATTEMPT], check=True)


def _states(workdir: Path) -> dict[int, tuple[str, str | None]]:
    """Each row's state in the ledger, and what settled it."""
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db:
        found = db.execute("SELECT row, state, settled FROM sends").fetchall()
    return {row: (state, settled) for row, state, settled in found}


def _settle(csv_file: Path, workdir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["settle", str(csv_file), *args, "--workdir", str(workdir)])
    return result.exit_code, " ".join(result.output.split())


def test_with_no_option_it_lists_the_rows_in_doubt_and_the_commands_that_settle(campaign):
    # GIVEN a workdir whose run of the file ended sending rows 7 and 9
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7, 9])

    # WHEN the operator asks for the file's rows in doubt
    code, output = _settle(csv_file, workdir)

    # THEN each is named by row, masked address, attachment and time of its try, with the
    # commands that settle them; nothing was written
    assert code == exits.OK, output
    assert "row 7, p7***@example.com, template not recorded, attachment file-7.pdf, tried" in output
    assert "row 9, p9***@example.com" in output
    assert f"settle {csv_file} --sent 7,9 --workdir {workdir}" in output
    assert f"settle {csv_file} --not-sent 7,9 --workdir {workdir}" in output
    assert _states(workdir) == {7: ("claimed", None), 9: ("claimed", None)}


def test_settled_as_sent_a_row_is_skipped_by_the_next_claim(campaign):
    # GIVEN a row in doubt whose letter the mail server's log shows arrived
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7, 9])

    # WHEN the operator settles it as sent
    code, output = _settle(csv_file, workdir, "--sent", "7")

    # THEN it is recorded sent, with who said so and when; the other row stays in doubt
    assert code == exits.OK, output
    assert "Settled as sent (1 row(s)): row 7, p7***@example.com" in output
    state, settled = _states(workdir)[7]
    assert state == "sent"
    assert settled is not None and settled.startswith("sent, said by ")
    assert _states(workdir)[9] == ("claimed", None)
    # AND a run's claim of it skips it, as a letter sent (not as a possible duplicate)
    with closing(SqliteLedger(workdir / "ledger.sqlite3")) as ledger:
        claim = ledger.claim("key-7", campaign=campaign_of_file(csv_file), row=7, attempt="next")
    assert (claim.state, claim.reason) == ("sent", None)


def test_settled_as_not_sent_a_row_is_claimed_as_never_tried(campaign):
    # GIVEN a row in doubt whose letter did not arrive
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7])

    # WHEN the operator settles it as not sent
    code, output = _settle(csv_file, workdir, "--not-sent", "7")

    # THEN it is given back, and the next claim takes it as a row never tried: not taken over
    # from the attempt that held it, no doubt counted, so its letter is no possible duplicate
    assert code == exits.OK, output
    assert _states(workdir)[7][0] == "released"
    with closing(SqliteLedger(workdir / "ledger.sqlite3")) as ledger:
        claim = ledger.claim("key-7", campaign=campaign_of_file(csv_file), row=7, attempt="next")
    assert (claim.state, claim.reason, claim.doubts) == ("claimed", None, 0)


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        ("5", "row 5 is already recorded as sent (a run skips it)"),
        ("3", "row 3 was never tried: no run of this file sent it"),
        ("40", "there is no row 40 in the file (its rows are 2 to 21)"),
        ("7,3", "row 3 was never tried"),
    ],
    ids=["already-sent", "never-tried", "out-of-range", "one-of-several"],
)
def test_a_row_not_in_doubt_is_refused_and_nothing_is_settled(campaign, rows, said):
    # GIVEN a row in doubt (7), and a row the ledger has as sent (5)
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7])
    with closing(SqliteLedger(workdir / "ledger.sqlite3")) as ledger:
        ledger.claim("key-5", campaign=campaign_of_file(csv_file), row=5, attempt="a")
        ledger.record_sent("key-5", message_id="m-5")

    # WHEN the operator settles rows among which one is not in doubt
    code, output = _settle(csv_file, workdir, "--sent", rows)

    # THEN it is refused as a usage problem, saying why, and nothing was written
    assert code == exits.USAGE, output
    assert said in output
    assert "Nothing was settled" in output
    assert _states(workdir)[7] == ("claimed", None)


def test_a_row_a_live_process_holds_is_being_sent_not_in_doubt(campaign):
    # GIVEN a row claimed by a process that still runs (this one), within its lease
    csv_file, workdir = campaign
    with closing(SqliteLedger(workdir / "ledger.sqlite3")) as ledger:
        ledger.claim("key-7", campaign=campaign_of_file(csv_file), row=7, attempt="live")

    # WHEN the operator settles it
    code, output = _settle(csv_file, workdir, "--not-sent", "7")

    # THEN it is refused: a run is sending it
    assert code == exits.USAGE, output
    assert "row 7 is being sent by a run now" in output
    assert _states(workdir)[7] == ("claimed", None)


def test_a_run_of_the_file_going_on_refuses_any_settling(campaign):
    # GIVEN a row in doubt, and an execution of the file running in the workdir (its engine
    # process this one)
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7])
    event = object_created_event("mailmatrix-local", f"incoming/{csv_file.name}", 10, "e")
    record = {"name": "running-1", "status": "RUNNING", "engine": this_process()}
    ExecutionStore(workdir / "executions").create({**record, "input": json.dumps(event)})

    # WHEN the operator settles the row
    code, output = _settle(csv_file, workdir, "--sent", "7")

    # THEN it is refused, naming the run, and nothing was written
    assert code == exits.USAGE, output
    assert "a run of it is going on in the workdir" in output
    assert "(execution running-1)" in output
    assert _states(workdir)[7] == ("claimed", None)


def test_a_ledger_that_cannot_be_written_is_said_and_nothing_is_settled(campaign):
    # GIVEN a row in doubt, and a settle run by a process whose files may not grow at all
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7])

    # WHEN the operator settles it
    args = ["settle", str(csv_file), "--sent", "7", "--workdir", str(workdir)]
    ran = _run_with_file_size_limit(args, 0)

    # THEN it fails (exit 1) naming the ledger and why, that nothing was settled, what to do
    said = " ".join(ran.stderr.split())
    assert ran.returncode == exits.RUN_FAILED, said + ran.stdout
    assert f"ledger {workdir / 'ledger.sqlite3'}" in said
    assert "the file size limit of this process" in said
    assert "Nothing was settled: free space on its disk, or raise the file size limit" in said
    assert _states(workdir)[7] == ("claimed", None)


def test_both_options_at_once_are_refused(campaign):
    csv_file, workdir = campaign
    code, output = _settle(csv_file, workdir, "--sent", "7", "--not-sent", "8")
    assert code == exits.USAGE
    assert "give --sent or --not-sent, not both" in output
