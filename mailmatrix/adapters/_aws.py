"""Helpers shared by the boto3 adapters: client creation and error reading."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Retries inside botocore stay short: the callers (core/send.py, the state machine) own the
# retry policy, with backoff and jitter, and must see throttling quickly to pace themselves.
_CLIENT_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5)


def client(service: str) -> Any:
    """Return a boto3 client for ``service`` with MailMatrix's timeouts and retries."""
    return boto3.client(service, config=_CLIENT_CONFIG)


def error_code(error: ClientError) -> str:
    """Return the service's error code of a ClientError ("" when it has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    """Return the service's error message of a ClientError ("" when it has none)."""
    return str(error.response.get("Error", {}).get("Message", ""))


def http_status(error: ClientError) -> int:
    """Return the HTTP status of a ClientError (0 when unknown)."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
