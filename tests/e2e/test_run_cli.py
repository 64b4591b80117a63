"""`mailmatrix run` for people: clear refusals, exit codes, a stop that a redrive resumes."""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import email
import email.policy
import email.utils
import errno
import io
import itertools
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import unicodedata
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from mailmatrix.cli.main import cli
from mailmatrix.core.report import REPORT_COLUMNS
from mailmatrix.local import REPO, redrive, run_campaign

EXAMPLE = REPO / "examples" / "offer-letters"


def _words(output: str) -> str:
    """``output`` with its lines joined and its spaces single, as rich wraps it at 80 columns."""
    return " ".join(output.split())


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *args])
    return result.exit_code, result.output


def test_a_file_with_nothing_to_send_names_its_rejects_report_where_it_can_be_opened(tmp_path):
    # GIVEN a file whose only row is rejected (its address has no top-level domain)
    header = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary"
    csv_path = tmp_path / "recipients.csv"
    csv_path.write_text(f"{header}\nann@localhost,Ann,Offer,,Dev,IT,2027-01-11,1\n")
    (tmp_path / "attachments").mkdir()
    workdir = tmp_path / "w"
    # WHEN it runs
    code, output = _run(str(csv_path), "--workdir", str(workdir), "--attachments", str(tmp_path))
    # THEN nothing is sent, and the rejects report is named by its path in the workdir
    assert code == 3
    assert "Nothing was sent: no row of the file can be sent (NothingToSend)" in _words(output)
    # (in the cause, which named its key in the local bucket before, and only there)
    (path,) = re.findall(r"See the rejects report (\S+)\.\n", output)
    assert Path(path).is_file()
    assert path.startswith(str(workdir))
    assert "Rejects: " not in output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\x00\x01\x02PK\x03\x04 binary", "not a text"),
        (b"Name,Status\nAnn,Offer\n", "Email"),
        (
            codecs.BOM_UTF16_LE
            + "Email,Name,Status\r\nann@example.com,Ann,Offer\r\nbob@example.com,Bo".encode(
                "utf-16-le"
            )
            + b"\x00\xd8"
            + "b,Offer\r\n".encode("utf-16-le"),
            "cannot decode line 3 as utf-16-le: illegal UTF-16 surrogate",
        ),
    ],
    ids=["empty", "binary", "no-email-column", "utf16-lone-surrogate"],
)
def test_an_unusable_file_is_refused_with_one_clear_message(tmp_path, content, message):
    csv_path = tmp_path / "recipients.csv"
    csv_path.write_bytes(content)
    (tmp_path / "attachments").mkdir()

    code, output = _run(str(csv_path), "--workdir", str(tmp_path / "w"))

    assert code == 3
    assert "Nothing was sent" in output
    assert message in output
    assert f"{csv_path}: " in output.splitlines()[2]  # the file as given, whole
    assert "incoming/" not in output
    assert "Traceback" not in output and "stackTrace" not in output
    assert "redrive" not in output  # a bad file is fixed and run again, not redriven


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--sender", "not an address", "not an email address"),
        ("--sender", "Acme <talent@mail.test>", "'talent@mail.test': invalid address domain"),
        ("--faults", "explode=1", "expected NAME=VALUE"),
        ("--send-rate", "-1", "-1"),
        ("--send-rate", "nan", "messages per second"),
        ("--send-rate", "inf", "messages per second"),
        ("--send-rate", "1e-9", "1e-09: give 0 (no limit) or at least 0.0167 (one message a"),
        ("--send-rate", "0.01", "0.01: give 0 (no limit) or at least 0.0167"),
        ("--smtp", "smtp://[::1", "not a URL"),
        ("--smtp", "smtp://127.0.0.1:99999", "the port is out of range: give one from 1 to 65535"),
        ("--smtp", "smtp://[::1]:0", "the port is out of range"),
        ("--smtp", "smtp://127.0.0.1:-1", "the port is out of range"),
        ("--smtp", "smtp://127.0.0.1:abc", "the port is not a number"),
        # a socket takes no 0 (non-blocking); inf and nan overflowed; each made an execution
        ("--smtp", "smtp://127.0.0.1:2525?timeout=0", "timeout=0: expected seconds, more than 0"),
        ("--smtp", "smtp://127.0.0.1:2525?timeout=-1", "more than 0 and at most 600"),
        ("--smtp", "smtp://127.0.0.1:2525?timeout=nan", "more than 0 and at most 600"),
        ("--smtp", "smtp://127.0.0.1:2525?timeout=inf", "more than 0 and at most 600"),
        ("--smtp", "smtp://127.0.0.1:2525?timeout=abc", "timeout=abc: expected seconds"),
        ("--smtp", "smtp://127.0.0.1:2525?tmeout=3", "unknown options: tmeout (known: timeout"),
        ("--smtp", "smtp://127.0.0.1:2525?timeout=", "options without a value: timeout="),
        # a line break would end EHLO and start another command (it failed on a raw ValueError)
        ("--smtp", "smtp://127.0.0.1:2525?helo=a%0d%0aRCPT%20TO:<x>", "expected a host name"),
        ("--smtp", "smtp://127.0.0.1:2525?timeout=abc&timeout=5", "options given twice: timeout"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(tmp_path, option, value, message):
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), option, value)

    assert code == 2
    assert message in output
    assert not (tmp_path / "executions").exists()


def test_a_csv_that_is_a_device_is_refused_as_not_a_file(tmp_path):
    code, output = _run(os.devnull, "--workdir", str(tmp_path / "w"))

    assert code == 3
    assert f"{os.devnull}: not a regular file" in output
    assert "no such file" not in output


@pytest.mark.parametrize(
    "command",
    [["run", "--workdir", "w"], ["validate"], ["preview", "--row", "2"]],
    ids=["run", "validate", "preview"],
)
def test_a_csv_that_is_a_fifo_without_a_writer_is_refused_not_waited_for(tmp_path, command):
    # GIVEN a CSV path that is a FIFO nothing writes to (no attachments folder beside it)
    os.mkfifo(tmp_path / "offers.csv")
    cli_main = "from mailmatrix.cli.main import main; main()"
    args = [sys.executable, "-c", cli_main, command[0], "offers.csv", *command[1:]]

    # WHEN a command is given it (the timeout only guards the suite against the old hang)
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    # THEN it is refused at once as no file of rows, and no workdir is made
    assert done.returncode == 3, done.stdout + done.stderr
    assert "offers.csv: not a regular file (a pipe, device or folder)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "w").exists()


def test_a_manifest_sender_at_a_special_use_domain_makes_the_setup_unusable(tmp_path):
    # GIVEN templates whose manifest signs from a reserved domain (.test), no --sender
    templates = _own_letters(tmp_path)
    manifest = templates / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("talent@example.com>", "talent@acme.test>"))

    code, output = _run(
        str(EXAMPLE / "recipients.csv"), "--templates", str(templates), "--workdir", str(tmp_path)
    )

    # THEN nothing is sent, for the reason a recipient there would be rejected
    assert code == 3
    assert "Nothing was sent: a setting is missing or wrong (ConfigurationError)" in _words(output)
    assert "sender: 'talent@acme.test': invalid address domain: " in output.replace("\n", " ")
    assert _recipients(tmp_path / "outbox") == {}


def test_a_column_named_like_a_manifest_constant_sends_nothing(tmp_path):
    # GIVEN the demo file with a `company` column: each candidate's current employer
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    rows = [lines[0] + ",company"] + [f"{line},Globex Ltd" for line in lines[1:]]
    csv_path = tmp_path / "recipients.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    code, output = _run(
        str(csv_path), "--attachments", str(EXAMPLE / "attachments"), "--workdir", str(tmp_path)
    )

    # THEN no offer "from Globex Ltd" goes out: the run stops at validation and says why
    assert code == 3
    assert (
        "Nothing was sent: the templates cannot be used with this file (TemplateError)"
        in _words(output)
    )
    assert "column 'company' has the name of the constant 'company'" in _words(output)
    assert _recipients(tmp_path / "outbox") == {}


def test_a_misspelt_attachment_column_sends_nothing_and_says_so_once(tmp_path):
    # GIVEN the demo file whose header spells Attachement_File: every offer and rejection
    # attaches its recipient's own letter
    text = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8")
    csv_path = tmp_path / "recipients.csv"
    csv_path.write_text(text.replace("Attachment_File", "Attachement_File", 1), encoding="utf-8")

    # WHEN it runs
    code, output = _run(
        str(csv_path), "--attachments", str(EXAMPLE / "attachments"), "--workdir", str(tmp_path)
    )

    # THEN nothing is sent: the run stops at validation, naming the column it lacks and the
    # one it has, once, instead of rejecting each row as having an empty Attachment_File
    said = _words(output)
    assert code == 3
    assert "Nothing was sent: the file cannot be used as it is (InputFileError)" in said
    assert (
        f"{csv_path}: no Attachment_File column, though template set 'offer' attaches the file "
        "each row names in that column, and row 2 is of that set; the file has a column "
        "'Attachement_File': a misspelling of 'Attachment_File'?"
    ) in said
    assert said.count("Attachement_File") == 1
    assert "is empty" not in said and "Rejects: " not in said
    assert _recipients(tmp_path / "outbox") == {}


def test_a_file_the_bundled_templates_do_not_fit_is_told_of_templates(tmp_path):
    # GIVEN a file of other columns than the bundled templates use, run without --templates
    csv_path = tmp_path / "courses.csv"
    csv_path.write_text("Email,Name,Status,Course\nann@example.com,Ann,Offer,Python\n")
    (tmp_path / "attachments").mkdir()

    code, output = _run(str(csv_path), "--workdir", str(tmp_path / "w"))

    # THEN nothing is sent, and it says the bundled templates were used, and the way out
    assert code == 3
    said = _words(output)
    assert "not CSV columns" in said
    assert "These are the bundled templates" in said
    assert "give a folder of your own with --templates DIR" in said


def test_json_output_of_a_failure_carries_the_message_not_a_stack_trace(tmp_path):
    csv_path = tmp_path / "recipients.csv"
    csv_path.write_bytes(b"")
    (tmp_path / "attachments").mkdir()

    result = CliRunner().invoke(
        cli, ["run", str(csv_path), "--workdir", str(tmp_path / "w"), "--json"]
    )

    summary = json.loads(result.stdout)
    assert (result.exit_code, summary["status"], summary["error"]) == (
        3,
        "FAILED",
        "InputFileError",
    )
    # AND the file is named as it was given, not by its key in the local bucket
    assert summary["cause"] == f"{csv_path}: empty file: no header and no rows"


class StopWhen:
    """Plays the operator pressing Ctrl-C once a Map Run count (``running``: a batch is
    sending; ``succeeded``: one has finished) reaches 1."""

    def __init__(self, count: str) -> None:
        self.count = count
        self.stopped = False

    def on_map_run(self, map_run: dict) -> None:
        if not self.stopped and (map_run.get(self.count) or 0) >= 1:
            self.stopped = True
            raise KeyboardInterrupt


def _stopped_after_the_first_batch(workdir: Path) -> dict:
    """Run the demo campaign in batches of 5, one at a time, and stop it (as Ctrl-C does)
    once its first batch has finished."""
    return run_campaign(
        EXAMPLE / "recipients.csv",
        workdir=workdir,
        batch_size=5,
        max_concurrency=1,
        listener=StopWhen("succeeded"),
    )


def test_a_stopped_run_is_aborted_and_a_redrive_sends_the_rest_once(tmp_path):
    # GIVEN the demo campaign in batches of 5, one batch at a time
    workdir = tmp_path / "work"

    # WHEN the operator stops it after the first batch
    record = _stopped_after_the_first_batch(workdir)

    # THEN the execution is ABORTED (redrivable), not left RUNNING, and not everyone got mail
    assert record["status"] == "ABORTED"
    sent_first = len(list((workdir / "outbox" / "new").iterdir()))
    assert 5 <= sent_first < 18

    # WHEN it is redriven THEN the rest go out, and nobody gets two
    record = redrive(workdir, record["name"])
    assert record["status"] == "SUCCEEDED"
    recipients = _recipients(workdir / "outbox")
    assert len(recipients) == 18 and set(recipients.values()) == {1}
    # AND its summary says the count covers the whole execution, earlier tries included
    from mailmatrix.cli.run_cmd import outcome_of, print_summary
    from mailmatrix.local import Workdir

    console = Console(record=True, width=120)
    print_summary(console, outcome_of(record, Workdir(workdir)))
    assert "Sent by this execution" in console.export_text()


def _recipients(outbox: Path) -> collections.Counter:
    """How many messages each address has in the outbox (none before the first)."""
    new = outbox / "new"
    return collections.Counter(
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"]
        .addresses[0]
        .addr_spec
        for p in (new.iterdir() if new.is_dir() else ())
    )


def test_a_stop_ends_the_running_batch_after_its_current_email(tmp_path):
    # GIVEN the demo campaign as one batch of 18, paced at 10 emails a second
    workdir = tmp_path / "work"

    # WHEN the operator stops it as soon as that batch runs
    record = run_campaign(
        EXAMPLE / "recipients.csv",
        workdir=workdir,
        batch_size=18,
        max_concurrency=1,
        send_rate=10,
        listener=StopWhen("running"),
    )

    # THEN the batch stopped within a moment, not after its 18 emails (1.8 s)
    assert record["status"] == "ABORTED"
    assert len(_recipients(workdir / "outbox")) < 10
    # AND a redrive at once sends the rest, nobody twice
    record = redrive(workdir, record["name"])
    assert record["status"] == "SUCCEEDED"
    recipients = _recipients(workdir / "outbox")
    assert len(recipients) == 18 and set(recipients.values()) == {1}


def test_an_smtp_url_that_is_not_smtp_is_refused_without_its_password(tmp_path):
    code, output = _run(
        str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--smtp", "http://u:pw@h"
    )

    assert code == 2
    assert "expected smtp://HOST" in output
    assert "pw" not in output


def test_the_same_file_run_from_another_folder_without_a_workdir_mails_nobody_twice(
    tmp_path, monkeypatch
):
    # GIVEN a campaign folder, and no --workdir (the per-user default, here a test folder)
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "default"))
    campaign = tmp_path / "camp"
    campaign.mkdir()
    (campaign / "hires.csv").write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    (campaign / "attachments").symlink_to(EXAMPLE / "attachments")
    # WHEN it runs from its parent folder, then from inside it
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(cli, ["run", "camp/hires.csv", "--json"])
    monkeypatch.chdir(campaign)
    second = CliRunner().invoke(cli, ["run", "hires.csv", "--json"])
    # THEN the second run finds the first one's ledger and sends nothing
    assert json.loads(first.stdout)["counts"]["sent"] == 18
    again = json.loads(second.stdout)
    assert (again["counts"]["sent"], again["counts"]["skipped"]) == (0, 18)
    assert again["workdir"] == str(tmp_path / "default")


def test_faults_the_service_answered_are_no_possible_duplicates(tmp_path):
    # GIVEN a run where the service answers "unavailable" to a third of the calls (the
    # transient drill: those calls never reach the outbox)
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path / "w")]
    result = CliRunner().invoke(cli, [*args, "--json", "--faults", "transient=0.3,seed=3"])

    # THEN every row is sent once and none is reported as a possible duplicate
    summary = json.loads(result.stdout)
    assert summary["counts"]["sent"] == 18
    assert summary["counts"]["possible_duplicates"] == 0
    assert len(list((tmp_path / "w" / "outbox" / "new").iterdir())) == 18


def test_rows_failed_for_good_exit_5_and_are_sent_again_only_with_retry_failed(tmp_path):
    workdir = tmp_path / "work"
    csv = str(EXAMPLE / "recipients.csv")
    # GIVEN a run where the mail service refuses about half the messages for good
    first = CliRunner().invoke(
        cli, ["run", csv, "--workdir", str(workdir), "--json", "--faults", "permanent=0.5,seed=3"]
    )
    counts = json.loads(first.stdout)["counts"]
    assert first.exit_code == 5
    assert counts["failed"] > 0 and counts["sent"] + counts["failed"] == 18
    # WHEN the file runs again as it is THEN the failed rows stay failed (exit 5 again)
    again = CliRunner().invoke(cli, ["run", csv, "--workdir", str(workdir), "--json"])
    assert again.exit_code == 5
    assert json.loads(again.stdout)["counts"]["sent"] == 0
    # WHEN it runs with --retry-failed THEN exactly the failed rows go out, nobody twice
    retried = CliRunner().invoke(
        cli, ["run", csv, "--workdir", str(workdir), "--json", "--retry-failed"]
    )
    assert retried.exit_code == 0
    result = json.loads(retried.stdout)["counts"]
    assert (result["sent"], result["skipped"], result["failed"]) == (
        counts["failed"],
        counts["sent"],
        0,
    )
    recipients = _outbox_recipients(workdir)
    assert len(recipients) == 18 and set(recipients.values()) == {1}


def test_rows_failed_as_outcome_unknown_are_sent_again_only_with_retry_unknown(tmp_path):
    workdir = tmp_path / "work"
    csv = str(EXAMPLE / "recipients.csv")
    # GIVEN a run where the service refuses some messages for good and takes others without
    # answering (the timeout drill: each such try lands in the outbox; after two the row
    # fails as OutcomeUnknown)
    faults = "permanent=0.25,timeout=0.2,seed=2"
    first = CliRunner().invoke(
        cli, ["run", csv, "--workdir", str(workdir), "--json", "--faults", faults]
    )
    result = json.loads(first.stdout)
    failed, unknown = result["counts"]["failed"], result["counts"]["unknown"]
    assert 0 < unknown < failed
    assert result["retry_unknown_command"].startswith(f"mailmatrix run {csv} --retry-unknown")
    before = _outbox_recipients(workdir)
    assert len(before) == 18 - failed + unknown  # the unknown rows' tries were taken

    # WHEN it runs with --retry-failed THEN only the rows refused for good go out, and the
    # summary gives the command for the others, which may have arrived
    retried = CliRunner().invoke(cli, ["run", csv, "--workdir", str(workdir), "--retry-failed"])
    assert retried.exit_code == 5
    output = retried.output.replace("\n", "")
    assert f"{unknown} row(s) failed as OutcomeUnknown" in output
    assert f"mailmatrix run {csv} --retry-unknown --workdir {workdir}" in output
    assert "--retry-failed" not in output
    after_retry = _outbox_recipients(workdir)
    assert set(after_retry - before) == set(after_retry) - set(before)  # only new people
    assert len(after_retry - before) == failed - unknown
    assert set(after_retry.values()) == {1} | set(before.values())

    # WHEN it runs with --retry-unknown THEN exactly those go out, once more each
    last = CliRunner().invoke(
        cli, ["run", csv, "--workdir", str(workdir), "--json", "--retry-unknown"]
    )
    assert last.exit_code == 0
    counts = json.loads(last.stdout)["counts"]
    assert (counts["sent"], counts["failed"]) == (unknown, 0)
    last_new = _outbox_recipients(workdir) - after_retry
    assert len(last_new) == unknown and set(last_new.values()) == {1}
    assert set(last_new) <= set(before)  # the ones whose tries had been taken
    assert len(after_retry + last_new) == 18


def test_a_row_left_out_of_a_retry_stays_failed_for_later_runs(tmp_path):
    # GIVEN a run where two rows failed as OutcomeUnknown (the timeout drill)
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    args.append("--json")
    faults = "permanent=0.25,timeout=0.2,seed=2"
    first = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--faults", faults])
    report = json.loads(first.stdout)["report"]
    with open(report, encoding="utf-8-sig", newline="") as stream:
        unknown = [r["email"] for r in csv.DictReader(stream) if r["code"] == "OutcomeUnknown"]
    assert len(unknown) == 2
    arrived, lost = unknown
    before = _outbox_recipients(workdir)

    # WHEN the operator, who found the first one arrived, takes its row out of the file and
    # asks for the others
    lines = original.splitlines(keepends=True)
    csv_path.write_text("".join(line for line in lines if arrived not in line), encoding="utf-8")
    retried = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--retry-unknown"])

    # THEN only the one still in the file goes out
    assert json.loads(retried.stdout)["counts"]["sent"] == 1
    assert _outbox_recipients(workdir) - before == collections.Counter({lost: 1})

    # WHEN the whole file runs again later THEN the row left out stays failed: not sent
    csv_path.write_text(original, encoding="utf-8")
    later = json.loads(CliRunner().invoke(cli, ["run", str(csv_path), *args]).stdout)
    assert later["counts"]["sent"] == 0
    assert _outbox_recipients(workdir)[arrived] == before[arrived]


def _amelia_rejected(csv_path: Path, original: str) -> None:
    """Write the example file ``original`` to ``csv_path`` with Amelia's Status changed from
    Offer to Rejection."""
    csv_path.write_text(
        original.replace(
            "amelia.hart@example.com,Amelia Hart,Offer,",
            "amelia.hart@example.com,Amelia Hart,Rejection,",
        ),
        encoding="utf-8",
    )


def test_a_row_whose_status_changed_after_its_letter_went_out_is_not_sent_another(tmp_path):
    # GIVEN the example campaign sent, then Amelia's row changed from Offer to Rejection
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    args.append("--json")
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    _amelia_rejected(csv_path, original)
    before = _outbox_recipients(workdir)

    # WHEN the file runs again
    again = CliRunner().invoke(cli, ["run", str(csv_path), *args])

    # THEN her rejection is not mailed after her offer: the row fails, saying why and what to
    # do; everyone else is skipped as already sent
    assert again.exit_code == 5
    result = json.loads(again.stdout)
    assert (result["counts"]["sent"], result["counts"]["failed"]) == (0, 1)
    assert _outbox_recipients(workdir) == before
    with open(result["report"], encoding="utf-8-sig", newline="") as stream:
        (row,) = [r for r in csv.DictReader(stream) if r["status"] == "failed"]
    assert (row["email"], row["code"]) == ("amelia.hart@example.com", "OtherLetterSent")
    assert "sent this address the 'offer' letter" in row["reason"]
    assert row["reason"].endswith(
        "To send it all the same, run this row alone in a file of another name, with"
        " --send-again-from and this file's name only if its attachment is the one that letter"
        " carried (the option sends all this file's letters again); then take the row out of"
        " this file or set its Status back, or every run fails it"
    )
    assert "not the whole file: with that option" not in row["reason"]
    # AND the summary says what to do about it, not to retry it (no retry sends it)
    shown = CliRunner().invoke(cli, ["run", str(csv_path), *args[:-1]])
    output = _words(shown.output)
    assert "1 row(s) failed as OtherLetterSent" in output
    assert "then take them out of this file (or set their Status back)" in output
    assert "--retry-failed" not in output

    # WHEN the advice is followed: the row alone in a file of another name, run, then taken
    # out of this file
    header, *rows = csv_path.read_text(encoding="utf-8").splitlines()
    (amelia,) = [line for line in rows if line.startswith("amelia.hart@")]
    alone = csv_path.with_name("amelia-rejection.csv")
    alone.write_text(f"{header}\n{amelia}\n", encoding="utf-8")
    # (her attachment is the one her offer carried: sent again, named so)
    again_from = ["--send-again-from", csv_path.name]
    assert CliRunner().invoke(cli, ["run", str(alone), *args, *again_from]).exit_code == 0
    csv_path.write_text("\n".join([header, *(r for r in rows if r != amelia)]), encoding="utf-8")

    # THEN she has her second letter, and this file's runs no longer report a failure
    assert _outbox_recipients(workdir)["amelia.hart@example.com"] == 2
    later = CliRunner().invoke(cli, ["run", str(csv_path), *args])
    assert later.exit_code == 0, later.output
    assert json.loads(later.stdout)["counts"]["failed"] == 0


def test_a_file_sent_to_one_recipient_is_not_attached_for_another_in_a_later_run(tmp_path):
    # GIVEN the example campaign sent, then its rows deleted and a new candidate's row added
    # that names Amelia's letter
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    header = original.splitlines()[0]
    new_row = (
        'new.cand@example.com,New Cand,Offer,amelia-hart.pdf,Data Engineer,Analytics,2027-01-11,"1"'
    )
    csv_path.write_text(f"{header}\n{new_row}\n", encoding="utf-8")
    before = _outbox_recipients(workdir)

    # WHEN the file runs again
    again = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])

    # THEN Amelia's letter is not mailed to the new candidate: the row fails, naming the file,
    # why and what to do
    assert again.exit_code == 5
    result = json.loads(again.stdout)
    assert (result["counts"]["sent"], result["counts"]["failed"]) == (0, 1)
    assert result["counts"]["attachment_of_another"] == 1
    assert _outbox_recipients(workdir) == before
    with open(result["report"], encoding="utf-8-sig", newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert (row["email"], row["status"], row["code"]) == (
        "new.cand@example.com",
        "failed",
        "AttachmentOfAnother",
    )
    assert "amelia-hart.pdf" in row["reason"]
    assert "sent it to another recipient" in row["reason"]
    assert "run this file again with --corrected-address 2" in row["reason"]
    # AND the summary says what to do, not to retry it (no retry sends it)
    shown = CliRunner().invoke(cli, ["run", str(csv_path), *args])
    output = _words(shown.output)
    assert "1 row(s) failed as AttachmentOfAnother" in output
    assert "run the file again with --corrected-address ROW" in output
    assert "--retry-failed" not in output

    # WHEN Amelia's own row comes back, as it was THEN it is skipped as sent, as before
    csv_path.write_text(original, encoding="utf-8")
    rerun = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])
    assert rerun.exit_code == 0
    assert json.loads(rerun.stdout)["counts"]["sent"] == 0
    assert _outbox_recipients(workdir) == before


def _editable_copy(tmp_path: Path) -> tuple[Path, str, Path, list[str]]:
    """The example campaign copied to edit between runs: the file, its text, a workdir, and
    the run's options (the example's attachments)."""
    csv_path = tmp_path / "offers.csv"
    original = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8")
    csv_path.write_text(original, encoding="utf-8")
    workdir = tmp_path / "work"
    return (
        csv_path,
        original,
        workdir,
        ["--workdir", str(workdir), "--attachments", str(EXAMPLE / "attachments")],
    )


def _outbox_recipients(workdir):
    """How many messages each recipient has in the workdir's outbox."""
    return collections.Counter(
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["To"]
        .addresses[0]
        .addr_spec
        for path in (workdir / "outbox" / "new").iterdir()
    )


def test_a_non_ascii_attachment_name_is_also_the_content_types_name_for_older_clients(tmp_path):
    # GIVEN a row whose letter has a name beyond ASCII
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    letter = "Amelia Hart – lettre d'offre été 2027.pdf"
    attachments = tmp_path / "attachments"
    attachments.mkdir()
    shutil.copy(EXAMPLE / "attachments" / "amelia-hart.pdf", attachments / letter)
    csv_path = tmp_path / "offers.csv"
    csv_path.write_text(f"{lines[0]}\n{lines[1].replace('amelia-hart.pdf', letter)}\n")
    workdir = tmp_path / "work"

    # WHEN it is sent to the outbox
    args = ["--workdir", str(workdir), "--attachments", str(attachments)]
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0

    # THEN the email parser reads the name from Content-Disposition (RFC 2231) and from the
    # Content-Type's name, written as RFC 2047 encoded-words that older clients read
    (stored,) = (workdir / "outbox" / "new").iterdir()
    message = email.message_from_bytes(stored.read_bytes(), policy=email.policy.default)
    (part,) = message.iter_attachments()
    assert part.get_filename() == letter
    assert part.get_param("name") == letter
    assert part.get_content_type() == "application/pdf"
    assert part["Content-Type"].params == {"name": letter}
    raw_type = stored.read_bytes().split(b"Content-Type: application/pdf;\r\n", 1)[1]
    assert raw_type.startswith(b' name="=?utf-8?b?')


def test_executions_name_the_file_each_run_was_for(tmp_path):
    workdir = tmp_path / "work"
    CliRunner().invoke(cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)])
    listed = CliRunner().invoke(
        cli, ["executions", "--workdir", str(workdir)], env={"COLUMNS": "200"}
    )
    assert listed.exit_code == 0
    assert "incoming/recipients.csv" in listed.output


def test_executions_and_show_say_what_a_run_did_even_when_every_row_failed(tmp_path):
    workdir = str(tmp_path / "work")
    csv = str(EXAMPLE / "recipients.csv")
    # GIVEN a run the mail service refused every message of (the execution still SUCCEEDED)
    args = ["run", csv, "--workdir", workdir, "--json", "--faults", "permanent=1"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 5
    # AND a run of another file that sent everything
    other = tmp_path / "again.csv"
    other.write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    args = ["--attachments", str(EXAMPLE / "attachments")]
    second = CliRunner().invoke(cli, ["run", str(other), "--workdir", workdir, *args])
    assert second.exit_code == 0, second.output

    # WHEN the executions are listed and the first is shown
    env = {"COLUMNS": "250"}
    listed = CliRunner().invoke(cli, ["executions", "--workdir", workdir], env=env).output
    name = json.loads(first.stdout)["execution"]
    shown = CliRunner().invoke(cli, ["show", name, "--workdir", workdir], env=env).output

    # THEN each says what its run did, not only SUCCEEDED
    assert "0 sent, 18 failed, 2 rejected" in listed
    assert "18 sent, 2 rejected" in listed
    assert "result: 0 sent, 18 failed, 2 rejected" in shown
    # AND the status a user scans says that rows failed, beside the SUCCEEDED of the machine
    assert listed.count("SUCCEEDED, 18 FAILED") == 1
    assert f"{name} SUCCEEDED, 18 FAILED" in shown


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_campaign_keeps_its_way_of_delivery_in_a_workdir(tmp_path):
    workdir = str(tmp_path / "work")
    csv = str(EXAMPLE / "recipients.csv")
    smtp = f"smtp://127.0.0.1:{_closed_port()}"
    # GIVEN a first try through an unreachable SMTP server: it stops at validation, no row
    # claimed, so it commits the campaign to nothing
    tried = CliRunner().invoke(cli, ["run", csv, "--workdir", workdir, "--smtp", smtp])
    assert tried.exit_code == 1
    # WHEN the campaign then goes to the outbox THEN it runs
    first = CliRunner().invoke(cli, ["run", csv, "--workdir", workdir, "--json"])
    assert json.loads(first.stdout)["counts"]["sent"] == 18
    # AND a later run of it through SMTP is refused (its rows count as sent already): first
    # how to go on as before, then the new name, for another campaign only
    switched = CliRunner().invoke(cli, ["run", csv, "--workdir", workdir, "--smtp", smtp])
    assert switched.exit_code == 2
    said = _words(switched.output)
    assert (
        f"delivered through the local outbox (no --smtp), but this run gave --smtp {smtp}" in said
    )
    assert said.index("run it again without --smtp") < said.index("give it a new file name")


def _this_month(tmp_path: Path, month: str) -> Path:
    """The example campaign as a month's offers.csv in a folder of its own, PDFs beside it."""
    folder = tmp_path / month
    shutil.copytree(EXAMPLE / "attachments", folder / "attachments")
    shutil.copy(EXAMPLE / "recipients.csv", folder / "offers.csv")
    return folder / "offers.csv"


def test_another_file_of_the_same_name_is_told_what_differs_then_to_take_a_new_name(
    tmp_path, monkeypatch
):
    # GIVEN January's offers.csv sent from its folder in the default workdir
    workdir = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(workdir))
    january, february = _this_month(tmp_path, "jan"), _this_month(tmp_path, "feb")
    assert CliRunner().invoke(cli, ["run", str(january)]).exit_code == 0

    # WHEN February's offers.csv, from another folder, is run there too
    code, output = _run(str(february))

    # THEN it is refused, sending nothing: it says what differs and how to run the file as
    # those runs did; then, for a really different campaign only, a new file name (warned that
    # "the same way" would send January's letters, and that in this workdir it holds back the
    # letters gone to the same people unless it sends them again from offers.csv)
    assert code == 2
    said = _words(output)
    refusal = said[said.index("offers.csv: ") :]
    assert refusal == (
        f"offers.csv: the earlier runs of a file named offers.csv in {workdir} used"
        f" --attachments {january.parent / 'attachments'}, but this run used"
        f" {february.parent / 'attachments'}. Nothing was sent. To go on with that campaign (a"
        " rerun, or its file corrected), run it again with --attachments"
        f" {january.parent / 'attachments'}: rows already sent are skipped. Only if this file"
        " is really a different campaign (other people, or the same people to be mailed again"
        " on purpose), give it a new file name and run it under that name instead (run as"
        " above, they would get the earlier campaign's letters): a new name is a new campaign,"
        " though in this workdir it still holds back each letter the ledger holds as gone to"
        " the same address under offers.csv, unless it is run with --send-again-from"
        " offers.csv"
    ), refusal
    assert len(list((workdir / "outbox" / "new").iterdir())) == 18


@pytest.mark.parametrize("forgotten", ["--templates", "--attachments", "--sender"])
def test_a_rerun_that_forgot_an_option_is_told_first_to_run_it_again_with_it(tmp_path, forgotten):
    # GIVEN a campaign sent with its own templates, attachments folder and sender
    attachments = tmp_path / "pdfs"
    shutil.copytree(EXAMPLE / "attachments", attachments)
    own = {
        "--templates": str(_own_letters(tmp_path)),
        "--attachments": str(attachments),
        "--sender": "Globex HR <hr@globex.example>",
    }
    workdir = tmp_path / "work"
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    assert CliRunner().invoke(cli, [*run, *itertools.chain(*own.items())]).exit_code == 0

    # WHEN it runs again without one of them
    kept = [word for flag, value in own.items() if flag != forgotten for word in (flag, value)]
    code, output = _run(*run[1:], *kept)

    # THEN it is refused, sending nothing, leading with what the earlier runs used and the
    # option to add; the new file name comes after, for a really different campaign only
    assert code == 2
    said = _words(output)
    refusal = said[said.index("recipients.csv: ") :]
    option = f"{forgotten} {shlex.quote(own[forgotten])}"
    assert refusal.startswith(
        f"recipients.csv: the earlier runs of a file named recipients.csv in {workdir} used"
        f" {option}, but this run "
    ), refusal
    assert (
        "Nothing was sent. To go on with that campaign (a rerun, or its file corrected), run it"
        f" again with {option}: rows already sent are skipped. Only if this file is really a"
        " different campaign "
    ) in refusal
    assert refusal.endswith(
        "a new name is a new campaign, though in this workdir it still holds back each letter"
        " the ledger holds as gone to the same address under recipients.csv, unless it is run"
        " with --send-again-from recipients.csv"
    )
    assert len(list((workdir / "executions").iterdir())) == 1

    # AND run again with what it said to add, it goes on (everyone was sent already)
    added = shlex.split(refusal.split("run it again with ")[1].split(": rows already sent")[0])
    again = CliRunner().invoke(cli, [*run, *kept, *added, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"]["skipped"] == 18


@pytest.mark.parametrize(
    ("how", "said_of_it", "to_leave_it_out"),
    [
        ("--sender", "", "without --sender"),
        (
            "MAILMATRIX_SENDER",
            " (or MAILMATRIX_SENDER)",
            "without --sender and with MAILMATRIX_SENDER unset",
        ),
    ],
    ids=["flag", "shell"],
)
def test_a_rerun_given_a_sender_the_earlier_runs_did_not_use_is_told_to_leave_it_out(
    tmp_path, how, said_of_it, to_leave_it_out
):
    # GIVEN a campaign sent with its templates manifest's sender (none given)
    workdir = tmp_path / "work"
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    assert CliRunner().invoke(cli, run, env={"MAILMATRIX_SENDER": None}).exit_code == 0

    # WHEN it runs again with a sender, as the flag or from the shell
    sender = "HR <hr@example.org>"
    given, env = (["--sender", sender], {}) if how == "--sender" else ([], {how: sender})
    again = CliRunner().invoke(cli, [*run, *given], env={"MAILMATRIX_SENDER": None, **env})

    # THEN it is refused, sending nothing, saying the earlier runs used the manifest's sender
    # and how to run it as they did (not cut off after "no --sender")
    assert again.exit_code == 2
    said = _words(again.output)
    assert (
        f"recipients.csv: the earlier runs of a file named recipients.csv in {workdir} used no"
        " --sender (the templates manifest's sender), but this run gave --sender"
        f" '{sender}'{said_of_it}. Nothing was sent. To go on with that campaign (a rerun, or"
        f" its file corrected), run it again {to_leave_it_out}: rows already sent are skipped."
        " Only if this file is really a different campaign "
    ) in said
    assert len(list((workdir / "executions").iterdir())) == 1


def test_a_redrive_delivers_as_its_execution_did_whatever_ran_since(tmp_path):
    workdir = str(tmp_path / "work")
    # GIVEN a campaign stopped by the daily quota after 5 messages, into the outbox
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", workdir, "--json"]
    first = CliRunner().invoke(cli, [*args, "--faults", "quota-after=5"])
    failed = json.loads(first.stdout)
    assert failed["status"] == "FAILED"
    # AND another file run since in the same workdir with other settings
    other = tmp_path / "other.csv"
    other.write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    smtp = f"smtp://127.0.0.1:{_closed_port()}"
    CliRunner().invoke(cli, ["run", str(other), "--workdir", workdir, "--smtp", smtp])
    outbox = tmp_path / "work" / "outbox" / "new"
    before = len(list(outbox.iterdir()))
    # WHEN the first execution is redriven THEN it goes on into the outbox, as it ran (its
    # drill included: the quota runs out again after 5 more), not through the other's server
    redriven = CliRunner().invoke(cli, ["redrive", failed["execution"], "--workdir", workdir])
    assert "Daily message quota exceeded" in redriven.output
    assert len(list(outbox.iterdir())) == before + 5


def test_a_run_that_stops_early_counts_its_sends_and_possible_duplicates_from_the_ledger(
    tmp_path,
):
    # GIVEN a run whose attempt ends abruptly after its 3rd message was accepted (so that row
    # goes out again), and that the daily quota stops after 6 messages
    workdir = tmp_path / "work"
    result = CliRunner().invoke(
        cli,
        [
            *("run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"),
            *("--faults", "crash-after=3,quota-after=6"),
        ],
    )
    summary = json.loads(result.stdout)
    # THEN it failed before Summarize, and its counts agree with the outbox
    assert summary["status"] == "FAILED"
    recipients = collections.Counter(
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["To"]
        for path in (workdir / "outbox" / "new").iterdir()
    )
    assert summary["counts"]["sent"] == len(recipients)
    twice = sum(n > 1 for n in recipients.values())
    assert twice == 1
    assert summary["counts"]["possible_duplicates"] == twice
    assert summary["counts"]["unsent"] == summary["counts"]["valid"] - len(recipients)


def test_a_sender_whose_name_holds_a_comma_sends_every_row(tmp_path):
    # GIVEN a From address whose display name holds a comma and quotes, not quoted as a whole
    workdir = tmp_path / "work"
    sender = 'Büro Müller, Abteilung "Rechnungen" <billing@example.com>'
    # WHEN the example runs with it
    result = CliRunner().invoke(
        cli,
        [
            *("run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"),
            *("--sender", sender),
        ],
    )
    # THEN every valid row is sent, from that name and address, with it as envelope sender
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["sent"] == 18
    for path in (workdir / "outbox" / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert message["Return-Path"] == "<billing@example.com>"
        (author,) = message["From"].addresses
        assert (author.display_name, author.addr_spec) == (
            'Büro Müller, Abteilung "Rechnungen"',
            "billing@example.com",
        )


def test_a_possible_duplicate_is_reported_by_its_run_and_only_marked_in_later_reports(tmp_path):
    # GIVEN a run whose attempt ended abruptly after its 3rd message, which went out twice
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--json"]
    first = json.loads(CliRunner().invoke(cli, [*args, "--faults", "crash-after=3"]).stdout)
    assert first["counts"]["possible_duplicates"] == 1
    # WHEN the file is run again (nothing left to send)
    again = json.loads(CliRunner().invoke(cli, args).stdout)
    # THEN the later run's summary and its line in the listing do not count it again (it
    # read as a new duplicate each time), while its per-row report still marks the row
    assert again["counts"]["skipped"] == 18
    assert again["counts"]["possible_duplicates"] == 0
    text = CliRunner().invoke(cli, ["run", *args[1:-1]]).output
    assert "more than once" not in text
    wide = CliRunner(env={"COLUMNS": "400"})  # one line per execution
    listing = wide.invoke(cli, ["executions", "--workdir", str(tmp_path)]).output
    assert listing.count("may have arrived more than once") == 1
    with open(again["report"], encoding="utf-8-sig", newline="") as report:
        doubtful = [
            r for r in csv.DictReader(report) if "may have arrived more than once" in r["reason"]
        ]
    assert [(r["status"], r["reason"].split(";")[0]) for r in doubtful] == [
        ("skipped", "already sent")
    ]


def test_a_masked_password_pasted_back_is_refused_before_anything_runs(tmp_path):
    smtp = "smtp+starttls://hr:***@127.0.0.1:2525"
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--smtp", smtp)

    assert code == 2
    assert "MAILMATRIX_SMTP_PASSWORD" in output
    assert not (tmp_path / "executions").exists()


def test_a_run_stopped_before_reading_a_row_says_nothing_was_sent_not_a_table_of_zeros(
    tmp_path,
):
    smtp = f"smtp://127.0.0.1:{_closed_port()}?timeout=5"
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--smtp", smtp)

    assert code == 1
    assert "Nothing was sent: the mail server cannot be reached (CannotConnect)" in _words(output)
    assert "Rows in the file" not in output
    assert "mailmatrix redrive " in output


def test_a_mail_server_not_listening_is_told_as_a_setup_problem_not_a_passing_fault(tmp_path):
    # GIVEN an SMTP URL, with a password, whose port nothing listens on
    port = _closed_port()
    smtp = f"smtp+starttls://hr:s3cret@127.0.0.1:{port}"

    # WHEN the file is run through it
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--smtp", smtp)

    # THEN nothing is sent, and it says where it could not connect and what to look at,
    # without the password and without the advice to redrive at once
    said = _words(output)  # as the terminal wrapped it
    assert code == 1
    assert "Nothing was sent: the mail server cannot be reached (CannotConnect)" in said
    assert (
        f"smtp: cannot connect to 127.0.0.1:{port} (connection refused): is the mail server"
        " running, and is the port right?" in said
    )
    assert (
        "When to resume: once the URL names a mail server that answers as its scheme says"
        " (started, at that host and port): a redrive connects to the same URL (for another"
        " host, port or scheme, run the file again with that URL)." in said
    )
    assert "redrive now" not in said and "passing fault" not in said
    assert "s3cret" not in output


def test_each_execution_keeps_the_rows_it_validated_for_its_redrives(tmp_path):
    # GIVEN a file run once, then changed (an address fixed) and run again under its name
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    first = json.loads(CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"]).stdout)
    csv_path.write_text(original.replace("amelia.hart@", "amelia.h@"), encoding="utf-8")
    second = json.loads(CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"]).stdout)

    # WHEN the manifests each execution sends from are read
    validated = workdir / "bucket" / "validated"
    manifests = {
        path.parent.name: path.read_text(encoding="utf-8")
        for path in validated.glob("*/*/manifest.jsonl")
    }

    # THEN the second run did not overwrite the first's: a redrive of the first sends its rows
    assert set(manifests) == {first["execution"], second["execution"]}
    assert '"amelia.hart@' in manifests[first["execution"]]
    assert '"amelia.h@' in manifests[second["execution"]]


def test_a_workdir_that_cannot_be_written_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    from mailmatrix.cli import run_cmd

    failing = [str(tmp_path / "executions" / "x" / "history.jsonl")]

    def refused_write(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large", failing[0])

    monkeypatch.setattr(run_cmd, "run_campaign", refused_write)

    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path))

    assert code == 1
    assert "cannot write the workdir" in output and "File too large" in output
    assert "redrive" in output
    # (naming the file, and why in plain words)
    assert f"{failing[0]}: it is as large as the file system lets a file be" in output

    # AND a file elsewhere (an unreadable template) is named as it is, without that advice
    failing[0] = str(tmp_path.parent / "templates" / "body.txt")
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path))
    assert code == 1
    assert "cannot write the workdir" not in output and "body.txt" in output


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (
            errno.EFBIG,
            "it reached the file size limit of this process, 40 KiB (ulimit -f) (File too large)",
        ),
        (errno.ENOSPC, "the disk holding it is full (No space left on device)"),
    ],
    ids=["file size limit", "disk full"],
)
def test_a_workdir_without_room_is_said_in_plain_words_with_what_to_do(
    tmp_path, monkeypatch, code, why
):
    from mailmatrix import disk
    from mailmatrix.cli import run_cmd
    from mailmatrix.program import program

    # GIVEN a run that ends as a file of its workdir finds no room: a Map Run's children, in
    # a process whose file size limit is 40 KiB, or on a full disk
    children = tmp_path / "executions" / "x" / "mapruns" / "y" / "children.jsonl"

    def no_room(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(children))

    monkeypatch.setattr(run_cmd, "run_campaign", no_room)
    monkeypatch.setattr(disk, "file_size_limit", lambda: 40 * 1024)

    # WHEN it runs
    exit_code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path))

    # THEN it names the file and why, says that nothing was sent twice, and what to do
    shown = shlex.quote(str(tmp_path))
    assert exit_code == 1
    assert output.splitlines()[-1] == (
        f"mailmatrix run: cannot write the workdir {tmp_path}: {children}: {why}. Nothing was"
        " sent twice: each row is claimed in the ledger before it is sent, so a row whose claim"
        " could not be written was not sent, and a row sent when the ledger could not record it"
        " was kept as sent in a journal beside it (ledger.sqlite3-sent), which a redrive reads:"
        " it is not sent again. First"
        " free space on its disk, or raise the file size limit (ulimit -f), then: if the run"
        f" had begun, `{program()} executions --workdir {shown}` shows it, with what it sent"
        f" and what is in doubt, and `{program()} redrive ID --workdir {shown}` sends the rest"
        " (rows already sent are skipped); if it lists none, run the file again."
    )


def test_a_password_with_a_slash_is_a_usage_error_that_does_not_show_it(tmp_path):
    smtp = "smtp://bob:pa/ssWORD@127.0.0.1:2525"
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--smtp", smtp)

    assert code == 2
    assert "must be URL-encoded" in output
    assert "ssWORD" not in output and "'pa'" not in output


def test_the_retry_command_leaves_the_smtp_password_out():
    from mailmatrix.adapters.smtp_urls import without_password

    assert without_password("smtp+starttls://hr:pw@relay:587") == "smtp+starttls://hr@relay:587"
    assert without_password("smtp://relay:25") == "smtp://relay:25"


def test_the_summary_lists_failed_rows_and_the_whole_retry_command(tmp_path):
    workdir = str(tmp_path / "work")
    csv = str(EXAMPLE / "recipients.csv")
    code, output = _run(csv, "--workdir", workdir, "--faults", "permanent=0.3,seed=2")
    assert code == 5
    assert "Rows that failed at sending (" in output
    assert "DrillRejected" in output
    assert f"mailmatrix run {csv} --retry-failed --workdir {workdir}" in output.replace("\n", "")


def _own_letters(tmp_path: Path) -> Path:
    """A copy of the bundled templates that signs for another company."""
    templates = tmp_path / "globex-templates"
    shutil.copytree(REPO / "templates", templates)
    manifest = templates / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("Acme Corporation", "Globex Ltd"))
    return templates


def test_the_printed_retry_command_sends_the_failed_rows_the_same_letters(tmp_path):
    workdir = tmp_path / "work"
    csv = str(EXAMPLE / "recipients.csv")
    templates = _own_letters(tmp_path)
    sender = "Globex HR <hr@globex.example>"
    # GIVEN a run with its own templates and sender where some rows fail for good
    own = ["--templates", str(templates), "--sender", sender]
    first = CliRunner().invoke(
        cli,
        ["run", csv, "--workdir", str(workdir), "--json", *own, "--faults", "permanent=0.3,seed=3"],
    )
    assert first.exit_code == 5
    command = json.loads(first.stdout)["retry_command"]

    # WHEN the command it printed is run as it is
    words = shlex.split(command)
    assert words[:2] == ["mailmatrix", "run"]
    retried = CliRunner().invoke(cli, [*words[1:], "--json"])

    # THEN the failed rows went out, with the campaign's own letters like every other row
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["counts"]["failed"] == 0
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in (workdir / "outbox" / "new").iterdir()
    ]
    assert len(messages) == 18
    assert {m["From"] for m in messages} == {sender}
    assert all("Globex Ltd" in m["Subject"] for m in messages if "offer" in m["Subject"])
    assert not any("Acme" in str(m.get_body(("plain",)).get_content()) for m in messages)


@pytest.mark.parametrize("change", ["templates", "sender"])
def test_a_campaign_keeps_its_letters_in_a_workdir(tmp_path, change):
    workdir = str(tmp_path / "work")
    csv = str(EXAMPLE / "recipients.csv")
    own = ["--templates", str(_own_letters(tmp_path)), "--sender", "HR <hr@globex.example>"]
    # GIVEN a campaign sent with its own templates and sender
    first = CliRunner().invoke(cli, ["run", csv, "--workdir", workdir, "--json", *own])
    assert json.loads(first.stdout)["counts"]["sent"] == 18
    # WHEN it runs again without one of them
    kept = own[2:] if change == "templates" else own[:2]
    again = CliRunner().invoke(cli, ["run", csv, "--workdir", workdir, *kept])

    # THEN it is refused, naming what the earlier runs used, before anything runs
    assert again.exit_code == 2
    assert f"used --{change} " in again.output.replace("\n", "")
    assert len(list((tmp_path / "work" / "executions").iterdir())) == 1
    # AND with the same ones it runs (everyone was sent already)
    same = CliRunner().invoke(cli, ["run", csv, "--workdir", workdir, "--json", *own])
    assert same.exit_code == 0
    assert json.loads(same.stdout)["counts"]["skipped"] == 18


def test_show_draws_the_way_the_execution_went(tmp_path):
    workdir = str(tmp_path / "work")
    result = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", workdir, "--json"]
    )
    execution = json.loads(result.stdout)["execution"]
    shown = CliRunner().invoke(
        cli, ["show", execution, "--workdir", workdir], env={"COLUMNS": "200"}
    )
    choice = next(line for line in shown.output.splitlines() if "AnythingToSend (Choice)" in line)
    assert choice.rstrip().endswith("→ SendEmails")
    assert "NothingToSend (Fail) NOT RUN" in shown.output
    assert "redrive: " not in shown.output  # it succeeded: nothing to resume


def test_paths_the_run_and_show_print_stay_on_one_line_at_80_columns(tmp_path):
    # GIVEN a workdir whose path is longer than a line of 80 columns
    workdir = tmp_path / ("a-long-folder-name-" * 4) / "work"
    narrow = {"COLUMNS": "80"}

    # WHEN the campaign runs, and its execution is shown, both printing into a pipe
    ran = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)], env=narrow
    )
    (execution,) = [path.name for path in (workdir / "executions").iterdir()]
    shown = CliRunner().invoke(cli, ["show", execution, "--workdir", str(workdir)], env=narrow)

    # THEN each path is whole on one line, to be copied
    lines = ran.output.splitlines()
    assert any(f"(workdir {workdir})" in line for line in lines), ran.output
    (report,) = workdir.glob("bucket/reports/*/*/report.csv")
    assert f"Report:  {report}" in lines
    assert f"report: {report}" in shown.output.splitlines(), shown.output


def test_show_of_a_failed_map_says_why_its_batches_failed_once_per_error(tmp_path):
    workdir = str(tmp_path / "work")
    # GIVEN a run in batches of 2 whose account runs out of quota after 3 messages
    args = ["--faults", "quota-after=3", "--batch-size", "2", "--json"]
    result = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", workdir, *args]
    )
    assert result.exit_code == 1
    execution = json.loads(result.stdout)["execution"]

    # WHEN the execution is shown
    shown = CliRunner().invoke(cli, ["show", execution, "--workdir", workdir], env=WIDE).output

    # THEN beside the Map's own error it gives the batches' error and cause, counted once
    failed = int(shown.split("Map Run FAILED: ")[1].split("failed ")[1].split(",")[0])
    halted = [line for line in shown.splitlines() if "AccountSendingHalted" in line]
    batches = "1 batch" if failed == 1 else f"{failed} batches"
    assert len(halted) == 1
    assert halted[0].startswith(f"  AccountSendingHalted ({batches}): send_batch: ")
    assert "faults: quota-after=3: Daily message quota exceeded." in halted[0]


def test_show_of_a_superseded_then_redriven_execution_names_the_newer_one_and_no_stale_error(
    tmp_path,
):
    workdir = str(tmp_path / "work")
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", workdir, "--json"]
    # GIVEN a run stopped by a quota drill, and the file run again since (which sent the rest)
    first = json.loads(CliRunner().invoke(cli, [*run, "--faults", "quota-after=3"]).stdout)
    newer = json.loads(CliRunner().invoke(cli, run).stdout)["execution"]
    show = ["show", first["execution"], "--workdir", workdir]

    # WHEN the first is shown THEN it names the newer execution that sends the file
    failed = " ".join(CliRunner().invoke(cli, show, env=WIDE).output.split())
    assert f"superseded: a newer run of the file sends it, execution {newer}" in failed
    assert "SendEmails (Map) FAILED" in failed
    # AND points at the newer run, not at a redrive of its own
    assert f"its rows are the newer run's: mailmatrix show {newer} --workdir {workdir}" in failed
    assert "redrive: " not in failed

    # WHEN it is redriven (its Map succeeds, sending nothing) and shown again THEN the Map's
    # old error is no longer printed as if it were the Map's state now
    CliRunner().invoke(cli, ["redrive", first["execution"], "--workdir", workdir])
    redriven = " ".join(CliRunner().invoke(cli, show, env=WIDE).output.split())
    assert "SendEmails (Map) SUCCEEDED" in redriven
    assert "(after an earlier try failed: States.ExceedToleratedFailureThreshold)" in redriven
    assert f"execution {newer}" in redriven
    # AND the newer one, which sent the whole file, names no other
    shown = CliRunner().invoke(cli, ["show", newer, "--workdir", workdir], env=WIDE).output
    assert "superseded: " not in shown


def test_a_run_stopped_by_the_quota_says_why_and_when_to_resume_and_alerts_so(tmp_path):
    workdir = tmp_path / "work"
    # GIVEN a run in batches of 2 whose account runs out of quota after 3 messages
    args = ["--faults", "quota-after=3", "--batch-size", "2", "--workdir", str(workdir)]
    code, output = _run(str(EXAMPLE / "recipients.csv"), *args)

    # THEN it says the batches' error and reason, and that the quota is the drill's
    assert code == 1
    flat = _words(output)
    assert "AccountSendingHalted (" in flat and "Daily message quota exceeded." in flat
    assert "When to resume: the daily quota ran out in a drill (--faults quota-after)" in flat
    # AND its last line offers what the advice says, the run without the drill, not a redrive
    # (it offered "Resume ...: mailmatrix redrive ID", which stops the same way)
    command = f"mailmatrix run {EXAMPLE / 'recipients.csv'} --workdir {workdir} --batch-size 2"
    assert output.rstrip().splitlines()[-1].endswith(command)
    assert flat.index("When to resume") < flat.index(
        "Send the rest, without the drill (rows already sent are skipped): mailmatrix run"
    )
    assert "mailmatrix redrive" not in flat
    # AND the alert says the same, the Map's error's cause being no stack trace
    (alert,) = [
        json.loads(line)
        for line in (workdir / "notifications.jsonl").read_text(encoding="utf-8").splitlines()
        if "AlertTopic" in line
    ]
    assert alert["subject"] == "MailMatrix execution FAILED: AccountSendingHalted"
    assert "Why sending stopped:\n  AccountSendingHalted (" in alert["message"]
    assert "When to redrive: the daily quota ran out in a drill" in alert["message"]
    assert "stackTrace" not in alert["message"]

    # WHEN the execution is redriven (the drill stops it again) THEN it offers the same
    (execution,) = [path.name for path in (workdir / "executions").iterdir()]
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])
    assert redriven.exit_code == 1, redriven.output
    last = redriven.output.rstrip().splitlines()[-1]
    assert last.startswith("Send the rest, without the drill (rows already sent are skipped): ")
    assert " --faults" not in last

    # AND the command offered sends the rest
    again = CliRunner().invoke(cli, [*shlex.split(command)[1:], "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"]["unsent"] == 0


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--templates", "my-templates", "--attachments", "letters", "--concurrency", "2"],
    ],
    ids=["defaults", "given"],
)
def test_a_redrive_prints_the_rerun_command_as_the_run_printed_it(tmp_path, monkeypatch, options):
    # GIVEN a campaign in the current folder, run with relative paths (and, or not, options
    # of its own) until a quota drill stopped it
    monkeypatch.chdir(tmp_path)
    Path("camp").mkdir()
    shutil.copytree(EXAMPLE / "attachments", "letters" if options else "camp/attachments")
    shutil.copy(EXAMPLE / "recipients.csv", "camp/recipients.csv")
    shutil.copytree(REPO / "templates", "my-templates")
    args = ["run", "camp/recipients.csv", "--workdir", "w", *options]
    ran = CliRunner().invoke(cli, [*args, "--faults", "quota-after=3"])
    assert ran.exit_code == 1, ran.output
    printed = ran.output.rstrip().splitlines()[-1]
    expected = " ".join(["mailmatrix run camp/recipients.csv --workdir w", *options])
    assert printed.endswith(f": {expected}")

    # WHEN its execution is redriven (the drill stops it again)
    (execution,) = [path.name for path in Path("w", "executions").iterdir()]
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", "w"])

    # THEN the command it offers is the one the run printed: relative paths, and only the
    # options given (it gave whole paths, --concurrency 4 and --batch-size 100 never given)
    assert redriven.exit_code == 1, redriven.output
    assert redriven.output.rstrip().splitlines()[-1] == printed
    # AND run as printed, it is the same run: held to the same way, it sends the rest
    again = CliRunner().invoke(cli, [*shlex.split(expected)[1:], "--json"])
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)["counts"]
    assert (counts["sent"] + counts["skipped"], counts["unsent"]) == (18, 0)


def test_the_alert_of_a_run_stopped_in_validation_carries_the_message_not_a_stack_trace(
    tmp_path,
):
    # GIVEN a file whose column clashes with a template constant: ValidateRecipients raises
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    rows = [lines[0] + ",company"] + [f"{line},Globex Ltd" for line in lines[1:]]
    csv_path = tmp_path / "recipients.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    workdir = tmp_path / "work"

    _run(str(csv_path), "--attachments", str(EXAMPLE / "attachments"), "--workdir", str(workdir))

    # THEN the alert gives the error's message, and no Python stack trace with file paths
    alerts = (workdir / "notifications.jsonl").read_text(encoding="utf-8")
    assert "Error: the templates cannot be used with this file (TemplateError)" in alerts
    assert "column 'company' has the name of the constant 'company'" in alerts
    for trace in ("stackTrace", "Traceback", ".py"):
        assert trace not in alerts


def test_a_run_during_the_accounts_quota_halt_gives_one_advice(tmp_path):
    workdir = tmp_path / "work"
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    # GIVEN a file run once, and the account's daily quota used up since (a halt recorded)
    CliRunner().invoke(cli, [*run, "--faults", "quota-after=3"])
    from mailmatrix.adapters.ledger_sqlite import SqliteLedger
    from mailmatrix.local import campaign_of_file

    ledger = SqliteLedger(str(workdir / "ledger.sqlite3"))
    reason = "ses: Throttling: Daily message quota exceeded."
    ledger.halt(
        campaign_of_file(EXAMPLE / "recipients.csv"),
        code="Throttling",
        reason=reason,
        attempt="arn:aws:states:eu-west-1:123456789012:execution:M/SendEmails:1",
    )
    ledger.close()

    # WHEN the file runs again within the halt's hold
    again = CliRunner().invoke(cli, run)

    # THEN it fails (exit 1) saying what halted it and the reason, to the end of the sentence,
    # and when to come back once: no "redrive in N s" beside the 24-hour advice, no ARN
    assert again.exit_code == 1
    result = json.loads(again.stdout)
    (details,) = result["failure_details"]
    assert " by an earlier batch: ses: Throttling: Daily message quota exceeded. (" in details
    assert details.endswith("a redrive lifts it at once)")
    assert "redrive in" not in details and "arn:" not in details
    assert result["redrive_advice"].startswith("the 24-hour sending quota is used up")


def test_a_run_after_a_quota_drill_is_not_held_by_the_drills_halt(tmp_path):
    workdir = tmp_path / "work"
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    # GIVEN a run halted by a drill's daily quota after 3 messages
    drilled = CliRunner().invoke(cli, [*run, "--faults", "quota-after=3", "--batch-size", "2"])
    assert drilled.exit_code == 1
    advice = json.loads(drilled.stdout)["redrive_advice"]
    assert advice.startswith("the daily quota ran out in a drill (--faults quota-after)")
    assert "24-hour" not in advice

    # WHEN the drill runs again within the halt's hold THEN the drill's halt holds it, and
    # the advice says it is the drill's, once
    held = CliRunner().invoke(cli, [*run, "--faults", "quota-after=3"])
    assert held.exit_code == 1
    result = json.loads(held.stdout)
    (details,) = result["failure_details"]
    assert "by an earlier batch: faults: quota-after=3: Daily message quota exceeded." in details
    assert result["redrive_advice"] == advice

    # WHEN the file runs without the drill, at once THEN it sends the rest (it failed, saying
    # both "redrive in 51 s" and to wait 24 hours)
    plain = CliRunner().invoke(cli, run)
    assert plain.exit_code == 0, plain.output
    counts = json.loads(plain.stdout)["counts"]
    assert (counts["sent"] + counts["skipped"], counts["unsent"]) == (18, 0)


def test_a_redrive_of_an_older_execution_rewrites_only_its_own_report(tmp_path):
    workdir = tmp_path / "work"
    # GIVEN a run of the file stopped after its first batch
    stopped = _stopped_after_the_first_batch(workdir)
    assert stopped["status"] == "ABORTED"
    # AND a later run of the same file that sent the rest and printed its report
    later = json.loads(
        CliRunner()
        .invoke(cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"])
        .stdout
    )
    later_report = Path(later["report"]).read_bytes()

    # WHEN the stopped execution is redriven
    redriven = CliRunner().invoke(
        cli, ["redrive", stopped["name"], "--workdir", str(workdir)], env={"COLUMNS": "400"}
    )

    # THEN the later run's report is as it printed it, and the redrive wrote its own beside
    # its summary.json: the rows it had sent, the rest left to the later run, which sent them:
    # not failures (exit 0), and said so
    assert redriven.exit_code == 0, redriven.output
    said = " ".join(redriven.output.split())
    assert "not sent by this execution, and not failed (Superseded)" in said
    assert "failed as Superseded" not in said
    assert Path(later["report"]).read_bytes() == later_report
    (own,) = [line.split(None, 1)[1] for line in redriven.output.splitlines() if "Report:" in line]
    assert Path(own).parent.name == stopped["name"] and own != later["report"]
    summary = json.loads((Path(own).parent / "summary.json").read_text(encoding="utf-8"))
    assert summary["execution"] == stopped["executionArn"]
    with open(own, encoding="utf-8-sig", newline="") as report:
        statuses = collections.Counter(
            (row["status"], row["code"]) for row in csv.DictReader(report)
        )
    assert set(statuses) == {("sent", ""), ("failed", "Superseded")}
    assert statuses.total() == 18
    # AND show names each execution's own report
    shown = CliRunner().invoke(
        cli, ["show", stopped["name"], "--workdir", str(workdir)], env={"COLUMNS": "400"}
    )
    assert f"report: {own}" in shown.output


def _listed(workdir: Path) -> str:
    return CliRunner().invoke(cli, ["executions", "--workdir", str(workdir)], env=WIDE).output


WIDE = {"COLUMNS": "400"}


def test_executions_and_show_say_what_a_stopped_run_sent_and_no_more(tmp_path):
    workdir = tmp_path / "work"
    # GIVEN a run stopped after its first batch (no summary)
    stopped = _stopped_after_the_first_batch(workdir)
    sent = len(_recipients(workdir / "outbox"))

    # WHEN the executions are listed, and the stopped one shown
    listed = _listed(workdir)
    shown = CliRunner().invoke(cli, ["show", stopped["name"], "--workdir", str(workdir)], env=WIDE)

    # THEN each says what it sent, that it stopped, and what is left
    result = f"stopped: {sent} sent, {18 - sent} not sent yet, 2 rejected"
    assert result in listed
    assert f"result: {result}" in shown.output
    assert "counted from the send ledger" in shown.output
    # AND the Map it stopped in ended with it, as the execution did
    assert "SendEmails (Map) ABORTED" in shown.output
    assert "RUNNING" not in shown.output
    # AND it says how to send the rest, on lines that can be copied
    assert f"redrive: mailmatrix redrive {stopped['name']} --workdir {workdir}\n" in shown.output
    assert "when to redrive: it was stopped on purpose: a redrive sends the rest" in shown.output

    # WHEN a later run of the file sends the rest
    CliRunner().invoke(cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)])

    # THEN the stopped execution is not credited with that run's emails
    assert f"stopped: {sent} sent, {18 - sent} already sent, 2 rejected" in _listed(workdir)


def _kill_run_once_sent(workdir: Path, emails: int, *options: str) -> None:
    """Run the demo campaign into ``workdir`` paced (with ``options``), and kill it outright
    (SIGKILL: nothing of it runs after) once ``emails`` are in the outbox."""
    import signal

    _signal_run_once_sent(workdir, emails, signal.SIGKILL, *options)


def _signal_run_once_sent(
    workdir: Path, emails: int, signum: int, *options: str, ignored: int | None = None
) -> tuple:
    """Run the demo campaign into ``workdir`` paced (with ``options``; ``ignored``: a signal
    it starts with ignored, as ``nohup`` starts it), send ``signum`` to its whole process
    group (as a terminal does) once ``emails`` are in the outbox; return its exit status and
    what it printed."""
    args = [str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--send-rate", "4"]
    return _signal_once_sent(workdir, emails, signum, ["run", *args, *options], ignored)


def _signal_once_sent(
    workdir: Path, emails: int, signum: int, args: list[str], ignored: int | None = None
) -> tuple:
    """Run ``mailmatrix ARGS`` (sending into ``workdir``), and signal it as
    _signal_run_once_sent does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = subprocess.Popen(
        [sys.executable, "-c", "from mailmatrix.cli.main import main; main()", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=None if ignored is None else lambda: signal.signal(ignored, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 60
        while len(_recipients(workdir / "outbox")) < emails:
            assert run.poll() is None, "the command ended before it was signalled"
            assert time.monotonic() < deadline, "the command sent nothing"
            time.sleep(0.02)
        os.killpg(run.pid, signum)
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
    return run.returncode, out.decode("utf-8")


def test_a_hangup_stops_a_run_as_ctrl_c_does_with_its_summary_and_nothing_in_doubt(tmp_path):
    import signal

    from mailmatrix.local import Workdir, progress_of

    # GIVEN a run of the demo campaign, paced, whose terminal closes (SIGHUP to its process
    # group, its workers included) once 3 emails are out
    workdir = tmp_path / "work"
    code, printed = _signal_run_once_sent(workdir, 3, signal.SIGHUP)

    # THEN it stopped as Ctrl-C stops it: exit 130 and its summary
    assert code == 130, printed
    assert "Stopped: no new batch started" in printed
    assert "mailmatrix redrive" in printed
    # AND no row is in doubt: each batch ended after the email it was on
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    counts = progress_of(Workdir(workdir), name)
    assert counts is not None
    assert counts["in_doubt"] == 0
    assert counts["sent"] == len(_recipients(workdir / "outbox"))
    assert counts["sent"] + counts["unsent"] == 18


def test_a_run_whose_terminal_closes_stops_in_order_and_exits_130(tmp_path):
    import fcntl
    import os
    import pty
    import subprocess
    import sys
    import termios
    import time

    from mailmatrix.local import Workdir, progress_of

    # GIVEN a paced run at a terminal of its own (its progress bar drawn there)
    workdir = tmp_path / "work"
    master, slave = pty.openpty()

    def at_the_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    args = [str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--send-rate", "4"]
    run = subprocess.Popen(
        [sys.executable, "-c", "from mailmatrix.cli.main import main; main()", "run", *args],
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=at_the_terminal,
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + 60
        while len(_recipients(workdir / "outbox")) < 3:
            assert run.poll() is None and time.monotonic() < deadline
            with contextlib.suppress(OSError):
                os.read(master, 65536)  # what it draws, read as a terminal reads it
            time.sleep(0.02)
    finally:
        # WHEN the terminal closes (the kernel sends SIGHUP; writing to it fails after)
        os.close(master)
    code = run.wait(timeout=60)

    # THEN the run stopped in order: exit 130, no row in doubt
    assert code == 130
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    counts = progress_of(Workdir(workdir), name)
    assert counts is not None and counts["in_doubt"] == 0
    assert counts["sent"] == len(_recipients(workdir / "outbox"))


def test_a_hangup_stops_a_redrive_as_it_stops_a_run(tmp_path):
    import signal

    from mailmatrix.local import Workdir, progress_of

    # GIVEN a paced run stopped once 3 emails were out, redriven (paced as it ran), and its
    # terminal closing once 6 are out
    workdir = tmp_path / "work"
    _signal_run_once_sent(workdir, 3, signal.SIGTERM)
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    args = ["redrive", name, "--workdir", str(workdir)]
    code, printed = _signal_once_sent(workdir, 6, signal.SIGHUP, args)

    # THEN the redrive stopped in order, with its summary, and no row is in doubt
    assert code == 130, printed
    assert "Stopped: no new batch started" in printed
    counts = progress_of(Workdir(workdir), name)
    assert counts is not None and counts["in_doubt"] == 0
    assert counts["sent"] == len(_recipients(workdir / "outbox")) < 18


def test_a_stop_while_a_slow_rate_waits_for_the_next_email_ends_the_run_at_once(tmp_path):
    import signal

    from mailmatrix.local import Workdir, progress_of

    # GIVEN a run at one message a minute, the slowest rate taken: its first email out, the
    # next a minute away
    workdir = tmp_path / "work"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    args += ["--send-rate", "0.0167"]

    # WHEN it gets SIGTERM (and 60 s to end, less than the wait: a run that waited it out
    # fails here)
    code, printed = _signal_once_sent(workdir, 1, signal.SIGTERM, args)

    # THEN it stopped during the wait, in order, with its summary: the row it waited to send
    # given back unsent and not in doubt, for the redrive with the rest
    assert code == 130, printed
    assert "Stopped: no new batch started" in printed
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    counts = progress_of(Workdir(workdir), name)
    assert counts is not None
    assert (counts["sent"], counts["in_doubt"], counts["unsent"]) == (1, 0, 17)


def test_a_run_started_with_hangups_ignored_goes_on_after_one(tmp_path):
    import signal

    # GIVEN a run started as `nohup` starts it (SIGHUP ignored), whose terminal closes
    workdir = tmp_path / "work"
    code, printed = _signal_run_once_sent(workdir, 3, signal.SIGHUP, ignored=signal.SIGHUP)

    # THEN it sent the whole campaign
    assert code == 0, printed
    assert len(_recipients(workdir / "outbox")) == 18


def test_a_killed_run_is_listed_with_what_the_ledger_says_it_sent(tmp_path):
    from mailmatrix.local import Workdir, progress_of

    # GIVEN a run of the demo campaign, paced, killed outright (SIGKILL) once 3 emails are out
    workdir = tmp_path / "work"
    _kill_run_once_sent(workdir, 3)
    delivered = len(_recipients(workdir / "outbox"))

    # WHEN the executions are listed
    listed = _listed(workdir)

    # THEN the killed one is ABORTED and says, from the ledger, what went out and what is left:
    # the rows it held as it died may be in the outbox or not, and are counted apart
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    counts = progress_of(Workdir(workdir), name)
    assert counts is not None
    assert counts["sent"] <= delivered <= counts["sent"] + counts["in_doubt"]
    assert counts["sent"] + counts["in_doubt"] + counts["unsent"] == 18
    row = next(line for line in listed.splitlines() if name in line)
    assert "ABORTED" in row and f"stopped: {counts['sent']} sent" in row
    assert f"{counts['unsent']} not sent yet" in row
    assert ("in doubt" in row) == bool(counts["in_doubt"])


def test_show_of_a_killed_run_gives_its_map_run_aborted_with_counts_that_add_up(tmp_path):
    from mailmatrix.engine import Engine, ResourceRegistry

    # GIVEN a run of the demo campaign in batches of 2 killed outright (SIGKILL) while
    # sending, once 7 emails are out
    workdir = tmp_path / "work"
    _kill_run_once_sent(workdir, 7, "--batch-size", "2")
    (name,) = [path.name for path in (workdir / "executions").iterdir()]

    # WHEN it is shown
    shown = CliRunner().invoke(cli, ["show", name, "--workdir", str(workdir)], env=WIDE).output

    # THEN its Map Run ended with it, as Step Functions aborts it (it said "Map Run RUNNING"
    # with the counts of its last snapshot, the running batches in none of them)
    assert "SendEmails (Map) ABORTED" in shown
    line = next(line for line in shown.splitlines() if "Map Run " in line)
    numbers = re.search(
        r"Map Run ABORTED: total (\d+), succeeded (\d+), failed (\d+), pending (\d+)", line
    )
    assert numbers, line
    total, succeeded, failed, pending = map(int, numbers.groups())
    assert succeeded + failed + pending == total
    # AND its succeeded batches are those that finished
    engine = Engine(workdir / "executions", ResourceRegistry())
    (run,) = engine.describe(name)["mapRuns"]
    children = engine.map_run_children(name, run["id"])
    assert succeeded == sum(1 for child in children if child["status"] == "SUCCEEDED") > 0


def test_a_killed_run_still_holds_its_file_to_its_way_of_delivery(tmp_path):
    # GIVEN a run into the outbox killed outright once 2 emails are out (its end never ran)
    workdir = tmp_path / "work"
    _kill_run_once_sent(workdir, 2)
    delivered = _recipients(workdir / "outbox")

    # WHEN the file runs again through a mail server
    smtp = f"smtp://127.0.0.1:{_closed_port()}"
    again = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--smtp", smtp]
    )

    # THEN it is refused (the rows in the outbox count as sent, the server would never get
    # them), and nothing more was written
    assert again.exit_code == 2, again.output
    assert "delivered through the local outbox" in again.output
    assert _recipients(workdir / "outbox") == delivered


def test_a_first_run_that_claims_nothing_leaves_its_file_free(tmp_path):
    # GIVEN a first run of a file that stops before sending (every row is rejected)
    workdir = tmp_path / "work"
    campaign = tmp_path / "bad.csv"
    campaign.write_text("Email,Name\nnot-an-address,X\n", encoding="utf-8")
    (tmp_path / "attachments").mkdir()
    first = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir)])
    assert first.exit_code == 3
    assert "executions" in [path.name for path in workdir.iterdir()]  # it ran, and stopped

    # WHEN it runs again another way (a mail server) THEN that is not refused as a change:
    # it fails the same way, on its rows
    smtp = f"smtp://127.0.0.1:{_closed_port()}"
    again = CliRunner().invoke(
        cli, ["run", str(campaign), "--workdir", str(workdir), "--smtp", smtp]
    )
    assert again.exit_code == 3, again.output
    assert "earlier runs" not in again.output


def test_a_redrive_after_the_file_changed_is_refused(tmp_path):
    # GIVEN a run stopped by the daily quota after 5 messages (redrivable)
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    first = CliRunner().invoke(
        cli, ["run", str(csv_path), *args, "--json", "--faults", "quota-after=5"]
    )
    execution = json.loads(first.stdout)["execution"]
    sent = _recipients(workdir / "outbox")

    # WHEN the operator corrects an address in the file and redrives
    csv_path.write_text(original.replace("sofia.bianchi@", "sofia.b@"), encoding="utf-8")
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])

    # THEN it is refused (it would mail the old address) and says to run the file again
    output = redriven.output.replace("\n", "")
    assert redriven.exit_code == 2, output
    assert "has changed since (it was edited)" in output
    assert f"mailmatrix run {csv_path} --workdir {workdir}" in output
    assert _recipients(workdir / "outbox") == sent

    # WHEN the file is as it was again THEN the redrive goes on
    csv_path.write_text(original, encoding="utf-8")
    again = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])
    assert "has changed" not in again.output
    assert len(_recipients(workdir / "outbox")) > len(sent)


def test_the_command_a_refused_redrive_gives_runs_the_file_its_way(tmp_path):
    # GIVEN a run with a templates folder of its own, stopped by the daily quota
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    templates = tmp_path / "my-templates"
    shutil.copytree(REPO / "templates", templates)
    args = [*args, "--templates", str(templates)]
    first = CliRunner().invoke(
        cli, ["run", str(csv_path), *args, "--json", "--faults", "quota-after=5"]
    )
    execution = json.loads(first.stdout)["execution"]
    sent = len(_recipients(workdir / "outbox"))

    # WHEN the file is corrected, the redrive refused, and the command it gives is run
    csv_path.write_text(original.replace("sofia.bianchi@", "sofia.b@"), encoding="utf-8")
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])
    assert redriven.exit_code == 2, redriven.output
    (line,) = [line for line in redriven.output.splitlines() if "skipped): mailmatrix run" in line]
    command = shlex.split(line.split("skipped): ", 1)[1])
    rerun = CliRunner().invoke(cli, [*command[1:], "--json"])

    # THEN it carries the run's templates, and the run is not refused for its way (without
    # them it was, in turn: a trial's dead end); it validates the corrected file and goes on
    # to send (a run without the drill is not held by the drill's quota halt)
    assert command[command.index("--templates") + 1] == str(templates.resolve())
    assert rerun.exit_code != 2, rerun.output
    assert "earlier runs of a file named" not in rerun.output
    counts = json.loads(rerun.stdout)["counts"]
    assert counts["valid"] == 18
    assert (counts["skipped"], counts["sent"]) == (sent, 18 - sent)
    assert len(_recipients(workdir / "outbox")) == 18


def test_a_redrive_of_a_run_that_failed_in_validation_is_refused_once_the_file_changed(
    tmp_path,
):
    # GIVEN a run that failed in ValidateRecipients (a column the templates use misnamed)
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    csv_path.write_text(original.replace(",Position,", ",Role,", 1), encoding="utf-8")
    first = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])
    assert first.exit_code == 3, first.output
    execution = json.loads(first.stdout)["execution"]
    # AND the corrected file run since
    csv_path.write_text(original, encoding="utf-8")
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    sent = _recipients(workdir / "outbox")

    # WHEN the failed execution is redriven
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])

    # THEN it is refused as a changed file, with the command to run (a trial's redrive failed
    # as UploadReplaced and advised another redrive, over and over)
    assert redriven.exit_code == 2, redriven.output
    assert "has changed since" in redriven.output.replace("\n", " ")
    assert "UploadReplaced" not in redriven.output
    assert _recipients(workdir / "outbox") == sent


def test_a_redrive_from_another_folder_or_of_a_moved_file_is_refused_too(tmp_path, monkeypatch):
    # GIVEN a run of offers.csv, given by a relative path, stopped by the daily quota
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    original = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8")
    (campaign / "offers.csv").write_text(original, encoding="utf-8")
    workdir = tmp_path / "w"
    monkeypatch.chdir(campaign)
    args = ["--workdir", str(workdir), "--attachments", str(EXAMPLE / "attachments")]
    first = CliRunner().invoke(
        cli, ["run", "offers.csv", *args, "--json", "--faults", "quota-after=5"]
    )
    execution = json.loads(first.stdout)["execution"]
    sent = _recipients(workdir / "outbox")

    # WHEN the file is corrected and the redrive runs from another folder THEN it is refused
    corrected = original.replace("sofia.bianchi@", "sofia.b@")
    (campaign / "offers.csv").write_text(corrected, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    redrive = ["redrive", execution, "--workdir", str(workdir)]
    refused = CliRunner().invoke(cli, redrive)
    assert refused.exit_code == 2, refused.output
    assert "it was edited" in refused.output
    # AND once the corrected file is moved elsewhere, too (it cannot be compared)
    (campaign / "offers.csv").rename(tmp_path / "moved.csv")
    moved = CliRunner().invoke(cli, redrive)
    assert moved.exit_code == 2, moved.output
    assert "it is no longer there" in moved.output.replace("\n", "")
    assert _recipients(workdir / "outbox") == sent


def test_a_redrive_is_held_to_the_way_its_file_was_sent_since(tmp_path):
    # GIVEN a first run of the file through a mail server that stopped before any row (the
    # server was down: nothing claimed, so the file is held to no way yet)
    csv_path = str(EXAMPLE / "recipients.csv")
    workdir = str(tmp_path / "w")
    smtp = f"smtp://127.0.0.1:{_closed_port()}"
    down = CliRunner().invoke(
        cli, ["run", csv_path, "--workdir", workdir, "--smtp", smtp, "--json"]
    )
    execution = json.loads(down.stdout)["execution"]
    # AND the file sent since into the outbox (stopped by the quota drill after 2)
    CliRunner().invoke(cli, ["run", csv_path, "--workdir", workdir, "--faults", "quota-after=2"])
    sent = _recipients(tmp_path / "w" / "outbox")
    assert len(sent) == 2

    # WHEN the first execution is redriven THEN it is refused: the rows in the outbox count
    # as sent, the server would never get them
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])
    assert redriven.exit_code == 2, redriven.output
    assert "delivered through the local outbox" in redriven.output
    assert _recipients(tmp_path / "w" / "outbox") == sent


def _rename_set(templates: Path, old: str, new: str) -> None:
    """Rename a template set: its folder and its name in manifest.yaml."""
    (templates / old).rename(templates / new)
    manifest = templates / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace(f"\n  {old}:", f"\n  {new}:"), encoding="utf-8")


def _sent_with_own_templates(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The example campaign sent with a copy of the bundled templates: the copy, the workdir,
    and the arguments of its run."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    workdir = tmp_path / "w"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    args += ["--templates", str(templates)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    return templates, workdir, args


def test_validate_with_the_workdir_says_what_run_will_say_of_earlier_runs(tmp_path):
    # GIVEN the example campaign sent with a copy of the bundled templates
    templates, workdir, _ = _sent_with_own_templates(tmp_path)
    csv_path = str(EXAMPLE / "recipients.csv")
    validate = ["validate", csv_path, "--templates", str(templates), "--workdir", str(workdir)]
    # (as it is: the check passes, saying it was made; the rejected rows decide the exit)
    passed = CliRunner().invoke(cli, validate, env=WIDE)
    assert passed.exit_code == 4, passed.output
    assert "(Checked against its earlier runs in " in passed.output

    # WHEN its set offer is renamed THEN validate says that run refuses the file, as run
    # does, with run's exit code (it said "the 16 valid rows would be sent")
    _rename_set(templates, "offer", "offer_letter")
    renamed = CliRunner().invoke(cli, validate, env=WIDE)
    ran = CliRunner().invoke(cli, ["run", csv_path, *validate[2:]])
    assert renamed.exit_code == ran.exit_code == 3, ran.output
    said = _words(renamed.output)
    assert "`run` would refuse this file (TemplateSetsChanged):" in said
    assert "template set(s) 'offer', which the templates no longer have" in said
    assert "row(s) would be sent" not in said
    as_json = json.loads(CliRunner().invoke(cli, [*validate, "--json"]).stdout)
    assert as_json["earlier_runs"]["error"] == "TemplateSetsChanged"

    # WHEN another templates folder is given THEN it is refused as run refuses it (exit 2)
    other = CliRunner().invoke(cli, ["validate", csv_path, "--workdir", str(workdir)], env=WIDE)
    assert other.exit_code == 2, other.output
    assert f"used --templates {templates}" in other.output


@pytest.mark.parametrize("how", ["--sender", "MAILMATRIX_SENDER"])
def test_validate_refuses_a_sender_the_earlier_runs_did_not_use_as_run_does(tmp_path, how):
    # GIVEN the example campaign sent with a copy of the bundled templates and their
    # manifest's sender
    templates, workdir, run = _sent_with_own_templates(tmp_path)
    validate = ["validate", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir)]
    validate += ["--templates", str(templates)]

    # WHEN the file is validated, and run, with another sender (the flag, or from the shell)
    sender = "HR <hr@example.org>"
    given, env = (["--sender", sender], {}) if how == "--sender" else ([], {how: sender})
    checked = CliRunner().invoke(cli, [*validate, *given], env={**WIDE, **env})
    as_json = json.loads(CliRunner().invoke(cli, [*validate, *given, "--json"], env=env).stdout)
    ran = CliRunner().invoke(cli, [*run, *given], env=env)

    # THEN validate says that `run` refuses the file, in run's words and with its exit code,
    # and counts no row as one it would send
    assert checked.exit_code == ran.exit_code == 2, checked.output
    refusal = " ".join(ran.output.split("mailmatrix run: ", 1)[1].split())
    assert "but this run gave --sender 'HR <hr@example.org>'" in refusal
    said = _words(checked.output)
    assert f"`run` would refuse this file (DeliveryChanged): {refusal}" in said
    assert "row(s) would be sent" not in said and "(Checked against its earlier" not in said
    assert as_json["earlier_runs"]["error"] == "DeliveryChanged"
    assert " ".join(as_json["earlier_runs"]["message"].split()) == refusal

    # AND without it, as those runs were, the check passes and says the sender was checked
    passed = CliRunner().invoke(cli, validate, env={**WIDE, "MAILMATRIX_SENDER": None})
    assert passed.exit_code == 4, passed.output  # the example's two rejected rows
    assert "the same --templates and --attachments folders and sender" in _words(passed.output)


def _as_unprivileged(args: list[str]) -> list[str]:
    """``args`` as a command run by a user whom file modes bind: as root, in a user namespace
    of its own as another user (root's files are theirs there, and they keep no capability to
    write what a mode closes); skipped where no such namespace can be made."""
    if os.geteuid() != 0:
        return args
    unshare = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    if shutil.which("unshare") is None or subprocess.run([*unshare, "true"]).returncode:
        pytest.skip("as root, and no user namespace to drop the privilege in")
    return [*unshare, *args]


def test_validate_reads_the_ledger_of_a_workdir_the_user_cannot_write(tmp_path):
    # GIVEN the example campaign sent, then its workdir closed to writing
    workdir = tmp_path / "w"
    csv_path = str(EXAMPLE / "recipients.csv")
    assert _run(csv_path, "--workdir", str(workdir))[0] == 0
    before = sorted(path.name for path in workdir.iterdir())
    workdir.chmod(0o500)

    # WHEN the file is validated against its earlier runs there
    try:
        cli_main = "from mailmatrix.cli.main import main; main()"
        command = [sys.executable, "-c", cli_main, "validate", csv_path, "--workdir", str(workdir)]
        done = subprocess.run(
            _as_unprivileged(command),
            capture_output=True,
            text=True,
            env={**os.environ, **WIDE},
            timeout=120,
        )
    finally:
        workdir.chmod(0o700)

    # THEN the ledger is read (the sent rows are named), nothing is made there, and the exit
    # is the rejected rows' (not 1, a ledger it could not open for writing)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "18 row(s) were sent by earlier runs of this file: `run` skips them." in done.stdout
    assert sorted(path.name for path in workdir.iterdir()) == before


def test_validate_without_a_workdir_where_run_s_default_is_not_there_says_so(tmp_path, monkeypatch):
    # GIVEN no --workdir, and no workdir yet where `run` keeps its runs by default
    default = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))

    result = CliRunner().invoke(cli, ["validate", str(EXAMPLE / "recipients.csv")], env=WIDE)

    # THEN it says it looked for earlier runs there, found no workdir, and what --workdir is for
    assert result.exit_code == 4, result.output
    said = _words(result.output)
    assert (
        f"(Not checked against earlier runs of this file: no --workdir given, and {default}, "
        "the workdir `run` uses without --workdir, does not exist yet, so a run without "
        "--workdir has none. If the run will use another workdir, give it as --workdir: "
    ) in said
    as_json = json.loads(
        CliRunner().invoke(cli, ["validate", str(EXAMPLE / "recipients.csv"), "--json"]).stdout
    )
    assert as_json["earlier_runs"] == {
        "checked": False,
        "workdir": str(default),
        "default_workdir": True,
    }
    assert not default.exists()  # validate creates no workdir


def test_validate_without_a_workdir_checks_the_runs_in_run_s_default_one(tmp_path, monkeypatch):
    # GIVEN January's offers.csv sent in the default workdir (no --workdir)
    default = tmp_path / "default"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))
    january, february = _this_month(tmp_path, "jan"), _this_month(tmp_path, "feb")
    assert CliRunner().invoke(cli, ["run", str(january)]).exit_code == 0

    # WHEN February's offers.csv is validated without --workdir
    refused = CliRunner().invoke(cli, ["validate", str(february)], env=WIDE)
    as_json = json.loads(CliRunner().invoke(cli, ["validate", str(february), "--json"]).stdout)
    ran = CliRunner().invoke(cli, ["run", str(february)])

    # THEN it says, as `run` does and with its exit code, that `run` would refuse it, and
    # that it looked in the default workdir
    assert refused.exit_code == ran.exit_code == 2, refused.output
    said = _words(refused.output)
    assert (
        "`run` would refuse this file (DeliveryChanged): offers.csv: the earlier runs of a file"
        " named offers.csv in "
    ) in said
    assert (
        f"(Checked in {default}, the workdir `run` uses without --workdir; give --workdir if the "
        "run will use another.)"
    ) in said
    assert as_json["earlier_runs"]["error"] == "DeliveryChanged"
    assert (as_json["earlier_runs"]["workdir"], as_json["earlier_runs"]["default_workdir"]) == (
        str(default),
        True,
    )

    # AND January's own file, validated the same way, is counted against its runs there
    again = CliRunner().invoke(cli, ["validate", str(january)], env=WIDE)
    assert again.exit_code == 4, again.output  # the example's two rejected rows
    said = _words(again.output)
    assert "18 row(s) were sent by earlier runs of this file: `run` skips them." in said
    assert f"earlier runs in {default} (the workdir `run` uses without --workdir;" in said


def test_validate_refuses_a_manifest_sender_run_refuses_with_run_s_exit_code(tmp_path):
    # GIVEN templates whose manifest signs from a reserved domain (.test)
    templates = _own_letters(tmp_path)
    manifest = templates / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("talent@example.com>", "talent@acme.test>"))
    options = ["--templates", str(templates)]
    csv_path = str(EXAMPLE / "recipients.csv")

    # WHEN the file is validated, and run
    checked = CliRunner().invoke(cli, ["validate", csv_path, *options], env=WIDE)
    as_json = json.loads(CliRunner().invoke(cli, ["validate", csv_path, *options, "--json"]).stdout)
    ran = CliRunner().invoke(cli, ["run", csv_path, *options, "--workdir", str(tmp_path / "w")])

    # THEN validate refuses it as `run` does (exit 3: the templates are unusable, nothing
    # sent), saying where it came from
    assert checked.exit_code == ran.exit_code == 3, checked.output
    assert "Nothing was sent: a setting is missing or wrong (ConfigurationError)" in _words(
        ran.output
    )
    said = _words(checked.output)
    assert "Error: sender: " in said and "invalid address domain: " in said
    assert "(from the templates manifest's sender)" in said
    assert "`run` would stop here too, sending nothing" in said
    assert as_json["error"] == "ConfigurationError"
    assert as_json["message"].startswith("sender: ")

    # AND a --sender, as `run` takes it, is what validate checks instead
    given = ["--sender", "Acme Talent <talent@acme.example>"]
    fixed = CliRunner().invoke(cli, ["validate", csv_path, *options, *given])
    assert fixed.exit_code == 4, fixed.output  # the example's two rejected rows


@pytest.mark.parametrize("how", ["--sender", "MAILMATRIX_SENDER"])
def test_a_bad_sender_setting_is_a_usage_error_flag_or_shell_alike(tmp_path, how):
    # GIVEN a sender at a reserved domain (.test), as the flag or in the shell
    sender = "HR <hr@company.test>"
    given, env = (["--sender", sender], {}) if how == "--sender" else ([], {how: sender})
    csv_path = str(EXAMPLE / "recipients.csv")
    workdir = tmp_path / "w"

    # WHEN the file is validated, run, and a row previewed
    commands = (
        ["validate", csv_path, "--workdir", str(workdir)],
        ["run", csv_path, "--workdir", str(workdir)],
        ["preview", csv_path, "--row", "2", "--out", str(tmp_path / "out")],
    )
    results = [CliRunner().invoke(cli, [*args, *given], env=env) for args in commands]

    # THEN each refuses it as a bad setting (exit 2), naming where it came from, before
    # anything is made
    named = "'--sender'" if how == "--sender" else how
    for result in results:
        said = _words(result.output)
        assert result.exit_code == 2, said
        assert f"Invalid value for {named}: sender: 'hr@company.test': invalid" in said
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_sender_without_angle_brackets_is_told_how_to_write_a_name(tmp_path):
    env = {"MAILMATRIX_SENDER": "HR hr@example.org"}

    checked = CliRunner().invoke(cli, ["validate", str(EXAMPLE / "recipients.csv")], env=env)

    assert checked.exit_code == 2
    said = _words(checked.output)
    assert "Quoting the part before the @-sign is not allowed" in said
    assert "write it as 'Name <address>': 'HR <hr@example.org>'" in said


def test_validate_refuses_templates_without_a_sender_as_run_does(
    tmp_path, one_set_templates, campaigns_without_attachments, monkeypatch
):
    # GIVEN templates that name no sender, and none in the shell
    monkeypatch.delenv("MAILMATRIX_SENDER", raising=False)
    plain, _ = campaigns_without_attachments
    options = ["--templates", str(one_set_templates)]

    checked = CliRunner().invoke(cli, ["validate", str(plain), *options])
    ran = CliRunner().invoke(cli, ["run", str(plain), *options, "--workdir", str(tmp_path / "w")])

    assert checked.exit_code == ran.exit_code == 3, checked.output
    assert "sender: no From address: pass --sender (as to `run`)" in checked.output
    given = CliRunner().invoke(
        cli, ["validate", str(plain), *options, "--sender", "hr@example.com"]
    )
    assert given.exit_code == 0, given.output


def _validate_json(csv_path: Path, workdir: Path) -> dict:
    args = ["validate", str(csv_path), "--workdir", str(workdir), "--json"]
    return json.loads(CliRunner().invoke(cli, args).stdout)["earlier_runs"]


def test_validate_with_the_workdir_counts_the_rows_run_would_send(tmp_path):
    workdir = tmp_path / "work"
    csv_path = EXAMPLE / "recipients.csv"
    run = ["run", str(csv_path), "--workdir", str(workdir), "--json"]
    # GIVEN the example campaign (18 valid rows) stopped by a drill's quota after 5 messages
    # (or 6: batches running at once may pass the drill's count together)
    drilled = CliRunner().invoke(cli, [*run, "--faults", "quota-after=5", "--batch-size", "2"])
    assert drilled.exit_code == 1, drilled.output
    sent = json.loads(drilled.stdout)["counts"]["sent"]
    assert 5 <= sent < 18

    # WHEN it is validated against the workdir THEN it counts those sent as skipped, and the
    # drill's halt as lifted (a run without the drill is not held by it)
    earlier = _validate_json(csv_path, workdir)
    assert (earlier["sent_before"], earlier["would_send"], earlier["halt"]) == (
        sent,
        18 - sent,
        None,
    )
    said = " ".join(
        CliRunner()
        .invoke(cli, ["validate", str(csv_path), "--workdir", str(workdir)])
        .output.split()
    )
    assert f"{18 - sent} of the 18 valid row(s) would be sent." in said
    assert f"{sent} row(s) were sent by earlier runs of this file: `run` skips them." in said
    # AND the run sends the rest and skips those
    counts = json.loads(CliRunner().invoke(cli, run).stdout)["counts"]
    assert (counts["sent"], counts["skipped"]) == (18 - sent, sent)

    # WHEN it is validated again THEN nothing is left to send (it said "All good: 18 row(s)
    # would be sent")
    earlier = _validate_json(csv_path, workdir)
    assert (earlier["sent_before"], earlier["would_send"]) == (18, 0)
    counts = json.loads(CliRunner().invoke(cli, run).stdout)["counts"]
    assert (counts["sent"], counts["skipped"]) == (0, 18)


def test_validate_counts_a_row_whose_address_had_another_letter_as_run_fails_it(tmp_path):
    # GIVEN the example campaign sent with its own templates folder, then Amelia's Status
    # changed from Offer to Rejection
    csv_path, original, _, args = _editable_copy(tmp_path)
    templates = tmp_path / "mytemplates"
    shutil.copytree(REPO / "templates", templates)
    args += ["--templates", str(templates)]
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    _amelia_rejected(csv_path, original)

    # WHEN the file is validated against the workdir
    validate = ["validate", str(csv_path), *args]
    earlier = json.loads(CliRunner().invoke(cli, [*validate, "--json"]).stdout)["earlier_runs"]
    said = " ".join(CliRunner().invoke(cli, validate, env=WIDE).output.split())

    # THEN her row is counted as run fails it, not as one it would send (it said "1 of the
    # 18 valid row(s) would be sent"), with run's advice naming the templates folder used
    assert (earlier["other_letter_before"], earlier["sent_before"]) == (1, 17)
    assert earlier["would_send"] == 0
    assert "0 of the 18 valid row(s) would be sent" in said
    assert "1 row(s) would fail as OtherLetterSent: an earlier run sent their address" in said
    assert f"or {templates / 'manifest.yaml'} now maps it to another set" in said
    # AND the run does so
    counts = json.loads(CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"]).stdout)
    assert (counts["counts"]["sent"], counts["counts"]["other_letter"]) == (0, 1)


def test_a_redrive_of_a_run_superseded_with_other_settings_says_so_not_to_rename(tmp_path):
    # GIVEN templates naming no sender, a run of the example without one (it fails, sending
    # nothing), then a run of it with --sender
    templates = tmp_path / "nosender"
    shutil.copytree(REPO / "templates", templates)
    manifest = templates / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(re.sub(r"(?m)^sender:.*$", "", text), encoding="utf-8")
    workdir = tmp_path / "work"
    run = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    run += ["--templates", str(templates)]
    unset = {"MAILMATRIX_SENDER": None}
    first = CliRunner().invoke(cli, run, env=unset)
    assert first.exit_code == 3, first.output
    assert json.loads(first.stdout)["error"] == "ConfigurationError"
    second = CliRunner().invoke(cli, [*run, "--sender", "HR <hr@example.com>"], env=unset)
    assert second.exit_code == 0, second.output
    newer = json.loads(second.stdout)["execution"]

    # WHEN the first execution is redriven
    redriven = CliRunner().invoke(
        cli, ["redrive", json.loads(first.stdout)["execution"], "--workdir", str(workdir)]
    )

    # THEN it is refused (exit 2), saying that the newer execution superseded it with other
    # settings, and what to do: that execution, or the file run again as it ran; not the
    # advice of a run of another campaign (a new file name)
    assert redriven.exit_code == 2, redriven.output
    said = _words(redriven.output)
    assert f"cannot be redriven: a newer run of recipients.csv (execution {newer})" in said
    assert "that run used --sender 'HR <hr@example.com>'" in said
    assert f"mailmatrix show {newer} --workdir" in said
    assert "--sender 'HR <hr@example.com>'" in said.split("run the file again as that run did")[1]
    assert "new file name" not in said and "another campaign" not in said


def test_validate_with_the_workdir_counts_rows_failed_for_good_as_run_reports_them(tmp_path):
    workdir = tmp_path / "work"
    csv_path = EXAMPLE / "recipients.csv"
    run = ["run", str(csv_path), "--workdir", str(workdir), "--json"]
    # GIVEN a run where the mail service refused some rows for good
    first = json.loads(CliRunner().invoke(cli, [*run, "--faults", "permanent=0.3,seed=3"]).stdout)
    failed = first["counts"]["failed"]
    assert 0 < failed < 18

    # WHEN it is validated THEN those rows are not counted as would-be-sent, nor as sent
    earlier = _validate_json(csv_path, workdir)
    assert earlier["failed_before"] == failed
    assert (earlier["sent_before"], earlier["would_send"]) == (18 - failed, 0)
    # AND the next run reports them failed again, sending nothing, counted as failed by an
    # earlier run (they read as new failures: a drill seemed still on)
    counts = json.loads(CliRunner().invoke(cli, run).stdout)["counts"]
    assert (counts["sent"], counts["skipped"], counts["failed"]) == (0, 18 - failed, failed)
    assert counts["failed_earlier"] == failed
    said = _words(CliRunner().invoke(cli, run[:-1], env=WIDE).output)
    assert f"of them failed in an earlier run, not tried again │ {failed}" in said


def test_validate_exits_as_run_would_end_when_rows_would_be_reported_failed(tmp_path):
    # GIVEN the example's valid rows alone (validate: exit 0), run with the mail service
    # refusing some for good (exit 5)
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    csv_path = tmp_path / "offers.csv"
    csv_path.write_text("\n".join(lines[:15] + lines[16:20] + lines[21:]) + "\n")
    common = ["--attachments", str(EXAMPLE / "attachments"), "--workdir", str(tmp_path / "w")]
    validate = ["validate", str(csv_path), *common]
    assert CliRunner().invoke(cli, validate).exit_code == 0
    run = ["run", str(csv_path), *common]
    assert CliRunner().invoke(cli, [*run, "--faults", "permanent=0.3,seed=3"]).exit_code == 5

    # WHEN it is validated again THEN it exits 5, as the next run ends (it said 0: a script
    # checking validate's status before running was not told)
    checked = CliRunner().invoke(cli, validate)
    assert checked.exit_code == 5, checked.output
    assert CliRunner().invoke(cli, run).exit_code == 5


def _validate_copy(csv_path: Path, args: list[str]) -> tuple[dict, str]:
    """validate of an _editable_copy with its run's options: what --json says of the earlier
    runs, and the text output on one line."""
    validate = ["validate", str(csv_path), *args]
    earlier = json.loads(CliRunner().invoke(cli, [*validate, "--json"]).stdout)["earlier_runs"]
    return earlier, " ".join(CliRunner().invoke(cli, validate).output.split())


def test_validate_with_the_workdir_counts_a_row_run_refuses_another_recipients_file(tmp_path):
    # GIVEN the example campaign sent, then its rows deleted and a new candidate's row added
    # that names Amelia's letter
    csv_path, original, _, args = _editable_copy(tmp_path)
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    new_row = "new.cand@example.com,New Cand,Offer,amelia-hart.pdf,Data Engineer,IT,2027-01-11,1"
    csv_path.write_text(f"{original.splitlines()[0]}\n{new_row}\n", encoding="utf-8")

    # WHEN it is validated against the workdir THEN the row is not among those sent: run
    # refuses it as AttachmentOfAnother (it said "All good: 1 row(s) would be sent")
    earlier, said = _validate_copy(csv_path, args)
    assert (earlier["attachment_of_another_before"], earlier["would_send"]) == (1, 0)
    assert "none of the 1 valid row(s) would be sent" in said
    assert "1 row(s) would fail as AttachmentOfAnother" in said
    # AND it names the row, so it can be found before anything is sent
    assert earlier["attachment_of_another_rows"] == [2]
    assert "`run --corrected-address ROW` sends it). Rows: 2." in said
    # AND run does as it said
    counts = json.loads(CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"]).stdout)[
        "counts"
    ]
    assert (counts["sent"], counts["attachment_of_another"]) == (0, 1)


def test_validate_with_the_workdir_counts_a_row_run_refuses_for_another_letter(tmp_path):
    # GIVEN the example campaign sent, then Amelia's row changed from Offer to Rejection
    csv_path, original, _, args = _editable_copy(tmp_path)
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    offer = "amelia.hart@example.com,Amelia Hart,Offer,"
    csv_path.write_text(original.replace(offer, offer.replace("Offer", "Rejection")), "utf-8")

    # WHEN it is validated against the workdir THEN her row is not among those sent: run
    # refuses it as OtherLetterSent (it said "1 of the 18 valid row(s) would be sent")
    earlier, said = _validate_copy(csv_path, args)
    assert (earlier["sent_before"], earlier["other_letter_before"]) == (17, 1)
    assert earlier["would_send"] == 0
    assert "1 row(s) would fail as OtherLetterSent" in said
    # AND it names her row (the first of the file), so it can be found before anything is sent
    assert earlier["other_letter_rows"] == [2]
    assert "every run of it reports them failed again. Rows: 2." in said
    # AND run does as it said
    result = json.loads(CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"]).stdout)
    counts = result["counts"]
    assert (counts["sent"], counts["skipped"], counts["other_letter"]) == (0, 17, 1)
    # AND offers no retry: none sends such a row (the printed summary offers none either)
    offered = {"retry_command", "retry_unknown_command", "run_again_command"} & set(result)
    assert not offered


def test_validate_says_when_an_old_halt_no_longer_holds_the_file(tmp_path):
    import time

    from mailmatrix.adapters.ledger_sqlite import SqliteLedger
    from mailmatrix.local import campaign_of_file

    workdir = tmp_path / "work"
    csv_path = EXAMPLE / "recipients.csv"
    CliRunner().invoke(cli, ["run", str(csv_path), "--workdir", str(workdir), "--batch-size", "30"])
    # GIVEN the account's quota halt recorded 5 minutes ago
    ledger = SqliteLedger(str(workdir / "ledger.sqlite3"), clock=lambda: time.time() - 300)
    reason = "smtp 127.0.0.1:25: DATA: 452 4.3.1 Daily message quota exceeded"
    ledger.halt(campaign_of_file(csv_path), code="452", reason=reason, attempt="a-1")
    ledger.close()

    # WHEN the file is validated THEN the halt is told, as one that no longer holds runs
    earlier = _validate_json(csv_path, workdir)
    assert earlier["halt"]["holds"] is False
    result = CliRunner().invoke(cli, ["validate", str(csv_path), "--workdir", str(workdir)])
    assert result.exit_code == 4, result.output  # the 2 rejected rows decide it
    said = _words(result.output)
    assert f"An earlier run of this file was halted 5 min ago ({reason}); a run now tries" in said


def test_a_set_renamed_with_its_old_name_kept_for_another_status_is_not_blamed_on_the_status(
    tmp_path,
):
    # GIVEN the example campaign sent with a copy of the bundled templates
    templates, _, args = _sent_with_own_templates(tmp_path)
    # AND its set offer renamed offer_2027 for the Status Offer, the old name kept beside it
    # for another Status (so the run is not refused as TemplateSetsChanged)
    shutil.copytree(templates / "offer", templates / "offer_2027")
    manifest = templates / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    renamed = "\n  offer_2027:\n    when: [Offer]\n  offer:\n    when: [Old Offer]"
    manifest.write_text(text.replace("\n  offer:\n    when: [Offer]", renamed), encoding="utf-8")

    # WHEN the file runs again
    again = CliRunner().invoke(cli, [*args, "--json"])

    # THEN the offers fail as OtherLetterSent, in words that fit a mapping changed as well as
    # a Status changed (they said "(the Status changed?)"; the rows' Status had not)
    assert again.exit_code == 5, again.output
    result = json.loads(again.stdout)
    assert result["counts"]["other_letter"] == result["counts"]["failed"] > 0
    with open(result["report"], encoding="utf-8-sig", newline="") as stream:
        reasons = {r["reason"] for r in csv.DictReader(stream) if r["status"] == "failed"}
    (reason,) = reasons
    assert "(the row's Status changed, or the manifest now maps it to 'offer_2027')" in reason
    shown = " ".join(CliRunner().invoke(cli, args, env=WIDE).output.split())
    # (naming the manifest of the templates folder the run used, not the bundled one's)
    manifest = templates / "manifest.yaml"
    assert f"Either their Status changed, or {manifest} now maps it to" in shown
    assert "Status changed?" not in shown


def test_renaming_a_template_set_after_a_run_is_refused(tmp_path):
    # GIVEN the example campaign sent with a copy of the bundled templates
    templates, workdir, args = _sent_with_own_templates(tmp_path)
    sent = _recipients(workdir / "outbox")

    # WHEN its set offer is renamed (the ledger knows each letter by its set's name)
    _rename_set(templates, "offer", "offer_letter")
    again = CliRunner().invoke(cli, args)

    # THEN the run is refused before anything is sent, naming the set and the ways out
    assert again.exit_code == 3, again.output
    said = _words(again.output)
    assert (
        "Nothing was sent: the templates lack a set that earlier runs used (TemplateSetsChanged)"
        in _words(said)
    )
    assert "template set(s) 'offer', which the templates no longer have" in said
    assert "send the file under a new file name" in said
    assert _recipients(workdir / "outbox") == sent
    # AND the failure alert says so, as the stack's alert does on AWS
    alert = json.loads((workdir / "notifications.jsonl").read_text().splitlines()[-1])
    assert "TemplateSetsChanged" in alert["subject"]

    # WHEN the set has its name back, and another set is added beside THEN the file runs,
    # and sends nothing again
    _rename_set(templates, "offer_letter", "offer")
    shutil.copytree(templates / "offer", templates / "reminder")
    manifest = templates / "manifest.yaml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("\nskip:", "\n  reminder:\n    when: [Reminder]\nskip:"))
    back = CliRunner().invoke(cli, [*args, "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["counts"]["skipped"] == len(sent), back.stdout
    assert _recipients(workdir / "outbox") == sent


def test_sets_a_workdir_recorded_before_the_ledger_kept_them_still_hold(tmp_path):
    # GIVEN the example campaign sent, in a workdir where an earlier version kept the names
    # of the campaign's template sets in deliveries.json rather than in the ledger
    templates, workdir, args = _sent_with_own_templates(tmp_path)
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db, db:
        db.execute("DELETE FROM template_sets")
    deliveries = json.loads((workdir / "deliveries.json").read_text(encoding="utf-8"))
    (campaign,) = deliveries
    deliveries[campaign]["sets"] = ["offer", "rejection"]
    (workdir / "deliveries.json").write_text(json.dumps(deliveries), encoding="utf-8")
    sent = _recipients(workdir / "outbox")

    # WHEN its set rejection is renamed THEN the run is refused, nothing sent again
    _rename_set(templates, "rejection", "regrets")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 3, again.output
    assert "template set(s) 'rejection'" in _words(again.output)
    assert _recipients(workdir / "outbox") == sent
    # AND the ledger keeps the names now
    recorded = json.loads((workdir / "deliveries.json").read_text(encoding="utf-8"))
    assert "sets" not in recorded[campaign]
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db:
        names = {row[0] for row in db.execute("SELECT name FROM template_sets")}
    assert names == {"offer", "rejection"}


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_file_with_a_hidden_name_is_refused(tmp_path, command):
    hidden = tmp_path / ".offers.csv"
    hidden.write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    result = CliRunner().invoke(cli, [command, str(hidden), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 3
    assert "a hidden file's name" in result.output


@pytest.mark.parametrize(
    ("stem", "size"),
    [("p" * 240, 244), ("名" * 81, 247)],
    ids=["ascii", "cjk"],
)
def test_a_file_name_too_long_for_the_workdir_copy_is_refused_by_validate_and_run(
    tmp_path, stem, size
):
    # GIVEN the example campaign under a name of more than 240 bytes in UTF-8
    csv_path = tmp_path / f"{stem}.csv"
    assert len(csv_path.name.encode()) == size
    csv_path.write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    shutil.copytree(EXAMPLE / "attachments", tmp_path / "attachments")
    workdir = tmp_path / "w"
    said = (
        f"{csv_path}: the file name is too long: {size} bytes in UTF-8, where a run takes at"
        " most 240 (about 80 CJK characters) for the copy it keeps in its workdir: rename the"
        " file to a shorter name"
    )

    # WHEN it is validated THEN it is refused as `run` refuses it
    checked = CliRunner().invoke(cli, ["validate", str(csv_path), "--workdir", str(workdir)])
    assert checked.exit_code == 3, checked.output
    assert said in _words(checked.output)

    # WHEN it runs THEN it is refused before anything is written
    code, output = _run(str(csv_path), "--workdir", str(workdir))
    assert code == 3, output
    assert said in _words(output)
    assert not workdir.exists()


def test_a_letter_named_pdf_that_is_a_word_document_is_rejected_by_validate_and_run(tmp_path):
    # GIVEN the example campaign whose jose-garcia.pdf is a Word document saved under that name
    csv_path = tmp_path / "offers.csv"
    csv_path.write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    shutil.copytree(EXAMPLE / "attachments", tmp_path / "attachments")
    word = b"PK\x03\x04\x14\x00\x06\x00\x08\x00[Content_Types].xml" + bytes(300)
    (tmp_path / "attachments" / "jose-garcia.pdf").write_bytes(word + b"PK\x03\x04word/")
    workdir = tmp_path / "w"
    said = (
        "attachment is not a PDF: jose-garcia.pdf looks like a Word document (.docx, a PK zip),"
        " where a PDF starts with %PDF-: put the letter, saved as a PDF, in its place"
    )

    # WHEN it is validated THEN José's row (row 3) is rejected, saying what the file is
    checked = CliRunner().invoke(cli, ["validate", str(csv_path), "--json"])
    assert checked.exit_code == 4, checked.output
    rejected = json.loads(checked.output)["rejected"]
    row = {"row": 3, "column": "Attachment_File", "reason": said, "email": "j***@example.org"}
    assert row in rejected

    # WHEN it runs THEN José gets nothing; the other 17 letters go out
    code, output = _run(str(csv_path), "--workdir", str(workdir))
    assert code == 0, output
    recipients = _recipients(workdir / "outbox")
    assert sum(recipients.values()) == 17 and "jose.garcia@example.org" not in recipients
    rejects = next((workdir / "bucket" / "reports").rglob("rejects.csv")).read_text("utf-8-sig")
    assert said in rejects


def test_a_file_name_of_240_bytes_runs(tmp_path):
    # GIVEN the example campaign under a name of 240 bytes, the longest a run takes
    csv_path = tmp_path / f"{'名' * 78}{'p' * 2}.csv"
    assert len(csv_path.name.encode()) == 240
    csv_path.write_bytes((EXAMPLE / "recipients.csv").read_bytes())
    shutil.copytree(EXAMPLE / "attachments", tmp_path / "attachments")

    # WHEN it runs, asking for its failed rows (the upload then keeps metadata beside it)
    first, output = _run(str(csv_path), "--workdir", str(tmp_path / "w"))
    again, output_again = _run(str(csv_path), "--workdir", str(tmp_path / "w"), "--retry-failed")

    # THEN both runs go through: 18 sent, then none again
    assert first == 0, output
    assert again == 0, output_again
    assert len(list((tmp_path / "w" / "outbox" / "new").iterdir())) == 18


def _three_letters_stopped_after_the_first(
    tmp_path: Path, letters: dict[str, bytes]
) -> tuple[Path, Path, str, str]:
    """Rows of anna, bob and carl with ``letters`` a.pdf, b.pdf and c.pdf, run one batch a row
    and stopped by the quota after anna's; return the attachments folder, the CSV, the
    workdir and the execution."""
    folder = tmp_path / "attachments"
    folder.mkdir()
    for name, body in letters.items():
        (folder / name).write_bytes(body)
    csv_path = tmp_path / "r.csv"
    header = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\n"
    rows = "".join(
        f"{who}@example.com,{who.title()},Offer,{who[0]}.pdf,Eng,R,2027,1\n"
        for who in ("anna", "bob", "carl")
    )
    csv_path.write_text(header + rows, encoding="utf-8")
    workdir = str(tmp_path / "w")
    args = ["--workdir", workdir, "--batch-size", "1", "--concurrency", "1"]
    first = CliRunner().invoke(
        cli, ["run", str(csv_path), *args, "--faults", "quota-after=1", "--json"]
    )
    assert _recipients(tmp_path / "w" / "outbox") == {"anna@example.com": 1}
    return folder, csv_path, workdir, json.loads(first.stdout)["execution"]


def _report_rows(workdir: str) -> dict[str, dict[str, str]]:
    """The rows of the workdir's latest report, by address."""
    reports = Path(workdir) / "bucket" / "reports"
    report = max(reports.glob("*/*/report.csv"), key=lambda path: path.stat().st_mtime_ns)
    with report.open(encoding="utf-8-sig", newline="") as stream:
        return {row["email"]: row for row in csv.DictReader(stream)}


def _attached(outbox: Path, address: str) -> list[bytes]:
    """The attachments of the messages to ``address`` in the outbox."""
    found = []
    for path in (outbox / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["To"].addresses[0].addr_spec == address:
            found += [part.get_content() for part in message.iter_attachments()]
    return found


def test_an_attachment_replaced_before_a_redrive_is_not_sent(tmp_path):
    # GIVEN a run of three rows, one batch each, stopped by the quota after the first
    letters = {"a.pdf": b"%PDF-1.4 Anna's offer, 68,000\n", "b.pdf": b"%PDF-1.4 Bob\n"}
    letters["c.pdf"] = b"%PDF-1.4 Carl\n"
    folder, _, workdir, execution = _three_letters_stopped_after_the_first(tmp_path, letters)

    # WHEN Bob's file is relinked to Anna's letter, then the execution is redriven
    (folder / "b.pdf").unlink()
    (folder / "b.pdf").symlink_to("a.pdf")
    CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])

    # THEN Bob is not sent Anna's letter: his row fails, saying to run the file again
    sent = _recipients(tmp_path / "w" / "outbox")
    assert "bob@example.com" not in sent and sent["carl@example.com"] == 1
    bob = _report_rows(workdir)["bob@example.com"]
    assert (bob["status"], bob["code"]) == ("failed", "AttachmentChanged")


def test_letters_swapped_for_ones_of_the_same_size_before_a_redrive_are_not_sent(tmp_path):
    # GIVEN a run stopped after Anna's row, Bob's and Carl's letters of one size
    letters = {"a.pdf": b"%PDF-1.4 Anna 68,000\n", "b.pdf": b"%PDF-1.4 Bob, 61,000\n"}
    letters["c.pdf"] = b"%PDF-1.4 Carl 59,000\n"
    folder, _, workdir, execution = _three_letters_stopped_after_the_first(tmp_path, letters)

    # WHEN their files are swapped (moved over each other), then the execution is redriven
    (folder / "b.pdf").rename(folder / "x.pdf")
    (folder / "c.pdf").rename(folder / "b.pdf")
    (folder / "x.pdf").rename(folder / "c.pdf")
    CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])

    # THEN neither is sent the other's letter: both rows fail, saying what changed and what
    # to do
    assert _recipients(tmp_path / "w" / "outbox") == {"anna@example.com": 1}
    rows = _report_rows(workdir)
    for who, name in (("bob", "b.pdf"), ("carl", "c.pdf")):
        row = rows[f"{who}@example.com"]
        assert (row["status"], row["code"]) == ("failed", "AttachmentChanged")
        assert row["reason"] == (
            f"attachment changed since the rows were validated: {name} is not the file"
            " validation listed (replaced, edited, or relinked to another file since?); run the"
            " file again: its attachments are checked again (rows already sent are skipped)"
        )


def test_a_letter_edited_in_place_to_its_size_goes_out_only_once_validated_again(tmp_path):
    # GIVEN a run stopped after Anna's row
    letters = {"a.pdf": b"%PDF-1.4 Anna 68,000\n", "b.pdf": b"%PDF-1.4 Bob, 61,000\n"}
    letters["c.pdf"] = b"%PDF-1.4 Carl 59,000\n"
    folder, csv_path, workdir, execution = _three_letters_stopped_after_the_first(tmp_path, letters)

    # WHEN the operator corrects Bob's letter in place, to the same size, and redrives
    with open(folder / "b.pdf", "r+b") as stream:
        stream.write(b"%PDF-1.4 Bob, 64,000\n")
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])

    # THEN Bob's row is not sent with a letter validation never saw; Carl's is
    outbox = tmp_path / "w" / "outbox"
    assert _recipients(outbox) == {"anna@example.com": 1, "carl@example.com": 1}
    assert _report_rows(workdir)["bob@example.com"]["code"] == "AttachmentChanged"
    # AND the summary counts the row apart, shows its reason to the end, and gives the one
    # remedy the reason gives: run the file again, not a retry of failed rows
    assert redriven.exit_code == 5, redriven.output
    output = _words(redriven.output)
    assert "of them with an attachment changed since validation │ 1" in output
    assert "its attachments are checked again (rows already sent are skipped)" in output
    assert "--retry-failed" not in output
    command = redriven.output.splitlines()[-1]
    assert command.startswith(f"mailmatrix run {csv_path} --workdir {workdir}")

    # WHEN the command it printed is run as it is
    again = CliRunner().invoke(cli, shlex.split(command)[1:])

    # THEN Bob gets the corrected letter, and nobody gets a second one
    assert again.exit_code == 0, again.output
    assert _recipients(outbox) == {f"{who}@example.com": 1 for who in ("anna", "bob", "carl")}
    assert _attached(outbox, "bob@example.com") == [b"%PDF-1.4 Bob, 64,000\n"]


def test_a_manifest_written_before_attachment_tags_still_sends(tmp_path):
    # GIVEN a run stopped after Anna's row, whose manifest has no attachment tags (as the
    # version before them wrote it)
    letters = {"a.pdf": b"%PDF-1.4 Anna\n", "b.pdf": b"%PDF-1.4 Bob\n", "c.pdf": b"%PDF-Carl\n"}
    folder, _, workdir, execution = _three_letters_stopped_after_the_first(tmp_path, letters)
    (manifest,) = (Path(workdir) / "bucket" / "validated").glob("*/*/manifest.jsonl")
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert all(row.pop("attachment_tag") for row in rows)
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    # WHEN Carl's letter is replaced by a longer one, then the execution is redriven
    (folder / "c.pdf").write_bytes(b"%PDF-Carl, another\n")
    CliRunner().invoke(cli, ["redrive", execution, "--workdir", workdir])

    # THEN Bob's row is sent as before, and Carl's is still held back by its size
    assert _recipients(tmp_path / "w" / "outbox") == {
        "anna@example.com": 1,
        "bob@example.com": 1,
    }
    carl = _report_rows(workdir)["carl@example.com"]
    assert carl["code"] == "AttachmentChanged" and "c.pdf is 19 bytes, it was 10" in carl["reason"]


def test_a_retry_in_a_workdir_where_the_file_never_ran_is_refused(tmp_path):
    # GIVEN a workdir where the file never ran (the operator forgot --workdir)
    workdir = tmp_path / "elsewhere"
    for flag in ("--retry-failed", "--retry-unknown"):
        # WHEN a retry of its failed rows is asked THEN it is refused: it would send them all
        result = CliRunner().invoke(
            cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), flag]
        )
        assert result.exit_code == 2, result.output
        assert f"no earlier run of this file in the workdir {workdir}" in result.output
        assert flag in result.output
    # AND nothing is made there: no workdir left behind by a refused run
    assert not workdir.exists()


def test_a_file_that_attaches_nothing_runs_without_an_attachments_folder(
    tmp_path, one_set_templates, campaigns_without_attachments
):
    # GIVEN one-set templates (no manifest) and no attachments folder beside the CSVs
    templates = one_set_templates
    plain, named = campaigns_without_attachments
    args = ["--templates", str(templates), "--sender", "hr@example.com", "--json"]

    # WHEN a CSV without an Attachment_File column runs THEN every row is sent
    result = CliRunner().invoke(cli, ["run", str(plain), "--workdir", str(tmp_path / "w1"), *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["sent"] == 2

    # WHEN a CSV whose rows name files runs THEN the missing folder is the one clear error,
    # before anything runs
    result = CliRunner().invoke(cli, ["run", str(named), "--workdir", str(tmp_path / "w2"), *args])
    assert result.exit_code == 3
    assert (
        f"no attachments folder at {tmp_path / 'attachments'}, and the file has an "
        "Attachment_File column" in result.output
    )
    assert not (tmp_path / "w2" / "executions").exists()


def test_a_copied_workdir_does_not_redrive_through_the_original(tmp_path):
    # GIVEN a failed execution (the daily quota ran out after 5 emails) and a copy of its workdir
    workdir = tmp_path / "work"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    failed = json.loads(CliRunner().invoke(cli, [*args, "--faults", "quota-after=5"]).stdout)
    assert failed["status"] == "FAILED"
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)

    # WHEN the copy redrives it
    redriven = CliRunner().invoke(
        cli, ["redrive", failed["execution"], "--workdir", str(copy)], env=WIDE
    )

    # THEN it is refused, naming the workdir it ran in, and nothing more went out anywhere
    assert redriven.exit_code == 2
    assert f"redrive it with --workdir {workdir.resolve()}" in redriven.output
    for root in (workdir, copy):
        assert len(list((root / "outbox" / "new").iterdir())) == 5


def test_a_local_run_keeps_its_files_on_the_way_in_its_workdir(tmp_path, monkeypatch):
    # GIVEN the paths the handlers remove once their manifest and report are stored (a killed
    # run leaves them where they were: they hold addresses and names)
    from mailmatrix import jobs

    removed: list[str] = []
    unlink = jobs.os.unlink

    def recorded(path, *args, **kwargs):
        if str(path).rpartition("/")[2].startswith("mailmatrix-"):
            removed.append(path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(jobs.os, "unlink", recorded)

    # WHEN a campaign runs
    workdir = tmp_path / "work"
    record = run_campaign(EXAMPLE / "recipients.csv", workdir=workdir)

    # THEN the manifest and the report were written in the workdir's own folder, private
    assert record["status"] == "SUCCEEDED"
    names = sorted(Path(path).name.split("-")[1] for path in removed)
    assert names == ["manifest", "report"]
    assert {Path(path).parent for path in removed} == {(workdir / "tmp").resolve()}
    assert (workdir / "tmp").stat().st_mode & 0o777 == 0o700


def _open_to_others(root: Path) -> list[str]:
    """What below ``root`` is not open to its owner only: a folder not 0700, a file not 0600."""
    found = []
    for path in root.rglob("*"):
        mode = path.stat().st_mode & 0o777
        if mode != (0o700 if path.is_dir() else 0o600):
            found.append(f"{mode:o} {path.relative_to(root)}")
    return found


@pytest.fixture
def open_umask():
    """The process's umask 0 (files made 0666, folders 0777 unless the program says)."""
    import os

    umask = os.umask(0)
    yield
    os.umask(umask)


def test_a_workdir_the_run_makes_is_open_to_its_owner_only(tmp_path, open_umask):
    # GIVEN a workdir that does not exist yet, and one its owner made open to others, under a
    # umask that closes nothing
    made, existing = tmp_path / "new" / "work", tmp_path / "shared"
    existing.mkdir()
    existing.chmod(0o755)

    # WHEN the campaign runs into each
    for workdir in (made, existing):
        assert run_campaign(EXAMPLE / "recipients.csv", workdir=workdir)["status"] == "SUCCEEDED"

    # THEN the one it made (outbox, reports, ledger: names and addresses) is private
    assert made.stat().st_mode & 0o777 == 0o700
    # AND the other is left as its owner made it
    assert existing.stat().st_mode & 0o777 == 0o755
    # AND in both, every folder and file the run made is open to its owner only
    assert _open_to_others(made) == []
    assert _open_to_others(existing) == []


def test_a_preview_and_a_rejects_report_are_open_to_their_owner_only(tmp_path, open_umask):
    # GIVEN a umask that closes nothing
    csv = str(EXAMPLE / "recipients.csv")
    out, rejects = tmp_path / "previews", tmp_path / "rejects.csv"
    # WHEN a row is previewed (a person's letter) and the file validated with its rejects
    preview = CliRunner().invoke(cli, ["preview", csv, "--row", "2", "--out", str(out)])
    validate = CliRunner().invoke(cli, ["validate", csv, "--rejects", str(rejects)])
    # THEN what they wrote is open to its owner only, as in a workdir
    assert preview.exit_code == 0, preview.output
    assert validate.exit_code == 4, validate.output
    assert rejects.stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700
    assert _open_to_others(out) == []
    assert sorted(path.name for path in out.iterdir()) == ["2.eml", "2.html"]


def test_a_command_that_looks_makes_no_workdir_and_runs_make_every_file_private(
    tmp_path, open_umask, state_dir
):
    # GIVEN no default workdir yet, under a umask that closes nothing
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "MAILMATRIX_WORKDIR": ""}
    workdir = tmp_path / "data" / "mailmatrix"

    # WHEN the executions are listed, and an execution shown, first
    listed = CliRunner().invoke(cli, ["executions"], env=env)
    shown = CliRunner().invoke(cli, ["show", "0123abcd"], env=env)

    # THEN each says there is no workdir, and makes none
    assert listed.exit_code == 0
    assert f"No workdir at {workdir}: nothing has run there" in _words(listed.output)
    assert shown.exit_code == 2
    assert "No workdir at" in shown.output
    assert not (tmp_path / "data").exists()

    # WHEN the campaign runs, then each command that looks or redrives does
    ran = CliRunner().invoke(cli, ["run", str(EXAMPLE / "recipients.csv")], env=env)
    assert ran.exit_code == 0, ran.output
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    for args in (["executions"], ["show", name], ["redrive", name]):
        CliRunner().invoke(cli, args, env=env)

    # THEN the workdir, and all in it (each row's email and name), is open to its owner only
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert workdir.stat().st_mode & 0o777 == 0o700
    assert list(workdir.glob("executions/*/mapruns/*/children.jsonl"))
    assert _open_to_others(workdir) == []
    # AND runs to the outbox (`make demo`'s) keep no record of workdirs: no state folder
    assert not state_dir.exists()


def test_executions_in_an_empty_workdir_point_at_a_workdir_here(tmp_path, monkeypatch):
    # GIVEN `make demo`'s workdir ./demo here, and no default workdir
    monkeypatch.chdir(tmp_path)
    run_campaign(EXAMPLE / "recipients.csv", workdir=Path("demo"))
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "MAILMATRIX_WORKDIR": ""}

    # WHEN the executions are listed without --workdir
    listed = CliRunner().invoke(cli, ["executions"], env=env)

    # THEN it says there are none there, and where they are
    said = _words(listed.output)
    assert "nothing has run there" in said
    assert "The folder ./demo here holds executions: give --workdir demo." in said

    # AND elsewhere it names the option
    monkeypatch.chdir(tmp_path / "demo")
    said = " ".join(CliRunner().invoke(cli, ["executions"], env=env).output.split())
    assert "A run given --workdir DIR keeps its executions there: give the same" in said


def test_executions_in_an_empty_workdir_list_the_workdirs_with_runs_most_recent_first(
    tmp_path, monkeypatch, state_dir
):
    # GIVEN a trial and a real run two levels down, and a workdir elsewhere that the record
    # of known workdirs names (one run through a mail server), run in this order: the trial,
    # elsewhere, the real one
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    order = [Path("my-campaign/trial"), elsewhere, Path("my-campaign/real")]
    for when, workdir in enumerate(order):
        run_campaign(EXAMPLE / "recipients.csv", workdir=workdir)
        for record in workdir.glob("executions/*/execution.json"):
            os.utime(record, (1_700_000_000 + when, 1_700_000_000 + when))
    state_dir.mkdir(parents=True)
    known = {"workdirs": {str(elsewhere): {"c-1": ["smtp://127.0.0.1:2525"]}}, "sent": {}}
    (state_dir / "known-workdirs.json").write_text(json.dumps(known))

    # WHEN the executions are listed without --workdir (the default workdir has none)
    listed = CliRunner().invoke(cli, ["executions"])

    # THEN it names each workdir that holds runs, the latest first, and the option to give
    assert listed.exit_code == 0
    assert (
        f"The folders ./my-campaign/real, {elsewhere}, ./my-campaign/trial hold executions, the"
        " one run most recently first: give one as --workdir (e.g. --workdir"
        " my-campaign/real)."
    ) in _words(listed.output)


def _copied_letter_campaign(tmp_path: Path, extra: str = "") -> tuple[Path, list[str], str]:
    """The example campaign where row 3 names row 2's letter (a copied cell), then ``extra``
    lines; return the file, its first three lines and that letter."""
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    letter = next(csv.reader([lines[1]]))[3]
    cells = next(csv.reader([lines[2]]))
    cells[3] = letter
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    campaign = tmp_path / "offers.csv"
    campaign.write_text("".join([lines[0], lines[1], out.getvalue(), *lines[3:]]) + extra)
    shutil.copytree(EXAMPLE / "attachments", tmp_path / "attachments")
    return campaign, [lines[0], lines[1], out.getvalue()], letter


def test_two_recipients_naming_one_letter_are_both_held_back(tmp_path):
    # GIVEN the example campaign where row 3 names row 2's letter (a copied cell)
    campaign, lines, letter = _copied_letter_campaign(tmp_path)

    # WHEN it runs
    workdir = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir), "--json"])

    # THEN neither row 2 nor row 3 was mailed; the other 16 valid rows were
    summary = json.loads(result.stdout)
    assert (summary["counts"]["sent"], summary["counts"]["rejected"]) == (16, 4)
    sent_to = _recipients(workdir / "outbox")
    for row in lines[1:]:
        assert next(csv.reader([row]))[0].lower() not in {a.lower() for a in sent_to}
    with open(summary["rejects"], encoding="utf-8-sig", newline="") as rejects:
        held = {int(r["row"]): r["reason"] for r in csv.DictReader(rejects)}
    assert f"{letter} is also the attachment of row 3" in held[2]
    assert f"{letter} is already the attachment of row 2" in held[3]
    # AND preview refuses row 2 with the reason
    preview = ["preview", str(campaign), "--row", "2", "--out", str(tmp_path)]
    shown = CliRunner().invoke(cli, preview)
    assert shown.exit_code == 4
    assert "is also the attachment of row 3" in shown.output


def test_names_linked_to_another_recipient_s_letter_are_not_mailed(tmp_path):
    # GIVEN the example campaign whose attachments folder makes José's letter a symlink to
    # Amelia's, Olga's a hard link to Chen's, and Fatima's a symlink to a file outside it
    campaign = tmp_path / "offers.csv"
    shutil.copy(EXAMPLE / "recipients.csv", campaign)
    folder = tmp_path / "attachments"
    shutil.copytree(EXAMPLE / "attachments", folder)
    (folder / "jose-garcia.pdf").unlink()
    (folder / "jose-garcia.pdf").symlink_to("amelia-hart.pdf")
    (folder / "olga-ivanova.pdf").unlink()
    (folder / "olga-ivanova.pdf").hardlink_to(folder / "chen-jing.pdf")
    (tmp_path / "elsewhere.pdf").write_bytes(b"%PDF-1.4 not in the folder")
    (folder / "fatima-zahra.pdf").unlink()
    (folder / "fatima-zahra.pdf").symlink_to(tmp_path / "elsewhere.pdf")

    # WHEN it runs
    workdir = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir), "--json"])

    # THEN the rows of the two linked letters and the link out of the folder are not mailed;
    # the 13 other valid rows are, each with its own letter
    summary = json.loads(result.stdout)
    assert (summary["counts"]["sent"], summary["counts"]["rejected"]) == (13, 7), result.output
    held = {"amelia.hart", "jose.garcia", "chen.jing", "olga.ivanova", "fatima.zahra"}
    sent_to = _recipients(workdir / "outbox")
    assert not {address.split("@")[0] for address in sent_to} & held
    assert len(sent_to) == 13 and set(sent_to.values()) == {1}
    for path in (workdir / "outbox" / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        [letter] = message.iter_attachments()
        own = message["To"].addresses[0].username.replace(".", "-") + ".pdf"
        assert letter.get_content() == (EXAMPLE / "attachments" / own).read_bytes()
    # AND the report says which name is the same file as which
    with open(summary["rejects"], encoding="utf-8-sig", newline="") as rejects:
        reasons = {int(r["row"]): r["reason"] for r in csv.DictReader(rejects)}
    assert reasons[3].startswith(
        "jose-garcia.pdf is the same file as amelia-hart.pdf (a link in the attachments folder)"
        ", already the attachment of row 2, another recipient"
    )
    assert reasons[7].startswith("olga-ivanova.pdf is the same file as chen-jing.pdf (a link")
    assert reasons[9] == "attachment not found: fatima-zahra.pdf"


def test_a_default_attachment_that_is_a_copy_of_one_persons_letter_sends_nothing(tmp_path):
    # GIVEN the example campaign, a set "welcome" whose default_attachment welcome.pdf is a
    # copy of Amelia's letter (row 2's), and two rows picking it with no file of their own
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    shutil.copytree(templates / "offer", templates / "welcome")
    manifest = templates / "manifest.yaml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace(
            "  rejection:\n",
            "  welcome:\n    when: [Welcome]\n    attachment: optional\n"
            "    default_attachment: welcome.pdf\n  rejection:\n",
        ),
        encoding="utf-8",
    )
    folder = tmp_path / "attachments"
    shutil.copytree(EXAMPLE / "attachments", folder)
    shutil.copy(folder / "amelia-hart.pdf", folder / "welcome.pdf")
    campaign = tmp_path / "offers.csv"
    text = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8")
    text += "new.one@example.com,New One,Welcome,,Tester,QA,2027-02-01,1\n"
    text += "new.two@example.com,New Two,Welcome,,Tester,QA,2027-02-01,1\n"
    campaign.write_text(text, encoding="utf-8")

    # WHEN it is validated, and run
    args = [str(campaign), "--templates", str(templates)]
    checked = CliRunner().invoke(cli, ["validate", *args])
    workdir = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", *args, "--workdir", str(workdir)])

    # THEN both refuse the file, naming the set, the file, Amelia's row and her file; nothing
    # is sent
    expected = (
        "template set 'welcome' attaches its default_attachment welcome.pdf to every row of the "
        "set whose Attachment_File is empty, and row 2 names amelia-hart.pdf, a file with the "
        "same contents, in Attachment_File as its recipient's own letter"
    )
    assert checked.exit_code == 3 and expected in _words(checked.output)
    assert result.exit_code == 3 and expected in _words(result.output)
    assert (
        "Nothing was sent: the templates cannot be used with this file (TemplateError)"
        in _words(result.output)
    )
    assert _recipients(workdir / "outbox") == {}


def _run_once(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The example campaign, with its attachments, copied and run once, to edit and run again;
    return the file, the attachments folder and the workdir."""
    campaign = tmp_path / "offers.csv"
    shutil.copy(EXAMPLE / "recipients.csv", campaign)
    folder = tmp_path / "attachments"
    shutil.copytree(EXAMPLE / "attachments", folder)
    workdir = tmp_path / "work"
    first = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir)])
    assert first.exit_code == 0, first.output
    return campaign, folder, workdir


def test_a_copy_of_a_letter_sent_by_an_earlier_run_names_the_new_row_as_the_suspect(tmp_path):
    # GIVEN the example campaign run once: Amelia (row 2) got her letter
    campaign, folder, workdir = _run_once(tmp_path)
    assert _recipients(workdir / "outbox")["amelia.hart@example.com"] == 1

    # WHEN a row for a new person is added whose file is a copy of Amelia's letter, and the
    # file runs again
    shutil.copy(folder / "amelia-hart.pdf", folder / "new-person.pdf")
    with campaign.open("a", encoding="utf-8") as out:
        out.write("new.person@example.com,New Person,Offer,new-person.pdf,QA,QA,2027-02-01,1\n")
    row = len(campaign.read_text(encoding="utf-8").splitlines())
    again = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir)])

    # THEN nothing more is mailed, and the output says Amelia's row went out already and the
    # new row names a copy of her letter: nothing says hers is not sent, or to send it again
    assert _recipients(workdir / "outbox")["amelia.hart@example.com"] == 1
    assert "new.person@example.com" not in _recipients(workdir / "outbox")
    said = _words(again.output)
    assert (
        "row 2 rejected [Attachment_File]: amelia-hart.pdf went to this row's recipient in an "
        f"earlier run of this file, and new-person.pdf, the attachment of row {row}, another "
        f"recipient, has the same contents: row {row} names a copy of this letter, so it is "
        "held back; this row is not sent again and needs nothing"
    ) in said
    assert (
        f"row {row} rejected [Attachment_File]: new-person.pdf has the same contents as "
        "amelia-hart.pdf, the attachment of row 2, which an earlier run of this file sent to "
        "its recipient: this row names a copy of that person's letter, so it is not sent"
    ) in said
    assert "neither is sent" not in said


def test_a_row_held_for_a_letter_an_earlier_run_sent_names_the_added_row_as_the_suspect(
    tmp_path,
):
    # GIVEN the example campaign run once: Amelia (row 2) and José (row 3) got their letters
    campaign, _, workdir = _run_once(tmp_path)
    sent = _recipients(workdir / "outbox")
    assert sent["amelia.hart@example.com"] == sent["jose.garcia@example.org"] == 1

    # WHEN rows are added naming Amelia's file for a new person, and José's address with
    # another name, and the file runs again
    with campaign.open("a", encoding="utf-8") as out:
        out.write("new.person@example.com,New Person,Offer,amelia-hart.pdf,QA,QA,2027-02-01,1\n")
        out.write("jose.garcia@example.org,José G,Offer,jose-garcia.pdf,QA,QA,2027-02-01,1\n")
    row = len(campaign.read_text(encoding="utf-8").splitlines()) - 1
    again = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir)])

    # THEN nothing more is mailed, and the output says Amelia's and José's rows went out
    # already and need nothing, and the added rows are the ones held: nothing says the first
    # rows are not sent, or to send them again
    assert _recipients(workdir / "outbox") == sent
    said = _words(again.output)
    columns = "Name, Position, Department, Start_Date, Salary"
    assert (
        "row 2 rejected [Attachment_File]: amelia-hart.pdf went to this row's recipient in an "
        f"earlier run of this file, and row {row}, another recipient, names it too: each row "
        f"attaches its recipient's own file, so row {row} is held back; this row is not sent "
        "again and needs nothing"
    ) in said
    assert (
        "row 3 rejected [Email]: this row's letter went to its address in an earlier run of "
        f"this file, and row {row + 1} has the same address with other values in {columns}: "
        f"one address gets one letter, so row {row + 1} is held back; this row is not sent "
        "again and needs nothing"
    ) in said
    assert (
        f"row {row} rejected [Attachment_File]: amelia-hart.pdf is already the attachment of "
        "row 2, another recipient, which an earlier run of this file sent to its recipient: "
        "each row attaches its recipient's own file, so this row is not sent"
    ) in said
    assert (
        f"row {row + 1} rejected [Email]: row 3 has the same address with other values in "
        f"{columns}, and an earlier run of this file sent row 3's letter to it: one address "
        "gets one letter, so this row is not sent"
    ) in said
    assert "neither is sent" not in said


def test_a_copy_of_one_persons_letter_under_anothers_name_is_sent_to_neither(tmp_path):
    # GIVEN the example campaign where Amelia's letter was copied over José's (row 3's) file
    campaign = tmp_path / "offers.csv"
    shutil.copy(EXAMPLE / "recipients.csv", campaign)
    folder = tmp_path / "attachments"
    shutil.copytree(EXAMPLE / "attachments", folder)
    shutil.copy(folder / "amelia-hart.pdf", folder / "jose-garcia.pdf")

    # WHEN it runs
    workdir = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir)])

    # THEN neither Amelia nor José was mailed; the 16 other valid rows were, and the reason
    # is printed, naming the other row and both files
    assert result.exit_code == 0, result.output
    sent_to = _recipients(workdir / "outbox")
    assert len(sent_to) == 16
    assert not {address.split("@")[0] for address in sent_to} & {"amelia.hart", "jose.garcia"}
    said = _words(result.output)
    assert (
        "row 3 rejected [Attachment_File]: jose-garcia.pdf has the same contents as "
        "amelia-hart.pdf, the attachment of row 2, another recipient: the two files are "
        "identical copies"
    ) in said
    # AND the rejects report carries it for both rows
    [rejects_path] = (workdir / "bucket" / "reports").glob("*/*/rejects.csv")
    with open(rejects_path, encoding="utf-8-sig", newline="") as rejects:
        held = {int(r["row"]): r["reason"] for r in csv.DictReader(rejects)}
    assert held[2].startswith("amelia-hart.pdf has the same contents as jose-garcia.pdf, the")
    assert held[3].startswith("jose-garcia.pdf has the same contents as amelia-hart.pdf, the")
    # AND `validate` without a workdir refuses both rows too
    checked = CliRunner().invoke(cli, ["validate", str(campaign), "--json"])
    assert checked.exit_code == 4
    refused = {r["row"]: r["reason"] for r in json.loads(checked.output)["rejected"]}
    assert "has the same contents as" in refused[2] and "has the same contents as" in refused[3]


def test_withdrawn_rows_are_reported_in_row_order_among_more_than_1000_rejects(tmp_path):
    # GIVEN the campaign where row 3 names row 2's letter, then 1,100 rows naming missing
    # files (rows 22 to 1121), Lee's row with a letter of his own (1122), and Kim's naming it
    missing = "".join(
        f"x{i}@example.com,X {i},Rejection,missing-{i}.pdf,QA,QA,,\n" for i in range(1100)
    )
    late = "".join(
        f"{name}@example.com,{name},Rejection,lee.pdf,QA,QA,,\n" for name in ("lee", "kim")
    )
    campaign, _, letter = _copied_letter_campaign(tmp_path, missing + late)
    shutil.copy(tmp_path / "attachments" / letter, tmp_path / "attachments" / "lee.pdf")

    # WHEN it runs
    workdir = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir)])

    # THEN the rejects report lists every row not sent once, in row order, the two withdrawn
    # rows (2 and 1122) in their place with their addresses
    assert result.exit_code == 0, result.output
    [rejects_path] = (workdir / "bucket" / "reports").glob("*/*/rejects.csv")
    with open(rejects_path, encoding="utf-8-sig", newline="") as rejects:
        lines = list(csv.DictReader(rejects))
    rows = [int(line["row"]) for line in lines]
    assert rows == [2, 3, 16, 21, *range(22, 1124)]
    by_row = {int(line["row"]): line for line in lines}
    assert (by_row[2]["email"], by_row[1122]["email"]) == ("a***@example.com", "l***@example.com")
    assert by_row[1122]["reason"].startswith("lee.pdf is also the attachment of row 1123")
    assert {line["outcome"] for line in lines} == {"rejected"}
    # AND validation.json lists the first 1,000 by row order (row 2 among them, as in the
    # CSV) and counts all 1,106, the withdrawn rows included
    validation = json.loads((rejects_path.parent / "validation.json").read_text("utf-8"))
    assert validation["rejected"] == [
        {key: line[key] if key != "row" else int(line["row"]) for key in line if key != "outcome"}
        for line in lines[:1000]
    ]
    assert (validation["valid"], validation["truncated"]) == (16, {"rejected": 1106})
    # AND the run's summary says the same: 16 sent, 1,106 rejected, row 2's reason first
    assert len(_recipients(workdir / "outbox")) == 16
    assert re.search(r"Rejected by validation\s*│\s*1106\s", result.output)
    listed = result.output[result.output.index("Rows not sent, and why (1106):") :]
    assert listed.splitlines()[1].startswith(f"  row 2 rejected [Attachment_File]: {letter} is")
    # AND it lists the first 20 in row order, and says how many more the file holds
    assert re.findall(r"^  row (\d+) rejected", listed, flags=re.M) == [str(r) for r in rows[:20]]
    assert "\n  ... and 1086 more in " in listed
    # AND preview refuses the late withdrawn row with its reason
    preview = ["preview", str(campaign), "--row", "1122", "--out", str(tmp_path)]
    shown = CliRunner().invoke(cli, preview)
    assert shown.exit_code == 4
    assert "lee.pdf is also the attachment of row 1123" in shown.output


def _trial_letters(tmp_path: Path, first: str) -> tuple[Path, list[str]]:
    """The trial's file: row 2 Sofia's letter sent to ``first``, row 3 Liam's to liam@, with a
    folder of templates without a manifest (each row names its letter); return the file and
    the options that run it."""
    templates = tmp_path / "tpl"
    templates.mkdir(exist_ok=True)
    (templates / "subject.txt").write_text("Hi {{ Name }}")
    (templates / "body.txt").write_text("Dear {{ Name }},\nyour letter is attached.\n")
    attachments = tmp_path / "attachments"
    attachments.mkdir(exist_ok=True)
    for name in ("sofia.pdf", "liam.pdf"):
        (attachments / name).write_bytes(b"%PDF-1.4 " + name.encode())
    letters = tmp_path / "letters.csv"
    letters.write_text(
        "Email,Name,Attachment_File\n"
        f"{first},Sofia Nguyen,sofia.pdf\nliam@example.com,Liam Garcia,liam.pdf\n"
    )
    options = ["--templates", str(templates), "--workdir", str(tmp_path / "wd")]
    return letters, [*options, "--sender", "HR <hr@example.com>"]


def test_two_rows_of_one_address_with_other_values_mail_no_one(tmp_path):
    # GIVEN the trial's file: Sofia's row with Liam's address typed in, then Liam's own row
    letters, options = _trial_letters(tmp_path, "liam@example.com")
    workdir = tmp_path / "wd"

    # WHEN it is validated, then run
    validated = CliRunner().invoke(cli, ["validate", str(letters), *options[:2]])
    result = CliRunner().invoke(cli, ["run", str(letters), *options])

    # THEN validate does not call it good, and nothing goes to liam@ (he used to get Sofia's
    # letter and PDF): both rows are held, each naming the other row and what differs
    assert validated.exit_code == 3 and "All good" not in validated.output
    assert result.exit_code == 3, result.output
    assert _recipients(workdir / "outbox") == {}
    [rejects_path] = (workdir / "bucket" / "reports").glob("*/*/rejects.csv")
    with open(rejects_path, encoding="utf-8-sig", newline="") as rejects:
        held = [(r["row"], r["column"], r["reason"], r["email"]) for r in csv.DictReader(rejects)]
    differ = "has the same address with other values in Name, Attachment_File: one address"
    assert [(row, column, email) for row, column, _, email in held] == [
        ("2", "Email", "l***@example.com"),
        ("3", "Email", "l***@example.com"),
    ]
    assert held[0][2].startswith(f"row 3 {differ}") and held[1][2].startswith(f"row 2 {differ}")
    assert "Sofia" not in rejects_path.read_text("utf-8-sig")
    validation = json.loads((rejects_path.parent / "validation.json").read_text("utf-8"))
    assert (validation["valid"], validation["duplicates"]) == (0, [])
    assert [item["row"] for item in validation["rejected"]] == [2, 3]
    # AND preview refuses the first row with its reason
    preview = ["preview", str(letters), *options[:2], "--row", "2", "--out", str(tmp_path)]
    shown = CliRunner().invoke(cli, preview)
    assert shown.exit_code == 4
    assert f"row 2: rejected: Email: row 3 {differ}" in shown.output

    # WHEN row 2's address is corrected and the file runs again
    letters, options = _trial_letters(tmp_path, "sofia@example.com")
    again = CliRunner().invoke(cli, ["run", str(letters), *options])

    # THEN each gets their own letter: no earlier send stands for Liam's row
    assert again.exit_code == 0, again.output
    assert _recipients(workdir / "outbox") == {"sofia@example.com": 1, "liam@example.com": 1}
    for path in (workdir / "outbox" / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        [attachment] = message.iter_attachments()
        local = message["To"].addresses[0].addr_spec.partition("@")[0]
        assert attachment.get_filename() == f"{local}.pdf"


def test_exact_copies_of_a_row_are_sent_once(tmp_path):
    # GIVEN the example campaign with row 2 copied twice, its address in capitals once
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    address = lines[1].split(",")[0]
    campaign = tmp_path / "offers.csv"
    campaign.write_text("".join([*lines, lines[1], lines[1].replace(address, address.upper())]))
    shutil.copytree(EXAMPLE / "attachments", tmp_path / "attachments")

    # WHEN it runs
    workdir = tmp_path / "work"
    result = CliRunner().invoke(cli, ["run", str(campaign), "--workdir", str(workdir), "--json"])

    # THEN row 2's recipient gets one letter, and the copies are counted as duplicates
    summary = json.loads(result.stdout)
    assert (summary["counts"]["sent"], summary["counts"]["duplicates"]) == (18, 2)
    assert _recipients(workdir / "outbox")[address] == 1


def test_printed_commands_keep_a_workdir_with_spaces_in_one_piece(tmp_path):
    # GIVEN a workdir whose name has a space, and a run that fails (the quota runs out)
    workdir = tmp_path / "hr work"
    code, output = _run(
        str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--faults", "quota-after=5"
    )
    assert code == 1

    # THEN the printed show and run commands (a drill's quota: the run without the drill, not
    # a redrive), pasted into a shell, name that workdir
    text = output.replace("\n", " ")
    for verb in ("show", "run"):
        command = text[text.index(f"mailmatrix {verb} ") :]
        words = shlex.split(command.split(")")[0])
        assert words[words.index("--workdir") + 1] == str(workdir)


@pytest.mark.parametrize(
    ("variable", "value", "in_command", "refused_for"),
    [
        (
            "MAILMATRIX_SENDER",
            "Globex HR <hr@globex.example>",
            " --sender 'Globex HR <hr@globex.example>'",
            "used --sender 'Globex HR <hr@globex.example>'",
        ),
        (
            "MAILMATRIX_UNSUBSCRIBE",
            "mailto:unsubscribe@example.com",
            "MAILMATRIX_UNSUBSCRIBE=mailto:unsubscribe@example.com mailmatrix run ",
            "used MAILMATRIX_UNSUBSCRIBE=mailto:unsubscribe@example.com",
        ),
    ],
)
def test_a_letter_setting_from_the_shell_is_kept_for_the_campaign(
    tmp_path, variable, value, in_command, refused_for
):
    workdir = str(tmp_path / "work")
    csv = str(EXAMPLE / "recipients.csv")
    # GIVEN a run that took a setting of its letters from the shell, where some rows failed
    first = CliRunner().invoke(
        cli,
        ["run", csv, "--workdir", workdir, "--json", "--faults", "permanent=0.5,seed=3"],
        env={variable: value},
    )
    assert first.exit_code == 5
    # THEN its retry command carries it
    assert in_command in json.loads(first.stdout)["retry_command"]
    # AND a retry from a shell without it is refused, naming it
    again = CliRunner().invoke(
        cli, ["run", csv, "--workdir", workdir, "--retry-failed"], env={variable: ""}
    )
    assert again.exit_code == 2
    assert refused_for in again.output.replace("\n", "")


def test_a_rerun_after_failures_says_how_many_of_the_valid_rows_were_sent_before(tmp_path):
    workdir = str(tmp_path / "work")
    csv = str(EXAMPLE / "recipients.csv")
    # GIVEN a run where some rows failed for good
    first = CliRunner().invoke(
        cli, ["run", csv, "--workdir", workdir, "--json", "--faults", "permanent=0.5,seed=3"]
    )
    sent = json.loads(first.stdout)["counts"]["sent"]
    assert 0 < sent < 18
    # WHEN the file runs again as it is THEN it does not call every valid row sent
    code, output = _run(csv, "--workdir", workdir)
    text = _words(output)
    assert code == 5  # the failed rows are still failed
    assert f"Nothing new sent: {sent} of the 18 valid rows were already sent" in text
    assert "all" not in text.split("Nothing new sent:")[1][:5]


@pytest.mark.parametrize("make", ["copy", "link"])
def test_a_copy_or_link_of_a_letter_sent_earlier_is_refused_for_another_recipient(tmp_path, make):
    # GIVEN Alice's offer sent with her own file, then her row replaced by Bob's, naming a
    # copy of her file, or a link to it, under his name
    folder = tmp_path / "attachments"
    folder.mkdir()
    (folder / "alice.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(30_000))
    header = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary"
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(f"{header}\nalice@example.com,Alice,Offer,alice.pdf,Dev,Eng,2027-01-01,1\n")
    workdir = tmp_path / "wd"
    args = ["--workdir", str(workdir), "--attachments", str(folder)]
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0
    if make == "copy":
        shutil.copyfile(folder / "alice.pdf", folder / "bob.pdf")
    else:
        (folder / "bob.pdf").symlink_to("alice.pdf")
    csv_path.write_text(f"{header}\nbob@example.com,Bob,Offer,bob.pdf,Dev,Eng,2027-01-01,1\n")
    before = _outbox_recipients(workdir)

    # WHEN it is validated against the workdir THEN Bob's row is refused, the reason naming
    # Alice's letter by its row and her masked address
    checked = CliRunner().invoke(cli, ["validate", str(csv_path), *args, "--json"])
    rejected = json.loads(checked.stdout)["rejected"]
    assert [(r["row"], r["column"], r["email"]) for r in rejected] == [
        (2, "Attachment_File", "b***@example.com")
    ]
    what = "has the same contents as" if make == "copy" else "is the same file as"
    assert rejected[0]["reason"].startswith(f"bob.pdf {what} alice.pdf")
    assert (
        "sent to another recipient (a***@example.com) as their own letter (row 2"
        in (rejected[0]["reason"])
    )

    # AND run sends nothing: Bob does not receive Alice's letter
    again = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])
    assert again.exit_code != 0
    assert _outbox_recipients(workdir) == before == {"alice@example.com": 1}


def test_text_that_looks_like_markup_is_shown_as_it_is_and_never_breaks_a_command(tmp_path):
    # GIVEN a workdir and a file name holding brackets as rich markup reads them, and a
    # column named like a closing tag
    workdir = tmp_path / "w[" / "y]"  # the path .../w[/y]
    csv_path = tmp_path / "offers[final].csv"
    text = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    rows = [f"{text[0]},[/x]", *(f"{line},z" for line in text[1:])]
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    common = ["--workdir", str(workdir), "--attachments", str(EXAMPLE / "attachments")]
    wide = {"COLUMNS": "300"}

    # WHEN the file is validated and run, and its execution listed and shown
    validated = CliRunner().invoke(cli, ["validate", str(csv_path), *common], env=wide)
    ran = CliRunner().invoke(cli, ["run", str(csv_path), *common], env=wide)
    listed = CliRunner().invoke(cli, ["executions", "--workdir", str(workdir)], env=wide)
    (name,) = [path.name for path in (workdir / "executions").iterdir()]
    shown = CliRunner().invoke(cli, ["show", name, "--workdir", str(workdir)], env=wide)

    # THEN each works and shows the names as they are
    assert (validated.exit_code, ran.exit_code) == (4, 0), validated.output + ran.output
    assert "Columns: " in validated.output and ", [/x]" in validated.output
    assert f"Outbox:  {workdir}/outbox" in ran.output
    assert (listed.exit_code, shown.exit_code) == (0, 0), listed.output + shown.output
    assert "offers[final].csv" in listed.output
    assert f"report: {workdir}/bucket/" in shown.output


def test_a_run_whose_files_are_not_found_names_the_folder_it_searched_once(tmp_path):
    # GIVEN the example campaign and an empty folder given as its attachments
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--workdir", str(tmp_path / "work"), "--attachments", str(empty)]

    # WHEN it runs
    result = CliRunner().invoke(cli, ["run", str(EXAMPLE / "recipients.csv"), *args])

    # THEN nothing is sent, every row with a file is rejected as not found, and the summary
    # names the folder searched once, as empty
    said = _words(result.output)
    assert result.exit_code == 3, said
    assert "attachment not found: amelia-hart.pdf" in said
    assert said.count(str(empty)) == 1
    assert f"Files named in Attachment_File were looked for in {empty}, which holds no file" in said


def test_a_workdir_below_a_file_is_bad_usage_and_nothing_is_made(tmp_path):
    # GIVEN a --workdir whose parent is a regular file
    (tmp_path / "f").write_text("not a folder")

    # WHEN the example runs there
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path / "f" / "w"))

    # THEN it is bad usage naming the file (not "[Errno 17] File exists", exit 1), nothing made
    said = _words(output)
    assert code == 2, said
    assert f"{tmp_path / 'f'} is a file, not a folder" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("command", ["run", "redrive"])
def test_a_stop_outside_an_execution_exits_as_stopped_and_says_where_to_look(
    tmp_path, monkeypatch, command
):
    from mailmatrix import local
    from mailmatrix.cli import run_cmd

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # as a signal before the engine ran the execution, or after

    # GIVEN a workdir with an earlier run that failed (a redrive needs its settings, and an
    # execution to resume)
    workdir = tmp_path / "work"
    first = CliRunner().invoke(
        cli,
        [
            *("run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"),
            *("--faults", "quota-after=3"),
        ],
    )
    assert json.loads(first.stdout)["status"] == "FAILED"
    execution = json.loads(first.stdout)["execution"]
    monkeypatch.setattr(run_cmd, "run_campaign", stopped)
    monkeypatch.setattr(local, "redrive", stopped)

    # WHEN the command is stopped outside the engine
    args = {"run": ["run", str(EXAMPLE / "recipients.csv")], "redrive": ["redrive", execution]}
    result = CliRunner().invoke(cli, [*args[command], "--workdir", str(workdir)])

    # THEN it exits 130 (stopped), not click's "Aborted!" (1), and says how to see what ran
    assert result.exit_code == 130, result.output
    said = _words(result.output)
    assert "Aborted!" not in said
    assert f"mailmatrix {command}: stopped (Ctrl-C, SIGTERM or SIGHUP) outside" in said
    assert f"`mailmatrix executions --workdir {workdir}` shows whether one began" in said


def test_a_printed_command_runs_when_pasted_though_mailmatrix_is_not_on_the_path(tmp_path):
    # GIVEN the console script called by its path, from a folder outside it, with a PATH
    # that does not lead to it (the README's `.venv/bin/mailmatrix`, no venv activated)
    script = Path(sys.executable).parent / "mailmatrix"
    assert script.is_file()
    env = {**os.environ, "PATH": os.pathsep.join(["/usr/bin", "/bin"])}
    csv = str(EXAMPLE / "recipients.csv")
    first = subprocess.run(
        [str(script), "run", csv, "--workdir", "w", "--faults", "permanent=0.3,seed=3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 5, first.stdout + first.stderr

    # WHEN the retry command its summary printed is pasted into a shell
    retry = next(line for line in first.stdout.splitlines() if "--retry-failed" in line)
    assert retry.startswith(shlex.quote(str(script)) + " run "), retry
    again = subprocess.run(
        retry, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )

    # THEN it runs (it was `mailmatrix ...`: command not found) and sends the failed rows
    assert again.returncode == 0, again.stdout + again.stderr
    details = next(line for line in first.stdout.splitlines() if "(details: " in line)
    assert f"(details: {shlex.quote(str(script))} show " in details


def test_a_template_that_fails_on_every_row_of_its_set_stops_the_run_before_any_letter(
    tmp_path,
):
    # GIVEN the example campaign with an offer template whose expression fails on any row
    # (the name is a text: it has no attribute), which the columns check cannot see
    templates = _own_letters(tmp_path)
    body = templates / "offer" / "body.txt"
    body.write_text(body.read_text().replace("{{ Name }}", "{{ Name.given }}", 1))
    assert "Name.given" in body.read_text()
    workdir = tmp_path / "w"
    csv = str(EXAMPLE / "recipients.csv")
    own = ["--templates", str(templates), "--sender", "Globex HR <hr@globex.example>"]

    # WHEN it runs
    code, output = _run(csv, "--workdir", str(workdir), *own)

    # THEN nothing went out, not even the rejections (which render): the file is refused as
    # a file with a broken template is, naming the template, its error and the rows tried
    assert code == 3, output
    assert (
        "Nothing was sent: the templates cannot be used with this file (TemplateError)"
        in _words(output)
    )
    said = _words(output)
    assert "offer/body.txt: render: 'str object' has no attribute 'given'" in said
    assert "(every row of set offer tried failed: rows 2, 3, 5)" in said
    outbox = workdir / "outbox" / "new"
    assert not outbox.exists() or not list(outbox.iterdir())

    # AND once the template is fixed, the run sends every letter (none was recorded before)
    body.write_text(body.read_text().replace("{{ Name.given }}", "{{ Name }}"))
    code, output = _run(csv, "--workdir", str(workdir), *own)
    assert code == 0, output
    assert len(list((workdir / "outbox" / "new").iterdir())) == 18


def _with_reader_gone(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The console script run with ``args`` in ``folder``, its standard output a pipe nobody
    reads any more (`| head -1` done)."""
    script = Path(sys.executable).parent / "mailmatrix"
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            [str(script), *args],
            cwd=folder,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(writer)


def test_a_run_whose_output_reader_went_away_still_runs_and_exits_with_its_own_status(tmp_path):
    # GIVEN a run whose standard output is a pipe nobody reads any more (`| head -1` done)
    # WHEN the example campaign runs
    done = _with_reader_gone(tmp_path, "run", str(EXAMPLE / "recipients.csv"), "--workdir", "w")

    # THEN every letter went out and it exits 0, as the run did (rich's closed-pipe exit 1
    # read as a failed execution, and came before the run when the first line failed)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(list((tmp_path / "w" / "outbox" / "new").iterdir())) == 18


@pytest.mark.parametrize(
    ("command", "status"),
    [
        (["validate", str(EXAMPLE / "recipients.csv"), "--workdir", "w"], 4),  # 2 rejected
        (["validate", str(EXAMPLE / "recipients.csv"), "--workdir", "w", "--json"], 4),
        (["preview", str(EXAMPLE / "recipients.csv"), "--row", "2", "--out", "p"], 0),
    ],
    ids=["validate", "validate-json", "preview"],
)
def test_a_check_whose_output_reader_went_away_exits_with_its_own_status(tmp_path, command, status):
    # GIVEN a command whose standard output is a pipe nobody reads any more (`| head -1`)
    # WHEN it runs
    done = _with_reader_gone(tmp_path, *command)

    # THEN its status is its own (it was 1, which reads as a failure, for a good file)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_name_in_another_unicode_form_is_the_same_campaign(tmp_path):
    # GIVEN a campaign run under a name typed on Linux (NFC), and the same file saved on a
    # Mac, whose file systems often hand names over decomposed (NFD): they look alike
    composed, decomposed = (unicodedata.normalize(form, "résumé.csv") for form in ("NFC", "NFD"))
    assert composed != decomposed
    for folder, name in (("linux", composed), ("mac", decomposed)):
        (tmp_path / folder).mkdir()
        shutil.copy(EXAMPLE / "recipients.csv", tmp_path / folder / name)
    common = ["--attachments", str(EXAMPLE / "attachments"), "--workdir", str(tmp_path / "w")]
    code, _ = _run(str(tmp_path / "linux" / composed), *common)
    assert code == 0

    # WHEN the Mac's copy runs in the same workdir
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "mac" / decomposed), *common, "--json"])

    # THEN it is the same campaign: every letter is known as sent, none goes out again
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["counts"]
    assert (counts["sent"], counts["skipped"]) == (0, 18)
    assert len(list((tmp_path / "w" / "outbox" / "new").iterdir())) == 18


def test_no_letter_goes_to_another_rows_recipient_through_cc_or_bcc(tmp_path):
    # GIVEN the example's first three rows with Cc and Bcc columns: Amelia's row copies José,
    # whose own row comes next, and Zoë's row copies Amelia, whose row came before
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    header, amelia, jose, zoe = original.splitlines()[:4]
    lines = [
        f"{header},Cc,Bcc",
        f"{amelia},JOSE.GARCIA@example.org,",
        f"{jose},,",
        f"{zoe},,amelia.hart@example.com",
    ]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # WHEN the file runs
    result = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])

    # THEN José gets his own letter only, to him alone; Amelia's and Zoë's rows are rejected,
    # naming the row whose recipient their letter would have reached
    summary = json.loads(result.stdout)
    assert (result.exit_code, summary["counts"]["sent"]) == (0, 1), result.output
    (path,) = (workdir / "outbox" / "new").iterdir()
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["X-MailMatrix-Envelope-To"] == "jose.garcia@example.org"
    assert message["Cc"] is None
    with open(summary["rejects"], encoding="utf-8-sig", newline="") as stream:
        rejected = [(row["row"], row["column"], row["reason"]) for row in csv.DictReader(stream)]
    assert [(row, column) for row, column, _ in rejected] == [("2", "Cc"), ("4", "Bcc")]
    assert rejected[0][2].startswith("Cc names the recipient of row 3, who would get this row's")
    assert rejected[1][2].startswith("Bcc names the recipient of row 2, who would get this row's")


def test_no_letter_goes_through_cc_to_a_recipient_an_earlier_run_mailed(tmp_path):
    # GIVEN a run of the file that mailed Amelia and José
    csv_path, original, workdir, args = _editable_copy(tmp_path)
    header, amelia, jose, zoe = original.splitlines()[:4]
    csv_path.write_text(f"{header},Cc\n{amelia},\n{jose},\n", encoding="utf-8")
    first = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])
    assert json.loads(first.stdout)["counts"]["sent"] == 2, first.output

    # WHEN José's row is taken out, Zoë's row copying him comes in, and the file runs again
    text = f"{header},Cc\n{amelia},\n{zoe},JOSE.GARCIA@example.org\n"
    csv_path.write_text(text, encoding="utf-8")
    checked = CliRunner().invoke(cli, ["validate", str(csv_path), *args, "--json"])
    result = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])

    # THEN validate and the run reject Zoë's row for its Cc; nothing more is sent
    found = json.loads(checked.stdout)
    assert [(item["row"], item["column"]) for item in found["rejected"]] == [(3, "Cc")]
    summary = json.loads(result.stdout)
    assert summary["counts"]["sent"] == 0, result.output
    assert _outbox_recipients(workdir) == {
        "amelia.hart@example.com": 1,
        "jose.garcia@example.org": 1,
    }
    with open(summary["rejects"], encoding="utf-8-sig", newline="") as stream:
        rejected = [(row["row"], row["column"], row["reason"]) for row in csv.DictReader(stream)]
    assert [(row, column) for row, column, _ in rejected] == [("3", "Cc")]
    assert rejected[0][2].startswith("Cc names a recipient an earlier run of this file mailed")


def _five_sent(tmp_path: Path, name: str = "five.csv") -> tuple[Path, list[str]]:
    """A file of the example's first five rows, sent: the workdir, and the arguments of its
    run."""
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()[:6]
    csv_path = tmp_path / name
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    workdir = tmp_path / "w"
    args = ["run", str(csv_path), "--workdir", str(workdir)]
    args += ["--attachments", str(EXAMPLE / "attachments")]
    first = CliRunner().invoke(cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["counts"]["sent"] == 5
    return workdir, args


def _empty_ledger(workdir: Path) -> None:
    """Truncate the workdir's ledger to nothing, its -wal and -shm files removed."""
    (workdir / "ledger.sqlite3").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (workdir / f"ledger.sqlite3{suffix}").unlink(missing_ok=True)


def _delete_ledger(workdir: Path) -> None:
    """Delete the workdir's ledger and the files SQLite keeps beside it."""
    for path in workdir.glob("ledger.sqlite3*"):
        path.unlink()


@pytest.mark.parametrize(
    ("lose", "how"),
    [(_empty_ledger, "is empty"), (_delete_ledger, "is missing")],
    ids=["truncated", "deleted"],
)
def test_a_run_is_refused_when_the_ledger_lost_the_emails_sent_before(tmp_path, lose, how):
    # GIVEN a file of five rows sent, whose workdir's ledger is then emptied or deleted
    workdir, args = _five_sent(tmp_path)
    sent = _recipients(workdir / "outbox")
    executions = len(list((workdir / "executions").iterdir()))
    lose(workdir)

    # WHEN the file runs again
    code, output = _run(*args[1:])

    # THEN it is refused (exit 2) before any execution, saying what was lost and the ways on
    assert code == 2, output
    said = _words(output)
    assert f"five.csv: the workdir {workdir} records runs that sent letters of this file" in said
    assert f"its ledger (ledger.sqlite3) {how}: it has lost the record of the emails" in said
    assert "this run would mail them again; nothing was sent." in said
    assert "Put back the ledger file those runs wrote" in said
    assert "Only to mail everyone in five.csv again on purpose, run it in a new --workdir" in said
    assert "Traceback" not in output
    # AND nobody was mailed twice, and no execution was started
    assert _recipients(workdir / "outbox") == sent
    assert set(sent.values()) == {1}
    assert len(list((workdir / "executions").iterdir())) == executions
    # AND validate with the workdir says run would refuse it, as run does (exit 2)
    checked = CliRunner().invoke(
        cli,
        ["validate", args[1], "--workdir", str(workdir), "--json", *args[4:]],
    )
    assert checked.exit_code == 2, checked.output
    earlier = json.loads(checked.stdout)["earlier_runs"]
    assert earlier["error"] == "LedgerLost"
    assert "would_send" not in earlier
    # AND a run in a new workdir, the way on for mailing them again on purpose, sends them
    again = CliRunner().invoke(cli, [*args[:3], str(tmp_path / "new"), *args[4:], "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"]["sent"] == 5


def test_an_emptied_ledger_stays_so_through_what_only_looks_and_the_run_is_still_refused(
    tmp_path,
):
    # GIVEN a file sent in a workdir recorded as an earlier version did (its campaign not
    # marked as in the ledger), whose ledger is then emptied
    workdir, args = _five_sent(tmp_path)
    deliveries = json.loads((workdir / "deliveries.json").read_text(encoding="utf-8"))
    for way in deliveries.values():
        way.pop("in_ledger", None)
    (workdir / "deliveries.json").write_text(json.dumps(deliveries), encoding="utf-8")
    _empty_ledger(workdir)
    sent = _recipients(workdir / "outbox")

    # WHEN executions, show and validate look at the workdir
    listed = CliRunner().invoke(cli, ["executions", "--workdir", str(workdir)])
    assert listed.exit_code == 0, listed.output
    (execution,) = (path.name for path in (workdir / "executions").iterdir())
    shown = CliRunner().invoke(cli, ["show", execution, "--workdir", str(workdir)])
    assert shown.exit_code == 0, shown.output
    CliRunner().invoke(cli, ["validate", args[1], "--workdir", str(workdir), *args[4:]])

    # THEN the ledger is left empty, and the run is refused, mailing nobody twice
    assert (workdir / "ledger.sqlite3").stat().st_size == 0
    code, output = _run(*args[1:])
    assert code == 2, output
    assert "its ledger (ledger.sqlite3) is empty" in _words(output)
    assert _recipients(workdir / "outbox") == sent


def _ledger_copy(workdir: Path, path: Path) -> Path:
    """A backup of the workdir's ledger at ``path``, as SQLite makes one of a ledger in use."""
    with (
        closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db,
        closing(sqlite3.connect(path)) as copy,
    ):
        db.backup(copy)
    return path


def test_a_ledger_put_back_from_an_older_backup_refuses_the_files_run_since(tmp_path):
    # GIVEN a file sent, a copy of the ledger taken then, and another file sent after
    workdir, first = _five_sent(tmp_path)
    backup = _ledger_copy(workdir, tmp_path / "backup.sqlite3")
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    later = tmp_path / "later.csv"
    later.write_text("\n".join([lines[0], *lines[6:9]]) + "\n", encoding="utf-8")
    second = [first[0], str(later), *first[2:]]
    assert CliRunner().invoke(cli, second).exit_code == 0
    kept = _ledger_copy(workdir, tmp_path / "kept.sqlite3")
    sent = _recipients(workdir / "outbox")

    # WHEN the ledger is put back from the older copy
    _delete_ledger(workdir)
    shutil.copyfile(backup, workdir / "ledger.sqlite3")

    # THEN the later file is refused: the ledger holds none of its letters
    code, output = _run(*second[1:])
    assert code == 2, output
    assert "its ledger (ledger.sqlite3) holds no entry of this file's letters" in _words(output)
    # AND so is the first one, which the copy knows: the ledger is not the one runs wrote
    code, output = _run(*first[1:])
    assert code == 2, output
    said = _words(output)
    assert "holds no entry of the letters of 1 file(s) run here" in said
    assert "so runs here would mail them again; nothing was sent." in said
    assert _recipients(workdir / "outbox") == sent
    # AND with the ledger the runs wrote put back, both run again and send nothing twice
    _delete_ledger(workdir)
    shutil.copyfile(kept, workdir / "ledger.sqlite3")
    for args in (first, second):
        again = CliRunner().invoke(cli, [*args, "--json"])
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["counts"]["sent"] == 0
    assert _recipients(workdir / "outbox") == sent


def _sent_in_ledger(workdir: Path) -> int:
    """How many letters of the workdir's one campaign its record says the ledger held as sent."""
    (way,) = json.loads((workdir / "deliveries.json").read_text(encoding="utf-8")).values()
    return way["sent_in_ledger"]


def test_a_run_is_refused_when_letters_sent_were_deleted_from_the_ledger(tmp_path):
    # GIVEN a file of five rows sent, whose last two letters are then deleted from the ledger
    workdir, args = _five_sent(tmp_path)
    sent = _recipients(workdir / "outbox")
    executions = len(list((workdir / "executions").iterdir()))
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db, db:
        db.execute(
            "DELETE FROM sends WHERE row IN (SELECT row FROM sends ORDER BY row DESC LIMIT 2)"
        )

    # WHEN the file runs again
    code, output = _run(*args[1:])

    # THEN it is refused (exit 2) before any execution, saying how many letters the ledger lost
    assert code == 2, output
    said = _words(output)
    assert f"five.csv: the workdir {workdir} records runs that sent letters of this file" in said
    assert (
        "its ledger (ledger.sqlite3) holds 3 of this file's letters as sent, fewer than the 5"
        " it held: it has lost the record of the emails sent earlier" in said
    )
    assert "this run would mail them again; nothing was sent." in said
    # AND nobody was mailed twice, and no execution was started
    assert _recipients(workdir / "outbox") == sent
    assert len(list((workdir / "executions").iterdir())) == executions
    # AND validate with the workdir says run would refuse it, as run does (exit 2)
    checked = CliRunner().invoke(
        cli, ["validate", args[1], "--workdir", str(workdir), "--json", *args[4:]]
    )
    assert checked.exit_code == 2, checked.output
    assert json.loads(checked.stdout)["earlier_runs"]["error"] == "LedgerLost"


def test_a_ledger_put_back_from_a_copy_older_than_a_run_that_sent_more_is_refused(tmp_path):
    # GIVEN a file of three rows sent, and a copy of the ledger taken then
    workdir, args = _five_sent(tmp_path)
    csv_path = Path(args[1])
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    csv_path.write_text("\n".join(lines[:9]) + "\n", encoding="utf-8")
    assert _sent_in_ledger(workdir) == 5
    backup = _ledger_copy(workdir, tmp_path / "backup.sqlite3")

    # WHEN the file, three rows longer, runs again and sends those only
    more = CliRunner().invoke(cli, [*args, "--json"])

    # THEN the record of the letters sent rises with them
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["counts"]["sent"] == 3
    assert _sent_in_ledger(workdir) == 8
    sent = _recipients(workdir / "outbox")
    assert len(sent) == 8 and set(sent.values()) == {1}

    # AND once the ledger is put back from the older copy, which knows the file, the run is
    # refused (exit 2), mailing nobody twice
    _delete_ledger(workdir)
    shutil.copyfile(backup, workdir / "ledger.sqlite3")
    code, output = _run(*args[1:])
    assert code == 2, output
    assert "holds 5 of this file's letters as sent, fewer than the 8 it held" in _words(output)
    assert _recipients(workdir / "outbox") == sent


def test_a_redrive_is_refused_when_the_ledger_lost_the_emails_its_run_sent(tmp_path):
    # GIVEN a run stopped by the daily quota before its 5 rows were sent (after 3, or 4 when
    # both workers' batches counted the same third: the drill's count is per process), whose
    # ledger is deleted
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()[:6]
    csv_path = tmp_path / "five.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    workdir = tmp_path / "w"
    args = ["run", str(csv_path), "--workdir", str(workdir), "--json"]
    args += ["--attachments", str(EXAMPLE / "attachments"), "--batch-size", "2"]
    failed = json.loads(CliRunner().invoke(cli, [*args, "--faults", "quota-after=3"]).stdout)
    assert failed["status"] == "FAILED"
    sent = _recipients(workdir / "outbox")
    assert 0 < sum(sent.values()) < 5
    _delete_ledger(workdir)

    # WHEN its execution is redriven
    redriven = CliRunner().invoke(cli, ["redrive", failed["execution"], "--workdir", str(workdir)])

    # THEN the redrive is refused (exit 2), and nobody is mailed twice
    assert redriven.exit_code == 2, redriven.output
    said = _words(redriven.output)
    assert f"execution {failed['execution']}: the workdir {workdir} records runs" in said
    assert "its ledger (ledger.sqlite3) is missing" in said
    assert "its redrive would mail them again; nothing was sent." in said
    assert "and redrive it again: rows already sent are skipped" in said
    assert _recipients(workdir / "outbox") == sent


def test_a_new_workdir_runs_a_file_and_a_rerun_there_skips_what_went_out(tmp_path):
    # GIVEN a workdir that is not there yet
    workdir = tmp_path / "w"
    assert not workdir.exists()

    # WHEN a file of five rows runs in it (_five_sent: it sends each row), and again
    made, args = _five_sent(tmp_path)
    again = CliRunner().invoke(cli, [*args, "--json"])

    # THEN the rerun sends none, mailing nobody twice
    assert made == workdir
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)["counts"]
    assert (counts["sent"], counts["skipped"]) == (0, 5)
    recipients = _recipients(workdir / "outbox")
    assert len(recipients) == 5 and set(recipients.values()) == {1}
    # AND the workdir records the file as in its ledger, which holds its five letters as sent
    (way,) = json.loads((workdir / "deliveries.json").read_text(encoding="utf-8")).values()
    assert (way["in_ledger"], way["sent_in_ledger"]) == (True, 5)


def test_a_redrive_of_a_run_that_succeeded_points_to_the_retry_of_its_failed_rows(tmp_path):
    # GIVEN a run that succeeded with rows failed at sending
    workdir = tmp_path / "w"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    first = CliRunner().invoke(cli, [*args, "--faults", "permanent=0.3,seed=3"])
    summary = json.loads(first.stdout)
    assert (summary["status"], first.exit_code) == ("SUCCEEDED", 5)

    # WHEN it is redriven
    redriven = CliRunner().invoke(cli, ["redrive", summary["execution"], "--workdir", str(workdir)])

    # THEN it is refused with what sends those rows, not the engine's "cannot be redriven"
    assert redriven.exit_code == 2
    said = _words(redriven.output)
    assert f"execution {summary['execution']} SUCCEEDED: a redrive resumes an execution" in said
    command = said.split("once the cause is fixed, by: ", 1)[1]
    assert "engine:" not in said
    # AND that command, run as printed, sends them
    words = shlex.split(command)
    assert words[:2] == ["mailmatrix", "run"] and "--retry-failed" in words
    retried = CliRunner().invoke(cli, [*words[1:], "--json"])
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["counts"]["sent"] == summary["counts"]["failed"]


def test_a_redrive_of_a_run_that_succeeded_with_no_failed_row_says_nothing_failed(tmp_path):
    # GIVEN a run that succeeded, no row failed at sending
    workdir = tmp_path / "w"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    first = CliRunner().invoke(cli, args)
    summary = json.loads(first.stdout)
    assert (summary["status"], summary["counts"]["failed"]) == ("SUCCEEDED", 0)

    # WHEN it is redriven
    redriven = CliRunner().invoke(cli, ["redrive", summary["execution"], "--workdir", str(workdir)])

    # THEN it is refused saying that nothing failed, with no retry of failed rows to run
    assert redriven.exit_code == 2
    said = _words(redriven.output)
    assert (
        f"execution {summary['execution']} SUCCEEDED and none of its rows failed at sending:"
        " there is nothing to redrive or to send again"
    ) in said
    assert "--retry-failed" not in said


def test_a_rerun_given_the_manifests_own_sender_is_the_same_way(tmp_path):
    # GIVEN the example sent with the manifest's sender (no --sender)
    workdir = tmp_path / "w"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    manifest = yaml.safe_load((REPO / "templates" / "manifest.yaml").read_text())

    # WHEN it runs again given that same sender (its address in other case)
    name, address = email.utils.parseaddr(manifest["sender"])
    same = email.utils.formataddr((name, address.upper()))
    again = CliRunner().invoke(cli, [*args, "--sender", same])

    # THEN it is not refused as another sender: the letters' From is the same, and every row
    # is skipped as sent
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)["counts"]
    assert (counts["sent"], counts["skipped"]) == (0, 18)


def test_show_and_redrive_without_the_runs_workdir_name_the_one_that_holds_it(
    tmp_path, monkeypatch
):
    # GIVEN a run in ./campaign/real (as the README's walk-through would have it)
    monkeypatch.chdir(tmp_path)
    workdir = Path("campaign") / "real"
    args = ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]
    execution = json.loads(CliRunner().invoke(cli, args).stdout)["execution"]

    # WHEN it is asked for by its id's start without that --workdir, or with another
    for command in (["show", execution[:8]], ["redrive", execution[:8], "--workdir", "other"]):
        result = CliRunner().invoke(cli, command)

        # THEN the refusal names the --workdir that holds it (it said only "no such execution")
        assert result.exit_code == 2, result.output
        assert "but in another: give --workdir campaign/real" in _words(result.output)


def test_a_setting_refused_by_validation_is_said_to_be_the_setting_to_fix(tmp_path, monkeypatch):
    # GIVEN a mail server URL naming a user, with no password anywhere
    monkeypatch.delenv("MAILMATRIX_SMTP_PASSWORD", raising=False)
    smtp = "smtp://hr@127.0.0.1:2525"

    # WHEN the file runs through it
    code, output = _run(str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path), "--smtp", smtp)

    # THEN nothing is sent, the variable to set is named, and the fix asked for is the
    # setting's (it said "Fix the file or the templates")
    said = _words(output)
    assert code == 3, said
    assert "names the user 'hr' but no password, and MAILMATRIX_SMTP_PASSWORD is not set" in said
    assert "Fix the setting and run again." in said
    assert "Fix the file or the templates" not in said
    # AND the URL is named as it was given, --smtp, not as the handlers' setting
    assert "--smtp: the URL names the user 'hr'" in said
    assert "MAILMATRIX_MAILER" not in said


def test_the_report_says_which_file_and_copies_went_to_whom(tmp_path):
    # GIVEN two rows of the demo, the first with two Cc and a Bcc
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    header, first, second = lines[:3]
    csv_path = tmp_path / "offers.csv"
    copies = "boss@example.com; hr@example.org,archive@example.net"
    csv_path.write_text(f"{header},Cc,Bcc\n{first},{copies}\n{second},,\n", encoding="utf-8")
    args = ["--workdir", str(tmp_path / "w"), "--attachments", str(EXAMPLE / "attachments")]

    # WHEN the file runs
    ran = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])

    # THEN its report names each row's attachment and the copies' recipients, in columns
    # after those it had
    assert ran.exit_code == 0, ran.output
    with open(json.loads(ran.stdout)["report"], encoding="utf-8-sig", newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
    assert reader.fieldnames == REPORT_COLUMNS
    assert [(r["email"], r["attachment"], r["cc"], r["bcc"]) for r in rows] == [
        (
            "amelia.hart@example.com",
            "amelia-hart.pdf",
            "boss@example.com; hr@example.org",
            "archive@example.net",
        ),
        ("jose.garcia@example.org", "jose-garcia.pdf", "", ""),
    ]


def test_the_report_of_a_rerun_tells_skipped_rows_by_the_letter_sent_not_the_file_now(tmp_path):
    # GIVEN two rows of the demo sent, the first with a Cc and a Bcc
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    header, first, second = lines[:3]
    attachments = tmp_path / "attachments"
    shutil.copytree(EXAMPLE / "attachments", attachments)
    csv_path = tmp_path / "offers.csv"
    csv_path.write_text(
        f"{header},Cc,Bcc\n{first},boss@example.com,archive@example.net\n{second},,\n",
        encoding="utf-8",
    )
    args = ["--workdir", str(tmp_path / "w"), "--attachments", str(attachments), "--json"]
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0

    # WHEN the operator changes the first row's copies and its file, and runs it again
    renamed = first.replace("amelia-hart.pdf", "amelia-hart-2.pdf")
    assert renamed != first
    (attachments / "amelia-hart-2.pdf").write_bytes(
        (attachments / "amelia-hart.pdf").read_bytes() + b"\n% second edition\n"
    )
    csv_path.write_text(
        f"{header},Cc,Bcc\n{renamed},newcc@example.com,newbcc@example.net\n{second},,\n",
        encoding="utf-8",
    )
    ran = CliRunner().invoke(cli, ["run", str(csv_path), *args])

    # THEN the rows are skipped, and the report names the file the letters carried, as the
    # ledger kept it, and says the copies are not recorded: never the file's new values
    assert ran.exit_code == 0, ran.output
    with open(json.loads(ran.stdout)["report"], encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["status"], r["attachment"], r["cc"], r["bcc"]) for r in rows] == [
        ("skipped", "amelia-hart.pdf", "(not recorded)", "(not recorded)"),
        ("skipped", "jose-garcia.pdf", "(not recorded)", "(not recorded)"),
    ]


@pytest.mark.parametrize(
    ("copies", "cells", "cc", "bcc"),
    [("", "", "", ""), (",Cc", ",", "(not recorded)", "")],
    ids=["no-copy-columns", "cc-only"],
)
def test_the_report_of_a_rerun_leaves_the_copies_of_a_column_the_file_lacks_empty(
    tmp_path, copies, cells, cc, bcc
):
    # GIVEN two rows of the demo sent from a file without a Bcc column (the first: nor Cc)
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    csv_path = tmp_path / "offers.csv"
    csv_path.write_text(
        "".join(f"{line}{copies if i == 0 else cells}\n" for i, line in enumerate(lines[:3])),
        encoding="utf-8",
    )
    args = ["--workdir", str(tmp_path / "w"), "--attachments", str(EXAMPLE / "attachments")]
    assert CliRunner().invoke(cli, ["run", str(csv_path), *args]).exit_code == 0

    # WHEN it runs again
    ran = CliRunner().invoke(cli, ["run", str(csv_path), *args, "--json"])

    # THEN the rows are skipped, with no "(not recorded)" copies where the file has no column
    with open(json.loads(ran.stdout)["report"], encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["status"], r["cc"], r["bcc"]) for r in rows] == [("skipped", cc, bcc)] * 2


def test_a_column_that_looks_like_bcc_is_warned_of_before_the_run_sends(
    tmp_path, one_set_templates
):
    # GIVEN a file whose blind copies are in a column 'bcc list', which is not read as Bcc
    csv_path = tmp_path / "plain.csv"
    csv_path.write_text("Email,Name,bcc list\nann@example.com,Ann,audit@example.com\n")
    options = ["--templates", str(one_set_templates), "--sender", "HR <hr@example.com>"]
    workdir = tmp_path / "w"

    # WHEN it runs
    code, output = _run(str(csv_path), "--workdir", str(workdir), *options)

    # THEN before it runs, it warns that the column's addresses are not copied, naming the
    # column's names read; the letter goes to its recipient alone, as before
    said = _words(output)
    assert code == 0, said
    warning = "Warning: column 'bcc list' looks like a Bcc column but is not read as one"
    assert said.index(warning) < said.index("Running ")
    assert "Bcc is read from the column named Bcc (or Blind Carbon Copy," in said
    (letter,) = (workdir / "outbox" / "new").iterdir()
    assert b"audit@example.com" not in letter.read_bytes()

    # AND --json gives the warning in its result
    again = tmp_path / "again.csv"
    again.write_bytes(csv_path.read_bytes())
    result = CliRunner().invoke(
        cli, ["run", str(again), "--workdir", str(workdir), *options, "--json"]
    )
    found = json.loads(result.stdout)
    assert found["warnings"][0].startswith(warning.removeprefix("Warning: "))
    # AND so does the validation report the run keeps (on AWS too, where no console shows it)
    report = json.loads((Path(found["rejects"]).parent / "validation.json").read_text("utf-8"))
    assert report["warnings"] == found["warnings"]


def test_validate_holds_messages_to_the_limit_run_uses(tmp_path, monkeypatch):
    # GIVEN a message size limit set for the runs, below the example's letters with their PDF
    monkeypatch.setenv("MAILMATRIX_MAX_MESSAGE_BYTES", "2000")
    workdir = tmp_path / "w"
    args = [str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]

    # WHEN the file is validated, then run
    checked = CliRunner().invoke(cli, ["validate", *args])
    ran = CliRunner().invoke(cli, ["run", *args])

    # THEN validate rejects the rows run rejects, for the same reason: it forecast the run
    found = json.loads(checked.stdout)
    reasons = {row["row"]: row["reason"] for row in found["rejected"]}
    assert len(reasons) > 2, reasons  # the example's own two, and the letters too large
    assert all("too large" in reasons[row] for row in reasons if row not in (16, 21))
    summary = json.loads(ran.stdout[ran.stdout.index("{") :])
    assert summary["counts"]["sent"] == 0
    assert summary["counts"]["rejected"] == len(reasons)


def test_a_limit_below_256_kib_still_lets_letters_that_fit_through(tmp_path, monkeypatch):
    # GIVEN a message size limit of 100 KiB: the example's letters (under 20 KiB each, with
    # their PDF) fit in it, though it is less than the 256 KiB an estimate keeps under SES's
    monkeypatch.setenv("MAILMATRIX_MAX_MESSAGE_BYTES", str(100 * 1024))
    workdir = tmp_path / "w"
    args = [str(EXAMPLE / "recipients.csv"), "--workdir", str(workdir), "--json"]

    # WHEN the file is validated, then run
    checked = CliRunner().invoke(cli, ["validate", *args])
    ran = CliRunner().invoke(cli, ["run", *args])

    # THEN neither finds a letter too large: both reject only the example's own two rows, and
    # the run sends every valid row
    found = json.loads(checked.stdout)
    assert [row["row"] for row in found["rejected"]] == [16, 21]
    summary = json.loads(ran.stdout[ran.stdout.index("{") :])
    assert (summary["counts"]["rejected"], summary["counts"]["sent"]) == (2, found["valid"])
    assert summary["counts"]["failed"] == 0
