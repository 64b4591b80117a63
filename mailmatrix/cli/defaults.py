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


def state_dir() -> Path:
    """Where the record of known workdirs is kept (see local.KNOWN_WORKDIRS): one place per
    user, outside every workdir, so that a workdir put back from a backup (the default one
    too), or another MAILMATRIX_WORKDIR, cannot take another record with it.

    MAILMATRIX_STATE_DIR, else $XDG_STATE_HOME/mailmatrix, else ~/.local/state/mailmatrix.
    """
    if os.environ.get("MAILMATRIX_STATE_DIR"):
        return Path(os.environ["MAILMATRIX_STATE_DIR"]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mailmatrix"


DEFAULT_WORKDIR_TEXT = (
    "$MAILMATRIX_WORKDIR, else $XDG_DATA_HOME/mailmatrix or ~/.local/share/mailmatrix"
)
