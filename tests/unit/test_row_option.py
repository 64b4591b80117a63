"""--corrected-address ROW as a person reads it in the help, and as it refuses a bad ROW."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli


@pytest.mark.parametrize(
    "command", [["run"], ["validate"], ["aws", "send"]], ids=["run", "validate", "aws-send"]
)
def test_the_help_says_how_rows_are_counted_in_words_not_as_a_range(command):
    # WHEN a command's help is printed, wide enough to keep each option's text on one line
    shown = CliRunner().invoke(cli, [*command, "--help"], terminal_width=500)

    # THEN --corrected-address says in words which row is the first, with no range of click's
    assert shown.exit_code == 0, shown.output
    [line] = [line for line in shown.output.splitlines() if "--corrected-address" in line]
    assert "ROW counts the file's rows from 2, the first row under the header." in line
    assert "x>=" not in line


@pytest.mark.parametrize("given", ["1", "0", "two"])
def test_a_row_that_is_no_row_of_the_file_is_refused_in_words(tmp_path, given):
    # GIVEN a file
    path = tmp_path / "offers.csv"
    path.write_text("Email,Name\na@example.com,A\n", encoding="utf-8")

    # WHEN it runs with a --corrected-address that names no row under the header
    args = ["run", str(path), "--workdir", str(tmp_path / "w"), "--corrected-address", given]
    refused = CliRunner().invoke(cli, args)

    # THEN it is a bad usage, nothing run, saying how rows are counted
    assert refused.exit_code == 2
    assert (
        f"{given}: give a row's number as the file counts rows: 2 is the first row under the header"
    ) in " ".join(refused.output.split())
    assert not (tmp_path / "w").exists()
