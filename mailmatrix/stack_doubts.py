"""Rows in doubt of a file sent to a deployed stack (`aws send`): a Lambda ended as it sent
them (killed, timed out), or gave them back after a try that may have been taken, and the
stack's ledger has them as not sent. Listed and settled from the stack's ledger (`aws
settle`), as `settle` does in a workdir; `aws send` and `aws redrive` of the file are refused
while some are (refuse_rows_in_doubt), unless told to send them again (--retry-unknown).

The ledger keeps no address: a row is shown with the address of the file's row whose letter's
key is its key (the file is at hand), else with the masked address the ledger kept with the
row's own file, where it has one.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from mailmatrix.core.addresses import parse_address
from mailmatrix.core.send import idempotency_key
from mailmatrix.doubts import (
    Choice,
    DoubtfulRow,
    FileDoubts,
    described,
    named,
    record_settled,
    rows_in_doubt,
    rows_of_file,
    rows_to_settle,
)
from mailmatrix.errors import InputFileError
from mailmatrix.jobs import Source, campaign_id_for
from mailmatrix.ports import Doubt, Outcome
from mailmatrix.program import program

# Where the operator looks for the letters of rows in doubt, on a stack.
LOG_OF = (
    "SES's sending events (the configuration set's event destination) or the recipients' replies"
)


class DoubtLedger(Protocol):
    """What of the stack's ledger rows in doubt need (DynamoDbLedger)."""

    def doubts(self, campaign: str) -> list[Doubt]: ...

    def settle(self, doubts: Collection[Doubt], *, sent: bool, by: str) -> None: ...

    def template_sets(self, campaign: str) -> frozenset[str]: ...

    def outcomes(self, campaign: str) -> list[Outcome]: ...


def campaign_on_stack(bucket: str, name: str) -> str:
    """The campaign of the file ``name`` sent to the stack whose bucket is ``bucket`` (its key
    under incoming/, as `aws send` uploads it)."""
    return campaign_id_for(Source(bucket, f"incoming/{name}", ""))


def settle_command(
    csv_file: str, stack: Sequence[str], names: Iterable[object], *, sent: bool
) -> str:
    """The `aws settle` command that settles ``names`` (rows, or ROW:LETTER) of ``csv_file``
    on the stack ``stack`` names (its options: --stack NAME, --region REGION)."""
    listed = ",".join(str(name) for name in names)
    flag = "--sent" if sent else "--not-sent"
    named_as = f"./{csv_file}" if csv_file.startswith("-") else csv_file  # not an option
    return f"{program()} aws settle {shlex.quote(named_as)} {flag} {listed} {shlex.join(stack)}"


def doubts_of_file(
    ledger: DoubtLedger, bucket: str, csv_file: Path, found: list[Doubt] | None = None
) -> FileDoubts:
    """The rows in doubt of ``csv_file``'s campaign on the stack (its name names it), each
    with the address of the file's row that holds its letter, where one does; ``found``:
    the ledger's doubts of the campaign, where read already."""
    campaign = campaign_on_stack(bucket, csv_file.name)
    found = ledger.doubts(campaign) if found is None else found
    resting = [doubt for doubt in found if not doubt.live]
    file_rows = rows_of_file(csv_file) if csv_file.is_file() else {}
    items = _letters_in_file(ledger, campaign, file_rows, {d.key for d in resting})
    reported = {doubt.key: ses_evidence(doubt) for doubt in resting}
    shown = [
        replace(row, evidence=reported.get(row.key, ""))
        for row in named(described(resting, items), found, file_rows)
    ]
    return FileDoubts(csv_file, campaign, found, shown, file_rows)


def ses_evidence(doubt: Doubt) -> str:
    """What SES reported of the letter of ``doubt`` (SesEvents records it on the row, found by
    the key the message was tagged with), as the operator reads it; "" where nothing arrived."""
    if not doubt.event:
        return ""
    said = f"SES reports {doubt.event} at {doubt.event_at or 'an unknown time'}"
    return f"{said} (message id {doubt.event_message_id})" if doubt.event_message_id else said


def settle(
    ledger: DoubtLedger,
    bucket: str,
    csv_file: Path,
    choice: Choice,
    stack: Sequence[str],
    *,
    sent: bool,
) -> list[DoubtfulRow]:
    """Record the letters ``choice`` names of the file's campaign on the stack as ``sent``
    (no run sends them again) or not (the next sends them, as rows never tried); return them
    as shown. Refused (NotSettled, nothing written) when a row named is not in doubt, is being
    sent (its lease has not ended), or changed since it was read."""
    found = doubts_of_file(ledger, bucket, csv_file)
    listing = f"{program()} aws settle {shlex.join([str(csv_file), *stack])}"
    retry = "`aws send FILE --retry-unknown` sends it"

    def outcomes() -> dict[int, Outcome]:
        return {outcome.row: outcome for outcome in ledger.outcomes(found.campaign)}

    settling = rows_to_settle(found, choice, outcomes, listing, retry)
    return record_settled(ledger, found, settling, sent=sent)


def refuse_rows_in_doubt(
    ledger: DoubtLedger,
    bucket: str,
    name: str,
    stack: Sequence[str],
    again: str,
    *,
    csv_file: Path | None = None,
) -> None:
    """Refuse (RowsInDoubt, nothing uploaded or started) a send or redrive of the file
    ``name`` while rows of its campaign on the stack are in doubt: their letters may have
    arrived. The error names them and the `aws settle` commands; ``again`` sends them again
    all the same. ``csv_file``: the file at hand (a redrive has only its name), which gives
    the rows their addresses. One query of the ledger when there are none."""
    found = ledger.doubts(campaign_on_stack(bucket, name))
    if not any(not doubt.live for doubt in found):
        return
    rows = named(described([d for d in found if not d.live], {}), found, None)
    if csv_file is not None:
        # A file that cannot be read as recipients is refused by its validation; its rows
        # in doubt are named without their addresses meanwhile.
        with contextlib.suppress(InputFileError, OSError):
            rows = doubts_of_file(ledger, bucket, csv_file, found).rows
    if not rows:
        return
    names = [row.settle_as or str(row.row) for row in rows]
    shown_as = str(csv_file) if csv_file is not None else name
    commands = [settle_command(shown_as, stack, names, sent=sent) for sent in (True, False)]
    listing = f"`{program()} aws settle {shlex.join([shown_as, *stack])}`"
    raise rows_in_doubt(name, rows, commands, again, listing, log_of=LOG_OF)


def _letters_in_file(
    ledger: DoubtLedger, campaign: str, file_rows: dict[int, str], keys: set[str]
) -> dict[str, dict[str, Any]]:
    """The file's rows whose letter's key is one of ``keys`` (the campaign's template sets
    make a row's keys), as manifest lines: key, row, whole address, template set."""
    if not keys or not file_rows:
        return {}
    sets = sorted(ledger.template_sets(campaign))
    found: dict[str, dict[str, Any]] = {}
    for row, cell in file_rows.items():
        address = parse_address(cell).email
        if not address:
            continue
        for name in sets:
            key = idempotency_key(campaign, address, name)
            if key in keys and key not in found:
                found[key] = {"key": key, "row": row, "email": address, "template": name}
    return found
