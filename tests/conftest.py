"""Fixtures for every test: nothing writes to the real home folder."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _default_workdir_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Commands run without --workdir use a folder of their own test, not ~/.local/share: not
    one of the session either, where `validate` (which checks a file against its earlier runs
    in the default workdir) would see what other tests ran. Not created: `run` creates it."""
    default = tmp_path_factory.mktemp("default-workdir") / "mailmatrix"
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(default))


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> Path:
    """Where the record of known workdirs is kept: a folder of this test's own, not
    ~/.local/state (commands the tests spawn inherit it). Not created: runs create it."""
    state = tmp_path_factory.mktemp("state") / "mailmatrix"
    monkeypatch.setenv("MAILMATRIX_STATE_DIR", str(state))
    return state


@pytest.fixture
def immutable(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make a folder take no new file, whoever asks, root too, as `chattr +i` does: a file
    that is not there yet cannot be made in it (EPERM); those there open as before."""
    real_open = os.open

    def closed(folder: Path) -> None:
        def refused(path, flags, *args, **kwargs):
            made = Path(path)
            if flags & os.O_CREAT and made.parent == folder and not made.exists():
                raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refused)

    return closed


@pytest.fixture
def one_set_templates(tmp_path) -> Path:
    """A templates folder without manifest: one set of a subject and a text body."""
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "subject.txt").write_text("Hello {{ Name }}")
    (templates / "body.txt").write_text("Dear {{ Name }}")
    return templates


@pytest.fixture
def campaigns_without_attachments(tmp_path) -> tuple[Path, Path]:
    """Two CSVs and no attachments folder beside them: one without an Attachment_File column
    (two rows), one whose row names a file."""
    plain = tmp_path / "plain.csv"
    plain.write_text("Email,Name\nann@example.com,Ann\nbo@example.com,Bo\n")
    named = tmp_path / "named.csv"
    named.write_text("Email,Name,Attachment_File\nann@example.com,Ann,a.pdf\n")
    return plain, named
