"""Defaults shared by the local commands (run, executions, show, redrive)."""

from __future__ import annotations

import os
from pathlib import Path


def default_workdir() -> Path:
    """Where runs keep their ledger when no --workdir is given: one place per user, so the
    same file run from another folder finds the emails already sent.

    MAILMATRIX_WORKDIR, else $XDG_DATA_HOME/mailmatrix, else ~/.local/share/mailmatrix.
    """
    if os.environ.get("MAILMATRIX_WORKDIR"):
        return Path(os.environ["MAILMATRIX_WORKDIR"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "mailmatrix"


DEFAULT_WORKDIR_TEXT = (
    "$MAILMATRIX_WORKDIR, else $XDG_DATA_HOME/mailmatrix or ~/.local/share/mailmatrix"
)
