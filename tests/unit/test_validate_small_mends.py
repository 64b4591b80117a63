"""`mailmatrix validate` says plainly what it found: a folder named as a file, a header of very
many columns, a quote left open on the last line, a subject template on several lines; rows
held back for letters that went only to the local outbox under another file (a trial), and the
workdir of a `settle` it names."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailmatrix.cli import exits
from mailmatrix.cli.validate_cmd import _earlier_sends, _sent_under_forecast, validate_command
from mailmatrix.core.report import SENT_UNDER

SENDER = ("--sender", "HR <hr@example.com>")


def _templates(tmp_path, subject: str = "Hi {{ Name }}"):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "subject.txt").write_text(subject)
    (folder / "body.txt").write_text("Dear {{ Name }},\n")
    return folder


def _validate(tmp_path, text: str, *args: str, subject: str = "Hi {{ Name }}"):
    path = tmp_path / "letters.csv"
    path.write_text(text)
    (tmp_path / "attachments").mkdir(exist_ok=True)
    options = ["--templates", str(_templates(tmp_path, subject)), *SENDER, *args]
    return CliRunner().invoke(validate_command, [str(path), *options])


def test_a_folder_named_as_a_row_s_file_is_said_to_be_a_folder(tmp_path):
    # GIVEN an empty folder dir.pdf and a folder full.pdf holding a file, where letters go
    (tmp_path / "attachments" / "dir.pdf").mkdir(parents=True)
    (tmp_path / "attachments" / "full.pdf").mkdir()
    (tmp_path / "attachments" / "full.pdf" / "letter.pdf").write_bytes(b"%PDF-1.4 x")
    text = "Email,Name,Attachment_File\na@example.com,A,dir.pdf\nb@example.com,B,full.pdf\n"

    # WHEN rows naming them are validated
    result = _validate(tmp_path, text, "--json")

    # THEN each row is rejected as naming a folder, not as a file not found
    reasons = [(item["row"], item["reason"]) for item in json.loads(result.output)["rejected"]]
    folder = "is a folder, not a file, in the attachments location: name the row's file itself"
    assert reasons == [
        (2, f"dir.pdf {folder} (files inside folders there are not sent)"),
        (3, f"full.pdf {folder} (files inside folders there are not sent)"),
    ]


def test_a_header_of_very_many_columns_is_shown_shortened(tmp_path):
    # GIVEN a file of 3 + 997 columns
    extra = [f"C{n}" for n in range(997)]
    text = ",".join(["Email", "Name", "Attachment_File", *extra]) + "\n"
    text += "a@example.com,A," + "," * 997 + "\n"

    # WHEN it is validated
    result = _validate(tmp_path, text)

    # THEN the Columns line names the first 50 and counts the rest
    [line] = [line for line in result.output.splitlines() if line.startswith("Columns: ")]
    assert (
        line == f"Columns: Email, Name, Attachment_File, {', '.join(extra[:47])}, ... and 950 more"
    )


def test_a_quote_left_open_on_the_last_line_is_said_as_on_any_other(tmp_path):
    # GIVEN a file whose last row opens a quote it never closes
    text = 'Email,Name,Attachment_File\na@example.com,A,\nc@example.com,"C,\n'

    # WHEN it is validated
    result = _validate(tmp_path, text)

    # THEN the file is refused, naming the line and the quote (not "2 fields, header has 3")
    said = " ".join(result.output.split())
    assert result.exit_code == exits.INPUT_UNUSABLE, said
    assert (
        "unreadable CSV at line 3: a quote opened on this line is not closed before the end of"
        " the file; fix the quotes on line 3" in said
    )
    assert "2 fields" not in said


def test_a_quoted_value_with_line_ends_on_the_last_line_is_read(tmp_path):
    text = 'Email,Name,Note\na@example.com,Ann,"two\nlines"\n'

    result = _validate(tmp_path, text, "--json")

    assert result.exit_code == exits.OK, result.output
    assert json.loads(result.output)["valid"] == 1


def test_a_subject_template_on_two_lines_is_warned_of(tmp_path):
    # GIVEN a subject template written on two lines
    text = "Email,Name\na@example.com,A\n"

    # WHEN the file is validated
    result = _validate(tmp_path, text, subject="Your offer,\n{{ Name }}\n")
    (tmp_path / "again").mkdir()
    found = json.loads(_validate(tmp_path / "again", text, "--json", subject="a\nb").output)

    # THEN validate warns, on one line, that its lines are joined
    warning = (
        "subject.txt: the subject template spans 2 lines; they are joined into one subject"
        " line, a space between them"
    )
    assert f"Warning: {warning}" in result.output
    assert found["warnings"] == [warning]


def test_an_empty_folder_among_the_templates_is_no_template(tmp_path):
    # GIVEN a templates folder that also holds an empty folder (listed as S3 lists one)
    path = tmp_path / "letters.csv"
    path.write_text("Email,Name\na@example.com,A\n")
    templates = _templates(tmp_path)
    (templates / "drafts").mkdir()

    # WHEN the file is validated with them
    options = ["--templates", str(templates), *SENDER, "--json"]
    result = CliRunner().invoke(validate_command, [str(path), *options])

    # THEN the templates are read as before
    assert result.exit_code == exits.OK, result.output
    assert json.loads(result.output)["valid"] == 1


def test_the_forecast_tells_letters_that_went_only_to_the_outbox_from_those_sent(tmp_path):
    # GIVEN row 2 held back as its letter went under a.csv (through a server), and rows 3-4
    # as theirs went under b.csv only into the local outbox (a trial)
    held = [
        (2, SENT_UNDER, "a.csv", "file"),
        (3, SENT_UNDER, "b.csv", "text"),
        (4, SENT_UNDER, "b.csv", "text"),
    ]

    # WHEN validate forecasts what `run` does with them
    said = _sent_under_forecast(held, {"b.csv"})

    # THEN it says which went only to the outbox, and the two ways to send those for real,
    # apart from the letters that went
    assert said == (
        "1 of these rows (row 2) already went to the same addresses under a.csv (the same"
        " letters: the same attachments); they will not be sent again; 2 of these rows (rows"
        " 3-4) went only to the local outbox under b.csv (a trial?), not to the addresses (the"
        " same letters: the same text); the ledger counts them sent, so they will not be sent"
        " here. To send those of the trial for real: `run --smtp URL --send-again-from b.csv` in"
        " this workdir, or `run --smtp URL` in another --workdir, whose ledger holds nothing of"
        " that trial; to send the others again on purpose: `run --send-again-from a.csv`."
        " --rejects FILE (or --json) gives each one's reason."
    )


@pytest.mark.parametrize("by_default", [False, True], ids=["workdir-given", "default-workdir"])
def test_a_failed_row_in_doubt_under_another_file_names_settle_with_the_workdir(
    tmp_path, by_default
):
    # GIVEN validate's findings in a workdir: row 2 failed for good, its letter in doubt since
    # under f.csv
    workdir = tmp_path / "my work"
    earlier = {
        "checked": True,
        "default_workdir": by_default,
        "workdir": str(workdir),
        "failed_before": 1,
        "failed_went_under": [{"row": 2, "file": "f.csv", "in_doubt": True}],
    }

    # WHEN validate says what `run --retry-failed` would do
    (line,) = _earlier_sends(earlier, tmp_path / "templates")

    # THEN the settle it names is given the workdir validate checked, unless `settle` looks
    # there without it
    option = "" if by_default else f" --workdir '{workdir}'"
    assert f"until that is settled there (`settle f.csv{option}`)" in line
