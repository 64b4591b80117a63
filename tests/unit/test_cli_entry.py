"""The console script's entry point: what it does before the command runs."""

from __future__ import annotations

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
