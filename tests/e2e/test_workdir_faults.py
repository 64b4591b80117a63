"""A workdir that cannot be written, or whose record of its runs is damaged: `run` says which
file, why, what was sent and what to do, with the exit status of its kind."""

from __future__ import annotations

import collections
import email
import email.policy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmatrix.cli.main import cli
from mailmatrix.local import REPO

RECIPIENTS = str(REPO / "examples" / "offer-letters" / "recipients.csv")


def _invoke(*args: str) -> tuple[int, str]:
    """Run the CLI; its exit code and output, lines joined as rich wraps them at 80 columns."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, " ".join(result.output.split())


def _sent(workdir: Path) -> collections.Counter:
    """How many messages the outbox holds for each recipient."""
    return collections.Counter(
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["To"]
        for path in (workdir / "outbox" / "new").iterdir()
    )


@pytest.fixture
def sent_once(tmp_path: Path) -> Path:
    """A workdir where the example campaign was sent: 18 letters in its outbox."""
    workdir = tmp_path / "w"
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(workdir))
    assert code == 0, output
    assert sum(_sent(workdir).values()) == 18
    return workdir


def test_a_damaged_record_of_the_runs_says_what_it_is_for_and_the_safe_ways_on(sent_once: Path):
    # GIVEN the workdir's deliveries.json damaged (a control character inside a string)
    deliveries = sent_once / "deliveries.json"
    deliveries.write_text('{"c-1": {"delivery": "out\tbox"}}', encoding="utf-8")

    # WHEN the file runs again there
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(sent_once))

    # THEN it is refused as a damaged workdir is (exit 2, not 3: the file is fine), saying
    # what the record is for, that nothing was sent, and the ways on
    assert code == 2, output
    assert f"mailmatrix run: {deliveries}: damaged, not readable (Invalid control" in output
    assert (
        "It records each file run in this workdir: how it was sent (the outbox or a mail"
        " server, its templates, attachments and sender) and how many of its letters the"
        " ledger held as sent" in output
    )
    assert "Nothing was sent. Put it back from a backup of the workdir" in output
    assert "the ledger alone cannot rebuild it" in output
    assert "Without a backup, move it aside (keep it)" in output
    # AND validate says the same, with run's exit code, not a traceback
    code, said = _invoke("validate", RECIPIENTS, "--workdir", str(sent_once))
    assert code == 2, said
    assert "`run` would refuse this file (DeliveriesDamaged)" in said

    # WHEN it is moved aside, as the message says, and the file runs again
    deliveries.rename(sent_once / "deliveries.json.damaged")
    code, output = _invoke("run", RECIPIENTS, "--workdir", str(sent_once))

    # THEN the ledger still skips everyone mailed: nobody gets a second letter
    assert code == 0, output
    assert "Nothing new sent: all 18 valid rows were already sent by an earlier run" in output
    assert set(_sent(sent_once).values()) == {1}
    # AND the record is made anew from that run
    assert json.loads(deliveries.read_text(encoding="utf-8"))
