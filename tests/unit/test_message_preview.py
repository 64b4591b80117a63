"""`mailmatrix preview FILE.csv --row N`: files written, what is printed, exit codes."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.cli import exits
from mailmatrix.cli.preview_cmd import preview_command

REPO = Path(__file__).resolve().parents[2]
DEMO_CSV = REPO / "examples" / "offer-letters" / "recipients.csv"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rendering"
CASE_15 = FIXTURES / "15-mime-structure-and-attachment-filename"
CASE_16 = FIXTURES / "16-undefined-template-variable"


@pytest.fixture(autouse=True)
def no_environment_settings(monkeypatch):
    monkeypatch.delenv("MAILMATRIX_SENDER", raising=False)
    monkeypatch.delenv("MAILMATRIX_UNSUBSCRIBE", raising=False)


def preview(*args: str):
    return CliRunner().invoke(preview_command, [str(a) for a in args])


def demo_line(status: str) -> int:
    """The line number of the first demo row with ``status``."""
    lines = DEMO_CSV.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if f",{status}," in line)


def test_preview_writes_eml_and_html_and_prints_headers_and_tree(tmp_path):
    line = demo_line("Offer")
    result = preview(DEMO_CSV, "--row", line, "--out", tmp_path, "--unsubscribe", "mailto:u@x.org")

    assert result.exit_code == exits.OK, result.output
    raw = (tmp_path / f"{line}.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    html = (tmp_path / f"{line}.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Dana Whitfield" in html
    assert f"{DEMO_CSV}: row {line}: template offer\n" in result.output
    assert f"Templates: bundled demo templates ({REPO / 'templates'})\n" in result.output
    assert "From: Acme Talent <talent@example.com>\n" in result.output
    assert f"Subject: {msg['Subject']}\n" in result.output
    assert "List-Unsubscribe: <mailto:u@x.org>\n" in result.output
    assert msg["List-Unsubscribe"] == "<mailto:u@x.org>"
    tree = result.output.split("MIME tree:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    attachment = next(msg.iter_attachments())
    assert [line.split(" (")[0] for line in tree] == [
        "  multipart/mixed",
        "    multipart/alternative",
        "      text/plain",
        "      text/html",
        "    application/pdf",
    ]
    assert f"(attachment; {attachment.get_filename()!r};" in tree[-1]
    assert f"{len(raw):,} bytes as sent" in result.output


def test_rejected_row_exits_4_with_the_reason(tmp_path):
    lines = DEMO_CSV.read_text(encoding="utf-8").splitlines()
    bad = next(n for n, text in enumerate(lines, start=1) if text.startswith("kwame.mensah@"))
    result = preview(DEMO_CSV, "--row", bad, "--out", tmp_path)
    assert result.exit_code == exits.ROWS_REJECTED
    assert f"row {bad}: rejected: Email: " in result.output
    assert list(tmp_path.iterdir()) == []


def test_row_that_does_not_exist_is_a_usage_error(tmp_path):
    result = preview(DEMO_CSV, "--row", 999, "--out", tmp_path)
    assert result.exit_code == exits.USAGE
    assert "no row starts on line 999" in result.output
    last = len(DEMO_CSV.read_text(encoding="utf-8").strip().splitlines())
    assert f"; the last row is row {last}" in " ".join(result.output.split())
    header = preview(DEMO_CSV, "--row", 1)  # the header is no row, and it says so
    assert header.exit_code == exits.USAGE
    assert "line 1 is the header: the first recipient is row 2" in " ".join(header.output.split())


def test_templates_that_do_not_fit_the_columns_make_the_file_unusable(tmp_path):
    result = preview(
        CASE_16 / "recipients.csv",
        "--row",
        2,
        "--templates",
        CASE_16 / "templates",
        "--sender",
        "s@example.com",
        "--out",
        tmp_path,
    )
    assert result.exit_code == exits.INPUT_UNUSABLE
    assert "body.txt: FirstName; body.html: Balance" in result.output


def test_a_column_named_like_a_manifest_constant_is_refused_before_rendering(tmp_path):
    # GIVEN the demo file with a `contact_email` column: the candidate's own address
    lines = DEMO_CSV.read_text(encoding="utf-8").splitlines()
    rows = [lines[0] + ",contact_email"] + [f"{line},me@example.net" for line in lines[1:]]
    path = tmp_path / "recipients.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"

    attachments = DEMO_CSV.parent / "attachments"
    result = preview(path, "--row", demo_line("Offer"), "--attachments", attachments, "--out", out)

    # THEN no letter is shown with the candidate's address as the one to write to
    assert result.exit_code == exits.INPUT_UNUSABLE
    output = " ".join(result.output.split())
    assert "column 'contact_email' has the name of the constant 'contact_email'" in output
    assert not out.exists() or list(out.iterdir()) == []


def test_without_any_sender_it_says_where_to_set_one(tmp_path):
    result = preview(
        CASE_15 / "recipients.csv",
        "--row",
        2,
        "--templates",
        CASE_15 / "templates",
        "--out",
        tmp_path,
    )
    assert result.exit_code == exits.USAGE
    assert "pass --sender, set MAILMATRIX_SENDER or 'sender'" in result.output


@pytest.mark.parametrize(
    ("sender", "message"),
    [
        ("not an address", "not an email address: 'not an address'"),
        ("Acme <talent@mail.test>", "'talent@mail.test': invalid address domain: "),
    ],
    ids=["no-address", "special-use-domain"],
)
def test_a_bad_sender_option_is_a_usage_error_like_runs(tmp_path, sender, message):
    result = preview(DEMO_CSV, "--row", demo_line("Offer"), "--sender", sender, "--out", tmp_path)

    assert result.exit_code == exits.USAGE
    assert f"Invalid value for '--sender': sender: {message}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_bad_sender_from_the_environment_is_a_bad_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILMATRIX_SENDER", "talent@acme.invalid")

    result = preview(DEMO_CSV, "--row", demo_line("Offer"), "--out", tmp_path)

    assert result.exit_code == exits.USAGE
    said = " ".join(result.output.split())
    assert "Invalid value for MAILMATRIX_SENDER: sender: 'talent@acme.invalid': invalid" in said
    assert list(tmp_path.iterdir()) == []


def test_sender_from_the_environment_and_non_ascii_attachment(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILMATRIX_SENDER", "Certificates <certs@example.com>")
    result = preview(
        CASE_15 / "recipients.csv",
        "--row",
        2,
        "--templates",
        CASE_15 / "templates",
        "--out",
        tmp_path,
    )
    assert result.exit_code == exits.OK, result.output
    msg = email.message_from_bytes((tmp_path / "2.eml").read_bytes(), policy=email.policy.default)
    assert str(msg["From"]) == "Certificates <certs@example.com>"
    assert next(msg.iter_attachments()).get_filename() == "Diplom_Zdeňka Šťastná.pdf"


def test_text_only_set_previews_as_a_pre_page(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "subject.txt").write_text("Hi {{ Name }}", encoding="utf-8")
    (templates / "body.txt").write_text("Dear {{ Name }} <3\n", encoding="utf-8")
    result = preview(
        CASE_15 / "recipients.csv",
        "--row",
        3,
        "--templates",
        templates,
        "--sender",
        "s@example.com",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == exits.OK, result.output
    page = (tmp_path / "out" / "3.html").read_text(encoding="utf-8")
    assert "<pre>Dear Pat Example &lt;3\n</pre>" in page
    assert "<title>Hi Pat Example</title>" in page


def test_a_preview_that_cannot_be_written_says_so_in_one_line(tmp_path):
    # GIVEN an --out folder where N.eml cannot be written (a folder holds its name)
    line = demo_line("Offer")
    (tmp_path / f"{line}.eml").mkdir()
    # WHEN the row is previewed there
    result = preview(DEMO_CSV, "--row", line, "--out", tmp_path)
    # THEN the command fails with the reason, not an OSError traceback
    assert result.exit_code == exits.RUN_FAILED, result.output
    assert f"--out {tmp_path}: cannot write the preview: " in result.output
    assert "Is a directory" in result.output
    assert not isinstance(result.exception, OSError)
