"""Messages that say what to do: an address cell with a name, a column the file lacks, a row
whose letter does not render, and a missing attachments folder (from a new user's trial)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mailmatrix.cli import preview_cmd
from mailmatrix.cli.main import cli
from mailmatrix.local import REPO

EXAMPLE = REPO / "examples" / "offer-letters"


def _demo(tmp_path: Path, *, attachments: bool = True, rows: int = 2) -> Path:
    """The demo's first ``rows`` rows as offers.csv, with its letters beside it or not."""
    folder = tmp_path / "campaign"
    folder.mkdir()
    if attachments:
        shutil.copytree(EXAMPLE / "attachments", folder / "attachments")
    lines = (EXAMPLE / "recipients.csv").read_text(encoding="utf-8").splitlines()
    path = folder / "offers.csv"
    path.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return path


def _words(output: str) -> str:
    return " ".join(output.split())


def test_a_name_with_the_address_in_the_email_cell_is_told_to_keep_only_the_address(tmp_path):
    # GIVEN a row whose Email cell holds "Name <address>", as a mail program copies it
    path = _demo(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = (
        '"Amelia Hart <amelia.hart@example.com>"' + lines[1][len("amelia.hart@example.com") :]
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # WHEN that row is previewed
    shown = CliRunner().invoke(cli, ["preview", str(path), "--row", "2", "--out", str(tmp_path)])

    # THEN it is rejected, saying what to do with the cell
    said = _words(shown.output)
    assert shown.exit_code == 4, said
    assert (
        "row 2: rejected: Email: invalid address: A display name and angle brackets around the"
        " email address are not permitted here. Keep only the address (x@y) in the cell; the"
        " name goes in its own column."
    ) in said


def test_a_column_the_templates_use_that_the_file_lacks_is_told_both_ways_out(tmp_path):
    # GIVEN the demo file without its Department column, which the bundled templates use
    path = _demo(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    cut = [",".join(line.split(",")[:5] + line.split(",")[6:]) for line in lines]
    path.write_text("\n".join(cut) + "\n", encoding="utf-8")

    # WHEN it is validated, and run
    for command in (["validate", str(path)], ["run", str(path), "--workdir", str(tmp_path / "w")]):
        result = CliRunner().invoke(cli, command)

        # THEN it names the column and says to add it, or take it out of the template (a
        # guard does not help)
        said = _words(result.output)
        assert result.exit_code == 3, said
        assert "Department — not CSV columns" in said
        assert (
            "Add each column named there to the file, or take it out of the template that uses"
            " it: a guard such as {% if Column %} does not help when the file has no such"
            " column at all."
        ) in said


def test_a_preview_of_a_row_rejected_for_its_letter_names_no_empty_column(capsys):
    # GIVEN validation rejected row 3 as a whole: its letter does not render (no column)
    reason = "its letter does not render: offer/body.txt: render: 'x' is undefined"
    report = SimpleNamespace(
        rejected=[{"row": 3, "column": "", "reason": reason}], skipped=[], duplicates=[]
    )

    # WHEN preview explains why it shows no letter for that row
    with pytest.raises(SystemExit) as ended:
        preview_cmd._explain_missing_row(Path("offers.csv"), 3, report)

    # THEN it says the reason after "rejected:", with no empty column between two colons
    assert ended.value.code == 4
    assert f"offers.csv: row 3: rejected: {reason}" in capsys.readouterr().err


def test_a_missing_attachments_folder_is_said_before_the_rows_it_rejects(tmp_path):
    # GIVEN the demo file with no attachments folder beside it
    path = _demo(tmp_path, attachments=False, rows=3)

    # WHEN it is validated
    result = CliRunner().invoke(cli, ["validate", str(path)])

    # THEN the folder is named first, then the rows whose files were not found
    said = _words(result.output)
    assert result.exit_code == 3, said
    folder = said.index(f"Note: no attachments folder at {path.parent / 'attachments'}")
    assert folder < said.index("attachment not found: amelia-hart.pdf")
    assert said.count("no attachments folder at") == 1
    # AND after the rows, once more where the files were looked for
    assert said.index("which does not exist; if they are in another folder") > folder
