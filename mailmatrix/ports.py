"""The ports between core and the outside world: storage, mailer, ledger, notifier.

Each port has an AWS implementation (boto3) and a local one under ``mailmatrix.adapters``;
``mailmatrix.adapters.wiring`` picks one from configuration. Core code depends only on
these protocols, never on boto3.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key, size in bytes, ETag and (where versioned) version id; from
    ``head`` on S3 also when it was stored (epoch seconds) and its user metadata.

    ``identity``, from a listing, tells which keys hold one and the same file where the
    storage can link a file under several keys (a local folder: symlinks, hard links); two
    objects with the same identity are one file. None: the key is the object's only name
    (S3 has no links).

    ``tag``, from a listing or ``head``, tells this version of the object from any other
    under its key: S3's ETag; for a local file, its device, inode, size and modification and
    change times (another file put in its place, or the file rewritten, has another).
    ``get``, ``open`` and ``head`` given ``tag=`` (that tag, or the object's ETag as an upload
    event names it) reach that version or none: ObjectChanged. "": the listing gives none.
    """

    key: str
    size: int
    etag: str = ""
    version_id: str | None = None
    modified: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)
    identity: str | None = None
    tag: str = ""


class Storage(Protocol):
    """A bucket: incoming/, attachments/, templates/, validated/, results/, reports/.

    ``concurrent_reads``: how many objects to read at once when many are read in turn (reads
    from S3 mostly wait on the network; a local disk gains nothing from threads).
    """

    bucket: str
    concurrent_reads: int

    def get(self, key: str, *, tag: str | None = None) -> bytes:
        """Return the object's bytes; raise NotFoundError when absent, and ObjectChanged when
        ``tag`` (see ObjectInfo.tag) is given and the object is no longer that version."""
        ...

    def open(self, key: str, *, version: str | None = None, tag: str | None = None) -> BinaryIO:
        """Return a readable binary stream of the object (for large files): of its
        ``version`` when given (storage that keeps versions); ``tag`` as for ``get``."""
        ...

    def head(self, key: str, *, version: str | None = None, tag: str | None = None) -> ObjectInfo:
        """Return the object's metadata (``version`` and ``tag`` as for ``open``); raise
        NotFoundError when absent."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        ...

    def put_file(self, key: str, path: str, *, content_type: str | None = None) -> ObjectInfo:
        """Store the local file at ``path`` under ``key`` (streamed, for large outputs)."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order."""
        ...

    def checksum(self, key: str, *, tag: str | None = None) -> str | None:
        """Return the checksum of the whole object that storage keeps with it, or a print
        computed from samples of its bytes (a folder), as "ALGORITHM value": two objects with
        the same bytes have the same value, and equal values make candidates, never a verdict
        (contents.copies reads their bytes). None where there is neither; ``tag`` as for
        ``open``."""
        ...

    def first_bytes(self, key: str, count: int, *, tag: str | None = None) -> bytes | None:
        """Return the object's first ``count`` bytes where storage reads them at about the
        cost of listing the object (a local file), else None (S3: a request per object);
        ``tag`` as for ``open``."""
        ...


# The message tag that carries the letter's idempotency key (Mailer.send's ``key``) into SES's
# events (mail.tags), beside the tags SES adds itself (ses:configuration-set, ...): SesEvents
# finds the letter by it, a row in doubt too, whose message id the ledger never recorded.
KEY_TAG = "mailmatrix-key"


class Mailer(Protocol):
    """Hands one finished MIME message to a mail service.

    Raises Throttled / TransientSendError (retry later), PermanentSendError (this message
    will never go), AccountSendingHalted (nothing will go until the operator acts).
    """

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Send the raw RFC 5322 message; return the service's message id. ``key``: the
        letter's idempotency key, which SES carries in its events (others ignore it)."""
        ...

    def close(self) -> None:
        """Release what the mailer holds open (connections to a server); no sends after it."""
        ...


@dataclass(frozen=True)
class Claim:
    """What the ledger said when asked to claim a key before sending.

    ``state`` is ``claimed`` (go ahead and send), ``sent`` (already sent: skip),
    ``failed`` (permanently failed earlier: skip, already reported), ``busy``
    (another live attempt holds the claim: try again later), ``other`` (the letter of
    another template set may have gone to the same address: not sent, nothing recorded;
    ``letter`` names that set) or ``owned`` (the row's own attachment may have gone to
    another recipient of the campaign: not sent, nothing recorded). ``code`` and ``reason``
    say why a key failed; on ``claimed``/``busy`` ``reason`` names the attempt taken over or
    waited on.
    ``attempt`` is the attempt that sent the key (``sent``) or holds it (``busy``).
    ``doubts`` (on ``claimed``): how many earlier tries of the key may have gone out (the
    attempts taken over, and one for tries released with an unknown outcome), which counts
    towards send_batch's cap on such tries; not part of a Claim's equality.
    ``file`` (on ``sent``): the name of the recipient's own file the letter carried, as the
    ledger kept it (record_sent's ``file``); None where it kept none (a letter without a
    file of its own, or recorded before letters kept their files); not part of equality.
    ``held`` (on ``claimed``, for a claim given the letter's print): the letter of another
    campaign alike that may have gone out, or one that carried the letter's own file to
    another recipient (``owned``; see Ledger.hold_letter); the row is claimed all the same,
    for the caller to give back unsent. Not part of equality.
    """

    state: str
    message_id: str | None = None
    reason: str | None = None
    code: str | None = None
    attempt: str | None = None
    doubts: int = field(default=0, compare=False)
    letter: str | None = None
    file: str | None = field(default=None, compare=False)
    held: SentCopy | None = field(default=None, compare=False)


# A claim made without a lease lasts as long as the longest Lambda invocation (15 minutes).
DEFAULT_CLAIM_LEASE_SECONDS = 900.0


@dataclass(frozen=True)
class Halt:
    """A campaign-wide stop: the account cannot send (daily quota, paused, unverified sender).

    ``at`` is the time the halt was recorded, in seconds since the epoch.
    """

    campaign: str
    code: str
    reason: str
    attempt: str
    at: float


@dataclass(frozen=True)
class Unanswered:
    """The campaign's rows in a row, across its batches, that failed as OUTCOME_UNKNOWN with
    their last try unanswered (``rows``, in the order noted), and when the last was noted
    (``at``, seconds since the epoch): the service may be taking messages without answering.
    A row answered since (sent, or refused) ends it (Ledger.clear_unanswered)."""

    rows: tuple[int, ...]
    at: float


@dataclass(frozen=True)
class Outcome:
    """One email's ledger entry, for the campaign report.

    ``state`` is ``claimed`` (an attempt holds it, or died holding it), ``sent``, ``failed``
    (permanent) or ``released`` (a transient failure gave the claim back). ``takeovers``
    counts claims taken over from an attempt whose lease ran out: each one is a possible
    duplicate (the crash window, see docs/sending.md).
    """

    key: str
    row: int
    state: str
    message_id: str | None = None
    code: str | None = None
    reason: str | None = None
    attempt: str | None = None
    takeovers: int = 0
    uncertain: bool = False

    @property
    def doubtful(self) -> bool:
        """Whether this email may have gone out twice: a claim was taken over from an attempt
        that died holding it, or a try whose outcome is unknown preceded the send."""
        return self.takeovers > 0 or self.uncertain


# The code of a row that failed because its tries' outcome is unknown: it may have arrived.
OUTCOME_UNKNOWN = "OutcomeUnknown"

UNCERTAIN_RELEASE = "released by attempt {} after a try that may have been accepted"


def sending_elsewhere(letter: SentCopy) -> str:
    """Why a row waits (busy) whose letter another campaign is sending now (SENDING), or
    (``owned``) a letter with the same file to another recipient."""
    named = letter.source or letter.campaign
    if letter.owned:
        return (
            f"a file of the same contents as its own ({letter.attachment}) is being sent to"
            f" another recipient under {named} now, as row {letter.row} of that run: this row"
            " waits for it (not sent if that letter goes, sent if it does not)"
        )
    return (
        f"the same letter to this address is being sent under {named} now: this row waits"
        " for it (held back once it is sent, sent if it is not)"
    )


def doubt_reason(uncertain: bool, takeovers: int) -> str | None:
    """Why a sent ledger entry may have gone out twice (a Claim's reason), or None."""
    if takeovers:
        return (
            f"may have arrived more than once: taken over {takeovers} time(s) from an "
            "attempt that died"
        )
    if uncertain:
        return "may have arrived more than once: a try before the send may have been accepted"
    return None


@dataclass(frozen=True)
class Upload:
    """One upload of a campaign's file, as the execution that validated it saw it.

    ``upload`` tells uploads apart (the S3 version id, else the event's sequencer, else the
    ETag); two executions of one upload (a duplicate event) share it. ``order`` sorts the
    uploads of one key as they were stored (the S3 event's sequencer, padded): a newer upload
    has a greater one, whichever execution validated first.
    """

    campaign: str
    upload: str
    order: str
    execution: str


class CampaignName(NamedTuple):
    """The name of a campaign's file (``bucket/key``, in NFC), as the ledger recorded it
    (Ledger.record_name)."""

    campaign: str
    name: str


def name_fold(name: str) -> str:
    """``name`` as names are compared for likeness (Ledger.record_name): case folded, in
    Unicode's compatibility form (a fullwidth letter is its plain one), without invisible
    characters (a zero-width space, a soft hyphen), each part of its path without spaces
    around it and with one space for a run of them (a non-breaking space is one)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    visible = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return "/".join(" ".join(part.split()) for part in visible.split("/"))


class FileOwner(NamedTuple):
    """A file an earlier letter of a campaign carried as its recipient's own, and that letter
    may have gone out (Ledger.file_owners)."""

    attachment: str  # the file's name, as the row named it
    recipient: str  # recipient_key of the letter's recipient
    row: int  # the letter's row, in the run that claimed it
    masked: str = ""  # the recipient's address, masked (mask()); "" where not recorded


class LetterFile(NamedTuple):
    """The file a letter carried as its recipient's own, as the send read it: the ledger
    keeps it with the letter (record_sent), so validation of any campaign can tell a copy of
    it under another name, or the same name after a rename (Ledger.sent_copies)."""

    name: str  # as the row named it
    size: int
    sha256: str  # hex, of the bytes sent
    print: str  # contents.sample_print of the bytes: what validation compares first
    recipient: str  # recipient_key of the letter's recipient, in the letter's campaign
    masked: str  # the recipient's address, masked (mask())
    source: str = ""  # the name of the campaign's file (its CSV), for people to recognise it


class LetterPrint(NamedTuple):
    """A letter about to be sent, as Ledger.hold_letter takes it.

    ``file``: the file it carries as its recipient's own, kept with the letter from then on
    (not only once it is recorded sent), so a claim of another campaign finds it being sent.
    ``whose``: recipient_key(campaign, the letter's address) for any campaign: with ``file``,
    a letter of another campaign that carried the same file (size, print and SHA-256) to
    another recipient as theirs holds this one back (``SentCopy.owned``), whether it went
    out or not (NAMED), the files it sends again (``again``) too: that file is another
    person's letter. None: no
    such check (the operator said the address was corrected, run --corrected-address). The
    ledger keeps no address: it asks ``whose`` for the campaigns of the letters it finds.
    """

    campaign: str
    print: str  # core.send.letter_print: its address, subject, bodies and attachment
    source: str = ""  # the name of the campaign's file (its CSV)
    again: frozenset[str] = frozenset()  # the files it sends again (run --send-again-from)
    file: LetterFile | None = None
    whose: Callable[[str], str] | None = None
    # core.send.letter_set: its address and template set (``template``), whatever the
    # campaign: a letter of the set that went to the address under another file holds it back
    # too, its text changed or not; "": not asked
    person: str = ""
    template: str = ""


class SentCopy(NamedTuple):
    """A letter of any campaign carrying, as its recipient's own, a file of a given size and
    print (Ledger.sent_copies): one that may have gone out, or NAMED."""

    campaign: str
    attachment: str  # the file's name, as the letter's row named it
    recipient: str  # recipient_key(campaign, the letter's address)
    row: int  # the letter's row, in the run that sent it
    masked: str  # the recipient's address, masked; "" where not recorded
    sha256: str  # hex, of the bytes the letter carried
    source: str = ""  # the name of the campaign's file; "" where not recorded
    at: float = 0.0  # when the ledger last wrote the letter (epoch seconds); 0: not read
    # For a letter found by its print (Ledger.hold_letter): SENT, SENDING (claimed by a live
    # attempt now: it may yet fail), IN_DOUBT (its attempt ended as it sent it, or gave it
    # back after a try that may have been taken) or UNKNOWN (failed as OUTCOME_UNKNOWN); ""
    # where the ledger does not tell (counted as sent). NAMED: found by its file, not gone.
    state: str = ""
    # Found for a letter's own file (LetterPrint.file): this letter carried the same file to
    # another recipient, so the one about to be sent is another person's letter.
    owned: bool = False
    # The template set of a letter found by its address and set (LetterPrint.person), whose
    # text differs; "" for a letter found by its print or its file.
    template: str = ""
    # Its campaign's letters all went to the local outbox (an outbox trial, as the ledger's
    # deliveries tell): not to its address. False where the ledger does not tell.
    outbox: bool = False
    # Kept in the ledger of another workdir (that workdir; "" for the run's own ledger), whose
    # runs sent it through the mail server ``server`` (adapters.ledgers_elsewhere).
    workdir: str = ""
    server: str = ""


# SentCopy.state of a letter found by its print.
SENT = "sent"
SENDING = "sending"
IN_DOUBT = "in_doubt"
UNKNOWN = "unknown"
# SentCopy.state of a letter found by its own file (Ledger.sent_copies, a claim's ``owned``)
# that has not gone out (failed for good, given back unsent, settled as not sent): its file
# is its recipient's all the same, refused to another person by another file.
NAMED = "named"


# (key, message id, uncertain) of a letter sent, or with the file it carried as its
# recipient's own (LetterFile), as record_sent takes them.
SentLetter = tuple[str, str, bool] | tuple[str, str, bool, LetterFile | None]


def letter_parts(letter: SentLetter) -> tuple[str, str, bool, LetterFile | None]:
    """``letter``'s key, message id, uncertain and file (None when it names none)."""
    key, message_id, uncertain, *more = letter
    return key, message_id, uncertain, more[0] if more else None


class Doubt(NamedTuple):
    """A row in doubt: its letter may have gone out, and the ledger has it as not sent
    (Ledger.doubts)."""

    key: str
    row: int
    state: str  # claimed (its attempt ended holding it), or released (after a doubtful try)
    attempt: str | None  # the attempt that claimed it last
    at: float  # when that attempt claimed it (or gave it back), seconds since the epoch
    # The claim's process still runs, within its lease: it is being sent now (DynamoDB cannot
    # tell a live process: a claim within its lease is live there).
    live: bool
    attachment: str | None  # the row's own file, where the ledger kept it
    masked: str  # the recipient's address, masked, where the ledger kept it; else ""
    holder: str | None = None  # the process that claimed it (processes.process_token)
    # The latest SES event recorded on it (SesEvents: it finds the letter by its key, which
    # the SendEmail call tags it with), its time and SES's message id; "" where none arrived.
    event: str = ""
    event_at: str = ""
    event_message_id: str = ""
    # The try whose letter may have gone out (its claim time and attempt), where the ledger
    # kept it and later tries followed it; None: the try at ``at`` is that one.
    doubtful_at: float | None = None
    doubtful_attempt: str | None = None
    # A later try (the one at ``at``) may have sent it too: it ended holding its claim, or with
    # its outcome unknown; False: the later tries surely sent nothing (a refused connection).
    doubtful_again: bool = False

    @property
    def tried_at(self) -> float:
        """When the try that may have sent its letter claimed it."""
        return self.at if self.doubtful_at is None else self.doubtful_at


@dataclass(frozen=True)
class CampaignStatus:
    """What a batch checks of its campaign before its first row and every halt_check_s
    after, read at once (Ledger.campaign_status): its halt, its latest validated upload, the
    names of the template sets it has used and its rows in a row left unanswered."""

    halt: Halt | None = None
    latest_upload: Upload | None = None
    template_sets: frozenset[str] = frozenset()
    unanswered: Unanswered | None = None


class Ledger(Protocol):
    """Durable record of every email's idempotency key and outcome."""

    def claim(
        self,
        key: str,
        *,
        campaign: str,
        row: int,
        attempt: str,
        lease_until: float | None = None,
        sent_before: SentLetter | None = None,
        others: Mapping[str, str] | None = None,
        owner: tuple[str, str] | tuple[str, str, str] | None = None,
        corrected: bool = False,
        letter: LetterPrint | None = None,
    ) -> Claim:
        """Atomically claim ``key`` for sending by ``attempt``, unless already settled.

        ``sent_before`` = (key, message id, uncertain[, file]) of the previous row, which has
        been sent: it is recorded sent first, as record_sent would (a ledger that can, in the same
        transaction: one write per email instead of two).

        ``others`` = the keys of the same address's letters of the campaign's other template
        sets, each with its set's name. If one of those letters may have gone out (its entry
        is sent; claimed, by a live attempt or a dead one; failed as OUTCOME_UNKNOWN; or
        doubtful, see Outcome.doubtful), a claim that would be granted is refused instead
        (``state="other"``, ``letter`` = that set) and nothing is written. The check and the
        claim are one atomic step: of two runs sending one address two sets' letters at once,
        one at most gets ``claimed``. A key of its own that is sent, failed or busy is
        answered as such first. None or empty (a campaign of one set): no check, no cost.

        ``owner`` = (file name, recipient, masked address) of a row whose Attachment_File
        names its own file (not a set's default_attachment); ``recipient`` tells the row's
        recipient from others (recipient_key); the masked address (mask(), may be left out)
        is kept for the reasons that name the file's letter (file_owners). The campaign's
        file is its recipient's: a claim that would be granted while the file's owner is
        another recipient whose letter with it may have gone out (as for ``others``) is
        refused (``state="owned"``) and nothing is written.
        Otherwise the claim records this recipient and ``key`` as the file's owner (taking it
        over from one whose letter cannot have gone out), in the same atomic step: of two
        runs sending one file to two people at once, one at most gets ``claimed``. None: no
        check, no cost. ``corrected``: the operator said the file's earlier recipient was this
        one under a wrong address (``run --corrected-address ROW``): the file becomes this
        recipient's even where the earlier letter may have gone out.

        ``letter`` = the print of the row's letter, composed before the claim: a claim that is
        granted also does what hold_letter would, in the same transaction (a letter composed
        first needs no second write before it is sent): a letter of another campaign alike
        that may have gone out is answered as ``held`` (and no print kept), else the print is
        kept with ``key``; where the letter alike is being sent now (hold_letter's SENDING),
        the claim is ``busy`` instead, nothing written. A ledger that keeps no prints answers
        ``held`` None, as its hold_letter does. None: no check, no cost (hold_letter is asked
        after composing). The letter's own file (LetterPrint.file) is looked for first, as
        hold_letter looks for it, in the same transaction: of two campaigns sending one file
        to two people at once, one at most gets it. A letter with a ``person`` is held so
        too by another campaign's letter of its set to its address (``held.template`` naming
        the set), in the same step.

        A ``sent`` answer carries a ``reason`` when the entry is doubtful (see
        Outcome.doubtful), so an attempt that finds its own earlier send reports it too.

        The claim lasts until ``lease_until`` (epoch seconds; default now +
        DEFAULT_CLAIM_LEASE_SECONDS). A key left ``claimed`` is taken over (``state="claimed"``,
        ``reason`` naming the previous holder, ``takeovers`` + 1) by the same attempt at once
        (attempt = the child execution, whose tries begin_batch keeps one at a time, so the
        holder is a dead predecessor) and by another attempt once the lease has passed, or
        once the process that claimed it has ended where the ledger can tell (a local one);
        before that another attempt gets ``busy``. A ``released`` key is claimed as if new.
        """
        ...

    def begin_batch(self, attempt: str, *, invocation: str, until: float) -> str | None:
        """Mark ``attempt``'s batch as being sent by ``invocation`` until ``until`` (epoch
        seconds, its deadline); return None, or the other invocation that is sending it.

        Step Functions may start a try of a child while an earlier one still runs (a task
        timeout or a lost Lambda reply does not stop the function; nor does aborting an
        execution that is then redriven), and both tries claim rows as the same attempt: the
        later one must wait until the earlier has ended (end_batch), passed its deadline, or,
        where the ledger can tell, lost its process, or ended without its end_batch written
        (a local ledger that could not be written).
        """
        ...

    def end_batch(self, attempt: str, *, invocation: str) -> None:
        """``invocation`` has stopped sending ``attempt``'s batch (however it ended)."""
        ...

    def record_sent(
        self,
        key: str,
        *,
        message_id: str,
        uncertain: bool = False,
        file: LetterFile | None = None,
    ) -> None:
        """Mark ``key`` as sent with the service's message id; ``uncertain``: a try before
        this one may have been accepted too (kept, like a takeover, as a possible duplicate).
        ``file``: the file the letter carried as its recipient's own, kept with the letter in
        the same write (sent_copies finds it by its size and print)."""
        ...

    def record_failed(
        self,
        key: str,
        *,
        code: str,
        reason: str,
        permanent: bool,
        uncertain: bool = False,
        file: LetterFile | None = None,
    ) -> None:
        """Mark ``key`` as failed; a non-permanent failure releases the claim.

        ``uncertain``: a try of this release may have been accepted (a timeout, a lost reply).
        The entry keeps that mark, and the claim that later takes the row says so in its
        ``reason``, so the send is reported as a possible duplicate. ``file``: as for
        record_sent, for a failure after the letter was composed (it may have gone out).
        """
        ...

    def halt(self, campaign: str, *, code: str, reason: str, attempt: str) -> Halt:
        """Record that ``campaign`` must stop sending (replaces an earlier halt); return it."""
        ...

    def halted(self, campaign: str) -> Halt | None:
        """Return the campaign's halt, or None; send_batch decides whether it still holds."""
        ...

    def clear_halt(self, campaign: str) -> None:
        """Remove the campaign's halt (the operator acted; a redrive or new run may send)."""
        ...

    def note_unanswered(self, campaign: str, row: int, *, answered_at: float | None) -> Unanswered:
        """Add ``row``, failed as OUTCOME_UNKNOWN with its last try unanswered, to the
        campaign's rows in a row so (Unanswered), and return them: they are counted across
        the campaign's batches, so batches of one row, or many at once, stop as one would.
        ``answered_at``: when the calling batch last had a row answered (None: none yet);
        a streak noted last before it has ended, and ``row`` starts a new one."""
        ...

    def clear_unanswered(self, campaign: str) -> None:
        """End the campaign's rows in a row unanswered: a row was answered, or they halted
        the campaign (the halt says which they were)."""
        ...

    def record_upload(self, upload: Upload) -> Upload:
        """Record that ``upload`` of its campaign's file has been validated, unless a newer
        one (a greater ``order``) has been; return the campaign's latest validated upload.
        One conditional write: the newer upload wins, whichever execution writes first."""
        ...

    def latest_upload(self, campaign: str) -> Upload | None:
        """The campaign's latest validated upload (record_upload), or None."""
        ...

    def record_name(self, campaign: str, name: str) -> CampaignName | None:
        """Record ``name``, ``campaign``'s file (``bucket/key`` in NFC), as its campaign's,
        unless a file of a name alike (equal once folded, name_fold) is recorded as another
        campaign's: return that one, nothing written. One conditional write. Two names alike
        are two campaigns, each sent in full, where a disk or a person takes them for one."""
        ...

    def record_choice(self, campaign: str, choice: str, value: str) -> None:
        """Keep what the operator chose for a run of ``campaign`` against a rule that holds
        letters back (``choice``: send_again_from, corrected_address; ``value``: the file
        named, the row), with the time: who overrode what is in the ledger."""
        ...

    def named_alike(self, name: str) -> CampaignName | None:
        """The campaign recorded (record_name) for a file of a name alike ``name`` (its own
        too), or None."""
        ...

    def campaign_status(self, campaign: str) -> CampaignStatus:
        """The campaign's halt, latest validated upload, template set names and rows in a
        row unanswered, as halted, latest_upload, template_sets and note_unanswered give
        them, in one read where the ledger can."""
        ...

    def template_sets(self, campaign: str) -> frozenset[str]:
        """The names of the template sets ``campaign`` has used (record_template_sets)."""
        ...

    def record_template_sets(
        self, campaign: str, names: Collection[str], *, catalog: Collection[str]
    ) -> list[str]:
        """Add ``names`` (the sets of the rows a run is about to send) to the names ``campaign``
        has used, unless ``catalog`` (the run's template sets) lacks one used before: then
        nothing is recorded and the names it lacks are returned, sorted ([]: recorded). One
        atomic step: two runs at once, one of them with a set renamed, never both pass.

        A letter's idempotency key holds its set's name: under a new name the ledger would not
        know the letters already sent, and a run would mail them all again.
        """
        ...

    def failed_keys(
        self, campaign: str, *, failed_before: float | None = None, unknown: bool = False
    ) -> list[str]:
        """The keys of the rows release_failed would give back (same arguments)."""
        ...

    def settled_keys(self, campaign: str) -> Iterable[str]:
        """The keys of ``campaign``'s rows a run skips: sent, or failed for good (unless
        released first). One query of the campaign, for counting what a run will send."""
        ...

    def file_owners(self, campaign: str) -> Iterable[FileOwner]:
        """The files of ``campaign`` whose owner's letter may have gone out (the files a
        claim of another recipient is refused, state "owned"), each once with its owner.
        Read a page at a time, by one query of the campaign: validation holds every file
        the attachments still hold to its earlier recipient."""
        ...

    def sent_sizes(self, sizes: Collection[int]) -> set[int]:
        """Of ``sizes``, those of files that letters of any campaign carried as their
        recipients' own and that the ledger has a digest of (record_sent's ``file``): a
        shortlist, read by the ledger's index of files, never the whole ledger."""
        ...

    def sent_copies(self, size: int, print: str) -> Iterator[SentCopy]:
        """The letters of every campaign carrying as their recipient's own (their file's
        owner record names them) a file of ``size`` bytes and ``print``: those that may have
        gone out (as file_owners counts them), and those that did not (NAMED), read by the
        ledger's index of files a page at a time."""
        ...

    def hold_letter(self, key: str, letter: LetterPrint) -> SentCopy | None:
        """For the claimed ``key`` about to be sent, the letter of another campaign of the
        same print (the same address, subject, bodies and file) that may have gone out,
        unless its file's name or campaign is one ``letter`` sends again; else None, and the
        print (with the name of the campaign's file) is kept with ``key``, in the same
        transaction: of two campaigns sending one letter at once, only one passes. One
        indexed read. Of several such letters, one sent is named first, then one being sent
        now (``state`` SENDING: the caller waits for it, as for a busy claim, since it may yet
        fail), then one in doubt, then one failed as OUTCOME_UNKNOWN.

        With the letter's own file (LetterPrint.file, ``whose``), a letter of another campaign
        that carried a file of the same size, print and SHA-256 to another recipient, and
        may have gone out, is answered first (``owned``; its files sent again do not excuse
        it), in the same order of states; else the file is kept with ``key`` with the print,
        so such a letter being sent now is found by the other campaign's claim. One more
        indexed read, for a letter with a file of its own only."""
        ...

    def sets_elsewhere(self, campaign: str) -> bool:
        """Whether the ledger holds letters of campaigns other than ``campaign`` kept with
        their address and set (LetterPrint.person): if not, letters_of_sets finds nothing and
        validation asks it nothing. One cheap read."""
        ...

    def letters_of_sets(
        self, campaign: str, people: Mapping[str, str], again: Collection[str] = ()
    ) -> dict[str, SentCopy]:
        """For each of ``people`` (LetterPrint.person: an address and a template set, with
        the set's name), the letter of that set to that address of a campaign other than
        ``campaign`` that may have gone out (as hold_letter counts them), not of a file or
        campaign of ``again`` (run --send-again-from); of several, one sent is named first,
        as hold_letter names them. People without such a letter are left out. Indexed reads."""
        ...

    def release_failed(
        self,
        campaign: str,
        *,
        failed_before: float | None = None,
        unknown: bool = False,
        keys: Collection[str] | None = None,
    ) -> int:
        """Release the rows of ``campaign`` that failed for good (before ``failed_before``,
        epoch seconds, when given) so the next attempt claims them as new; return how many.

        ``unknown`` picks which: False, those whose failure was an answer (the operator fixed
        the cause); True, only those failed as OUTCOME_UNKNOWN, which may have arrived (the
        operator checked that they did not); ``keys``, when given: only those of these keys
        (the rows the file still holds). Sent rows stay sent. A released row stays a
        possible duplicate if it was one, but its takeovers no longer count as doubts: it gets
        one more try.
        """
        ...

    def outcomes(self, campaign: str) -> list[Outcome]:
        """Return every ledger entry of ``campaign``, ordered by row."""
        ...

    def outcomes_of(self, keys: Sequence[str]) -> dict[str, Outcome]:
        """Return the ledger entries of ``keys`` by key; keys with no entry are left out."""
        ...

    def close(self) -> None:
        """Release what the ledger holds open (a database connection); no calls after it."""
        ...


@dataclass
class Notification:
    """A summary or an alert for operators."""

    subject: str
    message: str
    attributes: dict[str, str] = field(default_factory=dict)


class Notifier(Protocol):
    """Publishes notifications (SNS topic on AWS; console and a JSONL file locally)."""

    def publish(self, topic: str, notification: Notification) -> str:
        """Publish and return a message id."""
        ...
