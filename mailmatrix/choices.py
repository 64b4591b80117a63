"""The operator's choices against rules that hold letters back (`run --send-again-from FILE`,
`--corrected-address ROW`), checked before a run sends or records anything: a choice that
names nothing a run would act on is refused (ChoiceRefused), not recorded in the ledger as if
it had been taken.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Collection, Iterator
from pathlib import Path

from mailmatrix.adapters.ledger_sqlite import SqliteLedger
from mailmatrix.adapters.storage_local import open_recipients
from mailmatrix.core.addresses import parse_address
from mailmatrix.core.recipients import read_rows
from mailmatrix.core.send import recipient_key
from mailmatrix.errors import ChoiceRefused
from mailmatrix.local import Workdir, campaign_of_file

NOTHING_DONE = "Nothing was sent or recorded"


def check_choices(
    wd: Workdir, csv_file: Path, send_again_from: Collection[str], corrected: Collection[int]
) -> None:
    """Refuse (ChoiceRefused) a --send-again-from name that is empty, names ``csv_file``
    itself, or names no file run in the workdir (its name as run, letter case too), and a
    --corrected-address row whose letter is not held back as another recipient's. Reads only."""
    name = csv_file.name
    for other in send_again_from:
        if not other.strip():
            raise ChoiceRefused(
                f"{name}: --send-again-from was given an empty name, which names no file."
                f" {NOTHING_DONE}: give the name of the file whose letters should go again"
            )
        if _nfc(other) == _nfc(name):
            raise ChoiceRefused(
                f"{name}: --send-again-from {other} names this file itself, whose own letters"
                f" are never held back as another file's. {NOTHING_DONE}: give the other"
                " file's name as `validate` names it, or leave the option out"
            )
        if not (_holds(wd, campaign_of_file(Path(other))) or _holds(wd, other)):
            raise ChoiceRefused(
                f"{name}: no earlier run of {other} in the workdir {wd.root} (a name as it was"
                f" run, letter case too). {NOTHING_DONE}: give the name `validate` names, or"
                " the --workdir of that file's runs"
            )
    if corrected:
        _check_corrected(wd, csv_file, corrected)


def _check_corrected(wd: Workdir, csv_file: Path, corrected: Collection[int]) -> None:
    """Refuse the rows of ``corrected`` whose letter a run would not hold back as
    AttachmentOfAnother: no such row, an address no letter can go to, no file of its own,
    or one no earlier run of the file sent to another address."""
    campaign = campaign_of_file(csv_file)
    owners: dict[str, str] = {}
    if wd.has_ledger():
        with _ledger(wd) as ledger:
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
            problems.append(
                f"row {row}'s letter is not held back as another recipient's (no earlier run"
                " of this file sent its file to another address)"
            )
    if problems:
        raise ChoiceRefused(
            f"{csv_file.name}: --corrected-address: {'; '.join(problems)}. {NOTHING_DONE}:"
            " give only the rows `validate` names as AttachmentOfAnother"
        )


def _holds(wd: Workdir, campaign: str) -> bool:
    """Whether the workdir's ledger holds entries of ``campaign``."""
    if not wd.has_ledger():
        return False
    with _ledger(wd) as ledger:
        return ledger.has_entries(campaign)


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _fold(name: str) -> str:
    """A file name as owners are looked up: NFC, its case folded, no blanks around."""
    return _nfc(name.strip()).casefold()


@contextlib.contextmanager
def _ledger(wd: Workdir) -> Iterator[SqliteLedger]:
    """The workdir's ledger, read-only."""
    ledger = SqliteLedger(str(wd.ledger), read_only=True)
    try:
        yield ledger
    finally:
        ledger.close()
