"""With --json, every way `run`, `validate` and `settle` end is one JSON object on standard
output a script can branch on: ok, exit_code, failure {kind, message} and action."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailmatrix.cli import exits, run_cmd
from mailmatrix.cli.failing import action_of
from mailmatrix.cli.main import cli
from tests.unit.test_settle import EXAMPLE, _leave_in_doubt, campaign  # noqa: F401 (a fixture)


def _invoke(*args: str) -> tuple[int, dict]:
    """Run the command; its exit code and the one JSON object its standard output holds."""
    ran = CliRunner().invoke(cli, list(args))
    return ran.exit_code, json.loads(ran.stdout)


def test_a_run_refused_for_rows_in_doubt_says_so_in_json_and_to_settle(campaign):  # noqa: F811
    # GIVEN a file with a row an earlier run left in doubt
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [3])

    # WHEN it runs again with --json
    folder = str(EXAMPLE.parent / "attachments")
    code, said = _invoke(
        "run", str(csv_file), "--workdir", str(workdir), "--attachments", folder, "--json"
    )

    # THEN one JSON object says it was refused, why, and that a person settles first
    assert (code, said["exit_code"], said["ok"]) == (exits.USAGE, exits.USAGE, False)
    assert (said["failure"]["kind"], said["action"]) == ("RowsInDoubt", "settle")
    assert "nothing was sent" in said["failure"]["message"]


def test_usage_errors_are_json_too(tmp_path: Path):
    # GIVEN a file that does not exist, and a server URL of another scheme
    missing = str(tmp_path / "missing.csv")
    workdir = str(tmp_path / "w")

    # WHEN each is given to run, validate or settle with --json
    for args, action in (
        (("run", missing, "--workdir", workdir, "--json"), "fix_input"),
        (("validate", missing, "--json"), "fix_input"),
        (("settle", missing, "--workdir", workdir, "--json"), "fix_input"),
        (("run", str(EXAMPLE), "--smtp", "http://127.0.0.1:25", "--json"), "fix_settings"),
    ):
        code, said = _invoke(*args)

        # THEN each is one JSON object: a usage error; the file missing is the input to fix,
        # the server's URL a setting
        assert (code, said["exit_code"], said["ok"]) == (exits.USAGE, exits.USAGE, False), args
        assert said["action"] == action, args
        assert said["failure"]["kind"] in ("BadParameter", "UsageError"), args


def test_a_settle_refused_is_json(campaign):  # noqa: F811
    # GIVEN a row in doubt WHEN another row is settled, with --json
    csv_file, workdir = campaign
    _leave_in_doubt(workdir, csv_file, [3])
    code, said = _invoke(
        "settle", str(csv_file), "--sent", "4", "--workdir", str(workdir), "--json"
    )

    # THEN the refusal is one JSON object: the input (the rows named) to fix
    assert (code, said["failure"]["kind"], said["action"]) == (
        exits.USAGE,
        "NotSettled",
        "fix_input",
    )


def test_halts_are_told_apart_by_their_reason():
    assert action_of("AccountSendingHalted", 1, "535 login refused") == "fix_settings"
    assert action_of("AccountSendingHalted", 1, "452 daily quota exceeded") == "retry"
    assert action_of("OutcomesUnknown", 1) == "settle"
    assert action_of("ServiceUnreachable", 1) == "retry"
    assert action_of("InputFileError", 3) == "fix_input"
    assert action_of(None, 0) == "none"


def test_a_url_naming_a_user_without_a_password_is_json_and_a_setting_to_fix(tmp_path: Path):
    # GIVEN a URL with a user and no password, and no MAILMATRIX_SMTP_PASSWORD
    folder = str(EXAMPLE.parent / "attachments")
    url = "smtp://hr@127.0.0.1:9"

    # WHEN the file runs through it with --json
    args = ["run", str(EXAMPLE), "--workdir", str(tmp_path / "w"), "--smtp", url]
    args += ["--attachments", folder, "--json"]
    ran = CliRunner(env={"MAILMATRIX_SMTP_PASSWORD": None}).invoke(cli, args)

    # THEN it stops before sending, as README's table says: exit 3, the settings to fix
    said = json.loads(ran.stdout)
    assert (ran.exit_code, said["failure"]["kind"]) == (exits.INPUT_UNUSABLE, "ConfigurationError")
    assert said["action"] == "fix_settings"
    assert "MAILMATRIX_SMTP_PASSWORD" in said["failure"]["message"]


def test_rows_left_to_a_newer_run_are_not_counted_failed_in_json():
    # GIVEN a run superseded by a newer one: all 6 of its rows left to that run
    result = {"status": "SUCCEEDED", "counts": {"sent": 0, "failed": 6, "superseded": 6}}

    # WHEN its --json result is made
    code = run_cmd.exit_code(result)
    said = run_cmd.add_action(result, code)

    # THEN nothing failed: a monitor alerting on failed rows stays quiet
    assert (code, said["ok"], said["action"]) == (exits.OK, True, "none")
    assert (said["counts"]["failed"], said["counts"]["superseded"]) == (0, 6)
    assert "failure" not in said


def test_rows_failed_beside_rows_left_to_a_newer_run_are_counted_once():
    # GIVEN a run with 3 rows failed, 2 of them left to a newer run
    result = {"status": "SUCCEEDED", "counts": {"sent": 4, "failed": 3, "superseded": 2}}

    # WHEN its --json result is made
    code = run_cmd.exit_code(result)
    said = run_cmd.add_action(result, code)

    # THEN one row failed, and the message says so (the 2 taken off once, not twice)
    assert (code, said["counts"]["failed"]) == (exits.ROWS_FAILED, 1)
    assert said["failure"] == {"kind": "RowsFailed", "message": "1 row(s) failed"}


def test_rows_failed_are_the_input_to_look_at_not_a_plain_retry():
    # A plain rerun holds failed rows as failed earlier: a script that reran would loop.
    assert action_of("RowsFailed", exits.ROWS_FAILED) == "fix_input"
    result = {"status": "SUCCEEDED", "counts": {"sent": 4, "failed": 2}}
    assert run_cmd.add_action(result, run_cmd.exit_code(result))["action"] == "fix_input"


def test_a_run_stopped_outside_the_engine_prints_its_json(tmp_path: Path, monkeypatch):
    # GIVEN a stop (Ctrl-C) that comes as the run starts, outside the engine
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_cmd, "run_campaign", stopped)

    # WHEN the file runs with --json
    folder = str(EXAMPLE.parent / "attachments")
    args = ["run", str(EXAMPLE), "--workdir", str(tmp_path / "w"), "--attachments", folder]
    code, said = _invoke(*args, "--json")

    # THEN one JSON object says it stopped (130), and that running again is safe
    assert (code, said["exit_code"], said["ok"]) == (exits.STOPPED, exits.STOPPED, False)
    assert (said["failure"]["kind"], said["action"]) == ("Stopped", "retry")
    assert "executions --workdir" in said["failure"]["message"]


def test_validate_json_says_its_failure(tmp_path: Path):
    # GIVEN a file with a row whose address is not one
    csv_file = tmp_path / "offers.csv"
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    broken = lines[2].replace(lines[2].split(",")[0], "not-an-address", 1)
    csv_file.write_text("\n".join([*lines[:2], broken]) + "\n", encoding="utf-8")

    # WHEN it is validated with --json
    folder, workdir = str(EXAMPLE.parent / "attachments"), tmp_path / "w"
    workdir.mkdir()
    args = ["--attachments", folder, "--workdir", str(workdir), "--json"]
    code, said = _invoke("validate", str(csv_file), *args)

    # THEN the object has a failure, as run's has: the rows rejected, the input to fix
    assert (code, said["ok"], said["action"]) == (exits.ROWS_REJECTED, False, "fix_input")
    assert said["failure"]["kind"] == "RowsRejected"
    assert said["failure"]["message"].startswith("1 row(s) rejected")
