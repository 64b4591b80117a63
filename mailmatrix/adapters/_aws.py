"""Helpers shared by the boto3 adapters: client creation and error reading."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Every call is bounded: a DynamoDB or SES call answers in well under a second, and
# botocore's default read timeout (60 s) would let one unanswered call run a SendBatch
# invocation past the reserve its last row started with (ROW_RESERVE_S).
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 15
# Retries inside botocore stay short: the callers (core/send.py, the state machine) own the
# retry policy, with backoff and jitter, and must see throttling quickly to pace themselves.
# Standard mode tries a call CALL_TRIES times in all (throttling, 5xx, timeouts, the network),
# waiting a random time up to 1 s, then up to 2 s, in between.
CALL_TRIES = 3
RETRY_WAITS_S = 1 + 2
_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": CALL_TRIES, "mode": "standard"},
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
)
# A send is never retried inside botocore: a retry hides whether the first try reached the
# service, and core/send.py must know that to count tries whose outcome is unknown.
_SEND_CONFIG = _CLIENT_CONFIG.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))

# What a SendBatch row may still take once it hands its letter to SES, on these clients: one
# SendEmail left unanswered (20 s), then the ledger write that records it with all its tries
# and waits (63 s), rounded up to 90 s. A row starts, and each try of its send, only with this
# much of the invocation left (RetryPolicy.reserve_s): a Lambda that ran out within it would
# leave a letter sent and unrecorded, a row in doubt. The claim before it is not covered: a
# claim cut short sent nothing (its lease ends with the invocation). The local run keeps core's
# 30 s: its mailers and SQLite ledger have no such timeouts to wait out.
ROW_RESERVE_S = 90.0


def client(service: str, *, sends: bool = False) -> Any:
    """Return a boto3 client for ``service`` with MailMatrix's timeouts and retries (none
    for a client that ``sends`` email)."""
    return boto3.client(service, config=_SEND_CONFIG if sends else _CLIENT_CONFIG)


def error_code(error: ClientError) -> str:
    """Return the service's error code of a ClientError ("" when it has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    """Return the service's error message of a ClientError ("" when it has none)."""
    return str(error.response.get("Error", {}).get("Message", ""))


def http_status(error: ClientError) -> int:
    """Return the HTTP status of a ClientError (0 when unknown)."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
