"""A run on a terminal forks its worker processes before its progress display starts a thread."""

from __future__ import annotations

import csv
import json
import re
import shutil
import threading

from click.testing import CliRunner

import mailmatrix.local as local
from mailmatrix.cli.main import cli
from mailmatrix.core import templates
from mailmatrix.local import REPO

EXAMPLE = REPO / "examples" / "offer-letters"


def test_the_workers_are_forked_while_no_thread_of_the_run_is_running(tmp_path, monkeypatch):
    # GIVEN a console that counts as a terminal (the progress bar is drawn), and a record of
    # the threads started by the run that are alive when its workers are forked
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.delenv("MAILMATRIX_FAULTS", raising=False)
    monkeypatch.setattr(local, "_worker_processes", lambda faults: 2)
    before = set(threading.enumerate())
    at_fork: list[list[str]] = []
    forked = local.send_invoker

    def invoker(env):
        at_fork.append([t.name for t in threading.enumerate() if t not in before])
        return forked(env)

    monkeypatch.setattr(local, "send_invoker", invoker)

    # WHEN the example campaign runs
    result = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path / "w")]
    )

    # THEN it sent, and no thread of its own was running when the workers were forked
    assert result.exit_code == 0, result.output
    assert "Sent by this run" in result.output
    assert at_fork == [[]]


def test_the_progress_display_counts_the_messages_the_workers_sent(tmp_path, monkeypatch):
    # GIVEN a console that counts as a terminal, and two worker processes sending
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.delenv("MAILMATRIX_FAULTS", raising=False)
    monkeypatch.setattr(local, "_worker_processes", lambda faults: 2)
    # WHEN the example campaign (18 valid rows) runs
    result = CliRunner().invoke(
        cli, ["run", str(EXAMPLE / "recipients.csv"), "--workdir", str(tmp_path / "w")]
    )
    # THEN the display's last frame counted the 18 messages the workers sent, never more
    assert result.exit_code == 0, result.output
    shown = [int(n) for n in re.findall(r"(\d+) sent", result.output)]
    assert shown and max(shown) == 18


def test_a_worker_forked_after_a_render_fails_the_row_whose_render_never_ends(
    tmp_path, monkeypatch
):
    # GIVEN templates whose offer subject never ends for one row, a render limit of 0.2 s,
    # and two worker processes forked from a process whose limit's watchdog thread runs (it
    # rendered: a pool replaced after Validate rendered its trial rows is forked so)
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "templates", folder)
    subject = folder / "offer" / "subject.txt"
    spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    never_ends = '{% if Name == "José García" %}' + spin + "{% endif %}"
    subject.write_text(never_ends + subject.read_text())
    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.2)
    monkeypatch.delenv("MAILMATRIX_FAULTS", raising=False)
    monkeypatch.setattr(local, "_worker_processes", lambda faults: 2)
    templates._watchdog.run(5, lambda: None)

    # WHEN the example campaign (18 valid rows) runs
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(EXAMPLE / "recipients.csv"),
            "--templates",
            str(folder),
            "--workdir",
            str(tmp_path / "w"),
            "--json",
        ],
    )

    # THEN the run ends: that row failed on the limit, and the other 17 were sent
    assert result.exit_code == 5, result.output
    summary = json.loads(result.stdout)
    assert (summary["counts"]["sent"], summary["counts"]["failed"]) == (17, 1)
    with open(summary["report"], encoding="utf-8-sig", newline="") as stream:
        (row,) = [r for r in csv.DictReader(stream) if r["status"] == "failed"]
    assert (row["email"], row["code"], row["reason"]) == (
        "jose.garcia@example.org",
        "TemplateError",
        "offer: render: took more than 0.2 s (a loop without end?)",
    )
