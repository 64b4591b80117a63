"""SMTP URLs as people may see them (without their password), and their default ports.

Apart from the SMTP mailer so that a run that only shows such a URL (``mailmatrix run`` and
its local wiring) does not import smtplib and ssl: a local run delivers to a Maildir.
"""

from __future__ import annotations

# The port of each scheme when the URL gives none.
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def redacted(url: str) -> str:
    """An SMTP URL with its password shown as ``***``."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"


def without_password(url: str) -> str:
    """An SMTP URL with its user but not its password (``MAILMATRIX_SMTP_PASSWORD`` gives it)."""
    return redacted(url).replace(":***@", "@", 1)
