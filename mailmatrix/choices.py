"""The operator's choices against rules that hold letters back (`run --send-again-from FILE`,
`--corrected-address ROW`), checked before a run sends or records anything: a choice that
names nothing a run would act on is refused (ChoiceRefused), not recorded in the ledger as if
it had been taken. `run` and `validate` read the workdir's ledger; `aws send` reads the
stack's (DynamoDB), each check by one query of its by_campaign index, never a scan.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.storage_local import LocalStorage, open_recipients
from mailmatrix.core.addresses import parse_address
from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.contents import StoredContents
from mailmatrix.core.earlier import SentFiles
from mailmatrix.core.recipients import read_rows
from mailmatrix.core.report import campaign_of
from mailmatrix.core.send import recipient_key
from mailmatrix.errors import ChoiceRefused
from mailmatrix.jobs import Source, campaign_id_for
from mailmatrix.local import Workdir, campaign_of_file, campaigns_elsewhere
from mailmatrix.ports import IN_DOUBT, NAMED, SENDING, UNKNOWN, FileOwner, SentCopy

NOTHING_DONE = "Nothing was sent or recorded"
ATTACHMENTS = "attachments/"  # the prefix a local run serves the attachments folder under


class ChoiceLedger(Protocol):
    """What the checks read of a ledger: SQLite's, or a deployed stack's DynamoDB table."""

    def has_entries(self, campaign: str) -> bool: ...

    def file_owners(self, campaign: str) -> Iterable[FileOwner]: ...


@dataclass(frozen=True)
class _Place:
    """Where the checks look for earlier runs, as a refusal names it."""

    campaign_of: Callable[[Path], str]  # the campaign of a file of that name run there
    where: str  # "in the workdir DIR", "on the stack NAME"
    other_runs: str  # where the other file's runs may be: "the --workdir of that file's runs"
    nothing_done: str


def check_choices(
    wd: Workdir,
    csv_file: Path,
    send_again_from: Collection[str],
    corrected: Collection[int],
    attachments: Path | None = None,
) -> None:
    """Refuse (ChoiceRefused) a --send-again-from name that is empty, names ``csv_file``
    itself, or names no file run in the workdir (its name as run, letter case too), and a
    --corrected-address row whose letter is not held back as another recipient's; where
    another file sent the row's file (in ``attachments``, the run's folder) to another
    address, the refusal names that file and its row. A file another workdir delivered
    through a mail server (the record of known workdirs says) is one run too: its letters
    hold rows back here (adapters.ledgers_elsewhere). Reads only."""
    place = _Place(
        campaign_of_file,
        f"in the workdir {wd.root}",
        "the --workdir of that file's runs",
        NOTHING_DONE,
    )
    with _ledger(wd) as ledger:
        elsewhere = None
        if ledger is not None and attachments is not None and corrected and attachments.is_dir():
            elsewhere = _sent_elsewhere(ledger, attachments, campaign_of_file(csv_file))
        ran = campaigns_elsewhere(wd) if send_again_from else frozenset()
        _check(ledger, place, csv_file, send_again_from, corrected, elsewhere, ran)


# The letter of another file that carried a row's own file (its cell) to another person than
# the row's address, or None (_sent_elsewhere).
_Elsewhere = Callable[[str, str], SentCopy | None]


def _sent_elsewhere(ledger: SqliteLedger, folder: Path, campaign: str) -> _Elsewhere:
    """Which letter of another file carried a row's own file (named in ``folder``, as intake
    compares files: SentFiles) to another recipient than the row's address."""
    storage = LocalStorage(folder, mounts={ATTACHMENTS: folder})
    index = AttachmentIndex.from_listing(storage.list(ATTACHMENTS), prefix=ATTACHMENTS)
    files = SentFiles(
        ledger,
        index,
        StoredContents(storage, ATTACHMENTS),
        campaign=campaign,
        recipient=recipient_key,
    )

    def letter(cell: str, email: str) -> SentCopy | None:
        found = index.lookup(cell)
        if found.problem or not files:
            return None
        other = files.another(found, email, "")
        return other if other is not None and other.campaign != campaign else None

    return letter


def check_deployed_choices(
    ledger: ChoiceLedger,
    bucket: str,
    stack: str,
    csv_file: Path,
    send_again_from: Collection[str],
    corrected: Collection[int],
) -> None:
    """The checks of check_choices for `aws send` of ``csv_file`` to the stack ``stack``
    (its bucket ``bucket``), against the stack's ledger, before anything is uploaded: the
    campaign of a file sent there is its key under incoming/ (a dry run's too: it forecasts
    the send)."""

    def campaign_of(path: Path) -> str:
        return campaign_id_for(Source(bucket, f"incoming/{path.name}", ""))

    place = _Place(
        campaign_of,
        f"on the stack {stack}",
        "the --stack of that file's runs",
        "Nothing was uploaded, sent or recorded",
    )
    _check(ledger, place, csv_file, send_again_from, corrected)


def refuse_names(csv_file: Path, send_again_from: Collection[str], nothing_done: str) -> None:
    """Refuse (ChoiceRefused) a --send-again-from name that is empty or names ``csv_file``
    itself: no ledger needed (`aws send` asks before it reaches the stack)."""
    name = csv_file.name
    for other in send_again_from:
        if not other.strip():
            raise ChoiceRefused(
                f"{name}: --send-again-from was given an empty name, which names no file."
                f" {nothing_done}: give the name of the file whose letters should go again"
            )
        if _nfc(other) == _nfc(name):
            raise ChoiceRefused(
                f"{name}: --send-again-from {_given(other)} names this file itself, whose own"
                f" letters are never held back as another file's. {nothing_done}: give the other"
                " file's name as `validate` names it, or leave the option out"
            )


def _check(
    ledger: ChoiceLedger | None,
    place: _Place,
    csv_file: Path,
    send_again_from: Collection[str],
    corrected: Collection[int],
    elsewhere: _Elsewhere | None = None,
    ran_elsewhere: Collection[str] = (),
) -> None:
    """The checks of check_choices against ``ledger`` (None: there is none yet), the
    campaigns ``ran_elsewhere`` (other workdirs') counted as run too."""
    name = csv_file.name
    refuse_names(csv_file, send_again_from, place.nothing_done)
    for other in send_again_from:
        campaigns = (place.campaign_of(Path(other)), other)
        ran = ledger is not None and any(ledger.has_entries(campaign) for campaign in campaigns)
        if not ran and not set(campaigns) & set(ran_elsewhere):
            raise ChoiceRefused(
                f"{name}: no earlier run of {_given(other)} {place.where} (a name as it was run,"
                f" letter case too). {place.nothing_done}: give the name `validate` names, or"
                f" {place.other_runs}"
            )
    if corrected:
        _check_corrected(ledger, place, csv_file, corrected, elsewhere)


def _check_corrected(
    ledger: ChoiceLedger | None,
    place: _Place,
    csv_file: Path,
    corrected: Collection[int],
    elsewhere: _Elsewhere | None = None,
) -> None:
    """Refuse the rows of ``corrected`` whose letter a run would not hold back as
    AttachmentOfAnother: no such row, an address no letter can go to, no file of its own,
    or one no earlier run of the file sent to another address. A row whose file another
    file sent to another address (``elsewhere``) is told the way that works: correct the
    address there, and run that file with --corrected-address of its row."""
    campaign = place.campaign_of(csv_file)
    owners: dict[str, str] = {}
    if ledger is not None:
        owners = {_fold(o.attachment): o.recipient for o in ledger.file_owners(campaign)}
    wanted = set(corrected)
    cells: dict[int, dict[str, str]] = {}
    with open_recipients(csv_file) as stream:
        for row, found in read_rows(stream, source=csv_file.name):
            if row in wanted:
                cells[row] = found
    problems = []
    for row in sorted(wanted):
        if row not in cells:
            problems.append(f"there is no row {row} in the file")
            continue
        address = parse_address(cells[row].get("Email", ""))
        owner = owners.get(_fold(cells[row].get("Attachment_File", "")))
        if address.problem:
            problems.append(f"row {row} is rejected ({address.problem}): no letter of it goes")
        elif owner is None or owner == recipient_key(campaign, address.email):
            cell = cells[row].get("Attachment_File", "")
            other = elsewhere(cell, address.email) if elsewhere and cell.strip() else None
            problems.append(
                f"row {row}'s letter is not held back as another recipient's (no earlier run"
                " of this file sent its file to another address)"
                if other is None
                else _corrected_there(row, cell, other)
            )
    if problems:
        raise ChoiceRefused(
            f"{csv_file.name}: --corrected-address: {'; '.join(problems)}."
            f" {place.nothing_done}: give only the rows `validate` names as AttachmentOfAnother"
            " under this file's earlier runs"
        )


def _corrected_there(row: int, cell: str, other: SentCopy) -> str:
    """Why row ``row`` cannot be corrected in this file: ``other``, a letter of another file,
    carried its file (``cell``) to another address; the correction is that file's to make."""
    source = other.source or "FILE"
    whom = f" ({other.masked})" if other.masked else ""
    went = _WENT.get(other.state, "went to")
    named = other.state == NAMED
    fixed = (
        f"If that row was the mistake, name that person's own file in it and run {source}"
        " again, with --retry-failed where that row failed (its letter then carries that"
        " file), then run this file again; if"
        if named
        else "If"
    )
    return (
        f"row {row}'s file {cell.strip()} {went} another address{whom} under another file,"
        f" {campaign_of(other)}, as row {other.row} of that run"
        f"{' (that letter never went)' if named else ''}, not under an earlier run of"
        f" this file, whose --corrected-address cannot release it. {fixed} that address was"
        f" wrong and this is the same person, correct it in {source} and run {source} with"
        f" --corrected-address {other.row}"
    )


# How _corrected_there says what became of the letter of another file (SentCopy.state).
_WENT = {
    SENDING: "is being sent to",
    IN_DOUBT: "may have gone to",
    UNKNOWN: "may have gone to",
    NAMED: "was named for",
}


def _given(name: str) -> str:
    """A name the operator gave, as a message shows it: as it is, or escaped as Python writes
    it (repr, as `settle` and `show` show a value given) where it holds a control character
    (a newline, ESC), which would break the message's line or act on the terminal."""
    return name if name.isprintable() else repr(name)


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _fold(name: str) -> str:
    """A file name as owners are looked up: NFC, its case folded, no blanks around."""
    return _nfc(name.strip()).casefold()


@contextlib.contextmanager
def _ledger(wd: Workdir) -> Iterator[SqliteLedger | None]:
    """The workdir's ledger, read-only (None: the workdir has none yet)."""
    if not wd.has_ledger():
        yield None
        return
    ledger = SqliteLedger(str(wd.ledger), read_only=True)
    try:
        yield ledger
    finally:
        ledger.close()
