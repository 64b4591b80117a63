"""SES preflight: before a campaign sends, check the sender identity and the account's quota."""

from __future__ import annotations

import logging
from email.utils import parseaddr
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailmatrix.adapters import _aws
from mailmatrix.errors import AccountSendingHalted, ConfigurationError

logger = logging.getLogger(__name__)


def sesv2_client() -> Any:
    """Return the SES v2 client that preflight uses when none is given."""
    return _aws.client("sesv2")


def preflight(*, sender: str, needed: int, client: Any = None) -> dict[str, Any]:
    """Check that ``sender`` may send ``needed`` messages now (recipients, as SES counts its
    quota); return the rate and what is left.

    Returns ``{"max_send_rate": float, "remaining_24h": int}``. Raises AccountSendingHalted,
    with the numbers in its details, when sending is disabled for the account, the sender's
    identity is not verified, or the remaining 24-hour quota does not cover ``needed``.
    """
    ses = client or sesv2_client()
    address = parseaddr(sender)[1]
    if "@" not in address:
        raise ConfigurationError(f"ses preflight: sender: not an email address: {sender!r}")

    account = _call(ses.get_account, "get_account")
    quota = account.get("SendQuota", {})
    max_24h = float(quota.get("Max24HourSend", 0))
    sent_24h = float(quota.get("SentLast24Hours", 0))
    rate = float(quota.get("MaxSendRate", 0))
    # A quota of -1 means unlimited: https://docs.aws.amazon.com/ses/latest/APIReference/API_GetSendQuota.html
    remaining = needed if max_24h < 0 else max(0, int(max_24h - sent_24h))
    figures = {
        "max_send_rate": rate,
        "remaining_24h": remaining,
        "max_24h": max_24h,
        "sent_24h": sent_24h,
        "needed": needed,
        "production_access": bool(account.get("ProductionAccessEnabled", False)),
    }

    if not account.get("SendingEnabled", False):
        raise AccountSendingHalted(
            "ses preflight: account: sending is disabled for this account and region",
            details=figures,
        )
    verified, unreadable = _identity_verified(ses, address)
    if not verified:
        domain = address.rpartition("@")[2]
        hint = (
            f" (the address itself could not be looked up: {unreadable}; the stack lets the "
            "functions read only the SenderIdentity it was deployed with)"
            if unreadable
            else ""
        )
        raise AccountSendingHalted(
            f"ses preflight: sender identity: neither the address nor {domain} is verified "
            f"for sending in this region{hint}",
            details=figures,
        )
    if needed > remaining:
        raise AccountSendingHalted(
            f"ses preflight: quota: this run needs {needed} messages but only {remaining} of"
            f" {int(max_24h)} remain in the 24-hour window (a message per recipient, To, Cc"
            " and Bcc, of the rows not sent yet)",
            details=figures,
        )
    logger.debug("ses preflight passed: rate %s, remaining %s, needed %s", rate, remaining, needed)
    return {"max_send_rate": rate, "remaining_24h": remaining}


def _identity_verified(ses: Any, address: str) -> tuple[bool, str]:
    """Whether the address itself or its domain is verified for sending, and why not read.

    The second value names the error that kept the address from being read ("" when it was
    read or not found). A role may read only the identity the sender is verified under (the
    stack grants ses:GetEmailIdentity on SenderIdentity alone), so a domain identity's
    sender gets AccessDenied on its address: like NotFound, that moves on to the domain.
    Any other error, and AccessDenied on the domain, stops the preflight.
    """
    address_error = ""
    for identity in (address, address.rpartition("@")[2]):
        try:
            response = ses.get_email_identity(EmailIdentity=identity)
        except ClientError as error:
            code = _aws.error_code(error)
            if code in _ACCESS_DENIED and identity == address:
                address_error = code
                continue
            if code == "NotFoundException":
                continue
            raise _failed("get_email_identity", error) from error
        except BotoCoreError as error:
            raise _failed("get_email_identity", error) from error
        if response.get("VerifiedForSendingStatus"):
            return True, ""
    return False, address_error


# IAM's refusal, before SES looks anything up (the JSON APIs call it AccessDeniedException).
_ACCESS_DENIED = {"AccessDeniedException", "AccessDenied"}


def _call(operation: Any, name: str) -> dict[str, Any]:
    try:
        return operation()
    except (ClientError, BotoCoreError) as error:
        raise _failed(name, error) from error


def _failed(name: str, error: Exception) -> AccountSendingHalted:
    return AccountSendingHalted(f"ses preflight: {name}: cannot read the account: {error}")
