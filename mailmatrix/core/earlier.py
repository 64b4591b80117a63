"""The files earlier runs of a campaign sent as their recipients' own, for intake.

The ledger knows each file a letter carried as its recipient's own by the name the row gave
it (Ledger.file_owners); a link to it or a copy of it under another name is another name to
the ledger. Intake holds the files the attachments location still holds under those names
to their recipients, as it holds the files of the rows it reads (see recipients._Intake):
a row of another recipient naming a link to one, or a file of the same bytes, is not sent.

Who a recipient is, the ledger keeps as recipient_key (a sha256 of the campaign and the
address), so intake asks ``recipient`` (that function for the campaign) only for the rows
whose file is one of these files or has the size of one; a campaign with no such files
costs nothing more. The table keeps each file as a few numbers in flat arrays (a hash of
its recipient, its letter's row, its size) and the masked addresses as one buffer.

The recipients earlier runs mailed (EarlierRecipients) are asked of the ledger by their
letters' keys, for the addresses in rows' Cc and Bcc only: a file without them costs nothing.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from mailmatrix.core.attachments import AttachmentIndex, Lookup
from mailmatrix.core.contents import Contents
from mailmatrix.core.seen import SeenTable, size_key
from mailmatrix.ports import (
    NAMED,
    OUTCOME_UNKNOWN,
    SENDING,
    SENT,
    FileOwner,
    Outcome,
    SentCopy,
)


class EarlierFiles:
    """The earlier letters' files the attachments listing still holds under their names."""

    def __init__(
        self,
        owners: Iterable[FileOwner],
        attachments: AttachmentIndex,
        recipient: Callable[[str], str],
    ) -> None:
        self._recipient = recipient
        self._files = SeenTable()  # file key (as intake keys files) -> entry number
        self._sizes = SeenTable()  # the sizes of the files
        self._keys, self._file_sizes = array("q"), array("q")
        self._prints, self._rows = array("q"), array("q")
        self._masked, self._ends = bytearray(), array("q")
        self._names: dict[int, str] = {}  # entry -> the file's name, of linked files only
        for owner in owners:
            name = owner.attachment  # as the row's lookup gave it: as listed
            size = attachments.size(name)
            if not size:
                continue  # gone, or emptied: nothing of it can go out again
            linked = attachments.same_file(name)
            key = hash(linked or name)
            entry = len(self._keys)
            if self._files.add(key, entry, 0) is not None:
                continue  # two names of one file went to two people before: the first
            if linked:
                self._names[entry] = name
            self._sizes.add(size_key(size), 0, 0)
            self._keys.append(key)
            self._file_sizes.append(size)
            self._prints.append(recipient_print(owner.recipient))
            self._rows.append(owner.row)
            self._masked += owner.masked.encode("utf-8")
            self._ends.append(len(self._masked))

    def __len__(self) -> int:
        return len(self._keys)

    def entry(self, key: int) -> int | None:
        """The entry of the file intake keys as ``key``, or None."""
        found = self._files.get(key)
        return None if found is None else found[0]

    def has_size(self, size: int) -> bool:
        """Whether one of the files has ``size`` bytes (only such a file can be a copy)."""
        return self._sizes.holds(size_key(size))

    def who(self, email: str) -> int:
        """The print of the recipient of ``email`` (an address as a row is sent to)."""
        return recipient_print(self._recipient(email))

    def belongs(self, entry: int, who: int) -> bool:
        """Whether the file of ``entry`` went to the recipient ``who`` (a print of who())."""
        return self._prints[entry] == who

    def whose(self, entry: int) -> int:
        """The recipient (a print of who()) the file of ``entry`` went to."""
        return self._prints[entry]

    def name(self, entry: int) -> str | None:
        """The name the letter gave its file, where the file has several (links); else None."""
        return self._names.get(entry)

    def letter(self, entry: int) -> tuple[int, str]:
        """The row of the letter that carried the file, and its recipient's masked address
        ("" where the ledger did not record it)."""
        start = self._ends[entry - 1] if entry else 0
        return self._rows[entry], self._masked[start : self._ends[entry]].decode("utf-8")

    def files(self) -> Iterator[tuple[int, int]]:
        """Each file's key and size."""
        return zip(self._keys, self._file_sizes, strict=True)


class SentLedger(Protocol):
    """What SentFiles asks the ledger (Ledger.sent_sizes, Ledger.sent_copies)."""

    def sent_sizes(self, sizes: Collection[int]) -> set[int]: ...

    def sent_copies(self, size: int, print: str) -> Iterable[SentCopy]: ...


class SentFiles:
    """The files letters of every campaign carried as their recipients' own, as the ledger
    keeps them (size, SHA-256 and print; Ledger.sent_copies), for intake to refuse a row
    whose own file holds the bytes of another person's letter: a copy made for a batch of
    another name (a new campaign), or the file renamed after it went out.

    The ledger is asked once for the sizes of the listed files that such letters have
    (kept here as a table of sizes); then, per row whose file has one of those sizes, the
    file's print is taken (a folder: three small reads; S3: the object read whole) and the
    letters of that size and print are read by the ledger's index; only when there is one is
    the file hashed whole, and only a letter of the same bytes is asked whose it was (by its
    campaign's recipient_key of the row's address). Nothing else of the ledger is held.
    """

    def __init__(
        self,
        ledger: SentLedger,
        attachments: AttachmentIndex,
        contents: Contents,
        *,
        campaign: str,
        recipient: Callable[[str, str], str],
        skipped: Callable[[str, str], bool] | None = None,
        send_again_from: Collection[str] = (),
        doubtful: bool = False,
    ) -> None:
        self._ledger = ledger
        self._attachments = attachments
        self._contents = contents
        self.campaign = campaign
        self._recipient = recipient
        # (address, template set) -> whether the run skips that letter (settled in the
        # ledger, not released by this upload): it goes nowhere, so its file is not asked
        # after, and a rerun of a sent file costs no query a row.
        self._skipped = skipped
        # The files (CSV names, or campaign ids) whose letters the operator sends again on
        # purpose (run --send-again-from): their letters hold nothing back (sent_before).
        self._again = frozenset(send_again_from)
        # Whether sent_before names a letter in doubt or being sent too: for validate's
        # forecast, which has no claim to hold such a row back as the run's send does.
        self._doubtful = doubtful
        # The last file asked after, its letters and its SHA-256 where had (_copies)
        self._read: tuple[tuple[str, int, str], list[SentCopy], str | None] | None = None
        self._asked: tuple[str, str, bool] | None = None  # the last row's skip (_skips)
        self._sizes = SeenTable()
        for size in ledger.sent_sizes(attachments.sizes()):
            self._sizes.add(size_key(size), 0, 0)

    def __bool__(self) -> bool:
        return len(self._sizes) > 0

    def another(self, found: Lookup, email: str, template: str) -> SentCopy | None:
        """The letter of another person (one that may have gone out) that carried the bytes
        of ``found``, the row's own file, as their own; None when there is none, or when the
        run skips the row's letter (``template``: its set; see ``skipped``). A letter
        of this campaign that carried the very name is the claim's to refuse (by name), and
        one whose file is still listed under its name with those bytes is intake's, as the
        rows' files and EarlierFiles are (their reasons name the rows)."""
        if not found.size or not self._sizes.holds(size_key(found.size)):
            return None  # (as _letters does first: the cheaper question before the skip)
        if self._skips(email, template):
            return None

        def own(letter: SentCopy) -> bool:
            return self._recipient(letter.campaign, email) == letter.recipient

        return next(self._letters(found, own), None)

    def sent_before(self, found: Lookup, email: str, template: str) -> SentCopy | None:
        """The letter of another campaign (another file) that carried the bytes of
        ``found``, the row's own file, to the row's own address (``email``): the same letter
        went to the same person already, and this one is not sent unless the operator named
        that file to send again (``send_again_from``). None when there is none, or when the
        run skips the row's letter (``template``: its set). A letter being sent now is left
        to the send: its print holds the row there, waiting for it; but named when
        ``doubtful`` (a forecast: validate holds the row back as that send would). One in
        doubt is named: the row is held back as in doubt there, its file its own (a copy of
        it for another row is that row's fault), as validate says."""
        if not found.size or not self._sizes.holds(size_key(found.size)):
            return None
        if self._skips(email, template):
            return None
        letters, sha256 = self._copies(found)
        for letter in letters:
            if letter.campaign == self.campaign or self._again & {letter.source, letter.campaign}:
                continue
            if letter.state == NAMED:
                continue  # it did not go out: nothing went to the address
            if letter.state == SENDING and not self._doubtful:
                continue  # its claim keeps the file: the send holds the row (busy)
            if self._recipient(letter.campaign, email) != letter.recipient:
                continue
            sha256 = sha256 or self._contents.sha256(found.name, found.tag)
            if letter.sha256 == sha256:
                return letter
        return None

    def _skips(self, email: str, template: str) -> bool:
        """Whether the run skips the letter of ``email`` and ``template`` (``skipped``),
        asked once for the row's two questions."""
        if self._skipped is None:
            return False
        if self._asked is None or self._asked[:2] != (email, template):
            self._asked = email, template, self._skipped(email, template)
        return self._asked[2]

    def _copies(self, found: Lookup) -> tuple[list[SentCopy], str | None]:
        """The ledger's letters of the size and print of ``found``, and the file's SHA-256
        where the print came with it; read once for the row's two questions (another,
        sent_before)."""
        asked = (found.name, found.size, found.tag)
        if self._read is None or self._read[0] != asked:
            print, sha256 = self._contents.fingerprint(found.name, found.tag)
            self._read = asked, list(self._ledger.sent_copies(found.size, print)), sha256
        return self._read[1], self._read[2]

    def anyones(self, found: Lookup) -> SentCopy | None:
        """The letter of anyone (one that may have gone out) that carried the bytes of
        ``found``, a default_attachment, as their own: a file for many that is one person's
        letter. Letters of this campaign are left as ``another`` leaves them."""
        return next(self._letters(found), None)

    def _letters(
        self, found: Lookup, own: Callable[[SentCopy], bool] | None = None
    ) -> Iterator[SentCopy]:
        """The letters ``another`` and ``anyones`` refuse ``found`` for; ``own``: whether a
        letter went to the person the file goes to (not hashed for then: a rerun). A letter
        that did not go out (NAMED) holds its file to its person against another campaign's
        rows (``another``) only: this campaign's owner records tell its own."""
        if not found.size or not self._sizes.holds(size_key(found.size)):
            return
        letters, sha256 = self._copies(found)
        for letter in letters:
            if letter.campaign == self.campaign and letter.attachment == found.name:
                continue
            if letter.state == NAMED and (own is None or letter.campaign == self.campaign):
                continue
            if own is not None and own(letter):
                continue  # the person's own letter (a rerun): no need to hash the file
            sha256 = sha256 or self._contents.sha256(found.name, found.tag)
            if letter.sha256 != sha256:
                continue
            if letter.campaign != self.campaign or not self._still_listed(letter, found.size):
                yield letter

    def _still_listed(self, letter: SentCopy, size: int) -> bool:
        """Whether the file of ``letter`` (of this campaign, ``size`` bytes) is listed under
        its name still, with the bytes the letter carried."""
        name = letter.attachment
        if self._attachments.size(name) != size:
            return False
        return self._contents.sha256(name, self._attachments.tag(name)) == letter.sha256


class SetLedger(Protocol):
    """What EarlierSets asks the ledger (Ledger.sets_elsewhere, Ledger.letters_of_sets)."""

    def sets_elsewhere(self, campaign: str) -> bool: ...

    def letters_of_sets(
        self, campaign: str, people: Mapping[str, str], again: Collection[str] = ()
    ) -> dict[str, SentCopy]: ...


class EarlierSets:
    """The letters other campaigns (other files) sent to an address in a template set, for
    intake to hold back a row whose letter of that set went to its address already under
    another file, its text changed or not (a re-export that spells a name anew): as a row
    whose very letter went (SentFiles.sent_before), unless the operator named that file to
    send again.

    The ledger keeps no address, only a hash of each letter's address and set
    (core.send.letter_set), asked by its index a row at a time; a ledger that holds no letters
    of another campaign is asked once, and its rows cost nothing (falsy then).
    """

    def __init__(
        self,
        ledger: SetLedger,
        *,
        campaign: str,
        person: Callable[[str, str], str],
        skipped: Callable[[str, str], bool] | None = None,
        send_again_from: Collection[str] = (),
        doubtful: bool = False,
    ) -> None:
        self._ledger = ledger
        self.campaign = campaign
        self._person = person  # letter_set
        self._skipped = skipped
        self._again = frozenset(send_again_from)
        self._doubtful = doubtful  # as SentFiles': validate's forecast names them all
        self._any = ledger.sets_elsewhere(campaign)

    def __bool__(self) -> bool:
        return self._any

    def sent_before(self, email: str, template: str) -> SentCopy | None:
        """The letter of ``template`` that went to ``email`` under another file, not one sent
        again on purpose; None when there is none, or when the run skips the row's letter.
        One that only may have gone (in doubt, being sent) is named when ``doubtful``."""
        if not self._any or (self._skipped is not None and self._skipped(email, template)):
            return None
        person = self._person(email, template)
        found = self._ledger.letters_of_sets(self.campaign, {person: template}, self._again)
        letter = found.get(person)
        # One that only may have gone (in doubt there, being sent) is the claim's to hold
        # back: its row is counted apart (DOUBT_UNDER_CODE) or waits, which intake cannot say;
        # validate, which sends nothing, says it (held_under_outcome). One kept in another
        # workdir's ledger (``workdir``) has no claim here to hold its row: held now.
        if letter is None or (
            letter.state not in (SENT, "") and not self._doubtful and not letter.workdir
        ):
            return None
        return letter


class LetterLedger(Protocol):
    """What EarlierRecipients asks the ledger (Ledger.template_sets, Ledger.outcomes_of)."""

    def template_sets(self, campaign: str) -> frozenset[str]: ...

    def outcomes_of(self, keys: Sequence[str]) -> dict[str, Outcome]: ...


class EarlierRecipients:
    """The recipients earlier runs of a campaign may have sent a letter to, for intake to
    refuse a row whose Cc or Bcc names one: that person would get another's letter.

    The ledger keeps no address, only each letter's key (its campaign, address and template
    set), so an address is asked as the keys of its letters of every set the campaign has
    used, in one batched read (Ledger.outcomes_of) per row that names new ones. Each address
    is asked once (a table of 8-byte hashes); a row whose own letter the run skips (``skipped``,
    as for SentFiles: it goes nowhere) asks nothing.
    """

    def __init__(
        self,
        ledger: LetterLedger,
        *,
        campaign: str,
        key: Callable[[str, str, str], str],
        skipped: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._ledger = ledger
        self.campaign = campaign
        self._key = key  # idempotency_key
        self._skipped = skipped
        self._sets: frozenset[str] | None = None  # read at the first question
        self._asked = SeenTable()  # hash of an address -> flag: mailed

    def mailed(self, addresses: Collection[str], email: str, template: str) -> set[str]:
        """Of ``addresses`` (in Cc or Bcc of the row sent to ``email`` with the set
        ``template``), those an earlier run may have sent a letter to; none when the run skips
        the row's letter."""
        if not addresses or (self._skipped is not None and self._skipped(email, template)):
            return set()
        new = [address for address in addresses if not self._asked.holds(hash(address))]
        if new:
            if self._sets is None:
                self._sets = self._ledger.template_sets(self.campaign)
            keys = {self._key(self.campaign, a, name): a for a in new for name in self._sets}
            found = self._ledger.outcomes_of(list(keys)) if keys else {}
            gone = {keys[key] for key, outcome in found.items() if _may_have_gone(outcome)}
            for address in new:
                self._asked.add(hash(address), int(address in gone), 0)
        return {address for address in addresses if self._answer(address)}

    def _answer(self, address: str) -> bool:
        """Whether the ledger said ``address`` was mailed (asked already)."""
        found = self._asked.get(hash(address))
        return found is not None and found[0] == 1


def _may_have_gone(outcome: Outcome) -> bool:
    """Whether the letter of ``outcome`` may have reached its recipient: sent, claimed (by a
    run that may have sent it), failed as OutcomeUnknown, or doubtful."""
    return (
        outcome.state in ("sent", "claimed") or outcome.code == OUTCOME_UNKNOWN or outcome.doubtful
    )


def recipient_print(recipient: str) -> int:
    """A recipient_key as a number (its hash: both sides are taken in one process)."""
    return hash(recipient)
