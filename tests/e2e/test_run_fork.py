"""A run on a terminal forks its worker processes before its progress display starts a thread."""

from __future__ import annotations

import re
import threading

from click.testing import CliRunner

import mailmatrix.local as local
from mailmatrix.cli.main import cli
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
