"""The campaign summary: counts per outcome and per template, the per-row report, the notice."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from mailmatrix.errors import AttachmentChanged
from mailmatrix.ports import IN_DOUBT, NAMED, OUTCOME_UNKNOWN, SENDING, UNKNOWN, SentCopy

log = logging.getLogger(__name__)

# Scripts read the report by these names and in this order: a new column goes at the end.
# attachment, cc and bcc: what the row's letter carried and who else got it (the operator's
# record, Bcc included), so that which file went to whom is checked without the messages.
REPORT_COLUMNS = ["row", "email", "name", "template", "status", "message_id", "code", "reason"]
REPORT_COLUMNS += ["attachment", "cc", "bcc"]
# Those cells of a row skipped as already sent where the ledger did not keep what its letter
# carried: the file as it is now may name other copies or another file.
NOT_RECORDED = "(not recorded)"
_SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Summary:
    """What happened to every validated row of one campaign."""

    campaign: dict[str, Any]
    counts: dict[str, int]
    per_template: dict[str, dict[str, int]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    # Folded while the rows stream by, so the hint needs no list of rows.
    failures_all_not_verified: bool = False
    superseded_by: str | None = None  # the execution of the newer upload (Superseded rows)

    @property
    def outcome(self) -> str:
        """``dry_run``, ``completed`` or ``completed_with_failures``."""
        if self.dry_run:
            return "dry_run"
        if self.counts.get("failed", 0) or self.counts.get("unsent", 0):
            return "completed_with_failures"
        return "completed"

    def subject(self) -> str:
        """A one-line ASCII subject (SNS subjects are ASCII, at most 100 characters)."""
        name = self.campaign["source"]["key"].rsplit("/", 1)[-1]
        c = self.counts
        if self.dry_run:
            text = f"MailMatrix dry run {name}: {c['valid']} valid, {c['rejected']} rejected"
        else:
            text = (
                f"MailMatrix {name}: {c['sent']} sent, {c['skipped']} already sent, "
                f"{c['rejected']} rejected, {c['failed']} failed"
            )
            if c.get("superseded"):  # failed, yet nothing to fix: said in the subject too
                text += f" ({c['superseded']} left to a newer upload)"
        text = text.encode("ascii", "replace").decode("ascii")
        return text if len(text) <= 100 else text[:97] + "..."

    def message(self, *, execution: str, report_key: str) -> str:
        """The notice for operators: counts, per template, where the reports are, what next."""
        c = self.counts
        bucket = self.campaign["source"]["bucket"]
        lines = [
            f"Campaign {self.campaign['id']} from s3://{bucket}/{self.campaign['source']['key']}",
            f"Execution: {execution}",
            "",
            f"Rows: {c['rows']}  valid: {c['valid']}  rejected: {c['rejected']}  "
            f"duplicates: {c['duplicates']}  excluded: {c['excluded']}",
        ]
        if not self.dry_run:
            lines.append(
                f"Sent: {c['sent']}  already sent (skipped): {c['skipped']}  "
                f"failed: {c['failed']}  not attempted: {c['unsent']}"
            )
            if c.get("sent_under"):
                lines.append(
                    f"Not sent again: {c['sent_under']} row(s) whose letters went already to"
                    " the same addresses under another file (the rejects and per-row reports"
                    " name it)"
                )
            if c.get("doubt_under"):
                lines.append(
                    f"Not sent: {c['doubt_under']} row(s) whose letters may have gone to the"
                    " same addresses under another file, in doubt there (settle them there"
                    " first: the per-row report names it)"
                )
            for template, numbers in sorted(self.per_template.items()):
                parts = ", ".join(f"{k} {v}" for k, v in sorted(numbers.items()))
                lines.append(f"  {template}: {parts}")
        lines += [
            "",
            f"Rejects report: s3://{bucket}/{self.campaign['rejects_key']}",
            f"Per-row report: s3://{bucket}/{report_key}",
        ]
        hint = self.hint()
        if hint:
            lines += ["", hint]
        return "\n".join(lines)

    def hint(self) -> str | None:
        """Name the likely cause when failures share one, e.g. an SES sandbox account, and
        how to send the failed rows again where the campaign ran (its ``retry_command``; the
        rows failed as OutcomeUnknown apart, see unknown_hint)."""
        if not self.counts.get("failed"):
            return None
        again = f"send them again with: {retry_command(self.campaign)}"
        if self.failures_all_not_verified and not self.counts["sent"]:
            return (
                "Every failure says the address is not verified: the SES account is probably "
                f"still in the sandbox. Request production access, then {again}"
            )
        if self.counts.get("unsent"):
            return (
                "Some rows were not attempted (see the report). Fix the cause, then redrive the "
                "execution: rows already sent are skipped."
            )
        hints = [
            attachment_changed_hint(self.counts, self.campaign),
            unknown_hint(self.counts, self.campaign),
            other_letter_hint(self.counts),
            attachment_of_another_hint(self.counts),
            superseded_hint(self.counts, self.superseded_by),
        ]
        apart = sum(self.counts.get(name, 0) for name in FAILED_APART)
        if self.counts["failed"] > apart:
            hints.insert(
                0,
                "Failed rows are listed in the per-row report with the service's reason. Once"
                f" the cause is fixed, {again}",
            )
        return "\n".join(hint for hint in hints if hint) or None

    def report_csv(self) -> bytes:
        """One line per validated row, spreadsheet-safe (rows kept in memory: small runs)."""
        out = io.StringIO()
        writer = report_writer(out, self.campaign.get("delimiter") or ",")
        for row in sorted(self.rows, key=lambda r: r["row"]):
            write_report_row(writer, row)
        return out.getvalue().encode("utf-8-sig")  # with a BOM, as Excel needs for UTF-8

    def to_dict(self, *, execution: str) -> dict[str, Any]:
        """The summary as JSON-ready data (without the per-row list)."""
        found = {
            "campaign": self.campaign["id"],
            "execution": execution,
            "outcome": self.outcome,
            "counts": self.counts,
            "per_template": self.per_template,
        }
        if self.superseded_by:
            found["superseded_by"] = self.superseded_by
        return found


# The counts of failed rows each with a remedy of its own, not the retry of failed rows (each
# has a hint): those failed as AttachmentChanged are sent by a plain run of the file.
FAILED_APART = (
    "attachment_changed",
    "unknown",
    "other_letter",
    "attachment_of_another",
    "superseded",
)


def retry_command(campaign: Mapping[str, Any], *, unknown: bool = False) -> str:
    """The command that sends the campaign's failed rows again where it ran (``unknown``:
    those failed as OutcomeUnknown), as validation set it; a campaign validated before it
    did is taken for a local one."""
    if unknown:
        return str(campaign.get("retry_unknown_command") or "mailmatrix run FILE --retry-unknown")
    return str(campaign.get("retry_command") or "mailmatrix run FILE --retry-failed")


def run_again_command(campaign: Mapping[str, Any]) -> str:
    """The command that sends the campaign's file again where it ran, as it is now, as
    validation set it (a campaign validated before it did is taken for a local one)."""
    return str(campaign.get("run_again_command") or "mailmatrix run FILE")


def runs_on_a_stack(campaign: Mapping[str, Any]) -> bool:
    """Whether the campaign runs on a deployed stack, not on this machine: validation gave it
    the commands of where it runs (`aws send`, `aws s3 cp`; locally `mailmatrix run`)."""
    return not run_again_command(campaign).startswith("mailmatrix run")


OTHER_LETTER_SENT = "OtherLetterSent"
# The code of a row whose own attachment an earlier run sent to another recipient (core.send).
ATTACHMENT_OF_ANOTHER = "AttachmentOfAnother"
# The code of a row whose attachment changed after validation (see core.send).
ATTACHMENT_CHANGED = AttachmentChanged.__name__
# The code of a row an execution left to a newer upload of its file (see core.send).
SUPERSEDED = "Superseded"
# The outcome, in the rejects report, of a row held back as its letter went to the same
# address under another file; and the code of such a row held back as it was sent.
SENT_UNDER = "already sent"
SENT_UNDER_CODE = "SentUnder"
# The code of a row held back as it was sent because its letter may have gone to the same
# address under another file (in doubt there, or failed as OutcomeUnknown): not known to have
# gone, so it is counted apart (``doubt_under``) from the letters that went.
DOUBT_UNDER_CODE = "InDoubtUnder"
DOUBT_UNDER = "in doubt elsewhere"  # how the console names such a row's outcome
# The outcomes, in the rejects report, of a row held back by validation as its letter may
# have gone to the address under another file (in doubt there, or failed as OutcomeUnknown),
# or is being sent there now: not known to have gone, so not called "already sent".
MAYBE_SENT_UNDER = "may have been sent (in doubt)"
SENDING_UNDER = "being sent now"
HELD_UNDER = (SENT_UNDER, MAYBE_SENT_UNDER, SENDING_UNDER)


def held_under_code(letter: SentCopy) -> str:
    """The code of a row held back as it was sent for ``letter``, of another file: whether
    that letter went or only may have."""
    return DOUBT_UNDER_CODE if letter.state in (IN_DOUBT, UNKNOWN) else SENT_UNDER_CODE


def held_under_outcome(letter: SentCopy) -> str:
    """The outcome, in the rejects report, of a row validation holds back for ``letter``, of
    another file (HELD_UNDER): sent, may have been sent (in doubt), or being sent now."""
    if letter.state in (IN_DOUBT, UNKNOWN):
        return MAYBE_SENT_UNDER
    return SENDING_UNDER if letter.state == SENDING else SENT_UNDER


def letter_of_another_campaign(name: str, letter: SentCopy) -> str:
    """Why a row is not sent whose own file ``name`` holds the bytes of the file ``letter``
    (of another campaign) carried to another person as their own: a copy of it, or the file
    itself under its own name (the row's address, or the earlier one, may be wrong). Said
    by validation, and by a run that finds it as it claims the row (the other file run at
    the same moment)."""
    whom = f"another recipient ({letter.masked})" if letter.masked else "another recipient"
    if letter.state in (IN_DOUBT, NAMED):
        return _letter_in_doubt_elsewhere(name, letter, whom)
    went, sent = "was sent", "sent"
    if letter.state == UNKNOWN:  # (one in doubt is said above)
        went, sent = "may have been sent", "may have sent"
    if letter.state == SENDING:
        went, sent = "was being sent", "was sending"
    if letter.attachment == name:
        return (
            f"{name} {went} to {whom} under {campaign_of(letter)} as their own letter (row"
            f" {letter.row} of that run), so it is not sent to this recipient. Name this"
            " recipient's own file in Attachment_File (leave that file as it is: it is what"
            " went out), then run the file again; or, if that address"
            f" was wrong and this is the same person, run {_source_of(letter)} with the address"
            " corrected and --corrected-address ROW (that person's row in it: row"
            f" {letter.row} when it was sent)"
        )
    return (
        f"{name} has the same contents as {letter.attachment}, which a run of"
        f" {campaign_of(letter)} {sent} to {whom} as their own letter (row {letter.row} of"
        " that run): this row names a copy "
        "of that person's letter, so it is not sent (name this recipient's own file in "
        "Attachment_File, then run the file again)"
    )


def _letter_in_doubt_elsewhere(name: str, letter: SentCopy, whom: str) -> str:
    """letter_of_another_campaign's reason where ``letter`` is in doubt (its run ended as it
    sent it) or did not go out (NAMED): either way the file is that person's, named so by
    that file, and no settling of it sends this row."""
    source = _source_of(letter)
    fate = f"in doubt there: that run ended as it sent it; `settle {source}` lists it"
    if letter.state == NAMED and letter.attachment == name:
        return _named_elsewhere(name, letter, whom)
    if letter.state == NAMED:
        fate = "not sent there: it failed, or was given back unsent"
    if letter.attachment == name:
        what = f"{name} is the own letter of {whom} under {campaign_of(letter)}"
        corrected = (
            f"; or, if that address was wrong and this is the same person, run {source} with"
            " the address corrected and --corrected-address ROW (that person's row in it: row"
            f" {letter.row} then)"
        )
    else:
        what = (
            f"{name} has the same contents as {letter.attachment}, the own letter of {whom}"
            f" under {campaign_of(letter)}"
        )
        corrected = ""
    return (
        f"{what}, row {letter.row} of that run ({fate}), so it is not sent to this"
        " recipient whatever became of that letter: this row names that person's letter."
        " Name this recipient's own file in Attachment_File, then run the file again"
        f"{corrected}"
    )


def _named_elsewhere(name: str, letter: SentCopy, whom: str) -> str:
    """letter_of_another_campaign's reason where ``name`` itself was named as the own file of
    ``whom`` by another file, whose letter never went (NAMED): which row named it, and the
    ways out, that row's mistake among them (naming that person's own file there, and
    running that file, frees this one: its letter then carries that file)."""
    source = _source_of(letter)
    return (
        f"{name} was named as the own file of {whom} in {campaign_of(letter)},"
        f" row {letter.row} of that run, and that letter never went (it failed, or was given"
        " back unsent); the file is held as that person's, so it is not sent to this"
        " recipient. If this row names the wrong file, name this recipient's own file in"
        " Attachment_File, then run the file again. If that row was the mistake (this"
        f" recipient's file named for that person), name that person's own file in row"
        f" {letter.row} of {source} and run {source} again, with --retry-failed where that"
        " row failed (its letter then carries that file), then run this file again; or, if"
        " that address was wrong and this is the"
        f" same person, run {source} with the address corrected and --corrected-address"
        f" {letter.row}"
    )


def _source_of(letter: SentCopy) -> str:
    """The file ``letter`` was sent from, as a command names it (FILE where not recorded)."""
    return letter.source or "FILE"


# How sent_under_reason names a letter of the row's set whose text differs (a name spelt anew).
_SET_LETTER = "a letter of the set "


def set_letter_file(reason: str) -> str | None:
    """The file (else the campaign) a letter of the row's set went under, for a ``reason``
    sent_under_reason wrote of a row held back by its set (its text changed); None for any
    other reason."""
    if not reason.startswith((_SET_LETTER, f"this address already received {_SET_LETTER}")):
        return None
    return reason.rpartition(" --send-again-from ")[2] or None


# A command a reason of sent_under_reason names for the other file: `settle F`, `run F ...`.
_OTHER_FILES_COMMAND = re.compile(r"`((?:settle|run) [^`]*)`")


def naming_workdir(reason: str, option: str) -> str:
    """``reason`` (sent_under_reason's) with ``option`` (``--workdir W``) added to each
    command it names for the other file (`settle F`, `run F --retry-unknown`): for a row of a
    run whose workdir is not the default, where those commands look when not told (no
    ``option``: ``reason`` as it is; a command written whole, with its own, stays)."""
    if not option:
        return reason
    return _OTHER_FILES_COMMAND.sub(
        lambda found: found[0] if " --workdir " in found[1] else f"`{found[1]} {option}`", reason
    )


def sent_under_reason(letter: SentCopy) -> str:
    """Why a row is not sent whose letter (the same subject and bodies, and its own file, the
    same bytes) went to its address under another file, ``letter``'s: when, and how to send
    it all the same."""
    when = f" on {_when(letter.at)}" if letter.at else ""
    named = letter.source or letter.campaign
    what = f"{letter.attachment}, the same contents" if letter.attachment else "the same text"
    this = f"this letter ({what})"
    if letter.template:  # a letter of the set whose text differs (a name spelt anew)
        this = f"{_SET_LETTER}{letter.template!r}"
    if letter.workdir:
        return _sent_from_workdir(letter, this, when, named)
    if letter.state == SENDING:  # found by validation while another run sends it
        return (
            f"{this} is being sent to this address under {campaign_of(letter)}"
            f" at this moment, as row {letter.row} of that run: it is not sent here. Run this"
            " file again once that run has ended: it is held back then if that letter went,"
            " and sent if it did not"
        )
    if letter.state == UNKNOWN:  # its server may have taken it: nobody knows yet
        return (
            f"{this} may already have gone to this address under"
            f" {campaign_of(letter)}{when}, as row {letter.row} of that run, which failed as"
            f" {OUTCOME_UNKNOWN} (the server may have taken it): it is not sent here. Once the"
            f" server's log shows it did not arrive, `run {named} --retry-unknown` sends it"
            f" there; or run this file with --send-again-from {named}"
        )
    if letter.state == IN_DOUBT:  # its run ended as it sent it: it may not have arrived
        return (
            f"{this} may already have gone to this address under"
            f" {campaign_of(letter)}{when}, as row {letter.row} of that run, which ended as"
            " it sent it (in doubt there): it is not sent here. Settle it there first (`settle"
            f" {named}` lists it): settled as not sent, a run of this file sends it; or run this"
            f" file with --send-again-from {named}"
        )
    if letter.outbox:
        return _went_to_outbox(letter, this, when, named)
    if letter.template:
        return (
            f"this address already received {this} under {campaign_of(letter)}{when} (row"
            f" {letter.row} of that run): it is not sent again. If it is meant to go again (a"
            f" corrected letter), run this file with --send-again-from {named}"
        )
    return (
        f"this address already received this letter ({what}) under {campaign_of(letter)}"
        f"{when}, as row {letter.row} of that run: it is not sent again. If it is meant to go"
        f" again, run this file with --send-again-from {named}"
    )


# How sent_under_reason says a letter went to the local outbox (a trial), not to its address.
_TO_OUTBOX = " went to the local outbox under "


def went_to_outbox(reason: str) -> bool:
    """Whether ``reason``, sent_under_reason's, is of a letter that went only to the local
    outbox under the other file (a trial), not to its address."""
    return _TO_OUTBOX in reason


def _sent_from_workdir(letter: SentCopy, this: str, when: str, named: str) -> str:
    """sent_under_reason's reason where ``letter`` is kept in another workdir's ledger: a run
    there sent it (or may have, or is sending it) through a mail server."""
    where = f"from the workdir {letter.workdir} under {campaign_of(letter)} through {letter.server}"
    there = f"--workdir {shlex.quote(str(letter.workdir))}"
    again = (
        f"To send it again on purpose, run this file with --send-again-from {named} (in that"
        f" workdir, {there}, if this one ran a file of that name too)"
    )
    if letter.state == SENDING:
        return (
            f"{this} is being sent to this address {where} at this moment (row {letter.row} of"
            " that run): it is not sent here. Run this file again once that run has ended;"
            f" it is held back then if that letter went. {again}"
        )
    if letter.state in (IN_DOUBT, UNKNOWN):
        how, then = (
            (
                f"which failed as {OUTCOME_UNKNOWN}: the server may have taken it",
                f"Once the server's log shows it did not arrive, run {named} --retry-unknown"
                f" {there} sends it there.",
            )
            if letter.state == UNKNOWN
            else (
                "which ended as it sent it: in doubt there",
                f"Settle it in that workdir first (settle {named} {there}): settled as not"
                " sent, a run of this file sends it.",
            )
        )
        return (
            f"{this} may have been sent to this address {where}{when} (row {letter.row} of that"
            f" run, {how}): it is not sent here. {then} {again}"
        )
    return (
        f"{this} went to this address {where}{when} (row {letter.row} of that run): it is not"
        f" sent again. {again}"
    )


def _went_to_outbox(letter: SentCopy, this: str, when: str, named: str) -> str:
    """sent_under_reason's reason where ``letter`` went to the local outbox (a trial): not to
    the address, though the ledger counts it sent there."""
    return (
        f"{this}{_TO_OUTBOX}{campaign_of(letter)}{when} (row"
        f" {letter.row} of that run; a trial?), not to this address, but the ledger counts it"
        f" sent, so it is not sent here. To send it for real, run this file with"
        f" --send-again-from {named}"
    )


def _when(at: float) -> str:
    """A ledger's time (epoch seconds) as people read it: UTC, to the minute."""
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def campaign_of(letter: SentCopy) -> str:
    """The campaign of ``letter`` as people know it: its CSV's name, with its id."""
    return f"{letter.source} (campaign {letter.campaign})" if letter.source else letter.campaign


def superseded_hint(counts: Mapping[str, int], by: str | None) -> str | None:
    """What the rows left to a newer upload of the file mean: nothing to do here."""
    rows = counts.get("superseded", 0)
    if not rows:
        return None
    return (
        f"{rows} row(s) not sent by this execution, and not failed ({SUPERSEDED}): a newer"
        " upload of this file was validated (execution"
        f" {by or 'named in the per-row report'}), and that execution sends the file as it is"
        " now, so these rows are its own: sent by it, or sent when it runs (see that"
        " execution's summary). Nothing is to be done here. Redriving this execution sends"
        " nothing (to have the file sent as it is now, send it again)."
    )


def other_letter_hint(
    counts: Mapping[str, int],
    *,
    manifest: str = "templates/manifest.yaml",
    failed: str = "failed",
) -> str | None:
    """What to do about rows not sent because their address had another set's letter: no
    retry sends them (the letters would contradict each other). ``manifest``: the manifest
    of the templates the run used; ``failed``: "would fail" for `validate`."""
    rows = counts.get("other_letter", 0)
    if not rows:
        return None
    return (
        f"{rows} row(s) {failed} as {OTHER_LETTER_SENT}: an earlier run sent their address the"
        " letter of another template set, and no retry sends them. Either their Status changed,"
        f" or {manifest} now maps it to another set (a set renamed, say, its old"
        " name kept for another Status). If the earlier letter was right, set the Status or"
        " the mapping back; if they must have the new letter as well, put those rows alone in"
        " a file of another name and run that (with --send-again-from and this file's name"
        " where a row's attachment is the one the earlier letter carried), then take them out"
        " of this file (or set their Status back): as long as it holds them so, every run of"
        " it reports them failed again."
    )


def attachment_of_another_hint(counts: Mapping[str, int]) -> str | None:
    """What to do about rows not sent because their own file went to another recipient in
    an earlier run, or in a run of another file (at the same moment): no retry sends them."""
    rows = counts.get("attachment_of_another", 0)
    if not rows:
        return None
    return (
        f"{rows} row(s) failed as {ATTACHMENT_OF_ANOTHER}: an earlier run of this file, or a"
        " run of another file (the report's reason names it), sent the file they name in"
        " Attachment_File to another recipient, and no retry sends them."
        " Name each recipient's own file in its row and run the file again; if an earlier"
        " address was wrong and the row is the same person, its address now corrected, run the"
        " file again with --corrected-address ROW for each such row (its letter then goes to"
        " the corrected address; the choice is recorded in the ledger)."
    )


def attachment_changed_hint(counts: Mapping[str, int], campaign: Mapping[str, Any]) -> str | None:
    """What to do about the rows failed as AttachmentChanged, if any: run the file again."""
    rows = counts.get("attachment_changed", 0)
    if not rows:
        return None
    return f"{attachment_changed_advice(rows)} {run_again_command(campaign)}"


def attachment_changed_advice(rows: int) -> str:
    """What ``rows`` failed as AttachmentChanged need, up to the command that sends them
    (which follows it): a run of the file, not the retry of failed rows."""
    return (
        f"{rows} row(s) failed as {ATTACHMENT_CHANGED}: their attachment changed after the"
        " rows were validated, so they were not sent. Check that the attachments are the"
        " right ones, then run the file again: it checks them as they are now and sends these"
        " rows (rows already sent are skipped):"
    )


def unknown_hint(counts: Mapping[str, int], campaign: Mapping[str, Any]) -> str | None:
    """What to do about the rows failed as OutcomeUnknown, if any: they may have arrived, so
    no retry of failed rows sends them; the operator checks, then asks for them apart."""
    unknown = counts.get("unknown", 0)
    if not unknown:
        return None
    return f"{unknown_advice(unknown)} {retry_command(campaign, unknown=True)}"


def unknown_advice(rows: int) -> str:
    """Why ``rows`` failed as OutcomeUnknown are not retried with the others, and what to do,
    up to the command that sends them (which follows it)."""
    return (
        f"{rows} row(s) failed as {OUTCOME_UNKNOWN}: the mail service may have taken them"
        " without answering, so they are not sent again with the other failures. Check"
        " whether they arrived (ask the recipients, or look in the service's logs); take the"
        " rows that did out of the file, then send the rest with:"
    )


def report_writer(out: TextIO, delimiter: str = ",") -> Any:
    """A CSV writer of report rows on ``out``, its header written (see write_report_row); with
    the recipients file's ``delimiter`` (the campaign's), as a spreadsheet set for it reads."""
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(REPORT_COLUMNS)
    return writer


def write_report_row(writer: Any, row: Mapping[str, Any]) -> None:
    """Write one report row, its cells in REPORT_COLUMNS order and made spreadsheet-safe."""
    writer.writerow([_cell(row.get(k)) for k in REPORT_COLUMNS])


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_SPREADSHEET_TRIGGERS) else text


def summarize_results(
    campaign: dict[str, Any],
    validation_counts: dict[str, Any],
    children: Iterable[dict[str, Any]],
    *,
    dry_run: bool = False,
    settled: Callable[[list[str]], Mapping[str, Any]] | None = None,
    report: Any = None,
) -> Summary:
    """Fold the Map Run's child records (ResultWriter format) into a Summary.

    Rows of a batch that did not finish are looked up with ``settled`` (ledger outcomes by
    idempotency key, asked once per such batch with its rows' keys): some of them may have
    been sent before the batch failed. With
    ``report``, each row is written there as it comes and none is kept (memory stays flat
    however many rows); without, the rows stay in ``Summary.rows``.
    """
    outcomes: Counter[str] = Counter()
    per_template: dict[str, dict[str, int]] = defaultdict(dict)
    kept: list[dict[str, Any]] = []
    possible_duplicates = unknown = other_letter = owned = superseded = attachment_changed = 0
    failed_earlier = held = doubted = 0
    superseded_by = None
    all_not_verified = True
    for row in _rows_of(children, settled):
        status = row["status"]
        outcomes[status] += 1
        numbers = per_template[row.get("template") or "?"]
        numbers[status] = numbers.get(status, 0) + 1
        # Only rows this execution sent: a row sent earlier keeps its mark in the per-row
        # report, but the run that sent it reported it (counted again, it reads as a new one).
        possible_duplicates += status == "sent" and bool(row.get("takeover"))
        if status == "failed" and "not verified" not in (row.get("reason") or ""):
            all_not_verified = False
        unknown += status == "failed" and row.get("code") == OUTCOME_UNKNOWN
        other_letter += status == "failed" and row.get("code") == OTHER_LETTER_SENT
        owned += status == "failed" and row.get("code") == ATTACHMENT_OF_ANOTHER
        attachment_changed += status == "failed" and row.get("code") == ATTACHMENT_CHANGED
        failed_earlier += status == "failed" and bool(row.get("earlier"))
        # Held back as it was sent: its letter went to the address under another file.
        held += status == "skipped" and row.get("code") == SENT_UNDER_CODE
        # ... or as it may have gone there: in doubt there, so counted apart.
        doubted += status == "skipped" and row.get("code") == DOUBT_UNDER_CODE
        if status == "failed" and row.get("code") == SUPERSEDED:
            superseded += 1
            superseded_by = superseded_by or row.get("superseded_by")
        if report is None:
            kept.append(row)
        else:
            write_report_row(report, row)
    held_in_doubt = int(validation_counts.get("doubt_under", 0))
    counts = {
        "rows": int(validation_counts.get("rows", 0)),
        "valid": int(validation_counts.get("valid", 0)),
        "rejected": int(validation_counts.get("rejected", 0)),
        "duplicates": int(validation_counts.get("duplicates", 0)),
        "excluded": int(validation_counts.get("excluded", 0)),
        # (validation counts its rows in doubt elsewhere among those held: apart here)
        "sent_under": int(validation_counts.get("sent_under", 0)) - held_in_doubt + held,
        "doubt_under": held_in_doubt + doubted,
        "sent": outcomes.get("sent", 0),
        "skipped": outcomes.get("skipped", 0) - held - doubted,
        "failed": outcomes.get("failed", 0),
        "failed_earlier": failed_earlier,
        "unknown": unknown,
        "other_letter": other_letter,
        "attachment_of_another": owned,
        "attachment_changed": attachment_changed,
        "superseded": superseded,
        "unsent": outcomes.get("unsent", 0) + outcomes.get("deferred", 0),
        "possible_duplicates": possible_duplicates,
    }
    log.debug("summary of %s: %s", campaign.get("id"), counts)
    return Summary(
        campaign,
        counts,
        dict(per_template),
        kept,
        dry_run=dry_run,
        failures_all_not_verified=all_not_verified,
        superseded_by=superseded_by,
    )


def progress_counts(
    validation_counts: Mapping[str, Any],
    keys: Iterable[str],
    outcomes: Mapping[str, Any],
    attempts: Collection[str],
) -> dict[str, int]:
    """What an execution that has no summary (stopped, killed, failed) got done, told by the
    ledger entry of each row it validated (``keys``; ``outcomes`` by key).

    Only the ledger is sure after a SIGKILL: a batch's results are written when it ends. A row
    counts as sent by this execution when one of its child workflows (``attempts``) sent it,
    as ``skipped`` when another run did; ``in_doubt`` when its child still held the claim as
    it ended, or gave it back after a try that may have been taken (the email may have gone
    out; a redrive sends it, as a possible duplicate); ``unsent`` when no attempt settled it
    (none tried, a passing failure gave it back, or another run holds it now). Of the
    ``failed``, ``unknown`` are those failed as OutcomeUnknown (--retry-unknown sends them).
    """
    found: Counter[str] = Counter()
    possible_duplicates = 0
    for key in keys:
        outcome = outcomes.get(key)
        if outcome is None:
            found["unsent"] += 1
            continue
        ours = outcome.attempt in attempts
        if outcome.state == "sent":
            found["sent" if ours else "skipped"] += 1
            possible_duplicates += ours and outcome.doubtful  # (another run reported its own)
        elif outcome.state == "failed":
            found["failed"] += 1
            found["unknown"] += outcome.code == OUTCOME_UNKNOWN
        else:  # claimed as it ended, or given back after a try that may have been taken
            doubt = outcome.state == "claimed" or outcome.doubtful
            found["in_doubt" if doubt and ours else "unsent"] += 1
    counts = {
        name: int(validation_counts.get(name, 0))
        for name in ("rows", "valid", "rejected", "duplicates", "excluded", "sent_under")
    }
    if validation_counts.get("doubt_under"):  # of those held back, the rows in doubt there
        counts["doubt_under"] = int(validation_counts["doubt_under"])
        counts["sent_under"] -= counts["doubt_under"]
    for name in ("sent", "skipped", "failed", "unknown", "in_doubt", "unsent"):
        counts[name] = found[name]
    counts["possible_duplicates"] = possible_duplicates
    return counts


def _rows_of(
    children: Iterable[dict[str, Any]], settled: Callable[[list[str]], Mapping[str, Any]] | None
) -> Iterator[dict[str, Any]]:
    """Every row of every child, as a report row."""
    for child in children:
        items = {item["row"]: item for item in _items_of(child)}
        if child.get("Status") == "SUCCEEDED":
            output = _json(child.get("Output")) or {}
            for outcome in output.get("rows", []):
                row = {**row_identity(items.get(outcome.get("row"), {})), **outcome}
                if outcome.get("takeover"):
                    row["reason"] = (
                        f"{row['reason']}; {DOUBTFUL_REASON}"
                        if row["status"] == "skipped"
                        else DOUBTFUL_REASON
                    )
                yield row
        else:
            keys = [item["key"] for item in items.values() if item.get("key")]
            known = settled(keys) if settled is not None and keys else {}
            for item in items.values():
                yield _unfinished(child, item, known.get(item.get("key", "")))


DOUBTFUL_REASON = (
    "may have arrived more than once: an attempt died or lost the service's reply around this send"
)


def _unfinished(child: dict[str, Any], item: dict[str, Any], outcome: Any) -> dict[str, Any]:
    """A row of a batch that failed or never ran, told by its ledger entry when there is one."""
    row = row_identity(item)
    if outcome is not None and outcome.state == "sent":
        sent = {**row, "status": "sent", "message_id": outcome.message_id}
        if outcome.doubtful:
            sent["takeover"] = "the ledger marks it a possible duplicate"
            sent["reason"] = DOUBTFUL_REASON
        return sent
    if outcome is not None and outcome.state == "failed":
        return {**row, "status": "failed", "code": outcome.code, "reason": outcome.reason}
    reason = child.get("Cause") or child.get("Status", "")
    return {
        **row,
        "status": "unsent" if child.get("Status") == "PENDING" else "failed",
        "code": child.get("Error") or child.get("Status"),
        "reason": f"batch did not finish: {reason}"[:500],
    }


def _items_of(child: dict[str, Any]) -> list[dict[str, Any]]:
    payload = _json(child.get("Input")) or {}
    return list(payload.get("Items", []))


def row_identity(item: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest row's own columns of the report: who it is, the letter's file and copies."""
    return {
        "row": item.get("row"),
        "email": item.get("email"),
        "name": item.get("name"),
        "template": item.get("template"),
        "attachment": item.get("attachment"),
        "cc": "; ".join(item.get("cc") or ()),
        "bcc": "; ".join(item.get("bcc") or ()),
    }


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value
