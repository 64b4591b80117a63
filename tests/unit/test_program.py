"""The command name printed in the commands a user is told to run next."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmatrix.program import program


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    program.cache_clear()
    yield
    program.cache_clear()


def _script(folder: Path) -> Path:
    folder.mkdir(parents=True)
    script = folder / "mailmatrix"
    script.write_text("#!/bin/sh\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_program_the_shell_finds_by_name_is_printed_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / "venv" / "bin")
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "run"])
    assert program() == "mailmatrix"


def test_a_venv_program_not_on_the_path_is_printed_as_called_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(tmp_path / ".venv" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [os.path.join(".", ".venv", "bin", "mailmatrix"), "run"])
    assert program() == os.path.join(".venv", "bin", "mailmatrix")


def test_a_program_called_by_its_whole_path_is_printed_whole_from_a_folder_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a venv's program not on the PATH, called by its whole path from a folder above it
    script = _script(tmp_path / "brk2" / ".venv" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "run"])

    # WHEN the command to run next is printed THEN it names the program whole, as called
    # (it said brk2/.venv/bin/mailmatrix)
    assert program() == str(script)


def test_another_mailmatrix_on_the_path_does_not_stand_for_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / "my folder" / "bin")
    other = _script(tmp_path / "other" / "bin")
    monkeypatch.setenv("PATH", str(other.parent))
    monkeypatch.chdir(tmp_path / "other")
    monkeypatch.setattr(sys, "argv", [str(script), "run"])
    assert program() == f"'{script}'"  # outside the folder: whole, quoted for the shell


def test_code_not_called_as_the_console_script_gets_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["/somewhere/pytest", "-q"])
    assert program() == "mailmatrix"


def test_a_link_of_another_name_to_the_program_is_printed_as_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the program called by its whole path through a link named mm, not on the PATH
    script = _script(tmp_path / "venv" / "bin")
    link = tmp_path / "tools" / "mm"
    link.parent.mkdir()
    link.symlink_to(script)
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "argv", [str(link), "run"])

    # WHEN the command to run next is printed THEN it is the link, which the shell runs (it
    # said mailmatrix, which the shell does not find)
    assert program() == str(link)
