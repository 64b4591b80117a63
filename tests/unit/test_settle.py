"""`mailmatrix settle`: the rows a run left in doubt (claimed by a process that ended, never
recorded sent), listed and settled as sent or not sent; each refusal leaves the ledger as it was.

The rows in doubt are made as a run leaves them: a process claims them in the workdir's ledger
and ends without recording them.
"""

from __future__ import annotations

import json
import os
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
from mailmatrix.core.addresses import mask
from mailmatrix.core.recipients import read_rows
from mailmatrix.doubts import DoubtfulRow, settle_command
from mailmatrix.engine.store import ExecutionStore
from mailmatrix.local import REPO, Workdir, campaign_of_file, object_created_event
from mailmatrix.processes import this_process
from tests.e2e.test_workdir_faults import _run_with_file_size_limit

EXAMPLE = REPO / "examples" / "offer-letters" / "recipients.csv"
DEAD_ATTEMPT = "arn:aws:states:local:000000000000:execution:mailmatrix:run/batch-1"

# A process that claims rows (key, row) in a ledger and ends without recording them.
_CLAIM_AND_END = """
import json, sys
from mailmatrix.adapters.ledger_sqlite import SqliteLedger
ledger = SqliteLedger(sys.argv[1])
for key, row, masked, file in json.loads(sys.argv[3]):
    owner = (file, f"recipient-{row}", masked)
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


def _masked(csv_file: Path) -> dict[int, str]:
    """The file's rows, each with its address masked."""
    with csv_file.open("rb") as stream:
        return {row: mask(cells["Email"]) for row, cells in read_rows(stream, source="f")}


def _leave_in_doubt(
    workdir: Path, csv_file: Path, rows: list[int], keys: dict[int, str] | None = None
) -> None:
    """Claim ``rows`` of the file's campaign in a process that then ends, as a run whose disk
    was full leaves the row it was sending: each with the address the file's row holds (or
    another, for a row no longer in the file), and its key from ``keys`` (else key-ROW)."""
    masked = _masked(csv_file)
    claims = [
        (
            (keys or {}).get(row, f"key-{row}"),
            row,
            masked.get(row, f"p{row}***@example.com"),
            f"file-{row}.pdf",
        )
        for row in rows
    ]
    args = [str(workdir / "ledger.sqlite3"), campaign_of_file(csv_file), json.dumps(claims)]
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
    masked = _masked(csv_file)
    assert f"row 7, {masked[7]}, template not recorded, attachment file-7.pdf, tried" in output
    assert f"row 9, {masked[9]}" in output
    assert "settle names it 7" in output
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
    assert f"Settled as sent (1 row(s)): row 7, {_masked(csv_file)[7]}" in output
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


def _run_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *workdirs: str) -> Path:
    """A copy of the example campaign, run into each of ``workdirs`` (relative to
    ``tmp_path``, made the current folder); its CSV file."""
    folder = tmp_path / "campaign"
    shutil.copytree(EXAMPLE.parent, folder)
    csv_file = folder / "recipients.csv"
    monkeypatch.chdir(tmp_path)
    for workdir in workdirs:
        ran = CliRunner().invoke(cli, ["run", str(csv_file), "--workdir", workdir])
        assert ran.exit_code == 0, ran.output
    return csv_file


def test_a_file_that_never_ran_in_the_workdir_is_said_so_with_the_workdir_it_ran_in(
    tmp_path, monkeypatch
):
    # GIVEN the example campaign run into a workdir of its own below the current folder
    csv_file = _run_below(tmp_path, monkeypatch, "my-campaign/real")

    # WHEN settle is given its rows without --workdir (the default one, where it never ran),
    # to settle one or to list them
    settled = CliRunner().invoke(cli, ["settle", str(csv_file), "--sent", "2"])
    listed = CliRunner().invoke(cli, ["settle", str(csv_file)])

    # THEN it says the file never ran there, not that the row was never tried, and names the
    # workdir it ran in with the command that lists its rows in doubt there; nothing settled
    default = Workdir(Path(os.environ["MAILMATRIX_WORKDIR"]))
    said = (
        f"recipients.csv: no file of this name ran in the workdir {default.root}, so none of"
        " its rows is in doubt there"
    )
    where = (
        "Give settle the --workdir its run used (the run's summary names it): it ran in"
        f" my-campaign/real; `mailmatrix settle {csv_file} --workdir my-campaign/real` lists"
        " its rows in doubt there"
    )
    output = " ".join(settled.output.split())
    assert settled.exit_code == exits.USAGE, output
    assert f"{said}: nothing was settled. {where}" in output
    assert "never tried" not in output
    assert listed.exit_code == exits.OK
    assert f"{said}. {where}." in " ".join(listed.output.split())
    assert not default.has_ledger()


def test_a_file_that_ran_nowhere_known_is_told_to_give_its_runs_workdir(campaign):
    # GIVEN a workdir where the file never ran, and none known where it did
    csv_file, workdir = campaign

    # WHEN a row of it is settled there
    code, output = _settle(csv_file, workdir, "--not-sent", "2")

    # THEN it says so, and to give the --workdir of its run
    assert code == exits.USAGE, output
    assert output.endswith(
        f"offers.csv: no file of this name ran in the workdir {workdir}, so none of its rows is"
        " in doubt there: nothing was settled. Give settle the --workdir its run used (the"
        " run's summary names it)"
    )


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


AMELIA, JOSE = "a" * 64, "b" * 64  # two letters' keys in the ledger (hex, as sha256 makes them)


def _claim_dead(workdir: Path, csv_file: Path, claims: list[tuple[str, int, str]]) -> None:
    """Claim (key, row, masked address) in a process that then ends, each letter with its own
    attachment (file-KEY.pdf)."""
    dead = [(key, row, masked, f"file-{key[:4]}.pdf") for key, row, masked in claims]
    args = [str(workdir / "ledger.sqlite3"), campaign_of_file(csv_file), json.dumps(dead)]
    subprocess.run([sys.executable, "-c", _CLAIM_AND_END, *args, DEAD_ATTEMPT], check=True)


def _keys_settled(workdir: Path) -> dict[str, str]:
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db:
        return dict(db.execute("SELECT key, state FROM sends").fetchall())


def test_two_letters_in_doubt_of_one_row_are_listed_and_settled_each_by_its_letter(campaign):
    # GIVEN run 1 killed sending row 2 (amelia), her row deleted since, and run 2 killed
    # sending the new row 2 (the address the file's row 2 holds now)
    csv_file, workdir = campaign
    jose = _masked(csv_file)[2]
    _claim_dead(workdir, csv_file, [(AMELIA, 2, "a***@example.org"), (JOSE, 2, jose)])

    # WHEN the operator lists them
    code, listing = _settle(csv_file, workdir)

    # THEN each is named by its letter, and the commands printed name them so
    assert code == exits.OK, listing
    assert "row 2, a***@example.org, template not recorded, attachment file-aaaa.pdf" in listing
    assert "settle names it 2:aaaaaaaa" in listing
    assert "settle names it 2:bbbbbbbb" in listing
    assert f"settle {csv_file} --sent 2:aaaaaaaa,2:bbbbbbbb --workdir {workdir}" in listing

    # AND the row number alone is refused as ambiguous, naming both letters
    code, output = _settle(csv_file, workdir, "--sent", "2")
    assert code == exits.USAGE, output
    assert "name each as the listing does, 2:aaaaaaaa or 2:bbbbbbbb" in output
    assert _keys_settled(workdir) == {AMELIA: "claimed", JOSE: "claimed"}

    # AND the letters as listed settle each its own letter
    code, output = _settle(csv_file, workdir, "--sent", "2:aaaaaaaa")
    assert code == exits.OK, output
    assert "Settled as sent (1 row(s)): row 2, a***@example.org" in output
    code, output = _settle(csv_file, workdir, "--not-sent", "2:bbbbbbbb")
    assert code == exits.OK, output
    assert _keys_settled(workdir) == {AMELIA: "sent", JOSE: "released"}


def test_a_row_number_whose_row_now_holds_another_address_is_refused(campaign):
    # GIVEN a row in doubt (the run's row 2, amelia) whose row was deleted since, so that the
    # file's row 2 holds another address
    csv_file, workdir = campaign
    _claim_dead(workdir, csv_file, [(AMELIA, 2, "a***@example.org")])

    # WHEN the operator settles row 2 by its number
    code, output = _settle(csv_file, workdir, "--sent", "2")

    # THEN it is refused, saying the numbers are the run's and naming the letter to give
    assert code == exits.USAGE, output
    assert "row 2 in doubt is the run's row 2 (a***@example.org)" in output
    assert f"the file's row 2 now holds {_masked(csv_file)[2]}" in output
    assert "row numbers are the run's" in output
    assert "name it as 2:aaaaaaaa" in output
    assert _keys_settled(workdir) == {AMELIA: "claimed"}
    # AND the listing names it by its letter, and its command is accepted
    assert f"--sent 2:aaaaaaaa --workdir {workdir}" in _settle(csv_file, workdir)[1]
    assert _settle(csv_file, workdir, "--sent", "2:aaaaaaaa")[0] == exits.OK
    assert _keys_settled(workdir) == {AMELIA: "sent"}


def test_a_row_in_doubt_no_longer_in_the_file_is_settled_by_its_number(campaign):
    # GIVEN a row in doubt beyond the file's end (the file lost rows since its run)
    csv_file, workdir = campaign
    _claim_dead(workdir, csv_file, [(AMELIA, 40, "a***@example.org")])

    # WHEN the operator settles it by the number the listing gives
    code, listing = _settle(csv_file, workdir)
    assert f"--sent 40 --workdir {workdir}" in listing
    code, output = _settle(csv_file, workdir, "--not-sent", "40")

    # THEN it is settled
    assert code == exits.OK, output
    assert _keys_settled(workdir) == {AMELIA: "released"}


def test_a_huge_range_is_compared_not_expanded_and_its_problems_are_capped(campaign):
    # GIVEN a row in doubt
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [7])

    # WHEN the operator gives a range of a hundred billion rows
    code, output = _settle(csv_file, workdir, "--not-sent", "2-99999999999")

    # THEN it is refused with a short message: the rows past the file in one clause, the
    # others capped and counted; nothing was settled
    assert code == exits.USAGE, output
    assert "rows 22 to 99999999999 are not in the file (its rows are 2 to 21)" in output
    assert "row 2 was never tried" in output
    assert "; and 10 more." in output
    assert len(output) < 2000
    assert _states(workdir)[7] == ("claimed", None)


@pytest.mark.parametrize(
    "rows",
    ["2_0", "\u0662", "+2", "2-2_0", "7:xyz", "7:"],
    ids=["underscore", "arabic-indic", "plus", "range-underscore", "letter-not-hex", "no-letter"],
)
def test_a_row_not_in_ascii_digits_is_refused(campaign, rows):
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [2, 20])

    code, output = _settle(csv_file, workdir, "--sent", rows)

    assert code == exits.USAGE, output
    assert "in digits 0-9" in output
    assert _states(workdir) == {2: ("claimed", None), 20: ("claimed", None)}


def _validate(csv_file: Path, workdir: Path) -> tuple[int, str, dict]:
    """validate of the file against the workdir, as the console shows it and as --json."""
    args = ["validate", str(csv_file), "--attachments", str(EXAMPLE.parent / "attachments")]
    args += ["--workdir", str(workdir)]
    shown = CliRunner().invoke(cli, args)
    as_json = CliRunner().invoke(cli, [*args, "--json"])
    assert as_json.exit_code == shown.exit_code, as_json.output
    return shown.exit_code, " ".join(shown.output.split()), json.loads(as_json.output)


def test_validate_names_the_rows_in_doubt_and_a_run_going_on_and_exits_as_before(campaign):
    # GIVEN the file validated in a workdir with nothing of it yet
    csv_file, workdir = campaign
    before, output, found = _validate(csv_file, workdir)
    assert "in doubt" not in output and "going on" not in output
    assert (found["earlier_runs"]["in_doubt_before"], found["earlier_runs"]["running"]) == (0, [])

    # WHEN a run left two rows in doubt, and another run of the file is going on
    _leave_in_doubt(workdir, csv_file, [7, 9], keys={7: "7" * 64, 9: "9" * 64})
    event = object_created_event("mailmatrix-local", f"incoming/{csv_file.name}", 10, "e")
    record = {"name": "running-1", "status": "RUNNING", "engine": this_process()}
    ExecutionStore(workdir / "executions").create({**record, "input": json.dumps(event)})
    code, output, found = _validate(csv_file, workdir)

    # THEN validate says both, in words and in --json, and exits as it did
    assert code == before
    assert (
        "2 row(s) are in doubt (a run ended while sending them, so they may have arrived):"
        " `settle` lists them, and records which arrived; until then a run of this file is"
        " refused, but `run --retry-unknown`, which sends them again, each marked as a possible"
        " duplicate." in output
    )
    assert "Not yet: 2 row(s) are in doubt (below): `run` would stop at once" in output
    assert "A run of this file is going on in this workdir (its counts may change)" in output
    assert found["earlier_runs"]["in_doubt_before"] == 2
    assert found["earlier_runs"]["running"] == ["running-1"]


def test_a_settle_command_of_a_file_named_like_an_option_names_it_as_a_path():
    command = settle_command("-n.csv", Path("w"), [22, 32], sent=True)
    assert command.endswith(" settle ./-n.csv --sent 22,32 --workdir w")
    assert settle_command("offers.csv", Path("w"), [2], sent=False).endswith(
        " settle offers.csv --not-sent 2 --workdir w"
    )


def test_settle_without_its_workdir_names_first_the_workdir_with_the_files_rows_in_doubt(
    tmp_path, monkeypatch
):
    # GIVEN a file of one name run in two workdirs below the current folder, a/wd and b/wd,
    # and a row of it left in doubt in b/wd only
    csv_file = _run_below(tmp_path, monkeypatch, "a/wd", "b/wd")
    _leave_in_doubt(tmp_path / "b" / "wd", csv_file, [7])

    # WHEN settle lists its rows without --workdir (the default one, where it never ran)
    listed = CliRunner().invoke(cli, ["settle", str(csv_file)])

    # THEN the workdir with the row in doubt comes first, said so, and the command names it
    said = " ".join(listed.output.split())
    assert listed.exit_code == exits.OK, said
    assert "it ran in b/wd (1 row(s) in doubt) and a/wd;" in said
    assert f"`mailmatrix settle {csv_file} --workdir b/wd` lists its rows in doubt there" in said


def test_a_row_tried_again_after_its_doubtful_try_shows_that_try_and_the_last():
    # GIVEN a row in doubt whose doubtful try (14:16:19) was followed by refused retries
    row = DoubtfulRow(
        4, "o***@example.org", "offer", None, 1796566579.0, last_tried_at=1796566671.0
    )

    # WHEN it is shown THEN the time to look for in the server's log comes first, and the last
    assert row.to_dict()["tried_at"] == "2026-12-06 14:16:19 UTC"
    assert row.to_dict()["last_tried_at"] == "2026-12-06 14:17:51 UTC"
    assert row.line().endswith(
        "tried 2026-12-06 14:16:19 UTC (it may have gone out then),"
        " last tried 2026-12-06 14:17:51 UTC"
    )
