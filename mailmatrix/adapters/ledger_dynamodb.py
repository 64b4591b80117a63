"""The send ledger on a DynamoDB table: one item per idempotency key, conditional writes.

Table shape (infra/template.yaml): partition key ``idempotency_key`` (S); a global secondary
index ``by_message_id`` on ``message_id`` (S) so SES events find their entry; TTL on
``expires_at``. Every state change is a conditional write, so two attempts can never both
hold the claim of one key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailmatrix.adapters import _aws
from mailmatrix.errors import LedgerError
from mailmatrix.ports import Claim

logger = logging.getLogger(__name__)

KEY = "idempotency_key"
MESSAGE_ID_INDEX = "by_message_id"

# Every attribute is named through an alias: several (state, row, code...) are reserved words.
_NAMES = {
    "#s": "state",
    "#mid": "message_id",
    "#u": "updated_at",
    "#code": "code",
    "#reason": "reason",
    "#d": "delivery",
    "#dat": "delivery_at",
    "#dd": "delivery_detail",
    "#events": "events",
}

# A Lambda invocation runs at most 15 minutes, so a claim older than that cannot belong to a
# live SendBatch: the next attempt takes it over. https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
DEFAULT_LEASE_SECONDS = 15 * 60
# Entries outlive the 14-day redrive window of Step Functions by a wide margin.
DEFAULT_RETENTION_SECONDS = 400 * 24 * 3600


class DynamoDbLedger:
    """Durable record of every email's idempotency key and outcome, in DynamoDB."""

    def __init__(
        self,
        table: str,
        client: Any = None,
        *,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self._db = client or _aws.client("dynamodb")
        self._clock = clock

    def claim(self, key: str, *, campaign: str, row: int, attempt: str) -> Claim:
        """Atomically claim ``key`` for ``attempt``, unless it is settled or held by another."""
        now = int(self._clock())
        item = {
            KEY: {"S": key},
            "campaign": {"S": campaign},
            "row": {"N": str(row)},
            "state": {"S": "claimed"},
            "attempt": {"S": attempt},
            "claimed_at": {"N": str(now)},
            "updated_at": {"N": str(now)},
            "expires_at": {"N": str(now + self.retention_seconds)},
        }
        # Free means: never claimed, released after a transient failure, claimed by this
        # same attempt, or claimed by an attempt whose lease ran out (it died).
        condition = (
            "attribute_not_exists(#k) OR #s = :released OR "
            "(#s = :claimed AND (#a = :attempt OR #c < :stale))"
        )
        values = {
            ":released": {"S": "released"},
            ":claimed": {"S": "claimed"},
            ":attempt": {"S": attempt},
            ":stale": {"N": str(now - self.lease_seconds)},
        }
        try:
            self._db.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    "#k": KEY,
                    "#s": "state",
                    "#a": "attempt",
                    "#c": "claimed_at",
                },
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _aws.error_code(error) != "ConditionalCheckFailedException":
                raise self._error("claim", key, error) from error
            held = error.response.get("Item") or self._get_item(key) or {}
            return _settled(held)
        except BotoCoreError as error:
            raise self._error("claim", key, error) from error
        logger.debug("ledger claimed %s for %s", key, attempt)
        return Claim(state="claimed")

    def record_sent(self, key: str, *, message_id: str) -> None:
        """Mark ``key`` as sent with SES's message id (the GSI finds it by that id)."""
        self._update(
            key,
            "SET #s = :sent, #mid = :mid, #u = :now REMOVE #code, #reason",
            {":sent": {"S": "sent"}, ":mid": {"S": message_id}},
        )

    def record_failed(self, key: str, *, code: str, reason: str, permanent: bool) -> None:
        """Mark ``key`` failed; a non-permanent failure releases the claim for a later try."""
        state = "failed" if permanent else "released"
        self._update(
            key,
            "SET #s = :state, #code = :code, #reason = :reason, #u = :now",
            {":state": {"S": state}, ":code": {"S": code}, ":reason": {"S": reason[:1000]}},
        )

    def get(self, key: str) -> dict[str, Any] | None:
        """Return the entry of ``key`` as plain values, or None when there is none."""
        item = self._get_item(key)
        return _plain(item) if item else None

    def find_by_message_id(self, message_id: str) -> dict[str, Any] | None:
        """Return the entry whose SES message id is ``message_id``, or None."""
        try:
            response = self._db.query(
                TableName=self.table,
                IndexName=MESSAGE_ID_INDEX,
                KeyConditionExpression="message_id = :mid",
                ExpressionAttributeValues={":mid": {"S": message_id}},
                Limit=1,
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("find", message_id, error) from error
        items = response.get("Items", [])
        return _plain(items[0]) if items else None

    def record_event(self, key: str, *, event_type: str, timestamp: str, detail: str = "") -> None:
        """Record an SES event (Delivery, Bounce, Complaint...) against the entry of ``key``."""
        self._update(
            key,
            "SET #d = :event, #dat = :at, #dd = :detail, #u = :now ADD #events :one",
            {
                ":event": {"S": event_type},
                ":at": {"S": timestamp},
                ":detail": {"S": detail[:1000]},
                ":one": {"SS": [event_type]},
            },
        )

    def _update(
        self,
        key: str,
        expression: str,
        values: dict[str, Any],
    ) -> None:
        names = {alias: _NAMES[alias] for alias in re.findall(r"#\w+", expression)}
        try:
            self._db.update_item(
                TableName=self.table,
                Key={KEY: {"S": key}},
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(#k)",
                ExpressionAttributeValues={**values, ":now": {"N": str(int(self._clock()))}},
                ExpressionAttributeNames={**names, "#k": KEY},
            )
        except ClientError as error:
            if _aws.error_code(error) == "ConditionalCheckFailedException":
                raise LedgerError(
                    f"dynamodb://{self.table}: update {key}: no such entry"
                ) from error
            raise self._error("update", key, error) from error
        except BotoCoreError as error:
            raise self._error("update", key, error) from error

    def _get_item(self, key: str) -> dict[str, Any] | None:
        try:
            response = self._db.get_item(
                TableName=self.table, Key={KEY: {"S": key}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("get", key, error) from error
        return response.get("Item")

    def _error(self, action: str, key: str, error: Exception) -> LedgerError:
        return LedgerError(f"dynamodb://{self.table}: {action} {key}: {error}")


def _settled(item: dict[str, Any]) -> Claim:
    entry = _plain(item)
    state = entry.get("state")
    if state == "sent":
        return Claim(state="sent", message_id=entry.get("message_id"))
    if state == "failed":
        return Claim(state="failed", reason=entry.get("reason"))
    return Claim(state="busy")


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for name, value in item.items():
        if "S" in value:
            plain[name] = value["S"]
        elif "N" in value:
            plain[name] = int(value["N"]) if value["N"].lstrip("-").isdigit() else float(value["N"])
        elif "SS" in value:
            plain[name] = sorted(value["SS"])
        elif "BOOL" in value:
            plain[name] = value["BOOL"]
    return plain
