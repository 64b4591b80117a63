"""The three steps of a campaign, wired to ports: validate, send a batch, summarize.

The Lambda handlers in functions/ parse their event, build adapters and call these; tests call
them directly with local adapters. Everything here works on S3 keys and counts: rows travel
through storage (the validated manifest, the Map's result files), never through state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
import shlex
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, unquote, unquote_plus

import ijson

from mailmatrix.core.addresses import RESERVED_SAID, first_real, mask
from mailmatrix.core.attachments import AttachmentIndex
from mailmatrix.core.contents import StoredContents
from mailmatrix.core.earlier import EarlierFiles, EarlierRecipients, EarlierSets, SentFiles
from mailmatrix.core.pacing import Pacer, plan_send
from mailmatrix.core.recipients import IntakeRules, validate_recipients
from mailmatrix.core.rejects import write_rejects
from mailmatrix.core.report import Summary, report_writer, summarize_results
from mailmatrix.core.send import (
    RetryPolicy,
    attachment_fetcher,
    compose,
    envelope_sender,
    idempotency_key,
    letter_set,
    placeholder_constant,
    placeholder_sender,
    recipient_key,
    send_batch,
    sender_problem,
    template_sets_changed,
)
from mailmatrix.core.templates import DEMO_KEY, MANIFEST, Catalog, load_catalog
from mailmatrix.disk import write_fault
from mailmatrix.errors import (
    ConfigurationError,
    DemoTemplates,
    FileNotWritten,
    InputFileError,
    NameLikeAnother,
    ObjectChanged,
    PlaceholderConstant,
    PlaceholderSender,
    StorageError,
    TemplateError,
    UploadReplaced,
)
from mailmatrix.events import EventShape
from mailmatrix.ports import CampaignName, Ledger, Mailer, ObjectInfo, Storage, Upload
from mailmatrix.settings import Settings

if TYPE_CHECKING:
    from mailmatrix.adapters.ledgers_elsewhere import LedgersElsewhere

log = logging.getLogger(__name__)

# The Validate function's event: the execution's input, which the upload's rule makes.
S3_UPLOAD = EventShape(
    what="the Validate function's event (an S3 Object Created event's detail)",
    error=InputFileError,
    after="nothing was sent. A campaign starts when its file is uploaded under incoming/"
    " (mailmatrix aws send FILE.csv --stack NAME).",
)

DRY_RUN_PREFIX = "incoming/dry-run/"
# S3 user metadata of an upload (x-amz-meta-mailmatrix-retry-failed: true) asking that the
# campaign's rows failed for good in earlier runs be sent again; -retry-unknown: those failed
# as OutcomeUnknown (they may have arrived: the operator checked that they did not).
RETRY_FAILED_METADATA = "mailmatrix-retry-failed"
RETRY_UNKNOWN_METADATA = "mailmatrix-retry-unknown"
# The operator's choices against rules that hold letters back (run --send-again-from FILE,
# --corrected-address ROW): the files whose letters go again to the addresses they went to
# (names percent-encoded, comma-separated: metadata is ASCII), and the rows whose address was
# corrected (their letter goes to it though its file went to the earlier address).
SEND_AGAIN_METADATA = "mailmatrix-send-again-from"
CORRECTED_ADDRESS_METADATA = "mailmatrix-corrected-address"
MAX_PREVIEWS = 20
_SHOWN_FILES = 5  # the files named as those whose letters went already (sent_under)
# A manifest line: compact UTF-8 JSON (an encoder built once, not one per json.dumps call).
_MANIFEST_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Source:
    """The uploaded recipients file that started the execution."""

    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    # S3's order of the events on one key (hex; a later upload has a greater one), or None
    sequencer: str | None = None

    @classmethod
    def from_event_detail(cls, detail: dict[str, Any]) -> Source:
        """Read bucket, key, ETag, version and sequencer from an S3 "Object Created" event's
        detail; raise InputFileError naming a part that is missing or malformed."""
        event = {"detail": detail}
        part = functools.partial(S3_UPLOAD.part, event)
        return cls(
            part("detail.bucket.name", str),
            part("detail.object.key", str),
            (part("detail.object.etag", str, optional=True) or "").strip('"'),
            _version(part("detail.object.version-id", str, optional=True)),
            part("detail.object.sequencer", str, optional=True),
        )

    def upload(self, campaign_id: str, execution: str | None) -> Upload:
        """This upload of the campaign's file, validated by ``execution`` (see Upload)."""
        return Upload(
            campaign=campaign_id,
            upload=self.version_id or self.sequencer or self.etag,
            order=upload_order(self.sequencer),
            execution=execution or "",
        )


# A sequencer is hex of varying length: right-padded with zeros, sequencers compare as
# strings (https://repost.aws/knowledge-center/s3-duplicate-sqs-messages); none sorts first.
_ORDER_WIDTH = 32


def upload_order(sequencer: str | None) -> str:
    """A string that sorts uploads of one key as S3 stored them, from an event's sequencer."""
    return sequencer.upper().ljust(_ORDER_WIDTH, "0") if sequencer else "-"  # "-" < "0"


def _version(value: Any) -> str | None:
    # S3 gives "null" for an object stored while the bucket kept no versions.
    return None if value in (None, "", "null") else str(value)


def stored_source(storage: Storage, source: Source) -> Source:
    """``source`` under the key the object is stored at.

    S3's event notifications URL-encode keys ("red flower.csv" arrives as "red+flower.csv");
    whether EventBridge's "Object Created" events do is not said in its documentation, so a
    key holding "+" or "%" that names no object is tried decoded once.
    """
    if "+" not in source.key and "%" not in source.key:
        return source
    try:
        storage.head(source.key, version=source.version_id)
        return source
    except StorageError:  # S3 answers 403, not 404, to a role that may not list the bucket
        decoded = unquote_plus(source.key)
        if decoded == source.key:
            raise
        storage.head(decoded, version=source.version_id)  # neither is there: say so for it
        log.info("event key %s is URL-encoded; reading %s", source.key, decoded)
        return dataclasses.replace(source, key=decoded)


@contextlib.contextmanager
def _the_upload(source: Source) -> Iterator[dict[str, str | None]]:
    """The read arguments that reach the upload ``source`` names and no other, for head and
    open: its version where the bucket keeps versions, else its ETag (the event's), so an
    upload that replaced it under the key is refused (UploadReplaced), not read in its place.
    """
    try:
        if source.version_id:
            yield {"version": source.version_id}
        else:
            yield {"tag": source.etag or None}
    except ObjectChanged:
        raise UploadReplaced(
            f"{source.key}: replaced by a newer upload before this run read it (the event named"
            f" the upload with ETag {source.etag}): nothing was sent by this run; the newer"
            " upload's own run sends the file. (Where the bucket keeps versions, each run reads"
            " the upload that started it.)"
        ) from None


def _execution_folder(execution: str | None) -> str:
    """A folder name for an execution's files: its name (the end of its ARN); a name that
    cannot be one (Step Functions allows "envío-1") is hashed, the same on every call, so
    Validate, Summarize and the CLI agree; no execution at all: a new id."""
    name = (execution or "").rsplit(":", 1)[-1]
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,79}", name):
        return name
    if name:
        return "x-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return uuid.uuid4().hex


def reports_prefix(campaign_id: str, folder: str) -> str:
    """Where one execution's reports go: reports/<campaign>/<execution folder>/.

    Each execution has its own, so a redrive of an older execution, or another run of the
    same file meanwhile, rewrites no report that a newer run pointed to.
    """
    return f"reports/{campaign_id}/{folder}/"


def report_key(campaign_id: str, execution: str) -> str:
    """Where Summarize writes the per-row report of ``execution`` (its name or ARN)."""
    return reports_prefix(campaign_id, _execution_folder(execution)) + "report.csv"


def campaign_id_for(source: Source) -> str:
    """Derive the campaign id from the bucket and the file's key (its name under incoming/).

    Not from its ETag: a corrected upload under the same name is the same campaign, so rows
    already sent are skipped. A new campaign to the same people needs a new file name.

    A name is one name in any Unicode form: ``résumé.csv`` typed on Linux (NFC) and the same
    name from a Mac, whose file names are often decomposed (NFD), look alike and are one
    campaign (they were two, and the second mailed everyone again).
    """
    return "c-" + hashlib.sha256(campaign_name(source).encode()).hexdigest()[:16]


def campaign_name(source: Source) -> str:
    """The name of the campaign of ``source``: its bucket and key, in NFC (campaign_id_for
    derives the id from it; the ledger records it, Ledger.record_name)."""
    return unicodedata.normalize("NFC", f"{source.bucket}/{source.key}")


def name_like_another(source: Source, other: CampaignName, *, stack: str) -> NameLikeAnother:
    """The refusal of ``source``, whose name is alike ``other``'s, a campaign run before:
    what it would do, and the way on for the same file and for a new campaign."""
    name = source.key.rsplit("/", 1)[-1]
    other_name = other.name.rsplit("/", 1)[-1]
    if stack:
        same = f"upload it as {other.name.split('/', 1)[-1]} (the name it had)"
    else:
        same = f"run it as {other_name} (rename it)"
    return NameLikeAnother(
        f"{name!r}: a file named {other_name!r} was run before (campaign {other.campaign}):"
        " names that differ only in case, spacing or invisible characters are different"
        " campaigns here, so this one would send again each letter changed since (the ledger"
        " holds back only those gone to the same addresses as they are), though many disks,"
        " and most people, take the two for one file. Nothing was sent. If it is the same"
        f" file, {same}: its rows sent already are skipped; if it is a new campaign, give it"
        " a name that differs by more than that",
        details={"code": "NameLikeAnother", "campaign": other.campaign, "name": other.name},
    )


def retry_command(source: Source, stack: str, *, unknown: bool = False) -> str:
    """The command that sends the file's failed rows again (``unknown``: those failed as
    OutcomeUnknown): on the functions' stack, or on this machine (where the run's summary
    prints it whole, with its --workdir)."""
    return _send_command(source, stack, "unknown" if unknown else "failed")


def run_again_command(source: Source, stack: str) -> str:
    """The command that sends the file again as it is now, asking for no failed rows: it
    validates the file and its attachments anew and skips the rows already sent (what rows
    failed as AttachmentChanged need)."""
    return _send_command(source, stack, None)


def _send_command(source: Source, stack: str, retry: str | None) -> str:
    """The command that sends the file of ``source`` where it runs, asking for its rows failed
    as ``retry`` ("failed", "unknown"; None: none of them)."""
    flag = f" --retry-{retry}" if retry else ""
    if not stack:
        return f"mailmatrix run FILE{flag}"
    name = source.key.rsplit("/", 1)[-1]
    if source.key == "incoming/" + name:
        return f"mailmatrix aws send {shlex.quote(name)} --stack {stack}{flag}"
    # `aws send` uploads to incoming/NAME: a campaign is its key, so another key is uploaded
    # again as it was
    target = shlex.quote(f"s3://{source.bucket}/{source.key}")
    metadata = RETRY_UNKNOWN_METADATA if retry == "unknown" else RETRY_FAILED_METADATA
    asked = f" --metadata {metadata}=true" if retry else ""
    return f"aws s3 cp {shlex.quote(name)} {target}{asked}"


@contextlib.contextmanager
def _manifest_file(handle: int, path: str, key: str) -> Iterator[TextIO]:
    """The manifest at ``path`` (on its way to ``key``), open on ``handle`` to be written: its
    writes in the block raise _manifest_not_written themselves, and so does its close here."""
    manifest = os.fdopen(handle, "w", encoding="utf-8", newline="\n")
    try:
        yield manifest
    except BaseException:
        with contextlib.suppress(OSError):  # a write that failed left its bytes in the buffer
            manifest.close()
        raise
    try:
        manifest.close()  # what is left in the buffer is written now
    except OSError as error:
        raise _manifest_not_written(path, key, error) from error


def _manifest_not_written(path: str, key: str, error: OSError) -> FileNotWritten:
    """The error of the manifest at ``path`` (on its way to ``key``) that could not be written
    for ``error``: the file, what it is for and why, in plain words."""
    return FileNotWritten(
        f"cannot write {path} (the manifest of the file's valid rows, on its way to {key}):"
        f" {write_fault(error)}"
    )


def _drop_rows(path: str, rows: frozenset[int], dropped: Callable[[dict], None]) -> None:
    """Rewrite the manifest at ``path`` without ``rows``: rows intake rejected after it had
    passed them on (IntakeReport.withdrawn; rare, so other runs never read it back). Each
    row left out is handed to ``dropped``."""
    kept = path + ".kept"
    try:
        with (
            open(path, encoding="utf-8") as source,
            open(kept, "w", encoding="utf-8", newline="\n") as target,
        ):
            for line in source:
                row = json.loads(line)
                if row["row"] in rows:
                    dropped(row)
                else:
                    target.write(line)
        os.replace(kept, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(kept)


def _sent_rows(path: str, rows: frozenset[int], ledger: Ledger) -> frozenset[int]:
    """Of ``rows``, in the manifest at ``path``, those the ledger has sent (by an earlier run
    of the file): intake words their rejects for that. Rows withdrawn only, so few."""
    keys: dict[str, int] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["row"] in rows:
                keys[row["key"]] = row["row"]
    outcomes = ledger.outcomes_of(list(keys)) if keys else {}
    return frozenset(keys[key] for key, outcome in outcomes.items() if outcome.state == "sent")


def retry_metadata(failed: bool, unknown: bool) -> dict[str, str]:
    """An upload's metadata asking for the campaign's failed rows again: those failed with an
    answer (``failed``), those failed as OutcomeUnknown (``unknown``); see _Retry."""
    asked = ((RETRY_FAILED_METADATA, failed), (RETRY_UNKNOWN_METADATA, unknown))
    return {name: "true" for name, given in asked if given}


def choice_metadata(send_again_from: Iterable[str], corrected: Iterable[int]) -> dict[str, str]:
    """An upload's metadata carrying the operator's choices (see SEND_AGAIN_METADATA)."""
    found = {}
    names = ",".join(quote(name, safe="") for name in send_again_from)
    if names:
        found[SEND_AGAIN_METADATA] = names
    rows = ",".join(str(row) for row in sorted(set(corrected)))
    if rows:
        found[CORRECTED_ADDRESS_METADATA] = rows
    return found


@dataclass(frozen=True)
class Choices:
    """The operator's choices an upload carries (choice_metadata)."""

    send_again_from: frozenset[str] = frozenset()
    corrected: frozenset[int] = frozenset()

    @classmethod
    def of(cls, metadata: Mapping[str, str]) -> Choices:
        """The choices of an upload's ``metadata``; a row that is no number is left out."""
        names = metadata.get(SEND_AGAIN_METADATA, "")
        rows = metadata.get(CORRECTED_ADDRESS_METADATA, "")
        return cls(
            frozenset(unquote(name) for name in names.split(",") if name),
            frozenset(int(row) for row in rows.split(",") if row.strip().isdigit()),
        )

    def record(self, ledger: Ledger, campaign_id: str) -> None:
        """Keep the choices in the ledger, before anything is sent by them."""
        for name in sorted(self.send_again_from):
            ledger.record_choice(campaign_id, "send_again_from", name)
        for row in sorted(self.corrected):
            ledger.record_choice(campaign_id, "corrected_address", str(row))


class _Retry:
    """The campaign's failed rows an upload asks to send again (its metadata), as far as the
    file still holds them.

    Asked for: rows failed with an answer (RETRY_FAILED_METADATA), rows failed as
    OutcomeUnknown (RETRY_UNKNOWN_METADATA), each only if failed before the upload was
    stored: EventBridge may start a second execution for one upload, and the rows that fail
    in the first must not be sent again by the second. The ledger lists them before the file
    is read (few); the rows passed on mark theirs; only those are released: a row taken out of
    the file (one found to have arrived) stays failed, and no later run of it sends it.
    """

    def __init__(self, upload: ObjectInfo, campaign_id: str, ledger: Ledger | None) -> None:
        self.campaign_id = campaign_id
        # S3 gives the time in whole seconds, cut: a second more keeps every row failed
        # before it. (The first execution of an upload fails rows seconds after it at best.)
        self.before = None if upload.modified is None else upload.modified + 1
        self.kinds = [
            unknown
            for unknown, name in ((False, RETRY_FAILED_METADATA), (True, RETRY_UNKNOWN_METADATA))
            if ledger is not None and upload.metadata.get(name, "").strip().lower() == "true"
        ]
        self.ledger = ledger if self.kinds else None
        self.failed: dict[str, bool] = {}  # key -> failed as OutcomeUnknown
        for unknown in self.kinds:
            assert self.ledger is not None
            keys = self.ledger.failed_keys(campaign_id, failed_before=self.before, unknown=unknown)
            self.failed.update(dict.fromkeys(keys, unknown))
        self.held: dict[str, int] = {}  # key -> row, of the failed rows the file holds

    def see(self, key: str, row: int) -> None:
        """A row passed on: given back if it is one of the failed."""
        if key in self.failed:
            self.held[key] = row

    def release(self, withdrawn: frozenset[int]) -> int:
        """Release the failed rows the file holds (withdrawn rows left out); how many."""
        if self.ledger is None or not self.held:
            return 0
        released = sum(
            self.ledger.release_failed(
                self.campaign_id,
                failed_before=self.before,
                unknown=unknown,
                keys=[
                    key
                    for key, row in self.held.items()
                    if self.failed[key] is unknown and row not in withdrawn
                ],
            )
            for unknown in self.kinds
        )
        log.debug("released %d failed row(s) of %s for this run", released, self.campaign_id)
        return released


class ShortKeys:
    """Ledger keys read once for a campaign (not once per row), kept as 64-bit numbers (a key
    is a sha256 in hex): a few dozen bytes each for a million rows, where a clash would only
    take one row for another's."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = frozenset(_short(key) for key in keys)

    def __contains__(self, key: str) -> bool:
        return _short(key) in self._keys

    def __bool__(self) -> bool:
        return bool(self._keys)


class SettledKeys(ShortKeys):
    """The keys of a campaign's rows that the ledger has settled: sent (a run skips them) or
    failed for good (a run reports them failed again, unless an upload releases them)."""

    def __init__(self, ledger: Ledger, campaign_id: str) -> None:
        super().__init__(ledger.settled_keys(campaign_id))


class _Demand:
    """The messages a run will send, for the quota preflight.

    A row counts unless the ledger has it settled (SettledKeys) and this upload does not
    release it (_Retry). It counts its recipients, To, Cc and Bcc, as SES counts them against
    the 24-hour quota.
    """

    def __init__(self, ledger: Ledger, campaign_id: str, retry: _Retry) -> None:
        self.settled = SettledKeys(ledger, campaign_id)
        self.released = retry.failed
        self.messages = 0

    def recipients(self, row: dict[str, Any]) -> int:
        """How many messages ``row`` adds to this run (0: the run skips it)."""
        if row["key"] in self.settled and row["key"] not in self.released:
            return 0
        return 1 + len(row.get("cc") or ()) + len(row.get("bcc") or ())

    def add(self, row: dict[str, Any]) -> None:
        """A row passed on to the manifest."""
        self.messages += self.recipients(row)

    def drop(self, row: dict[str, Any]) -> None:
        """A row taken out of the manifest again (IntakeReport.withdrawn)."""
        self.messages -= self.recipients(row)


def _short(key: str) -> int:
    return int(key[:16], 16)


def _ignore(row: dict[str, Any]) -> None:
    """A row dropped from the manifest when nothing counts rows."""


def load_templates(storage: Storage, prefix: str) -> Catalog:
    """Read every template file under ``prefix`` and build the catalog."""
    files = {}
    for info in storage.list(prefix):
        relative = info.key[len(prefix) :]
        if relative.endswith("/"):  # an empty folder
            continue
        try:
            files[relative] = storage.get(info.key).decode("utf-8")
        except UnicodeDecodeError as error:
            raise TemplateError(f"{info.key}: not UTF-8 text: {error}") from None
    if not files:
        raise TemplateError(f"{storage.bucket}/{prefix}: no templates found")
    return load_catalog(files)


def _demo_refusal(
    name: str, found: tuple[int, str, str], *, bucket: str, prefix: str, stack: str
) -> DemoTemplates:
    """The refusal of a run that would mail the demo templates (the bucket's under ``prefix``,
    their manifest marked ``demo: true``) to ``found``, the (row, column, address) of file
    ``name`` outside the domains reserved for examples; what to do instead, on the functions'
    ``stack`` (an upload of one's own templates) or on this machine (--templates DIR)."""
    row, column, address = found
    if stack:
        where = f"s3://{bucket}/{prefix}"
        own = (
            "Upload your own templates folder (the one you checked with mailmatrix validate"
            f" --templates DIR) over them: aws s3 sync my-campaign/templates/ {where} --delete,"
            " then send the file again"
        )
    else:
        where = "the templates folder"
        own = "Pass a templates folder of your own with --templates DIR"
    return DemoTemplates(
        f"templates: {where} holds the bundled demo templates (their {MANIFEST} says"
        f" {DEMO_KEY}: true: a fictional company's letters and From), and they would go to a"
        f" real person ({name} row {row}, {column} {mask(address)}); nothing was sent. {own}."
        f" If these letters are your own, delete the line {DEMO_KEY}: true from {MANIFEST}"
        " (and upload it again). The demo itself goes only to addresses at domains reserved"
        f" for examples: {RESERVED_SAID}",
        details={"code": "DemoTemplates", "row": row},
    )


def placeholder_sender_refusal(
    sender: str,
    origin: str,
    found: tuple[int, str, str],
    *,
    name: str,
    via: str,
    own: str,
    trial: str = "Into the local outbox, a trial",
) -> PlaceholderSender:
    """The refusal of a run that would mail ``found``, the (row, column, address) of file
    ``name`` outside the domains reserved for examples, through the mail service ``via``
    From ``sender`` (given by ``origin``), a placeholder at one of them; ``own``: how to give
    a sender of one's own; ``trial``: the run that sends nobody, which still goes."""
    row, column, address = found
    return PlaceholderSender(
        f"sender: the From address {envelope_sender(sender)} ({origin}) is a placeholder at a"
        " domain reserved for examples, not an address of yours: real mail servers would"
        f" bounce these letters or mark them as spoofed, and {via} would deliver them to real"
        f" people ({name} row {row}, {column} {mask(address)}); nothing was sent. {own}."
        f" ({trial}, the letters go whatever the sender; through a mail server, a placeholder"
        f" sender writes only to addresses at domains reserved for examples: {RESERVED_SAID})",
        details={"code": "PlaceholderSender", "row": row},
    )


def placeholder_constant_refusal(
    constant: tuple[str, str],
    found: tuple[int, str, str],
    *,
    name: str,
    via: str,
    manifest: str,
    then: str,
    trial: str = "Into the local outbox, a trial",
) -> PlaceholderConstant:
    """The refusal of a run that would mail ``found``, the (row, column, address) of file
    ``name`` outside the domains reserved for examples, through the mail service ``via``,
    letters whose constant ``constant`` (name, address: see placeholder_constant) in the
    templates' ``manifest`` is a placeholder at one of them; ``then``: what to do once it is
    one's own; ``trial``: the run that sends nobody, which still goes."""
    key, placeholder = constant
    row, column, address = found
    return PlaceholderConstant(
        f"templates: the constant {key} under 'context' in {manifest} holds {placeholder}, a"
        " placeholder at a domain reserved for examples: the letters would tell their readers"
        f" to write to an address nobody reads, and {via} would deliver them to real people"
        f" ({name} row {row}, {column} {mask(address)}); nothing was sent. Write an address of"
        f" yours there (or delete {key}, if no template prints it), {then}. ({trial},"
        " the letters go whatever the constants; through a mail server, constants at those"
        f" domains go only to addresses at domains reserved for examples: {RESERVED_SAID})",
        details={"code": "PlaceholderConstant", "row": row},
    )


def validate_job(
    storage: Storage,
    source: Source,
    settings: Settings,
    *,
    preflight: Callable[[str, int], dict[str, Any]] | None = None,
    preflight_counts: bool = True,
    open_ledger: Callable[[], Ledger],
    execution: str | None = None,
    elsewhere: LedgersElsewhere | None = None,
) -> dict[str, Any]:
    """Validate the upload; write the manifest and rejects report; return the state's result.

    The upload read, content and metadata, is the one the event names (its version, else its
    ETag: UploadReplaced when another has replaced it). The manifest is the execution's own
    (under its name): a later run of the same file writes another, so a redrive of this
    execution still sends the rows this one validated — unless a newer upload of the file has
    been validated since.

    The files earlier runs sent as their recipients' own (the ledger's owners, read once:
    earlier_files) that the attachments still hold are those recipients' to intake: a row of
    another recipient naming a link to one, or a copy of one, is not sent. Nor is a row whose
    Cc or Bcc names a recipient earlier runs mailed (the ledger asked of those addresses only).

    ``elsewhere``: the ledgers of other workdirs (a local run's): a row whose letter of its
    set a run there sent to its address through a mail server is held back as one the own
    ledger holds; a ledger that could not be read there is warned of.

    Templates whose manifest says ``demo: true`` (the bundled demo's, as `make deploy` leaves
    them in the bucket) are refused (DemoTemplates), before the ledger records the run's
    template sets or upload, so before anything is sent, when a valid row would mail them to
    an address (To, Cc or Bcc) outside the domains reserved for examples: unless a dry run,
    or the mailer only fills an outbox. So is a sender at one of those domains, whatever the
    templates (PlaceholderSender), and a constant of the manifest's ``context`` that writes an
    address at one of them (PlaceholderConstant: letters telling real people to write to it).

    ``preflight(sender, needed)`` checks the mail service before anything is planned;
    ``preflight_counts``: it checks a quota (SES), so ``needed`` is the messages this run
    will send (see _Demand), for which the ledger is asked once; otherwise the valid rows.

    Once the file has passed, before anything is sent, the ledger (``open_ledger``) is told,
    in this order: the template sets of the valid rows, added to those the campaign has used
    (Ledger.record_template_sets; a run whose templates lack one used before is refused,
    TemplateSetsChanged, as its letters would be keyed anew and sent again, and does not
    count as the file's latest upload); then this upload, as its campaign's latest (batches
    of older uploads send no more). An upload whose metadata asks for it
    (RETRY_FAILED_METADATA) has the campaign's failed rows released then (not when it is
    superseded already).
    """
    source = stored_source(storage, source)
    with _the_upload(source) as pinned:
        upload = storage.head(source.key, **pinned)
    if not source.etag:
        source = dataclasses.replace(source, etag=upload.etag)
    campaign_id = campaign_id_for(source)
    catalog = load_templates(storage, settings.templates_prefix)
    sender = settings.sender or catalog.sender
    if not sender:
        raise ConfigurationError(
            "sender: no From address: set MAILMATRIX_SENDER (mailmatrix run --sender) "
            "or 'sender' in the templates manifest"
        )
    problem = sender_problem(sender)
    if problem:
        raise ConfigurationError(problem)
    attachments = AttachmentIndex.from_listing(
        storage.list(settings.attachments_prefix), prefix=settings.attachments_prefix
    )
    rules = IntakeRules(
        max_message_bytes=settings.max_message_bytes,
        check_deliverability=settings.check_deliverability,
    )
    folder = _execution_folder(execution)
    manifest_key = f"validated/{campaign_id}/{folder}/manifest.jsonl"
    reports = reports_prefix(campaign_id, folder)
    rejects_key = f"{reports}rejects.csv"
    dry_run = source.key.startswith(DRY_RUN_PREFIX)
    ledger = None if dry_run else open_ledger()  # a dry run sends nothing: no ledger
    if ledger is not None:
        alike = ledger.record_name(campaign_id, campaign_name(source))
        if alike is not None:
            raise name_like_another(source, alike, stack=settings.stack)
    retry = _Retry(upload, campaign_id, ledger)
    counting = preflight is not None and preflight_counts
    demand = _Demand(ledger, campaign_id, retry) if counting and ledger is not None else None
    earlier = None if ledger is None else earlier_files(ledger, campaign_id, attachments)
    contents = StoredContents(storage, settings.attachments_prefix)
    sent_files = mailed = sets = None
    choices = Choices.of(upload.metadata)
    if ledger is not None:
        settled = demand.settled if demand is not None else SettledKeys(ledger, campaign_id)

        def skipped(email: str, template: str) -> bool:
            key = idempotency_key(campaign_id, email, template)
            return key in settled and key not in retry.failed

        sent_files = SentFiles(
            ledger,
            attachments,
            contents,
            campaign=campaign_id,
            recipient=recipient_key,
            skipped=skipped,
            send_again_from=choices.send_again_from,
        )
        mailed = EarlierRecipients(
            ledger, campaign=campaign_id, key=idempotency_key, skipped=skipped
        )
        sets = EarlierSets(
            elsewhere.around(ledger) if elsewhere else ledger,
            campaign=campaign_id,
            person=letter_set,
            skipped=skipped,
            send_again_from=choices.send_again_from,
        )
    used_sets: set[str] = set()
    # The demo templates, and a placeholder sender, may reach only the domains reserved for
    # examples, unless the run only files its letters in an outbox, or only previews them.
    sent_for_real = not dry_run and not settings.into_outbox
    constant = placeholder_constant(catalog.context)
    guarded = catalog.demo or placeholder_sender(sender) or constant is not None
    guard_demo = guarded and sent_for_real
    real: list[tuple[int, str, str]] = []

    # Stream the rows once: each valid row becomes one manifest line on local disk (Lambda's
    # /tmp), uploaded at the end; memory holds only the current row.
    handle, manifest_path = tempfile.mkstemp(
        prefix="mailmatrix-manifest-", suffix=".jsonl", dir=settings.scratch
    )
    try:
        with _manifest_file(handle, manifest_path, manifest_key) as manifest:

            def emit(row: dict[str, Any]) -> None:
                row["key"] = idempotency_key(campaign_id, row["email"], row["template"])
                if row["row"] in choices.corrected:
                    row["corrected_address"] = True
                used_sets.add(row["template"])
                if guard_demo and not real:
                    found = first_real(row_recipients(row))
                    if found is not None:
                        real.append(found)
                retry.see(row["key"], row["row"])
                if demand is not None:
                    demand.add(row)
                line = _MANIFEST_LINE.encode(row)
                # Escape the Unicode line separators JSON allows raw, so no line-oriented
                # reader (ours, AWS's ItemReader, a person's editor) can split a record.
                line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
                try:
                    manifest.write(line + "\n")
                except OSError as error:
                    raise _manifest_not_written(manifest_path, manifest_key, error) from error

            def sent_before(rows: frozenset[int]) -> frozenset[int]:
                if ledger is None:
                    return frozenset()
                try:
                    manifest.flush()
                except OSError as error:
                    raise _manifest_not_written(manifest_path, manifest_key, error) from error
                return _sent_rows(manifest_path, rows, ledger)

            with _the_upload(source) as pinned, storage.open(source.key, **pinned) as stream:
                report = validate_recipients(
                    stream,
                    source=source.key,
                    catalog=catalog,
                    attachments=attachments,
                    rules=rules,
                    emit=emit,
                    contents=contents,
                    sent_before=sent_before,
                    earlier=earlier,
                    sent_files=sent_files,
                    mailed=mailed,
                    sets=sets,
                )
        if elsewhere is not None:
            report.warnings += elsewhere.unchecked
        # The report's lists are read for the last time here: closed then (counts stay).
        with report:
            if report.withdrawn:
                try:
                    _drop_rows(manifest_path, report.withdrawn, demand.drop if demand else _ignore)
                except OSError as error:
                    raise _manifest_not_written(manifest_path, manifest_key, error) from error
            storage.put_file(manifest_key, manifest_path, content_type="application/jsonl")
            rejects = io.BytesIO()
            write_rejects(report, rejects)
            storage.put(rejects_key, rejects.getvalue(), content_type="text/csv; charset=utf-8")
            storage.put(
                f"{reports}validation.json",
                json.dumps(report.to_dict(limit=1000), ensure_ascii=False, indent=2).encode(),
                content_type="application/json",
            )
    finally:
        os.unlink(manifest_path)

    if real and catalog.demo:
        raise _demo_refusal(
            source.key.rsplit("/", 1)[-1],
            real[0],
            bucket=source.bucket,
            prefix=settings.templates_prefix,
            stack=settings.stack,
        )
    if real and placeholder_sender(sender):
        raise _placeholder_refusal(sender, real[0], source, settings)
    if real and constant is not None:
        raise _constant_refusal(constant, real[0], source, settings)
    if ledger is not None and used_sets:
        gone = ledger.record_template_sets(campaign_id, used_sets, catalog=catalog.names)
        if gone:
            raise template_sets_changed(source.key, gone, scope="this run")
    if ledger is not None:
        choices.record(ledger, campaign_id)
    # The file has passed: from now on this upload is the one its campaign sends, unless a
    # newer upload of it was validated already (its execution sends the file then: this
    # one's batches send nothing, see send_batch).
    this = source.upload(campaign_id, execution)
    latest = None if ledger is None else ledger.record_upload(this)
    superseded = latest is not None and latest.upload != this.upload
    send_rate = settings.send_rate
    if preflight is not None and not dry_run and not superseded:
        account = preflight(sender, report.valid if demand is None else demand.messages)
        if send_rate is None:
            send_rate = float(account["max_send_rate"])
    plan = plan_send(
        send_rate=send_rate or 0.0,
        valid_rows=report.valid,
        batch_size=settings.batch_size,
        max_concurrency=settings.max_concurrency,
    )
    plan["dry_run"] = dry_run
    released = 0 if superseded else retry.release(report.withdrawn)
    campaign = {
        "id": campaign_id,
        "source": {
            "bucket": source.bucket,
            "key": source.key,
            "etag": source.etag,
            "version_id": source.version_id,
            "sequencer": source.sequencer,
        },
        # which upload this is: a batch sends only while it is the campaign's latest validated
        "upload": this.upload,
        # the files whose letters this run sends again on purpose (run --send-again-from):
        # a batch holds back no letter for having gone out under one of them (hold_letter)
        **({"send_again_from": sorted(choices.send_again_from)} if choices.send_again_from else {}),
        "sender": sender,
        # the recipients file's delimiter, which the reports are written with
        "delimiter": report.delimiter,
        "templates_prefix": settings.templates_prefix,
        "attachments_prefix": settings.attachments_prefix,
        "max_message_bytes": settings.max_message_bytes,
        "send_rate": send_rate or 0.0,
        "per_worker_rate": plan.get("per_worker_rate", 0.0),
        "unsubscribe": settings.unsubscribe,
        "configuration_set": settings.configuration_set,
        "rejects_key": rejects_key,
        # which of Cc and Bcc the file has: the report leaves a row's copies of a column it
        # does not have empty, not "(not recorded)" (see send_batch)
        "copy_columns": [name for name in ("Cc", "Bcc") if name in report.header],
        "results_prefix": f"results/{campaign_id}",
        "dry_run": dry_run,
        "retry_command": retry_command(source, settings.stack),
        "retry_unknown_command": retry_command(source, settings.stack, unknown=True),
        "run_again_command": run_again_command(source, settings.stack),
    }
    counts = {
        "rows": report.rows,
        "valid": report.valid,
        "rejected": len(report.rejected),
        "duplicates": len(report.duplicates),
        "excluded": len(report.skipped) - sum(report.sent_under.values()),
        "sent_under": sum(report.sent_under.values()),
        # of them, those whose letters only may have gone (in doubt there): not sent there
        "doubt_under": report.doubt_under,
        "empty": report.empty,
        "released": released,
    }
    if dry_run:
        _write_previews(storage, campaign, catalog, manifest_key, f"{reports}previews/")
    log.debug("validated %s: %s", source.key, counts)
    return {
        "campaign": campaign,
        "counts": counts,
        "manifest": {"bucket": source.bucket, "key": manifest_key},
        "plan": {
            "batch_size": plan["batch_size"],
            "max_concurrency": plan["max_concurrency"],
            "tolerated_failure_percentage": plan["tolerated_failure_percentage"],
            "dry_run": dry_run,
        },
        # Logged, and kept in the report's validation.json; the state leaves them out.
        "warnings": report.warnings,
        # The files whose letters went to the same addresses already (rows held back), with
        # how many: the console names them.
        "sent_under": dict(sorted(report.sent_under.items())[:_SHOWN_FILES]),
    }


def _placeholder_refusal(
    sender: str, found: tuple[int, str, str], source: Source, settings: Settings
) -> PlaceholderSender:
    """The refusal of a run From the placeholder ``sender`` to ``found`` (see
    placeholder_sender_refusal), saying where to set one's own: the stack's parameter, the
    run's --sender, or the templates' manifest."""
    via = "SES" if settings.mailer == "ses" else "the mail server"
    origin = f"'sender' in the templates' {MANIFEST}"
    trial = "Into the local outbox, a trial"
    if settings.stack:
        trial = "In a dry run (aws send --dry-run), which sends nothing"
        origin = "the stack's SenderAddress parameter" if settings.sender else origin
        own = (
            "Set the stack's SenderAddress parameter to an address of your own under its"
            " verified SenderIdentity (parameter_overrides in infra/samconfig.toml, then make"
            " deploy), then send the file again"
        )
    elif settings.sender:
        origin = "--sender or MAILMATRIX_SENDER"
        own = "Give your own From address with --sender (or MAILMATRIX_SENDER), then run again"
    else:
        own = (
            f"Set your own From address as 'sender' in the templates' {MANIFEST}, or give it"
            " with --sender, then run the file again"
        )
    name = source.key.rsplit("/", 1)[-1]
    return placeholder_sender_refusal(
        sender, origin, found, name=name, via=via, own=own, trial=trial
    )


def _constant_refusal(
    constant: tuple[str, str], found: tuple[int, str, str], source: Source, settings: Settings
) -> PlaceholderConstant:
    """The refusal of a run whose templates' ``constant`` is a placeholder, to ``found`` (see
    placeholder_constant_refusal), saying where to make it one's own: the templates uploaded
    to the stack's bucket, or the run's templates folder."""
    manifest = f"the templates' {MANIFEST}"
    then = "then run the file again"
    trial = "Into the local outbox, a trial"
    if settings.stack:
        where = f"s3://{source.bucket}/{settings.templates_prefix}"
        manifest = f"{where}{MANIFEST}"
        then = (
            "in your templates folder, upload it over them: aws s3 sync"
            f" my-campaign/templates/ {where} --delete, then send the file again"
        )
        trial = "In a dry run (aws send --dry-run), which sends nothing"
    name = source.key.rsplit("/", 1)[-1]
    via = "SES" if settings.mailer == "ses" else "the mail server"
    return placeholder_constant_refusal(
        constant, found, name=name, via=via, manifest=manifest, then=then, trial=trial
    )


def row_recipients(row: dict[str, Any]) -> Iterator[tuple[int, str, str]]:
    """(row, column, address) for each address a manifest row is sent to: To, Cc and Bcc."""
    yield row["row"], "Email", row["email"]
    for column in ("cc", "bcc"):
        for address in row.get(column) or ():
            yield row["row"], column.capitalize(), address


def earlier_files(ledger: Ledger, campaign_id: str, attachments: AttachmentIndex) -> EarlierFiles:
    """The files earlier runs of the campaign sent as their recipients' own, which the
    attachments listing still holds under their names: one query of the ledger."""
    return EarlierFiles(
        ledger.file_owners(campaign_id),
        attachments,
        functools.partial(recipient_key, campaign_id),
    )


def _write_previews(
    storage: Storage, campaign: dict[str, Any], catalog: Catalog, manifest_key: str, prefix: str
) -> None:
    """Render the first rows of a dry run as .eml files under ``prefix``."""
    attachments = campaign["attachments_prefix"]
    with storage.open(manifest_key) as stream:
        for count, line in enumerate(stream):
            if count >= MAX_PREVIEWS:
                break
            item = json.loads(line)
            raw, _ = compose(
                item,
                campaign,
                catalog=catalog,
                fetch_attachment=attachment_fetcher(storage, attachments),
            )
            storage.put(
                f"{prefix}row-{item['row']}.eml",
                raw,
                content_type="message/rfc822",
            )


def send_job(
    items: list[dict[str, Any]],
    campaign: dict[str, Any],
    *,
    storage: Storage,
    catalog: Catalog,
    mailer: Mailer,
    ledger: Ledger,
    attempt: str,
    deadline: float | None = None,
    invocation: str | None = None,
    reserve_s: float | None = None,
    elsewhere: LedgersElsewhere | None = None,
) -> dict[str, Any]:
    """Send one Map batch before ``deadline`` (epoch seconds) as ``invocation`` (the Lambda
    request id: one invocation of an attempt sends at a time), starting no row with less than
    ``reserve_s`` left (None: RetryPolicy's); return each row's outcome. ``elsewhere``: the
    other workdirs' ledgers (a local run's), asked for each letter about to go."""
    rate = float(campaign.get("per_worker_rate") or 0.0)
    # send_batch's own policy unless a reserve is given (not policy=None: it would replace one
    # bound to send_batch beforehand)
    tuned: dict[str, Any] = (
        {} if reserve_s is None else {"policy": RetryPolicy(reserve_s=reserve_s)}
    )
    result = send_batch(
        items,
        campaign,
        catalog=catalog,
        fetch_attachment=attachment_fetcher(storage, campaign["attachments_prefix"]),
        mailer=mailer,
        ledger=ledger,
        attempt=attempt,
        pacer=Pacer(rate) if rate > 0 else None,
        deadline=deadline,
        invocation=invocation,
        elsewhere=elsewhere.letter_of if elsewhere else None,
        **tuned,
    )
    return result.to_dict()


def read_map_results(storage: Storage, send: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Yield each child execution's record from the Map Run's ResultWriter files, parsed one
    record at a time: on AWS one file holds every batch's input and output, about 640 MB for a
    million rows, which parsed whole would not fit in the Summarize function's memory."""
    details = send.get("ResultWriterDetails") or {}
    if not details.get("Key"):
        return
    manifest = json.loads(storage.get(details["Key"]))
    for status in ("SUCCEEDED", "FAILED", "PENDING"):
        for entry in manifest.get("ResultFiles", {}).get(status, []):
            yield from _result_records(storage, entry["Key"])


def _result_records(storage: Storage, key: str) -> Iterator[dict[str, Any]]:
    """The child records of one result file, which must be a JSON array of objects: a
    damaged file is an error naming it (ijson alone would read an object as no records)."""
    with contextlib.closing(storage.open(key)) as stream:
        events = ijson.parse(stream, use_float=True)
        try:
            first = next(events, None)
            if first is None or first[1] != "start_array":
                raise StorageError(f"{key}: not a Map Run result file (no JSON array)")
            for record in ijson.items(events, "item"):  # the rest of the same parse
                if not isinstance(record, dict):
                    raise StorageError(f"{key}: a record is not a JSON object: {record!r:.80}")
                yield record
        except ijson.JSONError as error:  # its first line: the rest quotes the bytes
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise StorageError(f"{key}: not a Map Run result file: {reason:.200}") from None


def summarize_job(
    storage: Storage,
    campaign: dict[str, Any],
    counts: dict[str, Any],
    send: dict[str, Any],
    execution: str,
    *,
    ledger: Ledger | None = None,
    scratch: str | None = None,
) -> dict[str, Any]:
    """Count outcomes per template, write the execution's report and summary.json beside it,
    return the summary state's result. The report is written in ``scratch`` (a folder; the
    system's temporary one by default) on its way to storage."""
    # When a batch did not finish, the ledger tells which of its rows went out anyway (asked
    # for those rows only, as such a batch's record is read).
    settled = ledger.outcomes_of if ledger is not None else None
    reports = reports_prefix(campaign["id"], _execution_folder(execution))
    report = f"{reports}report.csv"
    handle, report_path = tempfile.mkstemp(prefix="mailmatrix-report-", suffix=".csv", dir=scratch)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            # The byte-order mark Excel needs, written once: the utf-8-sig codec would run
            # Python code on every row written.
            out.write("\ufeff")
            summary: Summary = summarize_results(
                campaign,
                counts,
                read_map_results(storage, send),
                dry_run=bool(send.get("dry_run")),
                settled=settled,
                report=report_writer(out, campaign.get("delimiter") or ","),
            )
        _check_every_row_counted(summary, counts, send)
        storage.put_file(report, report_path, content_type="text/csv; charset=utf-8")
    finally:
        os.unlink(report_path)
    storage.put(
        f"{reports}summary.json",
        json.dumps(summary.to_dict(execution=execution), ensure_ascii=False, indent=2).encode(),
        content_type="application/json",
    )
    return {
        "subject": summary.subject(),
        "message": summary.message(execution=execution, report_key=report),
        "counts": summary.counts,
        "per_template": summary.per_template,
        "report_key": report,
        "outcome": summary.outcome,
    }


def _check_every_row_counted(summary: Summary, counts: dict, send: dict[str, Any]) -> None:
    """Fail when the Map Run's results account for other than the validated rows: each
    valid row is in exactly one batch, so a result file is missing or damaged. A summary
    that went on would call the execution done, and it could no longer be redriven."""
    if send.get("dry_run"):
        return  # a dry run sends no batch
    counted = sum(sum(numbers.values()) for numbers in summary.per_template.values())
    valid = int(counts.get("valid", 0))
    if counted != valid:
        raise StorageError(
            f"the Map Run's results account for {counted} of the {valid} validated rows: a"
            " result file is missing or damaged; restore it, then redrive the execution"
        )


def listing_signature(objects: Iterable[ObjectInfo]) -> tuple[tuple[str, int, str], ...]:
    """A hashable fingerprint of a listing, to know when cached templates are stale."""
    return tuple((o.key, o.size, o.etag) for o in objects)
