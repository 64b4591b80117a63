"""The send ledger on a DynamoDB table: one item per idempotency key, conditional writes.

Table shape (infra/template.yaml): partition key ``idempotency_key`` (S); global secondary
indexes ``by_message_id`` (``message_id``) so SES events find their entry and ``by_campaign``
(``campaign``, ``row``) for the campaign's outcomes; TTL on ``expires_at``. A campaign halt is
an item keyed ``halt#<campaign>``, a batch being sent one keyed ``batch#<attempt>``, the
campaign's latest validated upload one keyed ``upload#<campaign>``, the names of the template
sets a campaign has used one keyed ``sets#<campaign>`` (a string set), its rows in a row left
unanswered one keyed ``unanswered#<campaign>`` (``rows``, a list, and ``at``), the campaign a
file's name is (``name_campaign``, ``name``) one keyed ``name#<sha256 of the name folded>``
(names alike share it, see ports.name_fold), an operator's choice against a rule that holds
letters back one keyed ``choice#<campaign>#<choice>#<sha256 of its value>``, the recipient a
file named in Attachment_File went to one keyed ``owner#<campaign>#<sha256 of the file name>``
(``recipient``, ``masked``: the address masked, ``letter``: the key of the letter that carries
it; ``campaign`` and ``row``, -1 - the letter's row, list it in ``by_campaign`` below the
campaign's rows, which its readers ask for as ``row >= 0``). A letter recorded sent with its
recipient's own file (record_sent's ``file``) keeps, in the same update, the file's name
(``file``), ``file_size``, ``file_sha256``, ``file_print`` and ``file_source`` (the campaign's
CSV name) with the owner's ``recipient`` and ``masked``: the sparse index ``by_file``
(``file_size``, ``file_print``) holds those letters alone, and validation of any campaign finds
a file's copies by it (sent_copies); letters recorded before it are not in it. A batch reads
the campaign's halt, latest upload, set names and rows unanswered in one BatchGetItem
(campaign_status).

A letter about to be sent keeps its print (core.send.letter_print: its address, subject,
bodies and own file) in its entry (``letter_print``, with ``file_source``, the campaign's CSV
name), and an item keyed ``print#<print>`` names the letters of that print that may have gone
out (``letters``: each key with its campaign and ``source``; ``turn`` counts its writes). The
letter's claim (claim's ``letter``), else hold_letter, reads that item, asks the letters it
names of other campaigns whether they may have gone out, and either holds the letter back or
writes the item in the same transaction as the claim (or the entry's update), conditional on
the item being as read and on the letters it drops still not having gone out: of two copies
of a file run at once only one passes (see _print_items). No index: a GSI read is only
eventually consistent, and could not close that race. An item keyed ``set#<person>`` (the
letter's address and template set, core.send.letter_set) names the letters of that set to that
address alike, read and written in the same transaction (_held_items): a re-export whose
text changed (a name spelt anew) is held back by its set (one more key read and one more Put).

A letter that carries its recipient's own file keeps it in its entry from its claim on (as
record_sent keeps it: the by_file index finds a letter being sent too), and an item keyed
``file#<size>#<sha256>`` names the letters that carried those bytes and may have gone out
(``letters``: each key with its campaign and ``recipient``; ``turn``), read and written as
the print item is, in the same transaction (see _file_items): of two different files run at
once naming one person's file for two people, only one letter passes.

Every claim is a conditional write, so two attempts never both hold the claim of one key while
its lease runs (semantics: mailmatrix.ports.Ledger). In a campaign of several template sets a
claim is a transaction instead: the conditional Put and a ConditionCheck of the same address's
entry in each other set (none of their letters may have gone out). A transaction bills each of
its items at twice a plain write's capacity, so such a claim costs 2 write units per set (4
with two sets, against 1), in one request as before; a claim without other sets, file or
print claims with the plain Put. A row that names its own file claims in a transaction too,
with a conditional Put of the file's owner item (docs/sending.md, "One recipient per file"),
and so does a letter composed before its claim, with its print item (4 write units, and a
consistent read of the print item, against 1). A claim reads its letter's file, print and set
items in one strongly consistent BatchGetItem (_held_items): one round trip, not three.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailmatrix.adapters import _aws
from mailmatrix.errors import LedgerError, LedgerNotWritten, NotSettled
from mailmatrix.ports import (
    DEFAULT_CLAIM_LEASE_SECONDS,
    IN_DOUBT,
    NAMED,
    OUTCOME_UNKNOWN,
    SENDING,
    SENT,
    UNCERTAIN_RELEASE,
    UNKNOWN,
    CampaignName,
    CampaignStatus,
    Claim,
    Doubt,
    FileOwner,
    Halt,
    LetterFile,
    LetterPrint,
    Outcome,
    SentCopy,
    SentLetter,
    Unanswered,
    Upload,
    doubt_reason,
    letter_parts,
    name_fold,
    sending_elsewhere,
)

logger = logging.getLogger(__name__)

KEY = "idempotency_key"
MESSAGE_ID_INDEX = "by_message_id"
CAMPAIGN_INDEX = "by_campaign"
FILE_INDEX = "by_file"
HALT_PREFIX = "halt#"
_KEYS_PER_GET = 100  # BatchGetItem's limit
_UNPROCESSED_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
BATCH_PREFIX = "batch#"
# How far along an SES event says a message got: a later rank is what a person wants to see
# (a Bounce or Complaint after the Delivery); an event of a lower rank that arrives after
# one of a higher rank changes nothing but the entry's list of events.
_EVENT_RANKS = {
    "Send": 1,
    "DeliveryDelay": 2,
    "Delivery": 3,
    "Bounce": 4,
    "Complaint": 4,
    "Reject": 4,
    "Rendering Failure": 4,
}
UPLOAD_PREFIX = "upload#"
_UPLOAD_NAMES = {
    "#k": KEY,
    "#uc": "upload_campaign",
    "#up": "upload",
    "#so": "sort",
    "#ex": "execution",
    "#exp": "expires_at",
}
SETS_PREFIX = "sets#"
UNANSWERED_PREFIX = "unanswered#"
_UNANSWERED_NAMES = {"#rows": "rows", "#at": "at", "#exp": "expires_at"}
NAME_PREFIX = "name#"
CHOICE_PREFIX = "choice#"
_SETS_TRIES = 5


# The ConditionCheck of another set's letter to the address: it cannot have gone out (no
# entry, or one failed or given back after an answer, never taken over, never uncertain).
_NOT_GONE = {
    "ConditionExpression": "attribute_not_exists(#k) OR ((#s = :failed OR #s = :released)"
    " AND (attribute_not_exists(#code) OR #code <> :unknown)"
    " AND (attribute_not_exists(#t) OR #t = :zero)"
    " AND (attribute_not_exists(#unc) OR #unc = :false))",
    "ExpressionAttributeNames": {
        "#k": KEY,
        "#s": "state",
        "#code": "code",
        "#t": "takeovers",
        "#unc": "uncertain",
    },
    "ExpressionAttributeValues": {
        ":failed": {"S": "failed"},
        ":released": {"S": "released"},
        ":unknown": {"S": OUTCOME_UNKNOWN},
        ":zero": {"N": "0"},
        ":false": {"BOOL": False},
    },
}


class _EntryChanged(Exception):
    """Internal: a claim's write found its entry changed since it was read."""


class _OwnerHeld(Exception):
    """Internal: a claim's write found its file owned by another recipient."""


OWNER_PREFIX = "owner#"
# The campaign's rows in the by_campaign index (a file's row is 1 or more), not its owner
# items, which sit below them: an owner item's row is _owner_row of its letter's.
_ROWS = "#c = :c AND #r >= :zero"


def _owner_row(row: int) -> int:
    """An owner item's row in the by_campaign index from its letter's row, and back."""
    return -1 - row


def _owner_key(campaign: str, attachment: str) -> str:
    """The key of the item naming the owner of ``attachment`` in ``campaign`` (the name
    hashed: a key holds at most 2,048 bytes, and a file name may be long)."""
    return f"{OWNER_PREFIX}{campaign}#{hashlib.sha256(attachment.encode()).hexdigest()}"


def _gone(entry: Mapping[str, Any]) -> bool:
    """Whether the letter of ``entry`` may have gone out (the opposite of _NOT_GONE)."""
    return (
        entry.get("state") in ("sent", "claimed")
        or entry.get("code") == OUTCOME_UNKNOWN
        or int(entry.get("takeovers", 0)) > 0
        or bool(entry.get("uncertain"))
    )


def _not_gone_check(table: str, key: str) -> dict[str, Any]:
    """The transaction item that holds while the letter ``key`` cannot have gone out."""
    return {"ConditionCheck": {"TableName": table, "Key": {KEY: {"S": key}}, **_NOT_GONE}}


PRINT_PREFIX = "print#"
SET_PREFIX = "set#"  # the item naming the letters of an address and set (LetterPrint.person)
# SentCopy.state of the letters that hold a print, the first named first (_print_items); and
# NAMED, last, of a file's letters (_file_items).
_PRINT_ORDER = (SENT, SENDING, IN_DOUBT, UNKNOWN, NAMED)
_PRINT_TRIES = 5
# The most items one TransactWriteItems takes ("groups up to 100 action requests"):
# https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html
_TRANSACTION_ITEMS = 100


def _print_key(print: str) -> str:
    """The key of the item naming the letters of ``print`` (core.send.letter_print)."""
    return PRINT_PREFIX + print


def _named_letters(item: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """The letters a print or file item names: each key with its attributes (campaign, and
    the campaign's file, ``source``, or the letter's ``recipient``)."""
    letters = (item or {}).get("letters", {}).get("M", {})
    return {
        key: {name: value["S"] for name, value in origin["M"].items()}
        for key, origin in letters.items()
    }


def _asked(
    named: Mapping[str, Mapping[str, str]],
    key: str,
    campaign: str,
    could_hold: Callable[[Mapping[str, str]], bool],
) -> list[str]:
    """The letters of ``named`` (a print or file item's) to ask whether they may have gone
    out, for the letter ``key`` of ``campaign``: those of other campaigns that
    ``could_hold`` it back; the others stay in the item unread."""
    return [
        other
        for other, origin in named.items()
        if other != key and origin["campaign"] != campaign and could_hold(origin)
    ]


def _print_stamp(letter: LetterPrint) -> dict[str, dict[str, str | bool]]:
    """The attributes that keep ``letter``'s print (and its campaign's file) with its key,
    and its own file as record_sent keeps it (the by_file index finds it from then on)."""
    stamp: dict[str, dict[str, str | bool]] = {"letter_print": {"S": letter.print}}
    if letter.source:
        stamp["file_source"] = {"S": letter.source}
    file = letter.file
    if file is not None:
        stamp["file"] = {"S": file.name}
        stamp["file_size"] = {"N": str(file.size)}
        stamp["file_sha256"] = {"S": file.sha256}
        stamp["file_print"] = {"S": file.print}
        stamp["recipient"] = {"S": file.recipient}
        stamp["masked"] = {"S": file.masked}
        stamp["file_source"] = {"S": letter.source or file.source}
    return stamp


FILE_PREFIX = "file#"


def _file_key(file: LetterFile) -> str:
    """The key of the item naming the letters that carry ``file`` as their recipient's own
    (its size and SHA-256: the same bytes)."""
    return f"{FILE_PREFIX}{file.size}#{file.sha256}"


def _checked_once(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A transaction's ``items`` with one ConditionCheck of a letter named by two items (its
    print's and its set's): DynamoDB refuses two operations on one item in a transaction."""
    checked: set[str] = set()
    kept = []
    for item in items:
        check = item.get("ConditionCheck")
        if check is not None:
            if str(check["Key"]) in checked:
                continue
            checked.add(str(check["Key"]))
        kept.append(item)
    return kept


def _owned_copy(entry: Mapping[str, Any], now: float) -> SentCopy:
    """The SentCopy of ``entry``'s letter, which carried a letter's own file to another
    recipient (SentCopy.owned)."""
    return SentCopy(
        str(entry.get("campaign", "")),
        str(entry.get("file") or ""),
        str(entry.get("recipient") or ""),
        int(entry.get("row", 0)),
        str(entry.get("masked") or ""),
        str(entry.get("file_sha256") or ""),
        str(entry.get("file_source") or ""),
        float(entry.get("updated_at") or 0),
        _letter_state(entry, now),
        owned=True,
    )


def _letter_state(entry: Mapping[str, Any], now: float) -> str:
    """SentCopy.state of ``entry``'s letter, which may have gone out (_gone): sent, being sent
    now (claimed, its lease not run out: the attempt may yet fail), or in doubt; NAMED where
    it cannot have gone (a letter found by its own file)."""
    if not _gone(entry):
        return NAMED
    if entry.get("state") == "sent":
        return SENT
    if entry.get("state") == "claimed" and float(entry.get("lease_until") or 0) > now:
        return SENDING
    if entry.get("state") == "failed" and entry.get("code") == OUTCOME_UNKNOWN:
        return UNKNOWN
    return IN_DOUBT


def _sent_copy(entry: Mapping[str, Any], source: str, now: float) -> SentCopy:
    """The SentCopy that holds a letter back: ``entry``'s letter, of the file ``source``."""
    return SentCopy(
        str(entry.get("campaign", "")),
        str(entry.get("file") or ""),
        "",
        int(entry.get("row", 0)),
        "",
        "",
        source or str(entry.get("file_source") or ""),
        float(entry.get("updated_at") or 0),
        _letter_state(entry, now),
    )


# Entries outlive the 14-day redrive window of Step Functions by a wide margin.
DEFAULT_RETENTION_SECONDS = 400 * 24 * 3600

# Every attribute goes through an alias: several (state, row, code...) are reserved words.
_NAMES = {
    "#k": KEY,
    "#s": "state",
    "#a": "attempt",
    "#l": "lease_until",
    "#mid": "message_id",
    "#u": "updated_at",
    "#code": "code",
    "#reason": "reason",
    "#t": "takeovers",
    "#unc": "uncertain",
    "#d": "delivery",
    "#dat": "delivery_at",
    "#dd": "delivery_detail",
    "#events": "events",
    "#emid": "event_message_id",
    "#c": "campaign",
    "#r": "row",
    "#ts": "template_sets",
    "#tc": "sets_campaign",
    "#file": "file",
    "#fs": "file_size",
    "#fsha": "file_sha256",
    "#fp": "file_print",
    "#rcp": "recipient",
    "#masked": "masked",
    "#fsrc": "file_source",
    "#lp": "letter_print",
}


class DynamoDbLedger:
    """Durable record of every email's idempotency key and outcome, in DynamoDB."""

    def __init__(
        self,
        table: str,
        client: Any = None,
        *,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = table
        self.retention_seconds = retention_seconds
        self._db = client or _aws.client("dynamodb")
        self._owns_client = client is None
        self._clock = clock
        self._sleep = sleep

    def close(self) -> None:
        """Close the client's connections, where the ledger made the client itself."""
        if self._owns_client:
            self._db.close()

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
        """Atomically claim ``key`` for ``attempt`` unless settled or held by a live attempt,
        or (``others``) another set's letter to the address may have gone out, or (``owner``)
        the row's own file may have gone to another recipient (unless ``corrected``: the
        file's owner item is then put whoever it named); with ``letter``, a claim that would
        be granted is ``held`` as hold_letter would hold it (nothing of the print written),
        else its print item, and its own file's item, are written in the claim's transaction
        (see _print_items, _file_items).

        ``sent_before`` is recorded first, by its own request (two keys in one transaction
        would cost twice the write capacity of the two single writes).
        """
        if sent_before is not None:
            done, message_id, unsure, file = letter_parts(sent_before)
            self.record_sent(done, message_id=message_id, uncertain=unsure, file=file)
        now = self._clock()
        lease = now + DEFAULT_CLAIM_LEASE_SECONDS if lease_until is None else lease_until
        taken_from = None  # the letter of the file's owner, which cannot have gone out
        for _ in range(3):
            held = self._get_item(key)
            if held is None:
                condition = "attribute_not_exists(#k)"
                values: dict[str, Any] = {}
                takeovers, previous, uncertain, holder = 0, None, False, None
            else:
                entry = _plain(held)
                state, holder = entry.get("state"), entry.get("attempt")
                if state == "sent":
                    doubt = doubt_reason(
                        bool(entry.get("uncertain")), int(entry.get("takeovers", 0))
                    )
                    return Claim(
                        "sent",
                        message_id=entry.get("message_id"),
                        attempt=holder,
                        reason=doubt,
                        file=entry.get("file"),
                    )
                if state == "failed":
                    return Claim(
                        "failed", code=entry.get("code"), reason=entry.get("reason"), attempt=holder
                    )
                holder_lease = float(entry.get("lease_until") or 0)
                if state == "claimed" and holder != attempt and holder_lease > now:
                    return Claim(
                        "busy",
                        reason=f"claimed by attempt {holder} until {holder_lease:.3f}",
                        attempt=holder,
                    )
                # Write only if nobody changed the entry since we read it.
                condition = "#s = :old_state AND #a = :old_attempt AND #u = :old_updated"
                values = {
                    ":old_state": {"S": state},
                    ":old_attempt": {"S": holder or ""},
                    ":old_updated": held["updated_at"],
                }
                takeovers = int(entry.get("takeovers", 0)) + (state == "claimed")
                previous = holder if state == "claimed" else None
                uncertain = bool(entry.get("uncertain"))
            item: dict[str, dict[str, str | bool]] = {
                KEY: {"S": key},
                "campaign": {"S": campaign},
                "row": {"N": str(row)},
                "state": {"S": "claimed"},
                "attempt": {"S": attempt},
                "lease_until": {"N": repr(float(lease))},
                "takeovers": {"N": str(takeovers)},
                "updated_at": {"N": repr(float(now))},
                "expires_at": {"N": str(int(now) + self.retention_seconds)},
            }
            if uncertain:
                item["uncertain"] = {"BOOL": True}
            sent_under: SentCopy | None = None  # the letter of another campaign that holds
            printing: list[dict[str, Any]] = []
            if letter is not None:
                sent_under, printing = self._held_items(key, letter, now)
                if sent_under is not None and sent_under.state == SENDING:
                    return Claim("busy", reason=sending_elsewhere(sent_under))  # nothing written
                if sent_under is None:
                    item.update(_print_stamp(letter))
            request: dict[str, Any] = {
                "TableName": self.table,
                "Item": item,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {a: _NAMES[a] for a in re.findall(r"#\w+", condition)},
            }
            if values:
                request["ExpressionAttributeValues"] = values
            owning = None
            if owner is not None:
                owning = self._owner_put(
                    campaign, key, row, owner, now, taken_from, corrected=corrected
                )
            try:
                other = self._put_claim(request, others or {}, owning, printing)
            except _EntryChanged:
                continue  # another attempt wrote first: read again and decide again
            except _OwnerHeld:
                assert owner is not None
                gone, taken_from = self._owner_letter(campaign, owner)
                if gone:
                    return Claim("owned")
                continue  # take the file over from a letter that cannot have gone out
            except (ClientError, BotoCoreError) as error:
                raise self._error("claim", key, error) from error
            if other is not None:
                return Claim("other", letter=other)
            doubts = takeovers + int(uncertain)
            if previous is not None:
                logger.debug("ledger: row %s taken over from %s by %s", row, previous, attempt)
                reason = f"taken over from attempt {previous}"
                return Claim(
                    "claimed", reason=reason, attempt=previous, doubts=doubts, held=sent_under
                )
            if uncertain:
                reason = UNCERTAIN_RELEASE.format(holder)
                return Claim(
                    "claimed", reason=reason, attempt=holder, doubts=doubts, held=sent_under
                )
            return Claim("claimed", doubts=doubts, held=sent_under)
        return Claim("busy", reason="the entry kept changing while being claimed")

    def _put_claim(
        self,
        request: dict[str, Any],
        others: Mapping[str, str],
        owning: list[dict[str, Any]] | None = None,
        printing: list[dict[str, Any]] | None = None,
    ) -> str | None:
        """Write the claim (a conditional PutItem ``request``), in one transaction with the
        check that none of ``others``' letters may have gone out, with ``owning`` (the file
        owner's Put, and the check of the letter it takes the file over from) and with
        ``printing`` (the letter's print item, see _print_items); return None, or the set of
        the letter that refused it. Raise _OwnerHeld when the file's owner is another
        recipient, _EntryChanged when the claim's own condition failed, the print item or a
        letter it checks changed since read, or another transaction was writing one of the
        items."""
        if not others and not owning and not printing:
            try:
                self._db.put_item(**request)
            except ClientError as error:
                if _aws.error_code(error) == "ConditionalCheckFailedException":
                    raise _EntryChanged from error
                raise
            return None
        owned, printed = owning or [], printing or []
        checks = [_not_gone_check(self.table, key) for key in others]
        items = [{"Put": request}, *owned, *checks, *printed]
        try:
            self._db.transact_write_items(
                TransactItems=self._bounded(items, request["Item"][KEY]["S"])
            )
        except ClientError as error:
            if _aws.error_code(error) != "TransactionCanceledException":
                raise
            # One reason per item, in order: the claim's Put, the owner's, the checks, the print.
            codes = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            if len(codes) != len(items):
                raise
            if codes[0] == "ConditionalCheckFailed" or "TransactionConflict" in codes:
                raise _EntryChanged from error
            checked = codes[1 + len(owned) : 1 + len(owned) + len(others)]
            for code, letter in zip(checked, others.values(), strict=True):
                if code == "ConditionalCheckFailed":
                    return letter
            if owned and codes[1] == "ConditionalCheckFailed":
                raise _OwnerHeld from error
            if "ConditionalCheckFailed" in codes[2 : 1 + len(owned)]:
                raise _EntryChanged from error  # the letter taken over from may have gone now
            if "ConditionalCheckFailed" in codes[len(items) - len(printed) :]:
                raise _EntryChanged from error  # read the print item again and decide again
            raise
        return None

    def _owner_put(
        self,
        campaign: str,
        key: str,
        row: int,
        owner: tuple[str, str] | tuple[str, str, str],
        now: float,
        taken_from: str | None,
        *,
        corrected: bool = False,
    ) -> list[dict[str, Any]]:
        """The transaction items that make ``owner``'s recipient, with the letter ``key`` of
        ``row``, the owner of its file: a Put that holds while the file has no owner or is
        the recipient's, or (``taken_from``) is still that letter's, with a check that it
        cannot have gone; ``corrected``: a Put without condition. The item is in the
        by_campaign index below the rows (_owner_row)."""
        attachment, recipient, *more = owner
        item = {
            KEY: {"S": _owner_key(campaign, attachment)},
            "owner_campaign": {"S": campaign},
            "campaign": {"S": campaign},
            "row": {"N": str(_owner_row(row))},
            "attachment": {"S": attachment},
            "recipient": {"S": recipient},
            "letter": {"S": key},
            "expires_at": {"N": str(int(now) + self.retention_seconds)},
        }
        if more and more[0]:
            item["masked"] = {"S": more[0]}
        if corrected:
            return [{"Put": {"TableName": self.table, "Item": item}}]
        if taken_from is None:
            condition = "attribute_not_exists(#k) OR #rcp = :rcp"
            values = {":rcp": {"S": recipient}}
            names = {"#k": KEY, "#rcp": "recipient"}
        else:
            condition, values, names = "#ol = :ol", {":ol": {"S": taken_from}}, {"#ol": "letter"}
        put = {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        items: list[dict[str, Any]] = [{"Put": put}]
        if taken_from is not None:
            items.append(_not_gone_check(self.table, taken_from))
        return items

    def _owner_letter(
        self, campaign: str, owner: tuple[str, str] | tuple[str, str, str]
    ) -> tuple[bool, str | None]:
        """Whether the letter of the file's owner, another recipient, may have gone out, and
        that letter's key (None: the file has no owner, or it is ``owner``'s recipient now)."""
        attachment, recipient = owner[0], owner[1]
        held = self._get_item(_owner_key(campaign, attachment))
        if held is None or _plain(held).get("recipient") == recipient:
            return False, None
        letter = str(_plain(held).get("letter"))
        entry = self._get_item(letter)
        return entry is not None and _gone(_plain(entry)), letter

    def record_sent(
        self,
        key: str,
        *,
        message_id: str,
        uncertain: bool = False,
        file: LetterFile | None = None,
    ) -> None:
        """Mark ``key`` as sent with SES's message id (the by_message_id index finds it); an
        ``uncertain`` send is remembered as a possible duplicate; ``file`` is kept with the
        letter in the same update (the by_file index finds it; see the Ledger port)."""
        values = {":sent": {"S": "sent"}, ":mid": {"S": message_id}}
        mark = _uncertain_mark(values, uncertain) + _file_mark(values, file)
        self._update(
            key,
            f"SET #s = :sent, #mid = :mid, #u = :now{mark} REMOVE #l, #code, #reason",
            values,
            condition="attribute_exists(#k)",
        )

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
        """Mark ``key`` failed for good, or release the claim after a passing failure; an
        ``uncertain`` release is remembered; ``file`` kept as by record_sent (see the Ledger
        port)."""
        state = "failed" if permanent else "released"
        values = {
            ":state": {"S": state},
            ":code": {"S": code},
            ":reason": {"S": reason[:1000]},
            ":sent": {"S": "sent"},
        }
        mark = _uncertain_mark(values, uncertain) + _file_mark(values, file)
        self._update(
            key,
            f"SET #s = :state, #code = :code, #reason = :reason, #u = :now{mark} REMOVE #l",
            values,
            condition="attribute_exists(#k) AND #s <> :sent",
            missing_ok=True,
        )

    def sent_sizes(self, sizes: Collection[int]) -> set[int]:
        """Of ``sizes``, those of letters' own files with a digest (see the Ledger port): one
        query of the by_file index per size, of one key each, _SIZE_PROBES at a time (one
        after another, a listing of 100,000 files of distinct sizes would take validation
        past Lambda's 15 minutes at a few milliseconds a query)."""

        def probe(size: int) -> int | None:
            try:
                response = self._db.query(
                    TableName=self.table,
                    IndexName=FILE_INDEX,
                    KeyConditionExpression="#fs = :fs",
                    ExpressionAttributeNames={"#fs": _NAMES["#fs"]},
                    ExpressionAttributeValues={":fs": {"N": str(size)}},
                    ProjectionExpression="#fs",
                    Limit=1,
                )
            except (ClientError, BotoCoreError) as error:
                raise self._error(f"query {FILE_INDEX}", str(size), error) from error
            return size if response.get("Items") else None

        if len(sizes) <= 1:
            return {size for size in map(probe, sizes) if size is not None}
        with concurrent.futures.ThreadPoolExecutor(_SIZE_PROBES) as pool:
            return {size for size in pool.map(probe, sizes) if size is not None}

    def hold_letter(self, key: str, letter: LetterPrint) -> SentCopy | None:
        """The letter of another campaign of ``letter``'s print that may have gone out, not of
        a file it sends again; else None, and the print kept with ``key`` (see the Ledger
        port): one transaction of the key's update and its print item (_print_items), tried
        again while another letter of the print changes the item between its read and write."""
        for _ in range(_PRINT_TRIES):
            held, printing = self._held_items(key, letter, self._clock())
            if held is not None:
                return held
            values = {":lp": {"S": letter.print}}
            expression = "SET #lp = :lp"
            source = letter.source
            if letter.file is not None:  # kept as record_sent keeps it, the source aside
                expression += _file_mark(values, letter.file).replace(", #fsrc = :fsrc", "")
                source = source or str(values.pop(":fsrc")["S"])
            if source:
                values[":fsrc"] = {"S": source}
                expression += ", #fsrc = if_not_exists(#fsrc, :fsrc)"
            stamp = {
                "TableName": self.table,
                "Key": {KEY: {"S": key}},
                "UpdateExpression": expression,
                "ConditionExpression": "attribute_exists(#k)",
                "ExpressionAttributeNames": {
                    a: _NAMES[a] for a in re.findall(r"#\w+", expression + " #k")
                },
                "ExpressionAttributeValues": values,
            }
            items = [{"Update": stamp}, *printing]
            try:
                self._db.transact_write_items(TransactItems=self._bounded(items, key))
            except ClientError as error:
                if _aws.error_code(error) != "TransactionCanceledException":
                    raise self._error("hold_letter", key, error) from error
                codes = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
                if codes[:1] == ["ConditionalCheckFailed"]:
                    raise LedgerError(
                        f"dynamodb://{self.table}: hold_letter {key[:12]}: no such entry"
                    ) from error
                if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
                    continue  # another letter of the print came first: read again, decide again
                raise self._error("hold_letter", key, error) from error
            except BotoCoreError as error:
                raise self._error("hold_letter", key, error) from error
            return None
        raise LedgerError(
            f"dynamodb://{self.table}: hold_letter {key[:12]}: the letter's print item kept"
            f" changing ({_PRINT_TRIES} tries); the letter was not sent, a retry looks again"
        )

    def sets_elsewhere(self, campaign: str) -> bool:
        """False: validation asks letters_of_sets nothing here (see the Ledger port); the
        claim holds such a letter back (_held_items)."""
        # NOTE: telling cheaply whether other campaigns' letters are here would take a read
        # of the whole table; a GetItem a row would cost a 10k-row validation minutes.
        return False

    def letters_of_sets(
        self, campaign: str, people: Mapping[str, str], again: Collection[str] = ()
    ) -> dict[str, SentCopy]:
        """None found: see sets_elsewhere."""
        return {}

    def _held_items(
        self, key: str, letter: LetterPrint, now: float
    ) -> tuple[SentCopy | None, list[dict[str, Any]]]:
        """The letter of another campaign that holds ``letter`` back, by its own file
        (_file_items) first, then by its print (_print_items), then by its address and set
        (named by its set), and no items; else None, and the items of all that the claim's
        (or hold_letter's) transaction writes, each letter checked once. The (up to) three
        items are read at once, by one consistent BatchGetItem: one round trip a letter."""
        file_key = _file_key(letter.file) if letter.file is not None else ""
        set_key = SET_PREFIX + letter.person if letter.person else ""
        wanted = [k for k in (file_key, _print_key(letter.print), set_key) if k]
        found = {item[KEY]["S"]: item for item in self._batch_get(wanted)}

        owned, filing = self._file_items(key, letter, now, found.get(file_key))
        if owned is not None:
            return owned, []
        held, printing = self._print_items(key, letter, now, found.get(_print_key(letter.print)))
        if held is not None:
            return held, []
        setting: list[dict[str, Any]] = []
        if set_key:  # its address and set: an item ``set#<person>`` of the same kind
            held, setting = self._print_items(key, letter, now, found.get(set_key), set_key)
            if held is not None:
                return held._replace(template=letter.template), []
        return None, _checked_once([*printing, *filing, *setting])

    def _file_items(
        self, key: str, letter: LetterPrint, now: float, found: dict[str, Any] | None
    ) -> tuple[SentCopy | None, list[dict[str, Any]]]:
        """The letter of another campaign that carried ``letter``'s own file (the same size
        and SHA-256) to another recipient and may have gone out (sent first, then being sent
        now, then in doubt), and no items; else None, and the transaction items that make
        ``key`` one of the file's letters. None and no items for a letter without a file.

        As for a print (_print_items): the file item (``file#<size>#<sha256>``) names every
        letter that carried the file and may have gone out, each with its campaign and
        recipient key (``letters``); ``whose`` tells which are another recipient's, and only
        those are read (one BatchGetItem, consistent), so a rerun, or the same person's
        letter under another file, costs nothing more. Those read as unable to have gone out
        are dropped from the item and checked in the same transaction that they still cannot
        have; the item's Put holds only while it is as read (``turn``). No index: one
        consistent read of the item. --send-again-from does not excuse a letter here (that
        file is another person's letter); a letter without ``whose`` (a corrected address)
        is held by none, and its file is kept all the same. ``found``: the file item as read
        (consistently, by _held_items), None when absent.
        """
        file, whose = letter.file, letter.whose
        if file is None:
            return None, []
        named = _named_letters(found)
        asked = _asked(
            named,
            key,
            letter.campaign,
            lambda origin: whose is not None and origin["recipient"] != whose(origin["campaign"]),
        )
        # Gone or not, a letter that carries the file as its owner's holds it to that person.
        gone = self._first_gone(asked, now, lambda e: _gone(e) or self._owns(e, file.sha256))
        if gone is not None:
            return _owned_copy(gone, now), []
        named[key] = {"campaign": letter.campaign, "recipient": file.recipient}
        return None, self._letters_put(_file_key(file), found, named, asked, now)

    def _owns(self, entry: Mapping[str, Any], sha256: str) -> bool:
        """Whether ``entry``'s letter carries a file of ``sha256`` as its recipient's own: its
        campaign's owner item of the file names it. One read, for a letter not gone only."""
        if entry.get("file_sha256") != sha256:
            return False
        owner = self._get_item(_owner_key(str(entry.get("campaign")), str(entry.get("file"))))
        return owner is not None and _plain(owner).get("letter") == entry.get(KEY)

    def _print_items(
        self,
        key: str,
        letter: LetterPrint,
        now: float,
        found: dict[str, Any] | None,
        item_key: str = "",
    ) -> tuple[SentCopy | None, list[dict[str, Any]]]:
        """The letter of another campaign of ``letter``'s print that may have gone out and is
        not of a file ``letter`` sends again (the earliest written), and no items; else None,
        and the transaction items that make ``key`` one of the print's letters.

        The print item (``print#<print>``) names every letter of the print that may have gone
        out, each with its campaign and file (``letters``), not only the latest: a copy sent
        again on purpose (``again``) joins the letters it passed, so a third copy that names
        only the second file is still held back by the first. A letter read as unable to
        have gone out is left out of the item, and checked in the same transaction that it
        still cannot have (a claim taken meanwhile would have gone out); the letters not read
        (this campaign's, those sent again) stay. The item's Put holds only while the item is
        as read (``turn``): of two letters of the print written at once, the second reads
        again and is held back by the first. ``found``: the item as read (consistently, by
        _held_items, None when absent); one BatchGetItem more of the letters it names that
        could hold this one back (mostly none).
        """
        item_key = item_key or _print_key(letter.print)
        named = _named_letters(found)
        asked = _asked(
            named,
            key,
            letter.campaign,
            lambda origin: not letter.again & {origin["campaign"], origin.get("source", "")},
        )
        gone = self._first_gone(asked, now)
        if gone is not None:
            return _sent_copy(gone, named[gone[KEY]].get("source", ""), now), []
        named[key] = {"campaign": letter.campaign, "source": letter.source}
        return None, self._letters_put(item_key, found, named, asked, now)

    def _first_gone(
        self, asked: list[str], now: float, holds: Callable[[Mapping[str, Any]], bool] = _gone
    ) -> dict[str, Any] | None:
        """Of the letters ``asked`` (their keys), the entry of the one that may have gone out
        (or else ``holds``) to name first: sent, then being sent now, then in doubt, then
        NAMED; the earliest written of each. One BatchGetItem, none when none is asked."""
        entries = [_plain(item) for item in self._batch_get(asked)] if asked else []
        gone = sorted(
            (e for e in entries if holds(e)),
            key=lambda e: (
                _PRINT_ORDER.index(_letter_state(e, now)),
                float(e.get("updated_at", 0)),
            ),
        )
        return gone[0] if gone else None

    def _letters_put(
        self,
        key: str,
        found: dict[str, Any] | None,
        named: Mapping[str, Mapping[str, str]],
        asked: list[str],
        now: float,
    ) -> list[dict[str, Any]]:
        """The transaction items that write the print or file item ``key`` (as ``found``,
        None: absent) naming ``named`` but the letters ``asked`` (read as unable to have gone
        out): its Put, which holds only while the item is as read (``turn``), and a check of
        each letter dropped that it still cannot have gone out."""
        turn = int(_plain(found).get("turn", 0)) if found else 0
        letters = {
            other: {"M": {name: {"S": value} for name, value in origin.items()}}
            for other, origin in named.items()
            if other not in asked
        }
        item = {
            KEY: {"S": key},
            "letters": {"M": letters},
            "turn": {"N": str(turn + 1)},
            "updated_at": {"N": repr(float(now))},
            "expires_at": {"N": str(int(now) + self.retention_seconds)},
        }
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if found is None:
            put["ConditionExpression"] = "attribute_not_exists(#k)"
            put["ExpressionAttributeNames"] = {"#k": KEY}
        else:
            put["ConditionExpression"] = "#turn = :turn"
            put["ExpressionAttributeNames"] = {"#turn": "turn"}
            put["ExpressionAttributeValues"] = {":turn": {"N": str(turn)}}
        return [{"Put": put}, *(_not_gone_check(self.table, other) for other in asked)]

    def _bounded(self, items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        """``items``, unless more than one transaction takes: then a LedgerError."""
        if len(items) <= _TRANSACTION_ITEMS:
            return items
        raise LedgerError(
            f"dynamodb://{self.table}: {key[:12]}: claiming the letter would take {len(items)}"
            f" items in one transaction, more than DynamoDB takes ({_TRANSACTION_ITEMS}): its"
            " print item, or its own file's, names too many letters given back unsent. The"
            " letter was not sent; a retry meets the same, so report this with the row"
        )

    def sent_copies(self, size: int, print: str) -> Iterator[SentCopy]:
        """The letters of any campaign with their recipient's own file of ``size`` and
        ``print``, gone or not (NAMED; see the Ledger port): one query of the by_file index, a
        page at a time."""
        items = self._items(
            FILE_INDEX,
            "#fs = :fs AND #fp = :fp",
            {":fs": {"N": str(size)}, ":fp": {"S": print}},
            f"{size} {print}",
        )
        for item in items:
            found = _plain(item)
            yield SentCopy(
                str(found["campaign"]),
                str(found["file"]),
                str(found["recipient"]),
                int(found["row"]),
                str(found.get("masked") or ""),
                str(found["file_sha256"]),
                str(found.get("file_source") or ""),
                # NOTE: the by_file index does not project updated_at (adding it replaces the
                # index of a deployed table), so a letter found here says not when it went.
                float(found.get("updated_at") or 0),
                _letter_state(found, self._clock()),
            )

    def halt(self, campaign: str, *, code: str, reason: str, attempt: str) -> Halt:
        """Record that ``campaign`` must stop sending, replacing an earlier halt."""
        halt = Halt(campaign=campaign, code=code, reason=reason, attempt=attempt, at=self._clock())
        item = {
            KEY: {"S": HALT_PREFIX + campaign},
            "halt_campaign": {"S": campaign},
            "code": {"S": code},
            "reason": {"S": reason[:1000]},
            "attempt": {"S": attempt},
            "at": {"N": repr(float(halt.at))},
            "expires_at": {"N": str(int(halt.at) + self.retention_seconds)},
        }
        try:
            self._db.put_item(TableName=self.table, Item=item)
        except (ClientError, BotoCoreError) as error:
            raise self._error("halt", campaign, error) from error
        return halt

    def record_upload(self, upload: Upload) -> Upload:
        """Record ``upload`` as its campaign's latest validated one unless a newer one (a
        greater ``order``) is recorded; return the latest (see the Ledger port). One
        conditional update, which hands back the item that stopped it (no read needed)."""
        values = {
            ":c": {"S": upload.campaign},
            ":up": {"S": upload.upload},
            ":so": {"S": upload.order},
            ":exp": {"N": str(int(self._clock()) + self.retention_seconds)},
        }
        expression = "SET #uc = :c, #up = :up, #so = :so, #exp = :exp"
        if upload.execution:
            values[":ex"] = {"S": upload.execution}
            expression += ", #ex = :ex"
        else:
            expression += " REMOVE #ex"
        try:
            self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": UPLOAD_PREFIX + upload.campaign}},
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(#k) OR #so <= :so",
                ExpressionAttributeNames=_UPLOAD_NAMES,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _aws.error_code(error) != "ConditionalCheckFailedException":
                raise self._error("record_upload", upload.campaign, error) from error
            newer = _upload(upload.campaign, error.response.get("Item"))
            if newer is None:
                raise self._error("record_upload", upload.campaign, error) from error
            return newer
        except BotoCoreError as error:
            raise self._error("record_upload", upload.campaign, error) from error
        return upload

    def record_name(self, campaign: str, name: str) -> CampaignName | None:
        """Record ``name`` as ``campaign``'s file unless a name alike is another campaign's:
        return that one (see the Ledger port). One update that sets the campaign and name
        only where the item has none (if_not_exists) and returns what the item holds."""
        now = int(self._clock())
        try:
            response = self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": _name_key(name)}},
                UpdateExpression="SET #c = if_not_exists(#c, :c), #n = if_not_exists(#n, :n),"
                " #exp = :exp",
                ExpressionAttributeNames={
                    "#c": "name_campaign",
                    "#n": "name",
                    "#exp": "expires_at",
                },
                ExpressionAttributeValues={
                    ":c": {"S": campaign},
                    ":n": {"S": name},
                    ":exp": {"N": str(now + self.retention_seconds)},
                },
                ReturnValues="ALL_NEW",
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("record_name", campaign, error) from error
        found = _campaign_name(response.get("Attributes"))
        return None if found is None or found.campaign == campaign else found

    def record_choice(self, campaign: str, choice: str, value: str) -> None:
        """Keep the operator's ``choice`` for ``campaign`` (see the Ledger port): one item
        keyed ``choice#<campaign>#<choice>#<sha256 of the value>``, its time the latest."""
        now = self._clock()
        digest = hashlib.sha256(value.encode()).hexdigest()
        try:  # an update, which Validate's role may make (it grants no PutItem)
            self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": f"{CHOICE_PREFIX}{campaign}#{choice}#{digest}"}},
                UpdateExpression="SET #c = :c, #ch = :ch, #v = :v, #at = :at, #exp = :exp",
                ExpressionAttributeNames={
                    "#c": "choice_campaign",
                    "#ch": "choice",
                    "#v": "value",
                    "#at": "at",
                    "#exp": "expires_at",
                },
                ExpressionAttributeValues={
                    ":c": {"S": campaign},
                    ":ch": {"S": choice},
                    ":v": {"S": value},
                    ":at": {"N": repr(float(now))},
                    ":exp": {"N": str(int(now) + self.retention_seconds)},
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("record_choice", campaign, error) from error

    def named_alike(self, name: str) -> CampaignName | None:
        """The campaign recorded for a file of a name alike ``name``, or None (one read)."""
        return _campaign_name(self._get_item(_name_key(name)))

    def latest_upload(self, campaign: str) -> Upload | None:
        """The campaign's latest validated upload, or None."""
        return _upload(campaign, self._get_item(UPLOAD_PREFIX + campaign))

    def begin_batch(self, attempt: str, *, invocation: str, until: float) -> str | None:
        """Mark ``attempt``'s batch as sent by ``invocation`` (see the Ledger port): one
        conditional write; an earlier invocation holds it until it ends or its ``until``."""
        item = {
            KEY: {"S": BATCH_PREFIX + attempt},
            "invocation": {"S": invocation},
            "until": {"N": repr(float(until))},
            "expires_at": {"N": str(int(until) + self.retention_seconds)},
        }
        try:
            self._db.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#k) OR #inv = :inv OR #until < :now",
                ExpressionAttributeNames={"#k": KEY, "#inv": "invocation", "#until": "until"},
                ExpressionAttributeValues={
                    ":inv": {"S": invocation},
                    ":now": {"N": repr(float(self._clock()))},
                },
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._error("begin_batch", attempt, error) from error
            held = self._get_item(BATCH_PREFIX + attempt)
            return str(_plain(held).get("invocation")) if held else "another invocation"
        except BotoCoreError as error:
            raise self._error("begin_batch", attempt, error) from error
        return None

    def end_batch(self, attempt: str, *, invocation: str) -> None:
        """End ``invocation``'s hold on ``attempt``'s batch (its ``until`` set to 0)."""
        try:
            self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": BATCH_PREFIX + attempt}},
                UpdateExpression="SET #until = :zero",
                ConditionExpression="#inv = :inv",
                ExpressionAttributeNames={"#inv": "invocation", "#until": "until"},
                ExpressionAttributeValues={":inv": {"S": invocation}, ":zero": {"N": "0"}},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise self._error("end_batch", attempt, error) from error
        except BotoCoreError as error:
            raise self._error("end_batch", attempt, error) from error

    def halted(self, campaign: str) -> Halt | None:
        """Return the campaign's recorded halt, or None."""
        return _halt(campaign, self._get_item(HALT_PREFIX + campaign))

    def campaign_status(self, campaign: str) -> CampaignStatus:
        """The campaign's halt, latest validated upload, set names and rows unanswered in one
        BatchGetItem (strongly consistent; see the Ledger port)."""
        prefixes = (HALT_PREFIX, UPLOAD_PREFIX, SETS_PREFIX, UNANSWERED_PREFIX)
        wanted = {prefix: prefix + campaign for prefix in prefixes}
        found = {item[KEY]["S"]: item for item in self._batch_get(list(wanted.values()))}
        return CampaignStatus(
            halt=_halt(campaign, found.get(wanted[HALT_PREFIX])),
            latest_upload=_upload(campaign, found.get(wanted[UPLOAD_PREFIX])),
            template_sets=_sets(found.get(wanted[SETS_PREFIX])),
            unanswered=_unanswered(found.get(wanted[UNANSWERED_PREFIX])),
        )

    def clear_halt(self, campaign: str) -> None:
        """Remove the campaign's halt."""
        try:
            self._db.delete_item(TableName=self.table, Key={KEY: {"S": HALT_PREFIX + campaign}})
        except (ClientError, BotoCoreError) as error:
            raise self._error("clear_halt", campaign, error) from error

    def note_unanswered(self, campaign: str, row: int, *, answered_at: float | None) -> Unanswered:
        """Add ``row`` to the campaign's rows in a row unanswered, or start them again at it
        (see the Ledger port): one conditional update, which appends while the streak's last
        row was noted after ``answered_at``; when that fails, one update of ``row`` alone."""
        now = self._clock()
        values: dict[str, Any] = {
            ":row": {"L": [{"N": str(row)}]},
            ":now": {"N": repr(float(now))},
            ":exp": {"N": str(int(now) + self.retention_seconds)},
        }
        condition = "attribute_exists(#k)"
        if answered_at is not None:
            condition += " AND #at >= :answered"
            values[":answered"] = {"N": repr(float(answered_at))}
        try:
            response = self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": UNANSWERED_PREFIX + campaign}},
                UpdateExpression="SET #rows = list_append(#rows, :row), #at = :now, #exp = :exp",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#k": KEY, **_UNANSWERED_NAMES},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _aws.error_code(error) != "ConditionalCheckFailedException":
                raise self._error("note_unanswered", campaign, error) from error
            self._set_unanswered(campaign, [row], now)  # none yet, or a streak that ended
            return Unanswered((row,), now)
        except BotoCoreError as error:
            raise self._error("note_unanswered", campaign, error) from error
        found = _unanswered(response.get("Attributes"))
        return found if found is not None else Unanswered((row,), now)

    def clear_unanswered(self, campaign: str) -> None:
        """End the campaign's rows in a row unanswered: the item's ``rows`` emptied (an
        update: SendBatch's role may update ledger items, not delete them)."""
        self._set_unanswered(campaign, [], self._clock())

    def _set_unanswered(self, campaign: str, rows: list[int], now: float) -> None:
        """Make ``rows``, noted at ``now``, the campaign's rows in a row unanswered: one
        update, whatever the item held."""
        try:
            self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": UNANSWERED_PREFIX + campaign}},
                UpdateExpression="SET #rows = :rows, #at = :now, #exp = :exp",
                ExpressionAttributeNames=_UNANSWERED_NAMES,
                ExpressionAttributeValues={
                    ":rows": {"L": [{"N": str(row)} for row in rows]},
                    ":now": {"N": repr(float(now))},
                    ":exp": {"N": str(int(now) + self.retention_seconds)},
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("set_unanswered", campaign, error) from error

    def template_sets(self, campaign: str) -> frozenset[str]:
        """The names of the template sets ``campaign`` has used (a strongly consistent read)."""
        return _sets(self._get_item(SETS_PREFIX + campaign))

    def record_template_sets(
        self, campaign: str, names: Collection[str], *, catalog: Collection[str]
    ) -> list[str]:
        """Add ``names`` to the sets ``campaign`` has used unless ``catalog`` lacks one used
        before; return those it lacks (see the Ledger port).

        The names are read, checked, then added (ADD to the string set) by an update that holds
        only while the set is as read: names are only ever added, so the same size means the
        same names. A run that added some meanwhile makes this one read and check again. The
        item has no expires_at: a few names, kept as long as the table (refusing a renamed set
        after the campaign's entries expired is never unsafe).
        """
        for _ in range(_SETS_TRIES):
            earlier = self.template_sets(campaign)
            missing = sorted(earlier - set(catalog))
            new = set(names) - earlier
            if missing or not new:
                return missing
            condition = "size(#ts) = :seen" if earlier else "attribute_not_exists(#ts)"
            values: dict[str, Any] = {":new": {"SS": sorted(new)}, ":c": {"S": campaign}}
            if earlier:
                values[":seen"] = {"N": str(len(earlier))}
            try:
                self._db.update_item(
                    TableName=self.table,
                    Key={KEY: {"S": SETS_PREFIX + campaign}},
                    UpdateExpression="ADD #ts :new SET #tc = :c",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#ts": _NAMES["#ts"], "#tc": _NAMES["#tc"]},
                    ExpressionAttributeValues=values,
                )
            except ClientError as error:
                if _aws.error_code(error) == "ConditionalCheckFailedException":
                    continue  # another run added names meanwhile: read and check again
                raise self._error("record_template_sets", campaign, error) from error
            except BotoCoreError as error:
                raise self._error("record_template_sets", campaign, error) from error
            return []
        raise LedgerError(
            f"dynamodb://{self.table}: record_template_sets {campaign}: the campaign's set"
            f" names kept changing ({_SETS_TRIES} tries)"
        )

    def failed_keys(
        self, campaign: str, *, failed_before: float | None = None, unknown: bool = False
    ) -> list[str]:
        """The keys of the rows release_failed would give back (see the Ledger port)."""
        return [item[KEY]["S"] for item in self._failed(campaign, failed_before, unknown)]

    def settled_keys(self, campaign: str) -> Iterator[str]:
        """The keys of ``campaign``'s rows sent or failed for good (see the Ledger port): one
        query of the by_campaign index, a page at a time, returning the keys alone."""
        yield from (
            item[KEY]["S"]
            for item in self._items(
                CAMPAIGN_INDEX,
                _ROWS,
                {
                    ":c": {"S": campaign},
                    ":zero": {"N": "0"},
                    ":sent": {"S": "sent"},
                    ":failed": {"S": "failed"},
                },
                campaign,
                only="#s IN (:sent, :failed)",
                projection="#k",
            )
        )

    def file_owners(self, campaign: str) -> Iterator[FileOwner]:
        """The files of ``campaign`` whose owner's letter may have gone out (see the Ledger
        port), by one query of the by_campaign index, a page at a time: the owner items come
        first (below the rows), then the rows, which give their letters' state; it stops at
        the first row when there are no owners (its first page is one item), and once every
        owner's letter has been read. An owner item written before owner items had
        ``campaign`` and ``row`` is not in the index, so not listed: such a file is held to
        its recipient by the claim alone."""
        owners: dict[str, list[FileOwner]] = {}  # letter -> its files (one, but for a race)
        items = self._items(CAMPAIGN_INDEX, "#c = :c", {":c": {"S": campaign}}, campaign, first=1)
        for item in items:
            found = _plain(item)
            if int(found["row"]) < 0:
                owner = FileOwner(
                    str(found["attachment"]),
                    str(found["recipient"]),
                    _owner_row(int(found["row"])),
                    str(found.get("masked") or ""),
                )
                owners.setdefault(str(found["letter"]), []).append(owner)
                continue
            files = owners.pop(item[KEY]["S"], None)
            if files is not None and _gone(found):
                yield from files
            if not owners:
                return

    def has_entries(self, campaign: str) -> bool:
        """Whether any item of ``campaign`` is in the ledger: one query of the by_campaign
        index for one item, not a scan."""
        items = self._items(CAMPAIGN_INDEX, "#c = :c", {":c": {"S": campaign}}, campaign, first=1)
        return next(items, None) is not None

    def release_failed(
        self,
        campaign: str,
        *,
        failed_before: float | None = None,
        unknown: bool = False,
        keys: Collection[str] | None = None,
    ) -> int:
        """Give back the rows of ``campaign`` that failed for good (before ``failed_before``,
        epoch seconds, when given), those failed as OUTCOME_UNKNOWN or the others, of ``keys``
        when given (see the Ledger port), so the next attempt sends them; return how many.

        The by_campaign index finds them (a query, not a scan); each is released by a write
        conditional on the entry being as the index showed it, so a row that changed meanwhile
        (claimed, sent, failed again) is left as it is. The index is eventually consistent: a
        row that failed a moment ago may not be seen yet. The doubt of a released row stays
        (see _release).
        """
        wanted = None if keys is None else frozenset(keys)
        items = self._failed(campaign, failed_before, unknown)
        released = sum(
            self._release(item) for item in items if wanted is None or item[KEY]["S"] in wanted
        )
        logger.debug("ledger: %d failed row(s) of %s released", released, campaign)
        return released

    def _failed(self, campaign: str, failed_before: float | None, unknown: bool) -> list[dict]:
        """The campaign's entries failed for good before ``failed_before``: those failed as
        OUTCOME_UNKNOWN, or (``unknown`` False) the others."""
        condition = "#s = :failed AND " + ("#code = :unknown" if unknown else "#code <> :unknown")
        values: dict[str, Any] = {
            ":c": {"S": campaign},
            ":zero": {"N": "0"},
            ":failed": {"S": "failed"},
            ":unknown": {"S": OUTCOME_UNKNOWN},
        }
        if failed_before is not None:
            condition += " AND #u < :before"
            values[":before"] = {"N": repr(float(failed_before))}
        return self._query(CAMPAIGN_INDEX, _ROWS, values, campaign, only=condition)

    def _release(self, item: dict[str, Any]) -> bool:
        """Release one failed entry unless it changed since ``item`` was read.

        Its takeovers become the possible-duplicate mark: counted as doubts they would fail
        the row again before it is sent (RetryPolicy.unknown_tries), and the operator who
        releases it has checked that it did not arrive.
        """
        values = {":released": {"S": "released"}, ":seen": item["updated_at"]}
        mark = _uncertain_mark(values, int(_plain(item).get("takeovers", 0)) > 0)
        return self._update(
            item[KEY]["S"],
            f"SET #s = :released, #t = :zero, #u = :now{mark}",
            {**values, ":failed": {"S": "failed"}, ":zero": {"N": "0"}},
            condition="#s = :failed AND #u = :seen",
            missing_ok=True,
        )

    def outcomes(self, campaign: str) -> list[Outcome]:
        """Return every entry of ``campaign`` ordered by row (by_campaign index)."""
        values = {":c": {"S": campaign}, ":zero": {"N": "0"}}
        items = self._query(CAMPAIGN_INDEX, _ROWS, values, campaign)
        entries = sorted((_plain(item) for item in items), key=lambda e: (e["row"], e[KEY]))
        return [_outcome(entry) for entry in entries]

    def outcomes_of(self, keys: Sequence[str]) -> dict[str, Outcome]:
        """Return the entries of ``keys`` by key (absent keys left out; see _batch_get)."""
        return {
            outcome.key: outcome
            for outcome in (_outcome(_plain(item)) for item in self._batch_get(keys))
        }

    def _batch_get(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist: BatchGetItem, 100 keys a request, strongly
        consistent; keys DynamoDB leaves unprocessed (throttled) are asked again after a
        growing pause."""
        found: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(keys))  # a request may not name a key twice
        for start in range(0, len(unique), _KEYS_PER_GET):
            wanted = [{KEY: {"S": key}} for key in unique[start : start + _KEYS_PER_GET]]
            request = {self.table: {"Keys": wanted, "ConsistentRead": True}}
            for pause in (*_UNPROCESSED_PAUSES, None):
                try:
                    response = self._db.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as error:
                    raise self._error("batch_get", wanted[0][KEY]["S"], error) from error
                found += response.get("Responses", {}).get(self.table, [])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                if pause is None:
                    raise LedgerError(
                        f"dynamodb://{self.table}: batch_get: keys still unprocessed after "
                        f"{len(_UNPROCESSED_PAUSES) + 1} requests (throttled)"
                    )
                self._sleep(pause)
        return found

    def find_by_message_id(self, message_id: str) -> Outcome | None:
        """Return the entry that recorded ``message_id`` (for delivery events), or None."""
        found = self._query(
            MESSAGE_ID_INDEX, "message_id = :m", {":m": {"S": message_id}}, message_id
        )
        if not found:
            return None
        return self.letter(found[0][KEY]["S"])  # the index projects keys only

    def letter(self, key: str) -> Outcome | None:
        """Return the letter's entry of ``key`` (a consistent read), or None: none, or an item
        of another kind (a halt, an upload...)."""
        item = self._get_item(key)
        if not item or "row" not in item or int(item["row"].get("N", "-1")) < 0:
            return None
        return _outcome(_plain(item))

    def record_event(
        self,
        key: str,
        *,
        event_type: str,
        timestamp: str,
        detail: str = "",
        message_id: str = "",
    ) -> None:
        """Record an SES event (Delivery, Bounce, Complaint...) against the entry of ``key``,
        with SES's ``message_id`` of the mail it is about.

        EventBridge delivers events in no set order: one that says less than the entry holds
        (a Send after the Bounce) is added to the entry's events but leaves the delivery state,
        its time, detail and message id as they are. The entry's state is left as it is (a row
        in doubt stays in doubt: the operator settles it, seeing the event), and so is the time
        of its last write (updated_at), which a claim's takeover and a settle hold to.
        """
        values = {
            ":event": {"S": event_type},
            ":at": {"S": timestamp},
            ":detail": {"S": detail[:1000] or "-"},
            ":emid": {"S": message_id or "-"},
            ":one": {"SS": [event_type]},
        }
        rank = _EVENT_RANKS.get(event_type, 0)
        further = sorted(name for name, later in _EVENT_RANKS.items() if later > rank)
        condition = "attribute_exists(#k)"
        if further:
            placeholders = [f":further{i}" for i in range(len(further))]
            values.update({p: {"S": name} for p, name in zip(placeholders, further, strict=True)})
            condition += f" AND (attribute_not_exists(#d) OR NOT #d IN ({', '.join(placeholders)}))"
        expression = "SET #d = :event, #dat = :at, #dd = :detail, #emid = :emid ADD #events :one"
        if self._update(key, expression, values, condition=condition, missing_ok=True):
            return
        self._update(
            key, "ADD #events :one", {":one": values[":one"]}, condition="attribute_exists(#k)"
        )

    def _query(
        self, index: str, condition: str, values: dict, what: str, *, only: str | None = None
    ) -> list[dict]:
        """Every item of ``index`` matching ``condition``, page after page; ``only``: a filter
        on the items read (it saves transfer, not read capacity)."""
        return list(self._items(index, condition, values, what, only=only))

    def _items(
        self,
        index: str,
        condition: str,
        values: dict,
        what: str,
        *,
        only: str | None = None,
        projection: str | None = None,
        first: int | None = None,
    ) -> Iterator[dict]:
        """The items of _query one page at a time; ``projection``: the attributes to return;
        ``first``: how many items the first page holds at most (the others, up to 1 MB)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        aliases = re.findall(r"#\w+", f"{condition} {only or ''} {projection or ''}")
        if aliases:
            request["ExpressionAttributeNames"] = {a: _NAMES[a] for a in aliases}
        if only:
            request["FilterExpression"] = only
        if projection:
            request["ProjectionExpression"] = projection
        if first is not None:
            request["Limit"] = first
        try:
            while True:
                response = self._db.query(**request)
                yield from response.get("Items", [])
                if "LastEvaluatedKey" not in response:
                    return
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
                request.pop("Limit", None)
        except (ClientError, BotoCoreError) as error:
            raise self._error(f"query {index}", what, error) from error

    def _update(
        self,
        key: str,
        expression: str,
        values: dict[str, Any],
        *,
        condition: str,
        missing_ok: bool = False,
    ) -> bool:
        """Update ``key`` if ``condition`` holds; return whether it did (``missing_ok``: a
        condition that does not hold is no error)."""
        names = {a: _NAMES[a] for a in re.findall(r"#\w+", expression + " " + condition)}
        # DynamoDB refuses a value the expressions do not use.
        now = {":now": {"N": repr(float(self._clock()))}} if ":now" in expression else {}
        try:
            self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": key}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values | now,
            )
        except ClientError as error:
            if _aws.error_code(error) != "ConditionalCheckFailedException":
                raise self._error("update", key, error) from error
            if not missing_ok:
                raise LedgerError(
                    f"dynamodb://{self.table}: update {key[:12]}: no such entry"
                ) from error
            return False
        except BotoCoreError as error:
            raise self._error("update", key, error) from error
        return True

    def _get_item(self, key: str) -> dict[str, Any] | None:
        try:
            response = self._db.get_item(
                TableName=self.table, Key={KEY: {"S": key}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("get", key, error) from error
        return response.get("Item")

    def _error(self, action: str, what: str, error: Exception) -> LedgerError:
        """The LedgerError of ``action`` on ``what`` that failed with ``error``, which the
        state machine retries (throttling, DynamoDB's own faults, the network); one that no
        retry gets past (_REFUSALS: no access, no table, a request refused as invalid, the
        table's KMS key unusable) is a LedgerNotWritten, which ends the run at once, saying
        what to check."""
        said = f"dynamodb://{self.table}: {action} {what[:24]}: {error}"
        code = _aws.error_code(error) if isinstance(error, ClientError) else ""
        check = _REFUSALS.get(code)
        if check is None:
            return LedgerError(said)
        return LedgerNotWritten(
            f"{said}. DynamoDB refused it with {code}, which no retry gets past, so the state"
            f" machine does not retry it: {check.format(table=self.table)}, then redrive (rows"
            " recorded as sent are skipped)."
        )

    def doubts(self, campaign: str) -> list[Doubt]:
        """The rows of ``campaign`` in doubt, by row, as SqliteLedger.doubts has them: claimed
        (by an attempt that ended holding them), or given back after a try that may have gone
        out (uncertain, or taken over). One whose lease has not ended is ``live``: DynamoDB
        cannot tell whether its Lambda still runs. One query of the by_campaign index, with
        the campaign's file owners (below its rows), whose files and masked addresses the
        rows are shown with; eventually consistent, as a listing may be (settle's write is
        conditional on each row being as read)."""
        now = self._clock()
        values = {
            ":c": {"S": campaign},
            ":zero": {"N": "0"},
            ":claimed": {"S": "claimed"},
            ":released": {"S": "released"},
            ":true": {"BOOL": True},
        }
        only = "#r < :zero OR #s = :claimed OR (#s = :released AND (#unc = :true OR #t > :zero))"
        owners: dict[str, dict[str, Any]] = {}
        doubts = []
        for item in self._items(CAMPAIGN_INDEX, "#c = :c", values, campaign, only=only):
            entry = _plain(item)
            if int(entry["row"]) < 0:
                owners[str(entry.get("letter"))] = entry
                continue
            owner = owners.get(entry[KEY], {})
            doubts.append(
                Doubt(
                    entry[KEY],
                    int(entry["row"]),
                    str(entry["state"]),
                    entry.get("attempt"),
                    float(entry.get("updated_at") or 0),
                    entry["state"] == "claimed" and float(entry.get("lease_until") or 0) > now,
                    entry.get("file") or owner.get("attachment"),
                    str(owner.get("masked") or ""),
                    event=str(entry.get("delivery") or ""),
                    event_at=str(entry.get("delivery_at") or ""),
                    event_message_id=_said(entry.get("event_message_id")),
                )
            )
        return sorted(doubts, key=lambda doubt: (doubt.row, doubt.key))

    def settle(self, doubts: Collection[Doubt], *, sent: bool, by: str) -> None:
        """Record what the operator found of rows in doubt (``doubts``, as doubts read them):
        ``sent``, each is sent (a run skips it); else each is given back unsent, no longer a
        possible duplicate (the next run sends it, as a row never tried). ``by``: who said
        so, kept with the time in ``settled``. A transaction of conditional updates, each
        holding while its row is as read: where one changed (a run took it up), nothing is
        written and NotSettled names it. A transaction takes _TRANSACTION_ITEMS rows at
        most: more are settled that many at a time, and a refusal says how many were."""
        now = self._clock()
        said = "sent" if sent else "not sent"
        mark = f"{said}, said by {by} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))}"
        mark += " UTC"
        listed = sorted(doubts, key=lambda doubt: (doubt.row, doubt.key))
        for start in range(0, len(listed), _TRANSACTION_ITEMS):
            chunk = listed[start : start + _TRANSACTION_ITEMS]
            items = [self._settle_item(doubt, sent, mark, now) for doubt in chunk]
            # The same request again (botocore's retry of one whose answer was lost) is
            # answered as the first, not refused as a row changed by the first.
            token = hashlib.sha256(repr((self.table, items)).encode()).hexdigest()[:36]
            try:
                self._db.transact_write_items(TransactItems=items, ClientRequestToken=token)
            except ClientError as error:
                if _aws.error_code(error) != "TransactionCanceledException":
                    raise self._error("settle", chunk[0].key, error) from error
                codes = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
                changed = [d.row for d, code in zip(chunk, codes, strict=False) if code != "None"]
                done = "nothing was settled"
                if start:
                    done = f"the {start} row(s) before it were settled, the others not"
                raise NotSettled(
                    f"dynamodb://{self.table}: row {(changed or [chunk[0].row])[0]} changed as it"
                    f" was being settled (a run of the file took it up): {done}. Wait for that"
                    " run to end, then list the rows in doubt again"
                ) from error
            except BotoCoreError as error:
                raise self._error("settle", chunk[0].key, error) from error
        logger.debug("ledger: %d row(s) settled as %s", len(listed), said)

    def _settle_item(self, doubt: Doubt, sent: bool, mark: str, now: float) -> dict[str, Any]:
        """The transaction item that settles ``doubt`` while its entry is as read: the same
        state, attempt and time of its last write."""
        values: dict[str, Any] = {
            ":state": {"S": "sent" if sent else "released"},
            ":mark": {"S": mark},
            ":now": {"N": repr(float(now))},
            ":zero": {"N": "0"},
            ":old_state": {"S": doubt.state},
            ":old_updated": {"N": repr(float(doubt.at))},
        }
        condition = "#s = :old_state AND #u = :old_updated"
        if doubt.attempt is None:
            condition += " AND attribute_not_exists(#a)"
        else:
            condition += " AND #a = :old_attempt"
            values[":old_attempt"] = {"S": doubt.attempt}
        # Either way the operator read what arrived: no mark of a possible duplicate stays.
        expression = (
            "SET #s = :state, #settled = :mark, #t = :zero, #u = :now"
            " REMOVE #l, #code, #reason, #unc"
        )
        names = {a: _NAMES[a] for a in re.findall(r"#\w+", expression + condition) if a in _NAMES}
        return {
            "Update": {
                "TableName": self.table,
                "Key": {KEY: {"S": doubt.key}},
                "UpdateExpression": expression,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {**names, "#settled": "settled"},
                "ExpressionAttributeValues": values,
            }
        }


def _upload(campaign: str, item: dict[str, Any] | None) -> Upload | None:
    if not item:
        return None
    entry = _plain(item)
    return Upload(campaign, entry["upload"], entry["sort"], entry.get("execution", ""))


def _halt(campaign: str, item: dict[str, Any] | None) -> Halt | None:
    if item is None:
        return None
    entry = _plain(item)
    return Halt(
        campaign=campaign,
        code=entry["code"],
        reason=entry["reason"],
        attempt=entry["attempt"],
        at=float(entry["at"]),
    )


def _name_key(name: str) -> str:
    """The key of the item of names alike ``name`` (a digest: a key holds 2,048 bytes)."""
    return NAME_PREFIX + hashlib.sha256(name_fold(name).encode()).hexdigest()


def _campaign_name(item: dict[str, Any] | None) -> CampaignName | None:
    if not item or "name_campaign" not in item:
        return None
    return CampaignName(item["name_campaign"]["S"], item["name"]["S"])


def _unanswered(item: dict[str, Any] | None) -> Unanswered | None:
    """The Unanswered of an ``unanswered#`` item; None for none, or one cleared (no rows)."""
    rows = [int(value["N"]) for value in (item or {}).get("rows", {}).get("L", [])]
    if not item or not rows:
        return None
    return Unanswered(tuple(dict.fromkeys(rows)), float(item["at"]["N"]))


def _sets(item: dict[str, Any] | None) -> frozenset[str]:
    return frozenset(item.get("template_sets", {}).get("SS", [])) if item else frozenset()


def _outcome(entry: dict[str, Any]) -> Outcome:
    return Outcome(
        key=entry[KEY],
        row=int(entry.get("row", 0)),
        state=entry.get("state", ""),
        message_id=entry.get("message_id"),
        code=entry.get("code"),
        reason=entry.get("reason"),
        attempt=entry.get("attempt"),
        takeovers=int(entry.get("takeovers", 0)),
        uncertain=bool(entry.get("uncertain")),
    )


def _said(value: Any) -> str:
    """An attribute written as "-" where it had nothing to say, as "" (or the value)."""
    return "" if value in (None, "-") else str(value)


def _file_mark(values: dict[str, Any], file: LetterFile | None) -> str:
    """The SET clause that keeps a letter's own ``file`` with it (its values added to
    ``values``), or ""."""
    if file is None:
        return ""
    values.update(
        {
            ":file": {"S": file.name},
            ":fs": {"N": str(file.size)},
            ":fsha": {"S": file.sha256},
            ":fp": {"S": file.print},
            ":rcp": {"S": file.recipient},
            ":masked": {"S": file.masked},
            ":fsrc": {"S": file.source},
        }
    )
    return (
        ", #file = :file, #fs = :fs, #fsha = :fsha, #fp = :fp, #rcp = :rcp, #masked = :masked,"
        " #fsrc = :fsrc"
    )


def _uncertain_mark(values: dict[str, Any], uncertain: bool) -> str:
    """The SET clause that marks an entry uncertain (its value added to ``values``), or ""."""
    if not uncertain:
        return ""
    values[":true"] = {"BOOL": True}
    return ", #unc = :true"


# DynamoDB's error codes that a retry of the same request meets again ("OK to retry? No" in
# its error handling guide, ConditionalCheckFailedException aside, which the ledger reads as
# an answer), and the table's KMS key made unusable; what to check for each. Throttling
# (ProvisionedThroughputExceededException, ThrottlingException, RequestLimitExceeded),
# InternalServerError, ServiceUnavailable and the network pass: the state machine retries them.
_NO_ACCESS = (
    "check that the function's IAM role may do this on table {table} and its indexes, and that"
    " no policy denies it (infra/template.yaml grants the role its actions)"
)
_KEY_UNUSABLE = (
    "check in KMS that the key that encrypts table {table} exists, is enabled and not pending"
    " deletion, and that its key policy lets DynamoDB use it (DynamoDB archives a table whose"
    " key stays inaccessible for seven days)"
)
_REFUSALS = {
    "AccessDeniedException": _NO_ACCESS,
    "IncompleteSignatureException": _NO_ACCESS,
    "MissingAuthenticationTokenException": _NO_ACCESS,
    "ResourceNotFoundException": (
        "check that table {table} and its indexes exist in the function's account and region,"
        " as the stack deploys them, and that MAILMATRIX_LEDGER names the table"
    ),
    "ValidationException": (
        "check that table {table} is defined as infra/template.yaml defines it (its key and"
        " indexes); DynamoDB refuses an item over 400 KB this way too"
    ),
    "KMSAccessDeniedException": _KEY_UNUSABLE,
    "KMSDisabledException": _KEY_UNUSABLE,
    "KMSInvalidStateException": _KEY_UNUSABLE,
    "KMSNotFoundException": _KEY_UNUSABLE,
}

_SIZE_PROBES = 10  # sent_sizes queries at once: botocore keeps 10 connections a client


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for name, value in item.items():
        if "S" in value:
            plain[name] = value["S"]
        elif "N" in value:
            number = value["N"]
            plain[name] = int(number) if number.lstrip("-").isdigit() else float(number)
        elif "SS" in value:
            plain[name] = sorted(value["SS"])
        elif "BOOL" in value:
            plain[name] = value["BOOL"]
    return plain
