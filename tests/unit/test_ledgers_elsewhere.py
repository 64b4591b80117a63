"""The other workdirs' ledgers a batch asks before each letter (adapters.ledgers_elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.ledgers_elsewhere import LedgersElsewhere
from mailmatrix.errors import LedgerError
from mailmatrix.ports import LetterPrint

SERVER = "smtp://hr@127.0.0.1:2525"


def _sent(path: Path, key: str, person: str) -> None:
    """The other workdir's run sends ``person`` the letter of the set "absage", and ends."""
    ledger = SqliteLedger(path, delivery=SERVER)
    try:
        letter = LetterPrint("c-news", f"p-{key}", "news.csv", person=person, template="absage")
        ledger.claim(key, campaign="c-news", row=2, attempt="c-news/a", letter=letter)
        ledger.record_sent(key, message_id=f"m-{key}")
    finally:
        ledger.close()


def _setting(path: Path) -> str:
    return json.dumps({"B": {"ledger": str(path), "campaigns": {"c-news": [SERVER]}}})


def test_a_live_ledger_elsewhere_sees_the_letters_its_workdir_sends_after_it_opened(tmp_path):
    # GIVEN workdir B's ledger, one letter sent and no run of B's open (no -wal file beside it)
    ledger = tmp_path / "b" / "ledger.sqlite"
    ledger.parent.mkdir()
    _sent(ledger, "k-1", "s1")
    assert not ledger.with_name(f"{ledger.name}-wal").exists()

    # WHEN a batch of workdir A opens it, and B's next run then sends a letter to s2
    elsewhere = LedgersElsewhere(_setting(ledger), live=True)
    try:
        assert elsewhere
        _sent(ledger, "k-2", "s2")

        # THEN A asks B's ledger as it is now: the letter to s2 is found, named B's
        found = elsewhere.letters_of_sets({"s1": "absage", "s2": "absage"}, ())
    finally:
        elsewhere.close()
    assert sorted(found) == ["s1", "s2"]
    assert found["s2"].workdir == "B"
    assert elsewhere.unchecked == []


def test_a_batchs_ledger_elsewhere_that_cannot_be_read_stops_the_batch(tmp_path):
    # GIVEN workdir B's ledger, damaged
    ledger = tmp_path / "ledger.sqlite"
    ledger.write_bytes(b"not a database at all" * 100)

    # WHEN a batch through a mail server opens it THEN the batch stops, to be tried again
    # (LedgerError is retried), instead of sending without asking it
    with pytest.raises(LedgerError, match="the ledger of the workdir B, asked before each"):
        LedgersElsewhere(_setting(ledger), live=True, strict=True)

    # AND a validation leaves it out, said
    elsewhere = LedgersElsewhere(_setting(ledger))
    assert not elsewhere
    assert list(elsewhere.unread) == ["B"]
    assert "could not be checked" in elsewhere.unchecked[0]
