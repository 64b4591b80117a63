"""The ledgers of other workdirs, read for the letters of a set they sent to an address
through a mail server (a local run's validation, and validate's forecast).

Each workdir keeps its own ledger, so a file run in one knows nothing of the letters
another's runs sent: a corrected file under a new name would mail again the people a run
from another workdir mailed. The record of known workdirs (local.KnownWorkdirs) names every
workdir that delivered through a mail server and which campaigns; the run gives validation
those ledgers (MAILMATRIX_OTHER_LEDGERS: {workdir: {"ledger": FILE, "campaigns": {campaign:
[server, ...]}}}) and EarlierSets asks them after its own (HereAndElsewhere): a letter of
one of those campaigns holds the row back as one of its own ledger's does. The letter's
hash of address and set (core.send.letter_set) is a plain SHA-256, the same in every
ledger, so each is asked by its index sends_by_person: one read a row per ledger.

Every other ledger is opened read-only (nothing is written there or beside it). One that is
not there, locked or damaged is left out with a warning (``unchecked``, ``unread``: a run
through a mail server is refused before it sends, local.check_other_ledgers); a batch's
through one (``strict``) stops the batch instead (LedgerError: retried, or redriven). Letters of its
campaigns that went to the outbox (trials) never hold a row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.core.earlier import SetLedger
from mailmatrix.errors import LedgerError, MailMatrixError
from mailmatrix.ports import SENT, LetterPrint, SentCopy

log = logging.getLogger(__name__)


class OtherLedger(NamedTuple):
    """Another workdir's ledger, opened, and the campaigns it sent through mail servers."""

    workdir: str
    ledger: SqliteLedger
    servers: dict[str, list[str]]  # campaign -> the servers it went through
    # --send-again-from names the run's own workdir ran too: they name those runs, and send
    # none of this workdir's letters again (an outbox trial's name is no licence to mail
    # again the people a run from here mailed under that name)
    not_again: frozenset[str] = frozenset()


class LedgersElsewhere:
    """The other workdirs' ledgers a setting names (MAILMATRIX_OTHER_LEDGERS), opened
    read-only; those that could not be read are said in ``unchecked``."""

    def __init__(self, setting: str, *, live: bool = False, strict: bool = False) -> None:
        """Open the ledgers ``setting`` names; ``live``: each sees the letters its workdir's
        runs commit after it opened (a batch asks before each letter), else each is read as
        it is now (a validation). ``strict`` (a batch through a mail server): one that cannot
        be read raises LedgerError (the batch stops, to be tried again); else it is left
        out, said."""
        self.unchecked: list[str] = []
        # The workdirs whose ledgers were left out, each with why
        self.unread: dict[str, str] = {}
        self.found_any = False  # whether a letter of theirs was found (letters_of_sets)
        self._live = live
        self._strict = strict
        self._ledgers: list[OtherLedger] = []
        try:
            for workdir, named in _named(setting).items():
                servers = {str(c): [str(s) for s in used] for c, used in named["campaigns"].items()}
                opened = self._open(workdir, Path(named["ledger"]), servers)
                if opened is not None:
                    held = frozenset(str(name) for name in named.get("not_again", []))
                    self._ledgers.append(OtherLedger(workdir, opened, servers, held))
        except BaseException:
            self.close()
            raise

    def __bool__(self) -> bool:
        return bool(self._ledgers)

    def _open(self, workdir: str, path: Path, servers: dict[str, list[str]]) -> SqliteLedger | None:
        """The ledger at ``path``, read-only and asked once (a damaged file fails here);
        None, said in ``unchecked``, when it cannot be; None too when it keeps no letter by
        its address and set (nothing there to ask)."""
        if not path.is_file():  # a workdir deleted or moved: warned of, nothing to wait for
            self._warn(workdir, servers, "its ledger is not there (moved or deleted?)")
            return None
        ledger = None
        try:
            ledger = self._opened(path)
            if ledger.sets_elsewhere(""):
                return ledger
        except (MailMatrixError, OSError, sqlite3.Error) as exc:
            if ledger is not None:
                ledger.close()
                ledger = None
            self._give_up(workdir, servers, f"its ledger could not be read ({exc})")
        if ledger is not None:
            ledger.close()
        return None

    def _opened(self, path: Path) -> SqliteLedger:
        """The ledger at ``path`` read-only, live if asked and it can be: a live read makes
        the -wal and -shm files beside a ledger where they are missing, which a folder the
        user cannot write refuses; that ledger is read as it is now (a batch opens it anew)."""
        if self._live:
            ledger = SqliteLedger(path, read_only=True, live=True)
            try:
                ledger.sets_elsewhere("")
                return ledger
            except (MailMatrixError, sqlite3.Error) as exc:
                ledger.close()
                log.debug("ledgers elsewhere: %s read as it is now: %s", path, exc)
        return SqliteLedger(path, read_only=True)

    def _give_up(self, workdir: str, servers: Mapping[str, list[str]], why: str) -> None:
        if self._strict:
            raise LedgerError(
                f"the ledger of the workdir {workdir}, asked before each letter for the"
                f" letters runs there sent, could not be read: {why}. The batch stopped; none"
                " of its letters that were not sent yet was sent, and it is tried again. Make"
                " that ledger readable, then redrive the run if every try failed"
            )
        self.unread[workdir] = why
        self._warn(workdir, servers, why)

    def _warn(self, workdir: str, servers: Mapping[str, list[str]], why: str) -> None:
        """Say that the letters of ``workdir`` could not be checked (``unchecked``)."""
        through = ", ".join(sorted({server for found in servers.values() for server in found}))
        self.unchecked.append(
            f"the letters runs in the workdir {workdir} sent through {through} could not be"
            f" checked: {why}. A row whose person a run there mailed may be sent again: run"
            " this file again once that ledger can be read, or take such rows out first"
        )
        log.debug("ledgers elsewhere: %s left out: %s", workdir, why)

    def around(self, own: SetLedger | None) -> HereAndElsewhere:
        """A ledger for EarlierSets that asks ``own`` (the run's; None: none yet), then these."""
        return HereAndElsewhere(own, self)

    def letters_of_sets(
        self, people: Mapping[str, str], again: Collection[str]
    ) -> dict[str, SentCopy]:
        """For each of ``people`` (letter_set -> its set), the letter of its set to its address
        that a campaign of another workdir sent through a mail server (may have, in doubt, or
        is sending), not of a file of ``again``; each naming its workdir and server. A ledger
        that fails now is left out from here on, said in ``unchecked`` (a batch's, ``strict``:
        LedgerError)."""
        found: dict[str, SentCopy] = {}
        for other in list(self._ledgers):
            rest = {person: people[person] for person in people if person not in found}
            if not rest:
                break
            try:
                excused = [name for name in again if name not in other.not_again]
                letters = other.ledger.letters_of_sets("", rest, excused, among=other.servers)
            except (MailMatrixError, sqlite3.Error) as exc:
                self._give_up(other.workdir, other.servers, f"its ledger could not be read ({exc})")
                self._ledgers.remove(other)
                other.ledger.close()
                continue
            for person, letter in letters.items():
                if letter.outbox:  # a trial into that workdir's outbox: nobody got it
                    continue
                server = ", ".join(other.servers.get(letter.campaign, []))
                found[person] = letter._replace(workdir=other.workdir, server=server)
        self.found_any = self.found_any or bool(found)
        return found

    def letter_of(self, letter: LetterPrint) -> SentCopy | None:
        """The letter of ``letter``'s set to its address another workdir sent (as
        letters_of_sets), for a letter about to be sent; None: none, or not asked."""
        if not letter.person:
            return None
        found = self.letters_of_sets({letter.person: letter.template}, letter.again)
        return found.get(letter.person)

    def close(self) -> None:
        """Close the ledgers."""
        for other in self._ledgers:
            other.ledger.close()
        self._ledgers = []


class HereAndElsewhere:
    """The run's own ledger and the other workdirs', as EarlierSets asks one ledger: a person
    whose letter the own ledger has not as sent, or only as sent to its outbox (a trial), is
    asked of the others; a letter they keep is the one named (it reached the person)."""

    def __init__(self, own: SetLedger | None, elsewhere: LedgersElsewhere) -> None:
        self._own = own
        self._elsewhere = elsewhere

    def sets_elsewhere(self, campaign: str) -> bool:
        """Whether the own ledger, or any other, keeps letters to ask."""
        own = self._own is not None and self._own.sets_elsewhere(campaign)
        return own or bool(self._elsewhere)

    def letters_of_sets(
        self, campaign: str, people: Mapping[str, str], again: Collection[str] = ()
    ) -> dict[str, SentCopy]:
        """The own ledger's letters of ``people``; for those it has none sent but to its
        outbox, the others' where they have one."""
        found = {} if self._own is None else self._own.letters_of_sets(campaign, people, again)
        rest = {p: people[p] for p in people if found.get(p) is None or not _sent(found[p])}
        if rest and self._elsewhere:
            found.update(self._elsewhere.letters_of_sets(rest, again))
        return found


def _sent(letter: SentCopy) -> bool:
    """Whether ``letter`` (the own ledger's) went to its address: sent, not to the outbox."""
    return letter.state in (SENT, "") and not letter.outbox


def _named(setting: str) -> dict[str, Any]:
    """The ledgers MAILMATRIX_OTHER_LEDGERS names ({} for none, or a value not so written:
    it is the run's own, never an operator's)."""
    if not setting:
        return {}
    try:
        found = json.loads(setting)
    except ValueError:
        log.debug("ledgers elsewhere: MAILMATRIX_OTHER_LEDGERS not read")
        return {}
    return found if isinstance(found, dict) else {}
