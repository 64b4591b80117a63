"""The walking skeleton: the bundled campaign end to end through the real state machine."""

from __future__ import annotations

import csv
import email
import email.policy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.core.templates import load_catalog
from mailmatrix.local import DEFAULT_TEMPLATES, REPO

EXAMPLE = REPO / "examples" / "offer-letters"
CSV = EXAMPLE / "recipients.csv"
INVALID_ADDRESS_LINE = 16  # kwame.mensah@example: no top-level domain
MISSING_PDF_LINE = 21  # sofia-bianchi.pdf is not in attachments/


def _rows() -> dict[int, dict[str, str]]:
    with CSV.open(encoding="utf-8", newline="") as stream:
        return {line: row for line, row in enumerate(csv.DictReader(stream), start=2)}


def _catalog():
    files = {
        p.relative_to(DEFAULT_TEMPLATES).as_posix(): p.read_text(encoding="utf-8")
        for p in DEFAULT_TEMPLATES.rglob("*")
        if p.is_file()
    }
    return load_catalog(files)


def _outbox(workdir: Path) -> list[email.message.EmailMessage]:
    files = sorted((workdir / "outbox" / "new").iterdir())
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]


def _run(workdir: Path) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["run", str(CSV), "--workdir", str(workdir), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    code, summary = _run(workdir)
    return workdir, code, summary


def test_first_run_succeeds_with_the_expected_counts(first_run):
    # GIVEN the bundled campaign of 20 candidates, one with an invalid address, one without PDF
    workdir, code, summary = first_run

    # THEN the execution succeeded and the counts say what happened
    assert code == 0
    assert summary["status"] == "SUCCEEDED"
    assert summary["execution"]
    counts = summary["counts"]
    assert (counts["rows"], counts["valid"], counts["sent"]) == (20, 18, 18)
    assert (counts["skipped"], counts["rejected"], counts["failed"]) == (0, 2, 0)
    assert Path(summary["outbox"]) == workdir / "outbox"
    # AND the report opens in Excel as UTF-8: one byte-order mark, then the header
    report = Path(summary["report"]).read_bytes()
    assert report.startswith(b"\xef\xbb\xbfrow,email,name,template,status,")
    assert report.count(b"\xef\xbb\xbf") == 1


def test_rejected_rows_are_reported_with_line_and_reason(first_run):
    _, _, summary = first_run

    with open(summary["rejects"], encoding="utf-8-sig", newline="") as stream:
        rejects = {int(r["row"]): r for r in csv.DictReader(stream)}

    assert sorted(rejects) == [INVALID_ADDRESS_LINE, MISSING_PDF_LINE]
    assert rejects[INVALID_ADDRESS_LINE]["column"] == "Email"
    assert "sofia-bianchi.pdf" in rejects[MISSING_PDF_LINE]["reason"]
    assert "not found" in rejects[MISSING_PDF_LINE]["reason"]


def test_outbox_holds_one_message_per_valid_row_with_its_template_and_pdf(first_run):
    workdir, _, _ = first_run
    rows = _rows()
    catalog = _catalog()
    valid = {
        line: row
        for line, row in rows.items()
        if line not in (INVALID_ADDRESS_LINE, MISSING_PDF_LINE)
    }
    messages = _outbox(workdir)

    # one message per valid row, addressed to that row
    assert len(messages) == len(valid) == 18
    by_address = {}
    for message in messages:
        (address,) = message["To"].addresses
        assert address.addr_spec not in by_address, "two messages to one recipient"
        by_address[address.addr_spec] = message
    expected = {}
    for row in valid.values():
        local, _, domain = row["Email"].partition("@")
        expected[f"{local}@{domain.encode('idna').decode()}"] = row
    assert set(by_address) == set(expected)

    for address, row in expected.items():
        message = by_address[address]
        (to,) = message["To"].addresses
        assert to.display_name == row["Name"]

        # the template of the row's Status, rendered with the row's fields
        choice = catalog.choose(row["Status"])
        assert choice.kind == "template"
        rendered = catalog.render(choice.template, row)
        assert message["Subject"] == rendered.subject

        # multipart/mixed: alternative (text, HTML) then the row's own PDF
        assert message.get_content_type() == "multipart/mixed"
        parts = list(message.iter_parts())
        assert parts[0].get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in parts[0].iter_parts()] == [
            "text/plain",
            "text/html",
        ]
        (pdf,) = [p for p in parts[1:] if p.get_content_type() == "application/pdf"]
        assert pdf.get_filename() == row["Attachment_File"]
        assert pdf.get_content() == (EXAMPLE / "attachments" / row["Attachment_File"]).read_bytes()


def test_second_run_sends_nothing_and_says_so(first_run):
    # GIVEN the campaign already ran in this workdir
    workdir, _, _ = first_run
    before = len(_outbox(workdir))

    # WHEN it runs again
    code, summary = _run(workdir)

    # THEN nothing new is sent, every valid row is reported as already sent, exit 0
    assert code == 0
    assert summary["status"] == "SUCCEEDED"
    assert summary["counts"]["sent"] == 0
    assert summary["counts"]["skipped"] == 18
    assert len(_outbox(workdir)) == before == 18


def test_human_output_names_outbox_report_and_rejects(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(CSV), "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "Outbox:" in result.output and "Report:" in result.output
    assert f"row {INVALID_ADDRESS_LINE}" in result.output
    assert f"row {MISSING_PDF_LINE}" in result.output


def test_fixing_rejected_rows_and_running_again_sends_only_the_fixed_rows(tmp_path):
    # GIVEN the campaign ran once: 18 sent, 2 rejected
    campaign = tmp_path / "offers"
    campaign.mkdir()
    (campaign / "attachments").symlink_to(EXAMPLE / "attachments")
    lines = CSV.read_text(encoding="utf-8").splitlines()
    (campaign / "recipients.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    workdir = tmp_path / "work"
    first = CliRunner().invoke(
        cli, ["run", str(campaign / "recipients.csv"), "--workdir", str(workdir), "--json"]
    )
    assert json.loads(first.stdout)["counts"]["sent"] == 18

    # WHEN the operator fixes the bad address, deletes a row above it (all later rows move)
    # and uploads the file again under the same name
    fixed = [line.replace("kwame.mensah@example,", "kwame.mensah@example.com,") for line in lines]
    del fixed[3]  # zoe.angstrom, already sent
    (campaign / "recipients.csv").write_text("\n".join(fixed) + "\n", encoding="utf-8")
    second = CliRunner().invoke(
        cli, ["run", str(campaign / "recipients.csv"), "--workdir", str(workdir), "--json"]
    )

    # THEN only the fixed row goes out; everyone else is skipped as already sent
    summary = json.loads(second.stdout)
    assert second.exit_code == 0
    assert (summary["counts"]["sent"], summary["counts"]["skipped"]) == (1, 17)
    delivered = [m["To"].addresses[0].addr_spec for m in _outbox(workdir)]
    assert len(delivered) == 19 == len(set(delivered))
    assert "kwame.mensah@example.com" in delivered
