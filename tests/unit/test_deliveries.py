"""A local run counts the messages its mailers hand over, for its progress display."""

from __future__ import annotations

import multiprocessing

import pytest

from mailmatrix.adapters import deliveries
from mailmatrix.errors import PermanentSendError


class Outbox:
    """A mailer that accepts every message but those to a refused address."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.outbox = "here"

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        if "refused@example.com" in destinations:
            raise PermanentSendError("refused")
        self.sent.append(destinations)
        return f"id-{len(self.sent)}"


def send_three() -> None:
    """A worker's part: build its mailer and send three messages."""
    mailer = deliveries.counted(Outbox())
    for n in range(3):
        mailer.send(b"m", sender="s@example.com", destinations=[f"{n}@example.com"])


@pytest.fixture(autouse=True)
def no_count_left_over(monkeypatch):
    monkeypatch.setattr(deliveries, "_count", None)
    monkeypatch.setattr(deliveries, "_counting", False)


def test_without_a_count_started_the_mailer_is_used_as_it_is():
    # GIVEN no count started (as on AWS)
    mailer = Outbox()
    # THEN the mailer is not wrapped, and there is no count to show
    assert deliveries.counted(mailer) is mailer
    assert deliveries.handed_over() is None


def test_only_the_messages_the_mailer_accepted_are_counted():
    # GIVEN a count started and a mailer built then
    deliveries.start()
    mailer = deliveries.counted(Outbox())
    # WHEN it sends two messages and one is refused
    assert mailer.send(b"1", sender="s@example.com", destinations=["a@example.com"]) == "id-1"
    with pytest.raises(PermanentSendError):
        mailer.send(b"2", sender="s@example.com", destinations=["refused@example.com"])
    mailer.send(b"3", sender="s@example.com", destinations=["b@example.com"])
    # THEN two are counted, and the inner mailer's attributes still show through
    assert deliveries.handed_over() == 2
    assert mailer.outbox == "here"


def test_a_forked_worker_counts_into_the_parents_count_which_stays_readable_after_stop():
    # GIVEN a count started before a process is forked
    deliveries.start()
    worker = multiprocessing.get_context("fork").Process(target=send_three)
    worker.start()
    worker.join()
    assert worker.exitcode == 0
    # WHEN the count stops
    deliveries.stop()
    # THEN the parent reads the worker's three, and mailers built now do not count
    assert deliveries.handed_over() == 3
    fresh = Outbox()
    assert deliveries.counted(fresh) is fresh
