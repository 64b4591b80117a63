"""Helpers shared by the boto3 adapters: client creation and error reading."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Retries inside botocore stay short: the callers (core/send.py, the state machine) own the
# retry policy, with backoff and jitter, and must see throttling quickly to pace themselves.
_CLIENT_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5)
# A send is never retried inside botocore: a retry hides whether the first try reached the
# service, and core/send.py must know that to count tries whose outcome is unknown.
_SEND_CONFIG = _CLIENT_CONFIG.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))


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
