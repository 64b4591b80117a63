"""A copy of a sent file under a new name does not mail its people the same letters again
(unless --send-again-from names the file), and a corrected address has its way out
(--corrected-address ROW), both recorded in the ledger."""

from __future__ import annotations

import csv
import email
import email.policy
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.local import REPO
from tests.e2e.test_letter_copies import LETTERS, _cli, _file, _outbox, _run, _validate

ANNA = ("anna@example.com", "Anna", "anna.pdf")
KIM = ("kim@example.com", "Kim", "kim.pdf")
EXAMPLE = REPO / "examples" / "offer-letters" / "recipients.csv"


def _sent(folder: Path) -> tuple[Path, Path]:
    """offers.csv of Anna and Kim, each with a letter of their own, run: two letters out."""
    attachments, workdir = folder / "attachments", folder / "w"
    attachments.mkdir()
    shutil.copy(LETTERS / "amelia-hart.pdf", attachments / "anna.pdf")
    shutil.copy(LETTERS / "chen-jing.pdf", attachments / "kim.pdf")
    offers = _file(folder, "offers.csv", ANNA, KIM)
    assert _run(offers, workdir)["counts"]["sent"] == 2
    return offers, workdir


def _choices(workdir: Path) -> list[tuple[str, str]]:
    """The operator's choices the workdir's ledger keeps."""
    with closing(sqlite3.connect(workdir / "ledger.sqlite3")) as db:
        return db.execute("SELECT choice, value FROM choices ORDER BY choice, value").fetchall()


def _recipients(workdir: Path) -> dict[str, int]:
    """How many letters each address has in the outbox."""
    found: dict[str, int] = {}
    for path in _outbox(workdir):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        address = message["To"].addresses[0].addr_spec
        found[address] = found.get(address, 0) + 1
    return found


def _rejects(result: dict) -> list[dict]:
    with open(result["rejects"], encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def test_a_renamed_copy_of_a_sent_file_sends_nothing_and_says_why(tmp_path):
    # GIVEN offers.csv sent, then copied as offers-fixed.csv (as a spreadsheet saves it)
    offers, workdir = _sent(tmp_path)
    fixed = tmp_path / "offers-fixed.csv"
    shutil.copy(offers, fixed)

    # WHEN the copy is validated THEN it forecasts the rows held back, naming the file, and
    # exits 0 as for a rerun of a sent file: nothing would fail
    code, found = _validate(fixed, workdir)
    assert (code, found["valid"]) == (0, 0)
    assert [(item["row"], item["outcome"], item["file"]) for item in found["skipped"]] == [
        (2, "already sent", "offers.csv"),
        (3, "already sent", "offers.csv"),
    ]
    shown = CliRunner().invoke(cli, ["validate", str(fixed), "--workdir", str(workdir)])
    said = " ".join(shown.output.split())
    assert (
        "2 of these rows (rows 2-3) went only to the local outbox under offers.csv (a trial?),"
        " not to the addresses (the same letters: the same attachments); the ledger counts them"
        " sent, so they will not be sent here."
    ) in said
    assert (shown.exit_code, "Nothing to send" in said) == (0, False)
    assert "Nothing new to send: the letters of the rows `run` could send went already" in said
    # AND one line says it for them all: no row of the table repeats it
    assert "went to the local outbox under" not in said

    # WHEN the copy is run THEN nothing goes out, and the rejects report says under which
    # file each letter went, and when
    result = _run(fixed, workdir)
    assert result["counts"]["sent_under"] == 2
    assert len(_outbox(workdir)) == 2
    lines = _rejects(result)
    assert [(line["row"], line["outcome"]) for line in lines] == [
        ("2", "already sent"),
        ("3", "already sent"),
    ]
    assert (
        "this letter (anna.pdf, the same contents) went to the local outbox under offers.csv"
        in (lines[0]["reason"])
    )
    assert " UTC (row 2 of that run; a trial?)" in lines[0]["reason"]

    # AND it exits 0 as a rerun of a sent file does (nothing failed), its summary saying why
    shown = CliRunner().invoke(cli, ["run", str(fixed), "--workdir", str(workdir)])
    said = " ".join(shown.output.split())
    assert (shown.exit_code, "NothingToSend" in said) == (0, False), said
    assert (
        "Nothing new sent: the letters of all 2 rows that could be sent went already to the"
        " same addresses under another file (listed above); nothing failed."
    ) in said
    # AND the state machine went past the Map to its summary, by NothingNewToSend
    execution = said.split("Execution: ")[1].split()[0]
    code, drawn = _cli("show", execution, "--workdir", str(workdir))
    assert code == 0, drawn
    (choice,) = [line for line in drawn.splitlines() if "AnythingToSend (Choice)" in line]
    assert ("SUCCEEDED" in choice, choice.endswith("→ NothingNewToSend")) == (True, True)
    assert "SendEmails (Map) NOT RUN" in drawn


def test_a_renamed_copy_sends_again_when_the_other_file_is_named(tmp_path):
    # GIVEN offers.csv sent, then copied as offers-final.csv
    offers, workdir = _sent(tmp_path)
    final = tmp_path / "offers-final.csv"
    shutil.copy(offers, final)

    # WHEN validate and run are told to send the letters of offers.csv again
    _, found = _validate(final, workdir)
    assert found["valid"] == 0
    again = ("--send-again-from", str(offers))
    shown = CliRunner().invoke(cli, ["validate", str(final), "--workdir", str(workdir), *again])
    assert shown.exit_code == 0, shown.output
    result = _run(final, workdir, *again)

    # THEN both letters go out again, and the ledger keeps the choice
    assert (result["counts"]["sent"], result["counts"].get("sent_under")) == (2, 0)
    assert len(_outbox(workdir)) == 4
    assert _choices(workdir) == [("send_again_from", "offers.csv")]
    # AND its result says the choice was used and recorded
    assert result["choices"] == {
        "send_again_from": ["offers.csv"],
        "corrected_address": [],
        "recorded": True,
    }


def test_a_corrected_address_gets_its_letter_once_and_no_one_else_does(tmp_path):
    # GIVEN offers.csv sent, then Kim's address corrected in it: the run fails her row
    offers, workdir = _sent(tmp_path)
    offers.write_text(offers.read_text().replace("kim@example.com", "kim@example.net"))
    code, output = _cli("run", str(offers), "--workdir", str(workdir), "--json")
    assert (code, json.loads(output)["counts"]["attachment_of_another"]) == (5, 1)
    # AND the row alone in a file of another name is refused, naming her file once
    alone = _file(tmp_path, "kim.csv", ("kim@example.net", "Kim", "kim.pdf"))
    code, found = _validate(alone, workdir)
    (reject,) = found["rejected"]
    assert reject["reason"].startswith(
        "kim.pdf was sent to another recipient (k***@example.com) under offers.csv (campaign c-"
    )
    assert (
        "--corrected-address ROW (that person's row in it: row 3 when it was sent)"
        in (reject["reason"])
    )
    assert len(_outbox(workdir)) == 2

    # WHEN offers.csv runs with her row named as corrected
    result = _run(offers, workdir, "--corrected-address", "3")

    # THEN one letter goes out, to her corrected address, and the ledger keeps the choice
    assert (result["counts"]["sent"], result["counts"]["skipped"]) == (1, 1)
    assert _recipients(workdir) == {
        "anna@example.com": 1,
        "kim@example.com": 1,
        "kim@example.net": 1,
    }
    assert _choices(workdir) == [("corrected_address", "3")]
    assert result["choices"] == {
        "send_again_from": [],
        "corrected_address": [3],
        "recorded": True,
    }
    # AND a later run of the file sends nothing more and fails nothing, and names no choice
    later = _run(offers, workdir)
    assert (later["counts"]["sent"], later["counts"]["failed"]) == (0, 0)
    assert len(_outbox(workdir)) == 3
    assert "choices" not in later


def test_the_summary_of_a_run_given_a_choice_says_it_was_used_and_recorded(tmp_path):
    # GIVEN offers.csv sent, a copy of it as offers-final.csv, and Kim's address corrected
    offers, workdir = _sent(tmp_path)
    final = tmp_path / "offers-final.csv"
    shutil.copy(offers, final)
    offers.write_text(offers.read_text().replace("kim@example.com", "kim@example.net"))
    _cli("run", str(offers), "--workdir", str(workdir))

    # WHEN the copy runs with --send-again-from, and offers.csv with --corrected-address
    again = CliRunner().invoke(
        cli, ["run", str(final), "--workdir", str(workdir), "--send-again-from", str(offers)]
    )
    corrected = CliRunner().invoke(
        cli, ["run", str(offers), "--workdir", str(workdir), "--corrected-address", "3"]
    )

    # THEN each summary says, in a line of its own, that the choice was used and recorded
    assert again.exit_code == 0, again.output
    assert (
        "--send-again-from offers.csv: used, and recorded in the ledger (the letters that went"
        " to the same addresses under it are not held back)."
    ) in again.output.splitlines()
    assert corrected.exit_code == 0, corrected.output
    assert (
        "--corrected-address 3: used, and recorded in the ledger (each row's letter goes to its"
        " corrected address, though its attachment went to the earlier one)."
    ) in corrected.output.splitlines()


def test_the_summary_of_a_redrive_names_the_choices_its_run_was_given(tmp_path):
    # GIVEN a copy of offers.csv run with --send-again-from offers.csv, stopped by the quota
    # after its first letter
    offers, workdir = _sent(tmp_path)
    final = tmp_path / "offers-final.csv"
    shutil.copy(offers, final)
    args = ["--workdir", str(workdir), "--batch-size", "1", "--concurrency", "1"]
    again = ("--send-again-from", str(offers))
    stopped = _cli("run", str(final), *args, *again, "--faults", "quota-after=1", "--json")[1]
    execution = json.loads(stopped)["execution"]
    assert len(_outbox(workdir)) == 3

    # WHEN the execution is redriven
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(workdir)])

    # THEN the second letter goes out again too, and the summary names the choice as the
    # run's did
    assert redriven.exit_code == 0, redriven.output
    assert len(_outbox(workdir)) == 4
    assert (
        "--send-again-from offers.csv: used, and recorded in the ledger (the letters that went"
        " to the same addresses under it are not held back)."
    ) in redriven.output.splitlines()


def _refused_by_both(csv_path: Path, workdir: Path, option: str, value: str, said: str) -> None:
    """validate, then run, of the file with ``option`` ``value`` each refuse it as a bad
    usage (exit 2), saying ``said``; nothing is sent or recorded."""
    for command in ("validate", "run"):
        args = [command, str(csv_path), "--workdir", str(workdir), option, value]
        result = CliRunner().invoke(cli, args)
        output = " ".join(result.output.split())
        assert result.exit_code == 2, output
        assert said in output
        assert "Nothing was sent or recorded" in output
    assert len(_outbox(workdir)) == 2
    assert _choices(workdir) == []


_NOT_HELD = "--corrected-address: row {}'s letter is not held back as another recipient's"


@pytest.mark.parametrize(
    ("file", "option", "value", "said"),
    [
        (
            "offers-final.csv",
            "--send-again-from",
            "never-run.csv",
            "no earlier run of never-run.csv",
        ),
        ("offers-final.csv", "--send-again-from", "OFFERS.csv", "no earlier run of OFFERS.csv"),
        (
            "offers-final.csv",
            "--send-again-from",
            "old\x1b[2J.csv\nBcc",
            "no earlier run of 'old\\x1b[2J.csv\\nBcc' in the workdir",
        ),
        ("offers-final.csv", "--send-again-from", "offers-final.csv", "names this file itself"),
        ("offers-final.csv", "--send-again-from", "", "an empty name, which names no file"),
        ("offers.csv", "--corrected-address", "2", _NOT_HELD.format(2)),
        ("offers.csv", "--corrected-address", "3", _NOT_HELD.format(3)),
        ("offers.csv", "--corrected-address", "9", "there is no row 9 in the file"),
        ("offers.csv", "--corrected-address", "4", "--corrected-address: row 4 is rejected"),
    ],
    ids=[
        "again-never-run",
        "again-case-variant",
        "again-control-characters-escaped",
        "again-the-file-itself",
        "again-empty",
        "corrected-address-unchanged",
        "corrected-already-sent",
        "corrected-no-such-row",
        "corrected-rejected",
    ],
)
def test_a_choice_a_run_could_not_act_on_is_refused_before_anything_is_sent_or_recorded(
    tmp_path, file, option, value, said
):
    # GIVEN offers.csv sent (Anna and Kim), then a row with a bad address added, and the file
    # copied as offers-final.csv
    offers, workdir = _sent(tmp_path)
    with offers.open("a", encoding="utf-8") as out:
        out.write("not-an-address,Lee,Offer,lee.pdf,Dev,IT,2027-01-11,1\n")
    shutil.copy(offers, tmp_path / "offers-final.csv")

    # WHEN validate and run are given a file never run here to send again from, or a row
    # whose letter is not held back as corrected
    # THEN each refuses it (exit 2), saying what is wrong; nothing is sent or recorded
    _refused_by_both(tmp_path / file, workdir, option, value, said)


def test_validate_forecasts_a_corrected_address_as_run_sends_it(tmp_path):
    # GIVEN offers.csv sent, then Kim's address corrected in it
    offers, workdir = _sent(tmp_path)
    offers.write_text(offers.read_text().replace("kim@example.com", "kim@example.net"))
    code, output = _cli("validate", str(offers), "--workdir", str(workdir), "--json")
    assert json.loads(output)["earlier_runs"]["attachment_of_another_before"] == 1

    # WHEN validate is told what run will be told: her row's address is corrected
    args = ("validate", str(offers), "--workdir", str(workdir), "--json")
    code, output = _cli(*args, "--corrected-address", "3")

    # THEN it forecasts her letter sent, as the run then sends it
    assert code == 0, output
    earlier = json.loads(output)["earlier_runs"]
    assert (earlier["attachment_of_another_before"], earlier["would_send"]) == (0, 1)
    assert _run(offers, workdir, "--corrected-address", "3")["counts"]["sent"] == 1


def test_a_copys_row_failed_as_outcome_unknown_under_the_other_file_is_said_may_have_been_sent(
    tmp_path,
):
    # GIVEN the example's file run with the timeout drill: row 4 failed as OutcomeUnknown (the
    # server may have taken it), the others sent; then the file copied under a new name
    offers = tmp_path / "offers.csv"
    offers.write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "attachments").symlink_to(EXAMPLE.parent / "attachments")
    workdir = tmp_path / "w"
    faults = ("--faults", "timeout=0.2,seed=2")
    first = CliRunner().invoke(cli, ["run", str(offers), "--workdir", str(workdir), *faults])
    assert "1 row(s) failed as OutcomeUnknown" in " ".join(first.output.split())
    copy = tmp_path / "offers-copy.csv"
    shutil.copy(offers, copy)

    # WHEN the copy is validated
    _, found = _validate(copy, workdir)
    shown = CliRunner().invoke(cli, ["validate", str(copy), "--workdir", str(workdir)])

    # THEN row 4 is held back as it may have been sent (in doubt), the others as sent
    held = {item["row"]: item["outcome"] for item in found["skipped"]}
    assert held[4] == "may have been sent (in doubt)"
    assert {held[row] for row in held if row != 4} == {"already sent"}
    said = " ".join(shown.output.split())
    assert (
        "1 of these rows (row 4) may have been sent (in doubt) to the same addresses under"
        " offers.csv: they are not sent here"
    ) in said
    assert (
        "17 of these rows (rows 2-3, 5-15, 17-20) went only to the local outbox under"
        " offers.csv (a trial?)"
    ) in said
    assert (
        "To send those of the trial for real: `run --smtp URL --send-again-from offers.csv` in"
        " this workdir, or `run --smtp URL` in another --workdir, whose ledger holds nothing of"
        " that trial; to send the others again on purpose: `run --send-again-from offers.csv`."
    ) in said
    assert "could send went already, or may have (below)" in said


def test_validate_after_a_run_of_a_copy_that_sent_nothing_says_so_not_no_earlier_run(tmp_path):
    # GIVEN offers.csv sent, then its copy run: every row held back, nothing sent
    offers, workdir = _sent(tmp_path)
    fixed = tmp_path / "offers-fixed.csv"
    shutil.copy(offers, fixed)
    execution = _run(fixed, workdir)["execution"]

    # WHEN the copy is validated again
    shown = CliRunner().invoke(cli, ["validate", str(fixed), "--workdir", str(workdir)])

    # THEN it says its earlier run sent nothing, naming it, not that there was none
    said = " ".join(shown.output.split())
    assert (
        f"(An earlier run of this file in {workdir}, execution {execution}, sent nothing: the"
        " ledger holds none of its letters, so `run` skips none of its rows.)"
    ) in said
    assert "No earlier run" not in said
