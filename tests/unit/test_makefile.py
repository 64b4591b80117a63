"""The Makefile's demo and clean targets: a WORKDIR exported in the shell (the README writes
`WORKDIR/ledger.sqlite3`) decides neither where the demo writes nor what `make clean` removes.

Read through `make -n`, which prints the commands and runs none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLEANED = "rm -rf .venv demo .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info"


def _dry_run(target: str, *assignments: str, env: dict[str, str]) -> list[str]:
    """The commands `make -n TARGET` would run here, each a line."""
    completed = subprocess.run(
        [shutil.which("make") or "make", "-n", "-s", "-C", str(ROOT), target, *assignments],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return completed.stdout.splitlines()


@pytest.fixture
def own_folder(tmp_path: Path) -> dict[str, str]:
    """A shell that exported WORKDIR (and DEMO_WORKDIR) as a folder of the user's."""
    return {"WORKDIR": str(tmp_path / "hr"), "DEMO_WORKDIR": str(tmp_path / "hr")}


def test_clean_removes_only_what_the_targets_made_whatever_the_shell_exported(own_folder):
    assert _dry_run("clean", env=own_folder) == [CLEANED]


def test_clean_removes_no_folder_named_on_the_command_line(tmp_path):
    named = str(tmp_path / "campaign")
    assert _dry_run("clean", f"DEMO_WORKDIR={named}", f"WORKDIR={named}", env={}) == [CLEANED]


def test_demo_writes_to_demo_whatever_the_shell_exported(own_folder):
    commands = _dry_run("demo", env=own_folder)

    assert commands[-1].endswith(
        "/mailmatrix run examples/offer-letters/recipients.csv --workdir demo"
    )


def test_demo_workdir_given_on_the_command_line_is_used():
    commands = _dry_run("demo", "DEMO_WORKDIR=trial-demo", env={})

    assert commands[-1].endswith("--workdir trial-demo")
