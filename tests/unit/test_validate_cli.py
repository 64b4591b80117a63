"""`mailmatrix validate`: exit codes, JSON output, human output, no tracebacks."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import shutil
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.cli import exits
from mailmatrix.cli.validate_cmd import bundled_templates, row_ranges, validate_command
from mailmatrix.core.send import idempotency_key
from mailmatrix.local import RunForecast, Workdir, campaign_of_file
from tests.fixtures.sending.kit import FakeClock
from tests.fixtures.sending.ledger_contract import OTHER_LETTER_CASES, letter_in_state

FIXTURES = Path(__file__).parents[1] / "fixtures" / "intake"
HEADER = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\n"
OFFER = "ann@example.com,Ann,Offer,ann.pdf,Engineer,Data,2027-01-01,1\n"
# Templates without a manifest name no sender: `run` is then given one, and so is `validate`.
SENDER = ("--sender", "HR <hr@example.com>")


def campaign(tmp_path: Path, text: str | bytes, files: dict[str, bytes] | None = None) -> Path:
    """Write a CSV with an attachments folder beside it; return the CSV's path."""
    path = tmp_path / "recipients.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    folder = tmp_path / "attachments"
    folder.mkdir()
    for name, data in (files if files is not None else {"ann.pdf": b"%PDF-1.4 x"}).items():
        (folder / name).write_bytes(data)
    return path


def invoke(*args: str):
    return CliRunner().invoke(validate_command, [str(a) for a in args])


def test_bundled_templates_folder_is_the_repository_one():
    assert bundled_templates() == Path(__file__).parents[2] / "templates"
    assert (bundled_templates() / "manifest.yaml").is_file()


def test_all_valid_exits_0_with_a_json_report(tmp_path):
    path = campaign(tmp_path, HEADER + OFFER)

    result = invoke(path, "--json")

    assert result.exit_code == exits.OK, result.output
    assert json.loads(result.output) == {
        "source": str(path),
        "encoding": "utf-8",
        "delimiter": ",",
        "header": [
            "Email", "Name", "Status", "Attachment_File", "Position", "Department",
            "Start_Date", "Salary",
        ],
        "rows": 1,
        "valid": 1,
        "empty": 0,
        "warnings": [],
        "rejected": [],
        "duplicates": [],
        "skipped": [],
        "earlier_runs": {
            "checked": False, "default_workdir": True, "workdir": os.environ["MAILMATRIX_WORKDIR"]
        },
        "templates": str(bundled_templates()),
        "templates_bundled": True,
        "sender": "Acme Talent <talent@example.com>",
        "sender_from": "the templates manifest's sender",
        "attachments": str(tmp_path / "attachments"),
        "ok": True,
        "exit_code": 0,
        "action": "none",
    }  # fmt: skip


def test_a_column_that_looks_like_cc_but_is_not_read_as_one_is_warned_of(tmp_path):
    # GIVEN a file whose copies are in a column 'Cc (optional)', which is not read as Cc
    header = HEADER.replace("\n", ",Cc (optional)\n")
    path = campaign(tmp_path, header + OFFER.replace("\n", ",boss@example.com\n"))

    # WHEN it is validated
    shown = invoke(path)
    found = json.loads(invoke(path, "--json").output)

    # THEN both outputs warn that its addresses are not copied, and which names are read;
    # the file is still valid (the column is a column of the letter, as before), and the last
    # word points back at the warning rather than saying "All good"
    said = " ".join(shown.output.split())
    assert shown.exit_code == exits.OK, said
    assert "All good" not in said
    assert "1 row(s) would be sent; read the warning(s) above." in said
    warning = (
        "column 'Cc (optional)' looks like a Cc column but is not read as one, and no template"
        " uses it: its addresses are not copied on the letters. Cc is read from the column"
        " named Cc (or Carbon Copy, CC Email, CC Emails, CC Address, CC Addresses, CC"
        " Recipients, Copy To; case, spaces, hyphens, underscores and dots aside): rename it Cc"
        " to copy them."
    )
    assert f"Warning: {warning}" in said
    assert found["warnings"] == [warning]
    assert found["valid"] == 1


def test_rows_whose_files_are_not_found_name_the_folder_searched_once(tmp_path):
    # GIVEN a file of two rows and an empty folder given as the attachments
    text = HEADER + OFFER + "bob@example.com,Bob,Offer,bob.pdf,Engineer,Data,2027-01-01,1\n"
    path = campaign(tmp_path, text)
    empty = tmp_path / "empty"
    empty.mkdir()

    result = invoke(path, "--attachments", empty)

    # THEN both rows are rejected as not found, and the folder is named once, as empty
    said = " ".join(result.output.split())
    assert result.exit_code == exits.INPUT_UNUSABLE, said
    assert said.count("attachment not found") == 2
    assert said.count(str(empty)) == 1
    assert f"Files named in Attachment_File were looked for in {empty}, which holds no file" in said


def test_the_report_names_the_templates_and_the_from_it_checked_with(tmp_path):
    # GIVEN a file checked once without --templates, once with a copy of the bundled folder
    path = campaign(tmp_path, HEADER + OFFER)
    own = tmp_path / "own-templates"
    shutil.copytree(bundled_templates(), own)

    bundled = invoke(path)
    copied = invoke(path, "--templates", own, "--sender", "HR <hr@example.org>")

    # THEN the first says it used the bundled demo's letters and From, the second the copy's
    assert f"Templates: bundled demo templates ({bundled_templates()})" in bundled.output
    assert "From: Acme Talent <talent@example.com> (the templates manifest's sender)" in (
        bundled.output
    )
    assert f"Templates: {own}\n" in copied.output
    assert "From: HR <hr@example.org> (--sender)" in copied.output


def test_rejected_rows_exit_4_and_are_named_by_row_and_column(tmp_path):
    text = HEADER + OFFER + "bob@example.com,Bob,Offer,bob.pdf,Engineer,Data,2027-01-01,1\n"
    path = campaign(tmp_path, text)

    result = invoke(path, "--json")

    assert result.exit_code == exits.ROWS_REJECTED
    report = json.loads(result.output)
    assert report["rejected"] == [
        {
            "row": 3,
            "column": "Attachment_File",
            "reason": "attachment not found: bob.pdf",
            "email": "b***@example.com",
        }
    ]


def test_human_output_shows_counts_and_reasons(tmp_path):
    text = HEADER + OFFER + ",Nobody,Offer,ann.pdf,Engineer,Data,2027-01-01,1\n"
    path = campaign(tmp_path, text)

    result = invoke(path)

    assert result.exit_code == exits.ROWS_REJECTED
    assert "utf-8, comma-separated" in result.output
    assert "Email is missing" in result.output
    assert "1 row(s) rejected" in result.output


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"Name,Status\nAnn,Offer\n", "no Email column"),
        (b"PK\x03\x04" + bytes(64), "not a CSV file"),
        (HEADER.encode(), "no recipients"),
        (
            codecs.BOM_UTF16_LE
            + (HEADER + OFFER + "bob@example.com,Bo").encode("utf-16-le")
            + b"\x00\xd8"
            + "b,Offer,bob.pdf,Engineer,Data,2027-01-01,1\n".encode("utf-16-le"),
            "cannot decode line 3 as utf-16-le: illegal UTF-16 surrogate",
        ),
    ],
)
def test_unusable_file_exits_3_without_traceback(tmp_path, data, message):
    path = campaign(tmp_path, data)

    result = invoke(path)

    assert result.exit_code == exits.INPUT_UNUSABLE
    assert f"Error: {path}: {message}" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_unusable_file_with_json_is_one_json_object(tmp_path):
    path = campaign(tmp_path, b"")

    result = invoke(path, "--json")

    assert result.exit_code == exits.INPUT_UNUSABLE
    assert json.loads(result.output) == {
        "source": str(path),
        "error": "InputFileError",
        "message": f"{path}: empty file: no header and no rows",
        "ok": False,
        "exit_code": exits.INPUT_UNUSABLE,
        "failure": {
            "kind": "InputFileError", "message": f"{path}: empty file: no header and no rows"
        },
        "action": "fix_input",
    }  # fmt: skip


def test_a_misspelt_attachment_column_exits_3_naming_it_once(tmp_path):
    # GIVEN the bundled templates (each row attaches its own letter) and a header that spells
    # the column Attachement_File
    path = campaign(tmp_path, HEADER.replace("Attachment_File", "Attachement_File") + OFFER * 2)

    # WHEN the file is validated, for people and as JSON
    result = invoke(path)
    as_json = json.loads(invoke(path, "--json").stdout)

    # THEN it is refused whole, saying once which column is missing and which one it has,
    # not that the bundled templates do not fit
    assert result.exit_code == exits.INPUT_UNUSABLE
    message = (
        f"{path}: no Attachment_File column, though template set 'offer' attaches the file each "
        "row names in that column, and row 2 is of that set; the file has a column "
        "'Attachement_File': a misspelling of 'Attachment_File'? Nothing is sent (name that "
        "column Attachment_File; then run the file again)"
    )
    assert result.output.split("\n") == [
        f"Error: {message}",
        "Nothing was validated; fix the file and run again.",
        "",
    ]
    assert as_json == {
        "source": str(path),
        "error": "InputFileError",
        "message": message,
        "ok": False,
        "exit_code": exits.INPUT_UNUSABLE,
        "failure": {"kind": "InputFileError", "message": message},
        "action": "fix_input",
    }


def test_templates_missing_columns_exit_3(tmp_path):
    path = campaign(
        tmp_path, "Email,Name,Status,Attachment_File\nann@example.com,A,Offer,ann.pdf\n"
    )

    result = invoke(path)

    assert result.exit_code == exits.INPUT_UNUSABLE
    assert "not CSV columns" in result.output
    # AND, as no --templates was given, it says the bundled ones were used, and the way out
    said = " ".join(result.output.split())
    assert f"These are the bundled templates ({bundled_templates()})" in said
    assert "give a folder of your own with --templates DIR" in said
    as_json = json.loads(invoke(path, "--json").stdout)
    assert as_json["hint"].startswith("These are the bundled templates")


def test_own_templates_that_do_not_fit_are_not_said_to_be_the_bundled_ones(tmp_path):
    own = tmp_path / "own"
    shutil.copytree(bundled_templates(), own)
    path = campaign(
        tmp_path, "Email,Name,Status,Attachment_File\nann@example.com,A,Offer,ann.pdf\n"
    )

    result = invoke(path, "--templates", own)

    assert result.exit_code == exits.INPUT_UNUSABLE
    assert "not CSV columns" in result.output
    assert "bundled" not in result.output


def test_a_template_syntax_error_has_a_heading_of_its_own(tmp_path):
    # GIVEN a copy of the bundled templates whose offer body has a Jinja syntax error, and a
    # file that also lacks a column the templates print
    templates = tmp_path / "mytemplates"
    shutil.copytree(bundled_templates(), templates)
    body = templates / "offer" / "body.html"
    body.write_text(body.read_text(encoding="utf-8") + "{{ Name }\n", encoding="utf-8")
    path = campaign(
        tmp_path, "Email,Name,Status,Attachment_File\nann@example.com,A,Offer,ann.pdf\n"
    )

    # WHEN the file is validated
    result = invoke(path, "--templates", templates)

    # THEN the syntax error is told as one (it stood under "templates do not fit the
    # columns"); the columns of the rejection set, which no row picks, are not asked for
    assert result.exit_code == exits.INPUT_UNUSABLE
    output = " ".join(result.output.split())
    assert "templates do not compile: offer/body.html: line " in output
    assert "template syntax error: unexpected '}'" in output
    assert "templates do not fit the columns" not in output


def test_a_column_named_like_a_manifest_constant_exits_3_naming_both_ways_out(tmp_path):
    # GIVEN an export whose ` company ` column (spaces around it, as a header may have) is the
    # candidate's current employer, while the templates print the manifest's `company`
    path = campaign(
        tmp_path, HEADER.rstrip("\n") + ", company \n" + OFFER.rstrip("\n") + ",Globex Ltd\n"
    )

    result = invoke(path)

    # THEN nothing passes, and the message names the column, the constant and the fixes
    assert result.exit_code == exits.INPUT_UNUSABLE
    output = " ".join(result.output.split())
    assert "column 'company' has the name of the constant 'company' in manifest.yaml" in output
    assert "rename the column in the file, or rename or remove the constant" in output


def test_missing_file_is_a_usage_error():
    result = invoke("no/such/file.csv")

    assert result.exit_code == exits.USAGE


def test_attachments_and_templates_options(tmp_path, one_set_templates):
    # GIVEN a one-set templates folder and attachments somewhere else
    templates = one_set_templates
    files = tmp_path / "elsewhere"
    files.mkdir()
    (files / "x.pdf").write_bytes(b"%PDF-1.4 x")
    path = tmp_path / "list.csv"
    path.write_text("email;name;attachment\nann@example.com;Ann;x.pdf\n")

    # WHEN validated with both options
    result = invoke(path, "--templates", templates, "--attachments", files, "--json", *SENDER)

    # THEN the row is valid
    assert result.exit_code == exits.OK, result.output
    assert json.loads(result.output)["valid"] == 1


def test_a_folder_without_manifest_attaches_files_only_when_the_csv_names_them(
    tmp_path, one_set_templates
):
    # GIVEN a one-set templates folder (no manifest) and an empty attachments folder
    templates = one_set_templates
    (tmp_path / "attachments").mkdir()
    plain = tmp_path / "plain.csv"
    plain.write_text("Email,Name\nann@example.com,Ann\n")
    named = tmp_path / "named.csv"
    named.write_text("Email,Name,Attachment_File\nann@example.com,Ann,\nbo@example.com,Bo,x.pdf\n")

    # WHEN a CSV without an Attachment_File column, and one with it, are validated
    without = invoke(plain, "--templates", templates, "--json", *SENDER)
    with_column = invoke(named, "--templates", templates, "--json", *SENDER)

    # THEN the first sends without attachments; in the second each row must name its file
    assert without.exit_code == exits.OK, without.output
    assert json.loads(without.output)["valid"] == 1
    report = json.loads(with_column.output)
    assert [(r["row"], r["column"]) for r in report["rejected"]] == [
        (2, "Attachment_File"),
        (3, "Attachment_File"),
    ]


def test_rejects_option_writes_a_spreadsheet_safe_report(tmp_path):
    # "=1+1@..." is a valid address (= and + are atext); its row lacks its attachment
    text = HEADER + OFFER + "=1+1@example.com,Eve,Offer,eve.pdf,Engineer,Data,2027-01-01,1\n"
    path = campaign(tmp_path, text)
    out = tmp_path / "rejects.csv"

    result = invoke(path, "--rejects", out)

    assert result.exit_code == exits.ROWS_REJECTED
    data = out.read_bytes()
    assert data.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(data[3:].decode())))
    assert rows[0] == ["row", "outcome", "column", "reason", "email"]
    assert [r[:3] for r in rows[1:]] == [["3", "rejected", "Attachment_File"]]
    assert rows[1][4] == "'=***@example.com"


def test_a_rejects_file_that_cannot_be_written_is_a_usage_error_not_the_csv_s(tmp_path):
    # GIVEN a --rejects path under a regular file (no folder can be made there, root or not)
    path = campaign(tmp_path, HEADER + OFFER)
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "rejects.csv"

    result = invoke(path, "--rejects", out, "--json")

    # THEN the option is blamed, with the reason, and the CSV is not
    assert result.exit_code == exits.USAGE
    assert json.loads(result.output) == {
        "source": str(path),
        "error": "NotADirectoryError",
        "message": f"--rejects {out}: cannot write the rejects report: Not a directory",
        "ok": False,
        "exit_code": exits.USAGE,
        "failure": {
            "kind": "NotADirectoryError",
            "message": f"--rejects {out}: cannot write the rejects report: Not a directory",
        },
        "action": "fix_settings",
    }


def test_case_14_through_the_cli(tmp_path):
    shutil.copytree(FIXTURES / "case14", tmp_path / "case14")
    path = tmp_path / "case14" / "recipients.csv"
    templates = tmp_path / "tpl"
    templates.mkdir()
    (templates / "subject.txt").write_text("Your letter")
    (templates / "body.txt").write_text("Dear {{ Name }}")

    result = invoke(path, "--templates", templates, "--json", *SENDER)

    assert result.exit_code == exits.ROWS_REJECTED
    report = json.loads(result.output)
    assert report["valid"] == 1
    assert [(r["row"], r["reason"]) for r in report["rejected"]] == [
        (3, "attachment not found: bob.pdf"),
        (4, "attachment not found: Carol.PDF (did you mean carol.pdf?)"),
        (5, "Attachment_File is empty"),
        (6, "attachment is empty (0 bytes): empty.pdf"),
    ]


def test_a_manifest_picking_sets_by_yes_and_no_takes_the_rows_that_say_so(tmp_path):
    # GIVEN templates picked by a Hired column's Yes and No, written without quotes
    templates = tmp_path / "tpl"
    for name in ("welcome", "regrets"):
        (templates / name).mkdir(parents=True)
        (templates / name / "subject.txt").write_text(f"{name} {{{{ Name }}}}")
        (templates / name / "body.txt").write_text("Dear {{ Name }}")
    (templates / "manifest.yaml").write_text(
        "column: Hired\nsets:\n  welcome: {when: [Yes], attachment: none}\n"
        "  regrets: {when: [No], attachment: none}\nskip: {Maybe: undecided}\n"
    )
    text = "Email,Name,Hired\nann@example.com,Ann,Yes\nbob@example.com,Bob,no\n"
    text += "cy@example.com,Cy,Maybe\ndee@example.com,Dee,True\n"
    path = campaign(tmp_path, text, files={})

    # WHEN the file is validated
    result = invoke(path, "--templates", templates, "--json", *SENDER)

    # THEN the rows that say Yes and No are valid, Maybe is skipped, and True is no value
    assert result.exit_code == exits.ROWS_REJECTED, result.output
    report = json.loads(result.output)
    assert report["valid"] == 2
    assert report["skipped"] == [{"row": 4, "reason": "undecided", "email": "c***@example.com"}]
    assert [(r["row"], r["reason"]) for r in report["rejected"]] == [
        (5, "unknown Hired value 'True' (expected one of: Yes, No, Maybe)")
    ]


def test_a_file_with_nothing_sendable_exits_3_like_run(tmp_path):
    # GIVEN every row is excluded by its Status (the manifest skips Withdrawn)
    text = HEADER + "ann@example.com,Ann,Withdrawn,ann.pdf,Engineer,Data,,\n"
    path = campaign(tmp_path, text)

    # WHEN validated THEN it is not "all good": `run` would stop with NothingToSend
    result = invoke(path)

    assert result.exit_code == exits.INPUT_UNUSABLE
    assert "Nothing to send" in result.output
    assert "All good" not in result.output


def test_validate_sees_the_attachments_a_run_would_send(tmp_path):
    # GIVEN an attachment that is a link to a file outside the attachments folder
    (tmp_path / "secret.pdf").write_bytes(b"%PDF-1.4 not for Ann")
    (tmp_path / "c").mkdir()
    path = campaign(tmp_path / "c", HEADER + OFFER, files={})
    (path.parent / "attachments" / "ann.pdf").symlink_to(tmp_path / "secret.pdf")

    # WHEN validated THEN the row is rejected, as `run` (local storage) would refuse the file
    result = invoke(path, "--json")

    assert result.exit_code == exits.INPUT_UNUSABLE
    report = json.loads(result.output)
    assert report["rejected"][0]["reason"] == "attachment not found: ann.pdf"


def test_names_linked_to_one_file_are_one_recipient_s_file(tmp_path):
    # GIVEN a folder where u4.pdf is a symlink to u0.pdf and u5.pdf and u6.pdf are hard links
    # to one file, and u7.pdf and u8.pdf are distinct files (of their own letters)
    files = {f"u{i}.pdf": f"%PDF-1.4 letter {i}".encode() for i in (0, 5, 7, 8)}
    offers = "".join(
        OFFER.replace("ann", f"user{i}").replace(f"user{i}.pdf", name)
        for i, name in [(0, "u0.pdf"), (1, "u0.pdf"), (4, "u4.pdf"), (5, "u5.pdf"),
                        (6, "u6.pdf"), (7, "u7.pdf"), (8, "u8.pdf")]
    )  # fmt: skip
    path = campaign(tmp_path, HEADER + offers, files=files)
    folder = path.parent / "attachments"
    (folder / "u4.pdf").symlink_to("u0.pdf")
    (folder / "u6.pdf").hardlink_to(folder / "u5.pdf")

    # WHEN validated
    result = invoke(path, "--json")

    # THEN only the distinct files' rows are valid; the third person naming the link to the
    # contested letter and both hard-link rows are rejected, each reason naming both names
    assert result.exit_code == exits.ROWS_REJECTED, result.output
    report = json.loads(result.output)
    assert report["valid"] == 2
    held = {item["row"]: item["reason"] for item in report["rejected"]}
    assert sorted(held) == [2, 3, 4, 5, 6]
    assert held[4].startswith(
        "u4.pdf is the same file as u0.pdf (a link in the attachments folder), already the "
        "attachment of row 2, another recipient"
    )
    assert held[5].startswith("u5.pdf is the same file as u6.pdf (a link in the attachments")
    assert held[6].startswith("u6.pdf is the same file as u5.pdf (a link in the attachments")


def test_a_missing_attachments_folder_is_noted_only_when_rows_attach_files(
    one_set_templates, campaigns_without_attachments
):
    # GIVEN one-set templates (no manifest) and no attachments folder beside the CSVs
    templates = one_set_templates
    plain, named = campaigns_without_attachments

    # WHEN each is validated
    without = invoke(plain, "--templates", templates, *SENDER)
    with_column = invoke(named, "--templates", templates, *SENDER)

    # THEN the one that attaches nothing is all good, with no note of the folder; the other
    # is told why the folder matters
    assert without.exit_code == exits.OK, without.output
    assert "no attachments folder" not in without.output
    said = " ".join(with_column.output.split())
    assert f"no attachments folder at {named.parent / 'attachments'}, and" in said
    assert "the file has an Attachment_File column" in said
    # AND, as `run` tells it, how to give the folder: before the rows it rejects, which
    # follow from it
    note = said.index("give the folder of the files with --attachments")
    assert note < said.index("attachment not found")
    as_json = json.loads(invoke(named, "--templates", templates, *SENDER, "--json").stdout)
    assert as_json["attachments_missing"].endswith(
        "give the folder of the files with --attachments"
    )


def test_a_file_name_two_files_have_in_different_unicode_forms_is_refused(tmp_path):
    # GIVEN a folder holding Zoë.pdf twice: one name in NFC, one in NFD (two letters)
    nfc, nfd = (unicodedata.normalize(form, "Zoë.pdf") for form in ("NFC", "NFD"))
    row = f"zoe@example.com,Zoë,Offer,{nfd},Engineer,Data,2027-01-01,1\n"
    path = campaign(tmp_path, HEADER + row, {nfc: b"%PDF-1.4 one", nfd: b"%PDF-1.4 another"})

    # WHEN validated THEN the row is rejected: it cannot be told which letter it means
    result = invoke(path, "--json")
    assert result.exit_code == 3, result.output
    assert "two files in the attachments location are named" in result.output


@pytest.mark.parametrize("case", OTHER_LETTER_CASES)
def test_validate_counts_a_row_as_other_letter_exactly_when_its_claim_is_refused(tmp_path, case):
    # GIVEN a workdir whose ledger has Ann's offer letter of offers.csv in the state ``case``
    csv_path = tmp_path / "offers.csv"
    wd = Workdir(tmp_path / "work")
    wd.root.mkdir()
    clock = FakeClock(start=5000.0)
    ledger = SqliteLedger(str(wd.ledger), clock=clock)
    campaign = campaign_of_file(csv_path)
    offer, rejection = (idempotency_key(campaign, "ann@example.com", s) for s in SETS)
    letter_in_state(ledger, clock.sleep, offer, case, campaign=campaign)

    # WHEN validation sees her row, now with the rejection set
    forecast = RunForecast(wd.root, csv_path, sets=SETS, clock=clock)
    forecast.see({"row": 2, "email": "Ann@example.com", "template": "rejection"})

    # THEN it counts the row as failing OtherLetterSent exactly when the run's claim of it
    # is refused for the offer, and as nothing else
    claim = ledger.claim(rejection, campaign=campaign, row=2, attempt="r", others={offer: "offer"})
    assert claim.state == ("other" if OTHER_LETTER_CASES[case] else "claimed")
    expected = int(OTHER_LETTER_CASES[case])
    assert forecast.counts() == {
        "sent": 0,
        "failed": 0,
        "unknown": 0,
        "other_letter": expected,
        "attachment_of_another": 0,
    }
    ledger.close()


SETS = ("offer", "rejection")


def test_a_reason_is_shown_whole_at_80_columns_and_a_cell_never_as_markup(tmp_path):
    # GIVEN a row naming a missing file with a long name that holds text like rich markup
    (tmp_path / "attachments").mkdir()
    name = "[bold]an-attachment-file-with-a-rather-long-name-for-the-table-to-fold.pdf"
    header = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary"
    path = tmp_path / "r.csv"
    path.write_text(f"{header}\nann@example.com,Ann,Offer,{name},Dev,IT,2027-01-11,1\n")
    # WHEN it is validated on a terminal 80 columns wide
    result = CliRunner().invoke(validate_command, [str(path)], env={"COLUMNS": "80"})
    # THEN the reason is folded over lines, not cut, and the name is shown as it is
    assert result.exit_code == 3, result.output
    assert "…" not in result.output
    flat = "".join(result.output.replace("│", " ").split())
    assert f"attachmentnotfound:{name}" in flat


def test_a_row_copying_another_rows_recipient_is_rejected_naming_that_row(tmp_path):
    # GIVEN the tester's file: Ann's row with Bob's address in Cc, Bob's row, and Cy's row
    # with Ann's address in Bcc, each naming its own letter
    text = HEADER.replace("\n", ",Cc,Bcc\n")
    text += OFFER.replace("\n", ",bob@example.com,\n")
    text += OFFER.replace("ann", "bob").replace("\n", ",,\n")
    text += OFFER.replace("ann", "cy").replace("\n", ",,ann@example.com\n")
    files = {f"{name}.pdf": f"%PDF-1.4 {name}'s letter".encode() for name in ("ann", "bob", "cy")}
    path = campaign(tmp_path, text, files=files)

    # WHEN it is validated, for people and as JSON
    result = invoke(path, *SENDER)
    as_json = invoke(path, *SENDER, "--json")

    # THEN neither is "all good": both rows are rejected, each reason naming its column and
    # the row whose recipient would get its letter; Bob's own row stays valid
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == exits.ROWS_REJECTED, result.output
    assert "All good" not in said and "2 row(s) rejected" in said
    assert "Cc names the recipient of row 3, who would get this row's letter" in said
    assert "Bcc names the recipient of row 2, who would get this row's letter" in said
    report = json.loads(as_json.output)
    assert report["valid"] == 1
    assert [(item["row"], item["column"], item["email"]) for item in report["rejected"]] == [
        (2, "Cc", "a***@example.com"),
        (4, "Bcc", "c***@example.com"),
    ]


def test_a_row_whose_file_is_a_link_out_of_the_folder_is_told_why_it_was_not_found(
    tmp_path, one_set_templates
):
    # GIVEN an attachments folder whose a.pdf is a link to a file beside the folder
    (tmp_path / "elsewhere.pdf").write_bytes(b"%PDF-1.4 a letter")
    folder = tmp_path / "attachments"
    folder.mkdir()
    (folder / "a.pdf").symlink_to(tmp_path / "elsewhere.pdf")
    (folder / "b.pdf").write_bytes(b"%PDF-1.4 another letter")
    csv_path = tmp_path / "named.csv"
    csv_path.write_text("Email,Name,Attachment_File\nann@example.com,Ann,a.pdf\n")

    # WHEN it is validated
    result = invoke(csv_path, "--templates", one_set_templates, *SENDER)

    # THEN its row is rejected as not found (the link is not followed), and the note after
    # the rows says why: a link out of the folder (it said only "not found")
    said = " ".join(result.output.split())
    assert "attachment not found: a.pdf" in said
    assert (
        "1 of its entries links to files outside it, which are not followed (a letter must not"
        " leave its folder): copy those files in." in said
    )


def test_validate_counts_a_letter_the_journal_keeps_as_sent_and_writes_nothing(tmp_path):
    import sqlite3
    from contextlib import closing

    # GIVEN a workdir whose ledger could not record Ann's offer letter as sent (another
    # process held it): the journal beside it keeps the letter
    path = campaign(tmp_path, HEADER + OFFER)
    wd = Workdir(tmp_path / "work")
    wd.root.mkdir()
    key = idempotency_key(campaign_of_file(path), "ann@example.com", "offer")
    patience = {"busy_timeout": 0.01, "sent_patience": 0.05}
    with closing(SqliteLedger(str(wd.ledger), **patience)) as ledger:
        ledger.claim(key, campaign=campaign_of_file(path), row=2, attempt="a")
        with closing(sqlite3.connect(wd.ledger, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            ledger.record_sent(key, message_id="m-1")
            other.execute("ROLLBACK")
    files = {file.name: file.read_bytes() for file in wd.root.iterdir()}
    assert "ledger.sqlite3-sent" in files

    # WHEN the file is validated against the workdir
    result = invoke(path, "--workdir", wd.root, "--json")

    # THEN the row counts as sent before, as a run would skip it, and none would be sent
    assert result.exit_code == exits.OK, result.output
    earlier = json.loads(result.output)["earlier_runs"]
    assert (earlier["sent_before"], earlier["would_send"]) == (1, 0)
    # AND nothing in the workdir changed: the journal stays for the next run, no file is made
    assert {file.name: file.read_bytes() for file in wd.root.iterdir()} == files


@pytest.mark.parametrize("damaged", [False, True], ids=["kept", "damaged"])
def test_validate_reads_the_record_of_known_workdirs_once(tmp_path, monkeypatch, damaged):
    from mailmatrix import local

    # GIVEN a record of known workdirs, as kept or damaged, whose reads are counted
    record = Path(os.environ["MAILMATRIX_STATE_DIR"]) / local.KNOWN_WORKDIRS
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("{not json" if damaged else '{"workdirs": {}, "sent": {}}')
    reads = []
    read = local._read_record

    def counted() -> local.KnownWorkdirs:
        reads.append(record)
        return read()

    monkeypatch.setattr(local, "_read_record", counted)

    # WHEN a file is validated against a workdir
    path = campaign(tmp_path, HEADER + OFFER)
    result = invoke(path, "--workdir", tmp_path / "work", "--json")

    # THEN the record was read once, for both the file's earlier runs and the record's note
    assert result.exit_code == exits.OK, result.output
    assert len(reads) == 1
    # AND a damaged one is noted once, as a run through a mail server would stop at it
    note = json.loads(result.output)["earlier_runs"].get("record_note")
    assert (note or {}).get("error") == ("KnownWorkdirsDamaged" if damaged else None)


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        ([7], "row 7"),
        ([2, 3, 4, 9, 11, 12], "rows 2-4, 9, 11-12"),
        (list(range(2, 60, 2)), "rows 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, and 17 more"),
    ],
)
def test_rows_held_back_are_named_in_runs_of_rows(rows, said):
    assert row_ranges(rows) == said
