"""A workdir that cannot be written, or whose record of its runs is damaged: `run` says which
file, why, what was sent and what to do, with the exit status of its kind."""

from __future__ import annotations

import collections
import email
import email.policy
import errno
import json
import re
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.local import REPO
from tests.engine.test_streaming_map import children_file_full_after

RECIPIENTS = str(REPO / "examples" / "offer-letters" / "recipients.csv")


def _invoke(*args: str) -> tuple[int, str]:
    """Run the CLI; its exit code and output, lines joined as rich wraps them at 80 columns."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, " ".join(result.output.split())


def _sent(workdir: Path) -> collections.Counter:
    """How many messages the outbox holds for each recipient."""
    return collections.Counter(
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["To"]
        for path in (workdir / "outbox" / "new").iterdir()
    )


@pytest.fixture
def sent_once(tmp_path: Path) -> Path:
    """A workdir where the example campaign was sent: 18 letters in its outbox."""
    workdir = tmp_path / "w"
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(workdir))
    assert code == 0, output
    assert sum(_sent(workdir).values()) == 18
    return workdir


def test_a_workdir_folder_that_takes_no_new_file_is_named_before_anything_runs(
    sent_once: Path, immutable
):
    # GIVEN the workdir's folder made immutable (chattr +i): no file can be made in it, whoever
    # asks; SQLite then cannot make the ledger's -wal file ("unable to open database file")
    immutable(sent_once)

    # WHEN the file runs again there
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(sent_once))

    # THEN it says it cannot write the workdir, naming the folder, why, and what to do
    assert code == 1, output
    assert (
        f"mailmatrix run: cannot write the workdir {sent_once}: no file can be made in that"
        " folder: not permitted: the file or its folder may be immutable, as `lsattr` shows"
        " (Operation not permitted)." in output
    )
    assert "so nothing was sent. Make the folder writable (chmod u+w; chattr -i" in output
    said = output.split("mailmatrix run:")[1]  # (the path of the CSV before it may hold anything)
    assert "ledger" not in said.split("Operation not permitted")[0]  # not a ledger error
    # AND nothing ran: no execution began
    assert len(list((sent_once / "executions").iterdir())) == 1


def test_a_ledger_file_that_cannot_be_written_is_named_and_nothing_is_sent(
    sent_once: Path, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN the ledger file made read-only: SQLite opens such a file read-only, and refuses its
    # first write ("attempt to write a readonly database")
    connect = sqlite3.connect
    ledger = sent_once / "ledger.sqlite3"

    def read_only(database, *args, **kwargs):
        if Path(database) == ledger:
            database, kwargs["uri"] = f"{ledger.absolute().as_uri()}?mode=ro", True
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)

    # WHEN the file runs again there
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(sent_once))

    # THEN it says the ledger cannot be written and what to do, not to redrive at once
    assert code == 1, output
    assert (
        f"mailmatrix run: cannot write the ledger {ledger} (attempt to write a readonly"
        " database): the file, or its -wal or -shm file beside it, is read-only" in output
    )
    assert "so nothing was sent. Make it writable (chmod u+w; chattr -i" in output
    assert "passing fault" not in output
    # AND nothing ran: no execution began
    assert len(list((sent_once / "executions").iterdir())) == 1


def test_a_damaged_record_of_the_runs_says_what_it_is_for_and_the_safe_ways_on(sent_once: Path):
    # GIVEN the workdir's deliveries.json damaged (a control character inside a string)
    deliveries = sent_once / "deliveries.json"
    deliveries.write_text('{"c-1": {"delivery": "out\tbox"}}', encoding="utf-8")

    # WHEN the file runs again there
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(sent_once))

    # THEN it is refused as a damaged workdir is (exit 2, not 3: the file is fine), saying
    # what the record is for, that nothing was sent, and the ways on
    assert code == 2, output
    assert f"mailmatrix run: {deliveries}: damaged, not readable (Invalid control" in output
    assert (
        "It records each file run in this workdir: how it was sent (the outbox or a mail"
        " server, its templates, attachments and sender) and how many of its letters the"
        " ledger held as sent" in output
    )
    assert "Nothing was sent. Put it back from a backup of the workdir" in output
    assert "the ledger alone cannot rebuild it" in output
    assert (
        "move it aside (keep it): runs go on, the ledger still skipping every email it holds"
        " as sent and refusing a file's run through a mail server after the outbox, or the"
        " other way round" in " ".join(output.split())
    )
    assert "Without a backup, move it aside (keep it)" in output
    # AND validate says the same, with run's exit code, not a traceback
    code, said = _invoke("validate", RECIPIENTS, "--workdir", str(sent_once))
    assert code == 2, said
    assert "`run` would refuse this file (DeliveriesDamaged)" in said

    # WHEN it is moved aside, as the message says, and the file runs again
    deliveries.rename(sent_once / "deliveries.json.damaged")
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(sent_once))

    # THEN the ledger still skips everyone mailed: nobody gets a second letter
    assert code == 0, output
    assert "Nothing new sent: all 18 valid rows were already sent by an earlier run" in output
    assert set(_sent(sent_once).values()) == {1}
    # AND the record is made anew from that run
    assert json.loads(deliveries.read_text(encoding="utf-8"))


def test_execution_records_that_cannot_be_written_stop_the_run_naming_the_file(tmp_path: Path):
    # GIVEN a Map Run's children file that takes no more after its first batch's record (a
    # file size limit: "File too large"), batches of 2 rows sent one at a time
    workdir = tmp_path / "w"
    options = ("--workdir", str(workdir), "--batch-size", "2", "--concurrency", "1")

    # WHEN the campaign runs
    with children_file_full_after(1, errno.EFBIG) as appends:
        code, output = _invoke("run", RECIPIENTS, *options)

    # THEN it stops after the batch whose record could not be written, starting no other
    assert code == 1, output
    assert sum(_sent(workdir).values()) == 4
    assert "7 batches were not started" in output
    # AND it names the file and the cause, and says what is in doubt and what to do
    assert "The run failed: the engine could not write the execution's records in the" in output
    assert f"cannot write {appends[-1]}: it is as large as the file system lets a file be" in output
    assert "(File too large)" in output
    assert "When to resume: once the file named above can be written again" in output
    assert "a row counted in doubt may have gone out" in output
    (execution,) = [path.name for path in (workdir / "executions").iterdir()]
    assert f"redrive {execution} --workdir {workdir}" in output

    # WHEN the limit is lifted and the execution redriven
    code, output = _invoke("redrive", execution, "--workdir", str(workdir))

    # THEN the rest is sent, and nobody gets a second letter
    assert code == 0, output
    assert sum(_sent(workdir).values()) == 18
    assert set(_sent(workdir).values()) == {1}


def _run_with_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    """`mailmatrix` with ``args``, in a process whose files may grow to ``limit`` bytes."""
    return subprocess.run(
        [sys.executable, "-c", "from mailmatrix.cli.main import main; main()", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=lambda: _at_the_file_size_limit(limit),
        check=False,
    )


def _at_the_file_size_limit(limit: int) -> None:
    """In the child process, before the command runs: files may grow to ``limit`` bytes."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_validation_file_that_meets_the_file_size_limit_is_named_with_the_cause(tmp_path):
    # GIVEN a file of 3,000 short rows, whose manifest of valid rows (about 600 KB) is larger
    # than the run's file size limit (150 KiB), where its copy (75 KB), the ledger and the
    # execution's records fit; templates that attach nothing
    csv_file = tmp_path / "many.csv"
    rows = "".join(f"p{row}@example.com,P{row}\n" for row in range(3000))
    csv_file.write_text(f"Email,Name\n{rows}", encoding="utf-8")
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "subject.txt").write_text("Hello {{ Name }}")
    (templates / "body.txt").write_text("Dear {{ Name }}")
    workdir = tmp_path / "w"

    # WHEN it runs in a process with that limit
    args = ["run", str(csv_file), "--templates", str(templates), "--workdir", str(workdir)]
    args += ["--sender", "HR <hr@example.com>"]
    ran = _run_with_file_size_limit(args, 150 * 1024)

    # THEN nothing was sent, and it names the file it could not write, what for, and why in
    # words (it said "OSError" and "[Errno 27] File too large"), and what to do first
    output = " ".join(ran.stdout.split())
    assert ran.returncode == 1, output + ran.stderr
    assert "Nothing was sent: a file of the run could not be written (FileNotWritten)" in output
    manifest = re.search(r"cannot write (\S+) \(the manifest of the file's valid rows", output)
    assert manifest, output
    assert Path(manifest.group(1)).parent == (workdir / "tmp").resolve()
    assert (
        "it reached the file size limit of this process, 150 KiB (ulimit -f) (File too large)"
        in output
    )
    assert "[Errno" not in output
    assert "first free space on its disk, or raise the file size limit (ulimit -f), then" in output
    # AND the manifest on its way is not left behind
    assert list((workdir / "tmp").iterdir()) == []


def test_an_outbox_that_cannot_be_written_is_advised_as_an_outbox(sent_once: Path, tmp_path):
    # GIVEN the workdir's outbox whose new/ folder was moved away and a file put in its place
    # (as root, no chmod keeps a folder from being written: this is how it fails for all),
    # and a new campaign (the demo's file under another name)
    outbox = sent_once / "outbox"
    (outbox / "new").rename(tmp_path / "sent-before")
    (outbox / "new").write_text("in the way")
    renamed = tmp_path / "second.csv"
    renamed.write_bytes(Path(RECIPIENTS).read_bytes())
    attachments = str(Path(RECIPIENTS).parent / "attachments")

    # WHEN it runs there
    code, output = _invoke(
        "run",
        str(renamed),
        "--workdir",
        str(sent_once),
        "--attachments",
        attachments,
        "--send-again-from",  # the same letters as the first file's: on purpose
        Path(RECIPIENTS).name,
    )

    # THEN it failed, naming the folder and what is wrong with it
    assert code == 1, output
    assert (
        f"cannot make the outbox's folder {outbox.resolve() / 'new'}: a file is in its place"
        " (File exists)" in output
    )
    # AND the advice is the outbox's: nothing lost, what to do, then redrive (it was the mail
    # account's: "sending resumed, the sender verified")
    assert f"When to resume: the outbox {outbox.resolve()} cannot be written" in output
    assert "Nothing was lost: a letter counts as sent only once its file is in new/" in output
    assert "or move aside the file in a folder's place; then redrive" in output
    assert "the sender verified" not in output
    (execution,) = re.findall(r"redrive (\S+) --workdir", output)

    # WHEN the file is moved aside, as the advice says, and the execution redriven
    (outbox / "new").unlink()
    code, output = _invoke("redrive", execution, "--workdir", str(sent_once))

    # THEN every valid row of the new campaign is sent, once
    assert code == 0, output
    assert sum(_sent(sent_once).values()) == 18
    assert set(_sent(sent_once).values()) == {1}


def _refused_at_the_ledger(ran: subprocess.CompletedProcess[str], workdir: Path, code: int) -> str:
    """What a command that met the file size limit (30 KiB) as it opened the ledger of
    ``workdir`` said after its remedy ("then ..."), once checked that it exited ``code``,
    naming the ledger, why, and that remedy."""
    said = " ".join(ran.stderr.split())
    assert ran.returncode == code, said + ran.stdout
    assert f"ledger {workdir.resolve() / 'ledger.sqlite3'}: cannot open" in said
    assert "it reached the file size limit of this process, 30 KiB (ulimit -f)" in said
    remedy = (
        "The ledger records each email sent, before and after it is sent: free space on its"
        " disk, or raise the file size limit (ulimit -f), then "
    )
    assert remedy in said, said
    return said.split(remedy, 1)[1]


def test_a_ledger_that_meets_the_file_size_limit_as_the_run_starts_says_what_to_do(tmp_path):
    # GIVEN the demo's file, run in a new workdir by a process whose files may grow to 30 KiB:
    # the ledger, made as the run starts, cannot be
    workdir = tmp_path / "w"

    # WHEN it runs
    args = ["run", RECIPIENTS, "--workdir", str(workdir)]
    ran = _run_with_file_size_limit(args, 30 * 1024)

    # THEN it ends naming the ledger and why, and then says what to do (it said only why)
    then = _refused_at_the_ledger(ran, workdir, 1)
    assert then == "run the same command again; the rows it holds as sent are skipped."
    # AND nothing was sent
    assert not list((workdir / "outbox" / "new").glob("*"))


def test_a_ledger_that_meets_the_file_size_limit_as_a_redrive_starts_says_what_to_do(tmp_path):
    # GIVEN an execution of the demo's file stopped after 5 letters (a drill's quota), whose
    # ledger (27 KiB) cannot be opened by a process whose files may grow to 30 KiB (SQLite's
    # -shm file beside it is 32 KiB)
    workdir = tmp_path / "w"
    code, output = _invoke(
        "run", RECIPIENTS, "--workdir", str(workdir), "--faults", "quota-after=5"
    )
    assert code == 1, output
    execution = next((workdir / "executions").iterdir()).name
    assert sum(_sent(workdir).values()) == 5

    # WHEN it is redriven by such a process
    ran = _run_with_file_size_limit(["redrive", execution, "--workdir", str(workdir)], 30 * 1024)

    # THEN it ends naming the ledger and why, then says what to do, as `run` does, ending with
    # the command that redrives it again (it said only why)
    then = _refused_at_the_ledger(ran, workdir, 2)
    assert ran.stderr.startswith("mailmatrix redrive: ledger ")
    assert then == (
        "redrive again (the rows it holds as sent are skipped): mailmatrix redrive"
        f" {execution} --workdir {workdir}"
    )
    # AND nothing more was sent
    assert sum(_sent(workdir).values()) == 5
