"""The batch-send algorithm: claim each row in the ledger, render, size-check, send, record.

One call handles one ItemBatcher batch (a Distributed Map child). Rows go out one after the
other, each guarded by the ledger: a key already sent is skipped, a key that failed for good
is reported again, a key held by another live attempt is left for a later retry. A sent row
is recorded by the claim of the next (one ledger write per email), the last one when the batch
ends, however it ends. A row's own attachment, already in memory to build its message, is
recorded with it: its size, SHA-256 and sample print (LetterFile), in the same write, so a
later validation of any campaign can refuse a copy of it to another person. Errors are
sorted into four kinds (docs/sending.md):

- Throttled / TransientSendError: retried here with exponential backoff and full jitter,
  a few times; what is left stops the batch and is raised, so the state machine's Retry
  runs the batch again (sent rows are then skipped).
- PermanentSendError (and a render error, a missing attachment, an oversized message):
  recorded for that row and reported; the batch goes on.
- AccountSendingHalted: the account cannot send at all. The batch stops, the campaign is
  marked halted in the ledger so every other batch stops before calling the mailer, and the
  error is raised (the state machine does not retry it). Rows not attempted stay unsent.
  So too when the service refused every try of ``refusing_rows`` rows in a row for now
  (SMTP 4xx not about the recipient: greylisting, a busy or paused server): the next rows,
  and every retry of the batch, would only be refused the same way (ServiceRefusing); and
  when ``unknown_rows`` rows in a row failed as OutcomeUnknown (OutcomesUnknown): a service
  that takes messages without answering would otherwise get two copies of every row.

A batch reads its campaign in the ledger before its first row, then at most every
halt_check_s (one read: Ledger.campaign_status), and stops:
- once a newer upload of the campaign's file has been validated: its rows not sent yet are
  reported Superseded, not retried and not written to the ledger, and the batch ends
  normally; the newer upload's execution sends the file as it is now, so a row the operator
  took out of it is not mailed by this one, running or redriven;
- before its first row, when its templates lack a set the campaign used (the ledger keeps
  their names): TemplateSetsChanged, as its letters would be keyed anew and sent again;
- while the campaign is halted (AccountSendingHalted, above).
It looks too while it waits for its pacer's next slot, so a stop asked for (the operator's
halt) ends a long wait of a slow send rate within halt_check_s.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mailmatrix.core.addresses import (
    addresses_in,
    is_reserved_domain,
    mask,
    mask_addresses,
    parse_address,
)
from mailmatrix.core.attachments import PDF_HEAD_BYTES, pdf_problem
from mailmatrix.core.contents import sample_print
from mailmatrix.core.failures import (
    OUTCOMES_UNKNOWN,
    REFUSING_WORDS,
    SERVICE_REFUSING,
    UNKNOWN_WORDS,
)
from mailmatrix.core.pacing import Pacer
from mailmatrix.core.report import (
    ATTACHMENT_OF_ANOTHER,
    NOT_RECORDED,
    OTHER_LETTER_SENT,
    SUPERSEDED,
    held_under_code,
    letter_of_another_campaign,
    retry_command,
    runs_on_a_stack,
    sent_under_reason,
)
from mailmatrix.core.templates import DEFAULT_SET, MANIFEST, Rendered
from mailmatrix.errors import (
    AccountSendingHalted,
    AttachmentChanged,
    AttachmentNotPdf,
    AttachmentUnreadable,
    ClaimBusy,
    MailMatrixError,
    NotFoundError,
    ObjectChanged,
    ObjectUnreadable,
    PermanentSendError,
    SendError,
    ServiceUnreachable,
    StorageError,
    TemplateError,
    TemplateSetsChanged,
    Throttled,
    TransientSendError,
)
from mailmatrix.ports import (
    OUTCOME_UNKNOWN,
    SENDING,
    Claim,
    Ledger,
    LetterFile,
    LetterPrint,
    Mailer,
    SentCopy,
    Storage,
    Unanswered,
    Upload,
    doubt_reason,
    sending_elsewhere,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def idempotency_key(campaign_id: str, email: str, template: str) -> str:
    """Return the hex sha256 of ``campaign|address|template``: one email of one campaign.

    No row number and no file version: an operator who fixes rejected rows and uploads the
    file again (same name) must not mail the rows that already went out, though every line
    after a deleted one has moved. Addresses compare case-insensitively, as duplicates do.
    """
    return hashlib.sha256(f"{campaign_id}|{email.casefold()}|{template}".encode()).hexdigest()


def message_token(key: str) -> str:
    """The Message-ID's left part of the letter whose idempotency key is ``key``: every copy
    of one letter (a retry whose first try may have arrived, a redrive, a takeover) carries
    the same Message-ID, so a mail system that drops messages it already holds by their
    Message-ID drops the copy. A hash of the key, not the key: the ledger's keys stay its own.
    (SES replaces the Message-ID with its own.)"""
    return hashlib.sha256(f"message-id|{key}".encode()).hexdigest()[:32]


def recipient_key(campaign_id: str, email: str) -> str:
    """Return the hex sha256 of ``campaign|address``: one recipient of one campaign, told
    apart as idempotency_key tells them (the ledger keeps no address)."""
    return hashlib.sha256(f"{campaign_id}|{email.casefold()}".encode()).hexdigest()


def letter_print(email: str, rendered: Rendered, attachment_sha256: str | None) -> str:
    """Return the hex sha256 of one letter as its recipient reads it: the address (as
    recipient_key takes it), subject, text and HTML bodies, and its attachment's SHA-256 if
    it has one. Two campaigns' letters of one print are the same letter to the same person
    (Ledger.hold_letter); no Date or Message-ID is in it, so a copy of a file prints alike.
    Texts are compared in one Unicode form (NFC): a copy saved in another (NFD, as some Macs
    write), which reads the same, prints alike too."""
    digest = hashlib.sha256()
    for part in (email.casefold(), rendered.subject, rendered.text, rendered.html or ""):
        if not unicodedata.is_normalized("NFC", part):
            part = unicodedata.normalize("NFC", part)
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    digest.update((attachment_sha256 or "").encode())
    return digest.hexdigest()


def letter_set(email: str, template: str) -> str:
    """Return the hex sha256 of an address (as recipient_key takes it) and a template set,
    whatever the campaign: the letters of one set to one person under any file
    (LetterPrint.person), a re-export with a name spelt anew holding the same people."""
    return hashlib.sha256(f"letter-set|{email.casefold()}|{template}".encode()).hexdigest()


def template_sets_changed(
    source_key: str, missing: list[str], *, scope: str
) -> TemplateSetsChanged:
    """The refusal of a run (``scope`` says what sends nothing: "this run", "this batch")
    whose templates lack the sets ``missing`` that earlier runs of the file at ``source_key``
    used: their letters are known by those names (idempotency_key)."""
    named = ", ".join(
        f"{name!r} (the one set of a templates folder without {MANIFEST})"
        if name == DEFAULT_SET
        else repr(name)
        for name in missing
    )
    return TemplateSetsChanged(
        f"{source_key.rsplit('/', 1)[-1]}: earlier runs of this file sent letters of the"
        f" template set(s) {named}, which the templates no longer have (renamed or removed?)."
        " The ledger knows each letter by its set's name, so under another name every one of"
        f" them would be sent again: {scope} sends nothing. Put the set(s) back under the same"
        " name(s) (new sets may be added beside them) and run again; or, to mail everyone"
        " again on purpose, send the file under a new file name (a new campaign) with"
        " --send-again-from and this file's name",
        details={"code": "TemplateSetsChanged", "missing": missing},
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one batch tries before handing a passing fault to the state machine.

    ``tries`` calls per row at most, sleeping a uniform random time in
    ``[0, min(cap_s, base_s * 2**n)]`` between them (full jitter). A row is tried at most
    ``unknown_tries`` times in all with an unknown outcome (a timeout, a connection lost while
    the message was handed over, an earlier attempt that died sending it): a server that takes
    messages but never answers would otherwise get one copy per try and per retry of the
    batch; after that the row fails as OutcomeUnknown (``--retry-unknown`` sends it again).
    ``claim_lease_s`` bounds how long a claim keeps other attempts off a row (the
    invocation's deadline, when known, bounds it too: a Lambda past its deadline is dead). A
    campaign halt stops batches for ``halt_hold_s`` after it was recorded; later batches (a
    redrive) try again. A running batch looks for a halt every ``halt_check_s``.
    ``reserve_s``: stop starting rows this close to the invocation's deadline.
    ``refusing_rows``: rows in a row whose every try the service refused, not for reasons of
    their recipients, that halt the campaign (ServiceRefusing). ``unknown_rows``: rows in a
    row failed as OutcomeUnknown, their last try unanswered, that halt it (OutcomesUnknown);
    after the first of them, the next row fails at its first unanswered try.
    """

    tries: int = 5
    unknown_tries: int = 2
    base_s: float = 0.2
    cap_s: float = 5.0
    claim_lease_s: float = 900.0
    halt_hold_s: float = 60.0
    halt_check_s: float = 0.25
    reserve_s: float = 30.0
    refusing_rows: int = 3
    unknown_rows: int = 2

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Full-jitter delay before the next try after ``failures`` failed tries."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (failures - 1)))


@dataclass
class BatchResult:
    """What happened to each row of one batch."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Number of rows that ended with ``status``."""
        return sum(1 for row in self.rows if row["status"] == status)

    @property
    def sent(self) -> int:
        """Rows sent by this attempt."""
        return self.count("sent")

    @property
    def skipped(self) -> int:
        """Rows already sent by an earlier attempt."""
        return self.count("skipped")

    @property
    def failed(self) -> int:
        """Rows that failed for good (now or earlier)."""
        return self.count("failed")

    def to_dict(self) -> dict[str, Any]:
        """The SendBatch Lambda's result (docs/architecture.md).

        Reasons are cut to REASON_CHARS: a server's multi-line refusal repeated over a batch
        of 100 rows would exceed the 256 KiB a state's result may hold, and the batch could
        never finish (the ledger keeps the whole reason).
        """
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "failed": self.failed,
            "rows": [_short_reason(row) for row in self.rows],
        }


REASON_CHARS = 500


def _short_reason(row: dict[str, Any]) -> dict[str, Any]:
    reason = row.get("reason")
    if isinstance(reason, str) and len(reason) > REASON_CHARS:
        return {**row, "reason": reason[: REASON_CHARS - 1] + "…"}
    return dict(row)


def classify_service_error(
    code: str, message: str, *, status: int | None = None, where: str = "ses"
) -> SendError:
    """Turn a mail service's error code and message into the SendError kind it means.

    SES reports the daily quota with the same Throttling code as the rate limit, so the
    message decides: "Daily message quota exceeded" halts, "Maximum sending rate exceeded"
    throttles (https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html;
    over SMTP both arrive as "454 Throttling failure: ..."). The addresses the message names
    (SES's "identities failed the check: ...") are masked in the error's.
    """
    text = f"{where}: {code}: {mask_addresses(message)}"
    details = {"code": code, "status": status}
    lowered = message.casefold()
    if code in THROTTLING_CODES:
        if "daily" in lowered and "quota" in lowered:
            return AccountSendingHalted(text, details=details)
        return Throttled(text, details=details)
    if code in HALTING_CODES:
        return AccountSendingHalted(text, details=details)
    if code in TRANSIENT_CODES or (status is not None and status >= 500):
        # 503 is the service declining the request for now; 500 may come after it acted.
        refused = code == "ServiceUnavailable" or status == 503
        return TransientSendError(text, details=details, refused=refused)
    return PermanentSendError(text, details=details)


THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException"}
)
HALTING_CODES = frozenset(
    {
        "AccountSendingPausedException",
        "SendingPausedException",
        "ConfigurationSetSendingPausedException",
        "MailFromDomainNotVerifiedException",
        "MailFromDomainNotVerified",
        "AccountSuspendedException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def error_code(exc: BaseException) -> str:
    """The service's error code carried by ``exc``, else its class name."""
    details = getattr(exc, "details", None) or {}
    return str(details.get("code") or type(exc).__name__)


def error_text(exc: BaseException) -> str:
    """The error's message, as recorded in the ledger and the report."""
    return str(getattr(exc, "message", None) or exc)


def format_size(size: int) -> str:
    """Bytes as MiB with two decimals, or whole MiB when exact (e.g. ``10 MiB``)."""
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size / MIB:.2f} MiB"


@functools.lru_cache(maxsize=16)
def envelope_sender(sender: str) -> str:
    """The bare address of a From value such as ``Büro Müller, Abt. <a@example.com>``."""
    # NOTE: read as validation and the From header read it (a name may hold commas), not by
    # email.utils.parseaddr, which takes "Büro Müller" for an address.
    from mailmatrix.core.message import envelope_address

    return envelope_address(sender, where="sender")


def sender_problem(sender: str) -> str | None:
    """Why a From value cannot be sent from, or None: it must be one address that passes
    the rule recipients pass (so no special-use domain such as .test, .invalid or .local)."""
    try:
        address = envelope_sender(sender)
    except MailMatrixError as error:
        return _with_hint(error.message.removeprefix("message: "), sender)
    problem = parse_address(address).problem
    return _with_hint(f"sender: {address!r}: {problem}", sender) if problem else None


def placeholder_sender(sender: str) -> bool:
    """Whether the From value ``sender`` is at a domain reserved for examples (the demo's
    ``talent@example.com``): a placeholder, nobody's own address, which real mail servers
    bounce or mark as spoofed. A value that is not one address is not (sender_problem)."""
    try:
        address = envelope_sender(sender)
    except MailMatrixError:
        return False
    return is_reserved_domain(address.rpartition("@")[2])


def placeholder_constant(context: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first (name, address) of the templates' constants (the manifest's ``context``,
    its nested values walked: ``footer.email``, ``links[0]``) that writes an address at a
    domain reserved for examples (the demo's ``contact_email: talent@example.com``, kept in a
    copy of its templates): a placeholder that letters would tell their readers to write
    to. None when no constant holds one."""
    for name, text in _constant_texts(context, "", set()):
        for address in addresses_in(text):
            if is_reserved_domain(address.rpartition("@")[2]):
                return name, address
    return None


def _constant_texts(value: Any, name: str, seen: set[int]) -> Iterable[tuple[str, str]]:
    """(name, text) for each string in ``value``, named by its path from the context; a value
    met again (a YAML alias of its own parent) is not walked twice."""
    if isinstance(value, str):
        yield name, value
        return
    if not isinstance(value, Mapping | list | tuple) or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _constant_texts(item, f"{name}.{key}" if name else str(key), seen)
    else:
        for index, item in enumerate(value):
            yield from _constant_texts(item, f"{name}[{index}]", seen)


def _with_hint(problem: str, sender: str) -> str:
    """``problem``, and how to write a name with the address when ``sender`` looks like one
    written without the angle brackets (``HR hr@example.org``)."""
    name, _, address = " ".join(sender.split()).rpartition(" ")
    if "<" in sender or not name or "@" not in address:
        return problem
    return (
        f"{problem.rstrip('.')}. To give a name with the address, write it as"
        f" 'Name <address>': '{name} <{address}>'."
    )


# fetch_attachment(name, tag): the file's bytes; with a tag (the manifest's attachment_tag),
# only that version of it, else ObjectChanged (Storage.get).
FetchAttachment = Callable[[str, str | None], bytes]


def attachment_fetcher(storage: Storage, prefix: str) -> FetchAttachment:
    """The fetch_attachment of the files under ``prefix`` (the attachments location)."""

    def fetch(name: str, tag: str | None) -> bytes:
        return storage.get(prefix + name, tag=tag)

    return fetch


def compose(
    item: Mapping[str, Any],
    campaign: Mapping[str, Any],
    *,
    catalog: Any,
    fetch_attachment: FetchAttachment,
) -> tuple[bytes, list[str]]:
    """Render the row's message; return its encoded bytes and the envelope recipients."""
    from mailmatrix.core.message import encode_message

    rendered = catalog.render(item["template"], item["fields"])
    attachment = None
    if item.get("attachment"):
        attachment = (item["attachment"], _listed_attachment(item, fetch_attachment))
    sender = campaign["sender"]
    return encode_message(
        sender=sender,
        to_name=item.get("name") or "",
        to_email=item["email"],
        rendered=rendered,
        attachment=attachment,
        cc=list(item.get("cc") or []),
        bcc=list(item.get("bcc") or []),
        reply_to=item.get("reply_to"),
        unsubscribe=campaign.get("unsubscribe"),
        message_id_domain=envelope_sender(sender).rpartition("@")[2] or None,
        message_token=message_token(item["key"]) if item.get("key") else None,
    )


def _listed_attachment(item: Mapping[str, Any], fetch_attachment: FetchAttachment) -> bytes:
    """The row's attachment as validation listed it: the version it recorded (a manifest
    written before versions were recorded has the size only), else AttachmentChanged."""
    name = item["attachment"]
    try:
        data = fetch_attachment(name, item.get("attachment_tag"))
    except ObjectUnreadable as error:
        why = error.details.get("why") or error.message
        raise AttachmentUnreadable(
            f"attachment {name} could not be read ({why}), so this row was not sent. Make the"
            " file readable by the user that runs MailMatrix, then send the failed rows again"
            " (rows already sent are skipped)"
        ) from error
    except ObjectChanged as error:
        log.debug("attachment %s: %s", name, error)
        raise AttachmentChanged(
            _attachment_changed(
                f"{name} is not the file validation listed (replaced, edited, or relinked to"
                " another file since?)"
            )
        ) from error
    listed = item.get("attachment_size")
    if listed is not None and len(data) != listed:
        raise AttachmentChanged(
            _attachment_changed(
                f"{name} is {len(data)} bytes, it was {listed} (replaced, or"
                " relinked to another file?)"
            )
        )
    # Validation reads no file's start on S3: a file named .pdf is checked here, once read.
    problem = pdf_problem(name, data[:PDF_HEAD_BYTES])
    if problem is not None:
        raise AttachmentNotPdf(problem)
    return data


def _attachment_changed(what: str) -> str:
    """The reason of a row whose attachment changed since validation: ``what`` changed, and
    what a person does about it."""
    return (
        f"attachment changed since the rows were validated: {what}; run the file again: its"
        " attachments are checked again (rows already sent are skipped)"
    )


Composer = Callable[..., tuple[bytes, list[str]]]


class _Stop(Exception):
    """Internal: ends the row loop with the error to raise after bookkeeping."""

    def __init__(self, error: SendError) -> None:
        super().__init__(str(error))
        self.error = error


class _Unknown(Exception):
    """A row tried too often with an unknown outcome: it fails, and is not sent again.
    ``refused_after``: its last try was refused (an answer); ``after_row``: it was tried once
    only, as that row of the campaign, the last before it, failed so too; ``stop``: the
    campaign was halted while its try waited for the answer (the batch stops after it)."""

    def __init__(
        self,
        tries: int,
        error: SendError,
        *,
        refused_after: bool = False,
        after_row: int | None = None,
        stop: _Stop | None = None,
    ) -> None:
        super().__init__(error_text(error))
        self.error = error
        self.answered = refused_after
        self.stop = stop
        if stop is not None:
            self.why = (
                f"the service may have taken the message without answering (last:"
                f" {error_text(error)}), and the campaign was halted before another try"
                f" ({error_code(stop.error)})"
            )
        elif refused_after:
            self.why = (
                f"an earlier try may have been taken without an answer, then the service"
                f" refused it ({error_text(error)})"
            )
        elif after_row is not None:
            self.why = (
                f"the service may have taken the message without answering, as it did row"
                f" {after_row} just before (last: {error_text(error)})"
            )
        else:
            self.why = (
                f"the service may have taken the message without answering, {tries} times"
                f" (last: {error_text(error)})"
            )


def _not_sent_again(why: str, campaign: Mapping[str, Any]) -> str:
    """The reason of a row failed as OutcomeUnknown: ``why`` it may be out already, and what
    a person does about it, with the command for where the campaign runs."""
    return (
        f"{why}; not sent again: check whether the recipient got it; if not, send it again"
        f" with: {retry_command(campaign, unknown=True)}"
    )


class _Superseded(Exception):
    """Internal: a newer upload of the campaign's file has been validated; its execution
    sends the file as it is now, and this batch sends no more."""

    def __init__(self, latest: Upload) -> None:
        super().__init__(latest.upload)
        self.latest = latest
        self.why = f"a newer upload of the file was validated ({latest.upload})"


class _Defer(Exception):
    """Internal: this row's passing fault outlasted its tries; the other rows go on.
    ``refusal``: the service refused every try, not for reasons of the recipient;
    ``recipient``: the last try was refused for reasons of the recipient (a full mailbox)."""

    def __init__(self, error: SendError, *, refusal: bool = False, recipient: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.refusal = refusal
        self.recipient = recipient


@dataclass
class _Batch:
    """The state of one send_batch call."""

    campaign: Mapping[str, Any]
    ledger: Ledger
    mailer: Mailer
    attempt: str
    pacer: Pacer | None
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    rng: random.Random
    policy: RetryPolicy
    deadline: float | None
    result: BatchResult = field(default_factory=BatchResult)
    # The last row sent and not yet recorded (key, message id, whether it may have gone out
    # twice, the file it carried as its recipient's own): the next claim records it in its
    # transaction.
    unrecorded: tuple[str, str, bool, LetterFile | None] | None = None
    # What the claim of the row being sent made its file's owner (name, recipient, masked).
    owner: tuple[str, str, str] | None = None
    # The attachment fetcher of the batch's composer, which keeps the file it read last.
    kept: _KeptAttachment | None = None
    # The catalog of the batch's composer, which keeps the letter it rendered last.
    rendering: _KeptRendering | None = None
    halt_checked: float | None = None  # clock() of the last check_campaign read
    # The campaign's template sets: each claim checks the address's letters of the others
    # (Ledger.claim's ``others``; none in a campaign of one set).
    sets: tuple[str, ...] = ()
    # Rows in a row, up to the current one, whose every try the service refused for now; how
    # many halt the campaign (RetryPolicy.refusing_rows, or the whole batch when smaller, if
    # it holds two rows at least: one row alone may be one recipient greylisted).
    refusals: int = 0
    refusing_rows: int = 3
    # The campaign's rows in a row failed as OutcomeUnknown with their last try unanswered, as
    # this batch last knew them (Ledger.note_unanswered, campaign_status): counted across the
    # campaign's batches, so batches of one row, or several at once, halt as one would;
    # RetryPolicy.unknown_rows of them halt the campaign.
    unknowns: list[int] = field(default_factory=list)
    answered_at: float | None = None  # clock() when a row of this batch was last answered
    # The next row's letter (its key, and it as composed), composed just before this row's
    # letter goes out (send_row's upcoming): its claim, which records this one sent, follows the
    # send at once, and carries its print (Ledger.claim's ``letter``): one ledger write a
    # letter, not two, and no wider window between a letter going out and its record. A row
    # not sent (skipped as sent before: a rerun) composes none ahead: nothing composed for
    # nothing. The first row of a batch, and a row after one not sent, is claimed first.
    ahead: tuple[str, _Composed] | None = None
    # The letter of the set another workdir's run sent to the address through a mail server
    # (adapters.ledgers_elsewhere; a local run's): a letter that went since validation (a
    # redrive's) is held back as one of this ledger's. None: no other ledger to ask.
    elsewhere: Callable[[LetterPrint], SentCopy | None] | None = None

    @property
    def campaign_id(self) -> str:
        return str(self.campaign["id"])

    def lease(self) -> float:
        until = self.clock() + self.policy.claim_lease_s
        return until if self.deadline is None else min(until, self.deadline)

    def claim(self, item: Mapping[str, Any], letter: LetterPrint | None = None) -> Claim:
        others = {
            idempotency_key(self.campaign_id, item["email"], name): name
            for name in self.sets
            if name != item["template"]
        }
        self.owner = owner = self.owner_of(item)
        # The operator said the row's address was corrected (run --corrected-address): its
        # file becomes its recipient's though it went to the earlier address.
        # Keywords only where used: ledgers written before them still take the claim.
        more: dict[str, Any] = {"letter": letter} if letter is not None else {}
        if owner and item.get("corrected_address"):
            more["corrected"] = True
        claim = self.ledger.claim(
            item["key"],
            campaign=self.campaign_id,
            row=int(item["row"]),
            attempt=self.attempt,
            lease_until=self.lease(),
            sent_before=self.unrecorded,
            others=others,
            owner=owner,
            **more,
        )
        self.unrecorded = None
        return claim

    def owner_of(self, item: Mapping[str, Any]) -> tuple[str, str, str] | None:
        """(file name, recipient, masked address) of a row naming its recipient's own file,
        which goes to no one else (Ledger.claim's ``owner``); None for any other row."""
        if not (item.get("own_attachment") and item.get("attachment")):
            return None
        email = item["email"]
        return (str(item["attachment"]), recipient_key(self.campaign_id, email), mask(email))

    def record_unrecorded(self) -> None:
        """Record the last row sent, when no claim of a next row has recorded it."""
        if self.unrecorded is not None:
            key, message_id, uncertain, file = self.unrecorded
            self.ledger.record_sent(key, message_id=message_id, uncertain=uncertain, **_kept(file))
            self.unrecorded = None

    def check_campaign(self) -> None:
        # Read before the first row, then at most every halt_check_s: a halt recorded by
        # another batch, or a newer upload of the file validated, stops this one within that
        # time, without a ledger read per row.
        now = self.clock()
        first = self.halt_checked is None
        if self.halt_checked is not None and now - self.halt_checked < self.policy.halt_check_s:
            return
        self.halt_checked = now
        status = self.ledger.campaign_status(self.campaign_id)
        latest = status.latest_upload
        # A campaign validated before uploads were recorded has none: any recorded is newer.
        if latest is not None and latest.upload != self.campaign.get("upload"):
            raise _Superseded(latest)
        # The templates may have changed since validation (a redrive, a long run): a set gone
        # would leave the ledger blind to the letters sent under its name.
        gone = sorted(status.template_sets - set(self.sets)) if first else []
        if gone:
            source = str((self.campaign.get("source") or {}).get("key") or "the file")
            raise template_sets_changed(source, gone, scope="this batch")
        self.take_unanswered(status.unanswered)
        halt = status.halt
        if halt is None:
            return
        hold = float(self.campaign.get("halt_hold_seconds", self.policy.halt_hold_s))
        age = self.clock() - halt.at
        if age < hold:
            # What happened, not when to redrive: the advice beside it (core.failures) says
            # that, from the reason (a used-up quota lasts longer than the hold).
            when = f"{age:.0f} s ago" if age >= 1 else "just now"
            # A local `mailmatrix redrive` clears the halt first; on a stack, nothing does.
            redrive = (
                "a redrive within it stops here too"
                if runs_on_a_stack(self.campaign)
                else "a redrive lifts it at once"
            )
            raise _Stop(
                AccountSendingHalted(
                    f"send_batch: campaign {self.campaign_id} halted {when} by an earlier"
                    f" batch: {halt.reason} (a halt holds the campaign's batches for"
                    f" {hold:.0f} s; {redrive})",
                    details={"code": halt.code, "halted_at": halt.at, "attempt": halt.attempt},
                )
            )

    def take_unanswered(self, unanswered: Unanswered | None) -> None:
        """Take the campaign's rows in a row unanswered as read; those noted before a row of
        this batch was answered have ended (the ledger is told)."""
        if unanswered is None:
            self.unknowns = []
        elif self.answered_at is not None and self.answered_at > unanswered.at:
            self.end_unanswered()
        else:
            self.unknowns = list(unanswered.rows)

    def answered(self) -> None:
        """A row was answered (sent, or refused): the rows in a row unanswered end."""
        self.answered_at = self.clock()
        if self.unknowns:
            self.end_unanswered()

    def end_unanswered(self) -> None:
        """End the campaign's rows in a row unanswered, as this batch knows them and in the
        ledger."""
        self.unknowns = []
        self.ledger.clear_unanswered(self.campaign_id)

    def check_time(self) -> None:
        if self.deadline is not None and self.deadline - self.clock() < self.policy.reserve_s:
            raise _Stop(
                TransientSendError(
                    "send_batch: stopped early: the invocation's time is nearly used up",
                    details={"code": "TimeBudget"},
                )
            )

    def fail(
        self,
        item: Mapping[str, Any],
        code: str,
        reason: str,
        *,
        permanent: bool = True,
        uncertain: bool = False,
        file: LetterFile | None = None,
    ) -> None:
        # A setup problem (a template) is not the row's fault: not permanent in the ledger,
        # so the run after the fix sends the row.
        self.ledger.record_failed(
            item["key"],
            code=code,
            reason=reason,
            permanent=permanent,
            uncertain=uncertain,
            **_kept(file),
        )
        self.result.rows.append(
            {"row": item["row"], "status": "failed", "code": code, "reason": reason}
        )
        log.debug("send_batch: row %s failed: %s", item["row"], code)

    def deliver(
        self,
        item: Mapping[str, Any],
        raw: bytes,
        destinations: list[str],
        *,
        doubts: int,
        file: LetterFile | None = None,
    ) -> tuple[str, bool]:
        """Send with in-batch retries; return (message id, whether an earlier try may also
        have been accepted), or raise _Stop (the batch stops), _Defer (this row waits) or
        _Unknown (too many tries may have been taken, or the service refused the message after
        one that may have been). ``doubts``: earlier attempts' tries that may have been
        (Claim.doubts); ``file``: the row's own file, kept with a release in doubt (a try may
        have carried it out)."""
        sender = envelope_sender(str(self.campaign["sender"]))
        uncertain = False
        unknown = doubts
        for tries in range(1, self.policy.tries + 1):
            if self.pacer is not None:
                self.wait_for_slot(self.pacer, item, len(destinations), uncertain, file)
            # A try, the first too (its claim may have been slow), starts only with the reserve
            # left: the time its answer and the ledger write that records it may take.
            try:
                self.check_time()
            except _Stop as stop:
                self.release(item, "TimeBudget", error_text(stop.error), uncertain, file)
                raise
            try:
                sent = self.mailer.send(
                    raw, sender=sender, destinations=destinations, key=item.get("key") or ""
                )
                return sent, uncertain
            except AccountSendingHalted as exc:
                self.release(item, error_code(exc), error_text(exc), uncertain, file)
                self.ledger.halt(
                    self.campaign_id,
                    code=error_code(exc),
                    reason=error_text(exc),
                    attempt=self.attempt,
                )
                raise _Stop(
                    AccountSendingHalted(
                        f"send_batch: row {item['row']}: account cannot send: {error_text(exc)}",
                        details={"code": error_code(exc)},
                    )
                ) from exc
            except SendError as exc:
                if not exc.retryable:
                    if unknown:  # refused now, but a try before may have gone through
                        raise _Unknown(unknown, exc, refused_after=True) from exc
                    raise
                # A throttle or a refusing reply was refused for sure; any other passing fault
                # (timeout, dropped connection) may hide a message the service accepted.
                if not (exc.refused or isinstance(exc, Throttled)):
                    uncertain = True
                    unknown += 1
                    # The try may have waited long for its answer: meanwhile the operator may
                    # have stopped the run, or other batches' rows gone unanswered too. Once
                    # the campaign is halted, the row is not tried again, now or by a redrive.
                    try:
                        self.check_campaign()
                    except _Stop as stop:
                        raise _Unknown(unknown, exc, stop=stop) from exc
                    except _Superseded as superseded:
                        self.release(item, SUPERSEDED, superseded.why, uncertain, file)
                        raise
                    # Right after a row failed so, one unanswered try is enough: the service
                    # is likely taking every message without answering, and a second try
                    # would be a second copy.
                    if unknown >= (1 if self.unknowns else self.policy.unknown_tries):
                        after = self.unknowns[-1] if unknown == 1 and self.unknowns else None
                        raise _Unknown(unknown, exc, after_row=after) from exc
                if tries == self.policy.tries:
                    # An uncertain release is remembered: the attempt that later sends the
                    # row reports it as a possible duplicate.
                    self.release(item, error_code(exc), error_text(exc), uncertain, file)
                    kind = Throttled if isinstance(exc, Throttled) else TransientSendError
                    error = kind(
                        f"send_batch: row {item['row']}: gave up after {tries} tries:"
                        f" {error_text(exc)}",
                        details={"code": error_code(exc)},
                    )
                    if kind is Throttled or isinstance(exc, ServiceUnreachable):
                        # the rate, or no way to the service: the next rows would fail too
                        raise _Stop(error) from exc
                    refusal = exc.refused and not exc.recipient and not uncertain
                    raise _Defer(error, refusal=refusal, recipient=exc.recipient) from exc
                log.debug("send_batch: row %s: %s, try %d", item["row"], error_code(exc), tries)
                self.sleep(self.policy.backoff(tries, self.rng))
        raise AssertionError("unreachable: the last try returns or raises")

    def release(
        self,
        item: Mapping[str, Any],
        code: str,
        reason: str,
        uncertain: bool,
        file: LetterFile | None,
    ) -> None:
        """Give the row's claim back unsent, not failed for good: a later attempt sends it.
        ``uncertain``: a try of this attempt may have been taken, so the file it carried
        (``file``) is kept with it."""
        self.ledger.record_failed(
            item["key"],
            code=code,
            reason=reason,
            permanent=False,
            uncertain=uncertain,
            **_kept(file if uncertain else None),
        )

    def wait_for_slot(
        self,
        pacer: Pacer,
        item: Mapping[str, Any],
        recipients: int,
        uncertain: bool,
        file: LetterFile | None,
    ) -> None:
        """Wait for the pacer's next slot (pause); a stop meanwhile gives the row back."""
        try:
            pacer.acquire(recipients, wait=self.pause)
        except _Stop as stop:
            self.release(item, error_code(stop.error), error_text(stop.error), uncertain, file)
            raise
        except _Superseded as superseded:
            self.release(item, SUPERSEDED, superseded.why, uncertain, file)
            raise

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` for the pacer, halt_check_s at a time, looking at the campaign
        in between: a halt (the operator's stop too) or a newer upload ends the wait as it
        ends the batch between rows (_Stop, _Superseded), so a slow send rate does not keep a
        stopped run going; a wait into the invocation's last reserve_s ends there
        (TimeBudget: the retry goes on)."""
        end = self.clock() + seconds
        into_reserve = self.deadline is not None and end > self.deadline - self.policy.reserve_s
        while True:
            self.check_campaign()
            left = end - self.clock()
            if left <= 0:
                return
            if into_reserve:
                self.check_time()
            self.sleep(min(left, self.policy.halt_check_s))

    def finish_pacing(self) -> None:
        """Wait out the pacer's interval at the batch's end, so the next batch of its Map slot
        cannot send early; not once the campaign is halted or superseded (that batch stops
        too), nor into the invocation's reserve."""
        if self.pacer is None:
            return
        try:
            self.pacer.finish(wait=self.pause)
        except (_Stop, _Superseded) as stop:
            log.debug("send_batch: pacing not waited out: %s", stop)

    def send_row(
        self,
        item: Mapping[str, Any],
        compose_row: Callable[[], Any],
        upcoming: tuple[Mapping[str, Any], Callable[[], Any]] | None = None,
    ) -> None:
        """Send one row (``compose_row`` makes its message); ``upcoming``: the batch's next
        row and its compose_row, composed just before this row's letter goes out."""
        row = item["row"]
        early = None
        if self.ahead is not None and self.ahead[0] == item["key"]:
            early = self.ahead[1]
        self.ahead = None
        claim = self.claim(item, None if early is None else early.letter)
        if claim.state == "sent" and claim.attempt == self.attempt:
            # An earlier try of this same child sent it; that try's result was discarded, so
            # what the ledger kept of it (a possible duplicate) is reported here.
            self.result.rows.append(_sent_earlier(row, claim.message_id, claim.reason))
            return
        if claim.state == "sent":
            skipped = {
                "row": row,
                "status": "skipped",
                "reason": "already sent",
                "message_id": claim.message_id,
                **_carried(claim, self.campaign),
            }
            if claim.reason:  # the ledger still says it may have gone out twice
                skipped["takeover"] = claim.reason
            self.result.rows.append(skipped)
            return
        if claim.state == "failed":
            failed = {
                "row": row,
                "status": "failed",
                "code": claim.code or "Failed",
                "reason": claim.reason or "",
            }
            if claim.attempt != self.attempt:  # an earlier run failed it: not tried again
                failed["earlier"] = True
            self.result.rows.append(failed)
            return
        if claim.state == "busy":
            self.result.rows.append({"row": row, "status": "busy", "reason": claim.reason})
            return
        if claim.state == "other":
            self.result.rows.append(_other_letter_row(item, str(claim.letter)))
            return
        if claim.state == "owned":
            self.result.rows.append(_owned_attachment_row(item))
            return
        if claim.doubts >= self.policy.unknown_tries:  # attempts keep dying as they send it
            why = f"earlier attempts may have sent it {claim.doubts} times"
            reason = _not_sent_again(why, self.campaign)
            self.fail(item, OUTCOME_UNKNOWN, reason, uncertain=True, file=self.listed_file(item))
            return

        composed = early or self.compose(item, compose_row)
        if composed.error is not None:
            self.not_composed(item, composed.error)
            return
        raw, destinations, file = composed.raw, composed.destinations, composed.file
        limit = int(self.campaign["max_message_bytes"])
        if len(raw) > limit:
            self.fail(
                item,
                "MessageTooLarge",
                f"message {format_size(len(raw))} ({len(raw)} bytes) exceeds the limit of"
                f" {format_size(limit)} ({limit} bytes): it was not sent. Make its attachment"
                " (or the letter's images) smaller, or raise MAILMATRIX_MAX_MESSAGE_BYTES if the"
                " mail service takes larger messages; then send the failed rows again"
                " (--retry-failed)",
            )
            return
        # A letter composed first was looked for with its claim; else it is looked for now.
        if early is not None:
            earlier = claim.held
        elif composed.letter is not None:
            earlier = self.ledger.hold_letter(item["key"], composed.letter)
        else:
            earlier = None
        if earlier is None and self.elsewhere is not None and composed.letter is not None:
            earlier = self.elsewhere(composed.letter)
        if earlier is not None:
            self.hold_back(item, earlier)
            return

        if upcoming is not None:
            self.ahead = (upcoming[0]["key"], self.compose(*upcoming))
        try:
            message_id, uncertain = self.deliver(
                item, raw, destinations, doubts=claim.doubts, file=file
            )
        except _Unknown as unknown:
            reason = _not_sent_again(unknown.why, self.campaign)
            self.fail(item, OUTCOME_UNKNOWN, reason, uncertain=True, file=file)
            self.refusals = 0  # a try may have been taken: not a refusal
            if unknown.stop is not None:  # halted already: the halt is not replaced
                raise unknown.stop from unknown.error
            self.count_unknown(item, unknown)
            return
        except _Defer as defer:
            self.answered()
            self.count_refusal(item, defer)
            self.result.rows.append(
                {
                    "row": row,
                    "status": "deferred",
                    "code": error_code(defer.error),
                    "reason": error_text(defer.error),
                }
            )
            return
        except SendError as exc:  # not retryable, not an account halt: this row only
            self.refusals = 0  # the service answered for this row alone
            self.answered()
            # Refused alike (relaying denied to this sender): not for good, so the run after
            # the fix sends it (a halt is no help: a server may relay for some domains only).
            self.fail(item, error_code(exc), error_text(exc), permanent=not exc.alike)
            return
        self.refusals = 0
        self.answered()
        entry: dict[str, Any] = {"row": row, "status": "sent", "message_id": message_id}
        if item.get("corrected_address") and self.owner_of(item):
            entry["reason"] = (
                f"sent to the corrected address (--corrected-address {row}): its attachment"
                f" {item['attachment']} is this recipient's from now on"
            )
        if claim.reason:
            entry["takeover"] = claim.reason
        elif uncertain:
            entry["takeover"] = "an earlier try timed out or lost its reply"
        # Uncertain only for tries of this attempt: a takeover is already in the ledger.
        self.unrecorded = (item["key"], message_id, uncertain, file)
        self.result.rows.append(entry)

    @functools.cached_property
    def letter_origin(self) -> tuple[str, frozenset[str]]:
        """The campaign's file name and the files it sends again (--send-again-from), the
        same for every letter of the batch (letter_of)."""
        return _source_name(self.campaign), frozenset(self.campaign.get("send_again_from") or ())

    def compose(self, item: Mapping[str, Any], compose_row: Callable[[], Any]) -> _Composed:
        """The row's message, composed (raw, destinations), with the file it carries as its
        recipient's own and its letter's print (none for a message too large to send); or
        the error composing it raised, which fails the row once it is claimed (not_composed)."""
        self.owner = self.owner_of(item)  # letter_file's; the row's claim sets it again
        if self.kept is not None:
            self.kept.data = None
        if self.rendering is not None:
            self.rendering.last = None
        try:
            raw, destinations = compose_row()
        except MailMatrixError as exc:
            return _Composed(b"", [], None, None, exc)
        file = self.letter_file()
        small = len(raw) <= int(self.campaign["max_message_bytes"])
        return _Composed(raw, destinations, file, self.letter_of(item, file) if small else None)

    def not_composed(self, item: Mapping[str, Any], exc: MailMatrixError) -> None:
        """Fail the claimed row whose message could not be composed (or raise _Stop)."""
        row = item["row"]
        if isinstance(exc, NotFoundError):
            self.fail(item, "AttachmentNotFound", f"attachment not found: {item.get('attachment')}")
            log.debug("send_batch: row %s: %s", row, exc)
        elif isinstance(exc, StorageError):
            self.ledger.record_failed(
                item["key"], code="StorageError", reason=error_text(exc), permanent=False
            )
            raise _Stop(
                TransientSendError(
                    f"send_batch: row {row}: attachment unreadable: {error_text(exc)}",
                    details={"code": "StorageError"},
                )
            ) from exc
        # Not the row's fault (the templates, the file in the attachments): not for good.
        elif isinstance(
            exc, (TemplateError, AttachmentChanged, AttachmentUnreadable, AttachmentNotPdf)
        ):
            self.fail(item, error_code(exc), error_text(exc), permanent=False)
        elif isinstance(exc, PermanentSendError):
            self.fail(item, error_code(exc), error_text(exc))
        else:
            self.fail(item, type(exc).__name__, error_text(exc))

    def letter_of(self, item: Mapping[str, Any], file: LetterFile | None) -> LetterPrint | None:
        """The print of the row's letter as just rendered, which Ledger.hold_letter (or the
        claim) looks for among other campaigns' letters; None for a composer that rendered
        nothing through the batch's catalog."""
        rendered = None if self.rendering is None else self.rendering.last
        if rendered is None:
            return None
        sha256 = file.sha256 if file is not None else None
        if sha256 is None and self.kept is not None and self.kept.data is not None:
            sha256 = hashlib.sha256(self.kept.data).hexdigest()
        source, again = self.letter_origin
        email = item["email"]
        printed = letter_print(email, rendered, sha256)
        # Another campaign's letters with this file are asked whose they were by this row's
        # address (their campaign's recipient_key): the ledger keeps no address. A corrected
        # address (--corrected-address) makes the file this recipient's, as in the campaign.
        whose = None
        if file is not None and not item.get("corrected_address"):
            whose = functools.partial(recipient_key, email=email)
        return LetterPrint(
            self.campaign_id,
            printed,
            source,
            again,
            file=file,
            whose=whose,
            person=letter_set(email, item["template"]),
            template=item["template"],
        )

    def hold_back(self, item: Mapping[str, Any], earlier: SentCopy) -> None:
        """Give the row back unsent: its letter went to its address under another file
        already (``earlier``), as validation holds such a row back; reported so. Where that
        letter is being sent now (it may yet fail), the row waits for it (busy). One that
        carried the row's own file to another recipient (``owned``: another file, run at the
        same moment) fails the row as validation rejects it then."""
        if earlier.state == SENDING:
            waiting = sending_elsewhere(earlier)
            self.ledger.record_failed(
                item["key"], code="ClaimBusy", reason=waiting, permanent=False
            )
            self.result.rows.append({"row": item["row"], "status": "busy", "reason": waiting})
            return
        if earlier.owned:
            reason = letter_of_another_campaign(str(item["attachment"]), earlier)
            code, status = ATTACHMENT_OF_ANOTHER, "failed"
        else:
            reason, code, status = sent_under_reason(earlier), held_under_code(earlier), "skipped"
        self.ledger.record_failed(item["key"], code=code, reason=reason, permanent=False)
        self.result.rows.append(
            {
                "row": item["row"],
                "status": status,
                "code": code,
                "reason": reason,
                "file": earlier.source or earlier.campaign,
            }
        )

    def count_refusal(self, item: Mapping[str, Any], defer: _Defer) -> None:
        """Count a row deferred because the service refused it; the last of ``refusing_rows``
        in a row halts the campaign (raises _Stop: this row is deferred with the rest). A row
        refused for reasons of its recipient leaves the count as it is; one whose outcome is
        unknown (the service may have taken it) starts it again."""
        if not defer.refusal:
            if not defer.recipient:
                self.refusals = 0
            return
        self.refusals += 1
        if self.refusals < self.refusing_rows:
            return
        last = defer.__cause__ if isinstance(defer.__cause__, SendError) else defer.error
        reason = (
            f"{REFUSING_WORDS} {self.refusals} rows in a row: it takes no mail now"
            f" (the last reply: {error_text(last)})"
        )
        raise self.halt(item, SERVICE_REFUSING, reason) from defer.error

    def count_unknown(self, item: Mapping[str, Any], unknown: _Unknown) -> None:
        """Count a row failed as OutcomeUnknown, in the campaign's count of such rows in a
        row (across its batches); the last of ``unknown_rows`` halts the campaign (raises
        _Stop; the row stays failed): a service that takes messages without answering would
        get a copy of every row. One whose last try was answered (a refusal) ends the count."""
        if unknown.answered:
            self.answered()
            return
        row = int(item["row"])
        noted = self.ledger.note_unanswered(self.campaign_id, row, answered_at=self.answered_at)
        self.unknowns = list(noted.rows)
        if len(self.unknowns) < self.policy.unknown_rows:
            return
        rows = ", ".join(map(str, self.unknowns[:-1])) + f" and {self.unknowns[-1]}"
        reason = (
            f"{UNKNOWN_WORDS} {len(self.unknowns)} rows in a row: it may take messages without"
            f" confirming them (rows {rows} failed as {OUTCOME_UNKNOWN}: they may have arrived;"
            f" the last error: {error_text(unknown.error)})"
        )
        stop = self.halt(item, OUTCOMES_UNKNOWN, reason)
        self.end_unanswered()  # counted into the halt: a redrive starts again
        raise stop from unknown.error

    def halt(self, item: Mapping[str, Any], code: str, reason: str) -> _Stop:
        """Halt the campaign (``code``, ``reason``) at ``item``'s row, for every batch; return
        what stops this one."""
        self.ledger.halt(self.campaign_id, code=code, reason=reason, attempt=self.attempt)
        message = f"send_batch: row {item['row']}: {reason}"
        return _Stop(AccountSendingHalted(message, details={"code": code}))

    def listed_file(self, item: Mapping[str, Any]) -> LetterFile | None:
        """The row's own file as validation listed it, read for a letter that earlier
        attempts may have sent and this one will not (OutcomeUnknown before composing): kept
        with the failure, it lets validation of any campaign refuse copies of it to another
        person, as for a letter recorded sent. None where it is not the file listed now."""
        if self.owner is None or self.kept is None:
            return None
        self.kept.data = None
        try:
            _listed_attachment(item, self.kept)
        except MailMatrixError as exc:  # gone or changed: what went out is not known
            log.debug("send_batch: row %s: own file not kept: %s", item["row"], exc)
            return None
        return self.letter_file()

    def letter_file(self) -> LetterFile | None:
        """The file the row being sent carries as its recipient's own, from the bytes its
        message was built with (SHA-256 of 50 KB: about 30 us), or None."""
        data = None if self.kept is None else self.kept.data
        if self.owner is None or data is None:
            return None
        name, recipient, masked = self.owner
        sha256 = hashlib.sha256(data).hexdigest()
        source = _source_name(self.campaign)
        return LetterFile(name, len(data), sha256, sample_print(data), recipient, masked, source)


def _source_name(campaign: Mapping[str, Any]) -> str:
    """The name of the campaign's file (its CSV), as people know it; "" where not recorded."""
    return str((campaign.get("source") or {}).get("key") or "").rsplit("/", 1)[-1]


def _kept(file: LetterFile | None) -> dict[str, LetterFile]:
    """record_sent's and record_failed's keyword for ``file``: none at all without one, the
    call as it was before letters kept their files (which ledgers written for it still take)."""
    return {} if file is None else {"file": file}


class _KeptAttachment:
    """A fetch_attachment that keeps the bytes it fetched last (``data``), for the letter's
    LetterFile: the file is read once, to build the message."""

    def __init__(self, fetch: FetchAttachment) -> None:
        self.fetch = fetch
        self.data: bytes | None = None

    def __call__(self, name: str, tag: str | None) -> bytes:
        self.data = self.fetch(name, tag)
        return self.data


class _Composed(NamedTuple):
    """A row's message as _Batch.compose made it, or the error composing it raised."""

    raw: bytes
    destinations: list[str]
    file: LetterFile | None  # the file it carries as its recipient's own
    letter: LetterPrint | None  # its print (Ledger.hold_letter)
    error: MailMatrixError | None = None


class _KeptRendering:
    """A catalog that keeps the letter it rendered last (``last``), for the letter's print:
    the row is rendered once, to build the message. Everything else is the catalog's."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self.last: Rendered | None = None

    def render(self, template: str, fields: Mapping[str, Any]) -> Rendered:
        self.last = self.catalog.render(template, fields)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.catalog, name)


def send_batch(
    items: Iterable[Mapping[str, Any]],
    campaign: Mapping[str, Any],
    *,
    catalog: Any,
    fetch_attachment: FetchAttachment,
    mailer: Mailer,
    ledger: Ledger,
    attempt: str,
    pacer: Pacer | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    policy: RetryPolicy | None = None,
    deadline: float | None = None,
    composer: Composer = compose,
    invocation: str | None = None,
    elsewhere: Callable[[LetterPrint], SentCopy | None] | None = None,
) -> BatchResult:
    """Send one batch of manifest lines once each; return what happened to every row.

    Raises Throttled / TransientSendError when passing faults outlast the in-batch retries,
    ClaimBusy when a row, or the batch, is held by another live attempt or invocation, and
    AccountSendingHalted when the account cannot send; their ``details["result"]`` holds
    the rows settled so far and ``details["deferred"]`` the rows left for a later attempt.
    ``deadline`` is the invocation's end (``clock()`` time), which also bounds each claim's
    lease. ``invocation`` (the Lambda request id) holds the batch for its run: a second try
    of the same attempt started while this one still runs sends nothing (ClaimBusy).
    ``elsewhere``: the letter of a row's set other workdirs' ledgers hold (a local run's).
    """
    items = list(items)
    batch = _Batch(
        campaign=campaign,
        ledger=ledger,
        mailer=mailer,
        attempt=attempt,
        pacer=pacer,
        sleep=sleep,
        clock=clock,
        rng=rng or random.Random(),
        policy=policy or RetryPolicy(),
        deadline=deadline,
        sets=tuple(getattr(catalog, "names", ())),
        elsewhere=elsewhere,
    )
    batch.refusing_rows = min(batch.policy.refusing_rows, max(2, len(items)))
    if invocation is None:
        return _send_rows(items, batch, catalog, fetch_attachment, composer)
    holder = ledger.begin_batch(attempt, invocation=invocation, until=batch.lease())
    if holder is not None:
        raise ClaimBusy(
            f"send_batch: invocation {holder} is still sending this batch, retry later",
            details={
                "code": "ClaimBusy",
                "result": batch.result.to_dict(),
                "deferred": [item["row"] for item in items],
            },
        )
    try:
        return _send_rows(items, batch, catalog, fetch_attachment, composer)
    finally:
        try:
            ledger.end_batch(attempt, invocation=invocation)
        except MailMatrixError as error:  # the hold ends at its deadline anyway; keep the
            log.debug("send_batch: could not end the batch hold: %s", error)  # batch's error


def _carried(claim: Claim, campaign: Mapping[str, Any]) -> dict[str, str]:
    """The report's attachment, cc and bcc of a row an earlier run sent: what the ledger kept
    of that letter, not the row as the file has it now (the operator may have changed its
    copies or its file since). The ledger keeps the letter's own file, not its copies: those
    are not recorded, but for a copy column the file does not have, left empty."""
    # A campaign validated before its copy columns were kept: both may have had copies.
    columns = campaign.get("copy_columns", ("Cc", "Bcc"))
    return {
        "attachment": claim.file or NOT_RECORDED,
        "cc": NOT_RECORDED if "Cc" in columns else "",
        "bcc": NOT_RECORDED if "Bcc" in columns else "",
    }


def _sent_earlier(row: int, message_id: str | None, doubt: str | None) -> dict[str, Any]:
    """The report row of a row an earlier try of this same child sent (``doubt``: why it may
    have gone out twice)."""
    earlier: dict[str, Any] = {
        "row": row,
        "status": "sent",
        "message_id": message_id,
        "earlier": True,
    }
    if doubt:
        earlier["takeover"] = doubt
    return earlier


def _hand_over(rest: list[Mapping[str, Any]], batch: _Batch, latest: Upload) -> None:
    """Report the batch's rows not settled yet as Superseded: the newer upload's execution
    sends them, or leaves them out if its file does. Nothing is written to the ledger for
    them. A row an earlier try of this child sent is reported sent (a redrive's batch)."""
    unsettled = [row["row"] for row in batch.result.rows if row["status"] in ("deferred", "busy")]
    batch.result.rows = [row for row in batch.result.rows if row["row"] not in unsettled]
    batch.result.rows += [_superseded_row(row, latest) for row in unsettled]
    found = batch.ledger.outcomes_of([item["key"] for item in rest]) if rest else {}
    for item in rest:
        outcome = found.get(item["key"])
        if outcome is not None and outcome.state == "sent" and outcome.attempt == batch.attempt:
            doubt = doubt_reason(outcome.uncertain, outcome.takeovers)
            batch.result.rows.append(_sent_earlier(item["row"], outcome.message_id, doubt))
        else:
            batch.result.rows.append(_superseded_row(item["row"], latest))
    log.debug("send_batch: superseded by %s: %d row(s) handed over", latest.upload, len(rest))


def _superseded_row(row: int, latest: Upload) -> dict[str, Any]:
    """The report row of a row this execution leaves to the newer upload's."""
    by = latest.execution.rsplit(":", 1)[-1] or "another execution"
    return {
        "row": row,
        "status": "failed",
        "code": SUPERSEDED,
        "reason": (
            f"not sent by this execution: a newer upload of this file was validated (execution"
            f" {by}), which sends the file as it is now, so nothing more is sent from this"
            " upload (a redrive of this execution sends nothing either)"
        ),
        "superseded_by": by,
    }


def _other_letter_row(item: Mapping[str, Any], other: str) -> dict[str, Any]:
    """The report row of a row not sent because its address has another set's letter."""
    return {
        "row": item["row"],
        "status": "failed",
        "code": OTHER_LETTER_SENT,
        "reason": (
            f"an earlier run of this file sent this address the {other!r} letter: the"
            f" {item['template']!r} one would contradict it, so it is not sent (the row's"
            f" Status changed, or the manifest now maps it to {item['template']!r}). To send it"
            " all the same, run this row alone in a file of another name, with --send-again-from"
            " and this file's name only if its attachment is the one that letter carried (the"
            " option sends all this file's letters again); then take the row out of this file"
            " or set its Status back, or every run fails it"
        ),
    }


def _owned_attachment_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """The report row of a row not sent because its own file went to another recipient."""
    return {
        "row": item["row"],
        "status": "failed",
        "code": ATTACHMENT_OF_ANOTHER,
        "reason": (
            f"Attachment_File {item['attachment']}: an earlier run of this file sent it to"
            " another recipient as their own, so it is not sent to this one (the row names the"
            " wrong file, or the earlier row had the wrong address). Name this recipient's own"
            " file in the row; or, if the earlier address was wrong and this is the same person,"
            f" run this file again with --corrected-address {item['row']}: its letter then goes"
            " to this address (the choice is recorded in the ledger)"
        ),
    }


def _send_rows(
    items: list[Mapping[str, Any]],
    batch: _Batch,
    catalog: Any,
    fetch_attachment: FetchAttachment,
    composer: Composer,
) -> BatchResult:
    """Send the rows of one batch in turn (send_batch's loop); raise what stops it."""
    done = 0
    batch.kept = kept = _KeptAttachment(fetch_attachment)
    batch.rendering = rendering = _KeptRendering(catalog)
    try:
        rows = [
            (
                item,
                functools.partial(
                    composer, item, batch.campaign, catalog=rendering, fetch_attachment=kept
                ),
            )
            for item in items
        ]
        for at, (item, compose_row) in enumerate(rows):
            batch.check_campaign()
            batch.check_time()
            batch.send_row(item, compose_row, rows[at + 1] if at + 1 < len(rows) else None)
            done += 1
    except _Stop as stop:
        # the row it stopped at is left for later with the rest, unless it was settled first
        settled = {row["row"] for row in batch.result.rows}
        deferred = [item["row"] for item in items[done:] if item["row"] not in settled]
        stop.error.details.update({"result": batch.result.to_dict(), "deferred": deferred})
        log.debug("send_batch: stopped: %s, %d deferred", error_code(stop.error), len(deferred))
        raise stop.error from stop.__cause__
    except _Superseded as superseded:
        _hand_over(items[done:], batch, superseded.latest)
    finally:
        try:
            batch.record_unrecorded()
        finally:
            batch.finish_pacing()

    deferred = [row for row in batch.result.rows if row["status"] == "deferred"]
    if deferred:
        raise TransientSendError(
            f"send_batch: {len(deferred)} row(s) kept failing for now, retry later: "
            f"{deferred[0]['reason']}",
            details={
                "code": deferred[0]["code"],
                "result": batch.result.to_dict(),
                "deferred": [row["row"] for row in deferred],
            },
        )
    busy = [row["row"] for row in batch.result.rows if row["status"] == "busy"]
    if busy:
        raise ClaimBusy(
            f"send_batch: {len(busy)} row(s) held by another attempt, retry later: rows {busy}",
            details={"code": "ClaimBusy", "result": batch.result.to_dict(), "deferred": busy},
        )
    return batch.result
