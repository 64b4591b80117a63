"""Where local runs keep their ledger when no --workdir is given."""

from __future__ import annotations

from pathlib import Path

from mailmatrix.cli.defaults import default_workdir


def test_the_environment_names_the_default_workdir_else_the_user_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MAILMATRIX_WORKDIR", str(tmp_path / "mine"))
    assert default_workdir() == tmp_path / "mine"

    monkeypatch.delenv("MAILMATRIX_WORKDIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_workdir() == tmp_path / "data" / "mailmatrix"

    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_workdir() == tmp_path / "home" / ".local" / "share" / "mailmatrix"
    # the same folder wherever the command runs from
    monkeypatch.chdir(tmp_path)
    assert default_workdir().is_absolute() and default_workdir() == Path(
        tmp_path / "home" / ".local" / "share" / "mailmatrix"
    )
