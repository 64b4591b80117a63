"""Mailer on Amazon SES v2: SendEmail with raw content and a configuration set."""

from __future__ import annotations

import logging
from email.utils import parseaddr
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from mailmatrix.adapters import _aws
from mailmatrix.errors import (
    AccountSendingHalted,
    PermanentSendError,
    SendError,
    Throttled,
    TransientSendError,
)

logger = logging.getLogger(__name__)

# SES reports both account limits with the same throttling code; only the message text tells
# the daily quota (not retryable until the 24-hour window moves) from the send rate:
# https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html
_THROTTLING_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "LimitExceededException",
}
_DAILY_QUOTA_TEXT = "daily message quota exceeded"
_HALTING_CODES = {
    "AccountSendingPausedException",
    "SendingPausedException",
    "AccountSuspendedException",
    "MailFromDomainNotVerified",
    "MailFromDomainNotVerifiedException",
    "ConfigurationSetDoesNotExist",
    "NotFoundException",
    "AccessDenied",
    "AccessDeniedException",
}
_PERMANENT_CODES = {"MessageRejected", "BadRequestException", "InvalidParameterValue"}
_NOT_VERIFIED_TEXT = "not verified"


class SesMailer:
    """Hands raw MIME messages to SES v2 SendEmail."""

    def __init__(self, configuration_set: str | None = None, client: Any = None) -> None:
        self.configuration_set = configuration_set
        self._ses = client or _aws.client("sesv2")

    def send(self, raw: bytes, *, sender: str, destinations: list[str]) -> str:
        """Send the raw RFC 5322 message to ``destinations``; return SES's message id."""
        request: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": list(destinations)},
            "Content": {"Raw": {"Data": raw}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            response = self._ses.send_email(**request)
        except ClientError as error:
            raise classify(error, sender=sender) from error
        except (ConnectionError, HTTPClientError, ReadTimeoutError) as error:
            raise TransientSendError(f"ses: send_email: connection failed: {error}") from error
        except BotoCoreError as error:
            raise TransientSendError(f"ses: send_email: client failed: {error}") from error
        message_id = str(response["MessageId"])
        logger.debug("ses accepted message %s (%d bytes)", message_id, len(raw))
        return message_id


def classify(error: ClientError, *, sender: str = "") -> SendError:
    """Turn an SES ClientError into Throttled, AccountSendingHalted, Permanent or Transient."""
    code = _aws.error_code(error)
    message = _aws.error_message(error)
    status = _aws.http_status(error)
    details = {"code": code, "reason": message}
    text = f"ses: send_email: {code}: {message}"

    if code in _THROTTLING_CODES:
        if _DAILY_QUOTA_TEXT in message.lower():
            return AccountSendingHalted(text, details=details)
        return Throttled(text, details=details)
    if code in _HALTING_CODES:
        return AccountSendingHalted(text, details=details)
    if code in _PERMANENT_CODES:
        if _sender_not_verified(message, sender):
            # The sender's own identity failed the check: no row can go, so stop the run.
            return AccountSendingHalted(text, details=details)
        return PermanentSendError(text, details=details)
    if status >= 500 or code in {"InternalFailure", "ServiceUnavailable", "RequestTimeout"}:
        return TransientSendError(text, details=details)
    # NOTE: an unknown 4xx code is treated as transient, so the batch fails and is retried
    # rather than rows being marked failed for a reason nobody classified.
    return TransientSendError(text, details=details)


def _sender_not_verified(message: str, sender: str) -> bool:
    address = parseaddr(sender)[1].lower()
    if not address or _NOT_VERIFIED_TEXT not in message.lower():
        return False
    failed = message.lower().rsplit(":", 1)[-1]
    domain = address.rpartition("@")[2]
    identities = {part.strip(" .") for part in failed.split(",")}
    return address in identities or domain in identities
