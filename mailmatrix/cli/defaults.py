"""Defaults shared by the local commands (run, executions, show, redrive)."""

from __future__ import annotations

import os
from pathlib import Path

from mailmatrix.errors import ConfigurationError, StateFolderUnsafe


def default_workdir() -> Path:
    """Where runs keep their ledger when no --workdir is given: one place per user, so the
    same file run from another folder finds the emails already sent.

    MAILMATRIX_WORKDIR, else $XDG_DATA_HOME/mailmatrix, else ~/.local/share/mailmatrix.
    """
    if os.environ.get("MAILMATRIX_WORKDIR"):
        given = os.environ["MAILMATRIX_WORKDIR"]
        folder = os.path.expanduser(given)  # leaves ~user of no such user (Path's raises)
        if folder.startswith("~"):
            raise ConfigurationError(
                f"MAILMATRIX_WORKDIR={given}: no such user's home folder. Nothing was sent."
                " Set MAILMATRIX_WORKDIR to the workdir's path (or unset it), then run the"
                " command again"
            )
        return Path(folder)
    return _xdg_home("XDG_DATA_HOME", ".local/share") / "mailmatrix"


def state_dir() -> Path:
    """Where the record of known workdirs is kept (see local.KNOWN_WORKDIRS): one place per
    user, outside every workdir, so that a workdir put back from a backup (the default one
    too), or another MAILMATRIX_WORKDIR, cannot take another record with it.

    MAILMATRIX_STATE_DIR, else $XDG_STATE_HOME/mailmatrix, else ~/.local/state/mailmatrix.
    A relative MAILMATRIX_STATE_DIR is refused (StateFolderUnsafe): it would be another
    folder, with another record, for each folder the command runs from.
    """
    given = os.environ.get("MAILMATRIX_STATE_DIR")
    if not given:
        return _xdg_home("XDG_STATE_HOME", ".local/state") / "mailmatrix"
    folder = Path(os.path.expanduser(given))  # ~user of no such user: left, so refused
    if not folder.is_absolute():
        raise StateFolderUnsafe(
            f"MAILMATRIX_STATE_DIR={given}: not an absolute path. It names the folder of the"
            " record of known workdirs, which keeps what each workdir delivered through a mail"
            " server and how many of each file's letters its ledger held as sent, so that"
            " nobody is mailed again from another workdir or from one put back from a backup;"
            " a relative one would be another folder, with another record, for each folder"
            " the command runs from. Nothing was sent. Set MAILMATRIX_STATE_DIR to an absolute"
            " path outside every workdir (or unset it: ~/.local/state/mailmatrix), then run"
            " the command again"
        )
    return folder


def _xdg_home(variable: str, under_home: str) -> Path:
    """The base folder ``variable`` (XDG_DATA_HOME, XDG_STATE_HOME) names, ``~`` expanded,
    else ``under_home`` in the home folder. A relative one is ignored, as the XDG Base
    Directory Specification says: it would be another folder for each current folder."""
    given = Path(os.path.expanduser(os.environ.get(variable) or ""))
    return given if given.is_absolute() else Path.home() / under_home


DEFAULT_WORKDIR_TEXT = (
    "$MAILMATRIX_WORKDIR, else $XDG_DATA_HOME/mailmatrix or ~/.local/share/mailmatrix"
)
