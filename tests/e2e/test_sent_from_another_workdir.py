"""A letter a run from another workdir sent through a mail server is not sent again from this
one under another file (the trial that went wrong: an outbox trial in workdir A, the real send
through the server from workdir B, then a corrected file under a new name through the server
from A mailed everyone a second time): each workdir keeps its own ledger, and the record of
known workdirs names the others whose runs delivered through a server, so validation asks
their ledgers (read-only) for the letters of each row's set to its address, as it asks its own.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from tests.integration.test_smtp_campaign import Inbox, serving

PEOPLE = {
    "ann@example.com": "Ann Lee",
    "bo@example.com": "Bo Chan",
    "cy@example.com": "Cy Park",
}


@pytest.fixture
def server():
    """An SMTP server on loopback: what it took, and its URL."""
    with serving(inbox := Inbox()) as url:
        yield inbox, url


@pytest.fixture
def campaign(tmp_path, one_set_templates) -> Path:
    """offers.csv (Ann, Bo, Cy) beside a templates folder of one set, without attachments."""
    return _file(tmp_path / "offers.csv", PEOPLE)


def _file(path: Path, people: dict[str, str]) -> Path:
    rows = "".join(f"{email},{name}\n" for email, name in people.items())
    path.write_text("Email,Name\n" + rows, encoding="utf-8")
    return path


def _run(csv_path: Path, workdir: Path, *options: str) -> dict:
    """`run` of ``csv_path`` from ``workdir`` (the templates beside it); its --json result."""
    args = ["run", str(csv_path), "--workdir", str(workdir), "--json", "--sender", "hr@example.com"]
    templates = str(csv_path.parent / "tpl")
    done = CliRunner().invoke(cli, [*args, "--templates", templates, *options])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def _validate(csv_path: Path, workdir: Path) -> dict:
    """`validate --json` of ``csv_path`` as a run from ``workdir`` would send it."""
    args = ["validate", str(csv_path), "--workdir", str(workdir), "--json"]
    templates = str(csv_path.parent / "tpl")
    done = CliRunner().invoke(cli, [*args, "--templates", templates, "--sender", "hr@example.com"])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def _stopped_after_one(csv_path: Path, workdir: Path, url: str) -> tuple[str, str]:
    """`run` of ``csv_path`` from ``workdir`` through ``url``, the drill's daily quota stopping
    it after one letter: its execution, and what it printed."""
    args = ["run", str(csv_path), "--workdir", str(workdir), "--json", "--sender", "hr@example.com"]
    args += ["--templates", str(csv_path.parent / "tpl"), "--smtp", url]
    stopped = CliRunner().invoke(cli, [*args, "--faults", "quota-after=1"])
    return json.loads(stopped.stdout)["execution"], stopped.output


def _held(result: dict) -> dict[str, str]:
    """The rows the run held back, by row number: their reasons."""
    with open(result["rejects"], encoding="utf-8-sig", newline="") as stream:
        return {line["row"]: line["reason"] for line in csv.DictReader(stream)}


def _mailed(inbox: Inbox) -> Counter[str]:
    """How many letters the server took for each address."""
    return Counter(rcpt for _, rcpts, _ in inbox.envelopes for rcpt in rcpts)


def test_a_corrected_file_from_the_trials_workdir_mails_nobody_the_real_send_mailed(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN a trial of offers.csv into the outbox of workdir A, then the real send through
    # the server from workdir B
    assert _run(campaign, a)["counts"]["sent"] == 3
    assert _run(campaign, b, "--smtp", url)["counts"]["sent"] == 3
    assert _mailed(inbox) == Counter(list(PEOPLE))

    # WHEN a corrected file under a new name (Ann's name spelt anew, Dee added) runs through
    # the server from workdir A
    corrected = {**PEOPLE, "ann@example.com": "Ann Leigh", "dee@example.com": "Dee Ray"}
    fixed = _file(tmp_path / "offers-fixed.csv", corrected)
    result = _run(fixed, a, "--smtp", url)

    # THEN only Dee's letter goes: nobody gets a second one
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (1, 3)
    assert _mailed(inbox) == Counter(list(corrected))
    # AND each held row names workdir B, its file and its server, and the way to send it again
    held = _held(result)
    assert sorted(held) == ["2", "3", "4"]
    assert held["2"].startswith(
        f"a letter of the set 'default' went to this address from the workdir {b.resolve()}"
        " under offers.csv (campaign c-"
    )
    assert f" through {url} on " in held["2"]
    assert held["2"].endswith(
        "it is not sent again. To send it again on purpose, run this file with"
        f" --send-again-from offers.csv (in that workdir, --workdir {b.resolve()}, if this"
        " one ran a file of that name too)"
    )


def test_the_trials_name_given_to_send_again_does_not_send_the_other_workdirs_letters_again(
    campaign, server, tmp_path
):
    inbox, url = server
    trial, real = tmp_path / "trial", tmp_path / "real"

    # GIVEN a trial of offers.csv into the outbox of one workdir, and the real send of
    # offers.csv through the server from another (the first route the trial's advice gives)
    assert _run(campaign, trial)["counts"]["sent"] == 3
    assert _run(campaign, real, "--smtp", url)["counts"]["sent"] == 3

    # WHEN the second route is taken too: a copy under a new name through the server from the
    # trial's workdir, naming the trial's file to send again
    copy = _file(tmp_path / "offers-real.csv", PEOPLE)
    result = _run(copy, trial, "--smtp", url, "--send-again-from", "offers.csv")

    # THEN nobody is mailed twice: the name names the trial there, not the real send
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (0, 3)
    assert _mailed(inbox) == Counter(list(PEOPLE))
    assert f"from the workdir {real.resolve()} under offers.csv" in _held(result)["2"]


def test_send_again_from_the_other_workdirs_file_sends_the_letters_again(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent through the server from workdir B
    _run(campaign, b, "--smtp", url)

    # WHEN a new file of the same people runs from workdir A naming B's file to send again
    again = _file(tmp_path / "offers-again.csv", PEOPLE)
    result = _run(again, a, "--smtp", url, "--send-again-from", "offers.csv")

    # THEN every letter goes a second time, on purpose
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (3, 0)
    assert _mailed(inbox) == Counter({email: 2 for email in PEOPLE})


def test_letters_only_in_the_other_workdirs_outbox_hold_nothing_back(campaign, server, tmp_path):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv tried into the outbox of workdir B, then another file through the
    # server from there, to Bo only (the record names B)
    _run(campaign, b)
    bo = _file(tmp_path / "bo.csv", {"bo@example.com": "Bo Chan"})
    assert _run(bo, b, "--smtp", url, "--send-again-from", "offers.csv")["counts"]["sent"] == 1

    # WHEN a new file of the same people runs through the server from workdir A
    result = _run(_file(tmp_path / "offers-new.csv", PEOPLE), a, "--smtp", url)

    # THEN only Bo, whom the server mailed from B, is held back; B's trial holds nobody
    assert (result["counts"]["sent"], result["counts"]["sent_under"]) == (2, 1)
    assert _mailed(inbox) == Counter(list(PEOPLE))


def test_a_letter_in_doubt_in_the_other_workdir_is_held_as_may_have_been_sent(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent from workdir B, Ann's letter then failed there as OutcomeUnknown
    _run(campaign, b, "--smtp", url)
    with sqlite3.connect(b / "ledger.sqlite3") as db:
        db.execute("UPDATE sends SET state = 'failed', code = 'OutcomeUnknown' WHERE row = 2")

    # WHEN a new file of the same people is validated, then run, from workdir A
    new = _file(tmp_path / "offers-new.csv", PEOPLE)
    forecast = _validate(new, a)
    result = _run(new, a, "--smtp", url)

    # THEN all three are held back, Ann's as one that may have been sent (in doubt under
    # that file), and validate forecast the same rows
    counts = result["counts"]
    assert (counts["sent"], counts["sent_under"], counts["doubt_under"]) == (0, 2, 1)
    assert sorted(item["row"] for item in forecast["skipped"]) == [2, 3, 4]
    assert _mailed(inbox) == Counter(list(PEOPLE))
    reason = _held(result)["2"]
    assert reason.startswith(
        f"a letter of the set 'default' may have been sent to this address from the workdir"
        f" {b.resolve()} under offers.csv"
    )
    assert "which failed as OutcomeUnknown: the server may have taken it" in reason


def test_validate_forecasts_the_rows_the_run_holds_for_the_other_workdir(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent through the server from workdir B
    _run(campaign, b, "--smtp", url)

    # WHEN a file of Ann and Dee is validated for workdir A, then run there
    mixed = {"ann@example.com": "Ann Lee", "dee@example.com": "Dee Ray"}
    new = _file(tmp_path / "mixed.csv", mixed)
    forecast = _validate(new, a)
    result = _run(new, a, "--smtp", url)

    # THEN validate names Ann's row held back under B's file, as the run holds it
    assert [(item["row"], item["file"]) for item in forecast["skipped"]] == [(2, "offers.csv")]
    # AND says it counted B's letters through any server (validate takes no --smtp)
    said = "count their letters through any mail server, this file having never run through"
    assert any(said in warning for warning in forecast["warnings"]), forecast["warnings"]
    assert sorted(_held(result)) == ["2"]
    assert _mailed(inbox) == Counter([*PEOPLE, "dee@example.com"])


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_a_ledger_of_the_other_workdir_that_cannot_be_read_is_warned_of(
    campaign, server, tmp_path, damage
):
    _, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent through the server from workdir B, whose ledger is then lost
    _run(campaign, b, "--smtp", url)
    ledger = b / "ledger.sqlite3"
    for path in b.glob("ledger.sqlite3*"):
        path.unlink()
    if damage == "damaged":
        ledger.write_bytes(b"not a database at all" * 100)

    # WHEN a new file of the same people is validated, then run, into A's outbox
    new = _file(tmp_path / "offers-new.csv", PEOPLE)
    forecast = _validate(new, a)
    result = _run(new, a)

    # THEN both go on, warning that B's letters could not be checked (nothing crashed)
    said = f"the letters runs in the workdir {b.resolve()} sent through {url} could not be checked"
    assert any(said in warning for warning in forecast["warnings"]), forecast["warnings"]
    assert any(said in warning for warning in result["validation_warnings"]), result
    assert result["counts"]["sent"] == 3
    # AND B's ledger was not written to
    assert not ledger.exists() if damage == "missing" else ledger.read_bytes().startswith(b"not")


def test_a_redrive_holds_back_a_letter_another_workdir_sent_since_the_run(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN a run of new.csv through the server from workdir A that the drill's daily quota
    # stopped after Ann's letter (Bo's and Cy's not sent)
    new = _file(tmp_path / "new.csv", PEOPLE)
    execution, output = _stopped_after_one(new, a, url)
    assert _mailed(inbox) == Counter(["ann@example.com"]), output
    # AND then offers.csv, of the same people, sent through the server from workdir B
    sent = _run(campaign, b, "--smtp", url)
    assert (sent["counts"]["sent"], sent["counts"]["sent_under"]) == (2, 1)

    # WHEN A's execution is redriven
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(a)])

    # THEN Bo and Cy get no second letter: their rows are held back, naming workdir B
    assert _mailed(inbox) == Counter(list(PEOPLE)), redriven.output
    said = " ".join(redriven.output.split())
    assert f"went to this address from the workdir {b.resolve()} under offers.csv" in said


class _Refusing(Inbox):
    """An Inbox that refuses the addresses in ``refused`` for good (550)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_rerun_keeps_the_recorded_send_again_name_to_this_workdirs_run(campaign, tmp_path):
    trial, real = tmp_path / "trial", tmp_path / "real"
    with serving(inbox := _Refusing()) as url:
        # GIVEN a trial of offers.csv into the outbox of one workdir, then a copy under a new
        # name through the server from it naming offers.csv to send again, Bo refused
        assert _run(campaign, trial)["counts"]["sent"] == 3
        copy = _file(tmp_path / "offers-real.csv", PEOPLE)
        inbox.refused = {"bo@example.com"}
        args = ["run", str(copy), "--workdir", str(trial), "--json", "--sender", "hr@example.com"]
        args += ["--templates", str(tmp_path / "tpl"), "--smtp", url]
        CliRunner().invoke(cli, [*args, "--send-again-from", "offers.csv"])
        assert _mailed(inbox) == Counter(["ann@example.com", "cy@example.com"])
        # AND the real offers.csv through the server from another workdir, which mails Bo
        inbox.refused = set()
        _run(campaign, real, "--smtp", url)
        assert _mailed(inbox)["bo@example.com"] == 1

        # WHEN the copy's failed row is tried again, the name not given again (its run
        # recorded it)
        done = CliRunner().invoke(cli, [*args, "--retry-failed"])

    # THEN Bo is not mailed a second time: the recorded name names the trial here, not the
    # real send from the other workdir
    assert _mailed(inbox)["bo@example.com"] == 1, done.output


def _damage_ledger(workdir: Path) -> None:
    """Replace ``workdir``'s ledger (and its -wal, -shm) with a file that is no database."""
    for path in workdir.glob("ledger.sqlite3*"):
        path.unlink()
    (workdir / "ledger.sqlite3").write_bytes(b"not a database at all" * 100)


def _assert_refused_for(output: str, exit_code: int, named: str) -> None:
    """The command failed, refused for the ledger ``named`` before it sent anything."""
    said = " ".join(output.split())
    assert exit_code != 0, said
    assert named in said
    assert "nothing was sent. Make that ledger readable" in said


def test_a_run_through_the_server_is_refused_while_the_other_workdirs_ledger_cannot_be_read(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent through the server from workdir B, whose ledger is then damaged
    _run(campaign, b, "--smtp", url)
    _damage_ledger(b)

    # WHEN a new file of the same people runs through the server from workdir A
    new = _file(tmp_path / "offers-new.csv", PEOPLE)
    args = ["run", str(new), "--workdir", str(a), "--sender", "hr@example.com"]
    done = CliRunner().invoke(cli, [*args, "--templates", str(tmp_path / "tpl"), "--smtp", url])

    # THEN it is refused before sending, naming B's ledger and what to do: nobody is mailed
    # a second time
    _assert_refused_for(
        done.output, done.exit_code, f"offers-new.csv: the ledger of the workdir {b.resolve()}"
    )
    assert _mailed(inbox) == Counter(list(PEOPLE))


def test_a_workdir_deleted_since_does_not_stop_runs_through_the_server_it_is_warned_of(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent through the server from workdir B, which is then deleted whole
    _run(campaign, b, "--smtp", url)
    shutil.rmtree(b)

    # WHEN a file of another person runs through the server from workdir A
    result = _run(_file(tmp_path / "dee.csv", {"dee@example.com": "Dee Ray"}), a, "--smtp", url)

    # THEN it is sent (nothing is left to read of B: no refusal waits for it), warning that
    # B's letters could not be checked
    assert result["counts"]["sent"] == 1
    assert _mailed(inbox)["dee@example.com"] == 1
    said = f"the letters runs in the workdir {b.resolve()} sent through {url} could not be checked"
    assert any(said in warning for warning in result["validation_warnings"]), result


def test_a_redrive_through_the_server_is_refused_while_the_other_workdirs_ledger_cannot_be_read(
    campaign, server, tmp_path
):
    inbox, url = server
    a, b = tmp_path / "a", tmp_path / "b"

    # GIVEN offers.csv sent through the server from workdir B, and a run of others.csv through
    # it from workdir A that the drill's daily quota stopped after Dee's letter
    _run(campaign, b, "--smtp", url)
    others = _file(tmp_path / "others.csv", {"dee@example.com": "Dee", "eve@example.com": "Eve"})
    execution, output = _stopped_after_one(others, a, url)
    assert _mailed(inbox)["dee@example.com"] == 1, output
    # AND B's ledger then damaged
    _damage_ledger(b)

    # WHEN A's execution is redriven
    redriven = CliRunner().invoke(cli, ["redrive", execution, "--workdir", str(a)])

    # THEN it is refused before sending, naming B's ledger: Eve is not mailed
    named = f"others.csv: the ledger of the workdir {b.resolve()}"
    _assert_refused_for(redriven.output, redriven.exit_code, named)
    assert "eve@example.com" not in _mailed(inbox)
