"""The exceptions of MailMatrix: one root error, one subclass per kind of problem.

Lower layers wrap library errors as "where: what: cause" with ``raise ... from``; only the
CLI's top level turns them into exit codes and a remedy hint. Errors that cross the state
machine are matched by class name in the ASL Retry and Catch fields (Lambda reports the
exception's class name as the error, e.g. ``Throttled``), so those class names are stable API.
"""

from __future__ import annotations


class MailMatrixError(Exception):
    """Root of every error MailMatrix raises on purpose."""

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ConfigurationError(MailMatrixError):
    """A setting, flag or environment variable is missing or malformed."""


class DeliveryChanged(ConfigurationError):
    """A campaign's run would deliver another way, or make its letters from other templates,
    attachments or sender, than its earlier runs in the workdir."""


class NoEarlierRun(ConfigurationError):
    """A retry of a campaign's failed rows in a workdir where the campaign never ran: it would
    send every row (the ledger there knows none)."""


class LedgerLost(ConfigurationError):
    """The workdir records that its runs sent letters, but its ledger does not know them: the
    ledger file is missing or empty, or holds none of a campaign it held (deleted, truncated,
    or put back from a backup taken before those runs). A run would mail those people again."""


class NameLikeAnother(ConfigurationError):
    """The file's name is alike that of a file run before (ports.name_fold: ``Offers.csv`` after
    ``offers.csv``): a name is a campaign, so this one would be sent in full, though on a
    disk that ignores case, and to a person, the two are one file."""


class ChoiceRefused(ConfigurationError):
    """An operator's choice against a rule that holds letters back that a run could not act
    on: --send-again-from naming no file run in the workdir (or the file itself), or
    --corrected-address naming a row whose letter is not held back as another's."""


class BadWorkdir(ConfigurationError):
    """A --workdir that cannot be one: a folder on its path is a file."""


class RowsInDoubt(ConfigurationError):
    """A run or redrive of a file some of whose rows an earlier run left in doubt (it ended
    as it sent them: they may have arrived): refused, nothing sent, until they are settled
    or the run is told to send them again (--retry-unknown)."""


class NotSettled(ConfigurationError):
    """`settle` was asked about rows it cannot settle: rows not in doubt (sent, failed, never
    tried, not in the file), or rows a run of the campaign is sending now."""


class WorkdirNotWritable(MailMatrixError):
    """The workdir's folder, or its ledger file, cannot be written (its permissions, an
    immutable flag, a read-only file system): found before a run or redrive sends anything."""


class RecordNotWritable(MailMatrixError):
    """The state folder that keeps the record of known workdirs (MAILMATRIX_STATE_DIR) cannot
    be made or written: found before a run or redrive through a mail server sends anything, as
    a workdir that cannot be written is (WorkdirNotWritable), and with its exit status."""


class StateFolderUnsafe(RecordNotWritable):
    """The state folder is no safe place for the record of known workdirs: it is a workdir
    or inside one (put back from a backup with that workdir, the record would lose what was
    sent since), or a relative MAILMATRIX_STATE_DIR (a record per current folder)."""


class KnownWorkdirsDamaged(ConfigurationError):
    """The record of known workdirs cannot be read, or is not the record this version writes:
    the checks it feeds (another workdir's deliveries, a workdir put back from a backup)
    cannot be made, so nothing is sent through a mail server, and it is not overwritten."""


class DeliveriesDamaged(ConfigurationError):
    """The workdir's record of the files its runs sent (deliveries.json) cannot be read: the
    checks it feeds (a file keeps its way, a ledger lost) cannot be made, so nothing is sent."""


class DemoTemplates(ConfigurationError):
    """A run would deliver the bundled demo templates (another company's letters and sender;
    their manifest says ``demo: true``) through an SMTP server or SES to a recipient outside
    the domains reserved for examples."""


class PlaceholderSender(ConfigurationError):
    """A run would deliver letters From an address at a domain reserved for examples (the
    demo's ``talent@example.com``, kept in a copy of its templates) through an SMTP server or
    SES to a recipient outside those domains: real servers bounce such mail or mark it as
    spoofed, and the recipients could not answer it."""


class PlaceholderConstant(ConfigurationError):
    """A run would deliver letters whose templates' constants (the manifest's ``context``)
    write an address at a domain reserved for examples (the demo's ``contact_email:
    talent@example.com``, kept in a copy of its templates) through an SMTP server or SES to a
    recipient outside those domains: the letters would tell them to write to an address that
    nobody reads."""


class AttachmentChanged(MailMatrixError):
    """A row's attachment is not the file validation saw (another size or version tag): it
    may have been replaced, rewritten, or relinked to another recipient's letter, since."""


class AttachmentUnreadable(MailMatrixError):
    """A row's attachment could not be read as its row was sent (no permission to read it, as
    when its mode was changed to 000 after validation): the row fails, and nothing is sent."""


class AttachmentNotPdf(MailMatrixError):
    """A row's attachment is named .pdf but does not start as a PDF does (a Word document or
    a text file renamed): its recipient's reader could not open it."""


class InputFileError(MailMatrixError):
    """The recipients file as a whole is unusable (not text, empty, no Email column...)."""


class TemplateError(MailMatrixError):
    """A template cannot be loaded, compiled, or uses variables the CSV does not have."""


class TemplateSetsChanged(TemplateError):
    """The templates lack a set whose name earlier runs of the campaign used (renamed or
    removed): the ledger knows each letter by its set's name, so its letters would go out again
    under the new one. Nothing is sent until the set is back or the file has a new name."""


class StorageError(MailMatrixError):
    """An object could not be read from or written to storage."""


class FileNotWritten(StorageError):
    """A file of the run could not be written (the manifest of the valid rows on its way, a
    report, an object of a local bucket): its disk full, the file size limit reached, no
    permission. The message names the file and why; no retry at once gets through, so the
    state machine does not retry it."""


class NotFoundError(StorageError):
    """The object or key does not exist."""


class ObjectChanged(StorageError):
    """The object under a key is no longer the version asked for (its tag or ETag differs:
    replaced, rewritten or relinked)."""


class ObjectUnreadable(StorageError):
    """The object under a key is there but may not be read (no permission)."""


class UploadReplaced(MailMatrixError):
    """The upload an execution was started for was replaced under its key before the
    execution read it, in storage that keeps no versions: the newer upload has an execution
    of its own, which sends the file."""


class SendError(MailMatrixError):
    """A message could not be handed to the mail service.

    ``refused``: the service answered that it did not take the message (an SMTP 4xx reply,
    a throttle), so no copy went out; otherwise (a timeout, a dropped connection, a 5xx) it
    may have, and a later send of the row is reported as a possible duplicate.
    ``recipient``: the refusal concerns this recipient only (an SMTP reply to RCPT about the
    mailbox or its address), not the service's taking of mail in general. ``alike``: a
    refusal for good that every recipient would meet alike (relaying denied to this sender).
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        details: dict | None = None,
        refused: bool = False,
        recipient: bool = False,
        alike: bool = False,
    ):
        super().__init__(message, details=details)
        self.refused = refused
        self.recipient = recipient
        self.alike = alike


class Throttled(SendError):
    """The mail service asked us to slow down (SES "Maximum sending rate exceeded")."""

    retryable = True


class TransientSendError(SendError):
    """A passing fault: timeout, connection reset, 5xx from the service."""

    retryable = True


class ServiceUnreachable(TransientSendError):
    """The mail service could not be reached at all (no connection): nothing was handed over,
    and the next rows would fail the same way, so a batch stops at the first row that gives up
    instead of trying every row in turn. The state machine sees a TransientSendError."""

    asl_error = "TransientSendError"


class CannotConnect(SendError):
    """The mail server refused the connection when the campaign checked it, before sending:
    nothing listens at its host and port (a server not started, a URL naming another port).
    A setup problem, not a passing fault: a redrive meets it again until the server runs."""


class ClaimBusy(TransientSendError):
    """Rows, or the whole batch, are held by another attempt that may still be sending them.

    Its own error name, so the state machine retries it on a schedule that outlasts the
    other attempt's lease (a Lambda that may still run holds its claims until its deadline).
    """


class PermanentSendError(SendError):
    """This message will never be accepted (address rejected, too large, suppressed)."""


class AccountSendingHalted(SendError):
    """The account cannot send now: daily quota used up, sending paused, identity unverified.

    Retrying other rows would fail the same way, so the run stops early and says why.
    """


class LedgerError(MailMatrixError):
    """The send ledger could not be read or written (a locked database, a throttled table):
    a later try may get through, so the state machine retries it."""


class LedgerNotWritten(LedgerError):
    """The send ledger cannot be written for a cause no retry heals: no room (its disk full,
    the file size limit reached) or no write access (a read-only file, folder or file
    system); on DynamoDB, a refusal no retry gets past (no access, no table, a request refused
    as invalid, the table's KMS key unusable). Its own error name, which the state machine
    does not retry: the run ends at once with its message, saying what to fix, instead of
    after minutes of retries."""


class EngineError(MailMatrixError):
    """The local state machine engine refused a definition or failed to run it."""


class DefinitionError(EngineError):
    """The state machine definition is invalid or uses something the engine does not support."""
