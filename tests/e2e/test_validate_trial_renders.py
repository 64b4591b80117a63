"""`validate` and `run` reject a row whose letter they saw fail to render, with the error."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailmatrix.cli import exits
from mailmatrix.cli.main import cli
from mailmatrix.core import templates

SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{{ Name.__class__ }}", "refused by the sandbox"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
        ("{{ Name.given }}", "has no attribute 'given'"),
        ("{% include Name ~ '.txt' %}", "A.txt"),
        (SPIN, "took more than 0.2 s"),
    ],
    ids=["sandbox", "recursion", "undefined-attribute", "missing-include", "time-limit"],
)
def test_a_one_row_file_whose_letter_fails_to_render_is_not_all_good(
    tmp_path, monkeypatch, body, error
):
    # GIVEN a file of one row, and a body that fails to render for it (the time limit is cut
    # short for the body that spins only: a loaded machine took longer than 0.2 s to recurse
    # a thousand levels deep, and its error was then the time limit's)
    if error.startswith("took more than"):
        monkeypatch.setattr(templates, "RENDER_SECONDS", 0.2)
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hi {{ Name }}")
    (folder / "body.txt").write_text(body)
    letters = tmp_path / "x.csv"
    letters.write_text("Email,Name\na@example.com,A\n")
    options = ["--templates", str(folder), "--sender", "HR <hr@example.com>"]

    # WHEN it is validated, then run
    validated = CliRunner().invoke(cli, ["validate", str(letters), *options, "--json"])
    workdir = tmp_path / "wd"
    ran = CliRunner().invoke(cli, ["run", str(letters), *options, "--workdir", str(workdir)])

    # THEN validate rejects the row with the error and counts nothing to send (exit 3, no
    # row can be sent), and the run sends nothing, saying the same
    assert validated.exit_code == exits.INPUT_UNUSABLE, validated.output
    report = json.loads(validated.output)
    [rejected] = report["rejected"]
    assert (report["valid"], rejected["row"], rejected["column"]) == (0, 2, "")
    assert rejected["reason"].startswith("its letter does not render: ")
    assert error in rejected["reason"]
    assert ran.exit_code == exits.INPUT_UNUSABLE, ran.output
    assert "row 2 rejected: its letter does not render" in ran.output
    assert not (workdir / "outbox" / "new").exists() or not any(
        (workdir / "outbox" / "new").iterdir()
    )
