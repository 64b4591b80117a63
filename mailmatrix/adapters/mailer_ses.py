"""Mailer on Amazon SES v2: SendEmail with raw content and a configuration set."""

from __future__ import annotations

import logging
from email.utils import parseaddr
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from mailmatrix.adapters import _aws
from mailmatrix.core.addresses import mask_addresses
from mailmatrix.core.send import classify_service_error
from mailmatrix.errors import (
    AccountSendingHalted,
    SendError,
    ServiceUnreachable,
    TransientSendError,
)
from mailmatrix.ports import KEY_TAG

logger = logging.getLogger(__name__)

# Codes that mean no row of the campaign can go (on top of core's account-level codes): the
# configuration set is missing or the role may not send as this identity.
_HALTING_CODES = {
    "NotFoundException",
    "ConfigurationSetDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
}
_NOT_VERIFIED_TEXT = "not verified"


class SesMailer:
    """Hands raw MIME messages to SES v2 SendEmail."""

    def __init__(self, configuration_set: str | None = None, client: Any = None) -> None:
        self.configuration_set = configuration_set
        self._ses = client or _aws.client("sesv2", sends=True)
        self._owns_client = client is None

    def close(self) -> None:
        """Close the client's connections, where the mailer made the client itself."""
        if self._owns_client:
            self._ses.close()

    def send(self, raw: bytes, *, sender: str, destinations: list[str], key: str = "") -> str:
        """Send the raw RFC 5322 message to ``destinations``, tagged with the letter's ``key``
        (KEY_TAG); return SES's message id."""
        request: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": list(destinations)},
            "Content": {"Raw": {"Data": raw}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        if key:
            request["EmailTags"] = [{"Name": KEY_TAG, "Value": key}]
        try:
            response = self._ses.send_email(**request)
        except ClientError as error:
            raise classify(error, sender=sender) from error
        except (EndpointConnectionError, ConnectTimeoutError) as error:
            # The request never reached SES: nothing can have been sent.
            text = f"ses: send_email: connection failed: {error}"
            raise ServiceUnreachable(text, refused=True) from error
        except (ConnectionError, HTTPClientError, ReadTimeoutError) as error:
            raise TransientSendError(f"ses: send_email: connection failed: {error}") from error
        except BotoCoreError as error:
            raise TransientSendError(f"ses: send_email: client failed: {error}") from error
        message_id = str(response["MessageId"])
        logger.debug("ses accepted message %s (%d bytes)", message_id, len(raw))
        return message_id


def classify(error: ClientError, *, sender: str = "") -> SendError:
    """Turn an SES ClientError into Throttled, AccountSendingHalted, Permanent or Transient.

    Core's classify_service_error holds the rules shared by every mail service (the daily
    quota and the send rate share one throttling code; the message tells them apart:
    https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html). Here only
    what is particular to SES v2 is added.
    """
    code = _aws.error_code(error)
    message = _aws.error_message(error)
    status = _aws.http_status(error) or None
    text = f"ses: send_email: {code}: {mask_addresses(message)}"
    if code in _HALTING_CODES or _sender_not_verified(message, sender):
        # The sender's own identity failed the check, or the set is gone: no row can go.
        return AccountSendingHalted(text, details={"code": code, "status": status})
    return classify_service_error(code, message, status=status, where="ses: send_email")


def _sender_not_verified(message: str, sender: str) -> bool:
    address = parseaddr(sender)[1].lower()
    if not address or _NOT_VERIFIED_TEXT not in message.lower():
        return False
    failed = message.lower().rsplit(":", 1)[-1]
    domain = address.rpartition("@")[2]
    identities = {part.strip(" .") for part in failed.split(",")}
    return address in identities or domain in identities
