"""A person's file named as theirs by one campaign goes to no one else by another, whatever
became of the first letter, and the commands a run prints work as printed. Through a mail
server on loopback that refuses some recipients (550) and keeps others waiting."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from aiosmtpd.controller import Controller
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.local import REPO

LETTERS = REPO / "examples" / "offer-letters" / "attachments"
HEADER = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\n"
HOST = "127.0.0.1"


class _Server:
    """Takes every letter but to ``refused`` (550) and ``stalled`` (no answer to RCPT until
    the server stops); keeps who got one."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.stalled: set[str] = set()
        self.waiting = threading.Event()  # a stalled recipient is being kept waiting
        self.received: list[tuple[str, bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return f"550 5.1.1 <{address}>: user unknown"
        if address in self.stalled:
            self.waiting.set()
            await asyncio.sleep(3600)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            self.received.append((address, envelope.content))
        return "250 2.0.0 Ok: queued"


@contextlib.contextmanager
def _serving() -> Iterator[tuple[_Server, str]]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = int(probe.getsockname()[1])
    server = _Server()
    controller = Controller(server, hostname=HOST, port=port)
    controller.start()
    try:
        yield server, f"smtp://{HOST}:{port}"
    finally:
        controller.stop()


def _templates(folder: Path) -> Path:
    """The bundled templates, copied without `demo: true` (the letters taken as one's own)."""
    templates = folder / "templates"
    shutil.copytree(REPO / "templates", templates)
    manifest = templates / "manifest.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("\ndemo: true\n", "\n"))
    return templates


def _file(folder: Path, name: str, *rows: tuple[str, str, str]) -> Path:
    """A campaign's CSV in ``folder``: a row (email, name, attachment) per recipient."""
    path = folder / name
    lines = [f"{email},{person},Offer,{file},Dev,IT,2027-01-11,1\n" for email, person, file in rows]
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, " ".join(result.output.split())


def _json(*args: str) -> tuple[int, dict]:
    """The exit code and JSON result of a command run with --json."""
    result = CliRunner().invoke(cli, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def _killed_while_stalled(server: _Server, args: list[str]) -> None:
    """Run ``mailmatrix ARGS`` and kill it outright (SIGKILL) once the server keeps one of
    its letters waiting: that row's letter is in doubt."""
    run = subprocess.Popen(
        [sys.executable, "-c", "from mailmatrix.cli.main import main; main()", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not server.waiting.wait(0.05):
            assert run.poll() is None, "the run ended before the server kept a letter waiting"
            assert time.monotonic() < deadline, "the run sent nothing"
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=30)


def _sue_and_lea(folder: Path) -> tuple[Path, Path, Path, Path]:
    """a.csv, Sue's letter (sue.pdf), and c.csv, Lea's (lea.pdf, a byte copy of sue.pdf), with
    templates of one's own and a workdir."""
    (folder / "attachments").mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", folder / "attachments" / "sue.pdf")
    shutil.copy(LETTERS / "amelia-hart.pdf", folder / "attachments" / "lea.pdf")
    sue = _file(folder, "a.csv", ("slow@example.com", "Sue", "sue.pdf"))
    lea = _file(folder, "c.csv", ("lea@example.com", "Lea", "lea.pdf"))
    return sue, lea, _templates(folder), folder / "w"


def _lea_refused(lea: Path, options: list[str], state: str) -> None:
    """validate, then run, of c.csv reject Lea's row as naming Sue's letter, whose ``state``
    they say; neither promises that settling sends it."""
    code, said = _cli("validate", str(lea), *options[:4], "--json")
    (reject,) = json.loads(said)["rejected"]
    assert (code, reject["row"]) == (3, 2), said
    code, said = _cli("run", str(lea), *options)
    for reason in (reject["reason"], said):
        assert "lea.pdf has the same contents as sue.pdf, the own letter of another recipient" in (
            " ".join(reason.split())
        )
        assert f"row 2 of that run ({state}" in " ".join(reason.split())
        assert "sends this row" not in reason
    assert code == 3, said


def test_a_copy_of_a_letter_in_doubt_then_settled_not_sent_goes_to_no_one_else(tmp_path):
    # GIVEN a.csv's run killed outright as the server kept Sue's letter waiting: in doubt
    sue, lea, templates, workdir = _sue_and_lea(tmp_path)
    with _serving() as (server, url):
        options = ["--workdir", str(workdir), "--templates", str(templates), "--smtp", url]
        server.stalled.add("slow@example.com")
        _killed_while_stalled(server, ["run", str(sue), *options])
        server.stalled.clear()

        # WHEN c.csv names a copy of her file for Lea THEN validate and run refuse the row
        _lea_refused(lea, options, "in doubt there")

        # WHEN Sue's letter is settled as not sent (the server got nothing)
        code, said = _cli("settle", str(sue), "--not-sent", "2", "--workdir", str(workdir))
        assert code == 0, said

        # THEN Lea's row is refused all the same: the file is Sue's, sent or not
        _lea_refused(lea, options, "not sent there")

        # AND Sue's own letter goes, and Lea got nothing
        code, said = _cli("run", str(sue), *options)
        assert code == 0, said
        assert [address for address, _ in server.received] == ["slow@example.com"]


def test_a_copy_of_a_letter_the_server_refused_goes_to_no_one_else(tmp_path):
    # GIVEN a.csv's run whose server refused Sue's letter for good (550)
    sue, lea, templates, workdir = _sue_and_lea(tmp_path)
    with _serving() as (server, url):
        options = ["--workdir", str(workdir), "--templates", str(templates), "--smtp", url]
        server.refused.add("slow@example.com")
        code, said = _cli("run", str(sue), *options)
        assert code == 5, said
        server.refused.clear()

        # WHEN c.csv names a copy of her file for Lea THEN validate and run refuse the row
        _lea_refused(lea, options, "not sent there")

        # AND Sue's letter, once her address is taken, goes with --retry-failed
        code, said = _cli("run", str(sue), *options, "--retry-failed")
        assert code == 0, said
        assert [address for address, _ in server.received] == ["slow@example.com"]


def test_the_printed_retry_of_a_real_run_of_a_trial_s_copy_sends_the_failed_letter(tmp_path):
    # GIVEN o.csv run into the outbox (a trial), then its copy o-real.csv through the server
    # with --send-again-from o.csv, the server refusing Gus (550)
    (tmp_path / "attachments").mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", tmp_path / "attachments" / "gus.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", tmp_path / "attachments" / "ida.pdf")
    rows = (("gus@example.com", "Gus", "gus.pdf"), ("ida@example.com", "Ida", "ida.pdf"))
    trial, real = _file(tmp_path, "o.csv", *rows), _file(tmp_path, "o-real.csv", *rows)
    templates, workdir = _templates(tmp_path), tmp_path / "w"
    local = ["--workdir", str(workdir), "--templates", str(templates)]
    assert _cli("run", str(trial), *local)[0] == 0
    with _serving() as (server, url):
        server.refused.add("gus@example.com")
        code, first = _json("run", str(real), *local, "--smtp", url, "--send-again-from", "o.csv")
        assert (code, first["counts"]["sent"], first["counts"]["failed"]) == (5, 1, 1), first

        # WHEN the server takes Gus's mail, and the retry command the run printed is run
        server.refused.clear()
        printed = shlex.split(first["retry_command"])
        assert printed[:4] == ["mailmatrix", "run", str(real), "--retry-failed"]
        assert {"--workdir", "--templates", "--smtp"} <= set(printed)
        code, said = _cli(*printed[1:])

        # THEN Gus gets his letter through the server: the choice recorded for o-real.csv
        # holds for its retry, and the summary names it
        assert code == 0, said
        assert sorted(address for address, _ in server.received) == [
            "gus@example.com",
            "ida@example.com",
        ]
        assert "--send-again-from o.csv: used, and recorded in the ledger" in said
        assert "Nothing new sent" not in said


def test_a_summary_says_rows_held_for_another_file_s_letters_apart_from_those_sent(tmp_path):
    # GIVEN o.csv run into the outbox (a trial), and its copy o-real.csv run through the
    # server without --send-again-from after Ida's row was added: Gus's letter is held back
    (tmp_path / "attachments").mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", tmp_path / "attachments" / "gus.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", tmp_path / "attachments" / "ida.pdf")
    gus, ida = ("gus@example.com", "Gus", "gus.pdf"), ("ida@example.com", "Ida", "ida.pdf")
    trial, real = _file(tmp_path, "o.csv", gus), _file(tmp_path, "o-real.csv", ida)
    templates, workdir = _templates(tmp_path), tmp_path / "w"
    local = ["--workdir", str(workdir), "--templates", str(templates)]
    assert _cli("run", str(trial), *local)[0] == 0
    with _serving() as (_, url):
        assert _cli("run", str(real), *local, "--smtp", url)[0] == 0
        _file(tmp_path, "o-real.csv", gus, ida)

        # WHEN o-real.csv runs again
        code, said = _cli("run", str(real), *local, "--smtp", url)

    # THEN its summary says Ida's row was sent earlier and Gus's held back for o.csv's letter,
    # not that every row was already sent
    assert code == 0, said
    assert (
        "Nothing new sent: all 1 valid rows were already sent by an earlier run (the ledger"
        " remembers); 1 row(s) more were held back for letters of another file, not sent"
        " (said above)."
    ) in said


def test_the_retry_a_held_row_s_reason_names_for_another_file_carries_that_file_s_options(
    tmp_path,
):
    # GIVEN a.csv run through the server with templates of its own, Gus's letter failed as
    # OutcomeUnknown (the reply lost, the drill's timeout), and its copy b.csv run the same way
    (tmp_path / "attachments").mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", tmp_path / "attachments" / "gus.pdf")
    gus = ("gus@example.com", "Gus", "gus.pdf")
    first, copy = _file(tmp_path, "a.csv", gus), _file(tmp_path, "b.csv", gus)
    templates, workdir = _templates(tmp_path), tmp_path / "w"
    with _serving() as (_, url):
        options = ["--workdir", str(workdir), "--templates", str(templates), "--smtp", url]
        code, ran = _json("run", str(first), *options, "--faults", "timeout=1")
        assert (code, ran["counts"]["unknown"]) == (5, 1), ran
        code, said = _cli("run", str(copy), *options)

    # THEN b.csv holds Gus's row back, and the retry its reason names for a.csv is the whole
    # command of a.csv's runs: its workdir, templates and mail server
    assert code == 0, said
    assert (
        f"`mailmatrix run {first} --retry-unknown --workdir {workdir} --templates {templates}"
        f" --smtp {url}` sends it there"
    ) in said


def test_a_row_in_doubt_elsewhere_with_a_copy_of_its_file_for_another_row_is_held_alike(
    tmp_path,
):
    # GIVEN Sue's letter in doubt under a.csv, and b.csv naming her file for her again (row
    # 2, the same letter) and a copy of it for Lea (row 3)
    sue, _, templates, workdir = _sue_and_lea(tmp_path)
    both = _file(
        tmp_path,
        "b.csv",
        ("slow@example.com", "Sue", "sue.pdf"),
        ("lea@example.com", "Lea", "lea.pdf"),
    )
    with _serving() as (server, url):
        options = ["--workdir", str(workdir), "--templates", str(templates), "--smtp", url]
        server.stalled.add("slow@example.com")
        _killed_while_stalled(server, ["run", str(sue), *options])
        server.stalled.clear()

        # WHEN b.csv is validated, then run
        _, forecast = _json("validate", str(both), *options[:4])
        code, ran = _json("run", str(both), *options)

    # THEN both hold row 2 back as in doubt under a.csv and reject row 3, the copy; the run
    # counts row 2 in doubt there, not as sent there, and sends nothing
    assert [(row["row"], row["outcome"]) for row in forecast["skipped"]] == [
        (2, "may have been sent (in doubt)")
    ]
    assert [reject["row"] for reject in forecast["rejected"]] == [3]
    counts = ran["counts"]
    assert (code, counts["rejected"], counts["doubt_under"], counts["sent_under"]) == (0, 1, 1, 0)
    with Path(ran["rejects"]).open(encoding="utf-8-sig", newline="") as stream:
        rejects = {int(row["row"]): row for row in csv.DictReader(stream)}
    assert rejects[2]["outcome"] == "may have been sent (in doubt)"
    assert "may already have gone to this address under a.csv" in rejects[2]["reason"]
    assert rejects[3]["reason"].startswith("lea.pdf has the same contents as sue.pdf")
    assert server.received == []
