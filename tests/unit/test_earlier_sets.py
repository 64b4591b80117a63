"""Validation's question of the letters other files sent to an address in a set
(core.earlier.EarlierSets): asked only where the ledger holds other campaigns' letters."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from mailmatrix.core.earlier import EarlierSets
from mailmatrix.core.send import letter_set
from mailmatrix.ports import IN_DOUBT, SENDING, SENT, SentCopy


class _Ledger:
    """A ledger holding ``letters`` of other campaigns by person; it counts its questions."""

    def __init__(self, letters: dict[str, SentCopy]) -> None:
        self.letters, self.asked = letters, 0

    def sets_elsewhere(self, campaign: str) -> bool:
        self.asked += 1
        return bool(self.letters)

    def letters_of_sets(
        self, campaign: str, people: Mapping[str, str], again: Collection[str] = ()
    ) -> dict[str, SentCopy]:
        self.asked += 1
        found = {p: self.letters[p] for p in people if p in self.letters}
        return {p: letter._replace(template=people[p]) for p, letter in found.items()}


def _letter(state: str) -> SentCopy:
    return SentCopy("c-old", "", "", 57, "", "", "bewerber.csv", 0.0, state)


def test_a_ledger_without_other_campaigns_is_asked_once_and_rows_cost_nothing():
    # GIVEN a ledger that holds no other campaign's letters
    ledger = _Ledger({})
    sets = EarlierSets(ledger, campaign="c-new", person=letter_set)

    # WHEN 1000 rows are asked THEN none is held, and the ledger was asked once in all
    assert not sets
    assert [sets.sent_before(f"p{n}@example.com", "absage") for n in range(1000)] == [None] * 1000
    assert ledger.asked == 1


def test_a_letter_of_the_set_that_went_holds_the_row_one_in_doubt_is_left_to_the_claim():
    # GIVEN a letter of 'absage' sent to Kim under bewerber.csv, one in doubt to Lee
    kim = letter_set("Kim@Example.com", "absage")
    lee = letter_set("lee@example.com", "absage")
    ledger = _Ledger({kim: _letter(SENT), lee: _letter(IN_DOUBT)})
    sets = EarlierSets(ledger, campaign="c-new", person=letter_set)

    # THEN Kim's row of the set is held, named by its set (her address compared as the
    # ledger's keys compare it); her row of another set, and Lee's, are not held here
    held = sets.sent_before("kim@example.com", "absage")
    assert held is not None and (held.row, held.template) == (57, "absage")
    assert sets.sent_before("kim@example.com", "einladung") is None
    assert sets.sent_before("lee@example.com", "absage") is None


def test_a_row_the_run_skips_asks_nothing():
    # GIVEN a ledger with Kim's letter, and a run that skips her row (settled: a rerun)
    ledger = _Ledger({letter_set("kim@example.com", "absage"): _letter(SENT)})
    sets = EarlierSets(ledger, campaign="c-new", person=letter_set, skipped=lambda e, t: True)

    # WHEN her row is asked THEN nothing is held and the ledger is not asked about it
    assert sets.sent_before("kim@example.com", "absage") is None
    assert ledger.asked == 1


def test_validates_forecast_names_a_letter_of_the_set_in_doubt_or_being_sent():
    # GIVEN a letter of 'absage' in doubt to Lee under bewerber.csv, one being sent to Kim
    lee = letter_set("lee@example.com", "absage")
    kim = letter_set("kim@example.com", "absage")
    ledger = _Ledger({lee: _letter(IN_DOUBT), kim: _letter(SENDING)})

    # WHEN validate's forecast asks (doubtful: it has no claim to hold such rows back)
    sets = EarlierSets(ledger, campaign="c-new", person=letter_set, doubtful=True)

    # THEN both rows are held, each with its letter's state, as the run's claim holds them
    assert [
        sets.sent_before(e, "absage").state for e in ("lee@example.com", "kim@example.com")
    ] == [
        IN_DOUBT,
        SENDING,
    ]
