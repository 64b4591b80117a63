"""The console script's entry point: what it does before the command runs."""

from __future__ import annotations

import subprocess
import sys

import mailmatrix.cli.main as cli_main


def test_the_console_script_freezes_the_collector_before_the_command_runs(monkeypatch):
    # GIVEN the entry point with its command and the collector's freeze recorded
    calls: list[str] = []
    monkeypatch.setattr(cli_main.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(cli_main, "cli", lambda **kwargs: calls.append("command"))
    # WHEN the console script starts
    cli_main.main()
    # THEN what was imported is frozen first: the workers forked later share its pages
    assert calls == ["freeze", "command"]


def test_a_local_run_loads_no_smtp_client():
    # GIVEN a fresh interpreter WHEN it loads the command and the functions a local run calls
    # THEN smtplib and ssl stay out: the run delivers to a Maildir unless told to use SMTP
    code = (
        "import sys, mailmatrix.cli.main, mailmatrix.local, functions.validate.app,"
        " functions.send_batch.app, functions.summarize.app;"
        " print(sorted(m for m in ('smtplib', 'ssl') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout) == (0, "[]\n")
