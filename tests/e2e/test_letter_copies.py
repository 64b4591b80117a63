"""A person's letter goes to no one else: not as a copy made for a campaign of another name,
nor renamed after it went out (the ledger keeps each letter's file by its digest)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

import mailmatrix.jobs as jobs
from mailmatrix.cli.main import cli
from mailmatrix.local import REPO

LETTERS = REPO / "examples" / "offer-letters" / "attachments"
HEADER = "Email,Name,Status,Attachment_File,Position,Department,Start_Date,Salary\n"


def _cli(*args: str) -> tuple[int, str]:
    """The exit code and standard output (the JSON object) of a command."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout


def _file(folder: Path, name: str, *rows: tuple[str, str, str]) -> Path:
    """A campaign's CSV in ``folder``: a row (email, name, attachment) per recipient."""
    path = folder / name
    lines = [f"{email},{person},Offer,{file},Dev,IT,2027-01-11,1\n" for email, person, file in rows]
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def _run(csv_path: Path, workdir: Path, *options: str) -> dict:
    code, output = _cli("run", str(csv_path), "--workdir", str(workdir), "--json", *options)
    assert code in (0, 3), output  # sent, or nothing sendable
    return json.loads(output)


def _validate(csv_path: Path, workdir: Path) -> tuple[int, dict]:
    code, output = _cli("validate", str(csv_path), "--workdir", str(workdir), "--json")
    return code, json.loads(output)


def _outbox(workdir: Path) -> list[Path]:
    return sorted((workdir / "outbox" / "new").iterdir())


def _annas_letter_sent(folder: Path) -> tuple[Path, Path]:
    """The attachments folder and workdir of a.csv, run: Anna's letter (anna.pdf) sent."""
    attachments, workdir = folder / "attachments", folder / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    first = _file(folder, "a.csv", ("anna@example.com", "Anna", "anna.pdf"))
    assert _run(first, workdir)["counts"]["sent"] == 1
    return attachments, workdir


def test_a_copy_of_a_letter_sent_by_another_campaign_is_refused_for_another_person(tmp_path):
    # GIVEN Anna's letter sent by a.csv, then a copy of her file made for Kim
    attachments, workdir = _annas_letter_sent(tmp_path)
    shutil.copy(attachments / "anna.pdf", attachments / "kim.pdf")

    # WHEN b.csv, another campaign, names the copy for Kim
    second = _file(tmp_path, "b.csv", ("kim@example.com", "Kim", "kim.pdf"))

    # THEN validate forecasts the refusal, naming the earlier campaign and the masked owner
    code, found = _validate(second, workdir)
    assert (code, found["valid"]) == (3, 0)
    (reject,) = found["rejected"]
    assert reject["row"] == 2 and reject["column"] == "Attachment_File"
    assert reject["reason"].startswith(
        "kim.pdf has the same contents as anna.pdf, which a run of a.csv (campaign c-"
    )
    assert "another recipient (a***@example.com)" in reject["reason"]
    # AND run sends nothing: the row is rejected
    result = _run(second, workdir)
    assert (result["counts"]["sent"], result["counts"]["rejected"]) == (0, 1)
    assert len(_outbox(workdir)) == 1

    # AND the same file to Anna herself in a new campaign is held back: she has it already
    third = _file(tmp_path, "c.csv", ("anna@example.com", "Anna", "kim.pdf"))
    assert _run(third, workdir)["counts"]["sent_under"] == 1
    assert len(_outbox(workdir)) == 1


def test_a_letter_renamed_after_it_went_out_is_refused_for_another_person(tmp_path):
    # GIVEN Alice's letter sent by offers.csv, then alice.pdf renamed carol.pdf
    attachments, workdir = tmp_path / "attachments", tmp_path / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "jose-garcia.pdf", attachments / "alice.pdf")
    alice = ("alice@example.com", "Alice", "alice.pdf")
    assert _run(_file(tmp_path, "offers.csv", alice), workdir)["counts"]["sent"] == 1
    (attachments / "alice.pdf").rename(attachments / "carol.pdf")

    # WHEN the file gets a row for Carol naming carol.pdf
    offers = _file(tmp_path, "offers.csv", alice, ("carol@example.com", "Carol", "carol.pdf"))

    # THEN validate forecasts Carol's row refused as a copy of the earlier letter
    _, found = _validate(offers, workdir)
    carol = [reject for reject in found["rejected"] if reject["row"] == 3]
    assert carol and carol[0]["reason"].startswith(
        "carol.pdf has the same contents as alice.pdf, which an earlier run of this file sent to"
        " another recipient (a***@example.com)"
    )
    # AND run sends Carol nothing
    result = _run(offers, workdir)
    assert result["counts"]["sent"] == 0
    assert len(_outbox(workdir)) == 1


def test_a_default_attachment_holding_a_letter_sent_by_another_campaign_is_refused(tmp_path):
    # GIVEN Anna's letter sent by a.csv, then a copy of her file made a set's default
    # attachment (the file for every row of the set without one of its own) by mistake
    attachments, workdir = _annas_letter_sent(tmp_path)
    shutil.copy(attachments / "anna.pdf", attachments / "terms.pdf")
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    manifest = yaml.safe_load((templates / "manifest.yaml").read_text(encoding="utf-8"))
    offer = {"when": ["Offer"], "attachment": "optional", "default_attachment": "terms.pdf"}
    manifest["sets"]["offer"] = offer
    (templates / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")

    # WHEN b.csv, another campaign, gives Kim and Lee that set's default
    second = _file(
        tmp_path, "b.csv", ("kim@example.com", "Kim", ""), ("lee@example.com", "Lee", "")
    )
    code, output = _cli(
        "run", str(second), "--workdir", str(workdir), "--templates", str(templates)
    )

    # THEN nothing is sent: the templates are refused, naming the letter the default copies
    assert code != 0
    assert "default_attachment terms.pdf" in output
    assert "same contents as anna.pdf, which a run of a.csv (campaign c-" in output
    assert len(_outbox(workdir)) == 1


def test_an_attachment_made_unreadable_after_validation_fails_its_row_saying_so(
    tmp_path, monkeypatch
):
    # GIVEN a.csv of Anna's and Kim's letters, Anna's file made unreadable (mode 000) once the
    # rows are validated, as the batch starts
    attachments = tmp_path / "attachments"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", attachments / "kim.pdf")
    path = _file(tmp_path, "a.csv", ("anna@example.com", "Anna", "anna.pdf"))
    path.write_text(path.read_text() + "kim@example.com,Kim,Offer,kim.pdf,Dev,IT,2027-01-11,1\n")
    send_batch = jobs.send_batch

    def unreadable_first(*args, **kwargs):
        (attachments / "anna.pdf").chmod(0)
        return send_batch(*args, **kwargs)

    monkeypatch.setattr(jobs, "send_batch", unreadable_first)
    workdir = tmp_path / "w"

    # WHEN the file is run
    shown = CliRunner().invoke(cli, ["run", str(path), "--workdir", str(workdir)])

    # THEN Anna's row failed, saying her file could not be read and what to do, not that it
    # changed; nothing went to her, and Kim's letter went
    said = " ".join(shown.output.split())
    assert shown.exit_code == 5, shown.output
    # (root may read any file: its mode says then that no one should)
    why = "its mode was changed to 000, which lets no one read it"
    why = why if os.geteuid() == 0 else "permission denied"
    assert (
        f"row 2 [AttachmentUnreadable]: attachment anna.pdf could not be read ({why}), so this"
        " row was not sent. Make the file readable by the user that runs MailMatrix, then send"
        " the failed rows again"
    ) in said
    assert "changed since" not in said
    assert len(_outbox(workdir)) == 1

    # AND once it is readable again, the retry of failed rows sends it
    (attachments / "anna.pdf").chmod(0o644)
    monkeypatch.setattr(jobs, "send_batch", send_batch)
    again = CliRunner().invoke(cli, ["run", str(path), "--workdir", str(workdir), "--retry-failed"])
    assert again.exit_code == 0, again.output
    assert len(_outbox(workdir)) == 2
